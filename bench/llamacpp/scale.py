"""bitplan's llama.cpp route at 7B scale: time and memory.

    /usr/bin/python3 bench/llamacpp/scale.py [--work DIR] [--build build] [--blocks 32]

Writes (once) a 7B-shaped Llama GGUF with random F16 weights (vocabulary
32,000, embedding 4,096, 32 blocks of attention 4,096 x 4,096 and FFN 4,096 x
11,008, output 32,000 x 4,096: 6.74 G weights, 13.5 GB) and a synthetic
importance matrix (per column mean squares spread over two orders of
magnitude, loud columns as real activations have), streamed tensor by tensor;
then plans it over six llama.cpp types (q2_K, q3_K, q4_K, q5_K, q6_K, q8_0) at
4.85 bits per weight (llama.cpp's count) with `bitplan run`, under
/usr/bin/time: wall time, CPU time and the peak resident memory.  Needs
python3-numpy and 14 GB of disk in WORK.
"""
import argparse
import os
import re
import struct
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
VOCAB, EMBD, FF = 32000, 4096, 11008


def s(x):
    b = x.encode()
    return struct.pack("<Q", len(b)) + b


def tensors(blocks):
    """(name, ne (ggml order), f32) in file order."""
    out = [("token_embd.weight", (EMBD, VOCAB), False)]
    for b in range(blocks):
        out += [(f"blk.{b}.attn_norm.weight", (EMBD,), True)]
        out += [(f"blk.{b}.attn_{k}.weight", (EMBD, EMBD), False) for k in ("q", "k", "v")]
        out += [(f"blk.{b}.attn_output.weight", (EMBD, EMBD), False),
                (f"blk.{b}.ffn_norm.weight", (EMBD,), True),
                (f"blk.{b}.ffn_gate.weight", (EMBD, FF), False),
                (f"blk.{b}.ffn_up.weight", (EMBD, FF), False),
                (f"blk.{b}.ffn_down.weight", (FF, EMBD), False)]
    return out + [("output_norm.weight", (EMBD,), True), ("output.weight", (EMBD, VOCAB), False)]


def write_gguf(path, kv, ts, data):
    """GGUF v3 streamed: kv [(key, type, packed value)], ts [(name, ne, ggml type, bytes)],
    data(i) -> the i-th tensor's bytes."""
    head = b"GGUF" + struct.pack("<IQQ", 3, len(ts), len(kv))
    head += b"".join(s(k) + struct.pack("<I", t) + v for k, t, v in kv)
    off = 0
    for name, ne, typ, nbytes in ts:
        head += s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        head += struct.pack("<IQ", typ, off)
        off += (nbytes + 31) // 32 * 32
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(head + b"\0" * ((-len(head)) % 32))
        for i, (_, _, _, nbytes) in enumerate(ts):
            b = data(i)
            assert len(b) == nbytes
            f.write(b)
            f.write(b"\0" * ((-nbytes) % 32))
    os.replace(tmp, path)


def make_model(path, blocks):
    rng = np.random.default_rng(0)
    ts = tensors(blocks)
    U32, F32, STR = 4, 6, 8
    kv = [("general.architecture", STR, s("llama")), ("general.name", STR, s("7B-shaped")),
          ("general.file_type", U32, struct.pack("<I", 1)),
          ("llama.block_count", U32, struct.pack("<I", blocks)),
          ("llama.embedding_length", U32, struct.pack("<I", EMBD)),
          ("llama.feed_forward_length", U32, struct.pack("<I", FF)),
          ("llama.attention.head_count", U32, struct.pack("<I", 32)),
          ("llama.attention.layer_norm_rms_epsilon", F32, struct.pack("<f", 1e-5))]
    meta = [(n, ne, 0 if f32 else 1, int(np.prod(ne)) * (4 if f32 else 2)) for n, ne, f32 in ts]

    def data(i):
        name, ne, f32 = ts[i]
        n = int(np.prod(ne))
        if f32:
            return (1 + 0.1 * rng.standard_normal(n, dtype=np.float32)).astype(np.float32).tobytes()
        w = rng.standard_normal(n, dtype=np.float32)
        w *= np.float32(1 / np.sqrt(ne[0]))
        return w.astype(np.float16).tobytes()
    write_gguf(path, kv, meta, data)


def make_imatrix(path, blocks):
    rng = np.random.default_rng(1)
    ts = [(n, ne) for n, ne, f32 in tensors(blocks) if not f32 and n != "token_embd.weight"]
    STR, U32, ARR = 8, 4, 9
    kv = [("general.type", STR, s("imatrix")),
          ("imatrix.datasets", ARR, struct.pack("<IQ", STR, 1) + s("synthetic")),
          ("imatrix.chunk_count", U32, struct.pack("<I", 100)),
          ("imatrix.chunk_size", U32, struct.pack("<I", 512))]
    meta, arrays, tokens = [], [], 51200.0
    for n, ne in ts:
        cols = ne[0]
        ms = np.exp(rng.standard_normal(cols)).astype(np.float32)
        ms[rng.random(cols) < 0.01] *= 50                 # loud columns
        arrays += [(ms * tokens).astype(np.float32), np.array([tokens], dtype=np.float32)]
        meta += [(n + ".in_sum2", (cols, 1), 0, 4 * cols), (n + ".counts", (1, 1), 0, 4)]
    write_gguf(path, kv, meta, lambda i: arrays[i].tobytes())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default=os.path.join(HERE, "work"))
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--blocks", type=int, default=32)
    ap.add_argument("--bpw", type=float, default=4.85)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    model, im = os.path.join(args.work, "7b-f16.gguf"), os.path.join(args.work, "7b-imatrix.gguf")
    if not os.path.exists(model):
        t0 = time.time()
        make_model(model, args.blocks)
        print(f"wrote {model} ({os.path.getsize(model) / 1e9:.1f} GB) in {time.time() - t0:.0f} s",
              file=sys.stderr)
    if not os.path.exists(im):
        make_imatrix(im, args.blocks)
    cfg = os.path.join(args.work, "7b.yaml")
    with open(cfg, "w") as f:
        f.write("model: {weights: 7b-f16.gguf, imatrix: 7b-imatrix.gguf}\n"
                "candidates: {types: [q2_K, q3_K, q4_K, q5_K, q6_K, q8_0]}\n"
                f"budget: {{bpw: {args.bpw}}}\n"
                "output: {dir: 7b-out, formats: [yaml, llamacpp]}\n")
    exe = os.path.abspath(os.path.join(args.build, "bitplan"))
    r = subprocess.run(["/usr/bin/time", "-v", exe, "run", cfg, "--force"], capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise SystemExit(r.stderr)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", r.stderr).group(1)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1))
    user = float(re.search(r"User time \(seconds\): ([0-9.]+)", r.stderr).group(1))
    sys_ = float(re.search(r"System time \(seconds\): ([0-9.]+)", r.stderr).group(1))
    plan = open(os.path.join(args.work, "7b-out", "plan.yaml")).read()
    fb = re.search(r"gguf_file_bytes: ([0-9.]+)", plan).group(1)
    bpw = re.search(r"gguf_bpw: ([0-9.]+)", plan).group(1)
    print("\n".join(l for l in r.stdout.splitlines() if not l.startswith(("blk.", "token", "output"))))
    print(f"\n7B-shaped ({args.blocks} blocks, {len(tensors(args.blocks))} tensors), 6 types: "
          f"wall {wall}, CPU {user + sys_:.0f} s, peak resident {rss / 1048576:.2f} GiB; "
          f"plan {float(fb) / 1e9:.3f} GB at {float(bpw):.4f} bpw")


if __name__ == "__main__":
    main()
