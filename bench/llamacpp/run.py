"""bitplan's llama.cpp route against llama.cpp's own mixes, by llama.cpp's own
measurements.

    LLAMA_CPP_DIR=/path/to/llama.cpp /usr/bin/python3 bench/llamacpp/run.py
        [--models small large] [--mixes Q3_K_M Q4_K_S Q4_K_M Q5_K_M]
        [--variants relative mse calibrated] [--work DIR] [--out bench/llamacpp/results]

LLAMA_CPP_DIR is a llama.cpp source checkout built as its docs/build.md says
(CPU): llama-quantize, llama-imatrix and llama-perplexity in build/bin, ggml's
headers and libggml-base for bench/llamacpp/quants.sh.  For each model
(tools/train_llama.py: small and large Llamas trained on Debian's fortunes,
written to GGUF F16; trained here unless WORK already holds them):

  1. llama-imatrix on training text (200 chunks of 128 tokens);
  2. the F16 model's logits on held-out text (400 chunks of 128:
     llama-perplexity --kl-divergence-base);
  3. each llama.cpp mix with the imatrix (llama-quantize MIX): file size,
     perplexity, mean KLD to F16 and same-top-token rate on the held-out text;
  4. bitplan's plan at <= that file's size (--max-bytes-of MIX.gguf) over
     q2_K..q6_K, q8_0 from the GGUF and its imatrix alone, one plan per
     variant of what a tensor's error costs the model: `relative` (the
     default: each tensor's imatrix-weighted relative error), `mse` (its
     output error), `calibrated` (relative errors times per-tensor scales
     measured with llama.cpp, tools/llamacpp_calibrate.py, on training text);
     the plan's llama-quantize command run as written; its predicted file
     size against the file's, and the same measurements;
  5. every GGUF written (mixes and plans) checked tensor by tensor against
     bitplan's own quantization of the source (bench/llamacpp/verify.c).
Writes OUT/results.json and OUT/results.md; prints the Markdown.
"""
import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TYPES = ["q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "q8_0"]
CTX, IM_CHUNKS, TEST_CHUNKS, CAL_CHUNKS = 128, 200, 400, 32


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(cmd, what, marker=None, tries=20, env=None):
    """Run a command (again while its output lacks marker: llama.cpp's logger
    may drop its last lines at exit, more often on a busy machine); its output
    goes through a file, which never holds the logger back as a pipe can."""
    for _ in range(tries):
        with tempfile.TemporaryFile("w+") as f:
            r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, text=True, env=env)
            f.seek(0)
            out = f.read()
        if r.returncode != 0:
            raise SystemExit(f"{what} failed (exit {r.returncode}): "
                             + " | ".join(out.strip().splitlines()[-3:]))
        if not marker or marker in out:
            return out
    raise SystemExit(f"{what}: no '{marker}' in its output after {tries} runs")


def num(pattern, out):
    m = re.search(pattern, out)
    if not m:
        raise SystemExit(f"cannot find {pattern!r} in llama-perplexity's output")
    return [float(g) for g in m.groups()]


class Bench:
    def __init__(self, args):
        self.args = args
        llama = os.environ.get("LLAMA_CPP_DIR")
        if not llama:
            raise SystemExit("set LLAMA_CPP_DIR to a built llama.cpp checkout")
        self.bin = os.path.join(llama, "build", "bin")
        for t in ("llama-quantize", "llama-imatrix", "llama-perplexity"):
            if not os.access(os.path.join(self.bin, t), os.X_OK):
                raise SystemExit(f"{self.bin}/{t} missing: build llama.cpp first")
        self.bitplan = os.path.abspath(os.path.join(args.build, "bitplan"))
        self.verify = os.path.join(args.work, "verify")
        lib = os.path.join(os.path.abspath(args.build), "libbitplan.a")
        subprocess.run(["cc", "-O2", "-I", ROOT, "-I", os.path.abspath(args.build),
                        os.path.join(HERE, "verify.c"), lib, "-lyaml", "-lopenblas", "-llapacke",
                        "-lglpk", "-lm", "-lpthread", "-o", self.verify], check=True)
        self.env = dict(os.environ, PATH=self.bin + os.pathsep + os.environ.get("PATH", ""),
                        BITPLAN=self.bitplan)
        self.t = str(args.threads)

    def tool(self, name, *a, marker=None):
        return run([os.path.join(self.bin, name), *a], name, marker)

    def measure(self, gguf, test, base):
        # "Same top p:" is in the summary only (the column header has no colon)
        out = self.tool("llama-perplexity", "-m", gguf, "-f", test, "-c", str(CTX), "--chunks",
                        str(TEST_CHUNKS), "-t", self.t, "--kl-divergence-base", base,
                        "--kl-divergence", marker="Same top p:")
        ppl, ppl_se = num(r"Mean PPL\(Q\)\s*:\s*([0-9.]+)\s*±\s*([0-9.]+)", out)
        kld, kld_se = num(r"Mean\s+KLD:\s*([-0-9.]+)\s*±\s*([0-9.]+)", out)
        top, top_se = num(r"Same top p:\s*([0-9.]+)\s*±\s*([0-9.]+)", out)
        return dict(bytes=os.path.getsize(gguf), ppl=ppl, ppl_se=ppl_se, kld=kld,
                    kld_se=kld_se, same_top=top, same_top_se=top_se)

    def check(self, src, gguf, imatrix):
        r = subprocess.run([self.verify, src, gguf, imatrix], capture_output=True, text=True)
        last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr.strip()
        return dict(identical=r.returncode == 0, verify=last)

    def model(self, size):
        a, w = self.args, self.args.work
        pre = os.path.join(w, size)
        f16, calib, test = f"{pre}-f16.gguf", f"{pre}-calib.txt", f"{pre}-test.txt"
        t0 = time.time()
        if not os.path.exists(f16):
            log(f"{size}: training (tools/train_llama.py)")
            subprocess.run([sys.executable, os.path.join(ROOT, "tools", "train_llama.py"),
                            "--size", size, "-o", pre, "--threads", self.t], check=True)
        trained = json.load(open(f"{pre}-train.json"))
        im, base = f"{pre}-imatrix.gguf", f"{pre}-base.kld"
        if not os.path.exists(im):
            self.tool("llama-imatrix", "-m", f16, "-f", calib, "-c", str(CTX), "--chunks",
                      str(IM_CHUNKS), "-t", self.t, "-o", im)
        base_out = self.tool("llama-perplexity", "-m", f16, "-f", test, "-c", str(CTX),
                             "--chunks", str(TEST_CHUNKS), "-t", self.t,
                             "--kl-divergence-base", base, marker="Final estimate")
        f16_ppl = num(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", base_out)
        res = dict(model=size, config=trained["config"], steps=trained["steps"],
                   test_loss=trained["test_loss"], f16=dict(bytes=os.path.getsize(f16),
                                                            ppl=f16_ppl[0], ppl_se=f16_ppl[1]),
                   mixes={})
        scales = None
        if "calibrated" in a.variants:
            scales = f"{pre}-scales.csv"
            cfg = self.config(pre, "calib", "relative", None)
            if not os.path.exists(scales):
                log(f"{size}: per-tensor scales (tools/llamacpp_calibrate.py)")
                head = f"{pre}-caltext.txt"
                with open(calib) as f, open(head, "w") as g:
                    g.write(f.read()[200000:])            # text the imatrix did not read
                run([sys.executable, os.path.join(ROOT, "tools", "llamacpp_calibrate.py"), cfg,
                     "--text", head, "-o", scales, "--chunks", str(CAL_CHUNKS), "--llama-bin",
                     self.bin, "--threads", self.t, "-q"], "llamacpp_calibrate", env=self.env)
        for mix in a.mixes:
            g = f"{pre}-{mix}.gguf"
            run([os.path.join(self.bin, "llama-quantize"), "--imatrix", im, f16, g, mix,
                 self.t], f"llama-quantize {mix}")
            row = dict(mix=self.measure(g, test, base), plans={})
            row["mix"].update(self.check(f16, g, im))
            for v in a.variants:
                cfg = self.config(pre, v, "mse" if v == "mse" else "relative",
                                  scales if v == "calibrated" else None)
                plan_dir = os.path.join(w, f"{size}-out-{v}")
                run([self.bitplan, "run", cfg, "--max-bytes-of", g, "-q"], f"bitplan {v} {mix}")
                with open(os.path.join(plan_dir, "tensor-types.txt.cmd")) as f:
                    cmd = f.read().strip()
                run(["sh", "-c", cmd], f"the plan's command ({v} {mix})", env=self.env)
                out = f"{pre}-bitplan-{v}-{mix}.gguf"
                os.replace(f"{pre}-f16-bitplan.gguf", out)
                plan = open(os.path.join(plan_dir, "plan.yaml")).read()
                pred = float(re.search(r"gguf_file_bytes: ([0-9.]+)", plan).group(1))
                m = self.measure(out, test, base)
                m.update(self.check(f16, out, im), predicted_bytes=pred,
                         types=re.findall(r'quantizer: "([a-z0-9_A-Z]+)"', plan))
                row["plans"][v] = m
            res["mixes"][mix] = row
            log(f"{size}/{mix}: {time.time() - t0:.0f} s")
        return res

    def config(self, pre, name, metric, scales):
        path = f"{pre}-{name}.yaml"
        with open(path, "w") as f:
            f.write(f"model: {{weights: {os.path.basename(pre)}-f16.gguf, "
                    f"imatrix: {os.path.basename(pre)}-imatrix.gguf}}\n"
                    f"candidates: {{types: [{', '.join(TYPES)}]}}\n"
                    f"metric: {metric}\n"
                    + (f"metric_scales: {os.path.basename(scales)}\n" if scales else "")
                    + f"output: {{dir: {os.path.basename(pre)}-out-{name}, "
                      f"formats: [yaml, llamacpp]}}\n")
        return path


def verdict(a, b):
    """b against a (mean KLD): lower beyond two combined standard errors?"""
    d, se = a["kld"] - b["kld"], math.hypot(a["kld_se"], b["kld_se"])
    return d, se, "better" if d > 2 * se else "worse" if d < -2 * se else "even"


def markdown(results, args):
    out = []
    for r in results:
        c = r["config"]
        out.append(f"\n**{r['model']}** (E {c['embd']}, {c['blocks']} blocks, F {c['ff']}; "
                   f"F16 {r['f16']['bytes']} bytes, held-out perplexity {r['f16']['ppl']:.4f}): "
                   "file size, perplexity, mean KLD to F16 (×10⁻³, ± standard error), same "
                   "top token (%) on held-out text\n")
        out.append("| mix | bytes | PPL | KLD | same top | " + " | ".join(
            f"bitplan {v}: bytes (predicted) | KLD | same top" for v in args.variants) + " |")
        out.append("| --- |" + " ---: |" * (4 + 3 * len(args.variants)))
        for mix, row in r["mixes"].items():
            m = row["mix"]
            cells = [mix, str(m["bytes"]), f"{m['ppl']:.4f}",
                     f"{1e3 * m['kld']:.3f} ± {1e3 * m['kld_se']:.3f}", f"{m['same_top']:.2f}"]
            for v in args.variants:
                p = row["plans"][v]
                d, se, how = verdict(m, p)
                cells += [f"{p['bytes']} ({p['predicted_bytes']:.0f})",
                          f"{1e3 * p['kld']:.3f} ± {1e3 * p['kld_se']:.3f}"
                          + (" (better)" if how == "better" else " (worse)" if how == "worse"
                             else ""), f"{p['same_top']:.2f}"]
            out.append("| " + " | ".join(cells) + " |")
    ok = [p["identical"] for r in results for row in r["mixes"].values()
          for p in [row["mix"]] + list(row["plans"].values())]
    sizes = [abs(p["bytes"] - p["predicted_bytes"]) / p["bytes"] for r in results
             for row in r["mixes"].values() for p in row["plans"].values()]
    out.append(f"\nEvery GGUF written ({len(ok)}: the mixes and the plans' files) checked "
               f"tensor by tensor against bitplan's quantization of the source: "
               f"{sum(ok)} identical.  Predicted against written file size: largest "
               f"difference {100 * max(sizes):.4f} %.\n")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["small", "large"])
    ap.add_argument("--mixes", nargs="+", default=["Q3_K_M", "Q4_K_S", "Q4_K_M", "Q5_K_M"])
    ap.add_argument("--variants", nargs="+", default=["relative", "mse", "calibrated"])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--work", default=os.path.join(HERE, "work"))
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    args.work = os.path.abspath(args.work)
    os.makedirs(args.work, exist_ok=True)
    b = Bench(args)
    results = [b.model(m) for m in args.models]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    md = markdown(results, args)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
