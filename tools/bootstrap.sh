#!/bin/sh
# Install what bitplan needs to build and test on Debian 12, if missing.
# Run as root (or it prints the apt-get command to run).
#   tools/bootstrap.sh          the build and test dependencies
#   tools/bootstrap.sh python   also Debian's python3-torch and python3-numpy, for
#                               the PyTorch-side tools (capture, refine, evaluate)
#                               and their tests (which skip themselves without)
#   tools/bootstrap.sh mpi      also Open MPI (libopenmpi-dev, openmpi-bin), for the
#                               distributed build (-DBITPLAN_MPI=ON)
set -e
# (libgfortran-12-dev: `pkg-config --static` links OpenBLAS with -lgfortran)
pkgs="build-essential cmake pkg-config libglpk-dev libopenblas-dev liblapacke-dev libyaml-dev
      libgfortran-12-dev"
case "${1:-}" in
    "") ;;
    python) pkgs="$pkgs python3-torch python3-numpy" ;;
    mpi) pkgs="$pkgs libopenmpi-dev openmpi-bin" ;;
    *) echo "usage: tools/bootstrap.sh [python|mpi]" >&2; exit 2 ;;
esac
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "bitplan needs:$missing" >&2
    echo "run as root: apt-get update && apt-get install -y$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing >/dev/null
