#!/bin/bash
# Exports from the CLI: `bitplan export`, and output.formats in a config.
source "$SRC/tests/lib.sh"

mkdir m && "$FIXTURE" m 9
cat >cfg.yaml <<'YAML'
model: {weights: m/model.safetensors, calibration: m/calib.safetensors, exclude: [head]}
candidates: {wbits: [2, 4, 8], abits: [8, 16]}
budget: {avg_bits: 5}
export: {rename: [{from: '^fc$', to: 'blk.0.ffn_down.weight'}]}
output: {dir: out, formats: [yaml, llamacpp, gptqmodel, llmcompressor, autoround]}
YAML
"$BITPLAN" run cfg.yaml -q 2>warn.txt
check "run with exports" test $? = 0
# the fixture's names (conv1, dw) are no GGUF names, and its activations are quantized:
# llama.cpp cannot apply either, and says so
check "unmapped names warned" grep -q "llamacpp: .*(conv1, dw): not a GGUF tensor name" warn.txt
if grep -q "abits: [248]$" out/plan.yaml; then
    check "activations warned" grep -q "llamacpp: .*llama.cpp quantizes weights only" warn.txt
fi
check "fallback warned" grep -q "llamacpp: .*(dw.*): rows (9 inputs in the first) are not a multiple of .* llama-quantize falls back to f16" warn.txt
check "-q keeps warnings, drops notes" bash -c '! grep -q "note:" warn.txt'
for f in plan.yaml tensor-types.txt tensor-types.txt.args quantize_config.json recipe.yaml \
         autoround_layer_config.json; do
    check "$f written" test -s out/$f
done
# the planned bits of every layer appear in every export (names renamed by the rule)
for l in conv1 dw fc; do
    b=$(grep -A1 "name: \"$l\"" out/plan.yaml | grep wbits | awk '{print $2}')
    n=$l; [ $l = fc ] && n=blk.0.ffn_down.weight
    j=$(printf '%s' "$n" | sed 's/\./\\\\./g')      # the regex as JSON text: blk\\.0\\. ...
    grep -qF "\"+:^$j\$\": {\"bits\": $b," out/quantize_config.json && ok || bad "gptqmodel $l=$b"
    grep -q "\"$n\": {\"bits\": $b," out/autoround_layer_config.json && ok || bad "autoround $l=$b"
    grep -qF "^$(printf '%s' "$n" | sed 's/\./\\./g')\$=" out/tensor-types.txt && ok || bad "llamacpp pattern for $n"
done
"$BITPLAN" export out/plan.yaml --format gptqmodel -o g.json >exp.txt
check "export command" grep -q '"dynamic"' g.json
check "export names the file" grep -q "gptqmodel: g.json" exp.txt
"$BITPLAN" export out/plan.yaml --format autoround -o a.json 2>notes.txt >/dev/null
check "autoround: how to pass the JSON" grep -qF -- '--layer_config "$(cat autoround_layer_config.json)"' notes.txt
expect_fail 2 "HAWQ reads a Python dict" "$BITPLAN" export out/plan.yaml --format hawq
sed 's/formats: \[yaml, /formats: [yaml, hawq, /' cfg.yaml >hawq.yaml
expect_fail 1 "HAWQ reads a Python dict" "$BITPLAN" run hawq.yaml
# --config: the config's export settings (here its rename rule) and its output.dir
rm -f out/tensor-types.txt
check "export with the config" "$BITPLAN" export out/plan.yaml --format llamacpp --config cfg.yaml -q
check "into output.dir, renamed" grep -qF 'blk\.0\.ffn_down\.weight$=' out/tensor-types.txt
"$BITPLAN" export out/plan.yaml --format llamacpp -o plain.txt -q
check "without the config: names as planned" grep -q '^\^fc\$=' plain.txt
expect_fail 1 "nope.yaml" "$BITPLAN" export out/plan.yaml --format llamacpp --config nope.yaml
expect_fail 2 "unknown export format 'gguf'" "$BITPLAN" export out/plan.yaml --format gguf
expect_fail 2 "export needs --format" "$BITPLAN" export out/plan.yaml
expect_fail 1 "cfg.yaml" "$BITPLAN" export cfg.yaml --format autoround
# a hand-edited plan is checked as strictly as a config, once, for every
# consumer: each fault one error with file:line:column and the key
edit() { # NAME SED-EXPRESSION NEEDLE
    sed -E "$2" out/plan.yaml >h_$1.yaml
    for f in llamacpp gptqmodel llmcompressor autoround; do
        expect_fail 1 "$3" "$BITPLAN" export h_$1.yaml --format $f -o /dev/null -q
    done
}
edit wbits1 '0,/wbits: [0-9]+/s//wbits: 1/' "layers[0].wbits: expected a whole number of bits 2..16"
edit wbits45 '0,/wbits: [0-9]+/s//wbits: 4.5/' "layers[0].wbits: expected a whole number of bits 2..16"
edit quant '0,/quantizer: "[a-z]+"/s//quantizer: "foo"/' "layers[0].quantizer: expected rtn, gptq, squant, erq"
edit gran '0,/granularity: "[a-z_]+"/s//granularity: "diagonal"/' "layers[0].granularity: expected per_channel, per_group"
edit gsneg '0,/group_size: [0-9]+/s//group_size: -7/' "layers[0].group_size: expected a whole number >= 0"
edit gszero 's/granularity: "per_channel"/granularity: "per_group"/' "layers[0].group_size: granularity per_group needs a group size > 0"
edit version 's/^format_version: 1$/format_version: 99/' "format_version: 99 (this bitplan reads plans of format 1)"
sed -E '/^layers:/,$d' out/plan.yaml >h_empty.yaml && echo 'layers: []' >>h_empty.yaml
expect_fail 1 "layers: an empty list" "$BITPLAN" export h_empty.yaml --format autoround -o /dev/null -q
printf 'layers:\n  - {name: "fc", wbits: 4, abits: 16, quantizer: "rtn"}\n  - {name: "fc", wbits: 8, abits: 16, quantizer: "rtn"}\n' >h_dup.yaml
expect_fail 1 "appears twice (layers[0] and layers[1])" "$BITPLAN" export h_dup.yaml --format autoround -o /dev/null -q
check "errors name the line" bash -c '"$BITPLAN" export h_wbits1.yaml --format autoround -o /dev/null 2>&1 | grep -qE "h_wbits1.yaml:[0-9]+:[0-9]+: layers\[0\]\.wbits"'
# plans the fuzzer once broke: refused in one line, through export and inspect
for f in "$SRC"/tests/fuzz_regressions/plan-*; do
    expect_fail 1 "$(basename "$f")" "$BITPLAN" export "$f" --format gptqmodel -o fz.json
    expect_fail 1 "$(basename "$f")" "$BITPLAN" inspect "$f"
done
check "nothing exported" test ! -e fz.json
finish
