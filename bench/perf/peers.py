"""bitplan's weight quantizers against the papers' own code, side by side on one layer.

    /usr/bin/python3 bench/perf/peers.py BITPLAN [--gptq DIR] [--squant DIR]
                     [--shapes OUTxIN,...] [--rows N] [--bits B,...] [--repeat K]

BITPLAN is a Release build's bitplan binary.  DIR is a checkout of the authors'
repository (read, imported, never copied here):
  --gptq    https://github.com/IST-DASLab/gptq      (gptq.py, quant.py)
  --squant  https://github.com/clevercool/SQuant    (quant_modules.py, CPU fallback)
  --erq     https://github.com/zysxmu/ERQ            (quant/, test_quant_expand.py)
For every layer shape (seeded random weights and correlated heavy-tailed
inputs, N rows) and weight width, both sides quantize the same weights with
the same settings:
  GPTQ:   per-channel asymmetric min-max grid, block 128, damp 0.01, no act-order
          (the authors' defaults in opt.py / llama.py);
  SQuant: per-channel asymmetric min-max grid, kernel + channel flipping
          (mode squant, the authors' default);
  ERQ:    the authors' flow for one QuantLinear with a bias (act quantizer
          init, Aqer `replace_W`, weight quantizer init, Wqer
          `replace_W_afterquant_vector_twopart`, coe 20000, inputs shaped as a
          ViT's tokens), at activation widths --abits (16: no activation
          quantizer); bitplan with its defaults for quantizer erq (ERQ's grids).
bitplan keeps float32 steps here (weights.scales: fp32), as the authors' code
does; its default fp16 steps would differ from theirs by design.
Reported per case: the share of weights whose dequantized values differ (beyond
1e-5 of the row's step: different codes), the output error ||W_hat X^T - W X^T||^2 / n
of each side, and seconds: the authors' function (their Hessian accumulation
included for GPTQ), bitplan's whole `bitplan quantize` process, and its
quantization stage alone (BITPLAN_PROFILE).  Times are the best of --repeat runs,
and each side runs at every thread count of --threads (torch.set_num_threads for
the authors' code; for bitplan BITPLAN_THREADS, with OPENBLAS_NUM_THREADS the
same or, above one thread, also 1: "2, BLAS 1" is bitplan's own two threads with
OpenBLAS on one, whose idle workers otherwise spin on the cores for the first
tenth of a second of every process), each side's best kept and named: peers at
their best, on the same work.  A second table gives each side's best at each
thread count alone, and their ratio there.
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


def qdq(x, s, z, bits):
    """s (clamp(rne(x / s) + z, 0, 2^b - 1) - z) in float32, as both codes apply it."""
    s, z = np.float32(s), np.float32(z)
    return s * (np.clip(np.rint(x / s) + z, 0, 2 ** bits - 1) - z)


_ERQ_ACT = {}


def erq_out_error(W, b, Wq, bq, X, abits, act, path):
    """||(Wq Xbar^T + bq) - (W X^T + b)||^2 / n with the side's own activation grid
    (act = (step, zero) for bitplan; ERQ's grid fitted by its own quantizer)."""
    if abits < 16:
        if act is None:
            key = (X.ctypes.data, abits)
            if key not in _ERQ_ACT:
                import importlib
                qz = importlib.import_module("erq_quant.quantizer")
                u = qz.UniformQuantizer(n_bits=abits, channel_wise=False, is_act=True)
                with torch.no_grad():
                    u(torch.from_numpy(X).reshape(-1, 64, X.shape[1]))
                _ERQ_ACT[key] = (float(u.delta), float(u.zero_point))
            act = _ERQ_ACT[key]
        Xb = qdq(X, act[0], act[1], abits)
    else:
        Xb = X
    Y = X.astype(np.float64) @ W.T.astype(np.float64) + b
    Yq = Xb.astype(np.float64) @ Wq.T.astype(np.float64) + bq
    return float(((Yq - Y) ** 2).sum() / len(X))


def out_error(W, Wq, X):
    X = X.astype(np.float64)
    D = X @ (Wq.astype(np.float64) - W.astype(np.float64)).T
    return float((D * D).sum() / len(X))


def bitplan_quantize(binary, work, W, X, quantizer, bits, repeat, bias=None, abits=16,
                     threads=None, blas=None):
    """bitplan quantize: (dequantized weights, row steps, bias, act grid, whole-process
    seconds, stage seconds)."""
    w = {"l.weight": W}
    if bias is not None:
        w["l.bias"] = bias
    save_file(os.path.join(work, "model.safetensors"), w)
    save_file(os.path.join(work, "calib.safetensors"), {"l.input": X})
    grid = ("" if quantizer == "erq" else
            ", granularity: per_channel, symmetric: false, range: minmax,"
            " gptq: {block_size: 128, damp: 0.01, act_order: false}")
    with open(os.path.join(work, "peer.yaml"), "w") as f:
        f.write("model: {weights: model.safetensors, calibration: calib.safetensors}\n"
                f"candidates: {{wbits: [{bits}], abits: [{abits}]}}\n"
                f"weights: {{quantizer: {quantizer}, scales: fp32{grid}}}\n"
                "output: {dir: out}\n")
    best_wall, best_stage = float("inf"), float("inf")
    env = dict(os.environ, BITPLAN_PROFILE="1")
    if threads:     # bitplan's own threads, OpenBLAS's (blas, else as many)
        env.update(OPENBLAS_NUM_THREADS=str(blas or threads), BITPLAN_THREADS=str(threads))
    for _ in range(repeat):
        t = time.time()
        r = subprocess.run([binary, "quantize", "peer.yaml", "--wbits", str(bits), "--abits",
                            str(abits), "-o", "q.safetensors", "-q"], cwd=work, env=env,
                           capture_output=True, text=True)
        wall = time.time() - t
        if r.returncode:
            raise SystemExit(f"bitplan quantize failed: {r.stderr}")
        stage = [float(line.split()[2]) for line in r.stderr.splitlines()
                 if line.startswith("profile:") and line.split()[1] == "weights"]
        best_wall, best_stage = min(best_wall, wall), min(best_stage, stage[0] if stage else wall)
    q, _ = load_file(os.path.join(work, "q.safetensors"))
    codes = q["l.qweight"].astype(np.float32)
    Wq = q["l.scales"] * (codes - q["l.zeros"])
    act = (float(q["l.act_scale"][0]), float(q["l.act_zero"][0])) if "l.act_scale" in q else None
    return (Wq.astype(np.float32), q["l.scales"][:, 0], q.get("l.bias"), act, best_wall,
            best_stage)


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


def erq_authors(path, W, bias, X, wbits, abits, coe=20000):
    """The authors' ERQ flow on one QuantLinear (their functions, taken from
    test_quant_expand.py's main, run on CPU): (weights on the grid, bias, seconds)."""
    import ast
    import importlib
    import math
    import pickle
    from copy import deepcopy
    pkg = types.ModuleType("erq_quant")           # quant/ without its __init__ (needs timm)
    pkg.__path__ = [os.path.join(path, "quant")]
    sys.modules["erq_quant"] = pkg
    qmod = importlib.import_module("erq_quant.quant_modules")
    src = open(os.path.join(path, "test_quant_expand.py")).read()
    main = next(n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == "main")
    wanted = {"replace_W", "replace_W_afterquant_vector_twopart"}
    funcs = [n for n in main.body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    torch.Tensor.cuda = lambda self, *a, **k: self     # their code is written for a GPU
    torch.cuda.empty_cache = lambda: None
    ns = {"torch": torch, "np": np, "math": math, "os": os, "pickle": pickle, "deepcopy": deepcopy,
          "QuantLinear": qmod.QuantLinear, "QuantConv2d": qmod.QuantConv2d,
          "args": types.SimpleNamespace(coe=coe, model="deit_small")}
    exec(compile(ast.Module(body=funcs, type_ignores=[]), "test_quant_expand.py", "exec"), ns)
    out, d = W.shape
    fc = qmod.QuantLinear(d, out, input_quant_params={"n_bits": min(abits, 8), "channel_wise": False},
                          weight_quant_params={"n_bits": wbits, "channel_wise": True})
    fc.weight.data = torch.from_numpy(W.copy())
    fc.bias.data = torch.from_numpy(bias.copy())
    if abits >= 16:
        fc.input_quantizer = torch.nn.Identity()
    model = torch.nn.Sequential()
    model.add_module("fc", fc)
    Xt = torch.from_numpy(X).reshape(-1, 64, d)     # (images, tokens, channels)
    with tempfile.TemporaryDirectory() as folder, torch.no_grad():
        with open(os.path.join(folder, "fcstore_input"), "wb") as f:
            pickle.dump([Xt], f)
        with open(os.path.join(folder, "fcstore_output"), "wb") as f:
            pickle.dump([fc(Xt)], f)
        t = time.time()
        fc.set_quant_state(True, False)
        fc(Xt)                                       # the activation quantizer's range
        _quiet(lambda: ns["replace_W"](model, folder))
        fc.set_quant_state(True, True)
        fc(Xt)                                       # the weight quantizer's ranges
        _quiet(lambda: ns["replace_W_afterquant_vector_twopart"](model, folder, ns["args"]))
        Wq = fc.weight_quantizer(fc.weight)
        elapsed = time.time() - t
    return Wq.numpy().astype(np.float32), fc.bias.data.numpy().copy(), elapsed


def differ(Wa, Wb, step):
    return float((np.abs(Wa - Wb) > 1e-5 * step[:, None]).mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bitplan")
    ap.add_argument("--gptq")
    ap.add_argument("--squant")
    ap.add_argument("--erq")
    ap.add_argument("--shapes", default="192x96,384x768,3072x768")
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--bits", default="3,4")
    ap.add_argument("--abits", default="16,8,4", help="activation widths for ERQ")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", default="1,2",
                    help="thread counts each side runs at; each side's best is kept")
    a = ap.parse_args()
    a.bitplan = os.path.abspath(a.bitplan)        # bitplan runs in a scratch directory
    threads = [int(t) for t in a.threads.split(",")]
    shapes = [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")]
    print(f"Rows N = {a.rows}; torch {torch.__version__}; each side at {a.threads} threads, its "
          f"best kept (threads in brackets); best of {a.repeat}.\n")
    print("| quantizer | layer | W | A | codes differing | output error bitplan / authors | "
          "authors s | bitplan process s | bitplan stage s | authors / process | authors / stage |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    equal = []
    with tempfile.TemporaryDirectory() as work:
        for (out, d) in shapes:
            W, X = make_layer(out, d, a.rows, out * 7 + d)
            bias = (np.random.RandomState(out + d).randn(out) * 0.1).astype(np.float32)
            for bits in [int(b) for b in a.bits.split(",")]:
                runs = [("gptq", a.gptq, 16), ("squant", a.squant, 16)]
                runs += [("erq", a.erq, int(ab)) for ab in a.abits.split(",")]
                for name, path, ab in runs:
                    if not path:
                        continue
                    best, Wa, ba, bt = float("inf"), None, None, 0
                    at = {}                     # threads -> (authors' best, bitplan's best)
                    for th in threads:
                        torch.set_num_threads(th)
                        for _ in range(a.repeat):
                            if name == "gptq":
                                Wa, t = gptq_authors(path, W, X, bits)
                            elif name == "squant":
                                Wa, t = squant_authors(path, W, bits)
                            else:
                                Wa, ba, t = erq_authors(path, W, bias, X, bits, ab)
                            if t < best:
                                best, bt = t, th
                            at[th] = (min(at.get(th, (t, 0))[0], t), float("inf"))
                    erq = name == "erq"
                    wall = stage = float("inf")
                    # at t threads: OpenBLAS at t too, or at 1 with bitplan's own t threads
                    # (OpenBLAS's idle workers spin for a while, from the process start)
                    for th, blas in [(t, b) for t in threads for b in sorted({t, 1})]:
                        Wb, step, bb, act, w_, s_ = bitplan_quantize(
                            a.bitplan, work, W, X, name, bits, a.repeat, bias if erq else None,
                            ab, th, blas)
                        label = f"{th}" if blas == th else f"{th}, BLAS {blas}"
                        at[th] = (at[th][0], min(at[th][1], w_))
                        if w_ < wall:
                            wall, wt = w_, label
                        if s_ < stage:
                            stage, st_ = s_, label
                    if erq:
                        ea = erq_out_error(W, bias, Wa, ba, X, ab, None, path)
                        eb = erq_out_error(W, bias, Wb, bb, X, ab, act, path)
                    else:
                        ea, eb = out_error(W, Wa, X), out_error(W, Wb, X)
                    print(f"| {name} | {out}×{d} | {bits} | {ab} | {100 * differ(Wa, Wb, step):.3f} % | "
                          f"{eb / ea:.4f} | {best:.3f} ({bt}) | {wall:.3f} ({wt}) | "
                          f"{stage:.3f} ({st_}) | "
                          f"{best / wall:.2f} | {best / stage:.2f} |", flush=True)
                    equal.append((name, out, d, bits, ab, at))
    print("\nAt equal thread counts (each side's best of --repeat at that count; bitplan's "
          "whole process):\n")
    print("| quantizer | layer | W | A | " + " | ".join(
        f"authors s ({t}) | bitplan s ({t}) | ratio ({t})" for t in threads) + " |")
    print("| --- | --- | ---: | ---: | " + " | ".join("---: | ---: | ---:" for _ in threads) + " |")
    for name, out, d, bits, ab, at in equal:
        print(f"| {name} | {out}×{d} | {bits} | {ab} | " + " | ".join(
            f"{at[t][0]:.3f} | {at[t][1]:.3f} | {at[t][0] / at[t][1]:.2f}" for t in threads) + " |")


if __name__ == "__main__":
    main()
