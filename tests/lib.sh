# lib.sh - helpers for the end-to-end CLI tests (sourced by tests/cli_*.sh).
# Environment from ctest: BITPLAN (binary), FIXTURE (fixture writer), SRC
# (source tree), WORK (scratch directory, emptied here).
set -u
passed=0
failed=0
rm -rf "$WORK" && mkdir -p "$WORK"
cd "$WORK"

ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*" >&2; }
check() { # check DESCRIPTION COMMAND...
    local what=$1; shift
    if "$@"; then ok; else bad "$what"; fi
}

# expect_fail CODE NEEDLE CMD... : exit status CODE, stderr one line holding NEEDLE
expect_fail() {
    local code=$1 needle=$2; shift 2
    "$@" >"$WORK/out.txt" 2>"$WORK/err.txt"
    local rc=$?
    if [ "$rc" != "$code" ]; then bad "'$*' exited $rc, expected $code: $(cat "$WORK/err.txt")"; return; fi
    if ! grep -qF -- "$needle" "$WORK/err.txt"; then
        bad "'$*' stderr lacks '$needle': $(cat "$WORK/err.txt")"; return
    fi
    if [ "$code" = 1 ] && [ "$(wc -l <"$WORK/err.txt")" != 1 ]; then
        bad "'$*' printed more than one error line: $(cat "$WORK/err.txt")"; return
    fi
    ok
}

# yaml_value FILE KEY : first "KEY: value" in a plan (top-level or nested)
yaml_value() { grep -m1 -E "^ *$2: " "$1" | sed -E "s/^ *$2: //; s/\"//g"; }

# needs_torch WHAT: Debian's python3 with torch and numpy in $PY, or a skip
# of the whole script (WHAT names it)
needs_torch() {
    PY=/usr/bin/python3
    if ! [ -x $PY ] || ! $PY -c 'import torch, numpy' 2>/dev/null; then
        echo "python3-torch not installed: $1 skipped"
        finish
        exit 0
    fi
}

finish() {
    echo "$passed passed, $failed failed"
    [ "$failed" = 0 ]
}
