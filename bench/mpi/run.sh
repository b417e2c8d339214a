#!/bin/bash
# Distributed sensitivity on this machine: a synthetic transformer
# (bench/perf/make_layers.py: BLOCKS (default 24: 96 layers) blocks of qkv,
# proj, fc1, fc2 at hidden 768, 2,048 rows) measured with rtn and gptq (wbits
# 2 4 8, abits 8 16) by one process (OPENBLAS_NUM_THREADS 1 and 2) and by
# mpirun -np 2 with one BLAS thread per rank; prints the wall
# times, the speed-up and whether the tables are byte-identical; then the
# cost model's projection to 8-64 ranks (bench/mpi/project.py).
#
#   bench/mpi/run.sh [MPI_BUILD_DIR] [OUT_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
build=$(cd "${1:-$src/build-mpi}" && pwd)
out=${2:-/tmp/bitplan-mpi-bench}
"$build/bitplan" --version | grep -q '(mpi)' || { echo "$build/bitplan is not an MPI build" >&2; exit 1; }
mkdir -p "$out" && cd "$out"
blocks=${BLOCKS:-24}
[ -f layers$blocks/calib.safetensors ] ||
    /usr/bin/python3 "$src/bench/perf/make_layers.py" layers$blocks "$blocks" 2048
for t in 1t 2t mpi2; do
    cat >$t.yaml <<YAML
model: {weights: layers$blocks/model.safetensors, calibration: layers$blocks/calib.safetensors}
candidates: {wbits: [2, 4, 8], abits: [8, 16]}
weights: {quantizer: [rtn, gptq]}
budget: {avg_bits: 4}
output: {dir: out_$t}
YAML
done
secs() { local t0=$(date +%s.%N); "$@" >/dev/null; echo "$(date +%s.%N) - $t0" | bc; }
s1=$(OPENBLAS_NUM_THREADS=1 secs "$build/bitplan" sensitivity 1t.yaml --force -q)
s2=$(OPENBLAS_NUM_THREADS=2 secs "$build/bitplan" sensitivity 2t.yaml --force -q)
sm=$(OPENBLAS_NUM_THREADS=1 secs mpirun --allow-run-as-root -np 2 -x OPENBLAS_NUM_THREADS \
     "$build/bitplan" sensitivity mpi2.yaml --force -q)
same=$(cmp -s out_1t/sensitivity.csv out_mpi2/sensitivity.csv && echo yes || echo no)
printf "one process, 1 BLAS thread:  %7.1f s\n" "$s1"
printf "one process, 2 BLAS threads: %7.1f s\n" "$s2"
printf "mpirun -np 2, 1 thread each: %7.1f s  (x%.2f over 1 thread, x%.2f over 2 threads)\n" \
    "$sm" "$(echo "$s1 / $sm" | bc -l)" "$(echo "$s2 / $sm" | bc -l)"
echo "table of mpirun -np 2 byte-identical to one process with 1 thread: $same"
/usr/bin/python3 "$here/project.py"
