#!/bin/bash
# The malformed-input matrix, end to end: every case exits non-zero with one
# clear message naming the file or key, writes no plan, and leaves no
# temporary files behind.
source "$SRC/tests/lib.sh"

mkdir m && "$FIXTURE" m 4
# st FILE JSON DATA_BYTES: a safetensors file with that header and zero data
st() {
    local n=${#2} hex=""
    for i in 0 1 2 3 4 5 6 7; do hex+=$(printf '\\x%02x' $(( (n >> (8 * i)) & 255 ))); done
    printf "$hex" >"$1"
    printf '%s' "$2" >>"$1"
    head -c "$3" /dev/zero >>"$1"
}
# f32 bytes of one value, little-endian (printf \x escapes)
nanbytes='\x00\x00\xc0\x7f'
good_calib=m/calib.safetensors

# run_case NAME NEEDLE WEIGHTS CALIB [EXTRA_YAML]
run_case() {
    local name=$1 needle=$2 w=$3 c=$4 extra=${5:-}
    mkdir -p "case_$name"
    {
        echo "model: {weights: ../$w${c:+, calibration: ../$c}}"
        echo "candidates: {wbits: [2, 4, 8], abits: [16]}"
        echo "budget: {avg_bits: 6}"
        [ -n "$extra" ] && echo "$extra"
        echo "output: {dir: out}"
    } >"case_$name/cfg.yaml"
    expect_fail 1 "$needle" "$BITPLAN" run "case_$name/cfg.yaml"
    check "$name: no plan" test ! -e "case_$name/out/plan.yaml"
    check "$name: no temp files" test -z "$(ls -a "case_$name/out" 2>/dev/null | grep '\.tmp\.')"
}

head -c 100 m/model.safetensors >trunc.st
run_case truncated "trunc.st" trunc.st "" "metric: weight"
printf '\x00\x01\x00\x00\x00\x00\x00\x00{}' >hdrlen.st
run_case header_beyond "header length 256 does not fit" hdrlen.st "" "metric: weight"
printf '\xff\xff\xff\xff\xff\xff\xff\x7f{}' >huge.st
run_case huge_header "does not fit" huge.st "" "metric: weight"
st range.st '{"a.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}' 8
run_case offsets_out "beyond the 8-byte data buffer" range.st "" "metric: weight"
st overlap.st '{"a.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[8,24]}}' 24
run_case overlap "overlap" overlap.st "" "metric: weight"
st overflow.st '{"a.weight":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}}' 16
run_case shape_overflow "too large" overflow.st "" "metric: weight"
st dtype.st '{"a.weight":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}' 16
run_case dtype "dtype I32 is not a float weight" dtype.st "" "metric: weight"
st dup.st '{"a.weight":{"dtype":"F32","shape":[1,1],"data_offsets":[0,4]},"a.weight":{"dtype":"F32","shape":[1,1],"data_offsets":[4,8]}}' 8
run_case duplicate_names "appears twice" dup.st "" "metric: weight"
# NaN in weights and in calibration inputs
st nanw.st '{"a.weight":{"dtype":"F32","shape":[1,1],"data_offsets":[0,4]}}' 0
printf "$nanbytes" >>nanw.st
run_case nan_weights "NaN" nanw.st "" "metric: weight"
st w2.st '{"a.weight":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]}}' 8
st nanx.st '{"a.input":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]}}' 4
printf "$nanbytes" >>nanx.st
run_case nan_calibration "NaN" w2.st nanx.st
st zerorow.st '{"a.input":{"dtype":"F32","shape":[0,2],"data_offsets":[0,0]}}' 0
run_case zero_rows "has 0 rows" w2.st zerorow.st
st width.st '{"a.input":{"dtype":"F32","shape":[3,5],"data_offsets":[0,60]}}' 60
run_case width "has 5 columns" w2.st width.st
# a constant (all-zero) layer is fine: quantized exactly, error 0
mkdir -p const && cat >const/cfg.yaml <<'YAML'
model: {weights: ../w2.st}
candidates: {wbits: [2, 4], abits: [16]}
metric: weight
budget: {avg_bits: 20}
output: {dir: out}
YAML
check "constant layer plans" "$BITPLAN" run const/cfg.yaml -q
# YAML: wrong types, unknown and duplicate keys, aliases
printf 'model: {weights: m/model.safetensors}\nbudget: {avg_bits: four}\n' >t1.yaml
expect_fail 1 "t1.yaml:2:20: budget.avg_bits: expected a number" "$BITPLAN" run t1.yaml
printf 'model: {weights: m/model.safetensors}\nbudgett: {avg_bits: 4}\n' >t2.yaml
expect_fail 1 "t2.yaml:2:1: budgett: unknown key" "$BITPLAN" run t2.yaml
printf 'model: {weights: m/model.safetensors}\nmetric: mse\nmetric: weight\n' >t3.yaml
expect_fail 1 "t3.yaml:3:1: metric: duplicate key" "$BITPLAN" run t3.yaml
printf 'a: &x [1, 2]\nb: [*x, *x, *x]\n' >t4.yaml
expect_fail 1 "t4.yaml" "$BITPLAN" run t4.yaml
# budgets: negative, zero, infeasible
printf 'model: {weights: m/model.safetensors}\nmetric: weight\nbudget: {avg_bits: -1}\n' >b1.yaml
expect_fail 1 "budget.avg_bits" "$BITPLAN" run b1.yaml
printf 'model: {weights: m/model.safetensors}\nmetric: weight\nbudget: {max_bytes: 0}\n' >b2.yaml
expect_fail 1 "budget.max_bytes" "$BITPLAN" run b2.yaml
printf 'model: {weights: m/model.safetensors}\nmetric: weight\nbudget: {avg_bits: 1}\noutput: {dir: bout}\n' >b3.yaml
expect_fail 1 "is infeasible: the smallest feasible value is" "$BITPLAN" run b3.yaml
check "infeasible: no plan" test ! -e bout/plan.yaml
# a layer too large for the memory at hand is refused before any work
printf 'model: {weights: m/model.safetensors, calibration: m/calib.safetensors, exclude: [head]}\nbudget: {avg_bits: 6}\noutput: {dir: memout}\n' >mem.yaml
BITPLAN_MEMORY_LIMIT=100000 expect_fail 1 "needs about" "$BITPLAN" run mem.yaml
check "too large: nothing measured" test ! -e memout/sensitivity.csv.partial
printf 'layer,wbits,abits,error,params\na,4,16,1,10\n' >c0.csv
# regressions found by UBSan: an empty latency table, an npy directory with no files
printf 'layer,wbits,abits,latency\n' >empty_lat.csv
expect_fail 1 "empty_lat.csv: no latency for layer" "$BITPLAN" solve --table c0.csv --latency empty_lat.csv --max-latency 5 -o c.yaml
mkdir -p emptydir
expect_fail 1 "emptydir: directory holds no .npy files" "$BITPLAN" inspect emptydir
# CSV tables: missing columns, non-numeric fields, duplicate rows
printf 'layer,wbits,abits,params\na,4,16,10\n' >c1.csv
expect_fail 1 "c1.csv: missing required column 'error'" "$BITPLAN" solve --table c1.csv --avg-bits 4 -o c.yaml
printf 'layer,wbits,abits,error,params\na,4,16,nan,10\n' >c2.csv
expect_fail 1 "c2.csv:2: column 'error'" "$BITPLAN" solve --table c2.csv --avg-bits 4 -o c.yaml
printf 'layer,wbits,abits,error,params\na,4,16,1,10\na,4,16,2,10\n' >c3.csv
expect_fail 1 "c3.csv:3" "$BITPLAN" solve --table c3.csv --avg-bits 4 -o c.yaml
check "no plan from bad tables" test ! -e c.yaml
finish
