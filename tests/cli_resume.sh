#!/bin/bash
# Nothing lost: an interrupted sensitivity run (SIGINT after a layer) leaves
# earlier outputs intact and the next run resumes from its per-layer journal,
# giving exactly the table of an uninterrupted run; a journal from other
# inputs is never trusted.
source "$SRC/tests/lib.sh"

mkdir m && "$FIXTURE" m 21
cat >cfg.yaml <<'YAML'
model: {weights: m/model.safetensors, calibration: m/calib.safetensors, exclude: [head]}
candidates: {wbits: [2, 4, 8], abits: [8, 16]}
budget: {avg_bits: 5}
output: {dir: out}
YAML
"$BITPLAN" run cfg.yaml -q
cp out/plan.yaml plan_before.yaml
"$BITPLAN" sensitivity cfg.yaml --force -o full.csv -q
# a change of settings, interrupted after the first layer
sed -i 's/abits: \[8, 16\]/abits: [6, 16]/' cfg.yaml
BITPLAN_INTERRUPT_AFTER=1 "$BITPLAN" run cfg.yaml -q >out.txt 2>err.txt
rc=$?
check "interrupted run fails" test $rc = 1
grep -q "interrupted after 1 of 3 layers" err.txt && ok || bad "message: $(cat err.txt)"
check "one error line" test "$(wc -l <err.txt)" = 1
check "previous plan intact" cmp -s plan_before.yaml out/plan.yaml
check "journal kept" test -s out/sensitivity.csv.partial
check "no temp files" test -z "$(ls out | grep '\.tmp\.')"
"$BITPLAN" sensitivity cfg.yaml -o resumed.csv >res.txt
grep -q "resumed" res.txt && ok || bad "second run resumes: $(cat res.txt)"
check "journal removed when done" test ! -e out/sensitivity.csv.partial
"$BITPLAN" sensitivity cfg.yaml --force -o fresh.csv -q
check "resumed table equals an uninterrupted one" cmp -s resumed.csv fresh.csv
# a journal of other inputs is ignored
BITPLAN_INTERRUPT_AFTER=2 "$BITPLAN" sensitivity cfg.yaml --force -q 2>/dev/null
sed -i 's/abits: \[6, 16\]/abits: [8, 16]/' cfg.yaml
"$BITPLAN" sensitivity cfg.yaml -o other.csv >other.txt
grep -q "measured" other.txt && ok || bad "foreign journal not trusted: $(cat other.txt)"
check "table of the current inputs" cmp -s other.csv full.csv
finish
