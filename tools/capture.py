"""Capture a PyTorch model's layers and calibration inputs for bitplan.

    /usr/bin/python3 tools/capture.py MODULE:FUNCTION --out DIR
        [--rows 2048] [--seed 0] [--batches 0] [--grad2] [--half]

MODULE:FUNCTION names a function (importable from the current directory or
PYTHONPATH) returning (model, loader) or (model, loader, loss_fn):
  - model: a torch.nn.Module;
  - loader: an iterable of batches, each a tensor of inputs or a tuple
    (inputs, targets, ...) whose first item is fed to the model;
  - loss_fn(outputs, batch) -> scalar loss (only for --grad2; default:
    cross entropy against batch[1]).

Writes DIR/weights.safetensors (NAME.weight and NAME.bias of every
nn.Linear and nn.Conv2d, F32; metadata NAME.groups for grouped convs) and
DIR/calib.safetensors: NAME.input, the inputs each layer saw as an
N x in matrix (conv inputs unfolded to patches with the layer's kernel,
stride, padding and dilation, columns in (channel, row, column) order;
linear inputs flattened to tokens), rows subsampled to --rows with a fixed
seed; with --grad2 also NAME.grad2, the per-output-channel mean squared
gradient of the loss with respect to the layer's output (for the fisher
metric).  Only Debian's python3-torch and python3-numpy are needed.
"""
import argparse
import importlib
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import save_file  # noqa: E402


def load_spec(spec):
    if ":" not in spec:
        raise SystemExit(f"capture: expected MODULE:FUNCTION, got '{spec}'")
    mod, fn = spec.split(":", 1)
    sys.path.insert(0, os.getcwd())
    try:
        f = getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        raise SystemExit(f"capture: cannot load {spec}: {e}")
    got = f()
    if not isinstance(got, tuple) or len(got) not in (2, 3):
        raise SystemExit(f"capture: {spec} must return (model, loader) or (model, loader, loss_fn)")
    return got if len(got) == 3 else (got[0], got[1], None)


def layer_rows(mod, x):
    """The layer's input as rows: unfolded patches for convs, tokens for linears."""
    if isinstance(mod, nn.Conv2d):
        if mod.padding_mode != "zeros":
            raise SystemExit(f"capture: conv padding_mode '{mod.padding_mode}' is not supported")
        cols = F.unfold(x, mod.kernel_size, dilation=mod.dilation, padding=mod.padding,
                        stride=mod.stride)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return x.reshape(-1, x.shape[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("spec")
    ap.add_argument("--out", required=True)
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batches", type=int, default=0, help="stop after this many (0: all)")
    ap.add_argument("--grad2", action="store_true")
    ap.add_argument("--half", action="store_true", help="store inputs as F16")
    args = ap.parse_args()
    model, loader, loss_fn = load_spec(args.spec)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    if not layers:
        raise SystemExit("capture: the model has no nn.Linear or nn.Conv2d layers")
    rng = np.random.RandomState(args.seed)
    rows = {n: [] for n in layers}
    grad2 = {n: [0.0, 0] for n in layers}
    hooks = []
    for name, mod in layers.items():
        def fwd(m, inp, out, name=name):
            rows[name].append(layer_rows(m, inp[0].detach()).float().numpy())

        def bwd(m, gin, gout, name=name):
            g = gout[0].detach().float()
            axes = [d for d in range(g.dim()) if d != (1 if isinstance(m, nn.Conv2d) else g.dim() - 1)]
            grad2[name][0] = grad2[name][0] + (g ** 2).sum(dim=axes).numpy()
            grad2[name][1] += g.numel() // g.shape[1 if isinstance(m, nn.Conv2d) else -1]
        hooks.append(mod.register_forward_hook(fwd))
        if args.grad2:
            hooks.append(mod.register_full_backward_hook(bwd))
    model.eval()
    for i, batch in enumerate(loader):
        if args.batches and i >= args.batches:
            break
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if args.grad2:
            model.zero_grad()
            out = model(x)
            loss = loss_fn(out, batch) if loss_fn else F.cross_entropy(out, batch[1])
            loss.backward()
        else:
            with torch.no_grad():
                model(x)
        for n in rows:                      # keep memory bounded: subsample as we go
            a = np.concatenate(rows[n]) if len(rows[n]) > 1 else rows[n][0]
            if len(a) > 4 * args.rows:
                a = a[np.sort(rng.permutation(len(a))[:4 * args.rows])]
            rows[n] = [a]
    for h in hooks:
        h.remove()
    weights, meta, calib = {}, {"format": "pt", "source": args.spec}, {}
    for name, mod in layers.items():
        w = mod.weight.detach().float().numpy()
        weights[name + ".weight"] = w
        if mod.bias is not None:
            weights[name + ".bias"] = mod.bias.detach().float().numpy()
        if isinstance(mod, nn.Conv2d) and mod.groups > 1:
            meta[name + ".groups"] = str(mod.groups)
        if not rows[name]:
            continue
        a = rows[name][0]
        if len(a) > args.rows:
            a = a[np.sort(rng.permutation(len(a))[:args.rows])]
        calib[name + ".input"] = a.astype(np.float16 if args.half else np.float32)
        if args.grad2 and grad2[name][1]:
            calib[name + ".grad2"] = (np.asarray(grad2[name][0]) / grad2[name][1]).astype(np.float32)
    os.makedirs(args.out, exist_ok=True)
    save_file(os.path.join(args.out, "weights.safetensors"), weights, meta)
    save_file(os.path.join(args.out, "calib.safetensors"), calib,
              {"rows": str(args.rows), "seed": str(args.seed)})
    print(f"capture: {len(layers)} layers -> {args.out}/weights.safetensors, calib.safetensors")


if __name__ == "__main__":
    main()
