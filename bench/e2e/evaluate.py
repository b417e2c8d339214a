"""Apply a bitplan plan to the demo CNN and measure real test accuracy.

    /usr/bin/python3 bench/e2e/evaluate.py PLAN.yaml QUANTIZED.safetensors
        [--model configs/demo/model.safetensors] [--calib configs/demo/calib.safetensors]
        [--data /usr/share/datasets/fashion-mnist]

Weights come from bitplan's quantized-weights file (written with
output.dequantized: true): NAME.weight is scales * (codes - zeros), reshaped to
the layer's shape, with NAME.bias.  Activations are fake-quantized at each
layer's planned activation bits with a per-tensor asymmetric min-max grid whose
range comes from the calibration inputs (bitplan's default activation setting).
Prints the accuracy on the 10,000 Fashion-MNIST test images.
"""
import argparse
import os
import re
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
from safetensors_io import load_file  # noqa: E402
from train_demo import LAYERS, Net, accuracy, load_split  # noqa: E402


def plan_layers(path):
    """name -> (wbits, abits) from a plan.yaml (bitplan writes one key per line)."""
    out, name = {}, None
    with open(path) as f:
        for line in f:
            m = re.match(r'\s*- name: "(.*)"', line)
            if m:
                name = m.group(1)
            m = re.match(r"\s+(wbits|abits): (\d+)", line)
            if m and name:
                out.setdefault(name, {})[m.group(1)] = int(m.group(2))
    return {k: (v["wbits"], v["abits"]) for k, v in out.items()}


def fake_quant(x, lo, hi, bits):
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    levels = 2 ** bits - 1
    s = (hi - lo) / levels if hi > lo else 1.0
    z = min(max(round(-lo / s), 0), levels)
    return s * (torch.clamp(torch.round(x / s) + z, 0, levels) - z)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("plan")
    ap.add_argument("weights")
    ap.add_argument("--model", default=os.path.join(ROOT, "configs/demo/model.safetensors"))
    ap.add_argument("--calib", default=os.path.join(ROOT, "configs/demo/calib.safetensors"))
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    args = ap.parse_args()
    torch.set_num_threads(2)
    plan = plan_layers(args.plan)
    q, meta = load_file(args.weights)
    calib, _ = load_file(args.calib)
    model = Net()
    ref, _ = load_file(args.model)
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ref.items()})
    for name in LAYERS:
        mod = getattr(model, name)
        w = q[name + ".weight"].reshape(mod.weight.shape)
        mod.weight.data = torch.from_numpy(np.array(w, dtype=np.float32))
        if name + ".bias" in q:
            mod.bias.data = torch.from_numpy(q[name + ".bias"].copy()).float()
        abits = plan[name][1]
        if abits < 16:
            x = calib[name + ".input"].astype(np.float32)
            lo, hi = float(x.min()), float(x.max())
            mod.register_forward_pre_hook(
                lambda m, inp, lo=lo, hi=hi, b=abits: (fake_quant(inp[0], lo, hi, b),))
    xte, yte = load_split(args.data, "t10k")
    print(f"{accuracy(model, xte, yte):.4f}")


if __name__ == "__main__":
    main()
