"""Train the demo model of configs/demo.yaml and capture its calibration inputs.

A small CNN on Fashion-MNIST (Debian package dataset-fashion-mnist):

    conv1 (1->8, 3x3, pad 1) - ReLU - maxpool 2
    conv2 (8->16, 3x3, pad 1) - ReLU - maxpool 2
    fc1 (784->128) - ReLU - fc2 (128->10)

Writes, byte for byte reproducibly:
    configs/demo/model.safetensors  F32 NAME.weight / NAME.bias
    configs/demo/calib.safetensors  F16 NAME.input: the inputs each layer sees
                                    on 512 training images, conv inputs unfolded
                                    to patches (rows: in_ch*kh*kw, weight order);
                                    F32 NAME.fisher and NAME.grad2: each layer's
                                    output Fisher (tools/capture.py --fisher)

Run from the repository root with Debian's Python (python3-torch, python3-numpy):

    /usr/bin/python3 tools/train_demo.py
"""
import argparse
import gzip
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from capture import capture  # noqa: E402
from objective import Task  # noqa: E402
from safetensors_io import load_file, save_file  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = ("conv1", "conv2", "fc1", "fc2")


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(data, split):
    images = read_idx(os.path.join(data, f"{split}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(data, f"{split}-labels-idx1-ubyte.gz"))
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return (x - 0.2860) / 0.3530, torch.from_numpy(labels.astype(np.int64))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc1 = nn.Linear(16 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        right = sum((model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum().item()
                    for i in range(0, len(x), 1000))
    return right / len(x)


def train(model, opt, xtr, ytr, xte, yte, epochs, sched=None, t0=None):
    """Seeded minibatch training (batches of 128, cross entropy), stepping sched
    per batch when given; prints the test accuracy after each epoch."""
    gen = torch.Generator().manual_seed(0)
    t0 = time.time() if t0 is None else t0
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(xtr), 128):
            idx = order[i:i + 128]
            opt.zero_grad()
            F.cross_entropy(model(xtr[idx]), ytr[idx]).backward()
            opt.step()
            if sched is not None:
                sched.step()
        print(f"epoch {epoch + 1}: test accuracy {accuracy(model, xte, yte):.4f} "
              f"({time.time() - t0:.0f} s)", flush=True)


def load_weights(model, path):
    """model with every parameter from the safetensors file at path."""
    tensors, _ = load_file(path)
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in tensors.items()})
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "),
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "configs", "demo"))
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--calib-images", type=int, default=512)
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--calib-only", action="store_true",
                    help="keep the model in --out and capture its calibration file again")
    args = ap.parse_args()

    torch.manual_seed(0)
    np.random.seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    t0 = time.time()
    xtr, ytr = load_split(args.data, "train")
    xte, yte = load_split(args.data, "t10k")
    model_path = os.path.join(args.out, "model.safetensors")
    if args.calib_only:
        model = load_weights(Net(), model_path)
    else:
        model = Net()
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        train(model, opt, xtr, ytr, xte, yte, args.epochs, t0=t0)
    acc = accuracy(model, xte, yte)

    os.makedirs(args.out, exist_ok=True)
    weights = {}
    for n in LAYERS:
        mod = getattr(model, n)
        weights[n + ".weight"] = mod.weight.detach().numpy().astype(np.float32)
        weights[n + ".bias"] = mod.bias.detach().numpy().astype(np.float32)
    meta = {"dataset": "fashion-mnist", "script": "tools/train_demo.py", "seed": "0",
            "epochs": str(args.epochs), "test_accuracy": f"{acc:.4f}"}
    if not args.calib_only:
        save_file(model_path, weights, meta)
    pick = torch.from_numpy(np.sort(np.random.RandomState(1).permutation(len(xtr))[:args.calib_images]))
    batches = [(xtr[pick][i:i + 128], ytr[pick][i:i + 128]) for i in range(0, len(pick), 128)]
    calib, cmeta, _, _ = capture(Task("train_demo", got=(model, batches)), rows=args.rows, seed=2,
                                 half=True, fisher=64)
    cmeta.update(images=str(args.calib_images), split="train", layout="rows x in")
    save_file(os.path.join(args.out, "calib.safetensors"), calib, cmeta)

    # the saved weights reproduce the accuracy
    check = load_weights(Net(), os.path.join(args.out, "model.safetensors"))
    assert accuracy(check, xte, yte) == acc
    sizes = {f: os.path.getsize(os.path.join(args.out, f))
             for f in ("model.safetensors", "calib.safetensors")}
    print(f"test accuracy {acc:.4f}; files {sizes} ({sum(sizes.values()) / 1e6:.2f} MB); "
          f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
