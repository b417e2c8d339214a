#!/bin/bash
# bitplan's ggml types against llama.cpp's own quantize functions, byte for
# byte (bench/llamacpp/quants.c).
#   LLAMA_CPP_DIR=/path/to/llama.cpp bench/llamacpp/quants.sh [ROWS] [BUILD]
# LLAMA_CPP_DIR is a llama.cpp source checkout built as its docs/build.md
# says (CPU; the libraries in LLAMA_CPP_DIR/build/bin); BUILD is bitplan's
# build directory (default build/, for libbitplan.a).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
: "${LLAMA_CPP_DIR:?set LLAMA_CPP_DIR to a built llama.cpp checkout}"
lib=$LLAMA_CPP_DIR/build/bin
[ -e "$lib/libggml-base.so" ] || { echo "no $lib/libggml-base.so: build llama.cpp first" >&2; exit 2; }
build=$(realpath "${2:-$root/build}")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cc -O2 -ffp-contract=off -I"$root" -I"$LLAMA_CPP_DIR/ggml/include" "$here/quants.c" \
    "$build/libbitplan.a" -L"$lib" -lggml-base -Wl,-rpath,"$lib" -lm -o "$out/quants"
echo "llama.cpp $(git -C "$LLAMA_CPP_DIR" rev-parse --short HEAD 2>/dev/null || echo '(no git)')"
"$out/quants" "${1:-64}"
