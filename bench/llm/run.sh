#!/bin/bash
# LLM scale on one machine: a Llama decoder at 7B shapes (bench/llm/llama.py:
# 2 blocks of 4,096 / 11,008 with 32 heads, and the 32,000-wide head, random
# weights) captured as statistics (tools/capture.py --stats) over SEQS x SEQ
# tokens, then sensitivity (rtn and gptq, wbits 2 3 4 6 8 x abits 8 16, per
# group of 128), a plan at 4.5 bits and the llama.cpp export with GGUF names.
# Prints each stage's time and peak memory, and the projections to 262,144
# tokens and 32 blocks (bench/llm/report.py).  LLAMA_MEASURE (glob patterns,
# default "lm_head model.layers.0.*") chooses the layers measured and planned:
# every block has the same shapes, so one block gives the time per block.
#
#   bench/llm/run.sh [BUILD_DIR] [OUT_DIR]       (environment: LLAMA_* as in llama.py)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
out=${2:-/tmp/bitplan-llm}
mkdir -p "$out"
out=$(cd "$out" && pwd)
py=/usr/bin/python3
export PYTHONPATH="$src/bench/llm:$src/tools"
export LLAMA_SEQS=${LLAMA_SEQS:-2} LLAMA_SEQ=${LLAMA_SEQ:-2048} LLAMA_BLOCKS=${LLAMA_BLOCKS:-2}
measure=${LLAMA_MEASURE:-lm_head model.layers.0.*}
include=$(set -f; printf "'%s', " $measure)
cat >"$out/llama.yaml" <<YAML
model: {weights: weights.safetensors, calibration: stats.safetensors, include: [${include%, }]}
candidates: {wbits: [2, 3, 4, 6, 8], abits: [8, 16]}
weights: {quantizer: [rtn, gptq], granularity: per_group, group_size: 128}
metric: relative
budget: {avg_bits: 4.5}
export: {llama_names: true}
output: {dir: out, formats: [yaml, llamacpp]}
YAML
timed() { # timed LABEL CMD...: wall seconds and peak RSS into $out/LABEL.time
    local label=$1; shift
    /usr/bin/time -f "%e %M" -o "$out/$label.time" "$@"
}
cd "$out"
echo "capture: $LLAMA_BLOCKS blocks, $LLAMA_SEQS x $LLAMA_SEQ tokens" >&2
timed capture $py "$src/tools/capture.py" llama:build --out "$out" --stats --config llama.yaml \
    --bitplan "$build/bitplan" --range-batches 1 -q
ls -l stats.safetensors >&2
BITPLAN_PROFILE=1 timed sensitivity "$build/bitplan" sensitivity llama.yaml 2>sensitivity.log
timed run "$build/bitplan" run llama.yaml -q
$py "$here/report.py" "$out"
