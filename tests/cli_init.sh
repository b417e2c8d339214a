#!/bin/bash
# bitplan init: a working, commented config for a capture directory or a
# model file, chosen from what is there; never overwriting a file.
source "$SRC/tests/lib.sh"

"$FIXTURE" "$WORK" 7
mkdir -p cap part nocal configs
cp "$SRC/configs/demo/model.safetensors" cap/weights.safetensors
cp "$SRC/configs/demo/calib.safetensors" cap/calib.safetensors
cp model.safetensors part/weights.safetensors && cp calib.safetensors part/calib.safetensors
cp model.safetensors nocal/weights.safetensors

# a capture directory with calibration: GPTQ, its files relative to the config
check "init on a capture directory" "$BITPLAN" init cap -o configs/my.yaml -q
check "the weights, relative to the config" grep -q '^  weights: "../cap/weights.safetensors"' configs/my.yaml
check "the calibration too" grep -q '^  calibration: "../cap/calib.safetensors"' configs/my.yaml
check "gptq with calibration data" grep -q '^  quantizer: gptq' configs/my.yaml
check "the quantized weights are written" grep -q '^  weights: q.safetensors' configs/my.yaml
check "every layer counted" grep -q '^# 4 layers' configs/my.yaml
check "commented" test "$(grep -c '#' configs/my.yaml)" -ge 8
(cd / && "$BITPLAN" run "$WORK/configs/my.yaml" -q)
check "it runs, from any directory" test -s configs/out/plan.yaml -a -s configs/out/q.safetensors
check "and the weights it wrote check" "$BITPLAN" inspect configs/out/q.safetensors
sum=$(sha256sum configs/my.yaml)
expect_fail 1 "configs/my.yaml exists: bitplan init does not overwrite" "$BITPLAN" init cap -o configs/my.yaml
check "the existing file untouched" test "$(sha256sum configs/my.yaml)" = "$sum"
ln -s nowhere configs/link.yaml
expect_fail 1 "configs/link.yaml exists" "$BITPLAN" init cap -o configs/link.yaml
check "a dangling link is not followed" test ! -e nowhere

# calibration without every layer's inputs: data-free, and said
"$BITPLAN" init part -o part.yaml -q
check "partial calibration: rtn" grep -q '^  quantizer: rtn' part.yaml
check "partial calibration: why" grep -q 'no inputs for 1 of the 4 layers' part.yaml
check "partial calibration: it runs" "$BITPLAN" run part.yaml -q
# without calibration: data-free
"$BITPLAN" init nocal -o nocal.yaml -q
check "rtn without calibration" grep -q '^  quantizer: rtn' nocal.yaml
check "no calibration key" bash -c "! grep -q '^  calibration:' nocal.yaml"
check "it runs" "$BITPLAN" run nocal.yaml -q
# a model file; stdout with -o -
"$BITPLAN" init model.safetensors -o - >stdout.yaml
check "-o -: the config on stdout" grep -q '^  weights: "model.safetensors"' stdout.yaml
check "no bitplan.yaml written" test ! -e bitplan.yaml
# the default name
(mkdir -p d && cd d && "$BITPLAN" init ../cap -q)
check "default: bitplan.yaml" grep -q '"../cap/weights.safetensors"' d/bitplan.yaml

# a GGUF: llama.cpp's types, a file-size budget, the llamacpp export
mkdir -p g && "$FIXTURE" --gguf g >/dev/null
"$BITPLAN" init g/model.gguf -o g/cfg.yaml -q
check "GGUF: llama.cpp's types" grep -q '^  types: \[q2_K, q3_K, q4_K, q5_K, q6_K, q8_0\]' g/cfg.yaml
check "GGUF: the llamacpp export" grep -q 'formats: \[yaml, json, llamacpp\]' g/cfg.yaml
check "GGUF: a bits-per-weight budget" grep -q '^  bpw: ' g/cfg.yaml
check "GGUF: it runs" "$BITPLAN" run g/cfg.yaml -q
check "GGUF: the llama-quantize command" test -s g/out/tensor-types.txt.cmd
check "GGUF: two imatrix files beside it: the user names one" \
    grep -q '^  # imatrix: .*several files beside the model could be it' g/cfg.yaml
# the one imatrix beside the GGUF is taken (and checked against the model)
mkdir -p g1 && cp g/model.gguf g/model.imatrix.dat g1/
"$BITPLAN" init g1/model.gguf -o g1/cfg.yaml -q
check "GGUF: the imatrix beside it" grep -q '^  imatrix: "model.imatrix.dat"' g1/cfg.yaml
check "GGUF + imatrix: it runs" "$BITPLAN" run g1/cfg.yaml -q
check "GGUF + imatrix: the command passes it to llama-quantize" \
    grep -q -- '--imatrix' g1/out/tensor-types.txt.cmd
mkdir -p g2 && cp g/model.gguf g2/ && printf 'not an imatrix' >g2/model.imatrix.dat
expect_fail 1 "an imatrix found beside the model" "$BITPLAN" init g2/model.gguf -o g2/cfg.yaml
check "nothing written" test ! -e g2/cfg.yaml

# LLM-shaped layer names: per-group weights, the LLM exports
# (written with perl, which every Debian has: no Python needed for this test)
perl -e '
srand(1);
my ($hdr, $data, $off) = ("{", "", 0);
for my $i (0, 1) {
    for my $k ("self_attn.q_proj", "self_attn.o_proj", "mlp.down_proj") {
        my @v = map { 0.02 * sqrt(-2 * log(1 - rand())) * cos(6.283185307 * rand()) } 1 .. 4096;
        my $bytes = pack("f<*", @v);
        $hdr .= "," if $off;
        $hdr .= sprintf("\"model.layers.%d.%s.weight\":{\"dtype\":\"F32\",\"shape\":[16,256],"
                        . "\"data_offsets\":[%d,%d]}", $i, $k, $off, $off + length $bytes);
        $data .= $bytes;
        $off += length $bytes;
    }
}
$hdr .= "}";
$hdr .= " " x ((8 - length($hdr) % 8) % 8);
open(my $f, ">:raw", "llm.safetensors") or die;
print $f pack("Q<", length $hdr), $hdr, $data;
'
"$BITPLAN" init llm.safetensors -o llm.yaml -q
check "LLM: per-group weights" grep -q '^  group_size: 128' llm.yaml
check "LLM: GPTQModel and llm-compressor exports" grep -q 'formats: \[yaml, json, gptqmodel, llmcompressor\]' llm.yaml
check "LLM: it runs" "$BITPLAN" run llm.yaml -q
check "LLM: the GPTQModel config" test -s out/quantize_config.json

# what is not a model
expect_fail 1 "gone: no such file or directory" "$BITPLAN" init gone -o x.yaml
printf 'hello\n' >note.txt
expect_fail 1 "note.txt" "$BITPLAN" init note.txt -o x.yaml
check "nothing written on failure" test ! -e x.yaml
expect_fail 2 "missing SOURCE" "$BITPLAN" init
finish
