"""bitplan's weight quantizers against the papers' own code, side by side on one layer.

    /usr/bin/python3 bench/perf/peers.py BITPLAN [--gptq DIR] [--squant DIR]
                     [--shapes OUTxIN,...] [--rows N] [--bits B,...] [--repeat K]

BITPLAN is a Release build's bitplan binary.  DIR is a checkout of the authors'
repository (read, imported, never copied here):
  --gptq    https://github.com/IST-DASLab/gptq      (gptq.py, quant.py)
  --squant  https://github.com/clevercool/SQuant    (quant_modules.py, CPU fallback)
For every layer shape (seeded random weights and correlated heavy-tailed
inputs, N rows) and weight width, both sides quantize the same weights with
the same settings:
  GPTQ:   per-channel asymmetric min-max grid, block 128, damp 0.01, no act-order
          (the authors' defaults in opt.py / llama.py);
  SQuant: per-channel asymmetric min-max grid, kernel + channel flipping
          (mode squant, the authors' default).
Reported per case: the share of weights whose dequantized values differ (beyond
1e-5 of the row's step: different codes), the output error ||W_hat X^T - W X^T||^2 / n
of each side, and seconds: the authors' function (their Hessian accumulation
included for GPTQ), bitplan's whole `bitplan quantize` process, and its
quantization stage alone (BITPLAN_PROFILE).  Times are the best of --repeat runs.
Prints Markdown.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
import types

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
from safetensors_io import load_file, save_file  # noqa: E402


def make_layer(out, d, n, seed):
    rng = np.random.RandomState(seed)
    W = (rng.randn(out, d) / np.sqrt(d)).astype(np.float32)
    z = rng.randn(n, 32).astype(np.float32) @ rng.randn(32, d).astype(np.float32) * 0.3
    X = z + rng.standard_t(4, size=(n, d)).astype(np.float32) * 0.2
    return W, X.astype(np.float32)


def out_error(W, Wq, X):
    X = X.astype(np.float64)
    D = X @ (Wq.astype(np.float64) - W.astype(np.float64)).T
    return float((D * D).sum() / len(X))


def bitplan_quantize(binary, work, W, X, quantizer, bits, repeat):
    """bitplan quantize: (dequantized weights, whole-process seconds, stage seconds)."""
    save_file(os.path.join(work, "model.safetensors"), {"l.weight": W})
    save_file(os.path.join(work, "calib.safetensors"), {"l.input": X})
    with open(os.path.join(work, "peer.yaml"), "w") as f:
        f.write("model: {weights: model.safetensors, calibration: calib.safetensors}\n"
                f"candidates: {{wbits: [{bits}], abits: [16]}}\n"
                f"weights: {{quantizer: {quantizer}, granularity: per_channel, symmetric: false,"
                " range: minmax, gptq: {block_size: 128, damp: 0.01, act_order: false}}\n"
                "output: {dir: out}\n")
    best_wall, best_stage = float("inf"), float("inf")
    env = dict(os.environ, BITPLAN_PROFILE="1")
    for _ in range(repeat):
        t = time.time()
        r = subprocess.run([binary, "quantize", "peer.yaml", "--wbits", str(bits), "-o", "q.safetensors",
                            "-q"], cwd=work, env=env, capture_output=True, text=True)
        wall = time.time() - t
        if r.returncode:
            raise SystemExit(f"bitplan quantize failed: {r.stderr}")
        stage = [float(line.split()[2]) for line in r.stderr.splitlines()
                 if line.startswith("profile:") and line.split()[1] == "weights"]
        best_wall, best_stage = min(best_wall, wall), min(best_stage, stage[0] if stage else wall)
    q, _ = load_file(os.path.join(work, "q.safetensors"))
    codes = q["l.qweight"].astype(np.float32)
    Wq = q["l.scales"] * (codes - q["l.zeros"])
    return Wq.astype(np.float32), q["l.scales"][:, 0], best_wall, best_stage


def import_from(path, *names):
    sys.path.insert(0, path)
    try:
        return [__import__(n) for n in names]
    finally:
        sys.path.pop(0)


def gptq_authors(path, W, X, bits):
    """The authors' GPTQ class on an nn.Linear, H accumulated as in their scripts."""
    if "transformers" not in sys.modules:          # gptq.py only needs transformers.Conv1D
        stub = types.ModuleType("transformers")
        stub.Conv1D = type("Conv1D", (torch.nn.Module,), {})
        sys.modules["transformers"] = stub
    gptq, quant = import_from(path, "gptq", "quant")
    gptq.DEBUG = False
    torch.cuda.synchronize = lambda *a, **k: None   # fasterquant syncs a GPU for its timer
    layer = torch.nn.Linear(W.shape[1], W.shape[0], bias=False)
    layer.weight.data = torch.from_numpy(W.copy())
    t = time.time()
    g = gptq.GPTQ(layer)
    g.quantizer = quant.Quantizer()
    g.quantizer.configure(bits, perchannel=True, sym=False, mse=False)
    Xt = torch.from_numpy(X)
    for i in range(0, len(X), 2048):             # batches of one 2048-token sequence
        g.add_batch(Xt[i:i + 2048].unsqueeze(0), None)
    _quiet(lambda: g.fasterquant(blocksize=128, percdamp=0.01, groupsize=-1, actorder=False))
    return layer.weight.data.numpy().copy(), time.time() - t


def squant_authors(path, W, bits):
    """The authors' SQuant quantizer (their PyTorch fallback without the CUDA kernel)."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (qm,) = import_from(path, "quant_modules")
    args = types.SimpleNamespace(percent=100, sigma=0, constraint_radius=1, packed_element=1)
    q = qm.TensorQuantizer(mode="squant", bit=bits, is_signed=True, is_enable=True, args=args)
    t = time.time()
    Wq = q.tensor_forward(torch.from_numpy(W.copy()), 0)
    return Wq.numpy().astype(np.float32), time.time() - t


def _quiet(f):
    """Run f with stdout silenced (fasterquant prints its time and error)."""
    saved = sys.stdout
    sys.stdout = open(os.devnull, "w")
    try:
        return f()
    finally:
        sys.stdout.close()
        sys.stdout = saved


def differ(Wa, Wb, step):
    return float((np.abs(Wa - Wb) > 1e-5 * step[:, None]).mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bitplan")
    ap.add_argument("--gptq")
    ap.add_argument("--squant")
    ap.add_argument("--shapes", default="192x96,384x768,3072x768")
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--bits", default="3,4")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    shapes = [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")]
    print(f"Rows N = {a.rows}; torch {torch.__version__} on {torch.get_num_threads()} threads; "
          f"best of {a.repeat}.\n")
    print("| quantizer | layer | W | codes differing | output error bitplan / authors | authors s "
          "| bitplan process s | bitplan stage s | authors / process | authors / stage |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as work:
        for (out, d) in shapes:
            W, X = make_layer(out, d, a.rows, out * 7 + d)
            for bits in [int(b) for b in a.bits.split(",")]:
                for name, path in (("gptq", a.gptq), ("squant", a.squant)):
                    if not path:
                        continue
                    best, Wa = float("inf"), None
                    for _ in range(a.repeat):
                        if name == "gptq":
                            Wa, t = gptq_authors(path, W, X, bits)
                        else:
                            Wa, t = squant_authors(path, W, bits)
                        best = min(best, t)
                    Wb, step, wall, stage = bitplan_quantize(a.bitplan, work, W, X, name, bits, a.repeat)
                    ea, eb = out_error(W, Wa, X), out_error(W, Wb, X)
                    print(f"| {name} | {out}×{d} | {bits} | {100 * differ(Wa, Wb, step):.3f} % | "
                          f"{eb / ea:.4f} | {best:.3f} | {wall:.3f} | {stage:.3f} | "
                          f"{best / wall:.2f} | {best / stage:.2f} |", flush=True)


if __name__ == "__main__":
    main()
