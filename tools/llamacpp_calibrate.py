"""What each tensor's error costs the model, measured with llama.cpp itself (no
PyTorch): per-tensor metric scales for bitplan's llama.cpp route.

An importance matrix weighs errors within a tensor, not between tensors.  This
tool measures, for every planned tensor, the mean KL divergence of the model's
next-token distribution from the F16 model's when that tensor alone is
quantized to one type (llama-quantize with a type file: the tensor at TYPE,
every other one F16) on a calibration text (llama-perplexity
--kl-divergence), and divides it by the tensor's predicted error at that type
in bitplan's sensitivity table.  The quotient is the tensor's scale (HIGGS's
linearity: the loss increase is close to the sum of per-tensor coefficients
times per-tensor errors); with the scales (metric_scales: FILE in the config,
or --metric-scales FILE) bitplan's errors are in KL units, its plan's
predicted error is a KLD, and budget.max_error means one.

    python3 tools/llamacpp_calibrate.py CONFIG --text calib.txt -o scales.csv
        [--type q3_K] [--ctx 128] [--chunks 32] [--llama-bin DIR] [--threads 2]

CONFIG is the llama.cpp route's config (model.weights a GGUF, candidates.types,
usually model.imatrix); its table is measured first (`bitplan sensitivity`,
BITPLAN or `bitplan` on PATH).  llama-quantize and llama-perplexity come from
--llama-bin or PATH.  Writes CSV layer,metric,objective,scale,exponent,
measured,measured_se,predicted (objective kl, exponent 1).  Cost: one
llama-quantize and one llama-perplexity run per tensor.
"""
import argparse
import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time


def run(cmd, what):
    """The command's output (stdout and stderr, through a file: a pipe that
    Python drains slowly on a busy machine holds llama.cpp's log thread back,
    and what it has not written when the process exits is lost)."""
    with tempfile.TemporaryFile("w+") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, text=True)
        f.seek(0)
        out = f.read()
    if r.returncode != 0:
        tail = " | ".join(out.strip().splitlines()[-3:])
        raise SystemExit(f"llamacpp_calibrate: {what} failed (exit {r.returncode}): {tail}")
    return out


def run_until(cmd, what, marker, tries=20):
    """run(), again while the output lacks marker: llama.cpp's tools log from a
    worker thread that may drop the last lines when the process exits
    (common/log.cpp leaves its logger unflushed at exit), more often on a busy
    machine."""
    for _ in range(tries):
        out = run(cmd, what)
        if marker in out:
            break
    return out


def find(name, bindir):
    path = os.path.join(bindir, name) if bindir else shutil.which(name)
    if not path or not os.access(path, os.X_OK):
        raise SystemExit(f"llamacpp_calibrate: {name} not found"
                         + (f" in {bindir}" if bindir else " on PATH (use --llama-bin DIR)"))
    return path


def config_paths(config):
    """model.weights and model.imatrix (or None) of the config, resolved against
    its directory: the model mapping read in flow ({weights: ..., imatrix: ...})
    or block style (bitplan validates the file itself first)."""
    text = open(config).read()
    m = re.search(r"^model:(.*?)(?=^\S)", text + "\nend:", re.S | re.M)
    body = m.group(1) if m else ""
    base = os.path.dirname(os.path.abspath(config))

    def key(k):
        v = re.search(rf"\b{k}:\s*([^,}}\n#]+)", body)
        return os.path.join(base, v.group(1).strip().strip("'\"")) if v else None
    if not key("weights"):
        raise SystemExit(f"llamacpp_calibrate: {config}: no model.weights")
    return key("weights"), key("imatrix")


def kld(out):
    num = r"([-+]?(?:nan|inf|[0-9.]+(?:[eE][-+]?[0-9]+)?))"
    m = re.search(r"Mean\s+KLD:\s*" + num + r"\s*±\s*" + num, out)
    if not m:
        tail = " | ".join(out.strip().splitlines()[-3:])
        raise SystemExit("llamacpp_calibrate: llama-perplexity printed no 'Mean KLD' (too few "
                         f"chunks? it needs 100 scored tokens): {tail}")
    se = float(m.group(2))
    return float(m.group(1)), se if se == se else 0.0


def main():
    ap = argparse.ArgumentParser(
        description="Per-tensor metric scales for bitplan's llama.cpp route, measured with "
                    "llama-quantize and llama-perplexity --kl-divergence (no PyTorch).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("config", help="bitplan config: model.weights a GGUF, candidates.types")
    ap.add_argument("--text", required=True, help="calibration text (llama-perplexity -f)")
    ap.add_argument("-o", "--out", required=True, help="the scales CSV to write")
    ap.add_argument("--type", default=None,
                    help="the type each tensor is measured at (default: q3_K when among the "
                         "candidates, else the smallest candidate)")
    ap.add_argument("--ctx", type=int, default=128, help="llama-perplexity -c")
    ap.add_argument("--chunks", type=int, default=32, help="llama-perplexity --chunks")
    ap.add_argument("--llama-bin", help="directory of llama-quantize and llama-perplexity")
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads")
    ap.add_argument("--metric", default="relative",
                    help="the table column the scales rescale (the plan's metric)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    args = ap.parse_args()
    quant, ppl = find("llama-quantize", args.llama_bin), find("llama-perplexity", args.llama_bin)
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "build",
                        "bitplan")                      # a source tree's build
    bitplan = (os.environ.get("BITPLAN") or shutil.which("bitplan")
               or (here if os.access(here, os.X_OK) else None))
    if not bitplan:
        raise SystemExit("llamacpp_calibrate: bitplan not found (set BITPLAN, put it on PATH, "
                         "or build it in build/)")
    if not os.path.isfile(args.text):
        raise SystemExit(f"llamacpp_calibrate: {args.text}: no such file")
    model, imatrix = config_paths(args.config)
    tmp = tempfile.mkdtemp(prefix="bitplan-llamacpp-")
    try:
        table = os.path.join(tmp, "table.csv")
        run([bitplan, "sensitivity", args.config, "-o", table, "-q"], "bitplan sensitivity")
        rows = list(csv.DictReader(open(table)))
        types = []
        for r in rows:
            if r["quantizer"] not in types:
                types.append(r["quantizer"])
        t = args.type or ("q3_K" if "q3_K" in types else
                          min(types, key=lambda q: next(float(r["weight_bits"]) / float(r["params"])
                                                        for r in rows if r["quantizer"] == q)))
        if t not in types:
            raise SystemExit(f"llamacpp_calibrate: --type {t} is not among the config's "
                             f"candidates ({', '.join(types)})")
        pred = {r["layer"]: float(r[args.metric]) for r in rows if r["quantizer"] == t
                and r[args.metric] != ""}
        if not pred:
            raise SystemExit(f"llamacpp_calibrate: the table has no '{args.metric}' column values "
                             f"(use the config's metric)")
        base = os.path.join(tmp, "base.kld")
        common = ["-f", args.text, "-c", str(args.ctx), "--chunks", str(args.chunks),
                  "-t", str(args.threads)]
        run_until([ppl, "-m", model, "--kl-divergence-base", base] + common,
                  "llama-perplexity (base)", "Final estimate")
        out, t0, tty = [], time.time(), sys.stderr.isatty() and not args.quiet
        layers = list(pred)
        for i, layer in enumerate(layers):
            types_file, one = os.path.join(tmp, "types.txt"), os.path.join(tmp, "one.gguf")
            with open(types_file, "w") as f:
                f.write("^" + re.escape(layer + ".weight").replace("\\_", "_") + f"$={t}\n.*=f16\n")
            run([quant] + (["--imatrix", imatrix] if imatrix else []) +
                ["--tensor-type-file", types_file, model, one, "Q8_0"],
                f"llama-quantize ({layer} at {t})")
            m, se = kld(run_until([ppl, "-m", one, "--kl-divergence-base", base,
                                   "--kl-divergence"] + common, f"llama-perplexity ({layer})",
                                  "Mean    KLD"))
            os.remove(one)
            p = pred[layer]
            out.append(dict(layer=layer, metric=args.metric, objective="kl",
                            scale=repr(max(m, 0.0) / p) if p > 0 else "0", exponent="1",
                            measured=repr(m), measured_se=repr(se), predicted=repr(p)))
            if tty or (not args.quiet and i % 10 == 9):
                rate = (i + 1) / (time.time() - t0)
                print(f"\rllamacpp_calibrate: {i + 1}/{len(layers)} tensors, {rate:.2f}/s, ETA "
                      f"{(len(layers) - i - 1) / rate:.0f} s", end="" if tty else "\n",
                      file=sys.stderr)
        if tty:
            print(file=sys.stderr)
        # written whole beside the output (a name of our own, never the user's), then renamed
        fd, tmp_out = tempfile.mkstemp(prefix=".scales-", suffix=".tmp",
                                       dir=os.path.dirname(os.path.abspath(args.out)))
        try:
            with os.fdopen(fd, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(out[0]), lineterminator="\n")
                w.writeheader()
                w.writerows(out)
            os.replace(tmp_out, args.out)
        except BaseException:
            os.unlink(tmp_out)
            raise
        if not args.quiet:
            print(f"llamacpp_calibrate: {len(out)} tensors measured at {t}: {args.out}",
                  file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
