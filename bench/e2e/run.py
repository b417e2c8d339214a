"""Accuracy of bitplan's plans against uniform and heuristic allocations.

    /usr/bin/python3 bench/e2e/run.py [--build build] [--models cnn vit]
        [--quantizers rtn squant erq gptq] [--budgets 2.5 3 3.5 4 5 6]
        [--out bench/e2e/results] [--plot docs/e2e-accuracy.png]

For each model (bench/e2e/models.py: the demo CNN and the small ViT, trained on
Fashion-MNIST by tools/train_demo.py and tools/train_vit.py):
  1. capture every layer's calibration inputs and loss gradients from 512
     training images (tools/capture.py --grad2);
  2. for each weight quantizer and each error metric (mse, relative, fisher,
     hawq) measure the sensitivity table (weights 2, 3, 4, 5, 6, 8 bits,
     activations 8 bits, uniform per-tensor min-max) and solve it at each
     average-bits budget;
  3. build the baselines with the same quantizer: uniform w bits everywhere,
     and the first and last layer at 8 bits with the rest at w bits;
  4. apply every distinct plan (bitplan's quantized weights output,
     dequantized, plus activations fake-quantized at the planned bits with the
     calibration range) and measure accuracy on the 10,000 test images;
  5. rank: Spearman correlation, over all plans evaluated, between each
     metric's predicted total error and the measured accuracy drop.
Writes OUT/results.csv (one row per plan), OUT/results.md (tables) and the
plot; prints the Markdown.  Needs Debian's python3-torch, python3-numpy,
python3-matplotlib and dataset-fashion-mnist.
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

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))
import models  # noqa: E402
from safetensors_io import load_file  # noqa: E402
from train_demo import accuracy, load_split  # noqa: E402

METRICS = ("mse", "relative", "fisher", "hawq")
WBITS = (2, 3, 4, 5, 6, 8)
ABITS = 8


def fake_quant(x, lo, hi, bits):
    """bitplan's default activation grid: per-tensor asymmetric min-max."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    levels = 2 ** bits - 1
    s = (hi - lo) / levels if hi > lo else 1.0
    z = min(max(round(-lo / s), 0), levels)
    return s * (torch.clamp(torch.round(x / s) + z, 0, levels) - z)


class Evaluator:
    """Accuracy of one model with a plan's weights and activation bits applied."""

    def __init__(self, arch, calib_path):
        self.arch = arch
        self.calib, _ = load_file(calib_path)
        self.x, self.y = load_split(models.DATA, "t10k")
        self.float_acc = accuracy(models.LOADERS[arch](), self.x, self.y)

    def __call__(self, plan, qweights_path):
        q, _ = load_file(qweights_path)
        model = models.LOADERS[self.arch]()
        for layer in plan["layers"]:
            name, abits = layer["name"], layer["abits"]
            mod = model.get_submodule(name)
            mod.weight.data = torch.from_numpy(
                np.array(q[name + ".weight"], dtype=np.float32).reshape(mod.weight.shape))
            if name + ".bias" in q:
                mod.bias.data = torch.from_numpy(np.array(q[name + ".bias"], dtype=np.float32))
            if abits < 16:
                x = self.calib[name + ".input"]
                lo, hi = float(x.min()), float(x.max())
                mod.register_forward_pre_hook(
                    lambda m, inp, lo=lo, hi=hi, b=abits: (fake_quant(inp[0], lo, hi, b),))
        return accuracy(model, self.x, self.y)


def read_table(path):
    """(layer, wbits, abits) -> error."""
    with open(path) as f:
        return {(r["layer"], int(r["wbits"]), int(r["abits"])): float(r["error"])
                for r in csv.DictReader(f)}


def spearman(a, b):
    def ranks(v):
        v = np.asarray(v, dtype=float)
        order = np.argsort(v, kind="mergesort")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for x in np.unique(v):                  # ties share their mean rank
            r[v == x] = r[v == x].mean()
        return r
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def config(path, quantizer, metric, outdir, pins=()):
    pin_lines = "".join(f"  - {{pattern: '{p}', wbits: {w}, abits: {ABITS}}}\n" for p, w in pins)
    with open(path, "w") as f:
        f.write(f"""model: {{weights: weights.safetensors, calibration: calib.safetensors}}
candidates: {{wbits: {list(WBITS)}, abits: [{ABITS}]}}
weights: {{quantizer: {quantizer}, range: mse}}
activations: {{range: minmax}}
metric: {metric}
budget: {{avg_bits: 16}}
output: {{dir: {outdir}, weights: q.safetensors, dequantized: true}}
""" + (f"pins:\n{pin_lines}" if pins else ""))


def bitplan(build, *args):
    r = subprocess.run([os.path.join(build, "bitplan"), *args, "-q"], capture_output=True, text=True)
    if r.returncode != 0:
        return r.stderr.strip()
    return None


def run_model(arch, args, work, rows):
    d = os.path.join(work, arch)
    os.makedirs(d, exist_ok=True)
    t0 = time.time()
    env = dict(os.environ, PYTHONPATH=HERE)
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "capture.py"), f"models:{arch}",
                    "--out", d, "--rows", "2048", "--grad2"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    ev = Evaluator(arch, os.path.join(d, "calib.safetensors"))
    names = [n for n, m in models.LOADERS[arch]().named_modules()
             if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    print(f"{arch}: float accuracy {ev.float_acc:.4f}, {len(names)} layers", file=sys.stderr)
    seen = {}

    def evaluate(q, cfg, plan_path, budget):
        err = bitplan(args.build, "solve", cfg, "--avg-bits", str(budget), "-o", plan_path)
        if err:
            return None
        with open(plan_path) as f:
            plan = json.load(f)
        key = (q, tuple((l["wbits"], l["abits"]) for l in plan["layers"]))
        if key not in seen:
            outdir = os.path.join(os.path.dirname(cfg), plan_dir[cfg])
            seen[key] = ev(plan, os.path.join(outdir, "q.safetensors"))
        return plan, seen[key]

    plan_dir = {}
    for q in args.quantizers:
        tables = {}
        for metric in METRICS:
            cfg = os.path.join(d, f"{q}-{metric}.yaml")
            plan_dir[cfg] = f"out-{q}-{metric}"
            config(cfg, q, metric, plan_dir[cfg])
            tpath = os.path.join(d, f"table-{q}-{metric}.csv")
            err = bitplan(args.build, "sensitivity", cfg, "-o", tpath)
            if err:
                raise SystemExit(f"{arch}/{q}/{metric}: {err}")
            tables[metric] = read_table(tpath)
        plans = []
        for metric in METRICS:
            cfg = os.path.join(d, f"{q}-{metric}.yaml")
            for b in args.budgets:
                got = evaluate(q, cfg, os.path.join(d, "plan.json"), b)
                plans.append((f"bitplan-{metric}", b, got))
        for method in ("uniform", "firstlast"):
            for w in WBITS:
                if method == "firstlast" and w == 8:
                    continue
                pins = [("*", w)] if method == "uniform" else \
                    [(names[0], 8), (names[-1], 8)] + [(n, w) for n in names[1:-1]]
                cfg = os.path.join(d, f"{q}-{method}{w}.yaml")
                plan_dir[cfg] = f"out-{q}-relative"        # shares the cached table
                config(cfg, q, "relative", plan_dir[cfg], pins)
                plans.append((method, w, evaluate(q, cfg, os.path.join(d, "plan.json"), 16)))
        for method, budget, got in plans:
            if got is None:
                rows.append(dict(model=arch, quantizer=q, method=method, budget=budget,
                                 avg_bits="", accuracy="", drop="", wbits="",
                                 **{f"pred_{m}": "" for m in METRICS}))
                continue
            plan, acc = got
            pred = {f"pred_{m}": sum(tables[m][(l["name"], l["wbits"], l["abits"])]
                                     for l in plan["layers"]) for m in METRICS}
            rows.append(dict(model=arch, quantizer=q, method=method, budget=budget,
                             avg_bits=round(plan["totals"]["avg_bits"], 3), accuracy=acc,
                             drop=round(ev.float_acc - acc, 4),
                             wbits="/".join(str(l["wbits"]) for l in plan["layers"]), **pred))
        print(f"{arch}/{q}: {len(plans)} plans, {len(seen)} evaluated, "
              f"{time.time() - t0:.0f} s", file=sys.stderr)
    return ev.float_acc


def markdown(rows, float_acc, args):
    out = []
    for arch in args.models:
        out.append(f"\n**{arch}** (float accuracy {float_acc[arch]:.4f}): accuracy (avg bits)\n")
        out.append("| quantizer | budget | " + " | ".join(f"bitplan {m}" for m in METRICS[:3])
                   + " | HAWQ-style | uniform ≤ budget | uniform ≥ plan | first/last 8 ≤ budget |")
        out.append("| --- | ---: |" + " ---: |" * 7)
        for q in args.quantizers:
            mine = [r for r in rows if r["model"] == arch and r["quantizer"] == q and r["accuracy"] != ""]

            def cell(r):
                return f"{r['accuracy']:.4f} ({r['avg_bits']:.2f})" if r else "-"

            for b in args.budgets:
                plan = {r["method"]: r for r in mine if r["budget"] == b and r["method"].startswith("bitplan")}
                ref = plan.get(f"bitplan-{args.default_metric}")
                under = [r for r in mine if r["method"] == "uniform" and r["avg_bits"] <= b]
                over = [r for r in mine if r["method"] == "uniform" and ref and r["avg_bits"] >= ref["avg_bits"]]
                fl = [r for r in mine if r["method"] == "firstlast" and r["avg_bits"] <= b]
                cells = [cell(plan.get(f"bitplan-{m}")) for m in METRICS]
                cells += [cell(max(under, key=lambda r: r["avg_bits"]) if under else None),
                          cell(min(over, key=lambda r: r["avg_bits"]) if over else None),
                          cell(max(fl, key=lambda r: r["avg_bits"]) if fl else None)]
                out.append(f"| {q} | {b} | " + " | ".join(cells) + " |")
    out.append("\n**Spearman correlation** between each metric's predicted total error and the "
               "measured accuracy drop, over every plan evaluated (all methods and quantizers):\n")
    out.append("| model | plans | " + " | ".join(METRICS) + " |")
    out.append("| --- | ---: |" + " ---: |" * len(METRICS))
    for arch in args.models + ["both (ranks within each model)"]:
        rs = [r for r in rows if r["accuracy"] != "" and (r["model"] == arch or arch.startswith("both"))]
        uniq = {(r["model"], r["quantizer"], r["wbits"]): r for r in rs}.values()
        cells = []
        for m in METRICS:
            if arch.startswith("both"):
                rho = np.mean([spearman([r[f"pred_{m}"] for r in uniq if r["model"] == a],
                                        [r["drop"] for r in uniq if r["model"] == a])
                               for a in args.models])
            else:
                rho = spearman([r[f"pred_{m}"] for r in uniq], [r["drop"] for r in uniq])
            cells.append(f"{rho:.3f}")
        out.append(f"| {arch} | {len(uniq)} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def plot(rows, float_acc, args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(args.models), len(args.quantizers), squeeze=False,
                             figsize=(3.2 * len(args.quantizers), 2.9 * len(args.models)))
    styles = {"bitplan-mse": ("C0", "o"), "bitplan-relative": ("C1", "o"),
              "bitplan-fisher": ("C2", "o"), "bitplan-hawq": ("C3", "s"),
              "uniform": ("k", "^"), "firstlast": ("C7", "v")}
    labels = {"bitplan-hawq": "HAWQ-style", "uniform": "uniform", "firstlast": "first/last 8"}
    for i, arch in enumerate(args.models):
        for j, q in enumerate(args.quantizers):
            ax = axes[i][j]
            for method, (color, marker) in styles.items():
                pts = sorted((r["avg_bits"], r["accuracy"]) for r in rows
                             if r["model"] == arch and r["quantizer"] == q
                             and r["method"] == method and r["accuracy"] != "")
                if pts:
                    ax.plot(*zip(*pts), color=color, marker=marker, ms=3, lw=1,
                            label=labels.get(method, method))
            ax.axhline(float_acc[arch], color="gray", ls=":", lw=1)
            lo = min([r["accuracy"] for r in rows if r["model"] == arch and r["accuracy"] != ""])
            ax.set_ylim(max(lo, float_acc[arch] - 0.15), float_acc[arch] + 0.01)
            ax.set_title(f"{arch} / {q}", fontsize=9)
            ax.set_xlabel("average weight bits", fontsize=8)
            ax.tick_params(labelsize=7)
            if j == 0:
                ax.set_ylabel("test accuracy", fontsize=8)
    axes[0][0].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
    fig.savefig(args.plot, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--models", nargs="+", default=["cnn", "vit"])
    ap.add_argument("--quantizers", nargs="+", default=["rtn", "squant", "erq", "gptq"])
    ap.add_argument("--budgets", nargs="+", type=float, default=[2.5, 3, 3.5, 4, 5, 6])
    ap.add_argument("--default-metric", default="relative", choices=METRICS)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--plot", default=os.path.join(ROOT, "docs", "e2e-accuracy.png"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    args.build = os.path.abspath(args.build)
    torch.set_num_threads(args.threads)
    rows, float_acc = [], {}
    with tempfile.TemporaryDirectory() as work:
        for arch in args.models:
            float_acc[arch] = run_model(arch, args, work, rows)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    md = markdown(rows, float_acc, args)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(md)
    plot(rows, float_acc, args)
    print(md)


if __name__ == "__main__":
    main()
