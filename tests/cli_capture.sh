#!/bin/bash
# tools/capture.py on a tiny PyTorch model (only where Debian's python3-torch
# is installed): captured patches reproduce the layers' outputs exactly, the
# C reader takes the files, and the fisher metric plans with grad2.
source "$SRC/tests/lib.sh"

needs_torch "capture test"
export PYTHONPATH="$SRC/tests:$SRC/tools"
check "capture runs" $PY "$SRC/tools/capture.py" capture_fixture:build --out cap --rows 100000 --grad2 -q
# every captured row, times the layer's weights, is one of the layer's outputs
$PY - <<'PYEOF' && ok || bad "patches reproduce the layer outputs"
import numpy as np, torch
from safetensors_io import load_file
from capture_fixture import build
w, meta = load_file("cap/weights.safetensors")
c, _ = load_file("cap/calib.safetensors")
model, data, _ = build()
outs = {}
hooks = [m.register_forward_hook(lambda m, i, o, n=n: outs.setdefault(n, []).append(o.detach()))
         for n, m in model.named_modules() if n in ("conv", "dw", "head")]
with torch.no_grad():
    for x, _ in data:
        model(x)
for n in ("conv", "dw", "head"):
    W = w[n + ".weight"]; o = W.shape[0]
    g = int(meta.get(n + ".groups", "1"))
    X = c[n + ".input"].astype(np.float64)
    if g == 1:
        Y = X @ W.reshape(o, -1).T.astype(np.float64)
    else:                                   # group j: columns j*in..(j+1)*in -> rows j*og..
        cin = W.reshape(o, -1).shape[1]; og = o // g
        Y = np.concatenate([X[:, j * cin:(j + 1) * cin] @ W.reshape(o, -1)[j * og:(j + 1) * og].T
                            for j in range(g)], axis=1)
    if n + ".bias" in w:
        Y = Y + w[n + ".bias"]
    ref = torch.cat(outs[n]).numpy().astype(np.float64)
    ref = ref.transpose(0, 2, 3, 1).reshape(-1, o) if ref.ndim == 4 else ref.reshape(-1, o)
    assert Y.shape == ref.shape, (n, Y.shape, ref.shape)
    assert np.abs(Y - ref).max() < 1e-4 * max(1.0, np.abs(ref).max()), n
    assert (n + ".grad2") in c and c[n + ".grad2"].shape == (o,) and (c[n + ".grad2"] >= 0).all()
    assert (n + ".fisher") not in c                  # --grad2: the diagonal only
assert meta["dw.groups"] == "8"
PYEOF

# --fisher with the batch's labels is the empirical Fisher: per layer,
# E_sample[sum over the sample's output positions of g g^T] (per conv group),
# against gradients taken independently with retain_grad
check "fisher capture" $PY "$SRC/tools/capture.py" capture_fixture:build --out capf --rows 50 --fisher --labels -q
check "low-rank capture" $PY "$SRC/tools/capture.py" capture_fixture:build --out capl --rows 50 --fisher 3 --fisher-full 4 --labels -q
$PY - <<'PYEOF' && ok || bad "captured Fisher equals the per-sample output-gradient covariance"
import numpy as np, torch, torch.nn.functional as F
from safetensors_io import load_file
from capture_fixture import build
c, meta = load_file("capf/calib.safetensors")
lr, _ = load_file("capl/calib.safetensors")
model, data, _ = build()
outs = {}
def keep(n):
    def hook(m, i, o):
        o.retain_grad(); outs[n] = o
    return hook
for n in ("conv", "dw", "head"):
    model.get_submodule(n).register_forward_hook(keep(n))
ref = {n: 0 for n in ("conv", "dw", "head")}
samples = 0
for x, y in data:
    F.cross_entropy(model(x), y, reduction="sum").backward()
    for n, o in outs.items():
        g = o.grad.double()
        g = g.movedim(1, -1).reshape(-1, g.shape[1]) if g.dim() == 4 else g
        groups = 8 if n == "dw" else 1
        og = g.shape[1] // groups
        G = g.reshape(-1, groups, og)
        ref[n] = ref[n] + torch.einsum("ngi,ngj->gij", G, G).numpy()
    samples += len(x)
for n in ref:
    want = ref[n] / samples
    got = c[n + ".fisher"].astype(np.float64)
    got = got[None] if got.ndim == 2 else got
    assert got.shape == want.shape, (n, got.shape, want.shape)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max(), n
    d = np.concatenate([np.diag(w) for w in want])
    assert np.allclose(c[n + ".grad2"], d, rtol=1e-5, atol=1e-12 * d.max()), n
    assert float(meta[n + ".fisher_rse"]) > 0
    if n == "dw":                                  # og = 1: stays dense in the low-rank run
        assert (n + ".fisher") in lr
        continue
    # low rank: the top eigenpairs of F and the diagonal they leave out
    U, s, dg = (lr[n + k].astype(np.float64) for k in (".fisher_u", ".fisher_s", ".fisher_d"))
    assert U.shape == (3, want.shape[1]) and s.shape == (3,), (n, U.shape)
    ev = np.linalg.eigvalsh(want[0])[::-1]
    assert np.allclose(s, ev[:3], rtol=1e-4), (n, s, ev[:3])
    if n == "head":          # logits: F ones = 0, kept by the null direction
        nv = lr[n + ".fisher_n"].astype(np.float64)
        assert np.allclose(nv, 1 / np.sqrt(len(nv)), rtol=1e-6), nv
        P = np.eye(len(nv)) - np.outer(nv, nv)
        approx = U.T @ np.diag(s) @ U + P @ np.diag(dg) @ P
        assert np.abs(approx @ nv).max() <= 1e-6 * ev[0], n
    else:                    # the diagonal the eigenpairs leave out
        assert (n + ".fisher_n") not in lr, n
        approx = U.T @ np.diag(s) @ U + np.diag(dg)
        assert np.allclose(np.diag(approx), np.diag(want[0]), rtol=1e-4, atol=1e-9 * ev[0]), n
PYEOF

# the default (labels drawn from the model's own distribution, and the
# random-sign estimator) estimates the true Fisher: at the logits it is
# E[diag(p) - p p^T], which the head's F must approach
check "sampled fisher" $PY "$SRC/tools/capture.py" capture_fixture:build --out caps --rows 50 --fisher --draws 400 -q
check "rademacher fisher" $PY "$SRC/tools/capture.py" capture_fixture:build --out capr --rows 50 --fisher --draws 400 --estimator rademacher -q
$PY - <<'PYEOF' && ok || bad "sampled and rademacher estimates approach the true Fisher"
import numpy as np, torch
from safetensors_io import load_file
from capture_fixture import build
model, data, _ = build()
with torch.no_grad():
    p = torch.cat([torch.softmax(model(x), -1) for x, _ in data]).double()
want = (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]).mean(0).numpy()
for d in ("caps", "capr"):
    got = load_file(d + "/calib.safetensors")[0]["head.fisher"].astype(np.float64)
    rel = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert rel < 0.05, (d, rel)
PYEOF
# the decision Fisher: at the head (one position per sample) sum_p v_p dm dm^T
# exactly, dm = e_top1 - e_top2 and v_p the flip weight at the reference
# scale, itself the RMS margin change under 4-bit per-channel RTN weights
check "decision fisher" $PY "$SRC/tools/capture.py" capture_fixture:build --out capm --rows 50 --fisher --margin --target-rse 0 -q
$PY - <<'PYEOF' && ok || bad "the decision Fisher and its reference scale"
import numpy as np, torch
from safetensors_io import load_file
from capture_fixture import build
c, meta = load_file("capm/calib.safetensors")
model, data, _ = build()
with torch.no_grad():
    z = torch.cat([model(x) for x, _ in data]).double()
    top = z.topk(2, dim=1)
    m = top.values[:, 0] - top.values[:, 1]
    for mod in (model.conv, model.dw, model.head):          # the reference perturbation
        w = mod.weight.reshape(mod.weight.shape[0], -1)
        s = w.abs().amax(1, keepdim=True) / 7
        mod.weight.copy_((torch.round(w / s) * s).reshape(mod.weight.shape))
    zq = torch.cat([model(x) for x, _ in data]).double()
    mq = zq.gather(1, top.indices[:, :1])[:, 0] - zq.gather(1, top.indices[:, 1:])[:, 0]
scale = float(((mq - m) ** 2).mean().sqrt())
assert abs(float(meta["margin_scale"]) - scale) <= 1e-4 * scale, (meta["margin_scale"], scale)
u = m / scale
v = torch.exp(-0.5 * u * u) / np.sqrt(2 * np.pi) * u / scale ** 2
want = torch.zeros(10, 10, dtype=torch.float64)
for k in range(len(m)):
    e = torch.zeros(10, dtype=torch.float64)
    e[top.indices[k, 0]], e[top.indices[k, 1]] = 1, -1
    want += v[k] * torch.outer(e, e)
want = (want / len(m)).numpy()
got = c["head.margin"].astype(np.float64)
assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max(), np.abs(got - want).max()
assert "conv.margin" in c and "dw.margin" in c and float(meta["head.margin_rse"]) >= 0
PYEOF
# CTC: with one frame a label sequence is one class or none, so the Fisher of
# the sequence likelihood is the categorical one, E[diag(p) - p p^T]
check "ctc fisher" $PY "$SRC/tools/capture.py" capture_fixture:build_ctc --out capc --rows 50 --fisher --draws 400 --target-rse 0 -q
$PY - <<'PYEOF' && ok || bad "the CTC likelihood's Fisher on one frame is the categorical Fisher"
import numpy as np, torch
from safetensors_io import load_file
from capture_fixture import build_ctc
b = build_ctc()
with torch.no_grad():
    p = torch.cat([torch.softmax(b["model"](x), -1).reshape(-1, 5) for x in b["loader"]]).double()
want = (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]).mean(0).numpy()
got = load_file("capc/calib.safetensors")[0]["head.fisher"].astype(np.float64)
assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.05, np.linalg.norm(got - want) / np.linalg.norm(want)
PYEOF
check "ctc fisher over frames" $PY "$SRC/tools/capture.py" capture_fixture:build_ctc3 --out capc3 --rows 50 --fisher --margin -q
# noise: more draws while they lower it, up to --max-draws; none with --target-rse 0
check "adaptive draws" $PY "$SRC/tools/capture.py" capture_fixture:build --out capa --rows 50 --fisher --draws 2 --target-rse 0.001 --max-draws 6 -q
$PY - <<'PYEOF' && ok || bad "draws added up to --max-draws, and said"
from safetensors_io import load_file
m = load_file("capa/calib.safetensors")[1]
assert "6 draws per input" in m["fisher"], m["fisher"]
assert float(m["conv.fisher_rse_floor"]) <= float(m["conv.fisher_rse"]), m
m0 = load_file("capm/calib.safetensors")[1]
assert "8 draws per input" in m0["fisher"], m0["fisher"]
PYEOF
# the contract: dict batches, keyword inputs, dict outputs, a mean-reduced loss
check "dict spec" $PY "$SRC/tools/capture.py" capture_fixture:build_dict --out capd --rows 50 --fisher --labels -q
$PY - <<'PYEOF' && ok || bad "a mean-reduced loss gives the summed loss's Fisher"
import numpy as np
from safetensors_io import load_file
a, b = load_file("capd/calib.safetensors")[0], load_file("capf/calib.safetensors")[0]
for k in ("conv.fisher", "head.fisher", "dw.fisher"):
    assert np.allclose(a["inner." + k], b[k], rtol=1e-5, atol=1e-7 * np.abs(b[k]).max()), k
PYEOF
expect_fail 1 "capture: error: capture_fixture:build_shared: batches are" \
    $PY -c 'import sys; sys.path[:0] = sys.argv[1:]; import capture_fixture as f, objective as o; t = o.Task("capture_fixture:build_shared", "capture", got=dict(model=f.Shared(), loader=[{"x": 1}])); t.spec = "capture_fixture:build_shared"; t.forward(t.batches[0])' "$SRC/tests" "$SRC/tools"
expect_fail 1 "the model must be a torch.nn.Module" $PY "$SRC/tools/capture.py" capture_fixture:not_a_module --out x
expect_fail 1 "unknown key 'modle'" $PY "$SRC/tools/capture.py" capture_fixture:typo_key --out x
check "subsampled capture" $PY "$SRC/tools/capture.py" capture_fixture:build --out cap2 --rows 50 --grad2 --half
cat >cfg.yaml <<'YAML'
model: {weights: cap2/weights.safetensors, calibration: cap2/calib.safetensors}
candidates: {wbits: [2, 4, 8], abits: [8, 16]}
metric: fisher
budget: {avg_bits: 5}
output: {dir: out}
YAML
check "fisher plan from captured files" "$BITPLAN" run cfg.yaml -q
check "3 layers planned" test "$(grep -c '^  - name:' out/plan.yaml)" = 3
for d in capf capl; do
    sed -e "s#cap2/#$d/#g" -e 's/metric: fisher/metric: kfac/' -e "s#dir: out#dir: out_$d#" cfg.yaml >$d.yaml
    check "kfac plan from $d" "$BITPLAN" run $d.yaml -q
done
sed -e 's#cap2/#capf/#g' -e '/^metric:/d' -e 's#dir: out#dir: out_auto#' cfg.yaml >auto.yaml
check "auto plan" "$BITPLAN" run auto.yaml -q
check "auto with decision Fishers: margin" grep -q '^  metric: "margin"' out_auto/plan.yaml
check "output Fisher alone" $PY "$SRC/tools/capture.py" capture_fixture:build --out capk --rows 50 --fisher --no-margin -q
check "no decision Fisher" test -z "$($PY -c 'import sys; sys.path.insert(0, sys.argv[1]); from safetensors_io import load_file; print(*[k for k in load_file("capk/calib.safetensors")[0] if "margin" in k])' "$SRC/tools")"
sed -e 's#capf/#capk/#g' -e 's#dir: out_auto#dir: out_autok#' auto.yaml >autok.yaml
check "auto plan without them" "$BITPLAN" run autok.yaml -q
check "auto with output Fishers only: kfac" grep -q '^  metric: "kfac"' out_autok/plan.yaml
# the low-rank factor of the same Fisher predicts nearly the same loss
awk -F, 'NR == FNR {if (FNR > 1) k[$1","$2","$3] = $14; next}
         FNR > 1 {r = $14 / k[$1","$2","$3]; if (r < 0.8 || r > 1.25) bad = 1}
         END {exit bad}' out_capf/sensitivity.csv out_capl/sensitivity.csv && ok || bad "dense and low-rank kfac agree"
"$BITPLAN" inspect cap2/calib.safetensors | grep -qE 'conv.input +F16 +\[50, 27\]' && ok || bad "50 F16 rows of 27"
expect_fail 1 "capture: error: cannot load" $PY "$SRC/tools/capture.py" nosuchmodule:build --out x
# what capture cannot hook: one message saying what to do, before any work
expect_fail 1 "must be a torch.nn.Module" $PY "$SRC/tools/capture.py" capture_fixture:build_callable --out capx -q
grep -q "wrap" err.txt && ok || bad "the message says how to wrap: $(cat err.txt)"
expect_fail 1 "has no nn.Linear or nn.Conv2d layers" $PY "$SRC/tools/capture.py" capture_fixture:build_opaque --out capx -q
check "nothing written" test ! -e capx
# probabilities (an exported softmax) are detected, said, and give the Fisher of
# the logits' model; --outputs logits takes them as they are (another Fisher)
$PY "$SRC/tools/capture.py" capture_fixture:build_probs --out capp --rows 50 --fisher --draws 400 --target-rse 0 --no-margin 2>capp.err >/dev/null
check "probabilities detected" grep -q "read as probabilities" capp.err
$PY "$SRC/tools/capture.py" capture_fixture:build --out capq --rows 50 --fisher --draws 400 --target-rse 0 --no-margin -q
$PY "$SRC/tools/capture.py" capture_fixture:build_probs --out capw --rows 50 --fisher --draws 400 --target-rse 0 --no-margin --outputs logits -q
$PY - <<'PYEOF' && ok || bad "the Fisher of probabilities is the logits' model's"
import numpy as np
from safetensors_io import load_file
p, q, w = (load_file(d + "/calib.safetensors")[0] for d in ("capp", "capq", "capw"))
for n in ("conv", "dw", "head"):
    a, b = p["inner." + n + ".fisher"].astype(np.float64), q[n + ".fisher"].astype(np.float64)
    assert np.abs(a - b).max() <= 1e-3 * np.abs(b).max(), (n, np.abs(a - b).max(), np.abs(b).max())
a, c = p["inner.head.fisher"].astype(np.float64), w["inner.head.fisher"].astype(np.float64)
assert np.abs(a - c).max() > 0.1 * np.abs(a).max(), "probabilities read as logits give another Fisher"
PYEOF
finish
