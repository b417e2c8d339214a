#!/bin/bash
# Bad input: non-zero exit, one message naming the file/key, no partial
# plan, previous outputs intact.
source "$SRC/tests/lib.sh"

mkdir m && "$FIXTURE" m 3
cat >good.yaml <<'YAML'
model: {weights: m/model.safetensors, calibration: m/calib.safetensors, exclude: [head]}
candidates: {wbits: [2, 4, 8], abits: [16]}
budget: {avg_bits: 4}
output: {dir: out}
YAML
"$BITPLAN" run good.yaml -q
check "good run" test -f out/plan.yaml
cp out/plan.yaml before.yaml

# infeasible budget: smallest feasible value named, old plan untouched
sed 's/avg_bits: 4/avg_bits: 1.5/' good.yaml >tight.yaml
# all three layers at 2 bits: 1440 weights x 2 bits + 32 fp16 channel scales
least=$(awk 'BEGIN{printf "%.6f", (1440 * 2 + 32 * 16) / 1440}')
expect_fail 1 "budget.avg_bits = 1.5 is infeasible: the smallest feasible value is $least" "$BITPLAN" run tight.yaml
check "previous plan intact" cmp -s before.yaml out/plan.yaml
check "no temp files left" test -z "$(ls out | grep tmp)"
expect_fail 1 "budget.max_bytes = 10 is infeasible: the smallest feasible value is" \
    "$BITPLAN" solve good.yaml --max-bytes 10
expect_fail 1 "budget.max_error = 0 is infeasible" "$BITPLAN" solve good.yaml --max-error 0

# a layer without calibration under a data metric names the layer
sed 's/, exclude: \[head\]//' good.yaml >nodata.yaml
expect_fail 1 "layer 'head': metric 'relative' needs calibration inputs" "$BITPLAN" run nodata.yaml

# config errors name file, line and key
printf 'model: {weights: m/model.safetensors}\nbudget: {avg_bits: 4, avg_bit: 3}\n' >typo.yaml
expect_fail 1 "typo.yaml:2:23: budget.avg_bit: unknown key" "$BITPLAN" run typo.yaml
printf 'model: {weights: m/model.safetensors}\n' >nobudget.yaml
expect_fail 1 "no budget" "$BITPLAN" run nobudget.yaml
printf 'model: {weights: m/model.safetensors}\nbudget: {avg_bits: 4}\npins: [{pattern: "nothing*", wbits: 8}]\n' >pin.yaml
expect_fail 1 "pattern 'nothing*' matches no layer" "$BITPLAN" run pin.yaml

# corrupt model files
head -c 200 m/model.safetensors >m/trunc.safetensors
sed 's#m/model.safetensors#m/trunc.safetensors#' good.yaml >trunc.yaml
sed -i 's/dir: out/dir: out_trunc/' trunc.yaml
expect_fail 1 "m/trunc.safetensors" "$BITPLAN" run trunc.yaml
check "no plan from a corrupt model" test ! -e out_trunc/plan.yaml
printf '\x10\x00\x00\x00\x00\x00\x00\x00{"a":1}        ' >m/bad.safetensors
sed 's#m/model.safetensors#m/bad.safetensors#' good.yaml >bad.yaml
expect_fail 1 "m/bad.safetensors" "$BITPLAN" run bad.yaml
expect_fail 1 "cannot open" "$BITPLAN" inspect missing.safetensors

# tables from elsewhere
printf 'layer,wbits,abits,params\na,4,16,10\n' >nocol.csv
expect_fail 1 "nocol.csv: missing required column 'error'" "$BITPLAN" solve --table nocol.csv --avg-bits 4
printf 'layer,wbits,abits,error,params\na,4,16,x,10\n' >nonnum.csv
expect_fail 1 "nonnum.csv:2: column 'error'" "$BITPLAN" solve --table nonnum.csv --avg-bits 4
check "no plan written for bad tables" test ! -e plan.yaml
finish
