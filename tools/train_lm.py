"""Train the character-level transformer language model used by bench/e2e.

Text: every fortune cookie of Debian's `fortunes` package
(/usr/share/games/fortunes, files in name order, split at the '%' lines; the
Chinese files of fortunes-zh there are left out);
every tenth fortune is held out for testing.  Characters: printable ASCII and
newline, anything else as one extra symbol (97 classes).

    token embedding (97 x 128) + learned position embedding (128 positions)
    4 blocks of: LayerNorm - causal attention (qkv Linear 128->384, 4 heads,
                 proj Linear 128->128) - residual; LayerNorm - MLP (fc1
                 128->512, GELU, fc2 512->128) - residual
    LayerNorm - head (Linear 128->97): a softmax over the next character at
    every position

Every matrix product is an nn.Linear, so tools/capture.py sees all 17 layers.
Seeded and deterministic (one thread); writes configs/lm/model.safetensors
(F32, every parameter) with its test loss in the metadata.  Run from the
repository root with Debian's Python (python3-torch, python3-numpy, fortunes):

    /usr/bin/python3 tools/train_lm.py
"""
import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import save_file  # noqa: E402
from train_demo import load_weights  # noqa: E402
from train_vit import Block  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORTUNES = os.environ.get("FORTUNES", "/usr/share/games/fortunes")
CTX, DIM, HEADS, MLP, DEPTH = 128, 128, 4, 512, 4
VOCAB = 97                                   # 95 printable, newline, other


def encode(text):
    """Characters -> class ids: ' '..'~' -> 0..94, newline 95, anything else 96."""
    b = np.frombuffer(text.encode("utf-8", "replace"), dtype=np.uint8).astype(np.int64)
    ids = np.where((b >= 32) & (b < 127), b - 32, 96)
    ids[b == 10] = 95
    ids[b == 9] = 0                           # tab as space
    return ids


def decode(ids):
    return "".join(chr(i + 32) if i < 95 else "\n" if i == 95 else "?" for i in ids)


# the Chinese files of fortunes-zh (the recogniser's text, tools/train_ocr.py) share the
# directory; the language model reads the others
OTHER_PACKAGES = ("chinese", "song100", "tang300")


def fortunes(root=FORTUNES):
    """Every fortune in file-name order (files without a '.' suffix, but
    fortunes-zh's)."""
    names = sorted(f for f in os.listdir(root) if "." not in f and f not in OTHER_PACKAGES
                   and os.path.isfile(os.path.join(root, f))
                   and not os.path.islink(os.path.join(root, f)))
    if not names:
        raise SystemExit(f"train_lm: no fortune files in {root} (apt-get install fortunes)")
    out = []
    for n in names:
        with open(os.path.join(root, n), encoding="utf-8", errors="replace") as f:
            out += [t.strip("\n") for t in f.read().split("\n%\n") if t.strip()]
    return out


def load_split(split, root=FORTUNES):
    """The split's fortunes joined by '%' lines, as one id stream."""
    keep = [t for i, t in enumerate(fortunes(root)) if (i % 10 == 9) == (split == "test")]
    return torch.from_numpy(encode("\n%\n".join(keep) + "\n%\n"))


def windows(ids, n, seed, length=CTX + 1):
    """n windows of `length` ids at seeded random offsets."""
    off = np.random.RandomState(seed).randint(0, len(ids) - length, size=n)
    return torch.stack([ids[o:o + length] for o in off])


def test_windows(ids, length=CTX + 1):
    """Consecutive non-overlapping windows covering the stream."""
    n = (len(ids) - 1) // CTX
    return torch.stack([ids[i * CTX:i * CTX + length] for i in range(n)
                        if i * CTX + length <= len(ids)])


class CharLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, DIM)
        self.pos = nn.Parameter(torch.zeros(1, CTX, DIM))
        self.blocks = nn.ModuleList(Block(DIM, HEADS, MLP, causal=True) for _ in range(DEPTH))
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, VOCAB)

    def forward(self, ids):                   # ids: N x T (T <= CTX) -> logits N x T x VOCAB
        x = self.tok(ids) + self.pos[:, :ids.shape[1]]
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x))


def lm_loss(logits, batch):
    """Mean next-character cross entropy (nats) of a batch of windows."""
    return F.cross_entropy(logits.reshape(-1, VOCAB), batch[:, 1:].reshape(-1))


def evaluate(model, wins, bs=64):
    """(mean cross entropy in nats per character, top-1 accuracy) on windows."""
    model.eval()
    loss = right = count = 0.0
    with torch.no_grad():
        for i in range(0, len(wins), bs):
            w = wins[i:i + bs]
            logits = model(w[:, :-1])
            tgt = w[:, 1:]
            loss += F.cross_entropy(logits.reshape(-1, VOCAB), tgt.reshape(-1),
                                    reduction="sum").item()
            right += (logits.argmax(-1) == tgt).sum().item()
            count += tgt.numel()
    return loss / count, right / count


def load_model(path=os.path.join(ROOT, "configs", "lm", "model.safetensors")):
    return load_weights(CharLM(), path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "),
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "configs", "lm"))
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    train, test = load_split("train"), test_windows(load_split("test"))
    model = CharLM()
    nn.init.normal_(model.pos, std=0.02)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=args.steps)
    for step in range(args.steps):
        model.train()
        w = windows(train, args.batch, seed=step)
        opt.zero_grad()
        lm_loss(model(w[:, :-1]), w).backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if (step + 1) % 500 == 0 or step + 1 == args.steps:
            loss, acc = evaluate(model, test)
            print(f"step {step + 1}: test loss {loss:.4f} nats/char, accuracy {acc:.4f} "
                  f"({time.time() - t0:.0f} s)", flush=True)
    loss, acc = evaluate(model, test)

    os.makedirs(args.out, exist_ok=True)
    weights = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    meta = {"dataset": "debian fortunes", "script": "tools/train_lm.py", "seed": "0",
            "steps": str(args.steps), "test_loss": f"{loss:.4f}", "test_accuracy": f"{acc:.4f}"}
    path = os.path.join(args.out, "model.safetensors")
    save_file(path, weights, meta)
    assert evaluate(load_model(path), test) == (loss, acc)     # the file reproduces it
    print(f"test loss {loss:.4f} nats/char, accuracy {acc:.4f}; "
          f"{os.path.getsize(path) / 1e6:.2f} MB; {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
