"""Apply a plan to the user's PyTorch model and report what it loses.

    /usr/bin/python3 tools/evaluate_plan.py MODULE:FUNCTION --weights FILE
        [--metric MODULE:FUNCTION] [--class-dim -1] [--json] [-q]

MODULE:FUNCTION returns (model, loader) or (model, loader, loss_fn) as for
tools/capture.py, with the data to evaluate on (held-out data, not the
calibration set).  FILE is the plan's quantized weights (output.weights of
`bitplan run`, or `bitplan quantize -o` for a uniform plan): every layer in
it gets its dequantized weights and bias, and its inputs are fake-quantized
with the activation grid the plan measured (exactly as bitplan's sensitivity
stage did: per tensor, per token, log2 or power-of-two factors; conv inputs
on their unfolded patches where the grid is per patch or per column).
Reports, against the float model on the same batches: KL(float || plan) per
position, the loss (loss_fn summed over a batch, else cross entropy against
batch[1], per position), top-1 accuracy against batch[1], and with --metric
the user's own metric (e.g. a character error rate) for both.
"""
import argparse
import importlib
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bitplan_torch import (Applied, QuantizedFile, fail, float_outputs, inputs_of,  # noqa: E402
                           layers_of, load_spec, measure)


def apply_file(model, qf, tool="evaluate_plan"):
    """Every layer of the quantized file into the model (an Applied)."""
    layers = layers_of(model)
    missing = [n for n in qf.names if n not in layers]
    if missing:
        fail(tool, f"{qf.path}: layer '{missing[0]}' is not an nn.Linear or nn.Conv2d of the model")
    a = Applied(model)
    for n in qf.names:
        w, b, grid = qf.layer(n)
        if w.size != layers[n].weight.numel():
            fail(tool, f"{qf.path}: layer '{n}' has {w.size} weights, the model's has "
                       f"{layers[n].weight.numel()}")
        a.set(n, w, b, grid)
    return a


def load_function(spec, tool):
    """The function MODULE:FUNCTION names."""
    if ":" not in spec:
        fail(tool, f"expected MODULE:FUNCTION, got '{spec}'")
    mod, fn = spec.split(":", 1)
    sys.path.insert(0, os.getcwd())
    try:
        return getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        fail(tool, f"cannot load {spec}: {e}")


def user_metric(model, batches, fn):
    """sum / count of fn(outputs, batch) over the batches (a number counts once)."""
    total = count = 0.0
    with torch.no_grad():
        for b in batches:
            v = fn(model(inputs_of(b)), b)
            s, n = v if isinstance(v, (tuple, list)) else (v, 1)
            total += float(s)
            count += float(n)
    return total / count if count else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("spec")
    ap.add_argument("--weights", required=True, help="the plan's quantized weights")
    ap.add_argument("--class-dim", type=int, default=-1)
    ap.add_argument("--metric", metavar="MODULE:FUNCTION",
                    help="a user metric: FUNCTION(outputs, batch) returns a number per batch, "
                         "or a (sum, count) pair; reported as sum / count over the batches")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    qf = QuantizedFile(args.weights, "evaluate_plan")
    model, batches, loss_fn = load_spec(args.spec, "evaluate_plan")
    metric = load_function(args.metric, "evaluate_plan") if args.metric else None
    ref = float_outputs(model, batches, args.class_dim)
    base = measure(model, batches, ref, loss_fn, args.class_dim)
    base_m = user_metric(model, batches, metric) if metric else None
    apply_file(model, qf)
    got = measure(model, batches, ref, loss_fn, args.class_dim)
    res = dict(layers=len(qf.names), float_loss=base["loss"], float_accuracy=base["accuracy"],
               loss=got["loss"], kl=got["kl"], accuracy=got["accuracy"])
    if metric:
        res.update(float_metric=base_m, metric=user_metric(model, batches, metric))
    if args.json:
        print(json.dumps(res))
    elif not args.quiet:
        print(f"float: loss {base['loss']:.5f}, accuracy {base['accuracy']:.4f}")
        print(f"plan ({len(qf.names)} quantized layers): loss {got['loss']:.5f} "
              f"(+{got['loss'] - base['loss']:.5f}), KL to float {got['kl']:.6f}, accuracy "
              f"{got['accuracy']:.4f} ({got['accuracy'] - base['accuracy']:+.4f})")
        if metric:
            print(f"{args.metric}: float {res['float_metric']:.6g}, plan {res['metric']:.6g}")


if __name__ == "__main__":
    main()
