#!/bin/bash
# bitplan sweep: one plan per budget from the cached table, monotone in the
# budget, baselines beside them, CSV + SVG, plans on request, bad lists.
source "$SRC/tests/lib.sh"

mkdir m && "$FIXTURE" m 5
cat >cfg.yaml <<'YAML'
model: {weights: m/model.safetensors, calibration: m/calib.safetensors, exclude: [head]}
candidates: {wbits: [2, 3, 4, 6, 8], abits: [8, 16]}
output: {dir: out}
YAML
"$BITPLAN" sweep cfg.yaml --avg-bits 2:8:0.25 --plans >sweep.txt 2>err.txt
check "sweep exits 0: $(cat err.txt)" test $? = 0
check "no noise in a pipe" test ! -s err.txt
check "csv header" test "$(head -1 out/frontier.csv)" = "kind,budget,status,weight_bytes,avg_bits,bops,predicted_error,layers"
check "25 budgets" test "$(grep -c '^plan,' out/frontier.csv)" = 25
check "uniform baselines for each width" test "$(grep -c '^uniform,' out/frontier.csv)" = 5
check "first/last-8 baselines" test "$(grep -c '^first_last_8,' out/frontier.csv)" = 4
check "2 bits/weight is infeasible (scales cost extra)" grep -q '^plan,2,infeasible,' out/frontier.csv
# every plan meets its budget, and error never rises as the budget grows
grep '^plan,' out/frontier.csv | grep -v infeasible | awk -F, '
    $5 > $2 + 1e-12 { print "over budget:", $0; bad = 1 }
    NR > 1 && $7 > prev * (1 + 1e-12) { print "error rose:", $0; bad = 1 }
    { prev = $7 } END { exit bad }' && ok || bad "plans within budget, monotone"
# a plan never loses to the uniform baseline it can afford
awk -F, '$1 == "uniform" { ub[NR] = $5; ue[NR] = $7 }
    $1 == "plan" && $3 != "infeasible" { pb[NR] = $2; pe[NR] = $7 }
    END { for (i in pb) for (j in ub) if (ub[j] <= pb[i] && pe[i] > ue[j] * (1 + 1e-12)) { print "plan at", pb[i], "loses to uniform", ub[j]; bad = 1 } exit bad }' \
    out/frontier.csv && ok || bad "plans beat affordable baselines"
# the IP's plans sit on the exact frontier: each plan's error is the best
# frontier error within its budget, and hull points are marked
check "exact frontier written" test "$(head -1 out/pareto.csv)" = "weight_bytes,avg_bits,bops,predicted_error,on_hull,layers"
awk -F, 'FNR == 1 { next }
    FILENAME ~ /pareto/ { n++; pb[n] = $2; pe[n] = $4; hull += $5; next }
    $1 == "plan" && $3 != "infeasible" {
        best = ""
        for (i = 1; i <= n; i++) if (pb[i] <= $2 + 1e-12 && (best == "" || pe[i] < best)) best = pe[i]
        if (best == "" || $7 > best * (1 + 1e-12) || $7 < best * (1 - 1e-12)) { print "plan", $2, $7, "frontier", best; bad = 1 }
    }
    END { if (hull < 2) { print "hull points:", hull; bad = 1 } exit bad }' out/pareto.csv out/frontier.csv \
    && ok || bad "plans on the exact frontier"
check "svg written" grep -q '^<svg ' out/frontier.svg
check "svg complete" test "$(tail -1 out/frontier.svg)" = "</svg>"
check "one plan file per feasible budget" test "$(ls out/plans | wc -l)" = "$(grep '^plan,' out/frontier.csv | grep -vc infeasible)"
"$BITPLAN" sensitivity cfg.yaml >sens.txt
grep -q "cached" sens.txt && ok || bad "the sweep left a reusable table"
# the same from the table, and other budget kinds
"$BITPLAN" sweep --table out/sensitivity.csv --max-bytes 300,400,500 -o bytes -q
check "bytes sweep" test "$(grep -c '^plan,' bytes/frontier.csv)" = 3
"$BITPLAN" sweep cfg.yaml --max-error 0.5,0.05,0.005 -o errs -q
check "error sweep" test "$(grep -c '^plan,' errs/frontier.csv)" = 3
# BOPs: a budget on bit operations, checked against the table; BOPs as the
# objective under an error budget; a sweep over BOPs
"$BITPLAN" solve cfg.yaml --max-bops 200000 -o bops.yaml -q
check "bops plan" test -f bops.yaml
total=$(awk '/^  - name:/ { gsub(/"/, "", $3); n = $3 } /^    wbits:/ { w[n] = $2 } /^    abits:/ { a[n] = $2 }
    END { for (k in w) printf "%s %s %s\n", k, w[k], a[k] }' bops.yaml |
    while read l w a; do grep "^$l,$w,$a," out/sensitivity.csv | head -1 | awk -F, -v w=$w -v a=$a '{ print $8 * w * a }'; done |
    awk '{ s += $1 } END { print s }')
awk -v t="$total" 'BEGIN { exit !(t > 0 && t <= 200000) }' && ok || bad "plan bops $total within 200000"
check "plan reports its bops" grep -qE "^  bops: $total\$" bops.yaml
expect_fail 1 "budget.max_bops = 10 is infeasible: the smallest feasible value is" "$BITPLAN" solve cfg.yaml --max-bops 10
printf 'budget: {max_error: 1.0, minimize: bops}\n' | cat cfg.yaml - >minbops.yaml
"$BITPLAN" solve minbops.yaml -o minbops.yaml.out.yaml -q
check "min bops objective" grep -q 'objective: "min_bops"' minbops.yaml.out.yaml
"$BITPLAN" sweep cfg.yaml --max-bops 100000,200000,400000 -o bopsweep -q
check "bops sweep" test "$(grep -c '^plan,' bopsweep/frontier.csv)" = 3
grep '^plan,' bopsweep/frontier.csv | grep -v infeasible | awk -F, '$6 > $2 { bad = 1 } END { exit bad }' && ok || bad "bops sweep within budgets"
# latency: a user table (any unit), as a budget, an objective and a sweep
awk -F, 'NR > 1 && !seen[$1 "," $2 "," $3]++ { printf "%s,%s,%s,%.3f\n", $2, $3, $1, ($8 * $2 * $3) / 1000 + 0.5 * $2 }
    BEGIN { print "wbits,abits,layer,latency" }' out/sensitivity.csv >lat.csv
"$BITPLAN" solve cfg.yaml --latency lat.csv --max-latency 150 -o lat_plan.yaml -q
lat=$(awk '/^  - name:/ { gsub(/"/, "", $3); n = $3 } /^    wbits:/ { w[n] = $2 } /^    abits:/ { a[n] = $2 }
    END { for (k in w) print k, w[k], a[k] }' lat_plan.yaml |
    while read l w a; do grep ",$l," lat.csv | awk -F, -v w=$w -v a=$a '$1 == w && $2 == a { print $4 }'; done |
    awk '{ s += $1 } END { print s }')
awk -v t="$lat" 'BEGIN { exit !(t > 0 && t <= 150) }' && ok || bad "plan latency $lat within 150"
check "plan reports latency" grep -qE '^  latency: ' lat_plan.yaml
printf 'budget: {max_error: 1.0, minimize: latency, latency_table: lat.csv}\n' | cat cfg.yaml - >minlat.yaml
"$BITPLAN" solve minlat.yaml -o minlat_plan.yaml -q
check "min latency objective" grep -q 'objective: "min_latency"' minlat_plan.yaml
"$BITPLAN" sweep cfg.yaml --latency lat.csv --max-latency 100,150,400 -o latsweep -q
check "latency sweep" test "$(grep -c '^plan,' latsweep/frontier.csv)" = 3
head -3 lat.csv >short.csv
expect_fail 1 "short.csv: no latency for layer" "$BITPLAN" solve cfg.yaml --latency short.csv --max-latency 100
expect_fail 1 "needs a latency table" "$BITPLAN" solve cfg.yaml --max-latency 100
(cat lat.csv; sed -n 2p lat.csv) >dup.csv
expect_fail 1 "is listed twice" "$BITPLAN" solve cfg.yaml --latency dup.csv --max-latency 100
printf 'layer,wbits,latency\nconv1,4,1\n' >nocol.csv
expect_fail 1 "nocol.csv: missing required column 'abits'" "$BITPLAN" solve cfg.yaml --latency nocol.csv --max-latency 100

# tied groups: conv1 and dw share weight bits in every plan and frontier point
printf 'ties: [{pattern: "^conv1$|^dw$", wbits: true}]\n' | cat cfg.yaml - | sed 's#dir: out#dir: out_tie#' >tie.yaml
"$BITPLAN" sweep tie.yaml --avg-bits 2.5:8:0.5 --plans -q
check "tied sweep" test -f out_tie/frontier.csv
awk -F, '$1 == "plan" && $3 != "infeasible" {
        if (match($8, /conv1=[0-9]+/)) c = substr($8, RSTART + 6, RLENGTH - 6)
        if (match($8, /dw=[0-9]+/)) d = substr($8, RSTART + 3, RLENGTH - 3)
        if (c != d) { print "untied:", $8; bad = 1 } n++ }
    END { exit bad || n == 0 }' out_tie/frontier.csv && ok || bad "ties hold in every sweep plan"
awk -F, 'NR > 1 { if (match($6, /conv1=[0-9]+/)) c = substr($6, RSTART + 6, RLENGTH - 6)
        if (match($6, /dw=[0-9]+/)) d = substr($6, RSTART + 3, RLENGTH - 3)
        if (c != d) { print "untied:", $6; bad = 1 } }
    END { exit bad }' out_tie/pareto.csv && ok || bad "ties hold on the exact frontier"
# allowed widths per pattern, and 16 bits as the keep-unquantized candidate
cat >allow.yaml <<'YAML'
model: {weights: m/model.safetensors, calibration: m/calib.safetensors, exclude: [head]}
candidates: {wbits: [2, 4, 8, 16], abits: [16]}
allowed: [{pattern: "fc", wbits: [4, 8]}]
output: {dir: out_allow}
YAML
"$BITPLAN" sweep allow.yaml --avg-bits 3:17:1 -q
grep '^plan,' out_allow/frontier.csv | grep -v infeasible | grep -vE 'fc=(4|8)/' | grep -q . && bad "fc outside its allowed widths" || ok
grep -q 'conv1=16/16 dw=16/16' out_allow/frontier.csv && ok || bad "generous budgets keep layers unquantized"
sed 's/pattern: "fc"/pattern: "nope"/' allow.yaml >allow_bad.yaml
printf 'budget: {avg_bits: 8}\n' >>allow_bad.yaml
expect_fail 1 "allowed[0]: pattern 'nope' matches no layer" "$BITPLAN" run allow_bad.yaml
printf 'ties: [{pattern: "^conv1$|^dw$", wbits: false}]\n' | cat cfg.yaml - >tie_bad.yaml
expect_fail 1 "ties[0]: expected wbits and/or abits to tie" "$BITPLAN" run tie_bad.yaml
expect_fail 2 "--avg-bits" "$BITPLAN" sweep cfg.yaml --avg-bits 8:2:1
expect_fail 2 "--avg-bits" "$BITPLAN" sweep cfg.yaml --avg-bits 2,x
expect_fail 2 "sweep needs" "$BITPLAN" sweep cfg.yaml
finish
