#!/bin/bash
# cmake --install puts the command, the library (static and shared), its
# header, a relocatable pkg-config file and the Python tools with their
# bitplan-TOOL commands in place; a C program built against the installed
# library with `pkg-config --cflags --libs bitplan` (shared, and the static
# archive) plans the demo model through the public header.
source "$SRC/tests/lib.sh"

BUILD=$(dirname "$BITPLAN")
# a sanitizer build's library needs its runtime in the programs linked with it
san=""
case "${BP_SANITIZE:-OFF}" in ON|1|TRUE|true) san="-fsanitize=address,undefined" ;; esac
P="$WORK/prefix"
check "install" cmake --install "$BUILD" --prefix "$P"
for f in bin/bitplan include/bitplan.h share/bitplan/tools/capture.py \
         share/bitplan/tools/objective.py bin/bitplan-capture bin/bitplan-calibrate \
         bin/bitplan-refine-plan bin/bitplan-evaluate-plan bin/bitplan-measure-deltas \
         bin/bitplan-llamacpp-calibrate; do
    check "installed $f" test -e "$P/$f"
done
pc=$(find "$P" -name bitplan.pc)
check "bitplan.pc installed" test -n "$pc"
lib=$(dirname "$(dirname "$pc")")
check "shared library" test -e "$lib/libbitplan.so"
check "static library" test -e "$lib/libbitplan.a"
export PKG_CONFIG_PATH="$(dirname "$pc")"
check "pkg-config knows it" pkg-config --exists bitplan
check "its version" test "$(pkg-config --modversion bitplan)" = "$("$P/bin/bitplan" --version | cut -d' ' -f2)"
check "cflags point into the prefix" test "$(realpath "$(pkg-config --variable=includedir bitplan)")" = "$(realpath "$P/include")"

cp "$SRC/configs/demo/model.safetensors" "$SRC/configs/demo/calib.safetensors" .
cat >demo.yaml <<'YAML'
model: {weights: model.safetensors, calibration: calib.safetensors}
candidates: {wbits: [2, 3, 4, 8], abits: [16]}
budget: {avg_bits: 4}
output: {dir: out}
YAML
cat >prog.c <<'C'
#include <bitplan.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    bp_session *s;
    bp_plan *plan;
    bp_error err;
    bp_options o = {0};
    const char *written;
    if (argc < 2 || bp_open(&s, argv[1], &o, &err) < 0 || bp_measure(s, &err) < 0 ||
        bp_solve(s, NULL, &plan, &err) < 0 || bp_write(s, plan, NULL, &written, &err) < 0) {
        fprintf(stderr, "prog: %s\n", argc < 2 ? "usage: prog CONFIG" : err.msg);
        return 1;
    }
    printf("%s %zu layers %.4f bits %s\n", bp_version(), plan->n_layers,
           (double)plan->total_weight_bits / (double)plan->total_params, written);
    bp_plan_free(plan);
    bp_close(s);
    return 0;
}
C
check "build against the shared library" cc -std=c11 -Wall -Werror $san prog.c $(pkg-config --cflags --libs bitplan) -o prog
LD_LIBRARY_PATH="$lib" ./prog demo.yaml >prog.txt 2>prog.err
check "the program plans through the installed library" grep -qE "^[0-9.]+ 4 layers [0-9.]+ bits out/plan.yaml$" prog.txt
check "its plan" grep -q '^  name: "frontier"' out/plan.yaml
check "it runs on the installed shared library" bash -c "LD_LIBRARY_PATH='$lib' ldd ./prog | grep -q 'libbitplan.so.0 => $lib/libbitplan.so.0'"
check "build against the static library" cc -std=c11 -Wall -Werror $san prog.c $(pkg-config --cflags bitplan) "$lib/libbitplan.a" \
    $(pkg-config --static --libs bitplan | sed 's/ -lbitplan / /') -o prog_static
rm -rf out
./prog_static demo.yaml >static.txt 2>static.err
check "the static program plans the same" test "$(cut -d' ' -f1-4 static.txt)" = "$(cut -d' ' -f1-4 prog.txt)"
check "the installed command plans the same" bash -c "'$P/bin/bitplan' solve demo.yaml -o - -q | grep -q 'weight_bits'"
check "the shared library exports the public API only" bash -c "! nm -D --defined-only '$lib/libbitplan.so' | awk '{print \$3}' | grep -v '^_' | grep -qv '^bp_'"
check "bp_open is exported" bash -c "nm -D --defined-only '$lib/libbitplan.so' | grep -q ' bp_open$'"
check "bp_run_sensitivity is not" bash -c "! nm -D --defined-only '$lib/libbitplan.so' | grep -q ' bp_run_sensitivity$'"
if [ -x /usr/bin/python3 ]; then
    check "bitplan-llamacpp-calibrate runs the installed tool (no PyTorch)" \
        bash -c "'$P/bin/bitplan-llamacpp-calibrate' --help | grep -q -- '--llama-bin'"
fi
if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    check "bitplan-capture runs the installed tool" bash -c "'$P/bin/bitplan-capture' --help | grep -q -- '--fisher'"
fi
finish
