"""The user's objective: one contract for every PyTorch-side tool.

A spec is MODULE:FUNCTION (importable from the current directory or
PYTHONPATH).  The function returns (model, loader), (model, loader, loss) or
a dict with these keys (only model and loader are required):

  model       a torch.nn.Module: its nn.Linear and nn.Conv2d layers are the
              layers bitplan plans
  loader      an iterable of batches, each of any structure (a tensor, a
              tuple, a dict, an object)
  inputs      inputs(batch) -> what the model is called with: a tensor (one
              argument), a tuple (positional arguments) or a dict (keyword
              arguments).  Default: the batch itself when it is a tensor, its
              first item when it is a tuple or list; other batches need it.
  logits      logits(outputs) -> the model's scores, a float tensor whose last
              axis is the classes (one softmax per position for sequence
              outputs).  Default: the output, or its first item, with classes
              on --class-dim.
  loss        loss(outputs, batch) -> the user's loss: a 0-d tensor summed
              over the batch's samples, or a 1-D tensor with one loss per
              sample (summed here); set `loss.reduction = "mean"` when a 0-d
              result is the mean over the batch's samples (it is then
              multiplied by the batch's sample count).  Differentiable when
              used for the Fisher.  Reported per sample.
  metric      metric(outputs, batch) -> the user's task metric: a number per
              batch, a (sum, count) pair (e.g. character errors and
              characters), a pair of equal-length 1-D arrays (per sample), or
              a 1-D tensor / array of values (per sample or position, each
              counting 1); reported as all sums over all counts.  Per-sample
              values give paired standard errors per sample, others per
              batch.  Set `metric.higher_is_better = True` for accuracies
              (default: lower is better, as for error rates).
  decode      how the model's decisions are read off the logits, for the
              flips objective: "argmax" (default: top-1 per position), "ctc"
              (best path: argmax per frame, repeats merged, blanks -- class
              `blank`, default 0 -- removed), or decode(logits) -> one
              sequence (a list) per sample.
  blank       the CTC blank class (decode / likelihood "ctc"), default 0.
  likelihood  the model's predictive distribution, from which the Fisher's
              targets are drawn (tools/capture.py --fisher): "categorical"
              (default: one class per position), "ctc" (a frame path drawn
              from the per-frame softmax and collapsed to a label sequence;
              the gradient is that of its CTC loss: the Fisher of the
              sequence likelihood), or sample(outputs, batch, generator) ->
              a batch of the same structure whose targets are drawn from the
              model, whose `loss` is then differentiated.
  samples     samples(batch) -> how many samples the batch holds.  Default:
              the leading size of the logits.
  outputs     what the scores are: "logits" (any real scores, softmax
              applied here), "probs" (probabilities, e.g. an exported
              softmax: their logarithms are used), "log-probs", or "auto"
              (default; --outputs): probabilities when every score is in
              [0, 1] and they sum to 1 over the classes, log-probabilities
              when every score is <= 0 and their exponentials sum to 1, and
              logits otherwise -- said once on stderr when it is not logits.

Objectives (what a tool measures a quantized model by, against the float
model on the same batches):

  kl       KL(float || quantized) per position: label-free, smooth, additive
           over layers to second order; what metric kfac predicts
  flips    the share of the float model's decisions the quantized model does
           not make: top-1 per position ("argmax"), or for sequences the
           edit distance of the decoded output to the float model's decoded
           output over its length (a character error rate against the float
           model); label-free
  loss     the user's loss per sample (increase over the float model)
  metric   the user's metric (increase over the float model; for a
           higher-is-better metric, its decrease)
"""
import copy
import importlib
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

OBJECTIVES = ("kl", "flips", "loss", "metric")
KEYS = ("model", "loader", "inputs", "logits", "loss", "metric", "decode", "blank",
        "likelihood", "samples", "outputs")
OUTPUTS = ("auto", "logits", "probs", "log-probs")


class BitplanError(SystemExit):
    """An error with one message naming what was wrong: a tool exits with it
    (status 1, the message on stderr); library users can catch it."""


def fail(tool, msg):
    raise BitplanError(f"{tool}: error: {msg}")


def load_function(spec, tool):
    """The object MODULE:NAME names (modules from the current directory or
    PYTHONPATH)."""
    if not isinstance(spec, str) or ":" not in spec:
        fail(tool, f"expected MODULE:FUNCTION, got '{spec}'")
    mod, fn = spec.split(":", 1)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        fail(tool, f"cannot load {spec}: {e}")


def _default_inputs(batch):
    if torch.is_tensor(batch):
        return batch
    if isinstance(batch, (tuple, list)) and batch:
        return batch[0]
    return None


def _array(v):
    if torch.is_tensor(v):
        return v.detach().double().reshape(-1).cpu().numpy()
    return np.asarray(v, dtype=np.float64).reshape(-1) if isinstance(v, np.ndarray) else None


def metric_units(v):
    """The (sum, count) pairs of one metric value: a number (one unit), a
    (sum, count) pair of numbers (one unit) or of equal-length arrays (one
    unit each), or an array of values (one unit each, counting 1)."""
    if isinstance(v, (tuple, list)) and len(v) == 2:
        a, b = _array(v[0]), _array(v[1])
        if a is not None and b is not None and a.size == b.size and a.size != 1:
            return list(zip(a.tolist(), b.tolist()))
        return [(float(v[0]), float(v[1]))]
    a = _array(v)
    if a is not None and np.ndim(v) >= 1:
        return [(x, 1.0) for x in a.tolist()]
    return [(float(v), 1.0)]


def edit_distance(a, b):
    """Levenshtein distance between two sequences."""
    if not a or not b:
        return max(len(a), len(b))
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def ctc_best_path(logits, blank=0):
    """Best-path CTC decoding of N x T x C logits: one list of classes per sample."""
    best = logits.argmax(-1).reshape(logits.shape[0], -1).tolist()
    out = []
    for row in best:
        seq, prev = [], blank
        for c in row:
            if c != prev and c != blank:
                seq.append(c)
            prev = c
        out.append(seq)
    return out


class Task:
    """A user's model, batches and objective, loaded from a spec."""

    def __init__(self, spec, tool="bitplan", class_dim=-1, loss=None, metric=None,
                 decode=None, likelihood=None, got=None, outputs=None):
        self.spec, self.tool, self.class_dim = spec, tool, class_dim
        if got is None:
            got = load_function(spec, tool)()
        if isinstance(got, tuple):
            if len(got) not in (2, 3):
                fail(tool, f"{spec} must return (model, loader), (model, loader, loss) or a dict")
            got = dict(zip(("model", "loader", "loss"), got))
        if not isinstance(got, dict):
            fail(tool, f"{spec} must return (model, loader), (model, loader, loss) or a dict "
                       f"with keys model, loader (got {type(got).__name__})")
        unknown = [k for k in got if k not in KEYS]
        if unknown:
            fail(tool, f"{spec}: unknown key '{unknown[0]}' (expected {', '.join(KEYS)})")
        for k in ("model", "loader"):
            if got.get(k) is None:
                fail(tool, f"{spec}: no '{k}'")
        self.model = got["model"]
        if not isinstance(self.model, nn.Module):
            fail(tool, f"{spec}: the model must be a torch.nn.Module whose nn.Linear and "
                       f"nn.Conv2d layers bitplan can hook and plan, got "
                       f"{type(self.model).__name__}.  A model run by another engine (ONNX, "
                       "TorchScript, a compiled callable) has no such layers to quantize: load "
                       "its PyTorch definition, or wrap PyTorch code that calls it as "
                       "class Wrapped(torch.nn.Module): def __init__(self, m): super()."
                       "__init__(); self.m = m  def forward(self, x): return self.m(x) -- its "
                       "layers must be nn.Linear / nn.Conv2d attributes to be planned")
        if not any(isinstance(m, (nn.Linear, nn.Conv2d)) for m in self.model.modules()):
            fail(tool, f"{spec}: the model ({type(self.model).__name__}) has no nn.Linear or "
                       "nn.Conv2d layers: nothing for bitplan to hook or plan (a model wrapping "
                       "another engine's callable, or layers kept in plain tensors, must expose "
                       "its layers as nn.Linear / nn.Conv2d modules)")
        self.outputs = outputs or got.get("outputs") or "auto"
        if self.outputs not in OUTPUTS:
            fail(tool, f"{spec}: outputs '{self.outputs}': expected one of {', '.join(OUTPUTS)}")
        self._outputs_seen = None
        self.loader = got["loader"]
        self.inputs = got.get("inputs") or _default_inputs
        self._logits = got.get("logits")
        self.loss_fn = self._fn(loss, got.get("loss"), "loss")
        self.metric_fn = self._fn(metric, got.get("metric"), "metric")
        self.decode = decode or got.get("decode") or "argmax"
        if isinstance(self.decode, str) and self.decode not in ("argmax", "ctc"):
            self.decode = self._fn(self.decode, None, "decode")
        self.blank = int(got.get("blank", 0))
        self.likelihood = likelihood or got.get("likelihood") or "categorical"
        if isinstance(self.likelihood, str) and self.likelihood not in ("categorical", "ctc"):
            self.likelihood = self._fn(self.likelihood, None, "likelihood")
        self._samples = got.get("samples")
        self.model.eval()
        self._batches = None

    def _fn(self, override, given, what):
        f = override if override is not None else given
        if isinstance(f, str):
            f = load_function(f, self.tool)
        if f is not None and not callable(f):
            fail(self.tool, f"{self.spec}: '{what}' is not callable")
        return f

    @property
    def batches(self):
        """The loader's batches, as a list (read once)."""
        if self._batches is None:
            try:
                self._batches = list(self.loader)
            except TypeError:
                fail(self.tool, f"{self.spec}: the loader is not iterable")
            if not self._batches:
                fail(self.tool, f"{self.spec}: the loader yields no batches")
        return self._batches

    def with_batches(self, other_spec):
        """The same model and objective on another spec's batches (--heldout)."""
        self._batches = Task(other_spec, self.tool, self.class_dim).batches
        return self

    def subset(self, batches):
        """The same model and objective on these batches."""
        t = copy.copy(self)
        t._batches = list(batches)
        return t

    @property
    def higher_is_better(self):
        return bool(getattr(self.metric_fn, "higher_is_better", False))

    # ---- the model on a batch ----------------------------------------------------

    def forward(self, batch):
        x = self.inputs(batch)
        if x is None:
            fail(self.tool, f"{self.spec}: batches are {type(batch).__name__}: give "
                            "'inputs': a function from a batch to the model's inputs")
        if isinstance(x, dict):
            return self.model(**x)
        if isinstance(x, tuple):
            return self.model(*x)
        return self.model(x)

    def logits(self, outputs):
        """The scores, classes on the last axis, as float32."""
        x = self._logits(outputs) if self._logits else (
            outputs[0] if isinstance(outputs, (tuple, list)) else outputs)
        if isinstance(x, dict) and "logits" in x:
            x = x["logits"]
        if not torch.is_tensor(x) or x.dim() < 1:
            fail(self.tool, f"{self.spec}: the model's output must be a tensor of logits (or a "
                            "tuple whose first item is one); give 'logits' to pick them")
        if not self._logits and self.class_dim != -1:
            x = x.movedim(self.class_dim, -1)
        x = x.float()
        kind = self.outputs if self.outputs != "auto" else self._detect_outputs(x)
        if kind == "probs":       # log p: the logits of the same distribution
            return torch.log(x.clamp_min(torch.finfo(x.dtype).tiny))
        return x

    def _detect_outputs(self, x):
        """auto: what the first batch's scores are, said once when not logits."""
        if self._outputs_seen is None:
            with torch.no_grad():
                d = x.detach()
                kind = "logits"
                if d.shape[-1] > 1 and torch.isfinite(d).all():
                    if d.min() >= 0 and d.max() <= 1 and \
                            (d.sum(-1) - 1).abs().max() <= 1e-3:
                        kind = "probs"
                    elif d.max() <= 0 and (torch.logsumexp(d, -1)).abs().max() <= 1e-3:
                        kind = "log-probs"
            self._outputs_seen = kind
            if kind != "logits":
                print(f"{self.tool}: {self.spec}: the model's scores "
                      + ("are in [0, 1] and sum to 1 over the classes: read as probabilities "
                         "(their logarithms are the logits)" if kind == "probs" else
                         "are <= 0 and their exponentials sum to 1: read as log-probabilities")
                      + "; --outputs logits|probs|log-probs says otherwise", file=sys.stderr)
        return self._outputs_seen

    def samples(self, batch, logits):
        if self._samples:
            return int(self._samples(batch))
        return int(logits.shape[0]) if logits.dim() > 1 else 1

    def loss(self, outputs, batch, logits=None):
        """The user's loss summed over the batch's samples (a 0-d tensor)."""
        v = self.loss_fn(outputs, batch)
        if not torch.is_tensor(v):
            v = torch.tensor(float(v))
        if v.dim() > 1:
            fail(self.tool, f"{self.spec}: the loss returned shape {tuple(v.shape)}: expected a "
                            "number (summed over the batch) or one loss per sample")
        if v.dim() == 1:
            return v.sum()
        if getattr(self.loss_fn, "reduction", "sum") == "mean":
            lg = self.logits(outputs) if logits is None else logits
            return v * self.samples(batch, lg)
        return v

    def decisions(self, logits):
        """The decisions of a batch: top-1 per position (a tensor) or sequences."""
        if self.decode == "argmax":
            return logits.argmax(-1)
        if self.decode == "ctc":
            if logits.dim() != 3:
                fail(self.tool, f"{self.spec}: decode 'ctc' needs logits N x T x classes, got "
                                f"{tuple(logits.shape)}")
            return ctc_best_path(logits, self.blank)
        return [list(s) for s in self.decode(logits)]

    def margins(self, logits):
        """Per position: the top-1 minus top-2 logit, and their classes."""
        top = logits.topk(2, dim=-1)
        return top.values[..., 0] - top.values[..., 1], top.indices[..., 0], top.indices[..., 1]


class Reference:
    """The float model's log-probabilities, decisions, loss and metric on a
    task's batches: what the objectives compare a quantized model with."""

    def __init__(self, task, objectives=OBJECTIVES, progress=None):
        self.task = task
        self.need = set(objectives)
        self.logp, self.dec = [], []
        with torch.no_grad():
            for i, b in enumerate(task.batches):
                if progress:
                    progress(i)
                lg = task.logits(task.forward(b))
                self.logp.append(F.log_softmax(lg, -1))
                self.dec.append(task.decisions(lg))
        n = len(task.batches)
        self.float = measure(task, self, keep=True,
                             progress=(lambda i: progress(n + i)) if progress else None)


def measure(task, ref, keep=False, objectives=None, progress=None):
    """The model as it is now, on the task's batches, against the float
    reference: dict(kl, flips, loss, metric) (NaN where the task has no loss
    or metric), with keep also `units`: per unit (a sample, or a batch for
    metrics given per batch) the (flip sum, flip count) and (metric sum,
    metric count) pairs, for paired standard errors."""
    want = set(objectives or ref.need)
    kl = positions = flips = fcount = loss = samples = msum = mcount = 0.0
    units_f, units_m = [], []
    with torch.no_grad():
        for i, (b, lp_ref, dec_ref) in enumerate(zip(task.batches, ref.logp, ref.dec)):
            if progress:
                progress(i)
            out = task.forward(b)
            lg = task.logits(out)
            lp = F.log_softmax(lg, -1)
            if "kl" in want:
                kl += (lp_ref.exp() * (lp_ref - lp)).sum().item()
            positions += lp.numel() // lp.shape[-1]
            n = task.samples(b, lg)
            samples += n
            if "flips" in want:
                dec = task.decisions(lg)
                if torch.is_tensor(dec):
                    diff = (dec != dec_ref).reshape(n if dec.numel() % n == 0 else 1, -1)
                    s = diff.sum(1).double().numpy()
                    c = np.full(len(s), diff.shape[1], dtype=np.float64)
                else:
                    s = np.array([edit_distance(h, r) for h, r in zip(dec, dec_ref)], dtype=float)
                    c = np.array([len(r) for r in dec_ref], dtype=float)
                flips += s.sum()
                fcount += c.sum()
                if keep:
                    units_f += list(zip(s, c))
            if "loss" in want and task.loss_fn is not None:
                loss += float(task.loss(out, b, lg))
            if "metric" in want and task.metric_fn is not None:
                u = metric_units(task.metric_fn(out, b))
                if keep:
                    units_m += u
                msum += sum(x for x, _ in u)
                mcount += sum(c for _, c in u)
    nan = float("nan")
    got = dict(kl=kl / positions if "kl" in want else nan,
               kl_sample=kl / samples if "kl" in want else nan,
               flips=float(flips / max(fcount, 1.0)) if "flips" in want else nan,
               flips_sample=float(flips / samples) if "flips" in want and samples else nan,
               loss=loss / samples if "loss" in want and task.loss_fn is not None else nan,
               metric=msum / mcount if "metric" in want and task.metric_fn is not None
               and mcount else nan)
    if keep:
        got["units"] = dict(flips=units_f, metric=units_m)
    return got


def degradation(task, ref, got, objective):
    """How much worse the model is than the float model by the objective
    (>= 0 when worse): kl and flips as measured, loss and metric as the
    increase (a higher-is-better metric: the decrease)."""
    if objective in ("kl", "flips"):
        return got[objective]
    if objective == "loss":
        if task.loss_fn is None:
            fail(task.tool, f"objective 'loss' needs a loss: give 'loss' in {task.spec} or --loss")
        return got["loss"] - ref.float["loss"]
    if task.metric_fn is None:
        fail(task.tool, f"objective 'metric' needs a metric: give 'metric' in {task.spec} or "
                        "--metric")
    d = got["metric"] - ref.float["metric"]
    return -d if task.higher_is_better else d


def paired(a, b):
    """Difference of two ratio estimates over the same units, (sum_a - sum_b) /
    count, with its standard error (the ratio estimator's): a, b lists of
    (sum, count) with equal counts unit by unit."""
    if not a or len(a) != len(b):
        return float("nan"), float("nan")
    sa = np.array([x[0] for x in a])
    sb = np.array([x[0] for x in b])
    c = np.array([x[1] for x in a])
    total = c.sum()
    if total <= 0:
        return float("nan"), float("nan")
    d = sa - sb
    D = d.sum() / total
    se = float(np.sqrt(((d - D * c) ** 2).sum() * len(d) / max(len(d) - 1, 1)) / total)
    return float(D), se


def check_objective(task, objective):
    if objective not in OBJECTIVES:
        fail(task.tool, f"objective '{objective}': expected one of {', '.join(OBJECTIVES)}")
    if objective == "loss" and task.loss_fn is None:
        fail(task.tool, f"objective 'loss' needs the user's loss: give 'loss' in {task.spec}'s "
                        "result or --loss MODULE:FUNCTION")
    if objective == "metric" and task.metric_fn is None:
        fail(task.tool, f"objective 'metric' needs the user's metric: give 'metric' in "
                        f"{task.spec}'s result or --metric MODULE:FUNCTION")


def add_arguments(ap, objective_default=None):
    """The objective options every tool shares."""
    ap.add_argument("--class-dim", type=int, default=-1,
                    help="the classes' axis of the model's output (default: the last)")
    ap.add_argument("--loss", metavar="MODULE:FUNCTION",
                    help="the user's loss(outputs, batch) (instead of the spec's 'loss')")
    ap.add_argument("--metric", metavar="MODULE:FUNCTION",
                    help="the user's metric(outputs, batch) (instead of the spec's 'metric')")
    ap.add_argument("--outputs", choices=OUTPUTS, default=None,
                    help="what the model's scores are: logits, probs (e.g. an exported "
                         "softmax) or log-probs; default: the spec's 'outputs', else auto "
                         "(detected on the first batch, said on stderr)")
    ap.add_argument("--decode", metavar="argmax|ctc|MODULE:FUNCTION",
                    help="how decisions are read off the logits, for flips (default: the "
                         "spec's 'decode', else argmax)")
    if objective_default:
        ap.add_argument("--objective", choices=OBJECTIVES, default=objective_default,
                        help=f"what a plan is measured by (default: {objective_default}); see "
                             "tools/objective.py")


def task_from_args(args, tool, spec=None):
    return Task(spec or args.spec, tool, args.class_dim, loss=args.loss, metric=args.metric,
                decode=args.decode, outputs=getattr(args, "outputs", None))
