#!/bin/bash
# Distributed sensitivity (an MPI build under mpirun; skipped otherwise):
# `mpirun -np 2` writes the same table bytes as one process (same BLAS thread
# count: OpenBLAS itself changes last bits with it), on the fixture with four
# quantizers and on a 96-layer synthetic transformer from statistics and rows;
# a failing rank ends the job with its message and no table; its journal
# resumes with another number of ranks to the same table; a killed rank ends
# the job non-zero and the next launch finishes the table.
source "$SRC/tests/lib.sh"

if ! "$BITPLAN" --version | grep -q '(mpi)' || ! command -v mpirun >/dev/null; then
    echo "not an MPI build (or no mpirun): distributed test skipped"
    finish
    exit 0
fi
export OPENBLAS_NUM_THREADS=1
mpi() { mpirun --allow-run-as-root --oversubscribe -x OPENBLAS_NUM_THREADS \
        -x BITPLAN_TEST_FAIL_LAYER -x BITPLAN_TEST_KILL_LAYER "$@"; }
export BITPLAN_TEST_FAIL_LAYER= BITPLAN_TEST_KILL_LAYER=

mkdir m && "$FIXTURE" m 5
cat >one.yaml <<'YAML'
model: {weights: m/model.safetensors, calibration: m/calib.safetensors, exclude: [head]}
candidates: {wbits: [2, 4, 8], abits: [8, 16]}
weights: {quantizer: [rtn, gptq, squant, erq]}
budget: {avg_bits: 5}
output: {dir: out1}
YAML
sed 's#out1#out2#' one.yaml >two.yaml
check "one process" "$BITPLAN" sensitivity one.yaml -q
check "two ranks" mpi -np 2 "$BITPLAN" sensitivity two.yaml -q
check "two ranks: the same bytes" cmp out1/sensitivity.csv out2/sensitivity.csv
sed 's#out1#out3#' one.yaml >three.yaml
check "run on three ranks" mpi -np 3 "$BITPLAN" run three.yaml -q
check "three ranks: the same bytes" cmp out1/sensitivity.csv out3/sensitivity.csv
check "the plan written once" test -s out3/plan.yaml

# the demo (every quantizer) and a sweep over it
for k in 1 2; do
    sed -e "s#demo/#$SRC/configs/demo/#g" -e "s#dir: .*#dir: demo$k#" \
        -e 's/quantizer: rtn/quantizer: [rtn, gptq, squant, erq]/' "$SRC/configs/demo.yaml" >demo$k.yaml
done
check "demo, one process" "$BITPLAN" sensitivity demo1.yaml -q
check "demo, two ranks" mpi -np 2 "$BITPLAN" sensitivity demo2.yaml -q
check "demo: the same bytes" cmp demo1/sensitivity.csv demo2/sensitivity.csv
rm -f demo2/sensitivity.csv*
check "sweep on two ranks" mpi -np 2 "$BITPLAN" sweep demo2.yaml --avg-bits 3:6:1 -o sw2 -q
check "sweep, one process" "$BITPLAN" sweep demo1.yaml --avg-bits 3:6:1 -o sw1 -q
check "sweep: the same frontier" cmp sw1/frontier.csv sw2/frontier.csv
check "sweep: the same table" cmp demo1/sensitivity.csv demo2/sensitivity.csv

# a rank that fails: its message, exit 1, no table; the journal resumes
sed 's#out1#outf#' one.yaml >f.yaml
BITPLAN_TEST_FAIL_LAYER=fc mpi -np 2 "$BITPLAN" sensitivity f.yaml -q >fail.out 2>&1
rc=$?
check "failing rank: non-zero exit" test $rc != 0
grep -q "bitplan: error: .*layer 'fc': failing as BITPLAN_TEST_FAIL_LAYER asks" fail.out && ok ||
    bad "failing rank's message: $(cat fail.out)"
check "no table from a failed job" test ! -e outf/sensitivity.csv
check "journal kept" test -s outf/sensitivity.csv.partial
check "resume on three ranks" mpi -np 3 "$BITPLAN" sensitivity f.yaml -q
check "resumed: the same bytes" cmp out1/sensitivity.csv outf/sensitivity.csv
check "journal removed" test ! -e outf/sensitivity.csv.partial

# a rank killed: the job exits non-zero, the next launch finishes the table
sed 's#out1#outk#' one.yaml >k.yaml
BITPLAN_TEST_KILL_LAYER=dw mpi -np 2 "$BITPLAN" sensitivity k.yaml -q >kill.out 2>&1
rc=$?
check "killed rank: non-zero exit" test $rc != 0
check "no table after a kill" test ! -e outk/sensitivity.csv
check "finish with one process" "$BITPLAN" sensitivity k.yaml -q
check "after the kill: the same bytes" cmp out1/sensitivity.csv outk/sensitivity.csv

# a 96-layer synthetic transformer, rows and statistics (the statistics made
# from the same rows by summing them)
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import numpy' 2>/dev/null; then
    /usr/bin/python3 "$SRC/bench/perf/make_layers.py" big 24 96 32
    /usr/bin/python3 - <<'PYEOF'
import sys
sys.path.insert(0, __import__("os").environ["SRC"] + "/tools")
import numpy as np
from safetensors_io import load_file, save_file
c, _ = load_file("big/calib.safetensors")
t, meta = {}, {"format": "bitplan-stats"}
for k, x in c.items():
    S = k[:-len(".input")]
    x = x.astype(np.float64)
    t.update({S + ".count": np.array([float(len(x))]), S + ".xtx": x.T @ x,
              S + ".xsum": x.sum(0), S + ".range": x.astype(np.float32)})
save_file("big/stats.safetensors", t, meta)
PYEOF
    for kind in calib stats; do
        cat >b1_$kind.yaml <<YAML
model: {weights: big/model.safetensors, calibration: big/$kind.safetensors}
candidates: {wbits: [2, 3, 4, 8], abits: [16]}
weights: {quantizer: [rtn, gptq]}
budget: {avg_bits: 4}
output: {dir: ob1_$kind}
YAML
        sed "s#ob1_#ob2_#" b1_$kind.yaml >b2_$kind.yaml
        check "96 layers ($kind), one process" "$BITPLAN" sensitivity b1_$kind.yaml -q
        check "96 layers ($kind), two ranks" mpi -np 2 "$BITPLAN" sensitivity b2_$kind.yaml -q
        check "96 layers ($kind): the same bytes" cmp ob1_$kind/sensitivity.csv ob2_$kind/sensitivity.csv
    done
    check "96 layers measured" test "$(cut -d, -f1 ob1_stats/sensitivity.csv | sort -u | wc -l)" = 97
fi
finish
