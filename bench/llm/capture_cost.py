"""What tools/capture.py --stats adds to the model's own forward, per batch.

    /usr/bin/python3 bench/llm/capture_cost.py [--batches 4] [--grids 0,1]

The model and batches are bench/llm/llama.py's (LLAMA_* in the environment;
defaults here: 1 block, 1,024-token batches).  Every batch is run through the
model alone (torch.no_grad), then again with the statistics accumulated from
forward hooks exactly as capture.py's second pass does (tools/capture_stats.py
SetStats.add on each distinct input tensor), in float64 products ("double",
the default) and in float32 chunk products summed in float64 ("single"), with
0 and with 1 activation grid per input (8-bit per-tensor, as a config with
abits [8, 16] asks for).  The first batch of each run pays the allocation of
the sums (first touch of every d x d matrix) and is reported apart; the
steady state is the median of the later batches, the rate that the
projection to many tokens scales.  Also printed: the flops of the forward and
of the sums per batch, the floor of the overhead their ratio sets at the
machine's sgemm speed (dgemm's half of it for float64), and how far the
single-precision sums are from the float64 ones.
"""
import argparse
import os
import statistics
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
sys.path.insert(0, os.path.join(here, "..", "..", "tools"))
os.environ.setdefault("LLAMA_BLOCKS", "1")
os.environ.setdefault("LLAMA_SEQ", "1024")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import capture_stats as cs  # noqa: E402
import llama  # noqa: E402


def linears(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def grids_for(model, batch, layers):
    """An 8-bit per-tensor min-max grid per distinct input, from the first batch."""
    seen, grids = {}, {}

    def hook(name):
        def f(m, inp, out):
            x = inp[0]
            if id(x) not in seen:
                seen[id(x)] = name
                lo, hi = float(x.min()), float(x.max())
                lo, hi = min(lo, 0.0), max(hi, 0.0)
                s = (hi - lo) / 255.0 or 1.0
                grids[name] = [{"kind": "uniform", "bits": 8, "scale": [s],
                                "zero": [float(round(-lo / s))]}]
        return f
    hs = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    with torch.no_grad():
        model(batch)
    for h in hs:
        h.remove()
    return grids


def run(model, batches, layers, precision, grids):
    """Seconds per batch with the sums accumulated; the sums' flops per batch."""
    stats, share, flops = {}, cs.Sharing(), [0.0]

    def hook(name):
        def f(m, inp, out):
            if share.see(name, m, inp[0]):
                r = inp[0].detach().reshape(-1, inp[0].shape[-1])
                if name not in stats:
                    stats[name] = cs.SetStats(r.shape[1], 1, grids.get(name, []), precision)
                k = len(stats[name].grids)
                n, d = r.shape
                flops[0] += n * d * d * (1 + 3 * k)       # syrk X, per grid syrk + gemm
                stats[name].add(r)
        return f
    hs = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    times = []
    try:
        with torch.no_grad():
            for b in batches:
                t = time.time()
                model(b)
                share.end_batch()
                times.append(time.time() - t)
    finally:
        for h in hs:
            h.remove()
    t = time.time()
    for s in stats.values():
        s.finish()
    return times, time.time() - t, flops[0] / len(batches), stats


def largest_difference(a, b):
    """Largest |A - B| / sqrt(diag_i diag_j) over every sum of every set (the
    float64 run's diagonals)."""
    worst = 0.0
    for name, sa in a.items():
        sb = b[name]
        dx = np.sqrt(np.diag(sa.xtx[0]))
        pairs = [(sa.xtx[0], sb.xtx[0], dx, dx)]
        for (qa, xa, _), (qb, xb, _) in zip(sa.q, sb.q):
            dq = np.sqrt(np.diag(qa[0]))
            pairs += [(qa[0], qb[0], dq, dq), (xa[0], xb[0], dq, dx)]
        for A, B, u, v in pairs:
            for i in range(0, A.shape[0], 512):
                s = np.outer(u[i:i + 512], v) + 1e-300
                worst = max(worst, float(np.max(np.abs(A[i:i + 512] - B[i:i + 512]) / s)))
    return worst


def sgemm_peak():
    a = torch.randn(2048, 2048)
    torch.mm(a, a)
    t = time.time()
    for _ in range(5):
        torch.mm(a, a)
    return 5 * 2 * 2048 ** 3 / (time.time() - t) / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--grids", default="0,1", help="activation grids per input to measure")
    a = ap.parse_args()
    os.environ["LLAMA_SEQS"] = str(a.batches)
    model, loader = llama.build()
    batches = list(loader)
    layers = linears(model)
    params = sum(m.weight.numel() for m in layers.values())
    tokens = batches[0].numel()
    fwd_flops = 2.0 * params * tokens
    with torch.no_grad():
        model(batches[0])                      # warm up
        fwd = []
        for b in batches:
            t = time.time()
            model(b)
            fwd.append(time.time() - t)
    f = statistics.median(fwd)
    peak = sgemm_peak()
    print(f"model: {len(layers)} linear layers, {params / 1e6:.0f} M weights; {len(batches)} "
          f"batches of {tokens} tokens; torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads; sgemm {peak:.0f} GFLOP/s (torch, 2048^3)")
    print(f"forward alone: {f:.2f} s per batch (median), {fwd_flops / 1e9:.0f} GFLOP of "
          f"products, {fwd_flops / f / 1e9:.0f} GFLOP/s\n")
    print("| products | grids per input | first batch s | later batches s (median) | "
          "sums GFLOP per batch | finish s | added to the forward | floor at sgemm speed |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    diffs = []
    for k in [int(g) for g in a.grids.split(",")]:
        grids = grids_for(model, batches[0], layers) if k else {}
        kept = {}
        for precision in ("double", "single"):
            times, fin, sflops, kept[precision] = run(model, batches, layers, precision, grids)
            later = statistics.median(times[1:]) if len(times) > 1 else times[0]
            print(f"| {precision} | {k} | {times[0]:.2f} | {later:.2f} | {sflops / 1e9:.0f} | "
                  f"{fin:.2f} | {100 * (later - f) / f:.0f} % | "
                  f"{100 * sflops / fwd_flops * (1.0 if precision == 'single' else 2.0):.0f} % |",
                  flush=True)
        diffs.append((k, largest_difference(kept["double"], kept["single"])))
        kept = None
    print()
    for k, d in diffs:
        print(f"{k} grid(s): largest difference between the single and double sums, relative to "
              f"sqrt(diag_i diag_j): {d:.1e}")


if __name__ == "__main__":
    main()
