#!/bin/bash
# The command line itself: help, version, usage errors, inspect.
source "$SRC/tests/lib.sh"

check "help exits 0" "$BITPLAN" help
"$BITPLAN" help | grep -q "solve --table" && ok || bad "help lists solve --table"
"$BITPLAN" --version | grep -qE '^bitplan [0-9]+\.[0-9]+\.[0-9]+( \(mpi\))?$' && ok || bad "--version"
expect_fail 2 "unknown command 'frobnicate'" "$BITPLAN" frobnicate
expect_fail 2 "missing CONFIG" "$BITPLAN" run
expect_fail 2 "--avg-bits: expected a number" "$BITPLAN" solve --table t.csv --avg-bits four
expect_fail 2 "needs --avg-bits" "$BITPLAN" solve --table t.csv
expect_fail 1 "nope.yaml: cannot open" "$BITPLAN" run nope.yaml

"$FIXTURE" "$WORK" 7
"$BITPLAN" inspect model.safetensors >inspect.txt
check "inspect exits 0" test $? = 0
grep -qE '^  conv1 +conv 3x3 +out 8 +in 27 +params 216 +\+bias' inspect.txt && ok || bad "inspect conv1: $(cat inspect.txt)"
grep -qE '^  dw +conv 3x3 +out 8 +in 9 ' inspect.txt && ok || bad "inspect dw"
grep -qE '^  head +linear +out 10 +in 16 +params 160' inspect.txt && ok || bad "inspect head"
grep -qE '^layers: 4$' inspect.txt && ok || bad "inspect finds 4 layers (norm.weight is not one)"
grep -qE 'norm.weight +F32 +\[16\]' inspect.txt && ok || bad "inspect lists every tensor"
head -c 100 model.safetensors >trunc.safetensors
expect_fail 1 "trunc.safetensors" "$BITPLAN" inspect trunc.safetensors
# inspect knows every file bitplan reads or writes, by the reader bitplan uses
printf 'model: {weights: model.safetensors}\ncandidates: {wbits: [2, 4, 8], abits: [16]}\nmetric: weight\nbudget: {avg_bits: 5}\noutput: {dir: ins, formats: [yaml, json]}\n' >ins.yaml
"$BITPLAN" run ins.yaml -q
"$BITPLAN" sweep ins.yaml --avg-bits 3,5 -o ins/sw -q
"$BITPLAN" candidates ins.yaml -o ins/prog.csv
for f in gptqmodel llmcompressor autoround llamacpp; do
    "$BITPLAN" export ins/plan.yaml --format $f -o ins/x.$f -q 2>/dev/null
done
insp() { # insp FILE NEEDLE: exit 0 and the description holds NEEDLE
    "$BITPLAN" inspect "$1" >insp.txt 2>&1
    local rc=$?
    [ $rc = 0 ] && grep -qF -- "$2" insp.txt && ok || bad "inspect $1 (exit $rc): $(cat insp.txt)"
}
insp ins.yaml "a bitplan config, checked"
insp ins/plan.yaml "a bitplan plan (format_version 1) of 4 layers"
insp ins/plan.json "a bitplan plan (format_version 1) of 4 layers"
insp ins/plan.yaml "totals: avg_bits"
insp ins/sensitivity.csv "a sensitivity table: 12 rows, 4 layers, weight bits 2..8"
insp ins/sensitivity.csv.key "the key of a cached sensitivity table"
insp ins/sw/frontier.csv "a sweep's frontier"
insp ins/sw/pareto.csv "a sweep's exact Pareto set"
insp ins/sw/frontier.svg "a sweep's frontier plot"
insp ins/prog.csv "the program the solver sees"
insp ins/x.gptqmodel "a GPTQModel quantize_config.json"
insp ins/x.llmcompressor "an llm-compressor recipe"
insp ins/x.autoround "an AutoRound layer_config (autoround export): 4 layers"
insp ins/x.llamacpp "a llamacpp export (llama-quantize --tensor-type-file): 4 PATTERN=TYPE rules"
{ printf 'key 0123\n'; head -1 ins/sensitivity.csv; sed -n 2,4p ins/sensitivity.csv; printf '#done 0\n'; } >journal.partial
insp journal.partial "the journal of an interrupted sensitivity run: 1 layers complete"
printf 'layer,wbits,abits,latency\nhead,4,16,1.5\n' >lat.csv
insp lat.csv "a latency table (--latency): 1 rows"
printf 'layer,metric,objective,scale\nhead,weight,kl,2\n' >sc.csv
insp sc.csv "metric scales (--metric-scales): 1 rows, objective kl"
# ... and what it is not, or what is wrong, in one line
printf 'hello\n' >note.txt
expect_fail 1 "note.txt: not a file bitplan reads or writes" "$BITPLAN" inspect note.txt
printf '{"a": 1}\n' >other.json
expect_fail 1 "other.json: not a file bitplan reads or writes" "$BITPLAN" inspect other.json
sed 's/wbits: 4/wbits: 40/' ins/plan.yaml >badplan.yaml
grep -q "wbits: 40" badplan.yaml && expect_fail 1 "badplan.yaml:" "$BITPLAN" inspect badplan.yaml
printf 'layer,wbits,abits,error,params\nx,4,16,nan,3\n' >nan.csv
expect_fail 1 "nan.csv:2: column 'error'" "$BITPLAN" inspect nan.csv
sed 's/weights: model.safetensors/weights: gone.safetensors/' ins.yaml >gone.yaml
expect_fail 1 "gone.safetensors" "$BITPLAN" inspect gone.yaml
finish
