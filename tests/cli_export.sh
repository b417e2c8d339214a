#!/bin/bash
# Exports from the CLI: `bitplan export`, and output.formats in a config.
source "$SRC/tests/lib.sh"

mkdir m && "$FIXTURE" m 9
cat >cfg.yaml <<'YAML'
model: {weights: m/model.safetensors, calibration: m/calib.safetensors, exclude: [head]}
candidates: {wbits: [2, 4, 8], abits: [8, 16]}
budget: {avg_bits: 5}
export: {rename: [{from: '^fc$', to: 'blk.0.ffn_down.weight'}]}
output: {dir: out, formats: [yaml, llamacpp, gptqmodel, llmcompressor, autoround, hawq]}
YAML
check "run with exports" "$BITPLAN" run cfg.yaml -q
for f in plan.yaml tensor-types.txt tensor-types.txt.args gptqmodel_dynamic.json recipe.yaml \
         autoround_layer_config.json hawq_bit_config.json; do
    check "$f written" test -s out/$f
done
# the planned bits of every layer appear in every export (names renamed by the rule)
for l in conv1 dw fc; do
    b=$(grep -A1 "name: \"$l\"" out/plan.yaml | grep wbits | awk '{print $2}')
    n=$l; [ $l = fc ] && n=blk.0.ffn_down.weight
    grep -q "\"$n\": \[$b, " out/hawq_bit_config.json && ok || bad "hawq $l=$b"
    grep -q "\"$n\": {\"bits\": $b," out/autoround_layer_config.json && ok || bad "autoround $l=$b"
    grep -qF "^$(printf '%s' "$n" | sed 's/\./\\./g')\$=" out/tensor-types.txt && ok || bad "llamacpp pattern for $n"
done
"$BITPLAN" export out/plan.yaml --format gptqmodel -o g.json >exp.txt
check "export command" grep -q '"dynamic"' g.json
check "export names the file" grep -q "gptqmodel: g.json" exp.txt
"$BITPLAN" export out/plan.yaml --format hawq -o h.json -q
check "hawq from the CLI" grep -q '"bit_config"' h.json
# --config: the config's export settings (here its rename rule) and its output.dir
rm -f out/tensor-types.txt
check "export with the config" "$BITPLAN" export out/plan.yaml --format llamacpp --config cfg.yaml -q
check "into output.dir, renamed" grep -qF 'blk\.0\.ffn_down\.weight$=' out/tensor-types.txt
"$BITPLAN" export out/plan.yaml --format llamacpp -o plain.txt -q
check "without the config: names as planned" grep -q '^\^fc\$=' plain.txt
expect_fail 1 "nope.yaml" "$BITPLAN" export out/plan.yaml --format llamacpp --config nope.yaml
expect_fail 2 "unknown format 'gguf'" "$BITPLAN" export out/plan.yaml --format gguf
expect_fail 2 "export needs --format" "$BITPLAN" export out/plan.yaml
expect_fail 1 "cfg.yaml" "$BITPLAN" export cfg.yaml --format hawq
finish
