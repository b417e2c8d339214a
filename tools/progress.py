"""Progress on stderr for the long-running tools (capture, measured deltas,
refinement): "what i/N, rate, ETA", only when stderr is a terminal and the
tool was not asked to be quiet."""
import sys
import time


class Progress:
    def __init__(self, what, total, quiet=False, unit="items"):
        self.what, self.total, self.unit = what, total, unit
        self.on = not quiet and sys.stderr.isatty()
        self.t0 = time.time()

    def __call__(self, done, note=""):
        if not self.on:
            return
        el = time.time() - self.t0
        rate = done / el if el > 0 and done else 0.0
        eta = f"{(self.total - done) / rate:.0f}s" if rate > 0 else "--"
        sys.stderr.write(f"\r\033[K{self.what}: {min(done + 1, self.total)}/{self.total} "
                         f"{note[:40]}  {rate:.2f} {self.unit}/s  ETA {eta}")
        sys.stderr.flush()

    def close(self):
        if self.on:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
