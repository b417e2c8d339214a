"""Apply a plan to the user's PyTorch model and report what it loses.

    /usr/bin/python3 tools/evaluate_plan.py MODULE:FUNCTION --weights FILE
        [--plan PLAN] [--against FILE] [--loss M:F] [--metric M:F]
        [--decode argmax|ctc|M:F] [--class-dim -1] [--json] [--threads N] [-q]

MODULE:FUNCTION follows the contract of tools/objective.py, with the data to
evaluate on (held-out data, not the calibration set).  FILE is the plan's
quantized weights (output.weights of `bitplan run`, or `bitplan quantize -o`
for a uniform plan): every layer in it gets its dequantized weights and bias,
and its inputs are fake-quantized with the activation grid the plan measured
(exactly as bitplan's sensitivity stage did: per tensor, per token, log2 or
power-of-two factors; conv inputs on their unfolded patches where the grid
is per patch or per column).

Reports, against the float model on the same batches, every objective the
spec allows: KL(float || plan) per position, flips (the share of the float
model's decisions the plan changes: top-1 per position, or for sequences the
edit distance of the decoded outputs over the float model's), the user's loss
per sample and the user's metric (e.g. a character error rate), float and
plan.  With --plan (the plan's YAML or JSON) it also sets the plan's
predicted error beside what was measured: the objective its metric was
calibrated to (plan model.predicts, from tools/calibrate.py), or for an
uncalibrated kfac plan the KL per sample that kfac predicts, with the ratio.
With --against (another plan's weights, e.g. the uniform plan of the same
size) it reports the difference of each objective between the two plans on
the same batches, with its paired standard error.
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bitplan_torch import QuantizedFile, Reference, degradation, fail, measure_plan  # noqa: E402
from progress import Progress  # noqa: E402
from objective import add_arguments, paired, task_from_args  # noqa: E402

TOOL = "evaluate_plan"


def read_plan(path):
    """A plan's model section and predicted total (YAML or JSON)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        fail(TOOL, f"{path}: cannot read: {e}")
    if path.endswith(".json"):
        try:
            p = json.loads(text)
        except ValueError as e:
            fail(TOOL, f"{path}: not a plan (JSON: {e})")
        return p.get("model", {}), p.get("totals", {})
    # the YAML bitplan writes: the keys needed here are scalars of two sections
    model, totals, sec = {}, {}, None
    for line in text.splitlines():
        if line and not line.startswith(" "):
            sec = line.rstrip(":")
            continue
        k, _, v = line.strip().partition(": ")
        if sec in ("model", "totals") and k and v:
            v = v.strip('"')
            try:
                v = float(v)
            except ValueError:
                pass
            (model if sec == "model" else totals)[k] = v
    return model, totals


def predicted_vs_measured(task, ref, got, plan_path):
    """(what, predicted, measured) for the plan's total predicted error."""
    model, totals = read_plan(plan_path)
    objective = model.get("predicts")
    pred = totals.get("predicted" if objective else "predicted_error")
    if pred is None:
        fail(TOOL, f"{plan_path}: no totals.predicted_error")
    if objective:
        if objective not in ("kl", "flips", "loss", "metric"):
            fail(TOOL, f"{plan_path}: model.predicts '{objective}' is not an objective")
        return objective, float(pred), degradation(task, ref, got, objective)
    if model.get("metric") == "kfac":           # KL summed over a sample's positions
        return "kl per sample (kfac, uncalibrated)", float(pred), got["kl_sample"]
    if model.get("metric") == "margin" and task.decode == "argmax":
        return "flipped decisions per sample (margin, uncalibrated)", float(pred), \
            got["flips_sample"]
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "),
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("spec", help="MODULE:FUNCTION: the model and held-out batches")
    ap.add_argument("--weights", required=True, help="the plan's quantized weights")
    ap.add_argument("--plan", help="the plan (YAML or JSON): report predicted against measured")
    ap.add_argument("--against", metavar="FILE",
                    help="another plan's quantized weights: paired differences")
    add_arguments(ap)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    qf = QuantizedFile(args.weights, TOOL)
    other = QuantizedFile(args.against, TOOL) if args.against else None
    task = task_from_args(args, TOOL)
    nb = len(task.batches)
    prog = Progress(f"{TOOL}: float model", 2 * nb, args.quiet, "batches")
    ref = Reference(task, progress=prog)
    prog.close()
    base = ref.float
    prog = Progress(f"{TOOL}: {args.weights}", nb, args.quiet, "batches")
    got = measure_plan(task, ref, qf, keep=True, tool=TOOL, progress=prog)
    prog.close()
    res = dict(layers=len(qf.names), float_loss=base["loss"], float_metric=base["metric"],
               kl=got["kl"], kl_sample=got["kl_sample"], flips=got["flips"], loss=got["loss"],
               metric=got["metric"])
    if args.plan:
        pm = predicted_vs_measured(task, ref, got, args.plan)
        if pm:
            res.update(predicted_what=pm[0], predicted=pm[1], measured=pm[2],
                       measured_over_predicted=pm[2] / pm[1] if pm[1] else float("nan"))
    if other:
        prog = Progress(f"{TOOL}: {args.against}", nb, args.quiet, "batches")
        theirs = measure_plan(task, ref, other, keep=True, tool=TOOL, progress=prog)
        prog.close()
        for k in ("flips", "metric"):
            d, se = paired(got["units"][k], theirs["units"][k])
            res[f"{k}_vs_against"], res[f"{k}_vs_against_se"] = d, se
        res["kl_vs_against"] = got["kl"] - theirs["kl"]
    if args.json:
        print(json.dumps(res))
        return
    if args.quiet:
        return
    print(f"plan ({len(qf.names)} quantized layers), against the float model on "
          f"{len(task.batches)} batches:")
    print(f"  KL to float {got['kl']:.6g} per position ({got['kl_sample']:.6g} per sample); "
          f"flips {100 * got['flips']:.3f} % of the float model's decisions")
    if task.loss_fn is not None:
        print(f"  loss {got['loss']:.6g} per sample (float {base['loss']:.6g}, "
              f"{got['loss'] - base['loss']:+.6g})")
    if task.metric_fn is not None:
        name = getattr(task.metric_fn, "__name__", "metric")
        print(f"  {name} {got['metric']:.6g} (float {base['metric']:.6g}, "
              f"{got['metric'] - base['metric']:+.6g})")
    if "predicted" in res:
        print(f"  predicted {res['predicted_what']} {res['predicted']:.6g}, measured "
              f"{res['measured']:.6g} ({res['measured_over_predicted']:.3g}x the prediction)")
    if other:
        print(f"  against {args.against}: KL {res['kl_vs_against']:+.6g}, flips "
              f"{100 * res['flips_vs_against']:+.3f} ± {100 * res['flips_vs_against_se']:.3f} %"
              + (f", metric {res['metric_vs_against']:+.6g} ± {res['metric_vs_against_se']:.3g}"
                 if task.metric_fn is not None else ""))


if __name__ == "__main__":
    main()
