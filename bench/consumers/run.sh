#!/bin/bash
# bitplan's exports through the consumers' own code (bench/consumers/check.py):
#   LLAMA_CPP_DIR=... GPTQMODEL_DIR=... COMPRESSED_TENSORS_DIR=... AUTOROUND_DIR=... \
#       bench/consumers/run.sh [BITPLAN]
# Each *_DIR is a source checkout of that project (git clone); a consumer
# without one is skipped.  llama-quantize is built from LLAMA_CPP_DIR (cmake,
# CPU only) if LLAMA_CPP_DIR/build/bin/llama-quantize is missing.  Needs
# Debian's python3-torch, python3-numpy, python3-yaml and python3-packaging.
# Prints one table row per consumer and plan; exits non-zero on any tensor a
# consumer treats differently from the plan without a warning from bitplan.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
BITPLAN=$(realpath "${1:-$here/../../build/bitplan}")
W=${WORK:-/tmp/bitplan-consumers}
PY=/usr/bin/python3
rm -rf "$W" && mkdir -p "$W"
if [ -n "${LLAMA_CPP_DIR:-}" ] && [ ! -x "$LLAMA_CPP_DIR/build/bin/llama-quantize" ]; then
    cmake -S "$LLAMA_CPP_DIR" -B "$LLAMA_CPP_DIR/build" -DCMAKE_BUILD_TYPE=Release \
        -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_SERVER=OFF -DGGML_OPENMP=OFF >"$W/llama-cmake.log"
    cmake --build "$LLAMA_CPP_DIR/build" --target llama-quantize -j"$(nproc)" >"$W/llama-build.log"
fi
gguf_py=${LLAMA_CPP_DIR:+$LLAMA_CPP_DIR/gguf-py}
$PY "$here/tiny_llama.py" "$W" "${gguf_py:-/nonexistent}"
cp "$here/plan_a.yaml" "$here/plan_b.yaml" "$W/"
(cd "$W" && "$BITPLAN" run plan_a.yaml -q && "$BITPLAN" run plan_b.yaml -q)
# plan B: one layer per tensor, one per group of 128 symmetric
$PY - "$W/out_b/plan.yaml" <<'PYEOF'
import sys, yaml
path = sys.argv[1]
plan = yaml.safe_load(open(path))
for l in plan["layers"]:
    if l["name"] == "model.layers.1.self_attn.v_proj":
        l.update(granularity="per_tensor", group_size=0, symmetric=True)
    if l["name"] == "model.layers.1.mlp.up_proj":
        l.update(granularity="per_group", group_size=128, symmetric=True)
yaml.safe_dump(plan, open(path, "w"), sort_keys=False)
PYEOF
$PY "$here/check.py" --bitplan "$BITPLAN" --work "$W" \
    --plans "$W/out_a/plan.yaml" "$W/out_b/plan.yaml" \
    ${LLAMA_CPP_DIR:+--llama-cpp "$LLAMA_CPP_DIR"} ${GPTQMODEL_DIR:+--gptqmodel "$GPTQMODEL_DIR"} \
    ${COMPRESSED_TENSORS_DIR:+--compressed-tensors "$COMPRESSED_TENSORS_DIR"} \
    ${AUTOROUND_DIR:+--autoround "$AUTOROUND_DIR"}
