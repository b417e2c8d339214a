#!/bin/bash
# The PyTorch-side tools on a tiny model (only where Debian's python3-torch
# is installed): evaluate_plan applies exactly what bitplan measured,
# measure_deltas gives a table the solver takes, refine_plan never ends
# worse than its seeds and hands its plan back to bitplan.
source "$SRC/tests/lib.sh"

needs_torch "tools test"
export PYTHONPATH="$SRC/tests:$SRC/tools" BITPLAN
$PY "$SRC/tools/capture.py" capture_fixture:build --out cap --rows 100000 --fisher -q
cat >cfg.yaml <<'YAML'
model: {weights: cap/weights.safetensors, calibration: cap/calib.safetensors}
candidates: {wbits: [2, 3, 4, 8, 16], abits: [6, 16]}
weights: {quantizer: gptq, cross_fit: false}   # in-sample errors: comparable to the weights run on the same rows
activations: {per_layer: [{pattern: "dw", quantizer: ptf}, {pattern: "head", granularity: per_token}]}
budget: {avg_bits: 4.5}
output: {dir: out, weights: q.safetensors}
YAML
check "sensitivity" "$BITPLAN" sensitivity cfg.yaml -o table.csv -q

# the quantized weights and activation grids, applied in PyTorch to the
# captured rows, give the output error bitplan measured, for every layer
# (per-tensor, ptf and per-token activations)
check "quantize at 3/6" "$BITPLAN" quantize cfg.yaml --wbits 3 --abits 6 -o q36.safetensors -q
$PY - <<'PYEOF' && ok || bad "PyTorch application reproduces bitplan's output errors"
import csv, numpy as np, torch
from safetensors_io import load_file
from bitplan_torch import QuantizedFile, fake_quant_rows
c, _ = load_file("cap/calib.safetensors")
w, meta = load_file("cap/weights.safetensors")
qf = QuantizedFile("q36.safetensors")
want = {r["layer"]: float(r["mse"]) for r in csv.DictReader(open("table.csv"))
        if r["wbits"] == "3" and r["abits"] == "6"}
for n in ("conv", "dw", "head"):
    W = w[n + ".weight"].reshape(w[n + ".weight"].shape[0], -1).astype(np.float64)
    Wq, _, grid = qf.layer(n)
    Wq = Wq.reshape(W.shape).astype(np.float64)
    X = torch.from_numpy(np.array(c[n + ".input"], dtype=np.float32))
    Xq = fake_quant_rows(X, grid).double().numpy()
    X = X.double().numpy()
    g = int(meta.get(n + ".groups", "1")); og, k = W.shape[0] // g, W.shape[1]
    err = 0.0
    for j in range(g):
        d = Xq[:, j * k:(j + 1) * k] @ Wq[j * og:(j + 1) * og].T - X[:, j * k:(j + 1) * k] @ W[j * og:(j + 1) * og].T
        err += (d ** 2).sum() / len(X)
    assert abs(err - want[n]) <= 1e-4 * want[n], (n, err, want[n], grid["kind"], grid["granularity"])
PYEOF

# act-order per-group GPTQ: the tools dequantize through g_idx
sed -e 's/^weights: {quantizer: gptq, cross_fit: false}.*/weights: {quantizer: gptq, granularity: per_group, group_size: 16, gptq: {act_order: true}}/' \
    -e 's/^output: {dir: out, weights: q.safetensors}/output: {dir: out_ao, weights: q.safetensors, dequantized: true}/' cfg.yaml >ao.yaml
"$BITPLAN" quantize ao.yaml --wbits 3 -o ao.safetensors -q
$PY - <<'PYEOF' && ok || bad "QuantizedFile dequantizes act-order groups as bitplan does"
import numpy as np
from safetensors_io import load_file
from bitplan_torch import QuantizedFile
t, _ = load_file("ao.safetensors")
qf = QuantizedFile("ao.safetensors")
assert "head.g_idx" in t
for n in qf.names:
    w, _, _ = qf.layer(n)
    assert np.array_equal(w, t[n + ".weight"].reshape(w.shape)), n
PYEOF

# evaluate_plan: a plan at 16 bits everywhere loses nothing; a 2-bit plan
# loses more than a 4-bit one
check "quantize at 16/16" "$BITPLAN" quantize cfg.yaml --wbits 16 --abits 16 -o q16.safetensors -q
$PY "$SRC/tools/evaluate_plan.py" capture_fixture:build --weights q16.safetensors --json >e16.json
$PY -c 'import json; r = json.load(open("e16.json")); assert r["kl"] < 1e-9 and r["accuracy"] == r["float_accuracy"], r' \
    && ok || bad "16-bit plan equals the float model"
"$BITPLAN" quantize cfg.yaml --wbits 2 --abits 6 -o q2.safetensors -q
"$BITPLAN" quantize cfg.yaml --wbits 4 --abits 6 -o q4.safetensors -q
$PY "$SRC/tools/evaluate_plan.py" capture_fixture:build --weights q2.safetensors --json >e2.json
$PY "$SRC/tools/evaluate_plan.py" capture_fixture:build --weights q4.safetensors --json >e4.json
$PY -c 'import json; a, b = (json.load(open(f)) for f in ("e2.json", "e4.json")); assert a["kl"] > b["kl"] > 0, (a, b)' \
    && ok || bad "fewer bits lose more"
$PY "$SRC/tools/evaluate_plan.py" capture_fixture:build --weights q4.safetensors >e4.txt
grep -q "KL to float" e4.txt && ok || bad "evaluate_plan summary: $(cat e4.txt)"
$PY "$SRC/tools/evaluate_plan.py" capture_fixture:build --weights q4.safetensors --json \
    --metric capture_fixture:top1_errors >em.json
$PY -c 'import json; r = json.load(open("em.json")); assert abs(r["metric"] - (1 - r["accuracy"])) < 1e-12, r' \
    && ok || bad "a user metric (top-1 errors) is reported: 1 - accuracy"
expect_fail 1 "not a bitplan quantized-weights file" $PY "$SRC/tools/evaluate_plan.py" capture_fixture:build --weights cap/weights.safetensors

# measure_deltas: one row per candidate, zero for the float candidate, more
# for fewer bits, and a table the solver takes
check "measure_deltas" $PY "$SRC/tools/measure_deltas.py" cfg.yaml capture_fixture:build -o deltas.csv -q
check "one row per candidate" test "$(wc -l <deltas.csv)" = "$(wc -l <table.csv)"
awk -F, 'NR > 1 && $2 == 16 && $3 == 16 && $5 != 0 {bad = 1} END {exit bad}' deltas.csv && ok || bad "float candidate: delta 0"
awk -F, 'NR > 1 {d[$1","$2","$3] = $5} END {for (k in d) {split(k, p, ","); if (p[2] == 2 && d[k] <= d[p[1]",8,"p[3]]) bad = 1} exit bad}' deltas.csv \
    && ok || bad "2 bits lose more than 8"
check "solve over the measured deltas" "$BITPLAN" solve --table deltas.csv --avg-bits 4.5 -o dplan.yaml -q

# refine_plan: the result is no worse than any seed on the calibration KL,
# within the budget, and written by bitplan as a given plan
check "refine_plan" $PY "$SRC/tools/refine_plan.py" cfg.yaml capture_fixture:build --evals 60 --json refine.json -q
$PY - <<'PYEOF' && ok || bad "refined KL <= every seed's, within the budget"
import json
r = json.load(open("refine.json"))
assert r["seeds"] and all(r["kl"] <= s["kl"] for s in r["seeds"].values()), r
assert r["bits"] <= r["limit_bits"] and r["evals"] <= 60, r
PYEOF
check "bitplan wrote the refined plan" grep -q '^  name: "given"' out/plan.yaml
check "and its quantized weights" "$BITPLAN" inspect out/q.safetensors
finish
