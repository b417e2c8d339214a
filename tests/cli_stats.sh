#!/bin/bash
# Calibration statistics (tools/capture.py --stats) on the tiny PyTorch model:
# on the same tokens the sensitivity table from statistics equals the one
# from rows (every metric, rtn / gptq / erq, float and 4- and 8-bit
# activations, per-tensor and power-of-two-factor grids) within 1e-9
# relative; plans and quantized weights come from statistics; what statistics
# cannot express is a clear error before any work.
source "$SRC/tests/lib.sh"

needs_torch "statistics test"
export PYTHONPATH="$SRC/tests:$SRC/tools"
mkdir -p rows st
cat >rows.yaml <<'YAML'
model: {weights: rows/weights.safetensors, calibration: rows/calib.safetensors}
candidates: {wbits: [3, 4, 8], abits: [4, 8, 16]}
weights: {quantizer: [rtn, gptq, erq], gptq: {precision: double}, cross_fit: false}
activations:
  range: mse
  per_layer: [{pattern: "head", quantizer: ptf}]
precision: double
metric: relative
budget: {avg_bits: 5}
output: {dir: out_rows, weights: q.safetensors}
YAML
sed -e 's#rows/weights#st/weights#; s#rows/calib.safetensors#st/stats.safetensors#' \
    -e 's#out_rows#out_st#' rows.yaml >st.yaml
# every token kept as rows (4 batches x 16 images; at most 1,024 patches per layer)
check "rows capture" $PY "$SRC/tools/capture.py" capture_fixture:build --out rows --rows 100000 --grad2 -q
check "stats capture" $PY "$SRC/tools/capture.py" capture_fixture:build --out st --stats \
    --config st.yaml --bitplan "$BITPLAN" --range-rows 100000 --grad2 -q
check "sensitivity from rows" "$BITPLAN" sensitivity rows.yaml -q
check "sensitivity from statistics" "$BITPLAN" sensitivity st.yaml -q
check "statistics table equals the rows table within 1e-9" $PY "$SRC/tests/table_diff.py" \
    out_rows/sensitivity.csv out_st/sensitivity.csv 1e-9 --label "statistics vs rows"
# float32 chunk products (--stats-precision single): the same table to float
# rounding; the shift keeps it there where the inputs' means dwarf their spread
sed -e 's#st/#st32/#g; s#out_st#out_st32#' st.yaml >st32.yaml
mkdir -p st32
check "stats capture, single precision" $PY "$SRC/tools/capture.py" capture_fixture:build \
    --out st32 --stats --config st32.yaml --bitplan "$BITPLAN" --range-rows 100000 --grad2 \
    --stats-precision single -q
check "sensitivity from single-precision statistics" "$BITPLAN" sensitivity st32.yaml -q
check "single-precision statistics table near the rows table" $PY "$SRC/tests/table_diff.py" \
    out_rows/sensitivity.csv out_st32/sensitivity.csv 1e-5 --min 1e-9 \
    --label "single-precision statistics vs rows"
$PY - <<'PYEOF' && ok || bad "single-precision sums near the float64 ones"
from safetensors_io import load_file
t64, _ = load_file("st/stats.safetensors")
t32, m32 = load_file("st32/stats.safetensors")
assert m32["products"] == "float32"
for k in t64:
    if k.endswith((".xtx", ".qtq", ".qtx")):
        d = abs(t64[k] - t32[k]).max() / abs(t64[k]).max()
        assert d <= 1e-5, (k, d)
PYEOF
# float32's tolerances are no free pass: a sum off by more is still refused
$PY - <<'PYEOF'
from safetensors_io import load_file, save_file
t, m = load_file("st32/stats.safetensors")
x = t["head.xtx"].copy()
x[0, 1] = x[1, 0] = 1.01 * (x[0, 0] * x[1, 1]) ** 0.5
t["head.xtx"] = x
save_file("st32/bad.safetensors", t, m)
PYEOF
sed -e 's#st32/stats.safetensors#st32/bad.safetensors#; s#out_st32#out_bad32#' st32.yaml >bad32.yaml
expect_fail 1 "head.xtx' is not positive semi-definite" "$BITPLAN" sensitivity bad32.yaml -q
check "plan and weights from statistics" "$BITPLAN" run st.yaml -q
check "quantized weights written" test -s out_st/q.safetensors
# the fixture's layers read different tensors: one set each
$PY - <<'PYEOF' && ok || bad "statistics file layout"
from safetensors_io import load_file
t, m = load_file("st/stats.safetensors")
assert m["format"] == "bitplan-stats"
for n in ("conv", "dw", "head"):
    assert m[n + ".stats"] == n
    assert t[n + ".count"].dtype.name == "float64" and t[n + ".xtx"].dtype.name == "float64"
assert t["dw.xtx"].shape == (8, 9, 9), t["dw.xtx"].shape        # per group of a grouped conv
assert t["head.xtx"].shape == (128, 128)
assert m["head.grid0"].startswith("ptf ") and t["head.grid0.scale"].shape == (128,)
assert "head.grad2" in t
PYEOF

# layers reading the same tensor (q/k/v, gate/up) share one set, and their
# tables still equal the rows tables
for k in rows st; do
    sed -e "s#rows/#sh$k/#g; s#st/#sh$k/#g; s#out_$k#out_sh$k#; /per_layer/d" $k.yaml >sh$k.yaml
done
check "shared rows capture" $PY "$SRC/tools/capture.py" capture_fixture:build_shared --out shrows --rows 100000 -q
check "shared stats capture" $PY "$SRC/tools/capture.py" capture_fixture:build_shared --out shst --stats \
    --config shst.yaml --bitplan "$BITPLAN" --range-rows 100000 -q
check "shared sensitivity from rows" "$BITPLAN" sensitivity shrows.yaml -q
check "shared sensitivity from statistics" "$BITPLAN" sensitivity shst.yaml -q
$PY - <<'PYEOF' && ok || bad "shared statistics: one set for q and k"
from safetensors_io import load_file
t, m = load_file("shst/stats.safetensors")
assert m["q.stats"] == "q" and m["k.stats"] == "q" and m["o.stats"] == "o", m
assert "k.xtx" not in t and t["q.count"][0] == 3 * 5 * 7
PYEOF
check "shared statistics: the same table as rows" $PY "$SRC/tests/table_diff.py" \
    out_shrows/sensitivity.csv out_shst/sensitivity.csv 1e-9 --label "shared statistics vs rows"

# what statistics cannot express, or do not hold, fails before any work
sed -e 's#range: mse#range: mse\n  granularity: per_token#' -e 's#out_st#out_tok#' \
    -e '/per_layer/d' st.yaml >tok.yaml
expect_fail 1 "cannot be expressed as statistics" "$BITPLAN" sensitivity tok.yaml -q
sed -e 's#range: mse#range: minmax#' -e 's#out_st#out_mm#' st.yaml >mm.yaml
expect_fail 1 "captured for other activation settings" "$BITPLAN" sensitivity mm.yaml -q
sed -e 's#cross_fit: false#cross_fit: true#' -e 's#out_st#out_xf#' st.yaml >xf.yaml
expect_fail 1 "cross_fit: on needs calibration rows" "$BITPLAN" sensitivity xf.yaml -q
BITPLAN_MEMORY_LIMIT=100000 expect_fail 1 "exclude it, or measure fewer weight or activation widths" \
    "$BITPLAN" sensitivity st.yaml --force -q
check "no table from a failed run" test ! -e out_tok/sensitivity.csv -a ! -e out_mm/sensitivity.csv
# corrupt statistics: each a clear error naming the file and tensor, before any work
$PY - <<'PYEOF'
import numpy as np
from safetensors_io import load_file, save_file
t, m = load_file("st/stats.safetensors")
def bad(name, change):
    u = {k: np.array(v) for k, v in t.items()}
    mm = dict(m)
    change(u, mm)
    save_file(f"bad_{name}.safetensors", u, mm)
bad("nan", lambda u, m: u["conv.xtx"].__setitem__((0, 1), np.nan))
bad("neg", lambda u, m: u["conv.xtx"].__setitem__((2, 2), -1.0))
bad("shape", lambda u, m: u.__setitem__("conv.xsum", u["conv.xsum"][:-1]))
bad("count", lambda u, m: u.__setitem__("conv.count", np.array([2.5])))
bad("f32", lambda u, m: u.__setitem__("conv.xtx", u["conv.xtx"].astype(np.float32)))
bad("grid", lambda u, m: m.__setitem__("conv.grid0", "uniform 99"))
bad("missing", lambda u, m: u.pop("conv.range"))
# what the mathematics needs but the file does not promise: symmetric, PSD
# Grams, counts that fit their sums, means within 2^40, PSD Fishers with
# orthonormal eigenvectors, squared gradients >= 0
def poke_sym(u, m, key, i, j, f):
    a = u[key]
    a[i, j] = a[j, i] = f(a)
def indefinite(u, m, key):                  # every 2x2 minor fine, the 3x3 block not
    a = u[key]
    d = np.sqrt(np.diag(a)[:3])
    c = np.array([[1, .9, .9], [.9, 1, -.9], [.9, -.9, 1]])
    a[:3, :] = 0
    a[:, :3] = 0
    a[:3, :3] = c * np.outer(d, d)
def asym(u, m):
    a = u["conv.xtx"]
    a[0, 1] += 1e-3 * np.sqrt(a[0, 0] * a[1, 1])
bad("asym", asym)
bad("minor", lambda u, m: poke_sym(u, m, "conv.xtx", 0, 1,
                                   lambda a: 2 * np.sqrt(a[0, 0] * a[1, 1])))
bad("indef", lambda u, m: indefinite(u, m, "conv.xtx"))
bad("small", lambda u, m: u.__setitem__("conv.count", np.array([1.0])))
def huge(u, m):
    u["conv.xtx"] *= 2.0 ** 100
    u["conv.xsum"] *= 2.0 ** 50
bad("huge", huge)
bad("gridindef", lambda u, m: indefinite(u, m, "conv.grid0.qtq"))
out = load_file("st/weights.safetensors")[0]["conv.weight"].shape[0]
bad("fneg", lambda u, m: u.__setitem__("conv.fisher", -np.eye(out, dtype=np.float32)))
def fasym(u, m):
    f = np.eye(out, dtype=np.float32)
    f[0, 1] = 0.5
    u["conv.fisher"] = f
bad("fasym", fasym)
def lowrank(k, orth):
    def change(u, m):
        q = np.linalg.qr(np.random.RandomState(0).randn(out, out))[0].T.astype(np.float32)
        uu = np.concatenate([q, q])[:k] if k > out else q[:k].copy()
        if not orth:
            uu[1] = uu[0]
        u["conv.fisher_u"], u["conv.fisher_s"] = uu, np.ones(k, dtype=np.float32)
        u["conv.fisher_d"] = np.zeros(out, dtype=np.float32)
    return change
bad("fmany", lowrank(out + 1, True))
bad("forth", lowrank(2, False))
def g2(u, m):
    u["conv.grad2"][0] = -1.0
bad("g2", g2)
PYEOF
for k in asym:"conv.xtx' is not symmetric" minor:"(Cauchy-Schwarz)" \
         indef:"conv.xtx' is not positive semi-definite (its Cholesky factorisation fails" \
         small:"conv.count' = 1 is too small for the sums" huge:"beyond 2^40" \
         gridindef:"conv.grid0.qtq' is not positive semi-definite" \
         fneg:"tensor 'conv.fisher': diagonal element 0 is negative" \
         fasym:"tensor 'conv.fisher' is not symmetric" fmany:"vectors for" \
         forth:"the eigenvectors must be orthonormal" g2:"squared gradients are finite and >= 0"; do
    f=${k%%:*}; needle=${k#*:}
    sed -e "s#st/stats.safetensors#bad_$f.safetensors#" -e "s#out_st#out_bad$f#" st.yaml >bad$f.yaml
    expect_fail 1 "$needle" "$BITPLAN" sensitivity bad$f.yaml -q
    check "no table from unchecked statistics ($f)" test ! -e out_bad$f/sensitivity.csv
    expect_fail 1 "$needle" "$BITPLAN" inspect bad_$f.safetensors
done
"$BITPLAN" inspect st/stats.safetensors >insp.txt
check "inspect vouches for sound statistics" grep -q "positive semi-definite, counts and magnitudes consistent" insp.txt
for k in nan:"is NaN" neg:"is negative" shape:"conv.xsum" count:"positive integer" \
         f32:"expected 'conv.xtx' F64" grid:"with bits 2..15" missing:"'conv.range' is missing"; do
    f=${k%%:*}; needle=${k#*:}
    sed -e "s#st/stats.safetensors#bad_$f.safetensors#" -e "s#out_st#out_bad$f#" st.yaml >bad$f.yaml
    expect_fail 1 "$needle" "$BITPLAN" sensitivity bad$f.yaml -q
    check "no table from corrupt statistics ($f)" test ! -e out_bad$f/sensitivity.csv
done

# without --config: float activations only
check "stats capture without a config" $PY "$SRC/tools/capture.py" capture_fixture:build \
    --out st16 --stats -q
sed -e 's#st/#st16/#g; s#abits: \[4, 8, 16\]#abits: [16]#; s#out_st#out_16#' st.yaml >s16.yaml
check "float-activation plan from grid-less statistics" "$BITPLAN" run s16.yaml -q
sed -e 's#st/#st16/#g; s#out_st#out_16b#' st.yaml >s16b.yaml
expect_fail 1 "the set has no grids at all" "$BITPLAN" sensitivity s16b.yaml -q
finish
