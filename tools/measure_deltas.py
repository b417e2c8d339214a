"""Measure every layer's candidates end to end: the slow, exact reference.

    /usr/bin/python3 tools/measure_deltas.py CONFIG MODULE:FUNCTION -o deltas.csv
        [--measure kl|loss] [--heldout MODULE:FUNCTION] [--class-dim -1]
        [--bitplan PATH] [--work DIR] [-q]

For every layer and every candidate of the config's sensitivity table, the
model gets that one layer quantized (bitplan's own weights for that
candidate, from `bitplan quantize`, and its inputs fake-quantized with the
activation grid the candidate uses) and everything else in float; the loss
of that model is measured on the spec's batches (the calibration data):
`kl` (default) the mean KL divergence per position from the float model's
predictions, `loss` the increase of the mean loss per position.  Writes a
table for `bitplan solve --table deltas.csv` (or `sweep --table`), with the
columns of the sensitivity table and the measured value as `loss_delta`:

    layer,wbits,abits,quantizer,loss_delta,params,weight_bits,macs

Cost: one pass over the batches per layer and candidate.  --heldout measures
on other batches than the calibration spec's (GPTQ and ERQ fit their weights
to the calibration inputs, so their candidates look better there than they
are).  Progress goes to
stderr on a terminal.  MODULE:FUNCTION returns (model, loader[, loss_fn]) as
for tools/capture.py.
"""
import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bitplan_torch import (bitplan_path, check_layers, float_outputs, load_spec,  # noqa: E402
                           measure_deltas, quantize_candidates, read_csv, run_bitplan,
                           write_deltas)
from progress import Progress  # noqa: E402

TOOL = "measure_deltas"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config")
    ap.add_argument("spec")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--measure", choices=("kl", "loss"), default="kl")
    ap.add_argument("--class-dim", type=int, default=-1)
    ap.add_argument("--heldout", metavar="MODULE:FUNCTION",
                    help="measure on these batches instead of the spec's (data GPTQ and ERQ "
                         "did not fit their weights to)")
    ap.add_argument("--bitplan", help="the bitplan binary (default: $BITPLAN or build/bitplan)")
    ap.add_argument("--work", help="keep the per-candidate weights here (default: a temporary "
                                   "directory)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    exe = bitplan_path(args.bitplan)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or tmp
        os.makedirs(work, exist_ok=True)
        table = os.path.join(work, "table.csv")
        run_bitplan(exe, "sensitivity", args.config, "-o", table, "-q", tool=TOOL)
        rows = read_csv(table)
        model, batches, loss_fn = load_spec(args.spec, TOOL)
        if args.heldout:
            batches = load_spec(args.heldout, TOOL)[1]
        check_layers(rows, model, args.config, args.spec, TOOL)
        keys = {(int(r["wbits"]), int(r["abits"]), r["quantizer"]) for r in rows}
        files = quantize_candidates(exe, args.config, keys, work, TOOL)
        ref = float_outputs(model, batches, args.class_dim)
        prog = Progress(TOOL, len(rows), args.quiet, "candidates")
        deltas = measure_deltas(model, batches, ref, rows, files, loss_fn, args.class_dim,
                                args.measure, prog, TOOL)
        prog.close()
    write_deltas(args.output, rows, deltas)
    if not args.quiet:
        print(f"{TOOL}: {len(rows)} candidates of {len({r['layer'] for r in rows})} layers, "
              f"{args.measure} on {len(batches)} batches -> {args.output} "
              f"({time.time() - t0:.1f} s)")


if __name__ == "__main__":
    main()
