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
finish
