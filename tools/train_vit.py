"""Train the small vision transformer used by bench/e2e (Fashion-MNIST).

    patches of 7x7 pixels (16 tokens) -> embed (Linear 49->64) + position
    3 blocks of: LayerNorm - attention (qkv Linear 64->192, 4 heads, proj
                 Linear 64->64) - residual; LayerNorm - MLP (fc1 64->128, GELU,
                 fc2 128->64) - residual
    LayerNorm - mean over tokens - head (Linear 64->10)

Every matrix product of the model is an nn.Linear (attention written out, not
nn.MultiheadAttention), so tools/capture.py sees all 14 layers.  Seeded and
deterministic; writes configs/vit/model.safetensors (F32, every parameter) with
its test accuracy in the metadata.  Run from the repository root with Debian's
Python (python3-torch, python3-numpy, dataset-fashion-mnist):

    /usr/bin/python3 tools/train_vit.py
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
from train_demo import accuracy, load_split, load_weights, train  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATCH, DIM, HEADS, MLP, DEPTH = 7, 64, 4, 128, 3


class Block(nn.Module):
    """Pre-LayerNorm transformer block, attention written out (every product an
    nn.Linear); causal masks attention to earlier positions (language models)."""

    def __init__(self, dim=DIM, heads=HEADS, mlp=MLP, causal=False):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp)
        self.fc2 = nn.Linear(mlp, dim)

    def forward(self, x):
        b, t, d = x.shape
        h = self.heads
        q, k, v = self.qkv(self.ln1(x)).reshape(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
        att = q @ k.transpose(-2, -1) / (d // h) ** 0.5
        if self.causal:
            att = att.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))
        att = torch.softmax(att, dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class ViT(nn.Module):
    def __init__(self):
        super().__init__()
        tokens = (28 // PATCH) ** 2
        self.embed = nn.Linear(PATCH * PATCH, DIM)
        self.pos = nn.Parameter(torch.zeros(1, tokens, DIM))
        self.blocks = nn.ModuleList(Block() for _ in range(DEPTH))
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, 10)

    def forward(self, x):                       # x: N x 1 x 28 x 28
        p = F.unfold(x, PATCH, stride=PATCH).transpose(1, 2)      # N x 16 x 49
        x = self.embed(p) + self.pos
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x).mean(1))


def load_model(path=os.path.join(ROOT, "configs", "vit", "model.safetensors")):
    return load_weights(ViT(), path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "),
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "configs", "vit"))
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    xtr, ytr = load_split(args.data, "train")
    xte, yte = load_split(args.data, "t10k")
    model = ViT()
    nn.init.normal_(model.pos, std=0.02)
    steps = args.epochs * ((len(xtr) + 127) // 128)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    train(model, opt, xtr, ytr, xte, yte, args.epochs, sched, t0)
    acc = accuracy(model, xte, yte)

    os.makedirs(args.out, exist_ok=True)
    weights = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    meta = {"dataset": "fashion-mnist", "script": "tools/train_vit.py", "seed": "0",
            "epochs": str(args.epochs), "test_accuracy": f"{acc:.4f}"}
    path = os.path.join(args.out, "model.safetensors")
    save_file(path, weights, meta)
    assert accuracy(load_model(path), xte, yte) == acc      # the file reproduces it
    print(f"test accuracy {acc:.4f}; {os.path.getsize(path) / 1e6:.2f} MB; "
          f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
