"""Capture a PyTorch model's layers, calibration inputs and Fishers for bitplan.

    /usr/bin/python3 tools/capture.py MODULE:FUNCTION --out DIR
        [--rows 2048] [--seed 0] [--batches 0] [--half]
        [--fisher [K]] [--fisher-full 4096] [--grad2] [--draws 8]
        [--likelihood categorical|ctc|MODULE:FUNCTION] [--labels]
        [--estimator sampled|rademacher] [--margin | --no-margin] [--margin-bits 4]
        [--target-rse 0.1] [--max-draws 32] [--time-limit 0]
        [--loss MODULE:FUNCTION] [--outputs auto|logits|probs|log-probs] [--class-dim -1] [-q]
        [--stats [--config CONFIG] [--bitplan BIN] [--range-rows 2048]
         [--range-batches 0] [--stats-precision double|single]] [--include GLOB ...]

MODULE:FUNCTION returns the model, its batches and (optionally) the user's
loss, how to call the model on a batch and what its logits are: the one
contract of tools/objective.py (a tuple (model, loader[, loss]) or a dict).

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
                calibration samples, and NAME.fisher_rse_floor: what would be
                left of it with unlimited draws (the spread of the samples
                themselves: only more calibration samples lower it).
The loss is the negative log-likelihood of targets drawn from the model's
own predictive distribution (the true Fisher; no labels needed), --draws per
input: --likelihood categorical (the default: one class per position;
--estimator rademacher draws the output-gradient with the same covariance
diag(p) - p p^T from random signs instead), ctc (a label sequence: a frame
path drawn from each frame's softmax, collapsed; the Fisher of the sequence
likelihood) or MODULE:FUNCTION, sample(outputs, batch, generator) returning
a batch with drawn targets for the user's loss.  --labels differentiates the
user's loss at the batch's own targets (the empirical Fisher).
With --fisher (unless --no-margin) or --margin, the decision Fisher of every
layer too (metric margin, which metric auto prefers):
  NAME.margin (or NAME.margin_u/_s/_d/_n, as above): sum_p v_p dm_p dm_p^T
                over output positions p, m_p the float model's top-1 minus
                top-2 logit at p, dm_p its gradient at the layer's output and
                v_p = phi(m_p/s) m_p / s^3 how fast that decision flips as its
                margin's perturbation grows, at the reference scale s: the RMS
                change of the margins when every layer is on a --margin-bits
                grid (metadata margin_scale); NAME.margin_rse as above.
Noise: with --target-rse R (default 0.1), draws are added, pass by pass of
--draws more, while the largest relative standard error of a trace is above
R and more draws can bring it there, up to --max-draws per input or
--time-limit seconds; what is left is in the metadata, and the summary says
when only more calibration samples would help.
With --stats, DIR/stats.safetensors instead of DIR/calib.safetensors: the
sums bitplan needs (X^T X, column sums and, per activation grid of CONFIG,
Xbar^T Xbar and Xbar^T X), in float64 over every token of every batch, one
set per distinct input tensor (tools/capture_stats.py has the layout); the
activation grids are fitted by BIN (default: bitplan on PATH) on up to
--range-rows rows per input from the first --range-batches batches (0:
all).  --stats-precision single forms the products in float32 over 512-row
chunks of rows shifted by their first chunk's column means, summed in float64
(the sums take about 1.5x less time on a 7B-shaped block: bench/llm/capture_cost.py;
tools/capture_stats.py has the exact shift corrections).
CONFIG is the config that will plan with the file (its
model.weights is DIR/weights.safetensors); without it only float
activations (16 bits) can be measured.  The Fisher options add the Fishers
to the same file.  --include keeps only the layers matching a glob
(capture a large model in several runs).
Only Debian's python3-torch and python3-numpy are needed.
"""
import argparse
import fnmatch
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from objective import Task, ctc_best_path  # noqa: E402
from progress import Progress  # noqa: E402
from safetensors_io import save_file  # noqa: E402


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
    """One layer's output Fisher, accumulated in float64 from output gradients,
    with each unit's (sample's) trace per draw, for the estimate's relative
    standard error and how much more draws would lower it."""

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
        self.sample_draws = 0             # samples x draws accumulated (F's divisor)
        self.adds = 0                     # draws of the batch being captured
        self.t = np.zeros(0)              # per unit: sum over its draws of tr(g g^T)
        self.t2 = np.zeros(0)             # per unit: sum over its draws of tr(g g^T)^2
        self.d = np.zeros(0)              # per unit: its draws
        self.unit0 = 0                    # the batch's first unit

    def add(self, g, units):
        """One draw's gradient at the layer's output; units = samples in the batch."""
        g = g.detach().double()
        if self.conv:
            g = g.movedim(1, -1)                       # N x H x W x C
        b = g.shape[0] if g.dim() > 1 and g.shape[0] == units else 1
        rows = g.reshape(b, -1, self.out)
        t = (rows ** 2).sum(dim=(1, 2)).numpy()       # per unit tr of g g^T
        end = self.unit0 + b
        if len(self.t) < end:
            grow = end - len(self.t)
            self.t, self.t2, self.d = (np.concatenate([a, np.zeros(grow)])
                                       for a in (self.t, self.t2, self.d))
        self.t[self.unit0:end] += t
        self.t2[self.unit0:end] += t * t
        self.d[self.unit0:end] += 1
        self.last = b
        self.adds += 1
        r = rows.reshape(-1, self.groups, self.og)
        self.diag += (r ** 2).sum(dim=0).reshape(-1).numpy()
        if self.dense:
            self.F += torch.einsum("ngi,ngj->gij", r, r)
        if self.rank:
            self.Y += torch.einsum("ngi,ngk->gik", r, torch.einsum("ngj,gjk->ngk", r, self.omega))

    def next_batch(self, samples):
        """After a batch's draws: the next batch's units follow (units are the
        samples, or the whole batch when the gradient has no batch axis)."""
        if self.adds:
            self.unit0 += self.last
            self.sample_draws += samples * self.adds
            self.adds = 0

    def new_pass(self):
        self.unit0 = 0

    def noise(self):
        """(rse, floor, per_draw_var, between_var, n, mean) of tr F: the
        relative standard error of the estimate, the one left with unlimited
        draws (from too few samples), and the variance components."""
        n = int((self.d > 0).sum())
        if n < 2:
            return float("nan"), float("nan"), 0.0, 0.0, n, 0.0
        d = self.d[self.d > 0]
        tm = self.t[self.d > 0] / d                     # each unit's mean over its draws
        mean = tm.mean()
        var = tm.var(ddof=1)
        within = 0.0
        if d.min() > 1:                                 # per-draw variance, pooled over units
            within = float(np.mean((self.t2[self.d > 0] / d - tm ** 2) * d / (d - 1)))
        between = max(var - within / d.mean(), 0.0)
        if mean <= 0:
            return float("nan"), float("nan"), within, between, n, mean
        return (float(np.sqrt(var / n) / mean), float(np.sqrt(between / n) / mean), within,
                between, n, mean)

    def draws_for(self, target):
        """Draws per unit that would bring the relative standard error to
        target, or (when the samples' own spread keeps it above) to within
        5 % of that floor; 0 when it is there."""
        rse, floor, within, between, n, mean = self.noise()
        goal = max(target, 1.05 * floor)
        if not rse == rse or rse <= goal:
            return 0
        room = (goal * mean) ** 2 * n - between
        return float("inf") if room <= 0 else within / room

    def tensors(self, name, kind="fisher"):
        """The calibration-file tensors of this Fisher (kind "fisher": the
        loss Fisher, NAME.fisher...; "margin": the decision Fisher,
        NAME.margin...)."""
        n = max(self.sample_draws, 1)
        out = {}
        if kind == "fisher":
            out[name + ".grad2"] = (self.diag / n).astype(np.float32)
        if self.dense:
            Fm = (self.F / n).numpy()
            out[f"{name}.{kind}"] = (Fm[0] if self.groups == 1 else Fm).astype(np.float32)
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
            out[f"{name}.{kind}_u"] = U.astype(np.float32)
            out[f"{name}.{kind}_s"] = S.astype(np.float32)
            out[f"{name}.{kind}_d"] = D.astype(np.float32)
            if null:
                out[f"{name}.{kind}_n"] = np.broadcast_to(ones, D.shape).astype(np.float32)
        return out


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


def draw_ctc_loss(logits, blank, gen):
    """The CTC loss of a label sequence drawn from the model (a frame path
    drawn from each frame's softmax, repeats merged, blanks removed): its
    gradient's covariance is the Fisher of the sequence likelihood."""
    if logits.dim() != 3:
        raise SystemExit(f"capture: likelihood 'ctc' needs logits N x T x classes, got "
                         f"{tuple(logits.shape)}")
    n, t, c = logits.shape
    lp = F.log_softmax(logits.float(), -1)
    path = torch.multinomial(lp.detach().exp().reshape(-1, c), 1, generator=gen).reshape(n, t)
    seqs = ctc_best_path(F.one_hot(path, c), blank)
    lens = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    tgt = torch.tensor([x for s in seqs for x in s], dtype=torch.long)
    return F.ctc_loss(lp.transpose(0, 1), tgt, torch.full((n,), t, dtype=torch.long), lens,
                      blank=blank, reduction="sum")


def flip_weight(m, scale):
    """v(m) = phi(m / s) m / s^3 = 2 d/d(sigma^2) Phi(-m / sigma) at sigma = s:
    how fast a decision of margin m flips as the variance of its margin's
    perturbation grows, at the reference perturbation s."""
    u = m / scale
    return torch.exp(-0.5 * u * u) / np.sqrt(2 * np.pi) * u / scale ** 2


def draw_margin_loss(task, logits, scale, gen):
    """sum_p e_p sqrt(v_p) m_p over positions p, e_p random signs: its
    gradient's covariance is the decision Fisher sum_p v_p dm_p dm_p^T, with
    m_p the top-1 minus top-2 logit of the float model and v_p its flip
    weight (flip_weight)."""
    m, _, _ = task.margins(logits)
    w = flip_weight(m.detach().double(), scale).clamp(min=0).sqrt().float()
    e = torch.randint(0, 2, m.shape, generator=gen, dtype=torch.float32) * 2 - 1
    return (e * w * m).sum()


def rtn_reference(layers, bits):
    """Every layer's weights on a per-output-channel symmetric grid of `bits`
    (round to nearest): the reference perturbation of the margin scale.
    Returns the float weights to restore."""
    saved = {}
    levels = 2 ** (bits - 1) - 1
    with torch.no_grad():
        for n, m in layers.items():
            w = m.weight
            saved[n] = w.detach().clone()
            flat = w.reshape(w.shape[0], -1)
            s = flat.abs().amax(1, keepdim=True).clamp(min=1e-30) / levels
            w.copy_((torch.round(flat / s) * s).reshape(w.shape))
    return saved


def margin_scale(task, layers, batches, bits, limit):
    """The reference perturbation's scale: the RMS change of the float
    model's decision margins when every layer is on a `bits` grid."""
    ref = []
    with torch.no_grad():
        for i, b in enumerate(batches):
            if limit and i >= limit:
                break
            ref.append(task.margins(task.logits(task.forward(b))))
        saved = rtn_reference(layers, bits)
        try:
            sq = cnt = 0.0
            for b, (m, i1, i2) in zip(batches, ref):
                lg = task.logits(task.forward(b))
                mq = lg.gather(-1, i1[..., None])[..., 0] - lg.gather(-1, i2[..., None])[..., 0]
                sq += ((mq - m).double() ** 2).sum().item()
                cnt += m.numel()
        finally:
            for n, w in saved.items():
                layers[n].weight.data.copy_(w)
    s = float(np.sqrt(sq / max(cnt, 1)))
    if not s > 0:
        raise SystemExit(f"capture: a {bits}-bit grid does not change the model's decision "
                         "margins; the decision Fisher needs a model whose layers matter")
    return s


class Capture:
    """The calibration tensors of every nn.Linear / nn.Conv2d of a task's
    model (see the module's documentation for the options)."""

    def __init__(self, task, rows=2048, seed=0, batches=0, half=False, fisher=None,
                 fisher_full=4096, grad2=False, draws=8, labels=False, estimator="sampled",
                 margin=False, margin_bits=4, target_rse=0.0, max_draws=0, time_limit=0.0,
                 quiet=True):
        self.task = task
        self.rows, self.seed, self.limit, self.half = rows, seed, batches, half
        self.labels, self.estimator = labels, estimator
        self.draws = 1 if labels else draws
        self.margin, self.margin_bits = margin, margin_bits
        self.target, self.max_draws, self.time_limit = target_rse, max_draws, time_limit
        self.quiet = quiet
        self.layers = {n: m for n, m in task.model.named_modules()
                       if isinstance(m, (nn.Linear, nn.Conv2d))}
        if not self.layers:
            raise SystemExit("capture: the model has no nn.Linear or nn.Conv2d layers")
        if labels and task.loss_fn is None:
            raise SystemExit("capture: --labels differentiates the user's loss at the batch's "
                             "own targets: give 'loss' in the spec's result or --loss")
        self.grads = fisher is not None or grad2
        mk = lambda off: {n: FisherStats(m, fisher is None, fisher_full, fisher or 64,
                                         seed + 7 * i + off)
                          for i, (n, m) in enumerate(self.layers.items())}
        self.stats = {}
        if self.grads:
            self.stats["fisher"] = mk(0)
        if margin:
            self.stats["margin"] = {n: FisherStats(m, False, fisher_full, fisher or 64,
                                                   seed + 7 * i + 3)
                                    for i, (n, m) in enumerate(self.layers.items())}
        self.rng = np.random.RandomState(seed)
        self.gen = torch.Generator().manual_seed(seed + 1)
        self.scale = None
        self.passes = 0
        self.note = []

    def _pass(self, keep_rows, draws, label):
        """One pass over the batches: the rows (keep_rows) and `draws` gradient
        draws per input for every Fisher captured."""
        task, layers = self.task, self.layers
        kept = self.kept if keep_rows else None
        sink = [None]                           # the Fisher the taps feed now
        units = [0]
        hooks = []
        for name, mod in layers.items():
            def fwd(m, inp, out, name=name):
                if kept is not None:
                    kept[name].append(layer_rows(m, inp[0].detach()).float().numpy())
                if sink[0] is not None and out.requires_grad:
                    return Tap.apply(out, lambda g, name=name: sink[0][name].add(g, units[0]))
                return None
            hooks.append(mod.register_forward_hook(fwd))
        weights = [m.weight for m in layers.values()]
        grads = bool(self.stats) and draws > 0
        for w in weights:
            w.requires_grad_(grads)
        loader = task.batches if self.passes else task.loader
        try:
            total = len(loader) if not self.limit else min(self.limit, len(loader))
        except TypeError:
            total = self.limit or 0
        prog = Progress(label, total or 1, self.quiet, "batches")
        for s in self.stats.values():
            for st in s.values():
                st.new_pass()
        seen = []
        try:
            for i, batch in enumerate(loader):
                if self.limit and i >= self.limit:
                    break
                prog(i)
                if not self.passes:
                    seen.append(batch)
                if not grads:
                    with torch.no_grad():
                        task.forward(batch)
                else:
                    sink[0] = next(iter(self.stats.values()))   # taps are on while tracing
                    out = task.forward(batch)
                    lg = task.logits(out)
                    units[0] = task.samples(batch, lg)
                    jobs = [(k, d) for d in range(draws) for k in self.stats]
                    for j, (kind, d) in enumerate(jobs):
                        sink[0] = self.stats[kind]
                        loss = self._draw_loss(kind, out, lg, batch)
                        torch.autograd.grad(loss, weights, retain_graph=j + 1 < len(jobs),
                                            allow_unused=True)
                    sink[0] = None
                    for s in self.stats.values():
                        for st in s.values():
                            st.next_batch(units[0])
                if kept is not None:
                    self._subsample(kept)
        finally:
            prog.close()
            for h in hooks:
                h.remove()
            for w in weights:
                w.requires_grad_(False)
        if not self.passes:
            self.task._batches = seen           # later passes replay the same batches
        self.passes += 1

    def _draw_loss(self, kind, out, lg, batch):
        task = self.task
        if kind == "margin":
            return draw_margin_loss(task, lg, self.scale, self.gen)
        if self.labels:
            return task.loss(out, batch, lg)
        lik = task.likelihood
        if lik == "categorical":
            return draw_loss(lg, self.estimator, self.gen)
        if lik == "ctc":
            return draw_ctc_loss(lg, task.blank, self.gen)
        if task.loss_fn is None:
            raise SystemExit("capture: a likelihood function draws targets for the user's "
                             "loss: give 'loss' too")
        return task.loss(out, lik(out, batch, self.gen), lg)

    def _subsample(self, kept):
        for n in kept:                      # keep memory bounded: subsample as we go
            if not kept[n]:
                continue
            a = np.concatenate(kept[n]) if len(kept[n]) > 1 else kept[n][0]
            if len(a) > 4 * self.rows:
                a = a[np.sort(self.rng.permutation(len(a))[:4 * self.rows])]
            kept[n] = [a]

    def worst(self):
        """The largest relative standard error of any captured Fisher's trace."""
        return max((st.noise()[0] for s in self.stats.values() for st in s.values()
                    if st.noise()[0] == st.noise()[0]), default=0.0)

    def run(self, keep_rows=True):
        t0 = time.time()
        self.kept = {n: [] for n in self.layers} if keep_rows else None
        if self.margin:
            # the reference perturbation needs the batches, which the first pass reads:
            # read them first, with the rows, then draw
            self._pass(keep_rows, 0, "capture: batch")
            self.scale = margin_scale(self.task, self.layers, self.task.batches,
                                      self.margin_bits, self.limit)
            self._pass(False, self.draws, "capture: draws")
        else:
            self._pass(keep_rows, self.draws if self.stats else 0, "capture: batch")
        done = self.draws
        # more draws while they lower the noise toward the target
        while self.stats and not self.labels and self.target > 0 and done < self.max_draws:
            need = max((st.draws_for(self.target) for s in self.stats.values()
                        for st in s.values()), default=0)
            if need <= done:
                break
            if self.time_limit and time.time() - t0 > self.time_limit:
                self.note.append(f"time limit ({self.time_limit:g} s) reached")
                break
            extra = min(self.draws, self.max_draws - done)
            self._pass(False, extra, f"capture: draws {done + 1}-{done + extra}")
            done += extra
        self.total_draws = done
        return self

    def tensors(self):
        """(calib tensors, calib metadata, {layer: rse of tr F}, samples)."""
        calib, rse = {}, {}
        cmeta = {"rows": str(self.rows), "seed": str(self.seed)}
        if "fisher" in self.stats:
            cmeta.update(fisher="labels" if self.labels else
                         f"{self.estimator if self.task.likelihood == 'categorical' else 'sampled'}"
                         f", likelihood {self.likelihood_name()}, {self.total_draws} draws per input",
                         fisher_scale="per sample: sum over its output positions")
        if self.margin:
            cmeta.update(margin=f"decision margins (top-1 minus top-2), flip weight at a "
                                f"{self.margin_bits}-bit reference perturbation, "
                                f"{self.total_draws} draws per input",
                         margin_scale=f"{self.scale:.6g}")
        for name in self.layers:
            if self.kept is not None and self.kept[name]:
                a = self.kept[name][0]
                if len(a) > self.rows:
                    a = a[np.sort(self.rng.permutation(len(a))[:self.rows])]
                calib[name + ".input"] = a.astype(np.float16 if self.half else np.float32)
            for kind, s in self.stats.items():
                st = s[name]
                if not st.d.sum():
                    continue
                calib.update(st.tensors(name, kind))
                r, floor = st.noise()[:2]
                cmeta[f"{name}.{kind}_rse"] = f"{r:.4g}"
                cmeta[f"{name}.{kind}_rse_floor"] = f"{floor:.4g}"
                if kind == "fisher":
                    rse[name] = r
        samples = 0
        if self.stats:
            st = next(iter(next(iter(self.stats.values())).values()))
            samples = int((st.d > 0).sum())
        return calib, cmeta, rse, samples

    def likelihood_name(self):
        lik = self.task.likelihood
        return lik if isinstance(lik, str) else getattr(lik, "__name__", "user")


def capture(task, **kw):
    """Capture.run(...).tensors() of a task (objective.Task)."""
    return Capture(task, **kw).run().tensors()


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


def main_stats(args, task, keep, options):
    """capture --stats: weights, then statistics (and the Fishers)."""
    from capture_stats import capture_stats
    model = task.model
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
    tensors, smeta = capture_stats(task, layers, layer_rows, args.out, wpath,
                                   config=args.config, bitplan=args.bitplan,
                                   range_rows=args.range_rows, range_batches=args.range_batches,
                                   batches=args.batches, seed=args.seed, quiet=args.quiet,
                                   precision=args.stats_precision)
    cap = None
    if options["fisher"] is not None or options["grad2"] or options["margin"]:
        cap = Capture(task, rows=1, **options).run(keep_rows=False)
        calib, cmeta, _, _ = cap.tensors()
        for k, v in calib.items():
            if not k.endswith(".input") and (keep is None or k.rsplit(".", 1)[0] in keep):
                tensors[k] = v
        smeta.update({k: v for k, v in cmeta.items() if "fisher" in k or "margin" in k})
    save_file(os.path.join(args.out, "stats.safetensors"), tensors, smeta)
    if not args.quiet:
        sets = sum(k.endswith(".xtx") for k in tensors)
        n = max((int(v[0]) for k, v in tensors.items() if k.endswith(".count")), default=0)
        print(f"capture: {len(layers)} layers, {sets} input statistics over {n} rows -> "
              f"{args.out}/weights.safetensors, stats.safetensors")
        if cap:
            report_noise(cap)


def report_noise(cap):
    """The Fishers' noise, and what would lower it."""
    for kind, s in cap.stats.items():
        noise = {n: st.noise() for n, st in s.items() if st.d.sum()}
        if not noise:
            continue
        rse = {n: v[0] for n, v in noise.items() if v[0] == v[0]}
        if not rse:
            continue
        worst = max(rse, key=rse.get)
        what = "output Fisher" if kind == "fisher" else "decision Fisher"
        print(f"capture: {what} from {next(iter(noise.values()))[4]} samples x "
              f"{cap.total_draws} draws; relative standard error of tr F: median "
              f"{100 * float(np.median(list(rse.values()))):.1f} %, max {100 * rse[worst]:.1f} % "
              f"({worst})")
        if cap.target and rse[worst] > cap.target:
            floor = noise[worst][1]
            why = (f"{100 * floor:.0f} % of it is the spread of the samples themselves: "
                   "capture more calibration samples" if floor > 0.8 * cap.target else
                   f"--max-draws {cap.max_draws} reached" if cap.total_draws >= cap.max_draws
                   else "; ".join(cap.note) or "more draws would lower it")
            print(f"capture: the {what} is noisier than --target-rse "
                  f"{100 * cap.target:.0f} % ({why})", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0].replace("\n", " "),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("spec", help="MODULE:FUNCTION returning the model and its batches "
                                 "(tools/objective.py)")
    ap.add_argument("--out", required=True, help="directory of the captured files")
    ap.add_argument("--rows", type=int, default=2048, help="calibration rows kept per layer")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batches", type=int, default=0, help="stop after this many (0: all)")
    ap.add_argument("--half", action="store_true", help="store inputs as F16")
    ap.add_argument("--fisher", type=int, nargs="?", const=64, default=None, metavar="K",
                    help="capture the output Fisher (rank K beyond --fisher-full outputs)")
    ap.add_argument("--fisher-full", type=int, default=4096, metavar="N",
                    help="store F in full up to N outputs per group")
    ap.add_argument("--grad2", action="store_true", help="only the Fisher's diagonal")
    ap.add_argument("--draws", type=int, default=8, help="target draws per input and pass")
    ap.add_argument("--likelihood", metavar="categorical|ctc|MODULE:FUNCTION",
                    help="the distribution targets are drawn from (default: the spec's, else "
                         "categorical)")
    ap.add_argument("--labels", action="store_true",
                    help="differentiate the user's loss at the batch's own targets (empirical "
                         "Fisher)")
    ap.add_argument("--estimator", choices=("sampled", "rademacher"), default="sampled",
                    help="categorical likelihood: draw labels, or random signs")
    ap.add_argument("--margin", action="store_true",
                    help="capture the decision Fisher (metric margin); --fisher includes it")
    ap.add_argument("--no-margin", action="store_true",
                    help="with --fisher: the output Fisher alone")
    ap.add_argument("--margin-bits", type=int, default=4,
                    help="weight bits of the reference perturbation of the margin scale")
    ap.add_argument("--target-rse", type=float, default=0.1,
                    help="add draws until every trace's relative standard error is below this "
                         "(0: never)")
    ap.add_argument("--max-draws", type=int, default=32, help="at most this many draws per input")
    ap.add_argument("--time-limit", type=float, default=0.0,
                    help="stop adding draws after this many seconds (0: no limit)")
    ap.add_argument("--loss", metavar="MODULE:FUNCTION",
                    help="the user's loss(outputs, batch) (instead of the spec's)")
    ap.add_argument("--outputs", choices=("auto", "logits", "probs", "log-probs"), default=None,
                    help="what the model's scores are: logits, probs (e.g. an exported "
                         "softmax: the Fisher is taken of their logarithms) or log-probs; "
                         "default: the spec's 'outputs', else auto (detected on the first "
                         "batch, said on stderr)")
    ap.add_argument("--class-dim", type=int, default=-1,
                    help="the classes' axis of the model's output")
    ap.add_argument("--stats", action="store_true",
                    help="write statistics (stats.safetensors) instead of rows")
    ap.add_argument("--config", help="--stats: the bitplan config to fit activation grids for")
    ap.add_argument("--bitplan", default="bitplan", help="--stats: the bitplan binary")
    ap.add_argument("--range-rows", type=int, default=2048,
                    help="--stats: rows per input the activation grids are fitted on")
    ap.add_argument("--range-batches", type=int, default=0,
                    help="--stats: batches the range rows come from (0: all)")
    ap.add_argument("--stats-precision", choices=("double", "single"), default="double",
                    help="--stats: products in float64 (default: the sums of the rows), or "
                         "float32 products of 512-row chunks of shifted rows summed in float64 "
                         "(faster; relative differences near 1e-6)")
    ap.add_argument("--include", action="append", metavar="GLOB",
                    help="only the layers matching (repeatable)")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args()
    if args.range_rows < 1:
        raise SystemExit(f"capture: --range-rows: expected at least 1, got {args.range_rows}")
    if args.config and not args.stats:
        raise SystemExit("capture: --config is for --stats")
    if args.stats_precision != "double" and not args.stats:
        raise SystemExit("capture: --stats-precision is for --stats")
    if args.config and not os.path.isfile(args.config):
        raise SystemExit(f"capture: --config {args.config}: no such file")
    if args.fisher is not None and args.fisher < 1:
        raise SystemExit(f"capture: --fisher K: expected a rank >= 1, got {args.fisher}")
    if args.draws < 1:
        raise SystemExit(f"capture: --draws: expected at least 1, got {args.draws}")
    if not 2 <= args.margin_bits <= 8:
        raise SystemExit(f"capture: --margin-bits: expected 2..8, got {args.margin_bits}")
    if args.target_rse < 0 or args.time_limit < 0:
        raise SystemExit("capture: --target-rse and --time-limit must be >= 0")
    task = Task(args.spec, "capture", args.class_dim, loss=args.loss, likelihood=args.likelihood,
                outputs=args.outputs)
    if args.include:
        keep = {n for n, m in task.model.named_modules()
                if isinstance(m, (nn.Linear, nn.Conv2d)) and
                any(fnmatch.fnmatchcase(n, g) for g in args.include)}
        if not keep:
            raise SystemExit(f"capture: --include {' '.join(args.include)} matches no layer")
    else:
        keep = None
    margin = (args.margin or args.fisher is not None) and not args.no_margin
    options = dict(seed=args.seed, batches=args.batches, fisher=args.fisher,
                   fisher_full=args.fisher_full, grad2=args.grad2, draws=args.draws,
                   labels=args.labels, estimator=args.estimator, margin=margin,
                   margin_bits=args.margin_bits, target_rse=args.target_rse,
                   max_draws=max(args.max_draws, args.draws), time_limit=args.time_limit,
                   quiet=args.quiet)
    if args.stats:
        return main_stats(args, task, keep, options)
    cap = Capture(task, rows=args.rows, half=args.half, **options).run()
    calib, cmeta, rse, samples = cap.tensors()
    weights, meta = model_weights(task.model, args.spec)
    os.makedirs(args.out, exist_ok=True)
    save_file(os.path.join(args.out, "weights.safetensors"), weights, meta)
    save_file(os.path.join(args.out, "calib.safetensors"), calib, cmeta)
    if args.quiet:
        return
    print(f"capture: {sum(k.endswith('.weight') for k in weights)} layers -> "
          f"{args.out}/weights.safetensors, calib.safetensors")
    report_noise(cap)


if __name__ == "__main__":
    main()
