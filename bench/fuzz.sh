#!/bin/bash
# Fuzz the input parsers with libFuzzer (clang; installed with apt-get if
# missing and run as root):
#   bench/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
# Targets: safetensors npy config table gguf imatrix plan qweights stats
# (default: all), each run for
# SECONDS (default 600) with AddressSanitizer and UBSan, seeded from the
# repository's own files.  Findings land in build-fuzz/findings/TARGET/.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
SECS=${1:-600}
shift || true
TARGETS=${*:-safetensors npy config table gguf imatrix plan qweights stats}
OUT=$SRC/build-fuzz
if ! command -v clang >/dev/null; then
    [ "$(id -u)" = 0 ] || { echo "fuzz.sh needs clang (apt-get install clang)" >&2; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang >/dev/null
fi
mkdir -p "$OUT"
echo '#define BP_VERSION "fuzz"' >"$OUT/bp_version.h"
LIB=$(ls "$SRC"/common/*.c "$SRC"/planner/*.c "$SRC"/planner/formats/*.c "$SRC"/sensitivity/*.c \
    "$SRC"/solvers/*.c | grep -v planner/main.c)
CFLAGS="-std=c11 -D_POSIX_C_SOURCE=200809L -O1 -g -fsanitize=fuzzer,address,undefined
        -fno-sanitize-recover=undefined -I$SRC -I$OUT $(pkg-config --cflags yaml-0.1 openblas lapacke)"
LIBS="$(pkg-config --libs yaml-0.1 openblas lapacke) -lglpk -lm -pthread"

# seeds: the shipped demo files, a generated fixture, configs, a table
SEEDS=$OUT/seeds
rm -rf "$SEEDS" && mkdir -p "$SEEDS"/{safetensors,npy,config,table,gguf,imatrix,plan,qweights,stats}
cp "$SRC"/configs/demo/*.safetensors "$SEEDS/safetensors/"
cp "$SRC"/configs/*.yaml "$SEEDS/config/"
if [ -x "$SRC/build/tests/bp_fixture" ]; then
    mkdir -p "$OUT/fixture" && "$SRC/build/tests/bp_fixture" "$OUT/fixture" 1 >/dev/null
    cp "$OUT"/fixture/*.safetensors "$SEEDS/safetensors/"
    cp "$OUT"/fixture/npy_model/*.npy "$SEEDS/npy/"
fi
printf 'layer,wbits,abits,error,params\na,4,16,0.5,10\n"b,c",8,8,1e-3,20\n' >"$SEEDS/table/t.csv"
# the llama.cpp route's files, a plan, quantized weights and calibration (statistics
# and Fishers) from the build's own commands
cp "$SRC"/configs/demo/calib.safetensors "$SEEDS/stats/"
if [ -x "$SRC/build/bitplan" ] && [ -x "$SRC/build/tests/bp_fixture" ]; then
    G=$OUT/gguf-seed && rm -rf "$G" && mkdir -p "$G"
    "$SRC/build/tests/bp_fixture" --gguf "$G" 1
    cp "$G/model.imatrix.gguf" "$SEEDS/gguf/" && cp "$G/model.imatrix.dat" "$SEEDS/imatrix/"
    head -c 60000 "$G/model.gguf" >"$SEEDS/gguf/model-head.gguf"
    printf 'model: {weights: %s/model.gguf, imatrix: %s/model.imatrix.gguf}\ncandidates: {types: [q4_K, q8_0]}\nbudget: {bpw: 6}\noutput: {dir: %s/out}\n' "$G" "$G" "$G" >"$G/g.yaml"
    "$SRC/build/bitplan" run "$G/g.yaml" -q && cp "$G/out/plan.yaml" "$SEEDS/plan/gguf-plan.yaml"
    "$SRC/build/bitplan" quantize "$SRC/configs/demo.yaml" --wbits 4 -o "$SEEDS/qweights/q4.safetensors" -q
    "$SRC/build/bitplan" solve "$SRC/configs/demo.yaml" --avg-bits 4 -o "$SEEDS/plan/demo-plan.yaml" -q
fi
[ -f "$SRC/configs/demo/out/sensitivity.csv" ] && cp "$SRC/configs/demo/out/sensitivity.csv" "$SEEDS/table/"

for t in $TARGETS; do
    echo "== $t: building"
    # shellcheck disable=SC2086
    clang $CFLAGS "$SRC/bench/fuzz/fuzz_$t.c" $LIB -o "$OUT/fuzz_$t" $LIBS
    mkdir -p "$OUT/corpus/$t" "$OUT/findings/$t"
    echo "== $t: fuzzing for $SECS s"
    "$OUT/fuzz_$t" -max_total_time="$SECS" -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="$OUT/findings/$t/" -print_final_stats=1 \
        "$OUT/corpus/$t" "$SEEDS/$t" 2>&1 | grep -E "^(#[0-9]+.*DONE|stat::number_of_executed_units|==[0-9]+==ERROR|SUMMARY)" || true
    n=$(ls "$OUT/findings/$t" | wc -l)
    echo "== $t: $n finding(s) in $OUT/findings/$t"
done
