"""Capture a PyTorch model's layers, calibration inputs and output Fisher for bitplan.

    /usr/bin/python3 tools/capture.py MODULE:FUNCTION --out DIR
        [--rows 2048] [--seed 0] [--batches 0] [--half]
        [--fisher [K]] [--fisher-full 4096] [--grad2] [--draws 8]
        [--labels] [--estimator sampled|rademacher] [--class-dim -1] [-q]
        [--stats [--config CONFIG] [--bitplan BIN] [--range-rows 2048]
         [--range-batches 0]] [--include GLOB ...]

MODULE:FUNCTION names a function (importable from the current directory or
PYTHONPATH) returning (model, loader) or (model, loader, loss_fn):
  - model: a torch.nn.Module; its output (or the first item of a tuple) is
    the logits, classes on --class-dim (default: the last axis), one softmax
    per position for sequence outputs (language models, CTC);
  - loader: an iterable of batches, each a tensor of inputs or a tuple
    (inputs, targets, ...) whose first item is fed to the model;
  - loss_fn(outputs, batch) -> the loss summed over the batch (only with
    --labels; default: cross entropy against batch[1], summed).

Writes DIR/weights.safetensors (NAME.weight and NAME.bias of every nn.Linear
and nn.Conv2d, F32; metadata NAME.groups for grouped convs) and
DIR/calib.safetensors:
  NAME.input    n x in: the inputs each layer saw (conv inputs unfolded to
                patches with the layer's kernel, stride, padding and dilation,
                columns in (channel, row, column) order; linear inputs
                flattened to tokens), rows subsampled to --rows with a seed;
with --fisher [K] (or --grad2, the diagonal only) the output Fisher of every
layer, F = E_sample[sum over the sample's output positions of g g^T] with
g = dloss/dy at the layer's output, accumulated in float64 over every
calibration batch (no gradient rows are kept):
  NAME.grad2    [out]: diag(F), for metric fisher;
  NAME.fisher   [out, out] ([groups, og, og] for grouped convs): F in full
                when a group has at most --fisher-full outputs, for metric kfac;
  NAME.fisher_u [K, out], NAME.fisher_s [K], NAME.fisher_d [out]: wider
                outputs keep F's top K eigenpairs (a one-pass Nystrom sketch,
                eigenvectors as rows) and the diagonal they leave out, so that
                F ~= U^T diag(s) U + P diag(d) P; K defaults to 64;
  NAME.fisher_n [out]: when F annihilates the all-ones direction (logits
                before a softmax: a common offset changes nothing), that unit
                direction, and P = I - n n^T keeps the remainder from charging
                it (P = I otherwise);
  metadata NAME.fisher_rse: the relative standard error of tr F over the
                calibration samples (above ~0.1, plans may move with more data).
Labels are drawn from the model's own predictive distribution (the true
Fisher; no labels needed), --draws per input; `rademacher` draws the
output-gradient with the same covariance diag(p) - p p^T from random signs
instead of labels (lower variance for confident models); --labels uses the
batch's own labels through loss_fn (the empirical Fisher).
With --stats, DIR/stats.safetensors instead of DIR/calib.safetensors: the
sums bitplan needs (X^T X, column sums and, per activation grid of CONFIG,
Xbar^T Xbar and Xbar^T X), in float64 over every token of every batch, one
set per distinct input tensor (tools/capture_stats.py has the layout); the
activation grids are fitted by BIN (default: bitplan on PATH) on up to
--range-rows rows per input from the first --range-batches batches (0:
all).  CONFIG is the config that will plan with the file (its
model.weights is DIR/weights.safetensors); without it only float
activations (16 bits) can be measured.  The Fisher options add the output
Fisher to the same file.  --include keeps only the layers matching a glob
(capture a large model in several runs).
Only Debian's python3-torch and python3-numpy are needed.
"""
import argparse
import fnmatch
import importlib
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from progress import Progress  # noqa: E402
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


def nystrom(Y, omega, k):
    """Top-k eigenpairs of a PSD F from one sketch Y = F omega (Tropp et al.
    2017, stable single-pass Nystrom): (eigenvectors as columns, eigenvalues)."""
    nu = np.sqrt(Y.shape[0]) * np.finfo(np.float64).eps * max(np.linalg.norm(Y), 1e-300)
    Yn = Y + nu * omega
    core = omega.T @ Yn
    core = (core + core.T) / 2
    try:
        C = np.linalg.cholesky(core)
        B = np.linalg.solve(C, Yn.T).T
        U, S, _ = np.linalg.svd(B, full_matrices=False)
        lam = np.maximum(S ** 2 - nu, 0.0)
    except np.linalg.LinAlgError:              # rank-deficient sketch: eigen-solve the core
        w, V = np.linalg.eigh(core)
        keep = w > w.max() * 1e-12
        B = Yn @ (V[:, keep] / np.sqrt(w[keep]))
        U, S, _ = np.linalg.svd(B, full_matrices=False)
        lam = np.maximum(S ** 2 - nu, 0.0)
    return U[:, :k], lam[:k]


class FisherStats:
    """One layer's output Fisher, accumulated in float64 from output gradients."""

    def __init__(self, mod, diag_only, full_limit, rank, seed):
        conv = isinstance(mod, nn.Conv2d)
        self.out = mod.out_channels if conv else mod.out_features
        self.conv = conv
        self.groups = mod.groups if conv else 1
        self.og = self.out // self.groups
        self.dense = not diag_only and self.og <= full_limit
        self.rank = 0 if diag_only or self.dense else min(rank, self.og)
        self.diag = np.zeros(self.out)
        if self.dense:
            self.F = torch.zeros(self.groups, self.og, self.og, dtype=torch.float64)
        if self.rank:
            # the sketch's first direction is the all-ones vector: F ones is then
            # known exactly, and a Fisher that ignores a common offset (logits
            # before a softmax) is recognised and stored with that null direction
            width = min(self.og, 2 * self.rank + 16)
            rng = np.random.RandomState(seed)
            omega = rng.standard_normal((self.groups, self.og, width))
            omega[:, :, 0] = 1.0 / np.sqrt(self.og)
            self.omega = torch.from_numpy(omega)
            self.Y = torch.zeros(self.groups, self.og, width, dtype=torch.float64)
        self.samples = self.units = 0
        self.t_sum = self.t_sq = 0.0
        self.batch_t = None

    def add(self, g, units):
        """One draw's gradient at the layer's output; units = samples in the batch."""
        g = g.detach().double()
        if self.conv:
            g = g.movedim(1, -1)                       # N x H x W x C
        b = g.shape[0] if g.dim() > 1 and g.shape[0] == units else 1
        rows = g.reshape(b, -1, self.out)
        t = (rows ** 2).sum(dim=(1, 2))               # per-sample tr of g g^T
        self.batch_t = t if self.batch_t is None else self.batch_t + t
        r = rows.reshape(-1, self.groups, self.og)
        self.diag += (r ** 2).sum(dim=0).reshape(-1).numpy()
        if self.dense:
            self.F += torch.einsum("ngi,ngj->gij", r, r)
        if self.rank:
            self.Y += torch.einsum("ngi,ngk->gik", r, torch.einsum("ngj,gjk->ngk", r, self.omega))

    def end_batch(self, samples, draws):
        """Close one batch: each unit's trace per sample, averaged over the draws
        (units are the samples, or the whole batch when the gradient has no
        batch axis)."""
        if self.batch_t is None:
            return
        t = self.batch_t.numpy() / draws
        if len(t) != samples:
            t = np.array([t.sum() / samples])
        self.t_sum += t.sum()
        self.t_sq += (t ** 2).sum()
        self.units += len(t)
        self.samples += samples
        self.batch_t = None

    def tensors(self, name, draws):
        """The calibration-file tensors and the trace's relative standard error."""
        n = self.samples * draws
        out = {name + ".grad2": (self.diag / n).astype(np.float32)}
        if self.dense:
            Fm = (self.F / n).numpy()
            out[name + ".fisher"] = (Fm[0] if self.groups == 1 else Fm).astype(np.float32)
        if self.rank:
            U, S, D, null = [], [], [], True
            diag = (self.diag / n).reshape(self.groups, self.og)
            ones = np.full(self.og, 1.0 / np.sqrt(self.og))
            for j in range(self.groups):
                Y = (self.Y[j] / n).numpy()
                null &= np.linalg.norm(Y[:, 0]) <= 1e-5 * np.linalg.norm(Y, axis=0).max()
                u, lam = nystrom(Y, self.omega[j].numpy(), self.rank)
                U.append(u.T)
                S.append(lam)
                D.append(np.maximum(diag[j] - (u ** 2) @ lam, 0.0))
            U, S, D = np.stack(U), np.stack(S), np.stack(D)
            if null:                      # eigenvectors orthogonal to the null direction
                U -= (U @ ones)[..., None] * ones
            if self.groups == 1:
                U, S, D = U[0], S[0], D[0]
            out[name + ".fisher_u"] = U.astype(np.float32)
            out[name + ".fisher_s"] = S.astype(np.float32)
            out[name + ".fisher_d"] = D.astype(np.float32)
            if null:
                out[name + ".fisher_n"] = np.broadcast_to(ones, D.shape).astype(np.float32)
        u = max(self.units, 1)
        m = self.t_sum / u
        var = max(self.t_sq / u - m * m, 0.0) * u / max(u - 1, 1)
        rse = float(np.sqrt(var / u) / m) if m > 0 else float("nan")
        return out, rse


class Tap(torch.autograd.Function):
    """Identity on a layer's output whose backward hands the output's gradient
    to a callback.  It returns a copy, so that an in-place op after the layer
    (ReLU(inplace=True)) changes the copy and the gradient seen here is the
    one at the layer's own output."""

    @staticmethod
    def forward(ctx, x, callback):
        ctx.callback = callback
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        ctx.callback(g)
        return g, None


def logits_of(out, class_dim):
    x = out[0] if isinstance(out, (tuple, list)) else out
    if not torch.is_tensor(x):
        raise SystemExit("capture: the model's output must be a tensor of logits (or a tuple "
                         "whose first item is one)")
    return x.movedim(class_dim, -1)


def draw_loss(logits, estimator, gen):
    """A scalar whose gradient at the logits has covariance diag(p) - p p^T per
    position: a label drawn from p (sampled) or random signs (rademacher)."""
    c = logits.shape[-1]
    logp = F.log_softmax(logits.float(), dim=-1).reshape(-1, c)
    p = logp.detach().exp()
    if estimator == "sampled":
        y = torch.multinomial(p, 1, generator=gen)
        return -logp.gather(1, y).sum()
    z = torch.randint(0, 2, p.shape, generator=gen, dtype=torch.float32) * 2 - 1
    s = p.sqrt()
    v = s * z - p * (s * z).sum(dim=1, keepdim=True)
    return (logits.reshape(-1, c).float() * v).sum()


def capture(model, loader, loss_fn=None, rows=2048, seed=0, batches=0, half=False, fisher=None,
            fisher_full=4096, grad2=False, draws=8, labels=False, estimator="sampled",
            class_dim=-1, quiet=True):
    """The calibration tensors of every nn.Linear / nn.Conv2d of model over the
    loader's batches (see the module's documentation for the options):
    (calib tensors, calib metadata, {layer: rse of tr F}, samples)."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    if not layers:
        raise SystemExit("capture: the model has no nn.Linear or nn.Conv2d layers")
    grads = fisher is not None or grad2
    draws = 1 if labels else draws
    rng = np.random.RandomState(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    kept = {n: [] for n in layers}
    stats = {n: FisherStats(m, fisher is None, fisher_full, fisher or 64, seed + 7 * i)
             for i, (n, m) in enumerate(layers.items())} if grads else {}
    units = [0]                               # samples in the batch being captured
    hooks = []
    for name, mod in layers.items():
        def fwd(m, inp, out, name=name):
            kept[name].append(layer_rows(m, inp[0].detach()).float().numpy())
            if grads and out.requires_grad:
                return Tap.apply(out, lambda g, name=name: stats[name].add(g, units[0]))
            return None
        hooks.append(mod.register_forward_hook(fwd))
    weights = [m.weight for m in layers.values()]
    if grads:
        for w in weights:
            w.requires_grad_(True)
    model.eval()
    try:
        total = len(loader) if not batches else min(batches, len(loader))
    except TypeError:
        total = batches or 0
    prog = Progress("capture: batch", total or 1, quiet, "batches")
    for i, batch in enumerate(loader):
        if batches and i >= batches:
            break
        prog(i)
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        units[0] = x.shape[0]
        if not grads:
            with torch.no_grad():
                model(x)
        else:
            out = model(x)
            for d in range(draws):
                if labels:
                    if loss_fn:
                        loss = loss_fn(out, batch)
                    else:
                        lg = logits_of(out, class_dim)
                        loss = F.cross_entropy(lg.reshape(-1, lg.shape[-1]), batch[1].reshape(-1),
                                               reduction="sum")
                else:
                    loss = draw_loss(logits_of(out, class_dim), estimator, gen)
                # the layers' taps see their output gradients on the way
                torch.autograd.grad(loss, weights, retain_graph=d + 1 < draws, allow_unused=True)
            for s in stats.values():
                s.end_batch(x.shape[0], draws)
        for n in kept:                      # keep memory bounded: subsample as we go
            if not kept[n]:
                continue
            a = np.concatenate(kept[n]) if len(kept[n]) > 1 else kept[n][0]
            if len(a) > 4 * rows:
                a = a[np.sort(rng.permutation(len(a))[:4 * rows])]
            kept[n] = [a]
    prog.close()
    for h in hooks:
        h.remove()
    calib = {}
    cmeta = {"rows": str(rows), "seed": str(seed)}
    if grads:
        cmeta.update(fisher="labels" if labels else f"{estimator}, {draws} draws per input",
                     fisher_scale="per sample: sum over its output positions")
    rse = {}
    for name in layers:
        if not kept[name]:
            continue
        a = kept[name][0]
        if len(a) > rows:
            a = a[np.sort(rng.permutation(len(a))[:rows])]
        calib[name + ".input"] = a.astype(np.float16 if half else np.float32)
        if grads and stats[name].samples:
            t, rse[name] = stats[name].tensors(name, draws)
            calib.update(t)
            cmeta[name + ".fisher_rse"] = f"{rse[name]:.4g}"
    samples = next(iter(stats.values())).samples if stats else 0
    return calib, cmeta, rse, samples


def model_weights(model, source):
    """NAME.weight / NAME.bias of every nn.Linear and nn.Conv2d (F32), with
    NAME.groups metadata for grouped convs."""
    weights, meta = {}, {"format": "pt", "source": source}
    for name, mod in model.named_modules():
        if not isinstance(mod, (nn.Linear, nn.Conv2d)):
            continue
        weights[name + ".weight"] = mod.weight.detach().float().numpy()
        if mod.bias is not None:
            weights[name + ".bias"] = mod.bias.detach().float().numpy()
        if isinstance(mod, nn.Conv2d) and mod.groups > 1:
            meta[name + ".groups"] = str(mod.groups)
    return weights, meta


def main_stats(args, model, loader, loss_fn, keep):
    """capture --stats: weights, then statistics (and the output Fisher)."""
    from capture_stats import capture_stats
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))
              and (keep is None or n in keep)}
    if not layers:
        raise SystemExit("capture: the model has no nn.Linear or nn.Conv2d layers")
    os.makedirs(args.out, exist_ok=True)
    weights, meta = model_weights(model, args.spec)
    if keep is not None:
        weights = {k: v for k, v in weights.items() if k.rsplit(".", 1)[0] in keep}
    wpath = os.path.join(args.out, "weights.safetensors")
    save_file(wpath, weights, meta)
    tensors, smeta = capture_stats(model, loader, layers, layer_rows, args.out, wpath,
                                   config=args.config, bitplan=args.bitplan,
                                   range_rows=args.range_rows, range_batches=args.range_batches,
                                   batches=args.batches, seed=args.seed, quiet=args.quiet)
    rse = {}
    if args.fisher is not None or args.grad2:
        calib, cmeta, rse, _ = capture(
            model, loader, loss_fn, rows=1, seed=args.seed, batches=args.batches,
            fisher=args.fisher, fisher_full=args.fisher_full, grad2=args.grad2,
            draws=args.draws, labels=args.labels, estimator=args.estimator,
            class_dim=args.class_dim, quiet=args.quiet)
        for k, v in calib.items():
            if not k.endswith(".input") and (keep is None or k.rsplit(".", 1)[0] in keep):
                tensors[k] = v
        smeta.update({k: v for k, v in cmeta.items() if "fisher" in k})
    save_file(os.path.join(args.out, "stats.safetensors"), tensors, smeta)
    if not args.quiet:
        sets = sum(k.endswith(".xtx") for k in tensors)
        n = max((int(v[0]) for k, v in tensors.items() if k.endswith(".count")), default=0)
        print(f"capture: {len(layers)} layers, {sets} input statistics over {n} rows -> "
              f"{args.out}/weights.safetensors, stats.safetensors")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("spec")
    ap.add_argument("--out", required=True)
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batches", type=int, default=0, help="stop after this many (0: all)")
    ap.add_argument("--half", action="store_true", help="store inputs as F16")
    ap.add_argument("--fisher", type=int, nargs="?", const=64, default=None, metavar="K",
                    help="capture the output Fisher (rank K beyond --fisher-full outputs)")
    ap.add_argument("--fisher-full", type=int, default=4096, metavar="N",
                    help="store F in full up to N outputs per group")
    ap.add_argument("--grad2", action="store_true", help="only the Fisher's diagonal")
    ap.add_argument("--draws", type=int, default=8, help="label draws per input")
    ap.add_argument("--labels", action="store_true",
                    help="use the batch's labels through loss_fn (empirical Fisher)")
    ap.add_argument("--estimator", choices=("sampled", "rademacher"), default="sampled")
    ap.add_argument("--class-dim", type=int, default=-1)
    ap.add_argument("--stats", action="store_true",
                    help="write statistics (stats.safetensors) instead of rows")
    ap.add_argument("--config", help="--stats: the bitplan config to fit activation grids for")
    ap.add_argument("--bitplan", default="bitplan", help="--stats: the bitplan binary")
    ap.add_argument("--range-rows", type=int, default=2048,
                    help="--stats: rows per input the activation grids are fitted on")
    ap.add_argument("--range-batches", type=int, default=0,
                    help="--stats: batches the range rows come from (0: all)")
    ap.add_argument("--include", action="append", metavar="GLOB",
                    help="only the layers matching (repeatable)")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args()
    if args.range_rows < 1:
        raise SystemExit(f"capture: --range-rows: expected at least 1, got {args.range_rows}")
    if args.config and not args.stats:
        raise SystemExit("capture: --config is for --stats")
    if args.config and not os.path.isfile(args.config):
        raise SystemExit(f"capture: --config {args.config}: no such file")
    if args.fisher is not None and args.fisher < 1:
        raise SystemExit(f"capture: --fisher K: expected a rank >= 1, got {args.fisher}")
    if args.draws < 1:
        raise SystemExit(f"capture: --draws: expected at least 1, got {args.draws}")
    model, loader, loss_fn = load_spec(args.spec)
    if args.include:
        keep = {n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d)) and
                any(fnmatch.fnmatchcase(n, g) for g in args.include)}
        if not keep:
            raise SystemExit(f"capture: --include {' '.join(args.include)} matches no layer")
    else:
        keep = None
    if args.stats:
        return main_stats(args, model, loader, loss_fn, keep)
    calib, cmeta, rse, samples = capture(
        model, loader, loss_fn, rows=args.rows, seed=args.seed, batches=args.batches,
        half=args.half, fisher=args.fisher, fisher_full=args.fisher_full, grad2=args.grad2,
        draws=args.draws, labels=args.labels, estimator=args.estimator,
        class_dim=args.class_dim, quiet=args.quiet)
    weights, meta = model_weights(model, args.spec)
    os.makedirs(args.out, exist_ok=True)
    save_file(os.path.join(args.out, "weights.safetensors"), weights, meta)
    save_file(os.path.join(args.out, "calib.safetensors"), calib, cmeta)
    if args.quiet:
        return
    print(f"capture: {sum(k.endswith('.weight') for k in weights)} layers -> "
          f"{args.out}/weights.safetensors, calib.safetensors")
    if rse:
        worst = max(rse, key=lambda n: rse[n])
        draws = 1 if args.labels else args.draws
        print(f"capture: output Fisher from {samples} samples x {draws} draws; relative standard "
              f"error of tr F: median {100 * float(np.median(list(rse.values()))):.1f} %, max "
              f"{100 * rse[worst]:.1f} % ({worst})")
        if rse[worst] > 0.1:
            print("capture: the Fisher estimate is noisy: capture more calibration samples or "
                  "--draws", file=sys.stderr)


if __name__ == "__main__":
    main()
