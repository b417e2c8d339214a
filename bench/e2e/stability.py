"""How stable are kfac plans under the randomness of the Fisher estimate?

    /usr/bin/python3 bench/e2e/stability.py [--build build] [--models cnn vit lm]
        [--seeds 4] [--draws 1 8] [--bits 3 4 5]

For each model and each label estimator (sampled labels, random signs) and
number of draws per input, captures the output Fisher with several seeds
(other label draws and another subsample of the input rows), plans each at the uniform
plans' sizes (rtn, 2..8 bits, 8-bit activations) and reports the median
relative standard error of tr F that capture prints and how many layers'
widths differ from the first seed's plan (mean over seeds and budgets).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from run import ABITS, write_config  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--models", nargs="+", default=["cnn", "vit", "lm"])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--draws", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--bits", nargs="+", type=int, default=[3, 4, 5])
    args = ap.parse_args()
    exe = os.path.join(os.path.abspath(args.build), "bitplan")
    env = dict(os.environ, PYTHONPATH=HERE)
    print("| model | estimator | draws | median RSE of tr F | layers that move (of n) |")
    print("| --- | --- | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as work:
        for arch in args.models:
            for est in ("sampled", "rademacher"):
                for draws in args.draws:
                    plans, rses = [], []
                    for seed in range(args.seeds):
                        d = os.path.join(work, f"{arch}-{est}-{draws}-{seed}")
                        out = subprocess.run(
                            [sys.executable, os.path.join(ROOT, "tools", "capture.py"),
                             f"models:{arch}", "--out", d, "--fisher", "--draws", str(draws),
                             "--estimator", est, "--seed", str(seed)],
                            capture_output=True, text=True, env=env, check=True).stdout
                        rses.append(float(re.search(r"median ([0-9.]+) %", out).group(1)))
                        write_config(os.path.join(d, "c.yaml"), "rtn", "out")
                        sizes, got = [], []
                        for w in args.bits:
                            subprocess.run([exe, "quantize", "c.yaml", "--wbits", str(w),
                                            "--abits", str(ABITS), "-o", "u.st", "--plan",
                                            "u.json", "-q"], cwd=d, check=True)
                            with open(os.path.join(d, "u.json")) as f:
                                sizes.append(json.load(f)["totals"]["avg_bits"])
                        for u in sizes:
                            subprocess.run([exe, "solve", "c.yaml", "--metric", "kfac",
                                            "--avg-bits", repr(u), "-o", "p.json", "-q"],
                                           cwd=d, check=True)
                            with open(os.path.join(d, "p.json")) as f:
                                got.append([l["wbits"] for l in json.load(f)["layers"]])
                        plans.append(got)
                    n = len(plans[0][0])
                    moved = [sum(a != b for a, b in zip(plans[s][k], plans[0][k]))
                             for s in range(1, args.seeds) for k in range(len(args.bits))]
                    print(f"| {arch} | {est} | {draws} | {sum(rses) / len(rses):.1f} % | "
                          f"{sum(moved) / max(len(moved), 1):.2f} (of {n}) |", flush=True)


if __name__ == "__main__":
    main()
