"""Train a small Llama-architecture language model and write it as llama.cpp's
GGUF, for bench/llamacpp (bitplan's llama.cpp route against llama.cpp's mixes).

Text: Debian's `fortunes` (tools/train_lm.py's corpus: every fortune, files in
name order; every tenth fortune held out).  Tokens: SentencePiece-style
characters as llama.cpp's "llama" tokenizer reads them -- a token per
printable ASCII character (space as U+2581), newline, and the 256 byte tokens
<0xXX> for everything else (its byte fallback) -- so llama.cpp tokenizes the
text exactly as training did.  Every window starts with BOS, as
llama-perplexity's chunks do.

    token_embd (V x E); per block: attn_norm (RMSNorm), attn_q, attn_k,
    attn_v, attn_output (E x E, RoPE on adjacent pairs as llama.cpp's LLAMA
    arch applies it), ffn_norm, ffn_gate, ffn_up (E -> F), ffn_down (F -> E),
    SwiGLU; output_norm, output (E -> V).  No biases, nothing tied.

Sizes (--size): small E 256, 4 blocks, 4 heads, F 768 (800 steps); large E
512, 3 blocks, 8 heads, F 1024 (400 steps); batches of 16 windows of 128
tokens; rows multiples of 256, as llama.cpp's k-quants need.
Seeded and deterministic (--threads fixed).  Writes MODEL-f16.gguf (matrices
F16, norms F32) and, beside it, the text splits llama.cpp's tools read:
MODEL-calib.txt (training text for llama-imatrix), MODEL-test.txt (held-out
fortunes), and MODEL-train.json (the loss curve, the test loss).

    /usr/bin/python3 tools/train_llama.py --size small -o work/small
"""
import argparse
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_lm import fortunes  # noqa: E402

SIZES = {"small": dict(embd=256, blocks=4, heads=4, ff=768, steps=800, lr=3e-3),
         "large": dict(embd=512, blocks=3, heads=8, ff=1024, steps=400, lr=2e-3)}
CTX, BATCH, EPS, ROPE_BASE = 128, 16, 1e-5, 10000.0

# ---- the tokenizer: llama.cpp's SPM over single characters ----------------------------

SPECIAL = ["<unk>", "<s>", "</s>"]
BYTES = [f"<0x{b:02X}>" for b in range(256)]
CHARS = ["\u2581"] + [chr(c) for c in range(33, 127)] + ["\n"]
TOKENS = SPECIAL + BYTES + CHARS
BOS = 1
_ID = {t: i for i, t in enumerate(TOKENS)}


def encode(text):
    """Ids as llama.cpp's SPM tokenizer gives them for this vocabulary (spaces
    as U+2581, no space prefix; a character without a token as its UTF-8 bytes)."""
    out = []
    for ch in text.replace(" ", "\u2581"):
        i = _ID.get(ch)
        if i is not None and i >= len(SPECIAL) + 256:
            out.append(i)
        else:
            out += [len(SPECIAL) + b for b in ch.encode("utf-8")]
    return out


def splits():
    """(train, test) texts: every tenth fortune held out."""
    all_ = fortunes()
    train = [t for i, t in enumerate(all_) if i % 10 != 9]
    test = [t for i, t in enumerate(all_) if i % 10 == 9]
    return "\n%\n".join(train) + "\n%\n", "\n%\n".join(test) + "\n%\n"


# ---- the model ------------------------------------------------------------------------

def rope(x, base=ROPE_BASE):
    """x: N x H x T x D; pairs (2i, 2i+1) rotated by pos * base^(-2i/D) (llama.cpp's
    LLAMA_ROPE_TYPE_NORM)."""
    n, h, t, d = x.shape
    inv = base ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)
    ang = torch.arange(t, dtype=torch.float32)[:, None] * inv[None, :]
    cos, sin = ang.cos(), ang.sin()
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)


class RMSNorm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * self.weight


class Block(nn.Module):
    def __init__(self, e, h, f):
        super().__init__()
        self.h = h
        self.attn_norm, self.ffn_norm = RMSNorm(e), RMSNorm(e)
        self.attn_q, self.attn_k, self.attn_v, self.attn_output = (
            nn.Linear(e, e, bias=False) for _ in range(4))
        self.ffn_gate, self.ffn_up = nn.Linear(e, f, bias=False), nn.Linear(e, f, bias=False)
        self.ffn_down = nn.Linear(f, e, bias=False)

    def forward(self, x):
        n, t, e = x.shape
        y = self.attn_norm(x)
        q, k, v = (m(y).view(n, t, self.h, e // self.h).transpose(1, 2)
                   for m in (self.attn_q, self.attn_k, self.attn_v))
        s = rope(q) @ rope(k).transpose(-1, -2) / math.sqrt(e // self.h)
        s = s.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
        a = s.softmax(-1) @ v
        x = x + self.attn_output(a.transpose(1, 2).reshape(n, t, e))
        y = self.ffn_norm(x)
        return x + self.ffn_down(F.silu(self.ffn_gate(y)) * self.ffn_up(y))


class Llama(nn.Module):
    def __init__(self, embd, blocks, heads, ff, **_):
        super().__init__()
        self.cfg = dict(embd=embd, blocks=blocks, heads=heads, ff=ff)
        self.token_embd = nn.Embedding(len(TOKENS), embd)
        self.blk = nn.ModuleList(Block(embd, heads, ff) for _ in range(blocks))
        self.output_norm = RMSNorm(embd)
        self.output = nn.Linear(embd, len(TOKENS), bias=False)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, ids):
        x = self.token_embd(ids)
        for b in self.blk:
            x = b(x)
        return self.output(self.output_norm(x))


def batches(ids, n, seed):
    """n windows: BOS then CTX - 1 tokens, and the CTX next tokens."""
    off = np.random.RandomState(seed).randint(0, len(ids) - CTX, size=n)
    x = np.stack([np.concatenate(([BOS], ids[o:o + CTX - 1])) for o in off])
    y = np.stack([ids[o:o + CTX] for o in off])
    return torch.from_numpy(x), torch.from_numpy(y)


def test_loss(model, ids, max_windows=256):
    model.eval()
    losses = []
    with torch.no_grad():
        for w in range(min(max_windows, (len(ids) - 1) // CTX)):
            seg = ids[w * CTX: w * CTX + CTX]
            x = torch.from_numpy(np.concatenate(([BOS], seg[:-1])))[None]
            losses.append(F.cross_entropy(model(x)[0], torch.from_numpy(seg)).item())
    model.train()
    return float(np.mean(losses))


def llama_perplexity(model, text, ctx=CTX, max_chunks=64):
    """Perplexity as llama-perplexity computes it (-c ctx): the text's tokens
    after a BOS, cut in chunks of ctx whose first token becomes BOS, the
    second half of each chunk scored; with the weights rounded to F16 as the
    GGUF stores them.  The bench checks llama.cpp's number against it."""
    ids = np.array([BOS] + encode(text), dtype=np.int64)
    m16 = Llama(**model.cfg)
    m16.load_state_dict({k: v.half().float() if v.dim() == 2 else v
                         for k, v in model.state_dict().items()})
    m16.eval()
    nll, count = 0.0, 0
    with torch.no_grad():
        for c in range(min(max_chunks, len(ids) // ctx)):
            chunk = torch.from_numpy(ids[c * ctx:(c + 1) * ctx].copy())
            chunk[0] = BOS
            lp = m16(chunk[None])[0].log_softmax(-1)
            first = ctx // 2
            tgt = chunk[first + 1:]
            nll -= lp[first:ctx - 1].gather(1, tgt[:, None]).sum().item()
            count += len(tgt)
    return math.exp(nll / count)


# ---- GGUF (version 3), written here ----------------------------------------------------

def write_gguf(path, model, cfg):
    U32, F32, BOOL, STR, ARR, I32 = 4, 6, 7, 8, 9, 5

    def s(x):
        b = x.encode("utf-8")
        return struct.pack("<Q", len(b)) + b

    kv = [("general.architecture", STR, "llama"), ("general.name", STR, os.path.basename(path)),
          ("general.file_type", U32, 1),
          ("llama.context_length", U32, CTX), ("llama.embedding_length", U32, cfg["embd"]),
          ("llama.block_count", U32, cfg["blocks"]),
          ("llama.feed_forward_length", U32, cfg["ff"]),
          ("llama.attention.head_count", U32, cfg["heads"]),
          ("llama.attention.head_count_kv", U32, cfg["heads"]),
          ("llama.rope.dimension_count", U32, cfg["embd"] // cfg["heads"]),
          ("llama.rope.freq_base", F32, ROPE_BASE),
          ("llama.attention.layer_norm_rms_epsilon", F32, EPS),
          ("llama.vocab_size", U32, len(TOKENS)),
          ("tokenizer.ggml.model", STR, "llama"),
          ("tokenizer.ggml.tokens", ARR, (STR, TOKENS)),
          ("tokenizer.ggml.scores", ARR, (F32, [0.0] * len(TOKENS))),
          ("tokenizer.ggml.token_type", ARR, (I32, [2, 3, 3] + [6] * 256 + [1] * len(CHARS))),
          ("tokenizer.ggml.bos_token_id", U32, 1), ("tokenizer.ggml.eos_token_id", U32, 2),
          ("tokenizer.ggml.unknown_token_id", U32, 0),
          ("tokenizer.ggml.add_bos_token", BOOL, True),
          ("tokenizer.ggml.add_eos_token", BOOL, False),
          ("tokenizer.ggml.add_space_prefix", BOOL, False)]

    def value(t, v):
        if t == STR:
            return s(v)
        if t == ARR:
            et, items = v
            return struct.pack("<IQ", et, len(items)) + b"".join(value(et, i) for i in items)
        return struct.pack({U32: "<I", I32: "<i", F32: "<f", BOOL: "<?"}[t], v)

    tensors = []
    sd = model.state_dict()

    def add(name, key):
        t = sd[key].detach().float().numpy()
        f16 = t.ndim == 2
        tensors.append((name, t.astype(np.float16 if f16 else np.float32), 1 if f16 else 0))
    add("token_embd.weight", "token_embd.weight")
    for i in range(cfg["blocks"]):
        for n in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm",
                  "ffn_gate", "ffn_up", "ffn_down"):
            add(f"blk.{i}.{n}.weight", f"blk.{i}.{n}.weight")
    add("output_norm.weight", "output_norm.weight")
    add("output.weight", "output.weight")
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv))
    head += b"".join(s(k) + struct.pack("<I", t) + value(t, v) for k, t, v in kv)
    off, infos = 0, []
    for name, a, typ in tensors:
        ne = a.shape[::-1]                           # ggml order: contiguous first
        infos.append(s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
                     + struct.pack("<IQ", typ, off))
        off += (a.nbytes + 31) // 32 * 32
    head += b"".join(infos)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(head + b"\0" * ((-len(head)) % 32))
        for _, a, _ in tensors:
            f.write(a.tobytes())
            f.write(b"\0" * ((-a.nbytes) % 32))
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description="Train a small Llama and write it as GGUF "
                                             "(bench/llamacpp).")
    ap.add_argument("--size", choices=sorted(SIZES), default="small",
                    help="model size (default: small)")
    ap.add_argument("-o", "--out", required=True, help="output prefix: OUT-f16.gguf, "
                    "OUT-calib.txt, OUT-test.txt, OUT-train.json")
    ap.add_argument("--steps", type=int, help="training steps (default: the size's)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    args = ap.parse_args()
    cfg = dict(SIZES[args.size])
    steps = args.steps or cfg["steps"]
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    train, test = splits()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    for name, text in (("calib", train[:400000]), ("test", test)):
        with open(f"{args.out}-{name}.txt", "w") as f:
            f.write(text)
    tr, te = np.array(encode(train), dtype=np.int64), np.array(encode(test), dtype=np.int64)
    model = Llama(**cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=0.01,
                            betas=(0.9, 0.95))
    curve, t0 = [], time.time()
    tty = sys.stderr.isatty() and not args.quiet
    for step in range(steps):
        lr = cfg["lr"] * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = batches(tr, BATCH, seed=step)
        loss = F.cross_entropy(model(x).reshape(-1, len(TOKENS)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            curve.append((step, round(loss.item(), 4)))
            if tty or (not args.quiet and step % 500 == 0):
                rate = (step + 1) / (time.time() - t0)
                print(f"\rtrain_llama {args.size}: step {step + 1}/{steps} loss {loss.item():.3f}"
                      f" {rate:.2f} steps/s ETA {(steps - step - 1) / rate:.0f} s",
                      end="" if tty else "\n", file=sys.stderr)
    if tty:
        print(file=sys.stderr)
    tl = test_loss(model, te)
    write_gguf(f"{args.out}-f16.gguf", model, cfg)
    with open(f"{args.out}-train.json", "w") as f:
        json.dump(dict(size=args.size, config=cfg, steps=steps, curve=curve, test_loss=tl,
                       test_ppl=math.exp(tl), seconds=round(time.time() - t0, 1),
                       llama_ppl_64_chunks=llama_perplexity(model, test)), f, indent=1)
    if not args.quiet:
        print(f"train_llama {args.size}: test loss {tl:.4f} (ppl {math.exp(tl):.3f}), "
              f"{args.out}-f16.gguf", file=sys.stderr)


if __name__ == "__main__":
    main()
