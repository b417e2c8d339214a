#!/bin/bash
# The shipped demo: files within the size limit, and `bitplan run` on it
# gives an optimal plan inside the budget that honours the pin.
source "$SRC/tests/lib.sh"

total=$(( $(stat -c %s "$SRC/configs/demo/model.safetensors") + $(stat -c %s "$SRC/configs/demo/calib.safetensors") ))
check "demo files within 5 MB ($total bytes)" test "$total" -le 5000000
ln -s "$SRC/configs/demo" demo
sed 's#dir: demo/out#dir: out#' "$SRC/configs/demo.yaml" >demo.yaml
"$BITPLAN" run demo.yaml >summary.txt 2>err.txt
check "demo run exits 0: $(cat err.txt)" test $? = 0
check "no progress noise in a pipe for work shorter than 15 s" test ! -s err.txt
# longer work in a log: whole lines (no carriage returns), each item i/N
BITPLAN_PROGRESS_SECONDS=0 "$BITPLAN" run demo.yaml --force >/dev/null 2>log.txt
check "a log gets progress lines" grep -qE '^sensitivity: layer 4/4 fc2 .* layers/s  ETA ' log.txt
check "and how long the stage took" grep -qE '^sensitivity: 4/4 done in [0-9]+s$' log.txt
check "no terminal codes in a log" bash -c "! grep -q $'\r' log.txt"
BITPLAN_PROGRESS_SECONDS=0 "$BITPLAN" run demo.yaml --force -q >/dev/null 2>log.txt
check "--quiet silences it" test ! -s log.txt
grep -q "^layers: 4 " summary.txt && ok || bad "summary names 4 layers: $(cat summary.txt)"
grep -qE "^solver: frontier optimal" summary.txt && ok || bad "summary gives the solver route and status (one budget: the exact frontier)"
grep -qE "^predicted error: " summary.txt && ok || bad "summary gives predicted error"
avg=$(grep -E '^  avg_bits: ' out/plan.yaml | tail -1 | awk '{print $2}')
awk -v a="$avg" 'BEGIN{exit !(a <= 4.0 && a > 2.0)}' && ok || bad "average bits $avg within budget 4"
grep -A1 'name: "fc2"' out/plan.yaml | grep -q 'wbits: 8' && ok || bad "fc2 pinned to 8 bits"
check "four layers in the plan" test "$(grep -c '^  - name:' out/plan.yaml)" = 4
check "json plan too" test -s out/plan.json
finish
