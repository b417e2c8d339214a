"""Measure every layer's candidates end to end: the slow, exact reference.

    /usr/bin/python3 tools/measure_deltas.py CONFIG MODULE:FUNCTION -o deltas.csv
        [--objective kl|flips|loss|metric] [--heldout MODULE:FUNCTION]
        [--loss M:F] [--metric M:F] [--decode argmax|ctc|M:F] [--class-dim -1]
        [--bitplan PATH] [--work DIR] [--threads N] [-q]

For every layer and every candidate of the config's sensitivity table, the
model gets that one layer quantized (bitplan's own weights for that
candidate, from `bitplan quantize`, and its inputs fake-quantized with the
activation grid the candidate uses) and everything else in float; the model
is then measured on the spec's batches (the calibration data) by the
objective (tools/objective.py): `kl` (default) the mean KL divergence per
position from the float model's predictions, `flips` the share of the float
model's decisions it changes, `loss` the increase of the user's loss per
sample, `metric` the change of the user's metric (its worsening).  Writes a
table for `bitplan solve --table deltas.csv` (or `run --errors`), with the
columns of the sensitivity table and the measured value as `loss_delta`:

    layer,wbits,abits,quantizer,loss_delta,params,weight_bits,macs

Cost: one pass over the batches per layer and candidate (tools/calibrate.py
measures one or two candidates per layer and scales a metric instead).
--heldout measures on other batches than the calibration spec's (GPTQ and
ERQ fit their weights to the calibration inputs, so their candidates look
better there than they are).  Progress goes to stderr on a terminal.
MODULE:FUNCTION follows the contract of tools/objective.py.
"""
import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bitplan_torch import (Reference, bitplan_path, check_layers, measure_deltas,  # noqa: E402
                           quantize_candidates, read_csv, run_bitplan, write_deltas)
from objective import add_arguments, check_objective, task_from_args  # noqa: E402
from progress import Progress  # noqa: E402

TOOL = "measure_deltas"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "),
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("config", help="the bitplan config whose table is measured")
    ap.add_argument("spec", help="MODULE:FUNCTION: the model and its batches (tools/objective.py)")
    ap.add_argument("-o", "--output", required=True, help="the measured table (CSV)")
    add_arguments(ap, objective_default="kl")
    ap.add_argument("--heldout", metavar="MODULE:FUNCTION",
                    help="measure on these batches instead of the spec's (data GPTQ and ERQ "
                         "did not fit their weights to)")
    ap.add_argument("--bitplan", help="the bitplan binary (default: $BITPLAN or build/bitplan)")
    ap.add_argument("--work", help="keep the per-candidate weights here (default: a temporary "
                                   "directory)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    exe = bitplan_path(args.bitplan)
    t0 = time.time()
    task = task_from_args(args, TOOL)
    check_objective(task, args.objective)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or tmp
        os.makedirs(work, exist_ok=True)
        table = os.path.join(work, "table.csv")
        run_bitplan(exe, "sensitivity", args.config, "-o", table, "-q", tool=TOOL)
        rows = read_csv(table)
        if args.heldout:
            task.with_batches(args.heldout)
        check_layers(rows, task.model, args.config, args.spec, TOOL)
        keys = {(int(r["wbits"]), int(r["abits"]), r["quantizer"]) for r in rows}
        files = quantize_candidates(exe, args.config, keys, work, TOOL)
        ref = Reference(task, (args.objective,))
        prog = Progress(TOOL, len(rows), args.quiet, "candidates")
        deltas = measure_deltas(task, ref, rows, files, args.objective, prog, TOOL)
        prog.close()
    write_deltas(args.output, rows, deltas)
    if not args.quiet:
        print(f"{TOOL}: {len(rows)} candidates of {len({r['layer'] for r in rows})} layers, "
              f"{args.objective} on {len(task.batches)} batches -> {args.output} "
              f"({time.time() - t0:.1f} s)")


if __name__ == "__main__":
    main()
