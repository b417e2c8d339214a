#!/bin/bash
# Inputs at the edges: extreme finite values, F64 tensors, names no tool can
# match, errors that overflow a double, a quoted number, a CSV with a
# byte-order mark, long paths.  Each is a correct result or one clear message
# naming the file and layer, with nothing written.
source "$SRC/tests/lib.sh"

# st FILE NAME DTYPE SHAPE VALUE_BYTES... : a one-tensor safetensors file; each
# value given as printf escapes of its little-endian bytes, repeated to fill
st() {
    local file=$1 name=$2 dtype=$3 shape=$4 bytes=$5 count=$6
    local size=$(( ${#bytes} / 4 * count ))
    local header="{\"$name\":{\"dtype\":\"$dtype\",\"shape\":[$shape],\"data_offsets\":[0,$size]}}"
    while [ $(( ${#header} % 8 )) != 0 ]; do header="$header "; done
    local n=${#header}
    {
        printf "\\x$(printf %02x $((n & 255)))\\x$(printf %02x $((n >> 8 & 255)))\\x00\\x00\\x00\\x00\\x00\\x00"
        printf '%s' "$header"
        for _ in $(seq "$count"); do printf "$bytes"; done
    } >"$file"
}
cfg() { # cfg WEIGHTS > config, metric weight (no calibration needed)
    printf 'model: {weights: %s}\ncandidates: {wbits: [2, 4, 8], abits: [16]}\nmetric: weight\nbudget: {avg_bits: 5}\noutput: {dir: out_%s}\n' "$1" "${1%.safetensors}"
}

# alternating +-v so the grid has a range: v and -v as F32 bytes
st huge.safetensors fc.weight F32 4,8 '\x9e\xc9\x7f\x7f\x9e\xc9\x7f\xff' 16     # +-3.4e38
cfg huge.safetensors >huge.yaml
expect_fail 1 "huge.safetensors: layer 'fc': its weights reach |3.4e+38|" "$BITPLAN" run huge.yaml -q
check "huge: no table" test ! -e out_huge/sensitivity.csv
st tiny.safetensors fc.weight F32 4,8 '\xee\xe3\x6c\x00\xee\xe3\x6c\x80' 16     # +-1e-38 (subnormal)
cfg tiny.safetensors >tiny.yaml
expect_fail 1 "layer 'fc': its weights reach |1e-38|" "$BITPLAN" run tiny.yaml -q
st zero.safetensors fc.weight F32 4,8 '\x00\x00\x00\x00' 32                    # a dead layer is fine
cfg zero.safetensors >zero.yaml
check "all-zero weights plan" "$BITPLAN" run zero.yaml -q
# F64 (NumPy's default) is read as float32: the same plan as the F32 file
st f64.safetensors fc.weight F64 4,8 '\x00\x00\x00\x00\x00\x00\xf0\x3f\x00\x00\x00\x00\x00\x00\xe0\xbf' 16
st f32.safetensors fc.weight F32 4,8 '\x00\x00\x80\x3f\x00\x00\x00\xbf' 16
cfg f64.safetensors >f64.yaml && cfg f32.safetensors >f32.yaml
check "F64 weights accepted" "$BITPLAN" run f64.yaml -q
"$BITPLAN" run f32.yaml -q
check "F64 and F32 give the same table" cmp -s out_f64/sensitivity.csv out_f32/sensitivity.csv
st big64.safetensors fc.weight F64 1,2 '\x00\x00\x00\x00\x00\x00\x00\x48\x00\x00\x00\x00\x00\x00\xf0\x3f' 1
cfg big64.safetensors >big64.yaml
expect_fail 1 "tensor 'fc.weight': element 0 is 6.80565e+38" "$BITPLAN" run big64.yaml -q
check "beyond float32: named" grep -q "beyond float32's range" err.txt

# a head whose weights are the embedding's (a state_dict of a tied model has both):
# the plan says so and the llama.cpp export warns that the override applies to nothing
v='\x00\x00\x80\x3f\x00\x00\x00\xbf'
h='{"lm_head.weight":{"dtype":"F32","shape":[4,8],"data_offsets":[0,128]},"model.embed_tokens.weight":{"dtype":"F32","shape":[4,8],"data_offsets":[128,256]}}'
while [ $(( ${#h} % 8 )) != 0 ]; do h="$h "; done
{ printf "\\x$(printf %02x $(( ${#h} & 255 )))\\x$(printf %02x $(( ${#h} >> 8 )))\\x00\\x00\\x00\\x00\\x00\\x00"
  printf '%s' "$h"; for _ in $(seq 32); do printf "$v"; done; } >tied.safetensors
cfg tied.safetensors | sed 's/output: {dir: out_tied}/output: {dir: out_tied, formats: [yaml, llamacpp]}\nexport: {llama_names: true}/' >tied.yaml
"$BITPLAN" run tied.yaml -q 2>tied_warn.txt
check "tied head: planned" test -s out_tied/plan.yaml
check "the plan names the embedding it shares" grep -q 'tied_with: "model.embed_tokens"' out_tied/plan.yaml
check "llama.cpp export warns" grep -q "(output.weight): the weights are the embedding's" tied_warn.txt

# names other tools cannot match: refused at load with the tensor named
st ctl.safetensors 'fc\u0007x.weight' F32 2,2 '\x00\x00\x80\x3f' 4
cfg ctl.safetensors >ctl.yaml
expect_fail 1 "tensor 'fc\\x07x.weight': the name has a control character or is not UTF-8" \
    "$BITPLAN" run ctl.yaml -q
st latin.safetensors "$(printf 'caf\xe9.weight')" F32 2,2 '\x00\x00\x80\x3f' 4
cfg latin.safetensors >latin.yaml
expect_fail 1 "tensor 'caf\\xe9.weight': the name has a control character or is not UTF-8" \
    "$BITPLAN" run latin.yaml -q

# errors whose sum overflows a double never reach a plan as null
printf 'layer,wbits,abits,quantizer,error,params,weight_bits,macs\na,2,16,rtn,1e308,10,20,10\na,4,16,rtn,9e307,10,40,10\nb,2,16,rtn,1.5e308,10,20,10\nb,4,16,rtn,1e308,10,40,10\n' >ov.csv
expect_fail 1 "ov.csv: the errors sum beyond the largest double (layer 'b' has 1.5e+308)" \
    "$BITPLAN" solve --table ov.csv --avg-bits 3 -o ov.yaml
check "no plan" test ! -e ov.yaml

# the front door
for cmd in run sensitivity solve sweep candidates quantize export grids init inspect; do
    "$BITPLAN" $cmd --help >help.txt 2>&1
    check "$cmd --help answers (exit 0)" test $? = 0
    check "$cmd --help: its own usage" grep -q "^usage: bitplan $cmd " help.txt
    check "$cmd --help: an example of $cmd" grep -q "^  bitplan $cmd " help.txt
    "$BITPLAN" help $cmd >help2.txt 2>&1
    check "help $cmd is $cmd --help" cmp -s help.txt help2.txt
done
"$BITPLAN" solve --help | grep -q -- "--max-file-bytes N" && ok || bad "solve --help lists --max-file-bytes"
"$BITPLAN" inspect --help | grep -q -- "--avg-bits" && bad "inspect --help lists budget flags" || ok
expect_fail 2 "unknown command 'nope'" "$BITPLAN" nope --help
# an option the command does not take is a usage error, not ignored
expect_fail 2 "run does not take --plans (see 'bitplan run --help')" "$BITPLAN" run f32.yaml --plans
expect_fail 2 "inspect does not take --format" "$BITPLAN" inspect f32.yaml --format gptqmodel
expect_fail 2 "give one of --output-dir" "$BITPLAN" run f32.yaml --output-dir o2 -o p.yaml
# --output-dir: the output set elsewhere (beside the first), output.dir's set untouched
printf 'model: {weights: f32.safetensors}\ncandidates: {wbits: [2, 4, 8], abits: [16]}\nmetric: weight\nbudget: {avg_bits: 5}\noutput: {dir: od, formats: [yaml, json, gptqmodel], weights: q.safetensors}\n' >od.yaml
"$BITPLAN" run od.yaml -q
sum1=$(cat od/plan.yaml od/plan.json od/quantize_config.json od/q.safetensors | sha256sum)
"$BITPLAN" run od.yaml --avg-bits 4.5 --output-dir od/refined -q
check "--output-dir: the whole set there" \
    test -s od/refined/plan.yaml -a -s od/refined/plan.json -a -s od/refined/quantize_config.json -a -s od/refined/q.safetensors
check "--output-dir: no table there (it stays cached in output.dir)" test ! -e od/refined/sensitivity.csv
check "--output-dir: output.dir's set untouched" \
    test "$(cat od/plan.yaml od/plan.json od/quantize_config.json od/q.safetensors | sha256sum)" = "$sum1"
check "--output-dir: the plan is the new budget's" \
    bash -c "! cmp -s od/plan.yaml od/refined/plan.yaml"
"$BITPLAN" run od.yaml --output-dir od -q
check "--output-dir naming output.dir itself" test -s od/plan.yaml
expect_fail 2 "unknown command 'nope'" "$BITPLAN" help nope
check "help names --max-bops and --max-latency for solve --table" \
    bash -c "'$BITPLAN' help | grep -A1 'solve --table' | grep -q -- '--max-bops N | --max-latency T'"
cfg f32.safetensors | sed 's/avg_bits: 5/avg_bits: "4"/' >quoted.yaml
expect_fail 1 'expected a number, got the quoted string "4" (write it without quotes)' \
    "$BITPLAN" run quoted.yaml -q
printf '\xef\xbb\xbflayer,wbits,abits,quantizer,error,params,weight_bits,macs\na,2,16,rtn,1,10,20,10\na,4,16,rtn,0.5,10,40,10\n' >bom.csv
check "a CSV with a byte-order mark" "$BITPLAN" solve --table bom.csv --avg-bits 4 -o bom.yaml -q
long=$(printf 'd%.0s' $(seq 200))
mkdir -p "$long/$long/$long/$long"
expect_fail 1 "cannot open: No such file or directory" "$BITPLAN" run "$long/$long/$long/$long/none.yaml"
mkdir cal && "$FIXTURE" cal 3
"$BITPLAN" inspect cal/calib.safetensors >inspect.txt
check "inspect on a calibration file says what it is" \
    grep -q "^a calibration file (model.calibration): inputs of 3 layers" inspect.txt
check "and nothing reads like an error" bash -c '! grep -qi "none\|error" inspect.txt'
# resource limits: refused cleanly before the work, never a hang or a signal
cp -r "$SRC/configs/demo" demo_rl && sed 's#demo/#demo_rl/#g' "$SRC/configs/demo.yaml" >rl.yaml
# (not under AddressSanitizer, whose shadow memory alone is larger than any such limit)
case "${BP_SANITIZE:-OFF}" in
ON | 1 | TRUE | true) ;;
*)
    (ulimit -v 300000; timeout 60 "$BITPLAN" run rl.yaml --force -q >/dev/null 2>rl_v.txt; echo $? >rl_v.rc)
    check "ulimit -v: exit 1, not a hang" test "$(cat rl_v.rc)" = 1
    check "ulimit -v: says why" grep -q "under the address-space limit (ulimit -v)" rl_v.txt
    ;;
esac
(ulimit -f 1; "$BITPLAN" run rl.yaml --force -q >/dev/null 2>rl_f.txt; echo $? >rl_f.rc)
check "ulimit -f: exit 1, not SIGXFSZ" test "$(cat rl_f.rc)" = 1
check "ulimit -f: says why" grep -q "the file-size limit, ulimit -f, was reached" rl_f.txt
# sweep steps that the budgets' precision cannot carry are refused
expect_fail 2 "asks for 6e+300 budgets (at most 10000)" "$BITPLAN" sweep rl.yaml --avg-bits 2:8:1e-300 -q
expect_fail 2 "is lost in rounding" "$BITPLAN" sweep rl.yaml --avg-bits 100000000000000000:100000000000000032:1 -q
finish
