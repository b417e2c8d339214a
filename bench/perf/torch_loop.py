"""The sensitivity stage as a user would write it in PyTorch, for timing against bitplan.

    /usr/bin/python3 bench/perf/torch_loop.py MODEL.safetensors CALIB.safetensors WBITS ABITS [OUT.csv]

For every layer, W X^T once, then for every (weight bits, activation bits)
candidate W_hat X_bar^T - W X^T and its squared sum, in float32 on every core
torch uses: the same RTN grids as bitplan's defaults (per-channel symmetric
min-max weights, per-tensor asymmetric min-max activations, x / s rounded
half to even).  Prints the seconds of the whole process and of the loop; with
OUT.csv writes every error (layer,wbits,abits,error).  TORCH_THREADS=N runs
torch on N threads (torch.set_num_threads), else on torch's default.
"""
import os
import sys
import time

T0 = time.time()
import torch  # noqa: E402

sys.path.insert(0, __file__.rsplit("/", 3)[0] + "/tools")
from safetensors_io import load_file  # noqa: E402


def q_weights(w, b):
    m = w.abs().amax(dim=1, keepdim=True)
    m[m == 0] = 1
    s = 2 * m / (2 ** b - 1)
    z = 2 ** (b - 1)
    return s * (torch.clamp(torch.round(w / s) + z, 0, 2 ** b - 1) - z)


def q_acts(x, b):
    lo, hi = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
    s = torch.tensor((hi - lo) / (2 ** b - 1) if hi > lo else 1.0, dtype=torch.float32)
    z = torch.clamp(torch.round(-torch.tensor(lo, dtype=torch.float32) / s), 0, 2 ** b - 1)
    return s * (torch.clamp(torch.round(x / s) + z, 0, 2 ** b - 1) - z)


def main():
    if os.environ.get("TORCH_THREADS"):
        torch.set_num_threads(int(os.environ["TORCH_THREADS"]))
    w, _ = load_file(sys.argv[1])
    c, _ = load_file(sys.argv[2])
    wbits = [int(v) for v in sys.argv[3].split(",")]
    abits = [int(v) for v in sys.argv[4].split(",")]
    t1 = time.time()
    table = []
    with torch.no_grad():
        for name in [k[:-7] for k in w if k.endswith(".weight")]:
            W = torch.from_numpy(w[name + ".weight"]).float()
            X = torch.from_numpy(c[name + ".input"]).float()
            Y = X @ W.T
            for a in abits:
                Xq = X if a >= 16 else q_acts(X, a)
                for b in wbits:
                    Wq = W if b >= 16 else q_weights(W, b)
                    e = ((Xq @ Wq.T - Y) ** 2).sum(dtype=torch.float64).item() / len(X)
                    table.append((name, b, a, e))
    t2 = time.time()
    print(f"{t2 - T0:.3f} {t2 - t1:.3f}")
    if len(sys.argv) > 5:
        with open(sys.argv[5], "w") as f:
            f.write("layer,wbits,abits,error\n")
            f.writelines(f"{n},{b},{a},{e:.17g}\n" for n, b, a, e in table)


if __name__ == "__main__":
    main()
