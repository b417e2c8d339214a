"""Measure every layer's candidates end to end: the slow, exact reference.

    /usr/bin/python3 tools/measure_deltas.py CONFIG MODULE:FUNCTION -o deltas.csv
        [--measure kl|loss] [--class-dim -1] [--bitplan PATH] [--work DIR] [-q]

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

Cost: one pass over the batches per layer and candidate.  Progress goes to
stderr on a terminal.  MODULE:FUNCTION returns (model, loader[, loss_fn]) as
for tools/capture.py.
"""
import argparse
import csv
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bitplan_torch import (Applied, QuantizedFile, bitplan_path, fail, float_outputs,  # noqa: E402
                           layers_of, load_spec, measure, read_csv, run_bitplan)
from progress import Progress  # noqa: E402

TOOL = "measure_deltas"


def candidate_files(exe, config, rows, work, quiet):
    """One quantized-weights file per distinct (wbits, abits, quantizer)."""
    files = {}
    for key in sorted({(int(r["wbits"]), int(r["abits"]), r["quantizer"]) for r in rows}):
        w, a, q = key
        path = os.path.join(work, f"w{w}a{a}-{q}.safetensors")
        run_bitplan(exe, "quantize", config, "--wbits", str(w), "--abits", str(a),
                    "--quantizer", q, "-o", path, "-q", tool=TOOL)
        files[key] = path
    return files


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config")
    ap.add_argument("spec")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--measure", choices=("kl", "loss"), default="kl")
    ap.add_argument("--class-dim", type=int, default=-1)
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
        names = layers_of(model)
        for r in rows:
            if r["layer"] not in names:
                fail(TOOL, f"{args.config}: layer '{r['layer']}' is not an nn.Linear or nn.Conv2d "
                           f"of {args.spec}")
        files = candidate_files(exe, args.config, rows, work, args.quiet)
        ref = float_outputs(model, batches, args.class_dim)
        base = measure(model, batches, ref, loss_fn, args.class_dim)
        if args.measure == "loss" and base["loss"] != base["loss"]:
            fail(TOOL, f"--measure loss needs labels (batch[1]) or a loss_fn from {args.spec}")
        applied = Applied(model)
        prog = Progress(TOOL, len(rows), args.quiet, "candidates")
        delta = {}
        done = 0
        for key, path in files.items():              # one file in memory at a time
            qf = QuantizedFile(path, TOOL)
            for r in rows:
                if (int(r["wbits"]), int(r["abits"]), r["quantizer"]) != key:
                    continue
                prog(done, r["layer"])
                applied.set(r["layer"], *qf.layer(r["layer"]))
                got = measure(model, batches, ref, loss_fn, args.class_dim)
                applied.restore(r["layer"])
                delta[id(r)] = got["kl"] if args.measure == "kl" else got["loss"] - base["loss"]
                done += 1
        prog.close()
    out = os.path.abspath(args.output)
    fd, tmp_path = tempfile.mkstemp(prefix=".deltas-", dir=os.path.dirname(out))
    with os.fdopen(fd, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["layer", "wbits", "abits", "quantizer", "loss_delta", "params",
                    "weight_bits", "macs"])
        for r in rows:
            w.writerow([r["layer"], r["wbits"], r["abits"], r["quantizer"],
                        repr(float(delta[id(r)])), r["params"], r["weight_bits"], r["macs"]])
    os.replace(tmp_path, out)
    if not args.quiet:
        print(f"{TOOL}: {len(rows)} candidates of {len({r['layer'] for r in rows})} layers, "
              f"{args.measure} on {len(batches)} batches -> {args.output} "
              f"({time.time() - t0:.1f} s)")


if __name__ == "__main__":
    main()
