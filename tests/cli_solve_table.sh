#!/bin/bash
# solve --table on a hand-made table: the plan is the optimum found by
# exhaustive search (done here in awk), for each budget kind.
source "$SRC/tests/lib.sh"

cat >t.csv <<'CSV'
layer,wbits,abits,error,params
a,2,16,10,100
a,4,16,3,100
a,8,16,1,100
b,2,16,5,100
b,4,16,4,100
b,8,16,0.5,100
c,2,16,8,200
c,4,16,2,200
c,8,16,0.1,200
CSV

# brute force: min error s.t. bits <= B (mode e), or min bits s.t. error <= E (mode s)
brute() {
    awk -F, -v mode="$1" -v lim="$2" 'NR>1 {n[$1]++; w[$1,n[$1]]=$2; e[$1,n[$1]]=$4; p[$1]=$5}
    END {best=1e300; bb=1e300
      for (i=1;i<=3;i++) for (j=1;j<=3;j++) for (k=1;k<=3;k++) {
        bits=w["a",i]*p["a"]+w["b",j]*p["b"]+w["c",k]*p["c"]; err=e["a",i]+e["b",j]+e["c",k]
        if (mode=="e" && bits<=lim && (err<best || (err==best && bits<bb))) {best=err; bb=bits; pick=w["a",i]" "w["b",j]" "w["c",k]}
        if (mode=="s" && err<=lim && (bits<bb || (bits==bb && err<best))) {best=err; bb=bits; pick=w["a",i]" "w["b",j]" "w["c",k]}
      } print pick}' t.csv
}
picked() { grep -E '^    wbits: ' "$1" | awk '{print $2}' | tr '\n' ' ' | sed 's/ $//'; }

for avg in 2 2.5 3 3.5 4 4.5 5 6 8; do
    "$BITPLAN" solve --table t.csv --avg-bits "$avg" -o "p_$avg.yaml" -q
    check "avg $avg: optimum $(brute e $(awk -v a=$avg 'BEGIN{print a*400}'))" \
        test "$(picked p_$avg.yaml)" = "$(brute e $(awk -v a=$avg 'BEGIN{print a*400}'))"
done
for bytes in 100 150 200 250 300 400; do
    "$BITPLAN" solve --table t.csv --max-bytes "$bytes" -o "b_$bytes.yaml" -q
    check "bytes $bytes: optimum" test "$(picked b_$bytes.yaml)" = "$(brute e $((bytes * 8)))"
done
for e in 1.6 5 7 10 14 23; do
    "$BITPLAN" solve --table t.csv --max-error "$e" -o "e_$e.yaml" -q
    check "error $e: min size optimum" test "$(picked e_$e.yaml)" = "$(brute s $e)"
done
# a plan on stdout, and JSON by extension
"$BITPLAN" solve --table t.csv --avg-bits 4 -o - >stdout.yaml
check "plan on stdout" grep -q '^format_version: 1' stdout.yaml
"$BITPLAN" solve --table t.csv --avg-bits 4 -o p.json -q
check "json by extension" grep -q '^  "format_version": 1' p.json
check "table recorded" grep -q '"table": "t.csv"' p.json
expect_fail 1 "smallest feasible value is 2.000000 bits" "$BITPLAN" solve --table t.csv --avg-bits 1.9
# CalibTIP-style measured loss deltas (negative ones included) stand in for error
sed '1s/error/loss_delta/' t.csv | sed 's/^b,8,16,0.5,100$/b,8,16,-0.2,100/' >deltas.csv
"$BITPLAN" solve --table deltas.csv --avg-bits 8 -o deltas_plan.yaml -q
check "loss-delta table solves" test -f deltas_plan.yaml
check "negative delta kept" grep -q 'error: -0.2' deltas_plan.yaml
printf 'layer,wbits,abits,error,loss_delta,params\na,4,16,1,1,10\n' >both.csv
expect_fail 1 "appears twice" "$BITPLAN" solve --table both.csv --avg-bits 4
finish
