"""What bitplan's plans lose on real models, by the task's own metric, against
bitplan's own uniform plans of the same size.

    /usr/bin/python3 bench/e2e/run.py [--build build] [--models cnn vit lm ocr]
        [--quantizers rtn gptq] [--bits 3 4 5] [--evals 300]
        [--out bench/e2e/results] [--plot docs/e2e-accuracy.png] [--work DIR [--reuse]]

For each model (bench/e2e/models.py: the demo CNN and the small ViT on
Fashion-MNIST, the character-level language model on Debian's fortunes, the
text-line recogniser on lines rendered from Debian's fortunes-zh; all
trained by the repository's own scripts):
  1. capture every layer's calibration inputs, its output Fisher (targets
     drawn from the model: per position, or CTC sequences for the
     recogniser) and its decision Fisher (tools/capture.py --fisher
     --margin);
  2. for each weight quantizer measure the sensitivity table once (weights
     2, 3, 4, 5, 6, 8 bits, MSE range; activations 8 bits, per-tensor
     min-max; every metric is a column of it) and every candidate's measured
     end-to-end deltas on other training data than the calibration inputs
     (tools/measure_deltas.py: each layer alone; KL to the float model,
     flips and the task metric);
  3. for each width w, bitplan's uniform plan (`bitplan quantize --wbits w
     --plan`), whose achieved average bits (scales included) U become the
     budget of every other plan: the IP plan of each metric (mse, relative,
     fisher, kfac, margin), the default route's IP plan (metric auto,
     calibrated by tools/calibrate.py at U on the held-out training data),
     the IP plan over the measured deltas, and the refined plan
     (tools/refine_plan.py from the calibrated config, on the held-out
     training data, kept only when better on the half it did not search);
  4. apply every distinct plan (bitplan's quantized weights and activation
     grids) to the test data: the task metric (accuracy, next-character
     accuracy, character error rate) with its paired standard error against
     the uniform plan, KL to the float model, flips, and the calibrated
     plan's predicted loss against the measured one;
  5. rank: Spearman correlation of each predictor with the measured
     single-layer deltas (task metric, KL) over every (layer, candidate),
     and, over every plan evaluated, between each predictor's total and
     the measured degradation.
Writes OUT/results.csv (one row per plan), OUT/predictors.csv, OUT/results.md
(tables) and the plot; prints the Markdown.  Needs Debian's python3-torch,
python3-numpy, python3-matplotlib, python3-pil, dataset-fashion-mnist,
fortunes, fortunes-zh, fonts-wqy-microhei and fonts-arphic-uming.
"""
import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))
import models  # noqa: E402
from bitplan_torch import (QuantizedFile, Reference, measure_deltas, measure_plan,  # noqa: E402
                           quantize_candidates, read_csv)
from objective import Task, paired  # noqa: E402

METRICS = ("mse", "relative", "fisher", "kfac", "margin")
PREDICTORS = METRICS + ("deltas",)
WBITS = (2, 3, 4, 5, 6, 8)
ABITS = 8
METHODS = ("uniform",) + METRICS + ("default", "deltas", "refined")
TASK = {"cnn": "accuracy", "vit": "accuracy", "lm": "next-character accuracy",
        "ocr": "character error rate"}


def spearman(a, b):
    def ranks(v):
        v = np.asarray(v, dtype=float)
        order = np.argsort(v, kind="mergesort")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for x in np.unique(v):                  # ties share their mean rank
            r[v == x] = r[v == x].mean()
        return r
    if len(a) < 3:
        return float("nan")
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def write_config(path, quantizer, outdir, scales=None):
    with open(path, "w") as f:
        f.write(f"""model: {{weights: weights.safetensors, calibration: calib.safetensors}}
candidates: {{wbits: {list(WBITS)}, abits: [{ABITS}]}}
weights: {{quantizer: {quantizer}, range: mse}}
activations: {{range: minmax}}
metric: auto
output: {{dir: {outdir}, weights: q.safetensors, formats: [json]}}
""" + (f"metric_scales: {scales}\n" if scales else ""))


class Bench:
    def __init__(self, args, arch, work):
        self.args, self.arch, self.work = args, arch, work
        self.exe = os.path.join(args.build, "bitplan")
        self.env = dict(os.environ, PYTHONPATH=HERE, BITPLAN=self.exe)
        self.test = Task(f"models:{arch}_test", got=getattr(models, f"{arch}_test")())
        self.ref = Reference(self.test)
        self.float = self.ref.float
        self.higher = self.test.higher_is_better
        self.seen = {}

    def bitplan(self, *a):
        r = subprocess.run([self.exe, *a, "-q"], capture_output=True, text=True, cwd=self.work)
        if r.returncode != 0:
            raise SystemExit(f"{self.arch}: bitplan {' '.join(a)}: {r.stderr.strip()}")

    def tool(self, name, *a):
        r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", name), *a, "-q"],
                           capture_output=True, text=True, cwd=self.work, env=self.env)
        if r.returncode != 0:
            raise SystemExit(f"{self.arch}: {name}: {r.stderr.strip()}")
        return r.stdout

    def evaluate(self, q, plan_path, qweights):
        """Test measurements of a plan (cached by its candidates)."""
        with open(os.path.join(self.work, plan_path)) as f:
            plan = json.load(f)
        key = (q, tuple((l["name"], l["wbits"], l["abits"]) for l in plan["layers"]))
        if key not in self.seen:
            qf = QuantizedFile(os.path.join(self.work, qweights))
            self.seen[key] = measure_plan(self.test, self.ref, qf, keep=True)
        return plan, self.seen[key]


def take_set(work, q, plan, weights, sub=""):
    """Copy the plan and weights of the output set `bitplan run` just wrote
    (out-Q/plan.json, out-Q/q.safetensors; refine_plan's in out-Q/refined/)
    to work/, leaving the set whole."""
    for name, dest in (("plan.json", plan), ("q.safetensors", weights)):
        shutil.copyfile(os.path.join(work, f"out-{q}", sub, name), os.path.join(work, dest))


def predictor_rows(arch, q, table, deltas):
    """Per (layer, candidate): every predictor and the measured deltas."""
    out = []
    for r, d in zip(table, deltas):
        row = dict(model=arch, quantizer=q, layer=r["layer"], wbits=int(r["wbits"]),
                   abits=int(r["abits"]), **{f"pred_{m}": float(r[m]) if r[m] else float("nan")
                                             for m in METRICS},
                   kl=d["kl"], flips=d["flips"], task=d["metric"])
        out.append(row)
    return out


def run_model(arch, args, rows, pred_rows, notes):
    work = os.path.join(args.work, arch)
    os.makedirs(work, exist_ok=True)
    t0 = time.time()
    b = Bench(args, arch, work)
    b.tool("capture.py", f"models:{arch}", "--out", ".", "--rows", "2048", "--fisher",
           "--margin")
    with open(os.path.join(work, "calib.safetensors"), "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        meta = json.loads(f.read(n)).get("__metadata__", {})
    rse = {k: [float(v) for kk, v in meta.items() if kk.endswith(f".{k}_rse")]
           for k in ("fisher", "margin")}
    notes[arch] = dict(rse_fisher=float(np.median(rse["fisher"])),
                       rse_fisher_max=max(rse["fisher"]),
                       rse_margin=float(np.median(rse["margin"])),
                       rse_margin_max=max(rse["margin"]), draws=meta.get("fisher", ""))
    print(f"{arch}: float {TASK[arch]} {b.float['metric']:.4f} ({time.time() - t0:.0f} s)",
          file=sys.stderr)
    held = Task(f"models:{arch}_heldout", got=getattr(models, f"{arch}_heldout")())
    held_ref = Reference(held, ("kl", "flips", "metric"))
    for q in args.quantizers:
        cfg = f"{q}.yaml"
        write_config(os.path.join(work, cfg), q, f"out-{q}")
        b.bitplan("sensitivity", cfg, "-o", f"table-{q}.csv")
        table = read_csv(os.path.join(work, f"table-{q}.csv"))
        files = quantize_candidates(b.exe, os.path.join(work, cfg),
                                    {(int(r["wbits"]), int(r["abits"]), r["quantizer"])
                                     for r in table}, work)
        deltas = measure_deltas(held, held_ref, table, files, ("kl", "flips", "metric"))
        pred_rows += predictor_rows(arch, q, table, deltas)
        with open(os.path.join(work, f"deltas-{q}.csv"), "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["layer", "wbits", "abits", "quantizer", "loss_delta", "params",
                        "weight_bits", "macs"])
            for r, d in zip(table, deltas):
                w.writerow([r["layer"], r["wbits"], r["abits"], r["quantizer"], repr(d["kl"]),
                            r["params"], r["weight_bits"], r["macs"]])
        pred = {(r["layer"], int(r["wbits"]), int(r["abits"])):
                dict({m: float(r[m]) if r[m] else float("nan") for m in METRICS},
                     deltas=d["kl"]) for r, d in zip(table, deltas)}
        for w in args.bits:
            b.bitplan("quantize", cfg, "--wbits", str(w), "--abits", str(ABITS), "-o",
                      "u.safetensors", "--plan", "u.json")
            with open(os.path.join(work, "u.json")) as f:
                U = json.load(f)["totals"]["avg_bits"]
            budget = ["--avg-bits", repr(U)]
            plans = {"uniform": ("u.json", "u.safetensors")}
            for m in METRICS:
                b.bitplan("run", cfg, "--metric", m, *budget)
                take_set(work, q, f"p-{m}.json", f"q-{m}.safetensors")
                plans[m] = (f"p-{m}.json", f"q-{m}.safetensors")
            # the default route: metric auto, calibrated at the budget
            b.tool("calibrate.py", cfg, f"models:{arch}_heldout", "-o", f"scales-{q}.csv",
                   "--at", repr(U))
            dcfg = f"{q}-default.yaml"
            write_config(os.path.join(work, dcfg), q, f"out-{q}", f"scales-{q}.csv")
            b.bitplan("run", dcfg, *budget)
            take_set(work, q, "p-default.json", "q-default.safetensors")
            plans["default"] = ("p-default.json", "q-default.safetensors")
            b.bitplan("run", cfg, "--errors", f"deltas-{q}.csv", *budget)
            take_set(work, q, "p-deltas.json", "q-deltas.safetensors")
            plans["deltas"] = ("p-deltas.json", "q-deltas.safetensors")
            b.tool("refine_plan.py", dcfg, f"models:{arch}_heldout", *budget, "--evals",
                   str(args.evals), "--deltas", f"deltas-{q}.csv", "--json", "refine.json")
            take_set(work, q, "p-refined.json", "q-refined.safetensors", "refined")
            plans["refined"] = ("p-refined.json", "q-refined.safetensors")
            with open(os.path.join(work, "refine.json")) as f:
                refine = json.load(f)
            uni = b.evaluate(q, *plans["uniform"])[1]["units"]["metric"]
            for method in METHODS:
                plan, got = b.evaluate(q, *plans[method])
                d, se = paired(got["units"]["metric"], uni)   # same test units
                p = {f"pred_{m}": sum(pred[(l["name"], l["wbits"], l["abits"])][m]
                                      for l in plan["layers"]) for m in PREDICTORS}
                measured = got[refine["objective"]] if refine["objective"] in ("kl", "flips") \
                    else None
                rows.append(dict(
                    model=arch, quantizer=q, bits=w, budget=round(U, 4), method=method,
                    avg_bits=round(plan["totals"]["avg_bits"], 4), task=got["metric"],
                    task_vs_uniform=d, task_vs_uniform_se=se, kl=got["kl"], flips=got["flips"],
                    predicted=plan["totals"]["predicted"] if method == "default" else "",
                    measured=measured if method == "default" else "",
                    kept=refine["kept"] if method == "refined" else "",
                    wbits="/".join(str(l["wbits"]) for l in plan["layers"]), **p))
            print(f"{arch}/{q}/{w} bits: {len(b.seen)} plans evaluated, "
                  f"{time.time() - t0:.0f} s", file=sys.stderr)
    return b.float["metric"], b.higher


def cases(rows, args, arch):
    """(quantizer, bits, {method: row}) of every evaluated case of a model."""
    for q in args.quantizers:
        for w in args.bits:
            mine = {r["method"]: r for r in rows
                    if r["model"] == arch and r["quantizer"] == q and r["bits"] == w}
            if mine:
                yield q, w, mine


def verdict(d, se, higher):
    """better / worse beyond noise (two standard errors), or even."""
    gain = d if higher else -d
    if gain > 2 * se:
        return "better"
    if gain < -2 * se:
        return "worse"
    return "even"


def markdown(rows, pred_rows, base, notes, args):
    out = []
    scale = {"cnn": 100, "vit": 100, "lm": 100, "ocr": 100}
    for arch in args.models:
        f, higher = base[arch]
        out.append(f"\n**{arch}** (float: {TASK[arch]} {100 * f:.2f} %): {TASK[arch]} (%) / KL "
                   f"to float per position (×10⁻³), at the uniform plan's achieved size\n")
        out.append("| quantizer | bits | avg bits | " + " | ".join(METHODS) + " |")
        out.append("| --- | ---: | ---: |" + " ---: |" * len(METHODS))
        for q, w, mine in cases(rows, args, arch):
            cells = [f"{scale[arch] * mine[m]['task']:.2f} / {1e3 * mine[m]['kl']:.2f}"
                     + ("" if abs(mine[m]["avg_bits"] - mine["uniform"]["avg_bits"]) < 0.005
                        else f" ({mine[m]['avg_bits']:.2f})") for m in METHODS]
            out.append(f"| {q} | {w} | {mine['uniform']['avg_bits']:.2f} | "
                       + " | ".join(cells) + " |")
    out.append("\n**The default route against uniform at the same size**: the task metric's "
               "difference to bitplan's uniform plan on the same test samples (points, ± its "
               "paired standard error; positive = better), and the calibrated IP plan's "
               "predicted flips (the default objective) against the measured ones:\n")
    out.append("| model | quantizer | bits | IP plan: Δ task | refined: Δ task | refined kept | "
               "predicted / measured |")
    out.append("| --- | --- | ---: | ---: | ---: | :---: | ---: |")
    count = {"better": 0, "even": 0, "worse": 0}
    ratios = []
    for arch in args.models:
        higher = base[arch][1]
        for q, w, mine in cases(rows, args, arch):
            cells = []
            for m in ("default", "refined"):
                r = mine[m]
                gain = r["task_vs_uniform"] if higher else -r["task_vs_uniform"]
                v = verdict(r["task_vs_uniform"], r["task_vs_uniform_se"], higher)
                count[v] += 1
                cells.append(f"{100 * gain:+.2f} ± {100 * r['task_vs_uniform_se']:.2f}"
                             + (" (worse)" if v == "worse" else ""))
            r = mine["default"]
            ratio = r["predicted"] / r["measured"] if r["measured"] else float("nan")
            ratios.append(ratio)
            out.append(f"| {arch} | {q} | {w} | " + " | ".join(cells) +
                       f" | {'yes' if mine['refined']['kept'] else 'no'} | {ratio:.2f} |")
    out.append(f"\nOf {sum(count.values())} plans: {count['better']} better than uniform beyond "
               f"two standard errors, {count['even']} within them, {count['worse']} worse; "
               f"predicted / measured from {min(ratios):.2f} to {max(ratios):.2f}.\n")
    out.append("\n**Which predictor ranks layers by what they cost**: Spearman correlation "
               "between each predictor and the measured single-layer deltas on held-out "
               "training data, over the layers at each weight width of 3, 4 and 5 bits "
               "(averaged; in brackets over every (layer, candidate)), against the task "
               "metric's change and against the KL:\n")
    out.append("| model | quantizer | " + " | ".join(METRICS) + " |")
    out.append("| --- | --- |" + " ---: |" * len(METRICS))
    for arch in args.models:
        for q in args.quantizers:
            mine = [r for r in pred_rows if r["model"] == arch and r["quantizer"] == q]
            if not mine:
                continue
            sign = 1                                # deltas are degradations already
            cells = []
            for m in METRICS:
                per = task_spearman(mine, m)
                allr = spearman([r[f"pred_{m}"] for r in mine], [sign * r["task"] for r in mine])
                kl = float(np.nanmean([spearman([r[f"pred_{m}"] for r in mine if r["wbits"] == w],
                                                [r["kl"] for r in mine if r["wbits"] == w])
                                       for w in (3, 4, 5)]))
                cells.append(f"{np.nanmean(per):.2f} ({allr:.2f}); KL {kl:.2f}")
            out.append(f"| {arch} | {q} | " + " | ".join(cells) + " |")
    out.append("\n**Fisher estimates**: relative standard error of each layer's tr F "
               "(median / max over layers) after capture's adaptive draws:\n")
    out.append("| model | output Fisher | decision Fisher | draws |")
    out.append("| --- | ---: | ---: | --- |")
    for arch in args.models:
        n = notes[arch]
        out.append(f"| {arch} | {100 * n['rse_fisher']:.1f} % / {100 * n['rse_fisher_max']:.1f} % "
                   f"| {100 * n['rse_margin']:.1f} % / {100 * n['rse_margin_max']:.1f} % | "
                   f"{n['draws']} |")
    return "\n".join(out) + "\n"


def task_spearman(mine, m):
    """Spearman of predictor m against the measured single-layer task-metric
    change (a degradation), over the layers at each weight width of 3, 4, 5."""
    per = []
    for w in (3, 4, 5):
        rr = [r for r in mine if r["wbits"] == w]
        per.append(spearman([r[f"pred_{m}"] for r in rr], [r["task"] for r in rr]))
    return per


def summary(rows, base, args, pred_rows):
    """One line per model for the README: the default route's plans (IP and
    refined) against uniform, and how far predictions are from what was measured."""
    out = ["| model | task metric (float) | plans better / even / worse than uniform | "
           "largest gain (points) | predicted / measured |",
           "| --- | --- | ---: | ---: | ---: |"]
    for arch in args.models:
        f, higher = base[arch]
        count = {"better": 0, "even": 0, "worse": 0}
        best, ratios = 0.0, []
        for q, w, mine in cases(rows, args, arch):
            for m in ("default", "refined"):
                r = mine[m]
                count[verdict(r["task_vs_uniform"], r["task_vs_uniform_se"], higher)] += 1
                best = max(best, r["task_vs_uniform"] if higher else -r["task_vs_uniform"])
            r = mine["default"]
            if r["measured"]:
                ratios.append(r["predicted"] / r["measured"])
        out.append(f"| {arch} | {TASK[arch]} ({100 * f:.2f} %) | {count['better']} / "
                   f"{count['even']} / {count['worse']} | {100 * best:+.2f} | "
                   f"{min(ratios):.2f}–{max(ratios):.2f} |")
    out += ["", "Spearman of each metric against the measured single-layer change of the task "
            "metric (per width, averaged over widths and quantizers):", "",
            "| model | " + " | ".join(METRICS) + " |", "| --- |" + " ---: |" * len(METRICS)]
    for arch in args.models:
        cells = []
        for m in METRICS:
            per_q = [float(np.nanmean(task_spearman(
                [r for r in pred_rows if r["model"] == arch and r["quantizer"] == q], m)))
                for q in args.quantizers]
            cells.append(f"{np.nanmean(per_q):.2f}")
        out.append(f"| {arch} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def plot(rows, base, args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(args.models), len(args.quantizers), squeeze=False,
                             figsize=(3.6 * len(args.quantizers), 2.9 * len(args.models)))
    styles = {"uniform": ("k", "s"), "kfac": ("C3", "o"), "margin": ("C2", "o"),
              "default": ("C0", "D"), "deltas": ("C4", "^"), "refined": ("C5", "*")}
    for i, arch in enumerate(args.models):
        for j, q in enumerate(args.quantizers):
            ax = axes[i][j]
            for method, (color, marker) in styles.items():
                pts = sorted((r["avg_bits"], 100 * r["task"]) for r in rows
                             if r["model"] == arch and r["quantizer"] == q and r["method"] == method)
                if pts:
                    ax.plot(*zip(*pts), color=color, marker=marker, ms=4, lw=1, label=method)
            ax.set_title(f"{arch} / {q}", fontsize=9)
            ax.set_xlabel("average weight bits", fontsize=8)
            ax.tick_params(labelsize=7)
            if j == 0:
                ax.set_ylabel(f"test {TASK[arch]} (%)", fontsize=7)
    axes[0][0].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
    fig.savefig(args.plot, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--models", nargs="+", default=["cnn", "vit", "lm", "ocr"])
    ap.add_argument("--quantizers", nargs="+", default=["rtn", "gptq"])
    ap.add_argument("--bits", nargs="+", type=int, default=[3, 4, 5])
    ap.add_argument("--evals", type=int, default=300, help="refinement: plans to evaluate")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--plot", default=os.path.join(ROOT, "docs", "e2e-accuracy.png"))
    ap.add_argument("--work", help="keep the intermediate files here")
    ap.add_argument("--reuse", action="store_true",
                    help="take a model's rows from WORK/MODEL/rows.json when an earlier run "
                         "with the same quantizers and bits finished it")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    args.build = os.path.abspath(args.build)
    torch.set_num_threads(args.threads)
    rows, pred_rows, base, notes = [], [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        args.work = os.path.abspath(args.work or tmp)
        for arch in args.models:
            saved = os.path.join(args.work, arch, "rows.json")
            what = dict(quantizers=args.quantizers, bits=args.bits, evals=args.evals)
            if args.reuse and os.path.exists(saved):
                with open(saved) as f:
                    got = json.load(f)
                if got["what"] == what:
                    rows += got["rows"]
                    pred_rows += got["pred_rows"]
                    notes[arch] = got["notes"]
                    base[arch] = tuple(got["base"])
                    print(f"{arch}: rows taken from {saved}", file=sys.stderr)
                    continue
            mine, mine_pred = [], []
            base[arch] = run_model(arch, args, mine, mine_pred, notes)
            rows += mine
            pred_rows += mine_pred
            with open(saved, "w") as f:
                json.dump(dict(what=what, rows=mine, pred_rows=mine_pred, notes=notes[arch],
                               base=list(base[arch])), f, default=float)
    os.makedirs(args.out, exist_ok=True)
    for name, data in (("results.csv", rows), ("predictors.csv", pred_rows)):
        with open(os.path.join(args.out, name), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(data[0]))
            w.writeheader()
            w.writerows(data)
    md = markdown(rows, pred_rows, base, notes, args)
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write(summary(rows, base, args, pred_rows))
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(md)
    plot(rows, base, args)
    print(md)


if __name__ == "__main__":
    main()
