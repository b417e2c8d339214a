"""Progress on stderr for the long-running tools (capture, calibration,
measured deltas, refinement, evaluation): "what i/N, rate, ETA".

On a terminal one line is redrawn in place; in a pipe or a log file a whole
line is written every BITPLAN_PROGRESS_SECONDS (default 15) seconds, so
work shorter than that writes nothing, and the end says how long it took.
quiet=True (the tools' --quiet) silences both."""
import os
import sys
import time


def _every():
    try:
        v = float(os.environ.get("BITPLAN_PROGRESS_SECONDS", "15"))
        return v if v >= 0 and v != float("inf") else 15.0
    except ValueError:
        return 15.0


class Progress:
    def __init__(self, what, total, quiet=False, unit="items"):
        self.what, self.total, self.unit = what, total, unit
        self.tty = sys.stderr.isatty()
        self.on = not quiet
        self.every = _every()
        self.t0 = self.last = time.time()

    def __call__(self, done, note=""):
        if not self.on:
            return
        now = time.time()
        if not self.tty and now - self.last < self.every:
            return
        self.last = now
        el = now - self.t0
        rate = done / el if el > 0 and done else 0.0
        eta = f"{(self.total - done) / rate:.0f}s" if rate > 0 else "--"
        line = (f"{self.what}: {min(done + 1, self.total)}/{self.total} "
                f"{note[:40]}  {rate:.2f} {self.unit}/s  ETA {eta}")
        sys.stderr.write(f"\r\033[K{line}" if self.tty else line + "\n")
        sys.stderr.flush()

    def close(self):
        if not self.on:
            return
        el = time.time() - self.t0
        if self.tty:
            sys.stderr.write("\r\033[K")
        elif el >= self.every:
            sys.stderr.write(f"{self.what}: {self.total}/{self.total} done in {el:.0f}s\n")
        sys.stderr.flush()
