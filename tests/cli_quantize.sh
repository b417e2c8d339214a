#!/bin/bash
# bitplan quantize (every layer at one candidate, the uniform plan) and
# run/solve --choices (a plan's candidates taken as given): the weights equal
# what a plan at those candidates writes, the plans say where they came
# from, and wrong choices are refused with one message.
source "$SRC/tests/lib.sh"

mkdir -p "$WORK/m" && "$FIXTURE" "$WORK/m" 21
cat >cfg.yaml <<'YAML'
model:
  weights: m/model.safetensors
  calibration: m/calib.safetensors
  exclude: ["head"]
candidates:
  wbits: [2, 3, 4, 8]
  abits: [8, 16]
weights: {quantizer: gptq}
budget:
  avg_bits: 3.5
output:
  dir: out
  weights: q.safetensors
YAML

# weights only: no sensitivity needed, any width
check "quantize at 4/8" "$BITPLAN" quantize cfg.yaml --wbits 4 --abits 8 -o q48.safetensors -q
check "nothing measured" test ! -e out/sensitivity.csv
"$BITPLAN" inspect q48.safetensors >inspect.txt
check "inspect: consistent" grep -q "quantized layers: 3, all consistent" inspect.txt
check "activation grids kept" test "$("$BITPLAN" inspect q48.safetensors | grep -c '\.act_scale ')" = 3
check "5 bits, not a candidate" "$BITPLAN" quantize cfg.yaml --wbits 5 -o q5.safetensors -q
check "default abits: the widest candidate" test "$("$BITPLAN" inspect q5.safetensors | grep -c '\.act_scale ')" = 0

# with --plan, the uniform plan too; its weights are what a run with those
# choices writes, byte for byte
check "quantize --plan" "$BITPLAN" quantize cfg.yaml --wbits 4 --abits 8 -o u48.safetensors --plan u48.yaml -q
check "uniform plan from the solver" grep -q '^  name: "given"' u48.yaml
check "every layer at 4/8" test "$(grep -cE '^    (wbits: 4|abits: 8)$' u48.yaml)" = 6
check "same weights with or without --plan" cmp -s q48.safetensors u48.safetensors
check "run --choices" "$BITPLAN" run cfg.yaml --choices u48.yaml --avg-bits 4.5 -q
check "run writes the same weights" cmp -s u48.safetensors out/q.safetensors
check "run names the route" grep -q '^  name: "given"' out/plan.yaml
grep -A4 'name: "fc"' out/plan.yaml | grep -q 'wbits: 4' && ok || bad "fc at 4 bits in the run's plan"

# a partial choice: the given layers keep their candidate, the rest is solved
printf 'layers:\n  - {name: "fc", wbits: 8, abits: 16, quantizer: "gptq"}\n' >part.yaml
check "run with a partial choice" "$BITPLAN" run cfg.yaml --choices part.yaml --avg-bits 7.5 -q
grep -A3 'name: "fc"' out/plan.yaml | grep -q 'wbits: 8' && ok || bad "fc kept at 8 bits"
check "the others are solved" grep -qv '^  name: "given"' out/plan.yaml

# candidates: the solver's program, with pins and ties applied
"$BITPLAN" candidates cfg.yaml -o prog.csv -q
check "program header" test "$(head -1 prog.csv)" = "group,choice,layer,wbits,abits,quantizer,error,weight_bits"
check "3 layers x 8 candidates untied" test "$(tail -n +2 prog.csv | wc -l)" = 24
sed -e 's/^budget:/ties: [{pattern: "^conv1$|^dw$", wbits: true}]\npins: [{pattern: "fc", wbits: 8}]\nbudget:/' cfg.yaml >tied.yaml
"$BITPLAN" candidates tied.yaml -o tied.csv -q
check "two solver layers" test "$(tail -n +2 tied.csv | cut -d, -f1 | sort -u | wc -l)" = 2
awk -F, 'NR > 1 && $3 == "fc" && $4 != 8 {bad = 1} END {exit bad}' tied.csv && ok || bad "the pin holds"
awk -F, 'NR > 1 && $3 != "fc" {w[$1","$2] = w[$1","$2] " " $4; n[$1","$2]++}
         END {for (k in w) {split(w[k], a, " "); if (n[k] != 2 || a[1] != a[2]) bad = 1} exit bad}' tied.csv \
    && ok || bad "tied members share their weight bits in every choice"
check "4 widths x 2 x 2 activation choices for the tied pair" \
    test "$(awk -F, 'NR > 1 && $3 != "fc"' tied.csv | cut -d, -f1,2 | sort -u | wc -l)" = 16

# --errors: the config's program with errors from a file (measured deltas)
"$BITPLAN" sensitivity cfg.yaml -o t.csv -q
awk -F, 'BEGIN {OFS = ","} NR == 1 {print "layer,wbits,abits,quantizer,loss_delta,params"; next}
         {print $1, $2, $3, $4, ($1 == "fc" ? 0.01 : 100) / $2, $6}' t.csv >errs.csv
check "solve with --errors" "$BITPLAN" solve cfg.yaml --errors errs.csv --avg-bits 5 -o e.yaml -q
check "plan names the errors file" grep -q '^  table: "errs.csv"' e.yaml
grep -A1 'name: "dw"' e.yaml | grep -q 'wbits: 8' && ok || bad "dw, costly by the file, gets 8 bits"
grep -A1 'name: "conv1"' e.yaml | grep -q 'wbits: 8' && ok || bad "conv1, costly by the file, gets 8 bits"
awk '/^  - name:/ {n = $3} /^    error:/ {e[n] = $2} /^    wbits:/ {w[n] = $2}
     END {for (k in e) {x = (k == "\"fc\"" ? 0.01 : 100) / w[k]; if (e[k] > x * 1.00001 || e[k] < x * 0.99999) bad = 1} exit bad}' e.yaml \
    && ok || bad "the plan's errors are the file's"
head -3 errs.csv >short.csv
expect_fail 1 "short.csv: no row for layer" "$BITPLAN" solve cfg.yaml --errors short.csv --avg-bits 5

# GPTQ with act-order per group: its groups follow its column order, stored as g_idx
sed -e 's/^weights: {quantizer: gptq}/weights: {quantizer: gptq, granularity: per_group, group_size: 8, gptq: {act_order: true}}/' \
    -e 's/^  weights: q.safetensors/  weights: q.safetensors\n  dequantized: true/' cfg.yaml >ao.yaml
check "act-order per-group weights written" "$BITPLAN" quantize ao.yaml --wbits 3 -o ao.safetensors -q
"$BITPLAN" inspect ao.safetensors >ao.txt
check "inspect: consistent with g_idx" grep -q "quantized layers: 3, all consistent" ao.txt
grep -qE '^  fc\.g_idx +I32 +\[' ao.txt && ok || bad "fc has a g_idx: $(grep g_idx ao.txt)"
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import numpy' 2>/dev/null; then
    PYTHONPATH="$SRC/tools" /usr/bin/python3 - <<'PYEOF' && ok || bad "g_idx holds every group group_size times and reproduces the weights"
import numpy as np
from safetensors_io import load_file
t, m = load_file("ao.safetensors")
g = np.asarray(t["fc.g_idx"]).reshape(-1)
counts = np.bincount(g)
assert (counts[:-1] == 8).all() and 0 < counts[-1] <= 8, counts
assert (g != np.arange(len(g)) // 8).any()            # permuted: act-order
q = t["fc.qweight"].astype(np.float32)
rows = np.arange(q.shape[0])[:, None]
w = t["fc.scales"][rows, g[None, :]] * (q - t["fc.zeros"][rows, g[None, :]])
assert np.array_equal(w, t["fc.weight"]), np.abs(w - t["fc.weight"]).max()
PYEOF
fi

# refused: no such layer, no such candidate, over the budget, usage
printf 'layers:\n  - {name: "nosuch", wbits: 4, abits: 16, quantizer: "gptq"}\n' >bad1.yaml
expect_fail 1 "layer 'nosuch' is given a candidate but is not among the planned layers" \
    "$BITPLAN" run cfg.yaml --choices bad1.yaml
printf 'layers:\n  - {name: "fc", wbits: 6, abits: 16, quantizer: "gptq"}\n' >bad2.yaml
expect_fail 1 "layer 'fc': no measured candidate at 6-bit weights" "$BITPLAN" run cfg.yaml --choices bad2.yaml
"$BITPLAN" quantize cfg.yaml --wbits 8 --abits 16 -o u8.safetensors --plan u8.yaml -q
expect_fail 1 "u8.yaml: budget.avg_bits = 3.5 is infeasible" "$BITPLAN" run cfg.yaml --choices u8.yaml
expect_fail 2 "quantize needs --wbits" "$BITPLAN" quantize cfg.yaml -o x.safetensors
expect_fail 2 "quantize needs -o FILE" "$BITPLAN" quantize cfg.yaml --wbits 4
expect_fail 2 "--wbits: expected an integer in 2..16" "$BITPLAN" quantize cfg.yaml --wbits 4.5 -o x
expect_fail 2 "--quantizer: expected rtn, gptq, squant or erq" "$BITPLAN" quantize cfg.yaml --wbits 4 --quantizer foo -o x
expect_fail 1 "no measured candidate at 5-bit weights" "$BITPLAN" quantize cfg.yaml --wbits 5 -o x --plan x.yaml
check "no partial outputs" test ! -e x -a ! -e x.yaml
# inspect validates a quantized-weights file: every invariant the format
# promises, one failure naming the tensor or key and the rule, exit 1
sed -e 's/weights: {quantizer: gptq}/weights: {quantizer: gptq, granularity: per_group, group_size: 8, gptq: {act_order: true}}/' \
    cfg.yaml >grp.yaml
check "per-group act-order weights" "$BITPLAN" quantize grp.yaml --wbits 4 --abits 8 -o g.safetensors -q
check "g_idx stored" bash -c '"$BITPLAN" inspect g.safetensors | grep -q "fc.g_idx"'
check "sound file passes" bash -c '"$BITPLAN" inspect g.safetensors | grep -q "all consistent"'
PY=/usr/bin/python3
if $PY -c 'import numpy' 2>/dev/null; then
    PYTHONPATH="$SRC/tools" $PY - <<'PYEOF'
import numpy as np
from safetensors_io import load_file, save_file
t, m = load_file("g.safetensors")
def bad(name, change):
    u = {k: np.array(v) for k, v in t.items()}
    mm = dict(m)
    change(u, mm)
    save_file(f"bad_{name}.safetensors", u, mm)
def gidx_zero(u, m):
    u["fc.g_idx"][:] = 0
bad("gidx", gidx_zero)
def scale(v):
    def f(u, m):
        u["fc.scales"][0, 0] = v
    return f
bad("negscale", scale(-1.0))
bad("nanscale", scale(np.nan))
bad("actzero", lambda u, m: u.pop("fc.act_zero"))
def symzero(u, m):
    u["conv1.zeros"][0, 0] -= 1
bad("symzero", symzero)
bad("shape", lambda u, m: m.__setitem__("fc.shape", "16,71"))
def floatless(u, m):
    m["fc.wbits"] = "16"
    for k in [k for k in u if k.startswith("fc.") and not k.startswith("fc.act")]:
        u.pop(k)
bad("floatless", floatless)
bad("abits", lambda u, m: m.__setitem__("dw.abits", "99"))
bad("gsize", lambda u, m: m.__setitem__("fc.group_size", "0"))
PYEOF
    for k in gidx:"tensor 'fc.g_idx': group 0 holds more than the group size of 8 columns" \
             negscale:"tensor 'fc.scales': element 0 is -1" nanscale:"tensor 'fc.scales': element 0 is NaN" \
             actzero:"'fc.act_scale' without 'fc.act_zero'" \
             symzero:"but a symmetric 4-bit grid's zero point is its midpoint 8" \
             shape:"metadata 'fc.shape' = '16,71' says 1136 weights" \
             floatless:"layer 'fc' is kept in float (wbits 16) but 'fc.weight' is missing" \
             abits:"metadata 'dw.abits' = '99': expected a whole number 2..16" \
             gsize:"metadata 'fc.group_size' = '0': expected a positive size for per_group"; do
        f=${k%%:*}; needle=${k#*:}
        expect_fail 1 "$needle" "$BITPLAN" inspect bad_$f.safetensors
    done
else
    echo "python3-numpy not installed: corrupt quantized-weights files skipped"
fi
finish
