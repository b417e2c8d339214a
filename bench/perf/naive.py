"""The sensitivity stage done the straightforward way, for timing against bitplan.

    /usr/bin/python3 bench/perf/naive.py MODEL.safetensors CALIB.safetensors WBITS ABITS [OUT.csv]

For every layer and every (weight bits, activation bits) candidate it forms
W_hat X_bar^T and W X^T in NumPy (float64 BLAS) and sums the squared
difference: the same RTN grids as bitplan's defaults (per-channel symmetric
min-max weights, per-tensor asymmetric min-max activations).  Prints the
seconds spent and the first errors; with OUT.csv also writes every error
(layer,wbits,abits,error) to compare with bitplan's table.
"""
import sys
import time

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 3)[0] + "/tools")
from safetensors_io import load_file  # noqa: E402


def q_weights(w, b):
    """Per-channel symmetric min-max grid, rounded in float32 as bitplan does
    (ties at the range ends fall the same way, so the tables compare exactly)."""
    w = w.astype(np.float32)
    m = np.abs(w).max(axis=1, keepdims=True)
    m[m == 0] = 1
    s = np.float32(2) * m / np.float32(2 ** b - 1)
    z = np.float32(2 ** (b - 1))
    q = np.clip(np.rint(w / s) + z, 0, 2 ** b - 1) - z
    return (s * q).astype(np.float64)


def q_acts(x, b):
    """Per-tensor asymmetric min-max grid, in float32 like bitplan."""
    x = x.astype(np.float32)
    lo, hi = min(x.min(), np.float32(0)), max(x.max(), np.float32(0))
    s = (hi - lo) / np.float32(2 ** b - 1) if hi > lo else np.float32(1)
    z = np.float32(np.clip(np.rint(-lo / s), 0, 2 ** b - 1))
    q = np.clip(np.rint(x / s) + z, 0, 2 ** b - 1) - z
    return (s * q).astype(np.float64)


def main():
    w, _ = load_file(sys.argv[1])
    c, _ = load_file(sys.argv[2])
    wbits = [int(v) for v in sys.argv[3].split(",")]
    abits = [int(v) for v in sys.argv[4].split(",")]
    t0 = time.time()
    table = []
    for name in [k[:-7] for k in w if k.endswith(".weight")]:
        W = w[name + ".weight"].astype(np.float64)
        X = c[name + ".input"].astype(np.float64)
        Y = X @ W.T
        for a in abits:
            Xq = X if a >= 16 else q_acts(X, a)
            for b in wbits:
                Wq = W if b >= 16 else q_weights(W, b)
                e = ((Xq @ Wq.T - Y) ** 2).sum() / len(X)
                table.append((name, b, a, e))
    print(f"{time.time() - t0:.3f} " + " ".join(f"{r[3]:.6g}" for r in table[:3]))
    if len(sys.argv) > 5:
        with open(sys.argv[5], "w") as f:
            f.write("layer,wbits,abits,error\n")
            f.writelines(f"{n},{b},{a},{e:.17g}\n" for n, b, a, e in table)


if __name__ == "__main__":
    main()
