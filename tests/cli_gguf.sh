#!/bin/bash
# The llama.cpp route: a GGUF model and its importance matrix in, llama.cpp's
# types as candidates, budgets in the quantized file's bytes, the type file
# and the llama-quantize command out; every misuse refused before work.
source "$SRC/tests/lib.sh"

"$FIXTURE" --gguf . 5
check "fixture written" test -s model.gguf -a -s model.imatrix.gguf -a -s model.imatrix.dat

# inspect says what each file is
"$BITPLAN" inspect model.gguf >i.txt
check "inspect: GGUF version and tensors" grep -q "GGUF version 3, 10 keys, 23 tensors" i.txt
check "inspect: kept norms" grep -q "blk.0.attn_norm.weight .*llama-quantize keeps it" i.txt
check "inspect: kept router" grep -q "blk.1.ffn_gate_inp.weight .*llama-quantize keeps it" i.txt
check "inspect: layers" grep -q "layers (tensors llama-quantize quantizes): 17" i.txt
"$BITPLAN" inspect model.imatrix.gguf >i.txt
check "inspect: imatrix (GGUF)" grep -q "an importance matrix (model.imatrix), GGUF form: 17 entries (1 with stacked experts); tokens 2048" i.txt
"$BITPLAN" inspect model.imatrix.dat >i.txt
check "inspect: imatrix (legacy)" grep -q "legacy .dat form: 17 entries" i.txt

cat >cfg.yaml <<'YAML'
model: {weights: model.gguf, imatrix: model.imatrix.gguf}
candidates: {types: [q2_K, q3_K, q4_K, q5_K, q6_K, q8_0]}
budget: {bpw: 4.5}
output: {dir: out, formats: [yaml, json, llamacpp]}
YAML
"$BITPLAN" run cfg.yaml -q
check "run" test $? = 0
check "metric resolved from the imatrix" grep -q 'metric: "relative"' out/plan.yaml
check "plan records the imatrix" grep -q 'imatrix: "model.imatrix.gguf"' out/plan.yaml
check "every quantizer is a ggml type" bash -c '! grep "quantizer:" out/plan.yaml | grep -vqE "\"(q[2-8]_[0K])\""'
bpw=$(yaml_value out/plan.yaml gguf_bpw)
check "bpw within the budget ($bpw)" awk -v b="$bpw" 'BEGIN { exit !(b <= 4.5 && b > 4.0) }'
check "embeddings planned" grep -q 'name: "token_embd"' out/plan.yaml
check "experts planned as one layer" grep -q 'name: "blk.1.ffn_up_exps"' out/plan.yaml
check "router not planned" bash -c '! grep -q "ffn_gate_inp" out/plan.yaml'
check "type file: GGUF names" grep -qx '\^blk\\\.0\\\.attn_q\\\.weight\$=q[2-8]_[0K]' out/tensor-types.txt
check "type file: every layer" test "$(wc -l <out/tensor-types.txt)" = 17
cmd=$(cat out/tensor-types.txt.cmd)
check "command: imatrix" grep -q -- "--imatrix $PWD/model.imatrix.gguf" out/tensor-types.txt.cmd
check "command: type file" grep -q -- "--tensor-type-file $PWD/out/tensor-types.txt" out/tensor-types.txt.cmd
check "command: embedding and output types" grep -qE -- "--token-embedding-type q[2-8]_[0K] --output-tensor-type q[2-8]_[0K] " out/tensor-types.txt.cmd
check "command: model, output, base type" grep -qE -- " $PWD/model.gguf $PWD/model-bitplan.gguf (Q[2-8]_K(_M)?|Q8_0)$" out/tensor-types.txt.cmd
check "no GGUF-name warning" bash -c '! "$BITPLAN" export out/plan.yaml --format llamacpp -o t.txt 2>&1 | grep -q "not a GGUF tensor name"'

# the file-size budget: the predicted file fits, and tighter budgets shrink it
"$BITPLAN" solve cfg.yaml --max-file-bytes 700000 -o p1.yaml -q
f1=$(yaml_value p1.yaml gguf_file_bytes)
check "file bytes within budget ($f1)" awk -v f="$f1" 'BEGIN { exit !(f <= 700000) }'
truncate -s 650000 ref.gguf                         # e.g. a llama.cpp mix of the model
"$BITPLAN" solve cfg.yaml --max-bytes-of ref.gguf -o p2.yaml -q
f2=$(yaml_value p2.yaml gguf_file_bytes)
check "--max-bytes-of: at most that file's size ($f2)" awk -v f="$f2" 'BEGIN { exit !(f <= 650000 && f > 600000) }'
expect_fail 1 "budget.max_file_bytes = 1000 is infeasible: the smallest GGUF the candidates give is" \
    "$BITPLAN" solve cfg.yaml --max-file-bytes 1000 -o p3.yaml -q
expect_fail 1 "budget.bpw = 1 is infeasible: the smallest feasible value is" \
    "$BITPLAN" solve cfg.yaml --bpw 1 -o p3.yaml -q

# the legacy imatrix gives the same table (the same means, up to float rounding)
sed 's/model.imatrix.gguf/model.imatrix.dat/; s/dir: out/dir: out_dat/' cfg.yaml >dat.yaml
"$BITPLAN" sensitivity dat.yaml -o dat.csv -q && "$BITPLAN" sensitivity cfg.yaml -o gguf.csv -q
check "legacy and GGUF imatrix agree" awk -F, 'NR == FNR { e[FNR] = $5; next }
    FNR > 1 { d = $5 - e[FNR]; if (d < 0) d = -d; if (d > 1e-5 * ($5 > 0 ? $5 : -$5) + 1e-12) bad = 1 }
    END { exit bad }' dat.csv gguf.csv
# another imatrix is another table: the cache notices
sed 's/model.imatrix.gguf/model.imatrix.dat/' cfg.yaml >im2.yaml
"$BITPLAN" run im2.yaml 2>/dev/null >run2.txt
check "cache keyed by the imatrix" grep -q "sensitivity: measured" run2.txt

# data-free: without an imatrix, weight errors; a metric that needs inputs says where they come from
sed 's/, imatrix: model.imatrix.gguf//; s/dir: out/dir: out_free/' cfg.yaml >free.yaml
"$BITPLAN" run free.yaml -q
check "data-free run" grep -q 'metric: "weight"' out_free/plan.yaml
printf 'metric: relative\n' >>free.yaml
expect_fail 1 "has no entry 'blk.0.attn_q.weight'" "$BITPLAN" run free.yaml -q
expect_fail 1 "give the model's importance matrix as model.imatrix" "$BITPLAN" run free.yaml -q

# misuse, refused before work with the key or file named
bad_cfg() { # NEEDLE YAML...
    local needle=$1; shift
    printf '%s\n' "$@" >bad.yaml
    expect_fail 1 "$needle" "$BITPLAN" run bad.yaml -q
}
M='model: {weights: model.gguf, imatrix: model.imatrix.gguf}'
bad_cfg "candidates.types and candidates.wbits both list the candidates" "$M" \
    'candidates: {types: [q4_K], wbits: [4]}' 'budget: {bpw: 5}'
bad_cfg "unknown ggml type" "$M" 'candidates: {types: [q4_K, q9_K]}' 'budget: {bpw: 5}'
bad_cfg "a ggml type bitplan does not quantize" "$M" 'candidates: {types: [iq2_xs]}' 'budget: {bpw: 5}'
bad_cfg "type listed twice" "$M" 'candidates: {types: [q4_K, Q4_K]}' 'budget: {bpw: 5}'
bad_cfg "candidates.abits must be [16]" "$M" 'candidates: {types: [q4_K], abits: [8]}' 'budget: {bpw: 5}'
bad_cfg "weights.quantizer does not apply to candidates.types" "$M" \
    'candidates: {types: [q4_K]}' 'weights: {quantizer: gptq}' 'budget: {bpw: 5}'
bad_cfg "output.weights is bitplan's own quantized-weights format" "$M" \
    'candidates: {types: [q4_K]}' 'budget: {bpw: 5}' 'output: {weights: q.safetensors}'
bad_cfg "gptq needs the inputs' full statistics" "$M" 'candidates: {wbits: [4, 8]}' \
    'weights: {quantizer: gptq}' 'budget: {avg_bits: 5}'
bad_cfg "holds no activation statistics" "$M" 'candidates: {wbits: [4, 8], abits: [8, 16]}' \
    'budget: {avg_bits: 5}'
bad_cfg "metric 'kfac' needs calibration rows or statistics" "$M" \
    'candidates: {types: [q4_K, q8_0]}' 'metric: kfac' 'budget: {bpw: 5}'
mkdir m && "$FIXTURE" m 3
bad_cfg "budget.max_file_bytes is a GGUF file's budget, but the model" \
    'model: {weights: m/model.safetensors, calibration: m/calib.safetensors}' \
    'budget: {max_file_bytes: 100000}'
bad_cfg "an importance matrix, not a model (give it as model.imatrix" \
    'model: {weights: model.imatrix.gguf}' 'budget: {avg_bits: 4}'
bad_cfg "budget.max_bytes_of: expected an existing, non-empty file" "$M" \
    'candidates: {types: [q4_K]}' 'budget: {max_bytes_of: nowhere.gguf}'
# an imatrix of another model: no entry matches, or a shape differs
printf '\x01\x00\x00\x00\x0c\x00\x00\x00other.weight\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x80\x3f' >other.dat
bad_cfg "no entry names a layer of model.gguf" 'model: {weights: model.gguf, imatrix: other.dat}' \
    'candidates: {types: [q4_K]}' 'budget: {bpw: 5}'
printf '\x01\x00\x00\x00\x13\x00\x00\x00blk.0.attn_q.weight\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x80\x3f' >short.dat
bad_cfg "is for 1 columns x 1 matrices, but the model's 'blk.0.attn_q.weight' has 256 columns" \
    'model: {weights: model.gguf, imatrix: short.dat}' 'candidates: {types: [q4_K]}' \
    'budget: {bpw: 5}'
expect_fail 2 "--max-bytes-of: expected an existing, non-empty file" \
    "$BITPLAN" solve cfg.yaml --max-bytes-of nowhere -o x.yaml
finish
