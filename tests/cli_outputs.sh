#!/bin/bash
# Outputs: special files as -o, unreadable inputs, colliding output names, and
# an output set (plan, JSON, exports, weights) that stays one plan under kill -9
# and concurrent runs.
source "$SRC/tests/lib.sh"

mkdir m && "$FIXTURE" m 9
cat >cfg.yaml <<'YAML'
model: {weights: m/model.safetensors, calibration: m/calib.safetensors, exclude: [head]}
candidates: {wbits: [2, 3, 4, 8], abits: [8, 16]}
metric: mse
budget: {avg_bits: 5}
output: {dir: out, formats: [yaml, json, llamacpp], weights: q.safetensors}
YAML
"$BITPLAN" run cfg.yaml -q 2>/dev/null
check "first run" test -s out/plan.yaml

# ---- -o: devices, pipes, stdout, links, directories
check "/dev/null is a device" test -c /dev/null
"$BITPLAN" export out/plan.yaml --format autoround -o /dev/null -q
check "export -o /dev/null: still a device" test -c /dev/null
"$BITPLAN" solve cfg.yaml -o /dev/null -q 2>/dev/null
check "solve -o /dev/null: still a device" test -c /dev/null
"$BITPLAN" sensitivity cfg.yaml -o /dev/null -q
check "sensitivity -o /dev/null: still a device" test -c /dev/null
if [ -c /dev/full ]; then
    expect_fail 1 "/dev/full: write failed: No space left on device" \
        "$BITPLAN" export out/plan.yaml --format autoround -o /dev/full -q
    check "/dev/full: still a device" test -c /dev/full
fi
"$BITPLAN" export out/plan.yaml --format autoround -o - -q >stdout.json
check "export -o - writes stdout" grep -q '"conv1"' stdout.json
check "export -o - makes no file '-'" test ! -e ./-
"$BITPLAN" export out/plan.yaml --format llamacpp -o - -q >types.txt 2>/dev/null
check "llamacpp -o -: no '-.args'" test ! -e ./-.args
mkfifo pipe
cat pipe >from_pipe.json &
"$BITPLAN" export out/plan.yaml --format autoround -o pipe -q
wait
check "a FIFO is written, not replaced" test -p pipe
check "the reader got the export" cmp -s from_pipe.json stdout.json
echo old >target.json && ln -s target.json link.json
"$BITPLAN" export out/plan.yaml --format autoround -o link.json -q
check "a symlink is followed" test -L link.json
check "its target replaced" cmp -s target.json stdout.json
ln -s missing/nowhere.json dangling.json
expect_fail 1 "dangling.json: a symbolic link whose target cannot be followed" \
    "$BITPLAN" export out/plan.yaml --format autoround -o dangling.json -q
mkdir adir
expect_fail 1 "adir: is a directory (expected a file name)" \
    "$BITPLAN" export out/plan.yaml --format autoround -o adir -q

# ---- inputs that are no regular file, or too big: one message, at once
expect_fail 1 "/dev/zero: not a regular file" timeout 10 "$BITPLAN" run /dev/zero
expect_fail 1 "/dev/urandom: not a regular file" timeout 10 "$BITPLAN" run /dev/urandom
mkfifo cfgpipe
expect_fail 1 "cfgpipe: not a regular file" timeout 10 "$BITPLAN" run cfgpipe
expect_fail 1 "adir: is a directory (expected a config (YAML))" "$BITPLAN" run adir
head -c $((17 << 20)) /dev/zero | tr '\0' '#' >huge.yaml
expect_fail 1 "huge.yaml: 17825792 bytes is more than a config (YAML) may have" \
    "$BITPLAN" run huge.yaml
mkfifo wpipe
sed 's#m/model.safetensors#wpipe#' cfg.yaml >wcfg.yaml
expect_fail 1 "wpipe: not a regular file" timeout 10 "$BITPLAN" run wcfg.yaml -q
expect_fail 1 "cfgpipe: not a regular file" timeout 10 "$BITPLAN" solve --table cfgpipe --avg-bits 4
expect_fail 1 "cfgpipe: not a regular file" timeout 10 "$BITPLAN" export cfgpipe --format llamacpp
expect_fail 1 "adir: is a directory" "$BITPLAN" solve cfg.yaml --latency adir -q

# ---- output names that would land on each other: refused before any work
for clash in "plan: sensitivity.csv" "weights: plan.yaml" "table: plan.json" \
             "weights: tensor-types.txt" "plan: plan.json"; do
    key=${clash%%:*}
    sed "s#weights: q.safetensors#weights: q.sft#; s#output: {dir: out,#output: {dir: clash,#
         s#weights: q.sft#$([ "$key" = weights ] && echo "$clash" || echo "weights: q.sft, $clash")#" \
        cfg.yaml >clash.yaml
    "$BITPLAN" run clash.yaml -q >/dev/null 2>err.txt
    rc=$?
    check "output.$clash refused" test $rc = 1
    check "output.$clash: one message naming output.$key" \
        bash -c "[ \$(wc -l <err.txt) = 1 ] && grep -q 'clash.yaml: .*output.$key' err.txt"
    check "output.$clash: nothing written" test ! -e clash
done

# ---- one plan per output set
# the layers' weight widths as each output records them, sorted
sig_yaml() { awk '/^  - name:/{gsub(/"/,"",$3); n=$3} /^    wbits:/{print n "=" $2}' out/plan.yaml | sort | tr '\n' ' '; }
sig_json() {
    tr -d '\n' <out/plan.json | grep -o '"name": "[^"]*",[^}]*"wbits": [0-9]*' |
        sed -E 's/"name": "([^"]*)".*"wbits": ([0-9]*)/\1=\2/' | sort | tr '\n' ' '
}
sig_weights() {
    grep -ao '"[a-z0-9]*\.wbits":"[0-9]*"' out/q.safetensors | sed -E 's/"([^.]*)\.wbits":"([0-9]*)"/\1=\2/' |
        sort | tr '\n' ' '
}
sig_llama() {
    sed -E 's/^\^(.*)\$=(.*)$/\1=\2/; s/\\//g; s/=q2_K/=2/; s/=q3_K/=3/; s/=q4_K/=4/; s/=q8_0/=8/; s/=f16/=16/' \
        out/tensor-types.txt | sort | tr '\n' ' '
}
one_plan() {
    local y; y=$(sig_yaml)
    [ -n "$y" ] && [ "$y" = "$(sig_json)" ] && [ "$y" = "$(sig_weights)" ] && [ "$y" = "$(sig_llama)" ]
}
check "a run's outputs agree" one_plan
# kill -9 at random points of runs that alternate between two budgets (other plans)
t0=$(date +%s%N); "$BITPLAN" run cfg.yaml -q --avg-bits 3 --force 2>/dev/null; t1=$(date +%s%N)
span=$(( (t1 - t0) / 1000 + 1 ))        # microseconds of one run
kills=0 tries=0 torn=0
while [ $kills -lt 60 ] && [ $tries -lt 2000 ]; do
    tries=$((tries + 1))
    budget=$(( tries % 2 ? 3 : 6 ))
    force=""; [ $((tries % 3)) = 0 ] && force=--force
    "$BITPLAN" run cfg.yaml -q --avg-bits $budget $force 2>/dev/null &
    pid=$!
    sleep "$(printf '0.%06d' $(( (RANDOM * 32768 + RANDOM) % span )))"
    kill -9 $pid 2>/dev/null && kills=$((kills + 1))
    wait $pid 2>/dev/null
    one_plan || torn=$((torn + 1))
done
echo "kill -9: $kills kills in $tries runs (a run takes ${span} us), $torn torn output sets"
check "at least 50 kills landed" test $kills -ge 50
check "no kill left outputs of two plans" test $torn = 0
"$BITPLAN" run cfg.yaml -q 2>/dev/null
check "the next run cleans the killed runs' temporaries" \
    bash -c '[ -z "$(ls -A out out/.bitplan-sets/current | grep -E "\.tmp\.|\.link\.")" ]'
check "and their sets" test "$(ls out/.bitplan-sets | wc -l)" = 2     # current and its set
check "and its set agrees" one_plan
# a run killed after writing its set but before switching to it left a set
# directory nobody reads: the next command that takes the lock removes it
# (sets are named <seconds>.<nanoseconds>.<pid>; what else is there is not bitplan's and stays)
mkdir -p out/.bitplan-sets/1700000000.000000001.42 out/.bitplan-sets/notes
cp out/plan.yaml out/.bitplan-sets/1700000000.000000001.42/ && cp out/plan.yaml out/.bitplan-sets/notes/
"$BITPLAN" export out/plan.yaml --format autoround --config cfg.yaml -o /dev/null -q 2>/dev/null
check "a killed run's set is removed" test ! -e out/.bitplan-sets/1700000000.000000001.42
check "what is not a set of bitplan's stays" test -e out/.bitplan-sets/notes/plan.yaml
rm -r out/.bitplan-sets/notes
check "the current set stays" one_plan
check "outputs are links into the current set" test -L out/plan.yaml -a -f out/plan.yaml
# two runs at once: the second waits for nothing and says why; the set stays one plan
flock out sleep 2 &
sleep 0.3
expect_fail 1 "out: another bitplan run is writing into this directory" "$BITPLAN" run cfg.yaml -q
wait
bad_rc=0
for i in $(seq 20); do
    "$BITPLAN" run cfg.yaml -q --avg-bits 3 --force 2>e1.txt & p1=$!
    "$BITPLAN" run cfg.yaml -q --avg-bits 6 --force 2>e2.txt & p2=$!
    wait $p1; r1=$?; wait $p2; r2=$?
    for r in "$r1:e1.txt" "$r2:e2.txt"; do
        code=${r%%:*} f=${r#*:}
        if [ "$code" != 0 ] && ! grep -q "another bitplan run is writing" "$f"; then bad_rc=1; fi
    done
    one_plan || bad_rc=1
done
check "concurrent runs: each finishes or is refused clearly; one plan per set" test $bad_rc = 0
# a failure after the plan is written (here: no llama.cpp type) changes none of the set
before=$(sig_yaml)
sed 's/wbits: \[2, 3, 4, 8\]/wbits: [7]/; s/budget: {avg_bits: 5}/budget: {avg_bits: 9}/' cfg.yaml >seven.yaml
"$BITPLAN" run seven.yaml -q >/dev/null 2>err.txt
check "an export failure fails the run" grep -q "7-bit weights have no llama.cpp type" err.txt
same_as_before() { [ "$(sig_yaml)" = "$before" ]; }
check "and leaves the previous set whole" same_as_before
check "and agreeing" one_plan

# ---- links and files somebody else planted in output.dir: refused, never followed;
# the victims (a file and a directory outside) stay untouched
mkdir -p victim/dir && echo precious >victim/file && echo keep >victim/dir/a.yaml
victims_ok() { [ "$(cat victim/file)" = precious ] && [ "$(cat victim/dir/a.yaml)" = keep ] &&
               [ "$(ls victim/dir)" = a.yaml ]; }
plant() { # NAME TARGET NEEDLE: output.dir/NAME -> TARGET, then a run must refuse
    local name=$1 target=$2 needle=$3
    rm -rf o2 && mkdir o2 && ln -s "$target" "o2/$name"
    sed 's/dir: out,/dir: o2,/' cfg.yaml >plant.yaml
    expect_fail 1 "$needle" "$BITPLAN" run plant.yaml -q --force
    check "victims untouched after a planted $name" victims_ok
}
plant plan.yaml "$WORK/victim/file" "o2/plan.yaml: a symbolic link to $WORK/victim/file that bitplan did not make"
plant sensitivity.csv "$WORK/victim/file" "o2/sensitivity.csv: a symbolic link to"
plant sensitivity.csv.key "$WORK/victim/file" "o2/sensitivity.csv.key: a symbolic link to"
plant sensitivity.csv.partial "$WORK/victim/file" "o2/sensitivity.csv.partial: a symbolic link to"
plant tensor-types.txt "$WORK/victim/file" "o2/tensor-types.txt: a symbolic link to"
plant q.safetensors "$WORK/victim/file" "o2/q.safetensors: a symbolic link to"
plant .bitplan-hashes "$WORK/victim/file" "o2/.bitplan-hashes: a symbolic link to"
plant .bitplan-sets "$WORK/victim/dir" "o2/.bitplan-sets: not a directory bitplan made (a symbolic link)"
# a FIFO or a directory under an output's name: refused, not opened
rm -rf o2 && mkdir o2 && mkfifo o2/plan.json && mkdir o2/plan.yaml
sed 's/dir: out,/dir: o2,/' cfg.yaml >plant.yaml
expect_fail 1 "o2/plan.yaml: a directory that bitplan did not make" "$BITPLAN" run plant.yaml -q
# inside .bitplan-sets: "current" pointing elsewhere is refused; a link under a set's
# name is removed, not followed
rm -rf o2 && mkdir -p o2/.bitplan-sets && ln -s "$WORK/victim/dir" o2/.bitplan-sets/current
expect_fail 1 "o2/.bitplan-sets/current: not bitplan's link to one of its sets" \
    "$BITPLAN" run plant.yaml -q
rm -rf o2 && mkdir -p o2/.bitplan-sets
ln -s "$WORK/victim/dir" o2/.bitplan-sets/1700000000.000000002.7
ln -s "$WORK/victim/dir" o2/.bitplan-sets/somebody
"$BITPLAN" run plant.yaml -q
check "a run beside planted links in .bitplan-sets" test -s o2/plan.yaml
check "the set-named link is gone, not followed" test ! -L o2/.bitplan-sets/1700000000.000000002.7
check "other names are left alone" test -L o2/.bitplan-sets/somebody
check "victims untouched by the clean-up" victims_ok
# -o names a link explicitly: written through, as documented
ln -sf "$WORK/victim/mine.yaml" mine.yaml && : >victim/mine.yaml
"$BITPLAN" solve cfg.yaml -o mine.yaml -q
check "-o through a link the user names" grep -q "^layers:" victim/mine.yaml
finish
