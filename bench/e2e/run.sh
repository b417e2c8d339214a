#!/bin/bash
# Accuracy of bitplan's plans against uniform and heuristic allocations on the
# demo CNN (real Fashion-MNIST test images).  Needs Debian's python3-torch.
#   bench/e2e/run.sh [BUILD_DIR] [QUANTIZERS]      (defaults: build, "rtn gptq")
# Prints a Markdown table: one row per method and budget, accuracy per quantizer.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/../.." && pwd)
BITPLAN=$(cd "${1:-$SRC/build}" && pwd)/bitplan
QUANTIZERS=${2:-rtn gptq}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
ln -s "$SRC/configs/demo" demo
PY=/usr/bin/python3
eval_plan() { $PY "$SRC/bench/e2e/evaluate.py" "$1/plan.yaml" "$1/q.safetensors" 2>/dev/null; }

# config: quantizer $1, extra lines $2, output dir $3
config() {
    cat <<YAML
model: {weights: demo/model.safetensors, calibration: demo/calib.safetensors}
candidates: {wbits: [2, 3, 4, 5, 6, 8], abits: [8, 16]}
weights: {quantizer: $1, range: mse}
activations: {range: minmax}
$2
output: {dir: $3, weights: q.safetensors, dequantized: true}
YAML
}
avg_of() { grep -E '^  avg_bits: ' "$1/plan.yaml" | tail -1 | awk '{printf "%.2f", $2}'; }

printf '| method | budget (avg bits) |'
for q in $QUANTIZERS; do printf ' %s: bits | %s: accuracy |' "$q" "$q"; done
printf '\n| --- | ---: |'
for q in $QUANTIZERS; do printf ' ---: | ---: |'; done
printf '\n'
for b in 2.5 3 3.5 4 5 6; do
    for method in plan hawq; do
        printf '| %s | %s |' "$( [ $method = plan ] && echo "bitplan (relative)" || echo "HAWQ-style (hawq metric)")" "$b"
        for q in $QUANTIZERS; do
            d=$method-$q-$b
            metric=relative; [ $method = hawq ] && metric=hawq
            config "$q" "metric: $metric
budget: {avg_bits: $b}" "$d" >$d.yaml
            if "$BITPLAN" run $d.yaml -q 2>/dev/null; then
                printf ' %s | %s |' "$(avg_of $d)" "$(eval_plan $d)"
            else
                printf ' - | infeasible |'
            fi
        done
        printf '\n'
    done
done
for w in 2 3 4 5 6 8; do
    for method in uniform firstlast; do
        [ $method = firstlast ] && [ $w = 8 ] && continue
        printf '| %s | - |' "$( [ $method = uniform ] && echo "uniform w$w a8" || echo "first/last 8, rest w$w a8")"
        for q in $QUANTIZERS; do
            d=$method-$q-$w
            if [ $method = uniform ]; then
                allow="allowed: [{pattern: '*', wbits: [$w], abits: [8]}]"
            else
                allow="allowed: [{pattern: 'conv1', wbits: [8], abits: [8]}, {pattern: 'fc2', wbits: [8], abits: [8]}, {pattern: 'conv2', wbits: [$w], abits: [8]}, {pattern: 'fc1', wbits: [$w], abits: [8]}]"
            fi
            config "$q" "metric: relative
$allow
budget: {avg_bits: 16}" "$d" >$d.yaml
            "$BITPLAN" run $d.yaml -q
            printf ' %s | %s |' "$(avg_of $d)" "$(eval_plan $d)"
        done
        printf '\n'
    done
done
