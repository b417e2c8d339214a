"""Summary of bench/llm/run.sh: stage times, peak memory, projections."""
import csv
import os
import sys

out = sys.argv[1]


def timed(label):
    s, kb = open(os.path.join(out, label + ".time")).read().split()[-2:]
    return float(s), int(kb) / 1048576.0


seqs, seq = int(os.environ["LLAMA_SEQS"]), int(os.environ["LLAMA_SEQ"])
blocks = int(os.environ["LLAMA_BLOCKS"])
tokens = seqs * seq
cap_s, cap_gb = timed("capture")
sen_s, sen_gb = timed("sensitivity")
run_s, run_gb = timed("run")
with open(os.path.join(out, "out", "sensitivity.csv")) as f:
    rows = list(csv.DictReader(f))
layers = sorted({r["layer"] for r in rows})
head = [n for n in layers if n == "lm_head"]
prof = open(os.path.join(out, "sensitivity.log")).read()
print(f"tokens captured: {tokens:,} ({seqs} x {seq}); {blocks} blocks + head; "
      f"{len(layers)} layers, {len(rows)} table rows")
print(f"capture --stats: {cap_s:.0f} s, peak {cap_gb:.1f} GiB; "
      f"{tokens / cap_s:.1f} tokens/s")
print(f"stats file: {os.path.getsize(os.path.join(out, 'stats.safetensors')) / 2**30:.2f} GiB")
print(f"sensitivity: {sen_s:.0f} s, peak {sen_gb:.1f} GiB")
print(f"run (cached table, plan, llama.cpp export): {run_s:.1f} s, peak {run_gb:.1f} GiB")
for line in prof.splitlines():
    if line.startswith("profile:"):
        print("  " + line)
# capture: the range pass reads one batch; the sums pass every token, so its
# time is linear in tokens; sensitivity from statistics does not depend on them
per_token = cap_s / tokens
print(f"projection to 262,144 tokens (capture linear in tokens): "
      f"{per_token * 262144 / 3600:.1f} h; sensitivity unchanged")
