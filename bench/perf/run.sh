#!/bin/bash
# Speed of bitplan's stages against this machine's BLAS peak, a naive NumPy
# implementation of the same sensitivity work, and CBC for the solver.
#   bench/perf/run.sh [BUILD_DIR] [BLOCKS]        (defaults: build, 24)
# BUILD_DIR must hold a Release build (bitplan, bench_peak).  BLOCKS transformer
# blocks of 768/3072 linear layers (4 layers each, 1,024 calibration tokens)
# make the large case.  Needs Debian's python3-numpy, python3-torch (ViT
# calibration capture), python3-pulp and coinor-cbc.  Prints Markdown;
# takes about 15 minutes on 2 cores with BLOCKS=24.  With GPTQ_DIR, SQUANT_DIR
# and/or ERQ_DIR set to checkouts of the authors' repositories (see
# bench/perf/peers.py) it also runs bitplan's quantizers against their code.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(cd "${1:-$SRC/build}" && pwd)
BLOCKS=${2:-24}
BITPLAN=$BUILD/bitplan
PY=/usr/bin/python3
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
W="2, 3, 4, 6, 8"
A="4, 6, 8, 16"

# run CMD...: prints "wall_seconds max_rss_MB" of the command (stdout/stderr kept in $WORK/last.*)
run() {
    $PY - "$@" <<'EOF'
import os, resource, subprocess, sys, time
t = time.time()
r = subprocess.run(sys.argv[1:], capture_output=True, text=True)
wall = time.time() - t
work = os.environ["WORK"]
open(f"{work}/last.out", "w").write(r.stdout)
open(f"{work}/last.err", "w").write(r.stderr)
if r.returncode:
    sys.exit(f"failed: {' '.join(sys.argv[1:])}\n{r.stderr}")
print(f"{wall:.2f} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f}")
EOF
}
export WORK

# config DIR WEIGHTS CALIB QUANTIZER: a sensitivity config in DIR
config() {
    cat >"$1/bench.yaml" <<YAML
model: {weights: $2, calibration: $3}
candidates: {wbits: [$W], abits: [$A]}
weights: {quantizer: $4, range: minmax, scales: fp32}   # float32 steps, as naive.py rounds them
activations: {range: minmax}
metric: mse
budget: {avg_bits: 4}
output: {dir: out}
YAML
}
# profile line "stage" -> "seconds GFLOP/s"
stage() { awk -v s="$1" '$2 == s {print $3, $NF}' "$WORK/last.err"; }
div() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
sens() { BITPLAN_PROFILE=1 run "$BITPLAN" sensitivity "$1/bench.yaml" --force -q -o "$1/table.csv"; }

read -r DG SG < <("$BUILD/bench_peak" | awk '{printf "%s ", $2} END {print ""}')
read -r DG1 SG1 < <(OPENBLAS_NUM_THREADS=1 "$BUILD/bench_peak" | awk '{printf "%s ", $2} END {print ""}')
echo "**Machine** (OpenBLAS, 1024³): dgemm $DG GFLOP/s, sgemm $SG GFLOP/s on $(nproc) threads;"
echo "dgemm $DG1, sgemm $SG1 on one thread."
echo

echo "**Sensitivity stage by stage** ($W weight × $A activation bits, min-max grids, metric mse):"
echo
echo "| case | quantizer | seconds | load | quantize acts | quantize weights | weights GFLOP/s (of peak) | output errors | errors GFLOP/s | vs dgemm | max RSS MB |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
row() {  # case quantizer
    local t rss wfrac
    read -r t rss < <(sens "$WORK/$1")
    LAST_T=$t
    read -r ld _ < <(stage load)
    read -r qa _ < <(stage activations)
    read -r qw wgf < <(stage weights)
    read -r er gf < <(stage errors)
    # the weights stage against the peak of its precision: GPTQ's column updates run in
    # single precision (its default), ERQ's systems in double; RTN and SQuant do no products
    if awk -v g="$wgf" 'BEGIN {exit !(g > 0)}'; then
        wfrac="$(printf '%.1f' "$wgf") ($(div "$wgf" "$([ "$2" = gptq ] && echo "$SG" || echo "$DG")"))"
    else
        wfrac="—"
    fi
    printf '| %s | %s | %.2f | %.2f | %.2f | %.2f | %s | %.2f | %.1f | %.2f | %s |\n' "$3" "$2" \
        "$t" "$ld" "$qa" "$qw" "$wfrac" "$er" "$gf" "$(div "$gf" "$DG")" "$rss"
}
mkdir -p "$WORK/cnn" "$WORK/vit"
(cd "$SRC/bench/e2e" && $PY "$SRC/tools/capture.py" models:vit --out "$WORK/vit" --rows 2048 >/dev/null)
for q in rtn squant erq gptq; do
    config "$WORK/cnn" "$SRC/configs/demo/model.safetensors" "$SRC/configs/demo/calib.safetensors" $q
    row cnn $q "demo CNN (4 layers, 2,048 rows)"
    config "$WORK/vit" weights.safetensors calib.safetensors $q
    row vit $q "ViT (14 layers, 2,048 rows)"
done

mkdir -p "$WORK/big"
$PY "$SRC/bench/perf/make_layers.py" "$WORK/big" "$BLOCKS" 1024
config "$WORK/big" model.safetensors calib.safetensors rtn
row big rtn "$BLOCKS blocks 768/3072 ($((4 * BLOCKS)) layers, 1,024 rows)"
BIG_T=$LAST_T
# a cache hit: hashes remembered by file identity, the table read back; then
# another metric (read off the same table), then inputs touched (hashed again)
read -r HIT_T _ < <(run "$BITPLAN" sensitivity "$WORK/big/bench.yaml" -q)
read -r MET_T _ < <(run "$BITPLAN" sensitivity "$WORK/big/bench.yaml" --metric relative -q)
touch "$WORK/big/model.safetensors" "$WORK/big/calib.safetensors"
read -r TOUCH_T _ < <(run "$BITPLAN" sensitivity "$WORK/big/bench.yaml" -q)
BIG_MB=$(du -cm "$WORK/big/model.safetensors" "$WORK/big/calib.safetensors" | tail -1 | cut -f1)
read -r NT NRSS < <(run $PY "$SRC/bench/perf/naive.py" "$WORK/big/model.safetensors" \
    "$WORK/big/calib.safetensors" "${W// /}" "${A// /}" "$WORK/big/naive.csv")
DIFF=$($PY - "$WORK/big/table.csv" "$WORK/big/naive.csv" <<'EOF'
import csv, sys
a = {(r["layer"], r["wbits"], r["abits"]): float(r["error"]) for r in csv.DictReader(open(sys.argv[1]))}
b = {(r["layer"], r["wbits"], r["abits"]): float(r["error"]) for r in csv.DictReader(open(sys.argv[2]))}
assert a.keys() == b.keys(), "tables differ in rows"
print(f"{max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-300) for k in a):.1e}")
EOF
)
echo
echo "**Cache** ($BLOCKS blocks, $BIG_MB MB of inputs): measuring $BIG_T s; a cache hit $HIT_T s"
echo "($(div "$HIT_T" "$BIG_T") of the measurement); another metric from the same table $MET_T s; after"
echo "touching both inputs (hashed again, table still valid) $TOUCH_T s."
echo
echo "**Against NumPy** (same work, $BLOCKS blocks, both on $(nproc) BLAS threads): bitplan"
echo "$BIG_T s, \`bench/perf/naive.py\` $NT s (max RSS $NRSS MB): ratio $(div "$NT" "$BIG_T");"
echo "largest relative difference between the two tables $DIFF."
echo

# one 768/3072 block, 8,192 tokens, as a user would do it in PyTorch (float32)
mkdir -p "$WORK/blk"
$PY "$SRC/bench/perf/make_layers.py" "$WORK/blk" 1 8192
cat >"$WORK/blk/bench.yaml" <<YAML
model: {weights: model.safetensors, calibration: calib.safetensors}
candidates: {wbits: [2, 3, 4, 6, 8], abits: [8, 16]}
weights: {quantizer: rtn, scales: fp32}   # float32 steps, as torch_loop.py rounds them
metric: mse
budget: {avg_bits: 4}
output: {dir: out}
YAML
read -r BT _ < <(sens "$WORK/blk")
# the loop at each thread count torch may use here, its best kept
TT= TTS=
for t in $(seq 1 "$(nproc)"); do
    read -r tt _ < <(TORCH_THREADS=$t run $PY "$SRC/bench/perf/torch_loop.py" \
        "$WORK/blk/model.safetensors" "$WORK/blk/calib.safetensors" 2,3,4,6,8 8,16 \
        "$WORK/blk/torch.csv")
    TTS="$TTS${TTS:+, }$tt s on $t"
    if [ -z "$TT" ] || awk -v a="$tt" -v b="$TT" 'BEGIN {exit !(a < b)}'; then TT=$tt; fi
done
read -r BT2 _ < <(sens "$WORK/blk")
BLK_GF=$(stage errors | awk '{print $2}')
BLK_FLOP=$(awk '$2 == "errors" {print $(NF - 1)}' "$WORK/last.err")
echo "**Against a PyTorch loop** (one block of qkv 2304×768, proj 768×768, fc1 3072×768, fc2"
echo "768×3072, 8,192 tokens, RTN at {2,3,4,6,8} × {8,16} bits; whole processes; bitplan run"
echo "before and after the peer): bitplan $BT / $BT2 s, \`bench/perf/torch_loop.py\` (float32,"
echo "\`W Xᵀ\` once per layer, \`Ŵ X̄ᵀ − W Xᵀ\` per candidate; $TTS torch threads) best $TT s: ratio"
BT_MEAN=$(awk -v a="$BT" -v b="$BT2" 'BEGIN {print (a + b) / 2}')
echo "$(div "$TT" "$BT_MEAN"); bitplan's output errors: $BLK_FLOP GFLOP at $BLK_GF GFLOP/s."
# exactness on the block: both tables against float64 NumPy (naive.py, the same grids)
run $PY "$SRC/bench/perf/naive.py" "$WORK/blk/model.safetensors" "$WORK/blk/calib.safetensors" \
    2,3,4,6,8 8,16 "$WORK/blk/naive.csv" >/dev/null
read -r EB EL EBL < <($PY - "$WORK/blk/table.csv" "$WORK/blk/torch.csv" "$WORK/blk/naive.csv" <<'EOF'
import csv, sys
t = [{(r["layer"], r["wbits"], r["abits"]): float(r["error"]) for r in csv.DictReader(open(f))}
     for f in sys.argv[1:]]
assert t[0].keys() == t[1].keys() == t[2].keys(), "tables differ in rows"
rel = lambda a, b: max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-300) for k in a)
print(f"{rel(t[0], t[2]):.1e} {rel(t[1], t[2]):.1e} {rel(t[0], t[1]):.1e}")
EOF
)
echo "Largest relative difference from float64 NumPy on the same grids: bitplan $EB, the"
echo "float32 loop $EL (bitplan against the loop: $EBL)."
echo
if [ -n "${GPTQ_DIR:-}${SQUANT_DIR:-}${ERQ_DIR:-}" ]; then
    echo "**Against the papers' own code** (\`bench/perf/peers.py\`):"
    echo
    $PY "$SRC/bench/perf/peers.py" "$BITPLAN" ${GPTQ_DIR:+--gptq "$GPTQ_DIR"} \
        ${SQUANT_DIR:+--squant "$SQUANT_DIR"} ${ERQ_DIR:+--erq "$ERQ_DIR"} 2>/dev/null
    echo
fi

echo "**Scaling** (RTN, $W × $A bits; base: 2 blocks, H = 768, 1,024 rows):"
echo
echo "| blocks | H | rows | layers | seconds | output errors GFLOP/s | max RSS MB |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for spec in "1 768 1024" "2 768 1024" "4 768 1024" "2 384 1024" "2 1536 1024" \
            "2 768 256" "2 768 4096"; do
    read -r b h n <<<"$spec"
    d="$WORK/s-$b-$h-$n"
    mkdir -p "$d"
    $PY "$SRC/bench/perf/make_layers.py" "$d" "$b" "$n" "$h"
    config "$d" model.safetensors calib.safetensors rtn
    read -r t rss < <(sens "$d")
    read -r _ gf < <(stage errors)
    printf '| %s | %s | %s | %s | %.2f | %.1f | %s |\n' "$b" "$h" "$n" $((4 * b)) "$t" "$gf" "$rss"
    rm -rf "$d"
done
echo

echo "**Solver**: bitplan (exact frontier or GLPK, proven optimal) against CBC (python3-pulp, gapRel 0,"
echo "one thread, 120 s limit, process start and MPS file included; \">\" marks the limit); a negative"
echo "objective difference means bitplan's plan is better:"
echo
echo "| instance | layers × candidates | budget | bitplan s | CBC s | CBC / bitplan | (bitplan − CBC) / CBC objective |"
echo "| --- | --- | ---: | ---: | ---: | ---: | --- |"
$PY - "$WORK/random.csv" <<'EOF'
import random, sys
random.seed(0)
with open(sys.argv[1], "w") as f:
    f.write("layer,wbits,abits,quantizer,error,params,weight_bits,macs\n")
    for l in range(2000):
        p = random.choice([4096, 65536, 589824, 2359296])
        s = random.lognormvariate(0, 2)
        for w in (2, 3, 4, 5, 6, 8):
            for a in (4, 6, 8, 16):
                e = s * (4.0 ** -w + 0.3 * 4.0 ** -a) * random.uniform(0.8, 1.25)
                f.write(f"l{l},{w},{a},rtn,{e:.17g},{p},{p * w + 16 * (p // 256)},{p}\n")
EOF
solver_row() {  # name table budget
    local g c obj_c obj_g
    BITPLAN_PROFILE=1 run "$BITPLAN" solve --table "$2" --avg-bits "$3" -o "$WORK/p.yaml" -q >/dev/null
    read -r g _ < <(stage solve)
    obj_g=$(awk '/^solver:/ {f = 1} f && /^  objective: / {print $2; exit}' "$WORK/p.yaml")
    local st
    read -r c obj_c st < <($PY "$SRC/bench/perf/cbc.py" "$2" "$3" 120)
    local eq
    eq=$($PY -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{(a-b)/max(abs(b),1e-300):.1e}')" "$obj_g" "$obj_c")
    local n
    n=$($PY -c "import csv,sys; r=list(csv.DictReader(open(sys.argv[1]))); l=len({x['layer'] for x in r}); print(f'{l} × {len(r)//l}')" "$2")
    [ "$st" = optimal ] || c=">$c"
    printf '| %s | %s | %s | %.3f | %s | %s | %s |\n' "$1" "$n" "$3" "$g" "$c" \
        "$(div "${c#>}" "$g")" "$eq"
}
for b in 3 4 5; do solver_row "ViT (GPTQ table)" "$WORK/vit/table.csv" $b; done
for b in 3 4 5; do solver_row "$BLOCKS blocks (RTN table)" "$WORK/big/table.csv" $b; done
for b in 3 4 5; do solver_row "random" "$WORK/random.csv" $b; done
