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
check "no progress noise in a pipe" test ! -s err.txt
grep -q "^layers: 4 " summary.txt && ok || bad "summary names 4 layers: $(cat summary.txt)"
grep -qE "^solver: frontier optimal" summary.txt && ok || bad "summary gives the solver route and status (one budget: the exact frontier)"
grep -qE "^predicted error: " summary.txt && ok || bad "summary gives predicted error"
avg=$(grep -E '^  avg_bits: ' out/plan.yaml | tail -1 | awk '{print $2}')
awk -v a="$avg" 'BEGIN{exit !(a <= 4.0 && a > 2.0)}' && ok || bad "average bits $avg within budget 4"
grep -A1 'name: "fc2"' out/plan.yaml | grep -q 'wbits: 8' && ok || bad "fc2 pinned to 8 bits"
check "four layers in the plan" test "$(grep -c '^  - name:' out/plan.yaml)" = 4
check "json plan too" test -s out/plan.json
finish
