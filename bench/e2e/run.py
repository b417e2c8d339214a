"""What bitplan's plans lose on real models, against bitplan's own uniform plans.

    /usr/bin/python3 bench/e2e/run.py [--build build] [--models cnn vit lm]
        [--quantizers rtn gptq] [--bits 3 4 5] [--evals 300]
        [--out bench/e2e/results] [--plot docs/e2e-accuracy.png]

For each model (bench/e2e/models.py: the demo CNN and the small ViT on
Fashion-MNIST, the character-level language model on Debian's fortunes; all
trained by the repository's own scripts):
  1. capture every layer's calibration inputs and output Fisher
     (tools/capture.py --fisher: labels drawn from the model's own
     predictive distribution, 8 per input);
  2. for each weight quantizer measure the sensitivity table once (weights
     2, 3, 4, 5, 6, 8 bits, MSE range; activations 8 bits, per-tensor
     min-max; every metric is a column of it) and the measured end-to-end
     deltas (tools/measure_deltas.py: each layer alone, KL to the float
     model on other training data than the calibration inputs);
  3. for each width w, bitplan's uniform plan (`bitplan quantize --wbits w
     --plan`), whose achieved average bits (scales included) U become the
     budget of every other plan: the IP plan of each metric (mse, relative,
     fisher, kfac), the IP plan over the measured deltas, and the refined
     plan (tools/refine_plan.py: local search on the joint KL, measured on
     other training data than the calibration inputs);
  4. apply every distinct plan (bitplan's quantized weights and activation
     grids, as tools/evaluate_plan.py does) to the held-out data: KL to the
     float model per position, loss, top-1 accuracy;
  5. rank: Spearman correlation, over every plan evaluated on that model,
     between each metric's predicted total and the measured degradation.
Writes OUT/results.csv (one row per plan), OUT/results.md (tables) and the
plot; prints the Markdown.  Needs Debian's python3-torch, python3-numpy,
python3-matplotlib, dataset-fashion-mnist and fortunes.
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
from bitplan_torch import Applied, QuantizedFile, float_outputs, measure  # noqa: E402

METRICS = ("mse", "relative", "fisher", "kfac")
PREDICTORS = METRICS + ("deltas",)
WBITS = (2, 3, 4, 5, 6, 8)
ABITS = 8
METHODS = ("uniform",) + METRICS + ("deltas", "refined")


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


def calib_kl(refine, method, w):
    """The plan's KL on the calibration batches, as the refinement measured it."""
    if method == "refined":
        return refine["kl"]
    name = f"uniform {w}/{ABITS}" if method == "uniform" else f"ip {method}"
    return refine["seeds"].get(name, {}).get("kl", "")


def write_config(path, quantizer, outdir):
    with open(path, "w") as f:
        f.write(f"""model: {{weights: weights.safetensors, calibration: calib.safetensors}}
candidates: {{wbits: {list(WBITS)}, abits: [{ABITS}]}}
weights: {{quantizer: {quantizer}, range: mse}}
activations: {{range: minmax}}
metric: kfac
output: {{dir: {outdir}, weights: q.safetensors, formats: [json]}}
""")


class Bench:
    def __init__(self, args, arch, work):
        self.args, self.arch, self.work = args, arch, work
        self.exe = os.path.join(args.build, "bitplan")
        self.env = dict(os.environ, PYTHONPATH=HERE, BITPLAN=self.exe)
        self.model = models.LOADERS[arch]()
        self.test = models.TEST[arch]()
        self.ref = float_outputs(self.model, self.test)
        self.float = measure(self.model, self.test, self.ref)
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

    def evaluate(self, q, plan_path, qweights):
        """Test KL, loss and accuracy of a plan (cached by its candidates)."""
        with open(os.path.join(self.work, plan_path)) as f:
            plan = json.load(f)
        key = (q, tuple((l["name"], l["wbits"], l["abits"]) for l in plan["layers"]))
        if key not in self.seen:
            qf = QuantizedFile(os.path.join(self.work, qweights))
            a = Applied(self.model)
            for n in qf.names:
                a.set(n, *qf.layer(n))
            self.seen[key] = measure(self.model, self.test, self.ref, keep=True)
            a.restore()
        return plan, self.seen[key]


def take_set(work, q, plan, weights):
    """Copy the plan and weights of the output set `bitplan run` just wrote
    (out-Q/plan.json, out-Q/q.safetensors) to work/, leaving the set whole."""
    for name, dest in (("plan.json", plan), ("q.safetensors", weights)):
        shutil.copyfile(os.path.join(work, f"out-{q}", name), os.path.join(work, dest))


def run_model(arch, args, rows):
    work = os.path.join(args.work, arch)
    os.makedirs(work, exist_ok=True)
    t0 = time.time()
    b = Bench(args, arch, work)
    b.tool("capture.py", f"models:{arch}", "--out", ".", "--rows", "2048", "--fisher")
    print(f"{arch}: float accuracy {b.float['accuracy']:.4f}, loss {b.float['loss']:.4f} "
          f"({time.time() - t0:.0f} s)", file=sys.stderr)
    for q in args.quantizers:
        cfg = f"{q}.yaml"
        write_config(os.path.join(work, cfg), q, f"out-{q}")
        b.bitplan("sensitivity", cfg, "-o", f"table-{q}.csv")
        b.tool("measure_deltas.py", cfg, f"models:{arch}", "-o", f"deltas-{q}.csv",
               "--heldout", f"models:{arch}_heldout")
        pred = {}
        with open(os.path.join(work, f"table-{q}.csv")) as f:
            for r in csv.DictReader(f):
                k = (r["layer"], int(r["wbits"]), int(r["abits"]))
                pred[k] = {m: float(r[m]) if r[m] else float("nan") for m in METRICS}
        with open(os.path.join(work, f"deltas-{q}.csv")) as f:
            for r in csv.DictReader(f):
                pred[(r["layer"], int(r["wbits"]), int(r["abits"]))]["deltas"] = float(r["loss_delta"])
        for w in args.bits:
            b.bitplan("quantize", cfg, "--wbits", str(w), "--abits", str(ABITS), "-o", "u.safetensors",
                      "--plan", "u.json")
            with open(os.path.join(work, "u.json")) as f:
                U = json.load(f)["totals"]["avg_bits"]
            budget = ["--avg-bits", repr(U)]
            plans = {"uniform": ("u.json", "u.safetensors")}
            for m in METRICS:
                b.bitplan("solve", cfg, "--metric", m, *budget, "-o", f"p-{m}.json")
                b.bitplan("run", cfg, "--choices", f"p-{m}.json", *budget)
                take_set(work, q, f"p-{m}.json", f"q-{m}.safetensors")
                plans[m] = (f"p-{m}.json", f"q-{m}.safetensors")
            b.bitplan("solve", "--table", f"deltas-{q}.csv", *budget, "-o", "p-d.json")
            b.bitplan("run", cfg, "--choices", "p-d.json", *budget)
            take_set(work, q, "p-deltas.json", "q-deltas.safetensors")
            plans["deltas"] = ("p-deltas.json", "q-deltas.safetensors")
            b.tool("refine_plan.py", cfg, f"models:{arch}", *budget, "--evals", str(args.evals),
                   "--deltas", f"deltas-{q}.csv", "--heldout", f"models:{arch}_heldout",
                   "--json", "refine.json")
            take_set(work, q, "p-refined.json", "q-refined.safetensors")
            plans["refined"] = ("p-refined.json", "q-refined.safetensors")
            with open(os.path.join(work, "refine.json")) as f:
                refine = json.load(f)
            uni = b.evaluate(q, *plans["uniform"])[1]["correct"]
            for method in METHODS:
                plan, got = b.evaluate(q, *plans[method])
                d = got["correct"].astype(float) - uni   # paired: same held-out positions
                se = float(d.std() / np.sqrt(len(d)))
                p = {f"pred_{m}": sum(pred[(l["name"], l["wbits"], l["abits"])][m]
                                      for l in plan["layers"]) for m in PREDICTORS}
                rows.append(dict(model=arch, quantizer=q, bits=w, budget=round(U, 4),
                                 method=method, avg_bits=round(plan["totals"]["avg_bits"], 4),
                                 accuracy=got["accuracy"], loss=got["loss"], kl=got["kl"],
                                 acc_drop=b.float["accuracy"] - got["accuracy"],
                                 acc_vs_uniform=float(d.mean()), acc_vs_uniform_se=se,
                                 loss_increase=got["loss"] - b.float["loss"],
                                 calib_kl=calib_kl(refine, method, w),
                                 wbits="/".join(str(l["wbits"]) for l in plan["layers"]), **p))
            print(f"{arch}/{q}/{w} bits: {len(b.seen)} plans evaluated, "
                  f"{time.time() - t0:.0f} s", file=sys.stderr)
    return b.float


def cases(rows, args, arch):
    """(quantizer, bits, {method: row}) of every evaluated case of a model."""
    for q in args.quantizers:
        for w in args.bits:
            mine = {r["method"]: r for r in rows
                    if r["model"] == arch and r["quantizer"] == q and r["bits"] == w}
            if mine:
                yield q, w, mine


def markdown(rows, base, args):
    out = []
    for arch in args.models:
        f = base[arch]
        unit = "next-character accuracy" if arch == "lm" else "test accuracy"
        out.append(f"\n**{arch}** (float: {unit} {f['accuracy']:.4f}, loss {f['loss']:.4f}): "
                   f"accuracy / KL to float per position (×10⁻³), at the uniform plan's "
                   f"achieved size\n")
        out.append("| quantizer | bits | avg bits | " + " | ".join(METHODS) + " |")
        out.append("| --- | ---: | ---: |" + " ---: |" * len(METHODS))
        for q, w, mine in cases(rows, args, arch):
            cells = [f"{mine[m]['accuracy']:.4f} / {1e3 * mine[m]['kl']:.2f}"
                     + ("" if abs(mine[m]["avg_bits"] - mine["uniform"]["avg_bits"]) < 0.005
                        else f" ({mine[m]['avg_bits']:.2f})") for m in METHODS]
            out.append(f"| {q} | {w} | {mine['uniform']['avg_bits']:.2f} | "
                       + " | ".join(cells) + " |")
    out.append("\n**Against uniform at the same size**: accuracy difference to bitplan's uniform "
               "plan on the same held-out positions (± its paired standard error) and the "
               "change of the KL to the float model, for the default route (the kfac plan, and "
               "the refined plan):\n")
    out.append("| model | quantizer | bits | kfac: Δ accuracy | kfac: Δ KL | refined: Δ accuracy "
               "| refined: Δ KL |")
    out.append("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for arch in args.models:
        for q, w, mine in cases(rows, args, arch):
            u = mine["uniform"]["kl"]
            cells = []
            for m in ("kfac", "refined"):
                r = mine[m]
                cells += [f"{r['acc_vs_uniform']:+.4f} ± {r['acc_vs_uniform_se']:.4f}",
                          f"{100 * (r['kl'] / u - 1):+.0f} %"]
            out.append(f"| {arch} | {q} | {w} | " + " | ".join(cells) + " |")
    out.append("\n**Spearman correlation** between each predictor's total over a plan and the "
               "measured degradation on held-out data (KL to the float model; in brackets: "
               "loss increase, accuracy drop), over every distinct plan evaluated on the model:\n")
    out.append("| model | plans | " + " | ".join(PREDICTORS) + " |")
    out.append("| --- | ---: |" + " ---: |" * len(PREDICTORS))
    for arch in args.models:
        uniq = list({(r["quantizer"], r["wbits"]): r for r in rows if r["model"] == arch}.values())
        cells = []
        for m in PREDICTORS:
            xs = [r[f"pred_{m}"] for r in uniq]
            cells.append(f"{spearman(xs, [r['kl'] for r in uniq]):.3f} "
                         f"({spearman(xs, [r['loss_increase'] for r in uniq]):.2f}, "
                         f"{spearman(xs, [r['acc_drop'] for r in uniq]):.2f})")
        out.append(f"| {arch} | {len(uniq)} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def plot(rows, base, args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(args.models), len(args.quantizers), squeeze=False,
                             figsize=(3.6 * len(args.quantizers), 2.9 * len(args.models)))
    styles = {"uniform": ("k", "s"), "mse": ("C0", "o"), "relative": ("C1", "o"),
              "fisher": ("C2", "o"), "kfac": ("C3", "o"), "deltas": ("C4", "^"),
              "refined": ("C5", "*")}
    for i, arch in enumerate(args.models):
        for j, q in enumerate(args.quantizers):
            ax = axes[i][j]
            for method, (color, marker) in styles.items():
                pts = sorted((r["avg_bits"], r["kl"]) for r in rows
                             if r["model"] == arch and r["quantizer"] == q and r["method"] == method)
                if pts:
                    ax.plot(*zip(*pts), color=color, marker=marker, ms=4, lw=1, label=method)
            ax.set_yscale("log")
            ax.set_title(f"{arch} / {q}", fontsize=9)
            ax.set_xlabel("average weight bits", fontsize=8)
            ax.tick_params(labelsize=7)
            if j == 0:
                ax.set_ylabel("test KL to float", fontsize=8)
    axes[0][0].legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
    fig.savefig(args.plot, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--models", nargs="+", default=["cnn", "vit", "lm"])
    ap.add_argument("--quantizers", nargs="+", default=["rtn", "gptq"])
    ap.add_argument("--bits", nargs="+", type=int, default=[3, 4, 5])
    ap.add_argument("--evals", type=int, default=300, help="refinement: plans to evaluate")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--plot", default=os.path.join(ROOT, "docs", "e2e-accuracy.png"))
    ap.add_argument("--work", help="keep the intermediate files here")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    args.build = os.path.abspath(args.build)
    torch.set_num_threads(args.threads)
    rows, base = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        args.work = os.path.abspath(args.work or tmp)
        for arch in args.models:
            base[arch] = run_model(arch, args, rows)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    md = markdown(rows, base, args)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(md)
    plot(rows, base, args)
    print(md)


if __name__ == "__main__":
    main()
