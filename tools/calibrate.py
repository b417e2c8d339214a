"""Calibrate the sensitivity metrics against what the model really loses.

    /usr/bin/python3 tools/calibrate.py CONFIG MODULE:FUNCTION -o scales.csv
        [--objective kl|flips|loss|metric] [--heldout MODULE:FUNCTION]
        [--at BITS] [--exponent B] [--loss M:F] [--metric M:F] [--decode D]
        [--class-dim -1] [--bitplan PATH] [--work DIR] [--threads N] [-q]

A metric predicts each layer's cost from that layer alone (K-FAC's loss
increase, the decisions its output error flips, ...) under assumptions that
real models break: conv positions are not independent, softmaxes and
LayerNorms saturate, a few positions carry the decisions.  Its absolute
value can be far from what the user measures, and its ratio between layers
off by as much.  In the medium-bit regime the loss increase is close to
linear in per-layer errors with per-layer coefficients (HIGGS's linearity
theorem), so one scale per layer fixes both: this tool measures, for every
layer, the objective (tools/objective.py) with that layer alone quantized at
the two candidate weight widths nearest --at (default: the config's
budget.avg_bits, else 4) and at its lowest width (the one a plan can drop it
to: errors there are where a metric's extrapolation is most often wrong, and
an underestimate is what the integer program would exploit), at the config's
lowest activation width, with every quantizer of the table, on the spec's
batches or --heldout's.  Where no point moves the objective by more than its
graininess (fewer than 10 flipped decisions; for other objectives, no
increase), the next lower width is measured too, until one does.

Objectives do not all add up over layers: KL and losses do (to second
order), flips do not (a decision flips when the perturbations of all layers
together cross its margin: flips grow like the perturbation's standard
deviation, and it is the variances that add).  So the scales are fitted in
additive units, u = measured^(1 / exponent), with exponent 1 for kl and loss,
0.5 for flips and, for the user's metric, estimated from the measurements
(the median log-log slope between each layer's points, in [0.25, 1]; or
--exponent).  At each measured width the scale is u / the metric (summed over
quantizers); between measured widths its logarithm is interpolated, beyond
them it is held.  Flips are counts, and a layer measured at 5 bits may flip
2 of 2,048 decisions where its true rate is 5: the integer program would pick
exactly the candidates whose counts came out low and the plan would predict
half of what it loses.  So for flips the ratios are estimated from all counts
together (a Poisson model with a layer effect and a width effect, and each
point's own departure from it kept as far as the counts' excess over Poisson
noise supports it: smooth_counts()).  It writes

    layer,metric,objective,exponent,wbits,scale,points,measured,predicted

one row per layer, metric the table holds and quantized weight width
(measured: the sum of u at that width, empty where it was not measured).
`metric_scales: scales.csv` in the config (or `bitplan run --metric-scales
scales.csv`) then multiplies every candidate's error by its layer's scale:
the plan's predicted_error is in additive units, its `predicted` the
objective (predicted_error^exponent), and `max_error` budgets are in the
objective's units, the loss the user will measure.  A layer whose measured
change is zero at every point (kl, loss, metric) takes the median scale of
the others.  Cost:
about two passes over the batches per layer and quantizer
(tools/measure_deltas.py measures every candidate).  MODULE:FUNCTION
follows tools/objective.py.
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bitplan_torch import (Reference, bitplan_path, check_layers, fail,  # noqa: E402
                           measure_deltas, quantize_candidates, read_csv, run_bitplan)
from objective import add_arguments, check_objective, task_from_args  # noqa: E402
from progress import Progress  # noqa: E402

TOOL = "calibrate"
METRICS = ("mse", "relative", "weight", "hawq", "fisher", "kfac", "margin")
EXPONENT = {"kl": 1.0, "loss": 1.0, "flips": 0.5}   # metric: estimated
MIN_FLIPS = 10


def budget_bits(exe, config, work):
    """The config's budget.avg_bits, or None (no budget)."""
    path = os.path.join(work, "budget.json")
    r = subprocess.run([exe, "solve", config, "-o", path, "-q"], capture_output=True, text=True)
    if r.returncode != 0:
        return None
    with open(path) as f:
        return json.load(f).get("budget", {}).get("avg_bits")


def widths_by_layer(rows):
    """{layer: (the row indices, its quantized weight widths, its lowest
    activation width)}."""
    out = {}
    for i, r in enumerate(rows):
        out.setdefault(r["layer"], []).append(i)
    return {layer: (idx, sorted({int(rows[i]["wbits"]) for i in idx
                                 if int(rows[i]["wbits"]) < 16}),
                    min(int(rows[i]["abits"]) for i in idx)) for layer, idx in out.items()}


def rows_at(rows, idx, widths, abits):
    return [i for i in idx if int(rows[i]["wbits"]) in widths and int(rows[i]["abits"]) == abits]


def resolved(value, objective, counts):
    """Is a measured change above its own graininess?  Flips are counts of
    decisions: at least MIN_FLIPS of them; other objectives: positive."""
    if objective == "flips":
        return value * counts >= MIN_FLIPS
    return value > 0


def fit(rows, measured, metrics, exponent, widths, counts=None):
    """{(layer, metric, wbits): (scale, points, measured, predicted)} for every
    quantized width of each layer.  In additive units u = measured^(1 /
    exponent), the ratio u / predicted at each measured width (summed over
    quantizers).  Where the objective counts decisions (counts: how many;
    flips) the ratios are estimated from the counts by smooth_counts(): a
    layer that flips 2 of 2,048 decisions at 5 bits could as well have
    flipped 0 or 5, and the integer program would pick exactly the
    candidates whose counts came out low.  Between measured widths the
    logarithm of the ratio is interpolated, beyond them held flat; a layer
    with nothing measured (or, without counts, no change at any width)
    takes, per width, the median ratio of the others."""
    acc = {}                                    # (layer, metric, w) -> [n, u, p, k]
    for r, m in zip(rows, measured):
        w = int(r["wbits"])
        for k in metrics:
            p = float(r[k])
            if p > 0:
                s = acc.setdefault((r["layer"], k, w), [0, 0.0, 0.0, 0.0])
                s[0] += 1
                s[1] += max(m, 0.0) ** (1.0 / exponent)
                s[2] += p
                s[3] += max(m, 0.0) * counts if counts else 0.0
    ratio = {}
    for k in metrics:
        mine = {(l, w): v for (l, kk, w), v in acc.items() if kk == k}
        if counts:
            ratio.update({(l, k, w): r for (l, w), r in
                          smooth_counts(mine, exponent, counts).items()})
        else:
            ratio.update({(l, k, w): us / ps for (l, w), (n, us, ps, _) in mine.items()
                          if us > 0})
    out, pooled = {}, {}
    for layer, ws in widths.items():
        for k in metrics:
            known = sorted((w, np.log(r)) for (l, kk, w), r in ratio.items()
                           if l == layer and kk == k)
            for w in ws:
                n, us, ps, _ = acc.get((layer, k, w), (0, 0.0, 0.0, 0.0))
                if not known:
                    out[(layer, k, w)] = [None, n, us, ps]
                    continue
                below = [x for x in known if x[0] <= w]
                above = [x for x in known if x[0] >= w]
                if below and above and below[-1][0] != above[0][0]:
                    (w0, y0), (w1, y1) = below[-1], above[0]
                    t = (w - w0) / (w1 - w0)
                    y = (1 - t) * y0 + t * y1
                else:
                    y = (below[-1] if below else above[0])[1]
                out[(layer, k, w)] = [float(np.exp(y)), n, us, ps]
                pooled.setdefault((k, w), []).append(float(np.exp(y)))
    for key, v in out.items():
        if v[0] is None:
            pool = pooled.get((key[1], key[2]))
            v[0] = float(np.median(pool)) if pool else 0.0
    return out


def smooth_counts(points, exponent, counts):
    """{(layer, width): (n, u, p, k)} -> {(layer, width): ratio u / p}, from
    the counts k (flipped decisions, summed over n quantizers) rather than
    from each point alone.  If the scales were exact, k would be Poisson
    with mean n counts (r p / n)^exponent.  The model: mean mu = exp(c_width
    + d_layer) x, x = (p / n)^exponent, fitted by Poisson maximum likelihood
    (iterative proportional fitting; half a count of prior on each effect,
    so that a layer that flipped nothing still has a finite effect); each
    point's own departure from it is a gamma factor whose variance is
    estimated from the counts' excess over Poisson noise (method of
    moments), and its posterior mean (alpha + k) / (alpha + mu) is kept.  A
    point of hundreds of counts keeps about what it measured; a point of a
    few counts leans on its layer's other widths and on how all layers move
    between widths.  Zero counts are evidence (a low rate), not gaps."""
    keys = [key for key, v in points.items() if v[2] > 0]
    if not keys:
        return {}
    layers = sorted({l for l, _ in keys})
    widths = sorted({w for _, w in keys})
    x = {key: (points[key][2] / points[key][0]) ** exponent for key in keys}
    kk = {key: points[key][3] for key in keys}
    by_layer = {l: [key for key in keys if key[0] == l] for l in layers}
    by_width = {w: [key for key in keys if key[1] == w] for w in widths}
    k_layer = {l: sum(kk[key] for key in mine) + 0.5 for l, mine in by_layer.items()}
    k_width = {w: sum(kk[key] for key in mine) + 0.5 for w, mine in by_width.items()}
    c = {w: 0.0 for w in widths}
    d = {l: 0.0 for l in layers}
    for _ in range(500):
        prev = dict(d)
        for l, mine in by_layer.items():
            d[l] = np.log(k_layer[l] / sum(np.exp(c[key[1]]) * x[key] for key in mine))
        for w, mine in by_width.items():
            c[w] = np.log(k_width[w] / sum(np.exp(d[key[0]]) * x[key] for key in mine))
        if max(abs(d[l] - prev[l]) for l in layers) < 1e-12:
            break
    mu = {key: np.exp(c[key[1]] + d[key[0]]) * x[key] for key in keys}
    # the variance phi of the gamma factor: each point's ((k - mu)^2 - k) /
    # mu^2 estimates it, with a variance of about 2 (phi + 1 / mu)^2; their
    # mean weighted by the inverse of that (iterated from phi = 0, where the
    # weights are mu^2), with the effects' degrees of freedom given back
    df = len(keys) - len(layers) - len(widths) + 1
    z = {key: ((kk[key] - mu[key]) ** 2 - kk[key]) / mu[key] ** 2 for key in keys}
    phi = 0.0
    for _ in range(20 if df > 0 else 0):
        wt = {key: (max(phi, 0.0) + 1 / mu[key]) ** -2 for key in keys}
        phi = sum(wt[key] * z[key] for key in keys) / sum(wt.values()) * len(keys) / df
    out = {}
    for key in keys:
        lam = mu[key] if phi <= 0 else (1 / phi + kk[key]) / (1 / phi + mu[key]) * mu[key]
        n, _, p, _ = points[key]
        out[key] = n * (lam / n / counts) ** (1.0 / exponent) / p
    return out


def estimate_exponent(rows, measured, metric):
    """beta in measured ~ predicted^beta, the median over layers of the slope
    between their lowest and highest measured point (log-log), clipped to
    [0.25, 1]; 1 when no layer has two resolved points."""
    by = {}
    for r, m in zip(rows, measured):
        p = float(r[metric])
        if m > 0 and p > 0:
            by.setdefault(r["layer"], []).append((p, m))
    slopes = []
    for pts in by.values():
        pts.sort()
        (p0, m0), (p1, m1) = pts[0], pts[-1]
        if p1 > p0 * 1.5:
            slopes.append(np.log(m1 / m0) / np.log(p1 / p0))
    return float(np.clip(np.median(slopes), 0.25, 1.0)) if slopes else 1.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "),
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("config", help="the bitplan config whose table is calibrated")
    ap.add_argument("spec", help="MODULE:FUNCTION: the model and its batches (tools/objective.py)")
    ap.add_argument("-o", "--output", required=True, help="the scales (CSV)")
    add_arguments(ap, objective_default="flips")
    ap.add_argument("--heldout", metavar="MODULE:FUNCTION",
                    help="measure on these batches instead of the spec's")
    ap.add_argument("--at", type=float,
                    help="measure at the two weight widths nearest this (default: the config's "
                         "budget.avg_bits, else 4)")
    ap.add_argument("--exponent", type=float,
                    help="beta in objective ~ predicted^beta (default: 1 for kl and loss, 0.5 "
                         "for flips, estimated from the measurements for metric)")
    ap.add_argument("--bitplan", help="the bitplan binary (default: $BITPLAN or build/bitplan)")
    ap.add_argument("--work", help="keep the per-candidate weights here")
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
        metrics = [k for k in METRICS if rows and all(r.get(k, "") != "" for r in rows)]
        at = args.at if args.at is not None else budget_bits(exe, args.config, work) or 4.0
        layers = widths_by_layer(rows)
        if not any(w for _, w, _ in layers.values()):
            fail(TOOL, f"{args.config}: no quantized candidate to measure")
        if args.heldout:
            task.with_batches(args.heldout)
        check_layers(rows, task.model, args.config, args.spec, TOOL)
        ref = Reference(task, (args.objective,))
        counts = sum(c for _, c in ref.float["units"]["flips"])
        # the two widths nearest `at`; where neither resolves the change, the next
        # lower width too, until one does or none is left
        want = {l: sorted(set(sorted(w, key=lambda x: (abs(x - at), x))[:2]) | {min(w)})
                for l, (_, w, _) in layers.items() if w}
        measured, files = {}, {}
        while True:
            pick = sorted({i for l, (idx, _, a) in layers.items()
                           for i in rows_at(rows, idx, want[l], a)} - set(measured))
            if not pick:
                break
            keys = {(int(rows[i]["wbits"]), int(rows[i]["abits"]), rows[i]["quantizer"])
                    for i in pick} - set(files)
            files.update(quantize_candidates(exe, args.config, keys, work, TOOL))
            need = {k: files[k] for k in {(int(rows[i]["wbits"]), int(rows[i]["abits"]),
                                           rows[i]["quantizer"]) for i in pick}}
            prog = Progress(TOOL, len(pick), args.quiet, "candidates")
            got = measure_deltas(task, ref, [rows[i] for i in pick], need, args.objective, prog,
                                 TOOL)
            prog.close()
            measured.update(zip(pick, got))
            for l, (idx, w, a) in layers.items():
                mine = rows_at(rows, idx, want.get(l, []), a)
                lower = [x for x in w if x < min(want.get(l, [99]))]
                if lower and not any(resolved(measured[i], args.objective, counts) for i in mine):
                    want[l] = want[l] + [max(lower)]
    pick = sorted(measured)
    prows, values = [rows[i] for i in pick], [measured[i] for i in pick]
    exponent = (args.exponent if args.exponent else EXPONENT.get(args.objective) or
                estimate_exponent(prows, values, "error"))
    every = {}                     # every candidate width (16 too: its activation error)
    for r in rows:
        every.setdefault(r["layer"], set()).add(int(r["wbits"]))
    scales = fit(prows, values, metrics, exponent, {l: sorted(w) for l, w in every.items()},
                 counts if args.objective == "flips" else None)
    out = os.path.abspath(args.output)
    fd, tmp = tempfile.mkstemp(prefix=".scales-", dir=os.path.dirname(out))
    with os.fdopen(fd, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["layer", "metric", "objective", "exponent", "wbits", "scale", "points",
                    "measured", "predicted"])
        for (layer, k, wb), (s, n, us, ps) in scales.items():
            w.writerow([layer, k, args.objective, repr(exponent), wb, repr(float(s)), n,
                        repr(float(us)) if n else "", repr(float(ps)) if n else ""])
    os.replace(tmp, out)
    if not args.quiet:
        print(f"{TOOL}: {len(layers)} layers, {len(pick)} candidates measured ({args.objective} "
              f"on {len(task.batches)} batches, at about {at:g} bits; exponent {exponent:g}) -> "
              f"{args.output} ({time.time() - t0:.1f} s)")
        for k in metrics:
            v = [s for (l, kk, _), (s, *_) in scales.items() if kk == k and s > 0]
            if v:
                print(f"{TOOL}: {k}: measured / predicted from {min(v):.3g} to {max(v):.3g} "
                      f"(median {np.median(v):.3g})")


if __name__ == "__main__":
    main()
