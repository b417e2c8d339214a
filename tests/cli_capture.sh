#!/bin/bash
# tools/capture.py on a tiny PyTorch model (only where Debian's python3-torch
# is installed): captured patches reproduce the layers' outputs exactly, the
# C reader takes the files, and the fisher metric plans with grad2.
source "$SRC/tests/lib.sh"

PY=/usr/bin/python3
if ! [ -x $PY ] || ! $PY -c 'import torch, numpy' 2>/dev/null; then
    echo "python3-torch not installed: capture test skipped"
    finish
    exit 0
fi
export PYTHONPATH="$SRC/tests:$SRC/tools"
check "capture runs" $PY "$SRC/tools/capture.py" capture_fixture:build --out cap --rows 100000 --grad2
# every captured row, times the layer's weights, is one of the layer's outputs
$PY - <<'PYEOF' && ok || bad "patches reproduce the layer outputs"
import numpy as np, torch
from safetensors_io import load_file
from capture_fixture import build
w, meta = load_file("cap/weights.safetensors")
c, _ = load_file("cap/calib.safetensors")
model, data = build()
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
assert meta["dw.groups"] == "8"
PYEOF
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
"$BITPLAN" inspect cap2/calib.safetensors | grep -qE 'conv.input +F16 +\[50, 27\]' && ok || bad "50 F16 rows of 27"
expect_fail 1 "capture: cannot load" $PY "$SRC/tools/capture.py" nosuchmodule:build --out x
finish
