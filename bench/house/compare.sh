#!/bin/bash
# Same inputs, two bitplan binaries, the same bytes?  Runs OLD and NEW on the
# same configs and files (the demo CNN with every quantizer and granularity,
# a fixture model with grouped convs and statistics-free calibration, the
# ViT and language model data-free) and compares every output byte for byte:
# the sensitivity table and its key, plans (YAML, JSON; the solver's seconds
# line aside), every export, the quantized weights, sweeps, the solver's
# program, grids and inspect's report.  Prints one line per output and
# "N identical, M differ"; exits 1 when any differ.
#
#   bench/house/compare.sh OLD/bitplan NEW/bitplan [WORK]
set -u
OLD=$(realpath "$1") NEW=$(realpath "$2")
SRC=$(cd "$(dirname "$0")/../.." && pwd)
W=${3:-$(mktemp -d)}
rm -rf "$W/old" "$W/new" && mkdir -p "$W/old" "$W/new"
same=0 differ=0

run_both() { # NAME CONFIG-TEXT : every command on both binaries
    local name=$1 text=$2
    for side in old new; do
        local bin=$OLD; [ $side = new ] && bin=$NEW
        local d="$W/$side/$name"; mkdir -p "$d"; cd "$d" || exit 1
        printf '%s\n' "$text" >cfg.yaml
        "$bin" run cfg.yaml -q >run.out 2>run.err
        "$bin" sensitivity cfg.yaml -o table.csv -q 2>>run.err
        "$bin" sweep cfg.yaml --avg-bits 3:6:1 -o sweep -q 2>>run.err
        "$bin" candidates cfg.yaml -o program.csv 2>>run.err
        "$bin" solve cfg.yaml --avg-bits 5 -o p5.json -q 2>>run.err
        "$bin" quantize cfg.yaml --wbits 4 -o u4.safetensors -q 2>>run.err
        "$bin" inspect u4.safetensors >inspect.txt 2>>run.err
        [ -e out/plan.yaml ] && "$bin" export out/plan.yaml --format llamacpp -o ll.txt -q 2>>run.err
        "$bin" solve --table table.csv --avg-bits 4 -o bare.yaml -q 2>>run.err
        for f in out/plan.yaml out/plan.json p5.json bare.yaml; do   # the solver's time aside
            [ -e "$f" ] && sed -E '/"?seconds"?: /d' "$f" >"$f.cmp"
        done
    done
}

compare() {
    cd "$W/old" || exit 1
    while IFS= read -r f; do
        case "$f" in *plan.yaml|*plan.json|*p5.json|*bare.yaml|*/run.err|*.bitplan-sets/*|*.bitplan-hashes) continue ;; esac
        if [ -e "$W/new/$f" ] && cmp -s "$f" "$W/new/$f"; then
            same=$((same + 1))
        else
            differ=$((differ + 1)); echo "DIFFERS: $f"
        fi
    done < <(find . -type f -o -type l | sed 's#^\./##' | sort)
}

demo="model: {weights: $SRC/configs/demo/model.safetensors, calibration: $SRC/configs/demo/calib.safetensors}"
for q in rtn squant gptq erq "[rtn, gptq]"; do
    for g in "granularity: per_channel" "granularity: per_group, group_size: 64" "granularity: per_tensor, symmetric: false"; do
        [ "$q" = squant ] && [ "$g" != "granularity: per_channel" ] && continue
        name=$(echo "demo-$q-$g" | tr -c 'A-Za-z0-9_-' '_')
        run_both "$name" "$demo
candidates: {wbits: [2, 3, 4, 6, 8], abits: [8, 16]}
weights: {quantizer: $q, $g, range: mse}
budget: {avg_bits: 4}
pins: [{pattern: fc2, wbits: 8}]
output: {dir: out, formats: [yaml, json, llamacpp, gptqmodel, llmcompressor, autoround], weights: q.safetensors}"
    done
done
for m in vit lm; do
    run_both "$m-data-free" "model: {weights: $SRC/configs/$m/model.safetensors, exclude: ['*tok*', '*pos*', '*embed*']}
candidates: {wbits: [2, 3, 4, 8]}
weights: {quantizer: rtn}
metric: weight
budget: {avg_bits: 3.5}
output: {dir: out, formats: [yaml, json], weights: q.safetensors}"
done
if [ -x "${FIXTURE:-}" ]; then
    mkdir -p "$W/fixture" && "$FIXTURE" "$W/fixture" 7 >/dev/null
    run_both fixture "model: {weights: $W/fixture/model.safetensors, calibration: $W/fixture/calib.safetensors}
candidates: {wbits: [2, 4, 8], abits: [6, 16]}
weights: {quantizer: [rtn, gptq]}
budget: {avg_bits: 4.5}
output: {dir: out, formats: [yaml, json], weights: q.safetensors}"
fi
compare
echo "$same identical, $differ differ ($W)"
[ "$differ" = 0 ]
