#!/bin/bash
# tools/llamacpp_calibrate.py against stand-ins for llama-quantize and
# llama-perplexity (shell scripts printing what llama.cpp's print): one
# llama-perplexity run per planned tensor with that tensor alone quantized,
# scales = measured KLD / predicted error, runs repeated when the log lost its
# summary (llama.cpp's logger drops lines at exit), failures reported, and the
# scales written whole or not at all.  Needs only Python's standard library.
source "$SRC/tests/lib.sh"

PY=$(command -v python3 || true)
if [ -z "$PY" ]; then
    echo "no python3: llamacpp_calibrate test skipped"
    finish
    exit 0
fi
"$FIXTURE" --gguf . 3 >/dev/null
rm model.imatrix.dat
cat >cfg.yaml <<'YAML'
model: {weights: model.gguf, imatrix: model.imatrix.gguf}
candidates: {types: [q2_K, q3_K, q4_K, q6_K]}
budget: {bpw: 4.5}
output: {dir: out, formats: [yaml, llamacpp]}
YAML
printf 'some calibration text\n' >calib.txt
mkdir bin
# llama-quantize: records which tensor the type file quantizes, writes the output
cat >bin/llama-quantize <<'SH'
#!/bin/bash
ttf=""; args=("$@")
for ((i = 0; i < $#; i++)); do [ "${args[i]}" = --tensor-type-file ] && ttf=${args[i + 1]}; done
[ -n "$ttf" ] || { echo "no type file" >&2; exit 1; }
n=${#args[@]}; out=${args[n - 2]}
head -1 "$ttf" >"$out"
echo "llama_model_quantize_impl: model size = 1 MB"
SH
# llama-perplexity: base run, or a KLD per tensor (from its name's length), the
# summary dropped on the first run of every third tensor (as llama.cpp's logger can)
cat >bin/llama-perplexity <<'SH'
#!/bin/bash
model=""; kld=0; args=("$@")
for ((i = 0; i < $#; i++)); do
    [ "${args[i]}" = -m ] && model=${args[i + 1]}
    [ "${args[i]}" = --kl-divergence ] && kld=1
done
echo "kl_divergence: 1.23 seconds per pass - ETA 0.02 minutes"
if [ $kld = 0 ]; then echo "Final estimate: PPL = 7.1 +/- 0.2"; exit 0; fi
line=$(cat "$model"); name=${line%%=*}; name=${name//\\/}; name=${name#^}; name=${name%\$}
echo "$line" >>"$STANDIN_LOG"
if [ "$FAIL_ON" != "" ] && [[ "$name" == *"$FAIL_ON"* ]]; then echo "failed to load model" >&2; exit 3; fi
count=$(grep -cF -- "$line" "$STANDIN_LOG")
if (( ${#name} % 3 == 0 )) && [ "$count" = 1 ]; then exit 0; fi
printf '====== KL divergence statistics ======\nMean    KLD:   0.%06d ±   0.000010\n' $(( ${#name} * 100 ))
SH
chmod +x bin/*
export STANDIN_LOG=$WORK/runs.log FAIL_ON="" BITPLAN
: >runs.log
check "calibrates" $PY "$SRC/tools/llamacpp_calibrate.py" cfg.yaml --text calib.txt -o scales.csv \
    --llama-bin bin -q
layers=$("$BITPLAN" sensitivity cfg.yaml -o table.csv -q && grep -c ',q3_K,' table.csv)
check "one row per planned tensor" test "$(($(wc -l <scales.csv) - 1))" = "$layers"
check "each tensor measured alone at q3_K" \
    bash -c "sort -u runs.log | grep -c '=q3_K\$' | grep -qx $layers"
check "runs whose summary was lost are repeated" test "$(wc -l <runs.log)" -gt "$layers"
check "scale = measured / predicted (relative column), the objective KL" $PY - <<'PYEOF'
import csv, sys
table = {r["layer"]: float(r["relative"]) for r in csv.DictReader(open("table.csv"))
         if r["quantizer"] == "q3_K"}
ok = True
for r in csv.DictReader(open("scales.csv")):
    want = len(r["layer"] + ".weight") * 100 / 1e6
    ok &= r["objective"] == "kl" and r["metric"] == "relative" and abs(float(r["measured"]) - want) < 1e-12
    ok &= abs(float(r["scale"]) - want / table[r["layer"]]) <= 1e-9 * float(r["scale"])
sys.exit(0 if ok else 1)
PYEOF
check "bitplan takes the scales" "$BITPLAN" run cfg.yaml --metric-scales scales.csv --force -q
check "the plan predicts KL" grep -q 'predicts: "kl"' out/plan.yaml

# a failing llama-perplexity: one message, no scales, nothing left beside them
cp scales.csv before.csv
export FAIL_ON=blk.1.
expect_fail 1 "llama-perplexity (blk.1." $PY "$SRC/tools/llamacpp_calibrate.py" cfg.yaml \
    --text calib.txt -o scales.csv --llama-bin bin -q
check "the old scales untouched" cmp -s scales.csv before.csv
check "no temporary file left" bash -c '[ "$(ls -a | grep -c "scales.*tmp\|^\.scales")" = 0 ]'
export FAIL_ON=""
expect_fail 1 "--type q5_K is not among the config's candidates" $PY \
    "$SRC/tools/llamacpp_calibrate.py" cfg.yaml --text calib.txt -o s2.csv --llama-bin bin --type q5_K
expect_fail 1 "none.txt: no such file" $PY "$SRC/tools/llamacpp_calibrate.py" cfg.yaml \
    --text none.txt -o s2.csv --llama-bin bin
check "nothing written on refusal" test ! -e s2.csv
finish
