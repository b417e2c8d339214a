"""The bench's models, as tools/capture.py specs and for evaluation.

    cnn()  the demo CNN   (configs/demo/model.safetensors, tools/train_demo.py)
    vit()  the small ViT  (configs/vit/model.safetensors,  tools/train_vit.py)

Each returns (model, loader): the trained float model and 512 training images
(a fixed seeded pick, batches of 128 with labels) to capture calibration
inputs and loss gradients from.
"""
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import train_demo  # noqa: E402
import train_vit  # noqa: E402

DATA = os.environ.get("FASHION_MNIST", "/usr/share/datasets/fashion-mnist")
CALIB_IMAGES = 512


def load_cnn():
    path = os.path.join(ROOT, "configs", "demo", "model.safetensors")
    return train_demo.load_weights(train_demo.Net(), path).eval()


def load_vit():
    return train_vit.load_model().eval()


LOADERS = {"cnn": load_cnn, "vit": load_vit}


def calibration_batches():
    x, y = train_demo.load_split(DATA, "train")
    pick = torch.from_numpy(np.sort(np.random.RandomState(1).permutation(len(x))[:CALIB_IMAGES]))
    x, y = x[pick], y[pick]
    return [(x[i:i + 128], y[i:i + 128]) for i in range(0, len(x), 128)]


def cnn():
    return load_cnn(), calibration_batches()


def vit():
    return load_vit(), calibration_batches()
