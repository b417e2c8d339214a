#!/bin/bash
# The decision Fisher (metric margin) and metric scales (metric_scales, from
# tools/calibrate.py): margin runs through the same exact machinery as kfac,
# scaled errors are the metric's times each layer's scale, the plan predicts
# the objective as (sum of errors)^exponent, and max_error is in the
# objective's units.  Needs NumPy (to write the calibration files).
source "$SRC/tests/lib.sh"

PY=/usr/bin/python3
if ! $PY -c 'import numpy' 2>/dev/null; then
    echo "python3-numpy not installed: objective test skipped"
    finish
    exit 0
fi
export PYTHONPATH="$SRC/tools"
# the demo's calibration file with each layer's decision Fisher = 2 x its output Fisher
$PY - "$SRC/configs/demo/calib.safetensors" <<'PYEOF' || bad "write the calibration file"
import sys
from safetensors_io import load_file, save_file
t, meta = load_file(sys.argv[1])
for k in [k for k in t if k.endswith(".fisher")]:
    t[k[:-len("fisher")] + "margin"] = 2 * t[k]
save_file("calib.safetensors", t, meta)
PYEOF
cat >cfg.yaml <<YAML
model: {weights: $SRC/configs/demo/model.safetensors, calibration: calib.safetensors}
candidates: {wbits: [2, 3, 4, 8], abits: [16]}
metric: margin
budget: {avg_bits: 4}
output: {dir: out}
YAML
check "margin plan" "$BITPLAN" run cfg.yaml -q
check "margin table" "$BITPLAN" sensitivity cfg.yaml -o table.csv -q
awk -F, 'NR > 1 {r = $15 / $14; if (r < 2 * (1 - 1e-12) || r > 2 * (1 + 1e-12)) bad = 1; n++}
         END {exit bad || n != 16}' table.csv && ok || bad "margin column = 2 x kfac (the same machinery)"
check "auto plans with margin, when every layer has it" grep -q '^  metric: "margin"' <("$BITPLAN" solve cfg.yaml --metric auto -o - -q)
"$BITPLAN" inspect calib.safetensors >inspect.txt && grep -q 'conv1.margin' inspect.txt && ok ||
    bad "inspect lists the decision Fisher"

# scales: the plan's errors are the metric's times its layer's scale
printf 'layer,metric,objective,scale\nconv1,margin,kl,1\nconv2,margin,kl,2\nfc1,margin,kl,3\nfc2,margin,kl,4\n' >kl.csv
check "scaled plan" "$BITPLAN" solve cfg.yaml --metric-scales kl.csv -o kl.json -q
$PY - <<'PYEOF' && ok || bad "scaled errors, predicted = their sum"
import csv, json
p = json.load(open("kl.json"))
raw = {(r["layer"], int(r["wbits"]), int(r["abits"])): float(r["margin"]) for r in csv.DictReader(open("table.csv"))}
s = {"conv1": 1, "conv2": 2, "fc1": 3, "fc2": 4}
tot = 0.0
for l in p["layers"]:
    want = raw[(l["name"], l["wbits"], l["abits"])] * s[l["name"]]
    assert abs(l["error"] - want) <= 1e-12 * want, (l, want)
    tot += want
t = p["totals"]
assert abs(t["predicted_error"] - tot) <= 1e-12 * tot and abs(t["predicted"] - tot) <= 1e-12 * tot, t
assert p["model"]["metric_scales"] == "kl.csv" and p["model"]["predicts"] == "kl", p["model"]
PYEOF
"$BITPLAN" run cfg.yaml --metric-scales kl.csv | grep -q '^predicted kl: ' && ok || bad "summary names the objective"

# a width's own scale before the layer's
printf 'layer,metric,objective,wbits,scale\nconv1,margin,kl,,1\nconv2,margin,kl,,1\nfc1,margin,kl,,1\nfc1,margin,kl,2,10\nfc2,margin,kl,,1\n' >w.csv
check "candidates with width scales" "$BITPLAN" candidates cfg.yaml --metric-scales w.csv -o prog.csv
$PY - <<'PYEOF' && ok || bad "per-width scales: fc1 at 2 bits x10, the rest x1"
import csv
raw = {(r["layer"], r["wbits"]): float(r["margin"]) for r in csv.DictReader(open("table.csv"))}
n = 0
for r in csv.DictReader(open("prog.csv")):
    s = 10 if (r["layer"], r["wbits"]) == ("fc1", "2") else 1
    want = raw[(r["layer"], r["wbits"])] * s
    assert abs(float(r["error"]) - want) <= 1e-12 * want, (r, want)
    n += 1
assert n == 16, n
PYEOF

# an exponent: flips = (sum of errors)^0.5, and max_error in flips
printf 'layer,metric,objective,exponent,scale\nconv1,margin,flips,0.5,1\nconv2,margin,flips,0.5,1\nfc1,margin,flips,0.5,1\nfc2,margin,flips,0.5,1\n' >fl.csv
check "exponent plan" "$BITPLAN" solve cfg.yaml --metric-scales fl.csv -o fl.json -q
$PY -c 'import json; t = json.load(open("fl.json"))["totals"]; assert abs(t["predicted"] - t["predicted_error"] ** 0.5) <= 1e-12 * t["predicted"], t' \
    && ok || bad "predicted = (sum of errors)^exponent"
E=$($PY -c 'import json; print(1.5 * json.load(open("fl.json"))["totals"]["predicted"])')
check "max_error in flips" "$BITPLAN" solve cfg.yaml --metric-scales fl.csv --max-error "$E" -o me.json -q
$PY -c "import json; p = json.load(open('me.json')); t = p['totals']; assert t['predicted'] <= $E and t['predicted_error'] <= $E ** 2 * (1 + 1e-12) and p['budget']['max_error'] == $E, p" \
    && ok || bad "a max_error plan keeps predicted (in flips) within it"
expect_fail 1 "budget.max_error = 1e-09 is infeasible: the smallest feasible value is" \
    "$BITPLAN" solve cfg.yaml --metric-scales fl.csv --max-error 1e-9 -o x.json
min=$(sed -E 's/.*smallest feasible value is ([0-9.e+-]+).*/\1/' err.txt)
check "the smallest max_error is met" "$BITPLAN" solve cfg.yaml --metric-scales fl.csv --max-error "$min" -o m.json -q

# --errors (measured already) is not scaled
awk -F, 'NR == 1 {print "layer,wbits,abits,quantizer,loss_delta,params,weight_bits"; next}
         {print $1","$2","$3","$4","$15","$6","$7}' table.csv >deltas.csv
check "errors with scales" "$BITPLAN" solve cfg.yaml --metric-scales kl.csv --errors deltas.csv -o d.json -q
$PY -c 'import json; m = json.load(open("d.json"))["model"]; assert "predicts" not in m, m' \
    && ok || bad "--errors is not scaled"

# bad scales: one message naming the file and what was expected, no plan
printf 'layer,metric,objective,scale\nconv1,margin,kl,1\n' >short.csv
expect_fail 1 "short.csv: no scale for layer 'conv2' and metric 'margin' at 2-bit weights" "$BITPLAN" solve cfg.yaml --metric-scales short.csv -o x.json
printf 'layer,metric,objective,scale\nconv1,margin,kl,1\nconv2,margin,flips,1\n' >two.csv
expect_fail 1 "two.csv:3: objective 'flips', but earlier rows calibrate to 'kl'" "$BITPLAN" solve cfg.yaml --metric-scales two.csv -o x.json
printf 'layer,metric,objective,scale\nconv1,margin,kl,-1\n' >neg.csv
expect_fail 1 "neg.csv:2: expected layer,metric,objective,scale with a scale that is a finite number >= 0" "$BITPLAN" solve cfg.yaml --metric-scales neg.csv -o x.json
printf 'layer,metric,objective,exponent,scale\nconv1,margin,kl,2,1\n' >ex.csv
expect_fail 1 "ex.csv:2: exponent '2': expected a number in (0, 1]" "$BITPLAN" solve cfg.yaml --metric-scales ex.csv -o x.json
printf 'layer,metric,objective,scale\nconv1,margin,kl,1\nconv1,margin,kl,2\n' >dup.csv
expect_fail 1 "dup.csv:3: layer 'conv1' and metric 'margin' are listed twice" "$BITPLAN" solve cfg.yaml --metric-scales dup.csv -o x.json
printf 'layer,metric,scale\nconv1,margin,1\n' >col.csv
expect_fail 1 "col.csv: missing required column 'objective'" "$BITPLAN" solve cfg.yaml --metric-scales col.csv -o x.json
printf 'layer,metric,objective,scale\nconv1,margin,loss2,1\n' >obj.csv
expect_fail 1 "obj.csv:2: objective 'loss2': expected kl, flips, loss or metric" "$BITPLAN" solve cfg.yaml --metric-scales obj.csv -o x.json
expect_fail 1 "nothere.csv" "$BITPLAN" solve cfg.yaml --metric-scales nothere.csv -o x.json
check "no plan from a failed run" test ! -e x.json
printf 'metric_scales: kl.csv\n' >>cfg.yaml
check "metric_scales in the config" "$BITPLAN" solve cfg.yaml -o c.json -q
check "the config's scales are applied" grep -q '"predicts": "kl"' c.json

# a noisy Fisher (no scales): each layer's scale over the relative error,
# log-shrunk toward the precision-weighted mean by tau^2 / (tau^2 + rse^2);
# noise: ignore keeps the raw errors
sed -e '/metric_scales/d' -e 's#dir: out#dir: out_noise#' cfg.yaml >noise.yaml
$PY - <<'PYEOF' || bad "write the noisy calibration file"
from safetensors_io import load_file, save_file
t, meta = load_file("calib.safetensors")
for n, r in (("conv1", "0.05"), ("conv2", "0.3"), ("fc1", "0.6"), ("fc2", "0.02")):
    meta[n + ".margin_rse"] = r
save_file("noisy.safetensors", t, meta)
PYEOF
sed -i 's#calibration: calib.safetensors#calibration: noisy.safetensors#' noise.yaml
check "noisy plan" "$BITPLAN" candidates noise.yaml -o noisy.csv
check "noisy table" "$BITPLAN" sensitivity noise.yaml -o noisy_table.csv -q
check "the plan says what was done" grep -q 'noise: ".*up to 60 %: layer scales' <("$BITPLAN" solve noise.yaml -o - -q)
$PY - <<'PYEOF' && ok || bad "the shrunk errors"
import csv, math
rows = list(csv.DictReader(open("noisy_table.csv")))
rse = {"conv1": 0.05, "conv2": 0.3, "fc1": 0.6, "fc2": 0.02}
names = list(rse)
y = {n: math.log(sum(float(r["margin"]) for r in rows if r["layer"] == n) /
                 sum(float(r["relative"]) for r in rows if r["layer"] == n)) for n in names}
s2 = {n: math.log1p(rse[n] ** 2) for n in names}
mean = sum(y.values()) / 4
var = sum((y[n] - mean) ** 2 for n in names) / 3
tau2 = max(var - sum(s2.values()) / 4, 0.0)
w = {n: 1 / (tau2 + s2[n]) for n in names}
mu = sum(w[n] * y[n] for n in names) / sum(w.values())
f = {n: math.exp(mu + tau2 / (tau2 + s2[n]) * (y[n] - mu) - y[n]) for n in names}
raw = {(r["layer"], r["wbits"]): float(r["margin"]) for r in rows}
for r in csv.DictReader(open("noisy.csv")):
    want = raw[(r["layer"], r["wbits"])] * f[r["layer"]]
    assert abs(float(r["error"]) - want) <= 1e-9 * want, (r, want)
assert abs(f["fc1"] - 1) > abs(f["fc2"] - 1), f       # the noisiest moves most
PYEOF
printf 'noise: ignore\n' >>noise.yaml
check "noise ignored" "$BITPLAN" candidates noise.yaml -o raw.csv
$PY -c 'import csv; t = {(r["layer"], r["wbits"]): float(r["margin"]) for r in csv.DictReader(open("noisy_table.csv"))}; assert all(float(r["error"]) == t[(r["layer"], r["wbits"])] for r in csv.DictReader(open("raw.csv")))' \
    && ok || bad "noise: ignore plans with the raw errors"

# the decision Fisher is checked like the output Fisher
$PY - <<'PYEOF' || bad "write a bad file"
from safetensors_io import load_file, save_file
t, meta = load_file("calib.safetensors")
t["fc2.margin"] = t["fc2.margin"][:3, :3].copy()
save_file("badcalib.safetensors", t, meta)
PYEOF
sed -e 's#calibration: calib.safetensors#calibration: badcalib.safetensors#' -e '/metric_scales/d' -e 's#dir: out#dir: out_bad#' cfg.yaml >bad.yaml
expect_fail 1 "tensor 'fc2.margin': expected a float matrix [10, 10] (the decision Fisher" "$BITPLAN" run bad.yaml
sed -e "s#calibration: calib.safetensors#calibration: $SRC/configs/demo/calib.safetensors#" -e '/metric_scales/d' -e 's#dir: out#dir: out_none#' cfg.yaml >none.yaml
expect_fail 1 "metric 'margin' needs 'conv1.margin'" "$BITPLAN" run none.yaml
finish
