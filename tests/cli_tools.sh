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
$PY "$SRC/tools/evaluate_plan.py" capture_fixture:build --weights q16.safetensors --json \
    --metric capture_fixture:top1_errors >e16.json
$PY -c 'import json; r = json.load(open("e16.json")); assert r["kl"] < 1e-9 and r["flips"] == 0 and r["metric"] == r["float_metric"], r' \
    && ok || bad "16-bit plan equals the float model"
"$BITPLAN" quantize cfg.yaml --wbits 2 --abits 6 -o q2.safetensors -q
"$BITPLAN" quantize cfg.yaml --wbits 4 --abits 6 -o q4.safetensors -q
$PY "$SRC/tools/evaluate_plan.py" capture_fixture:build --weights q2.safetensors --json >e2.json
$PY "$SRC/tools/evaluate_plan.py" capture_fixture:build --weights q4.safetensors --json >e4.json
$PY -c 'import json; a, b = (json.load(open(f)) for f in ("e2.json", "e4.json")); assert a["kl"] > b["kl"] > 0, (a, b)' \
    && ok || bad "fewer bits lose more"
$PY "$SRC/tools/evaluate_plan.py" capture_fixture:build --weights q4.safetensors >e4.txt 2>e4.err
grep -q "KL to float" e4.txt && ok || bad "evaluate_plan summary: $(cat e4.txt)"
check "evaluate_plan: no progress in a log for work under 15 s" test ! -s e4.err
# in a log, whole progress lines (item i/N, rate, ETA), no terminal codes; -q: none
BITPLAN_PROGRESS_SECONDS=0 $PY "$SRC/tools/evaluate_plan.py" capture_fixture:build --weights q4.safetensors >/dev/null 2>e4.err
check "evaluate_plan: progress lines in a log" grep -qE '^evaluate_plan: q4.safetensors: [0-9]+/[0-9]+ .* batches/s  ETA ' e4.err
check "evaluate_plan: and the time taken" grep -qE '^evaluate_plan: float model: ([0-9]+)/\1 done in [0-9]+s$' e4.err
check "evaluate_plan: no carriage returns in a log" bash -c "! grep -q $'\r' e4.err"
BITPLAN_PROGRESS_SECONDS=0 $PY "$SRC/tools/evaluate_plan.py" capture_fixture:build --weights q4.safetensors -q 2>e4.err
check "evaluate_plan -q: silent" test ! -s e4.err
$PY "$SRC/tools/evaluate_plan.py" capture_fixture:build --weights q4.safetensors --json \
    --metric capture_fixture:top1_errors >em.json
$PY - <<'PYEOF' && ok || bad "a user metric (top-1 errors) is reported for the float model and the plan"
import json, torch
from capture_fixture import build
from bitplan_torch import QuantizedFile, apply_file
r = json.load(open("em.json"))
model, data, _ = build()
def errors():
    with torch.no_grad():
        return sum((model(x).argmax(1) != y).sum().item() for x, y in data) / sum(len(y) for _, y in data)
assert abs(r["float_metric"] - errors()) < 1e-12, r
apply_file(model.eval(), QuantizedFile("q4.safetensors"))
assert abs(r["metric"] - errors()) < 1e-12, r
PYEOF
expect_fail 1 "not a bitplan quantized-weights file" $PY "$SRC/tools/evaluate_plan.py" capture_fixture:build --weights cap/weights.safetensors

# measure_deltas: one row per candidate, zero for the float candidate, more
# for fewer bits, and a table the solver takes
check "measure_deltas" $PY "$SRC/tools/measure_deltas.py" cfg.yaml capture_fixture:build -o deltas.csv -q
check "one row per candidate" test "$(wc -l <deltas.csv)" = "$(wc -l <table.csv)"
awk -F, 'NR > 1 && $2 == 16 && $3 == 16 && $5 != 0 {bad = 1} END {exit bad}' deltas.csv && ok || bad "float candidate: delta 0"
awk -F, 'NR > 1 {d[$1","$2","$3] = $5} END {for (k in d) {split(k, p, ","); if (p[2] == 2 && d[k] <= d[p[1]",8,"p[3]]) bad = 1} exit bad}' deltas.csv \
    && ok || bad "2 bits lose more than 8"
check "solve over the measured deltas" "$BITPLAN" solve --table deltas.csv --avg-bits 4.5 -o dplan.yaml -q

# calibrate: per layer, the objective measured at the two widths nearest --at
# and at the lowest (here 3 and 2, at the lowest activation width); per
# width the scale is measured over predicted there, held flat above; bitplan
# plans with the scales and predicts the objective
check "calibrate" $PY "$SRC/tools/calibrate.py" cfg.yaml capture_fixture:build -o scales.csv --at 3 --objective kl -q
$PY - <<'PYEOF' && ok || bad "scales: measured (as measure_deltas measures it) over predicted"
import csv
d = {(r["layer"], r["wbits"], r["abits"]): float(r["loss_delta"]) for r in csv.DictReader(open("deltas.csv"))}
t = {(r["layer"], r["wbits"], r["abits"]): r for r in csv.DictReader(open("table.csv"))}
rows = list(csv.DictReader(open("scales.csv")))
assert {r["layer"] for r in rows} == {"conv", "dw", "head"}, rows
assert {r["wbits"] for r in rows} == {"2", "3", "4", "8", "16"}, rows
s = {(r["layer"], r["metric"], r["wbits"]): float(r["scale"]) for r in rows}
for r in rows:
    assert r["objective"] == "kl" and float(r["exponent"]) == 1.0, r
    w = r["wbits"] if r["wbits"] in ("2", "3") else "3"       # measured, or held from 3
    m, p = d[(r["layer"], w, "6")], float(t[(r["layer"], w, "6")][r["metric"]])
    assert abs(float(r["scale"]) - m / p) <= 1e-9 * m / p, (r, m / p)
    assert (r["points"] == "1") == (r["wbits"] in ("2", "3")), r
PYEOF
check "plan with the scales" "$BITPLAN" solve cfg.yaml --metric-scales scales.csv -o cal.json -q
check "it predicts kl" grep -q '"predicts": "kl"' cal.json
"$BITPLAN" run cfg.yaml --metric-scales scales.csv -q
$PY "$SRC/tools/evaluate_plan.py" capture_fixture:build --weights out/q.safetensors --plan out/plan.yaml --json >ev.json
$PY -c 'import json; r = json.load(open("ev.json")); assert r["predicted_what"] == "kl" and r["measured"] == r["kl"] and r["predicted"] > 0, r' \
    && ok || bad "evaluate_plan sets the plan's predicted KL beside the measured one"
check "calibrate to flips" $PY "$SRC/tools/calibrate.py" cfg.yaml capture_fixture:build -o fl.csv --objective flips -q
$PY - <<'PYEOF' && ok || bad "flips: exponent 0.5, at least two measured widths per layer"
import csv
rows = list(csv.DictReader(open("fl.csv")))
assert rows and all(r["objective"] == "flips" and float(r["exponent"]) == 0.5 for r in rows)
for layer in ("conv", "dw", "head"):
    assert len({r["wbits"] for r in rows if r["layer"] == layer and r["points"] != "0"}) >= 2, layer
PYEOF
# flips scales from all counts together: closer to the truth than each point
# alone, the lowest pick far less biased, well-measured points kept
check "calibrate: scales from few flip counts" $PY "$SRC/tests/calibrate_counts.py"
expect_fail 1 "objective 'loss' needs the user's loss" $PY "$SRC/tools/calibrate.py" cfg.yaml capture_fixture:build_shared -o x.csv --objective loss

# refine_plan: the search's plan is no worse than any seed on its half of the
# batches, within the budget, kept only when it is better on the other half,
# and written by bitplan as a given plan
"$BITPLAN" run cfg.yaml -q
ipsum=$(cat out/plan.yaml out/q.safetensors | sha256sum)
check "refine_plan" $PY "$SRC/tools/refine_plan.py" cfg.yaml capture_fixture:build --evals 60 --objective kl --json refine.json -q
$PY - <<'PYEOF' && ok || bad "refined KL <= every seed's, within the budget"
import json
r = json.load(open("refine.json"))
assert r["seeds"] and all(r["search"]["kl"] <= s["kl"] for s in r["seeds"].values()), r
assert r["bits"] <= r["limit_bits"] and r["evals"] <= 60, r
# kept only when better on the half the search did not see
c = r["check"]
assert r["kept"] == (c["found"]["kl"] < c["ip"]["kl"]), r
PYEOF
check "bitplan wrote the refined plan beside the IP plan" grep -q '^  name: "given"' out/refined/plan.yaml
check "with its own weights" "$BITPLAN" inspect out/refined/q.safetensors
check "the IP plan's set untouched" test "$(cat out/plan.yaml out/q.safetensors | sha256sum)" = "$ipsum"
check "refine_plan by flips" $PY "$SRC/tools/refine_plan.py" cfg.yaml capture_fixture:build --evals 30 --json rf.json -o rf.yaml -q
$PY - <<'PYEOF' && ok || bad "by flips (the default; ties by KL), kept only when better on the held-back half"
import json
r = json.load(open("rf.json"))
c = r["check"]
f, i = c["found"], c["ip"]
better = f["objective"] < i["objective"] or (f["objective"] == i["objective"] and f["kl"] < i["kl"] * (1 - 1e-9))
assert r["objective"] == "flips" and r["kept"] == better, r
assert f["objective"] == f["flips"] and 0 <= f["flips"] <= 1, f
PYEOF
check "refine -o writes the plan alone" grep -q '^  name: "given"' rf.yaml
# exports that quantize weights only: the search keeps to what they can apply, and says so
sed 's/^output: {dir: out, weights: q.safetensors}/output: {dir: out_g, formats: [yaml, gptqmodel], weights: q.safetensors}/' cfg.yaml >g.yaml
$PY "$SRC/tools/refine_plan.py" g.yaml capture_fixture:build --evals 20 >/dev/null 2>rg.err
check "refine_plan with a weights-only export: $(cat rg.err)" test -s out_g/refined/plan.yaml
check "it says which candidates it leaves out, and why" grep -q "6 (wbits/abits) left out of the search: gptqmodel quantize weights only" rg.err
check "the refined plan has no activation widths" bash -c "! grep -q '^    abits: 6' out_g/refined/plan.yaml"
check "and GPTQModel takes it without a warning" bash -c "'$BITPLAN' export out_g/refined/plan.yaml --format gptqmodel -o g.json 2>&1 | grep -q warning; test \$? = 1"
expect_fail 1 "needs at least 2 batches (got 1)" $PY "$SRC/tools/refine_plan.py" cfg.yaml capture_fixture:build_one --evals 5
check "and its quantized weights" "$BITPLAN" inspect out/q.safetensors
# every tool's --help: a whole sentence saying what it does, options with their defaults
for t in capture calibrate measure_deltas refine_plan evaluate_plan; do
    $PY "$SRC/tools/$t.py" --help >th.txt 2>&1
    desc=$(awk '/^$/ { n++; next } n == 1' th.txt | tr '\n' ' ' | sed 's/ *$//')
    [[ "$desc" == *. ]] && ok || bad "$t --help: its description stops mid-sentence: '$desc'"
    grep -q "(default: " th.txt && ok || bad "$t --help shows no defaults"
done
finish
