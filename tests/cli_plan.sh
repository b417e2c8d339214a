#!/bin/bash
# run / sensitivity / solve on a generated model: plan contents, budgets,
# the sensitivity cache (reuse, invalidation, corruption), determinism.
source "$SRC/tests/lib.sh"

"$FIXTURE" "$WORK/m" 11 2>/dev/null || { mkdir -p "$WORK/m" && "$FIXTURE" "$WORK/m" 11; }
cat >cfg.yaml <<'YAML'
model:
  weights: m/model.safetensors
  calibration: m/calib.safetensors
  exclude: ["head"]
candidates:
  wbits: [2, 3, 4, 8]
  abits: [6, 16]
budget:
  avg_bits: 3.5
output:
  dir: out
  formats: [yaml, json]
YAML

# sensitivity table: exact header, one row per layer x candidate, model order
"$BITPLAN" sensitivity cfg.yaml -o table.csv >sens.txt
check "sensitivity exits 0" test $? = 0
check "header" test "$(head -1 table.csv)" = "layer,wbits,abits,quantizer,error,params,weight_bits,macs,mse,relative,weight,hawq,fisher,kfac,margin"
check "3 layers x 8 candidates" test "$(tail -n +2 table.csv | wc -l)" = 24
check "model order" test "$(tail -n +2 table.csv | cut -d, -f1 | uniq | tr '\n' ' ')" = "conv1 dw fc "
# weight_bits = params*wbits + per-channel fp16 scales (symmetric: no zero points)
check "conv1 4-bit storage" grep -q '^conv1,4,16,rtn,[^,]*,216,992,216,' table.csv
check "cache written" test -f out/sensitivity.csv -a -f out/sensitivity.csv.key

# run: plan within budget, layers in model order, second run cached & identical
"$BITPLAN" run cfg.yaml >run1.txt
check "run exits 0" test $? = 0
grep -q "sensitivity: cached" run1.txt && ok || bad "run reuses the table from 'sensitivity'"
check "plan.yaml written" test -f out/plan.yaml
check "plan.json written" test -f out/plan.json
avg=$(yaml_value out/plan.yaml avg_bits | tail -1)
awk -v a="$(grep -E '^  avg_bits: ' out/plan.yaml | tail -1 | awk '{print $2}')" 'BEGIN{exit !(a <= 3.5)}' && ok || bad "avg bits within budget: $avg"
check "status optimal" grep -q '^  status: "optimal"' out/plan.yaml
check "sha256 of model" grep -q "weights_sha256: \"$(sha256sum m/model.safetensors | cut -c1-64)\"" out/plan.yaml
check "layers in order" test "$(grep -E '^  - name:' out/plan.yaml | sed 's/.*: //' | tr -d '"' | tr '\n' ' ')" = "conv1 dw fc "
# totals agree with the layers
sum=$(grep -E '^    weight_bits: ' out/plan.yaml | awk '{s+=$2} END{print s}')
check "total weight bits" grep -q "^  weight_bits: $sum\$" out/plan.yaml
cp out/plan.yaml plan1.yaml
"$BITPLAN" run cfg.yaml >run2.txt
grep -q "sensitivity: cached" run2.txt && ok || bad "second run uses the cache"
check "deterministic plan" cmp -s plan1.yaml out/plan.yaml
"$BITPLAN" run cfg.yaml --force >run3.txt
grep -q "sensitivity: measured" run3.txt && ok || bad "--force measures again"
check "same plan after re-measuring" cmp -s plan1.yaml out/plan.yaml

# the table holds every metric: another metric is read off the cache, and
# the plan's errors are that metric's column
sed -i 's/^budget:/metric: mse\nbudget:/' cfg.yaml
"$BITPLAN" run cfg.yaml >run_mse.txt
grep -q "sensitivity: cached" run_mse.txt && ok || bad "changing only the metric re-reads the cache"
check "plan metric mse" grep -q '^  metric: "mse"' out/plan.yaml
awk -F, 'NR > 1 && $5 != $9 {bad = 1} END {exit bad}' out/sensitivity.csv && ok || bad "error column is the mse column"
sed -i 's/^metric: mse/metric: relative/' cfg.yaml
"$BITPLAN" run cfg.yaml >run_rel.txt
grep -q "sensitivity: cached" run_rel.txt && ok || bad "back to relative: still cached"
check "same plan as before the metric change" cmp -s plan1.yaml out/plan.yaml
# metric: auto (the default) is relative without output Fishers, weight
# without calibration; --metric overrides the config
check "auto without Fishers: relative" grep -q '^  metric: "relative"' plan1.yaml
printf 'model: {weights: m/model.safetensors}\nbudget: {avg_bits: 4}\noutput: {dir: out_free}\n' >free.yaml
check "auto without calibration" "$BITPLAN" run free.yaml -q
check "auto without calibration: weight" grep -q '^  metric: "weight"' out_free/plan.yaml
"$BITPLAN" run cfg.yaml --metric hawq -q
check "--metric overrides" grep -q '^  metric: "hawq"' out/plan.yaml
expect_fail 2 "--metric: expected auto, mse" "$BITPLAN" run cfg.yaml --metric nope
# a metric whose tensors the calibration file lacks fails before any work
sed -i 's/^metric: relative/metric: kfac/' cfg.yaml
rm -rf out_k && sed 's/dir: out$/dir: out_k/' cfg.yaml >kfac.yaml
expect_fail 1 "metric 'kfac' needs 'conv1.fisher'" "$BITPLAN" run kfac.yaml
check "nothing measured or written" test -z "$(ls out_k 2>/dev/null | grep -v '^\.bitplan-hashes$')"
sed -i 's/^metric: kfac/metric: fisher/' kfac.yaml
expect_fail 1 "metric 'fisher' needs 'conv1.grad2'" "$BITPLAN" run kfac.yaml
sed -i '/^metric: kfac/d' cfg.yaml

# input hashes are remembered by file identity: an unchanged file is not
# read again, a file rewritten in place (same size and mtime) is
check "hash memo written" test "$(wc -l <out/.bitplan-hashes)" = 2
grep -q "$(sha256sum m/model.safetensors | cut -c1-64) " out/.bitplan-hashes && ok || bad "memo holds the model's hash"
cp m/model.safetensors model.orig
stamp=$(stat -c %y m/model.safetensors)
/usr/bin/printf '\x7f' | dd of=m/model.safetensors bs=1 seek=$(( $(stat -c %s m/model.safetensors) - 1 )) conv=notrunc 2>/dev/null
touch -d "$stamp" m/model.safetensors
"$BITPLAN" run cfg.yaml >run_edit.txt
grep -q "sensitivity: measured" run_edit.txt && ok || bad "same size and mtime, new contents: measured again"
check "new hash in the plan" grep -q "weights_sha256: \"$(sha256sum m/model.safetensors | cut -c1-64)\"" out/plan.yaml
cp model.orig m/model.safetensors
"$BITPLAN" run cfg.yaml >run_back.txt
check "plan back to the original" cmp -s plan1.yaml out/plan.yaml

# the cache is keyed on settings and contents
sed -i 's/abits: \[6, 16\]/abits: [8, 16]/' cfg.yaml
"$BITPLAN" run cfg.yaml >run4.txt
grep -q "sensitivity: measured" run4.txt && ok || bad "changed abits invalidate the cache"
grep -q ',8,rtn,' out/sensitivity.csv && ok || bad "new table has abits 8"
sed -i '2s/.*/conv1,2,8,rtn,0,216,432,216/' out/sensitivity.csv
"$BITPLAN" run cfg.yaml >run5.txt
grep -q "sensitivity: measured" run5.txt && ok || bad "an edited cache is not trusted"
"$FIXTURE" "$WORK/m" 12
"$BITPLAN" run cfg.yaml >run6.txt
grep -q "sensitivity: measured" run6.txt && ok || bad "new model contents invalidate the cache"

# the same model as directories of .npy files gives the same table
sed 's#m/model.safetensors#m/npy_model#; s#m/calib.safetensors#m/npy_calib#; s#dir: out#dir: out_npy#' cfg.yaml >npy.yaml
"$BITPLAN" sensitivity npy.yaml -o npy_table.csv -q
check "npy directory run" test -f npy_table.csv
check "npy table equals safetensors table" cmp -s npy_table.csv out/sensitivity.csv
"$BITPLAN" inspect m/npy_model >npy_inspect.txt
grep -qE '^layers: 4$' npy_inspect.txt && ok || bad "inspect on an npy directory: $(cat npy_inspect.txt)"

# gptq: its own cache key, its name in the table, and (per candidate at
# unquantized activations) an output error no larger than RTN's
sed 's#dir: out#dir: out_gptq#' cfg.yaml >gptq.yaml
printf 'weights: {quantizer: gptq, gptq: {block_size: 16, act_order: true}}\nmetric: mse\n' >>gptq.yaml
sed 's#dir: out#dir: out_rtn#' cfg.yaml >rtn.yaml
printf 'metric: mse\n' >>rtn.yaml
"$BITPLAN" sensitivity gptq.yaml -o gptq.csv -q && "$BITPLAN" sensitivity rtn.yaml -o rtn.csv -q
check "gptq table" test "$(grep -c ',gptq,' gptq.csv)" = 24
paste -d, <(grep ',16,gptq,' gptq.csv) <(grep ',16,rtn,' rtn.csv) |
    awk -F, '$2 < 16 && $5 > $20 * (1 + 1e-9) {bad = 1; print "gptq worse:", $0} END {exit bad}' && ok || bad "gptq error <= rtn error"
grep -A4 'name: "fc"' out_gptq/plan.yaml 2>/dev/null | grep -q 'quantizer: "gptq"' || "$BITPLAN" run gptq.yaml -q
grep -A4 'name: "fc"' out_gptq/plan.yaml | grep -q 'quantizer: "gptq"' && ok || bad "plan names gptq"
printf 'model: {weights: m/model.safetensors}\nmetric: weight\nweights: {quantizer: gptq}\nbudget: {avg_bits: 4}\n' >gptq_nodata.yaml
expect_fail 1 "layer 'conv1': quantizer 'gptq' needs calibration inputs" "$BITPLAN" run gptq_nodata.yaml

# several quantizers at once: every candidate measured with each, the solver
# picks per layer; squant is data-free and stores asymmetric channel grids
sed 's#dir: out#dir: out_multi#' cfg.yaml >multi.yaml
printf 'weights: {quantizer: [rtn, squant, gptq]}\n' >>multi.yaml
"$BITPLAN" run multi.yaml -q
check "multi-quantizer table" test "$(tail -n +2 out_multi/sensitivity.csv | wc -l)" = 72
# squant 4-bit conv1: 216 params x 4 + 8 channels x (16-bit scale + 4-bit zero point)
check "squant storage counts zero points" grep -q '^conv1,4,16,squant,[^,]*,216,1024,216,' out_multi/sensitivity.csv
check "plan picks listed quantizers" test -z "$(grep 'quantizer:' out_multi/plan.yaml | grep -vE '"(rtn|squant|gptq)"')"
# for each layer, the plan is no worse than the best single-quantizer plan at the same budget
for q in rtn squant gptq; do
    sed "s#dir: out#dir: out_$q#" cfg.yaml >only_$q.yaml
    printf 'weights: {quantizer: %s}\n' "$q" >>only_$q.yaml
    "$BITPLAN" run only_$q.yaml -q
    awk -v a="$(yaml_value out_multi/plan.yaml predicted_error)" -v b="$(yaml_value out_$q/plan.yaml predicted_error)" \
        'BEGIN{exit !(a <= b * (1 + 1e-12))}' && ok || bad "mixed plan beats $q alone"
done
printf 'model: {weights: m/model.safetensors}\nmetric: weight\nweights: {quantizer: squant}\nbudget: {avg_bits: 5}\noutput: {dir: out_sq}\n' >squant_free.yaml
"$BITPLAN" run squant_free.yaml -q
check "squant runs without calibration" test -f out_sq/plan.yaml

# activation quantizers per layer pattern: only the matched layer's rows change
sed 's#dir: out#dir: out_act#' cfg.yaml >act.yaml
"$BITPLAN" sensitivity act.yaml -o act_uniform.csv -q
printf 'activations: {per_layer: [{pattern: "fc", quantizer: log2}]}\n' >>act.yaml
"$BITPLAN" sensitivity act.yaml -o act_log2.csv >act.txt
grep -q "measured in" act.txt && ok || bad "activation rules change the cache key"
check "other layers unchanged" test "$(grep -v '^fc,' act_uniform.csv)" = "$(grep -v '^fc,' act_log2.csv)"
check "fc at 8-bit activations changed" test "$(grep '^fc,[0-9]*,8,' act_uniform.csv)" != "$(grep '^fc,[0-9]*,8,' act_log2.csv)"
check "fc at 16-bit activations unchanged" test "$(grep '^fc,[0-9]*,16,' act_uniform.csv)" = "$(grep '^fc,[0-9]*,16,' act_log2.csv)"
printf 'activations: {per_layer: [{pattern: "nothing", quantizer: log2}]}\n' | cat cfg.yaml - | sed 's#dir: out#dir: out_act2#' >act2.yaml
expect_fail 1 "activations.per_layer[0]: pattern 'nothing' matches no layer" "$BITPLAN" run act2.yaml

# erq beside rtn: no erq rows for the grouped (depthwise) conv, which erq
# cannot handle; alone, it says so
sed 's#dir: out#dir: out_erq#' cfg.yaml >erq.yaml
printf 'weights: {quantizer: [rtn, erq], erq: {lambda1: 10, lambda2: 10}}\n' >>erq.yaml
"$BITPLAN" run erq.yaml -q
check "erq rows for conv1 and fc" test "$(grep -c ',erq,' out_erq/sensitivity.csv)" = 16
check "no erq rows for dw" test -z "$(grep '^dw,.*,erq,' out_erq/sensitivity.csv)"
check "erq plan" test -f out_erq/plan.yaml
sed 's#dir: out#dir: out_erq1#' cfg.yaml >erq1.yaml
printf 'weights: {quantizer: erq}\n' >>erq1.yaml
expect_fail 1 "erq does not handle grouped convolutions" "$BITPLAN" run erq1.yaml

# quantized weights out: codes, scales and zero points per layer that
# reproduce the dequantized weights exactly, for every quantizer and grid
# (squant always uses per-channel grids, so the grouped case leaves it out)
for grid in "quantizer: [rtn, squant, gptq, erq], granularity: per_channel" \
            "quantizer: [rtn, gptq, erq], granularity: per_group, group_size: 24" \
            "quantizer: [rtn, squant, gptq, erq], granularity: per_tensor, symmetric: false"; do
    sed 's#dir: out#dir: out_qw#' cfg.yaml >qw.yaml
    printf 'weights: {%s}\n' "$grid" >>qw.yaml
    sed -i 's#  formats: \[yaml, json\]#  formats: [yaml]\n  weights: q.safetensors\n  dequantized: true#' qw.yaml
    rm -f out_qw/q.safetensors
    check "run with quantized weights ($grid)" "$BITPLAN" run qw.yaml -q
    check "quantized weights written ($grid)" test -f out_qw/q.safetensors
    "$BITPLAN" inspect out_qw/q.safetensors >qw.txt
    check "quantized weights consistent ($grid): $(cat qw.txt)" grep -q "all consistent" qw.txt
    for l in conv1 dw fc; do
        b=$(grep -A1 "name: \"$l\"" out_qw/plan.yaml | grep wbits | awk '{print $2}')
        [ "$b" = 16 ] || grep -qE "^  $l +$b bits  codes U8" qw.txt && ok || bad "$l at $b bits in the file"
        # the file stores what the plan counts: fp16 scales, b-bit zero points
        counted=$(grep -A14 "name: \"$l\"" out_qw/plan.yaml | grep -m1 'weight_bits:' | awk '{print $2}')
        [ "$b" = 16 ] || grep -qE "^  $l .* scales F16 .* zeros U8  stored bits $counted( |$)" qw.txt \
            && ok || bad "$l: stored bits = counted $counted ($grid): $(grep "^  $l " qw.txt)"
    done
    case $grid in *group_size*)   # fc: 72 inputs in groups of 24 -> 3 scales per row
        grep -qE '^  fc +[0-9]+ bits  codes U8 \[16, 72\]  scales F16 \[16, 3\]' qw.txt && ok || bad "group scales: $(cat qw.txt)";;
    esac
done
q=$(grep -A3 'name: "fc"' out_qw/plan.yaml | grep quantizer | sed 's/.*: //; s/"//g')
[ "$q" = squant ] || grep -qE '^  fc +[0-9]+ bits  codes U8 \[16, 72\]  scales F16 \[1, 1\]' qw.txt && ok || bad "per-tensor grid has one scale ($q)"

# every quantizer stores what the plan counts: fp16 scales (the default) as
# F16, or float32 scales (weights.scales: fp32) as F32 counted at 32 bits
for q in rtn squant gptq erq; do
    for sc in fp16 fp32; do
        sed "s#dir: out#dir: out_sc#; s#  formats: \[yaml, json\]#  formats: [yaml]\n  weights: q.safetensors#" \
            cfg.yaml >sc.yaml
        printf 'weights: {quantizer: %s, scales: %s, symmetric: false}\n' "$q" "$sc" >>sc.yaml
        [ $q = erq ] && sed -i 's#exclude: \["head"\]#exclude: ["head", "dw"]#' sc.yaml
        check "run ($q, $sc scales)" "$BITPLAN" run sc.yaml -q
        "$BITPLAN" inspect out_sc/q.safetensors >sc.txt
        check "consistent ($q, $sc)" grep -q "all consistent" sc.txt
        dt=F16 && [ $sc = fp32 ] && dt=F32
        for l in conv1 dw fc; do
            [ $q = erq ] && [ $l = dw ] && continue
            b=$(grep -A1 "name: \"$l\"" out_sc/plan.yaml | grep wbits | awk '{print $2}')
            counted=$(grep -A14 "name: \"$l\"" out_sc/plan.yaml | grep -m1 'weight_bits:' | awk '{print $2}')
            [ "$b" = 16 ] || grep -qE "^  $l .* scales $dt .* stored bits $counted( |$)" sc.txt \
                && ok || bad "$l ($q, $sc): stored bits = counted $counted: $(grep "^  $l " sc.txt)"
        done
    done
done
# the cache key covers the scales: the fp32 table is not reused for fp16
# (conv1 at 2 bits, 8 rows, asymmetric: 216 x 2 + 8 x (16 or 32 + 2) bits)
check "fp32 count" grep -q '^conv1,2,16,erq,[^,]*,216,704,' out_sc/sensitivity.csv
sed -i 's#scales: fp32#scales: fp16#' sc.yaml
"$BITPLAN" sensitivity sc.yaml -o sc16.csv >sc16.txt
check "fp16 table measured anew" grep -q "measured in" sc16.txt
check "fp16 count" grep -q '^conv1,2,16,erq,[^,]*,216,576,' sc16.csv

# budgets from the command line; size objective under an error budget
# the smallest plan is (1440 x 2 + 32 x 16) / 8 = 424 bytes
"$BITPLAN" solve cfg.yaml --max-bytes 450 -o small.yaml -q
check "max-bytes plan" test -f small.yaml
bytes=$(grep -E '^  weight_bytes: ' small.yaml | awk '{print $2}')
awk -v b="$bytes" 'BEGIN{exit !(b <= 450 && b >= 424)}' && ok || bad "weight bytes $bytes within [424, 450]"
"$BITPLAN" solve cfg.yaml --max-error 1e9 -o loose.json -q
check "json plan" grep -q '"objective": "min_size"' loose.json
# with an unlimited error budget, min size picks the smallest candidates: all 2-bit
check "min size picks 2 bits" test "$(grep -c '"wbits": 2' loose.json)" = 3

# pins and data-free planning
cat >pins.yaml <<'YAML'
model: {weights: m/model.safetensors}
candidates: {wbits: [2, 4, 8], abits: [16]}
metric: weight
budget: {avg_bits: 4}
pins: [{pattern: "head", wbits: 8}, {pattern: "conv*", wbits: 2}]
output: {dir: out_pins}
YAML
"$BITPLAN" run pins.yaml -q
check "data-free run" test -f out_pins/plan.yaml
grep -A2 'name: "head"' out_pins/plan.yaml | grep -q 'wbits: 8' && ok || bad "head pinned to 8"
grep -A2 'name: "conv1"' out_pins/plan.yaml | grep -q 'wbits: 2' && ok || bad "conv1 pinned to 2"
check "quiet is quiet" test -z "$("$BITPLAN" run pins.yaml -q 2>&1)"
finish
