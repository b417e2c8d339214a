#!/bin/bash
# The README's two quick-start commands on a truly fresh Debian 12: a minimal
# root made with debootstrap (--variant=minbase: no compiler, no cmake, no
# libraries), this repository's committed tree copied in, then, as root inside
# it (chroot), exactly the quick-start lines.  Needs root, debootstrap and the
# network to a Debian mirror.
#   bench/fresh/run.sh            (ROOT=/tmp/bitplan-fresh MIRROR=http://deb.debian.org/debian)
# Prints each step's time and the end of its output; exits non-zero on any failure.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
ROOT=${ROOT:-/tmp/bitplan-fresh}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
[ "$(id -u)" = 0 ] || { echo "bench/fresh/run.sh: needs root (debootstrap, chroot)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "needs debootstrap: apt-get install debootstrap" >&2; exit 1; }
cleanup() {
    for m in dev/pts dev proc sys; do umount "$ROOT/$m" 2>/dev/null || true; done
}
trap cleanup EXIT
rm -rf "$ROOT"
t0=$(date +%s)
debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR" >"$ROOT.debootstrap.log" 2>&1
echo "debootstrap minbase bookworm: $(( $(date +%s) - t0 )) s, $(du -sm "$ROOT" | cut -f1) MB"
for tool in cc gcc cmake make pkg-config; do
    if chroot "$ROOT" sh -c "command -v $tool" >/dev/null 2>&1; then
        echo "not fresh: $tool is already there" >&2; exit 1
    fi
done
echo "fresh root: no cc, gcc, cmake, make or pkg-config"
mkdir -p "$ROOT/root/bitplan"
git -C "$here" archive HEAD | tar -x -C "$ROOT/root/bitplan"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
mount -t proc proc "$ROOT/proc"
mount -t sysfs sys "$ROOT/sys"
mount --bind /dev "$ROOT/dev"
mount --bind /dev/pts "$ROOT/dev/pts"
step() { # step NAME COMMAND: run COMMAND in the fresh root's repository
    local name=$1; shift
    local s=$(date +%s)
    if ! chroot "$ROOT" /bin/bash -c "cd /root/bitplan && $*" >"$ROOT.$name.log" 2>&1; then
        echo "FAILED: $name ($*)"; tail -30 "$ROOT.$name.log"; exit 1
    fi
    echo "$name: $(( $(date +%s) - s )) s"; tail -3 "$ROOT.$name.log"
}
# the README's quick start, verbatim
step demo 'tools/bootstrap.sh && cmake -S . -B build && cmake --build build -j2 && build/bitplan run configs/demo.yaml'
step tests 'tools/bootstrap.sh && cmake -S . -B build && cmake --build build -j2 && ctest --test-dir build --output-on-failure'
echo "fresh Debian 12: both quick-start commands passed"
