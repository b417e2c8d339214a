"""The bench's models, as tools/capture.py specs and for evaluation.

    cnn()  the demo CNN   (configs/demo/model.safetensors, tools/train_demo.py)
    vit()  the small ViT  (configs/vit/model.safetensors,  tools/train_vit.py)
    lm()   the character-level transformer language model
                          (configs/lm/model.safetensors,   tools/train_lm.py)

Each returns (model, batches): the trained float model and its calibration
data -- 512 Fashion-MNIST training images (a fixed seeded pick, batches of
128 with labels) for the image models, 64 windows of 128 characters of the
training text (batches of 16, targets the next characters) for the language
model.  cnn_test(), vit_test() and lm_test() return the same models with
held-out data (the 10,000 test images; 1,024 windows of the test text) for
tools/evaluate_plan.py.
"""
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import train_demo  # noqa: E402
import train_lm  # noqa: E402
import train_vit  # noqa: E402

DATA = os.environ.get("FASHION_MNIST", "/usr/share/datasets/fashion-mnist")
CALIB_IMAGES = 512
CALIB_WINDOWS = 64
TEST_WINDOWS = 1024


def load_cnn():
    path = os.path.join(ROOT, "configs", "demo", "model.safetensors")
    return train_demo.load_weights(train_demo.Net(), path).eval()


def load_vit():
    return train_vit.load_model().eval()


def load_lm():
    return train_lm.load_model().eval()


LOADERS = {"cnn": load_cnn, "vit": load_vit, "lm": load_lm}


def calibration_batches():
    x, y = train_demo.load_split(DATA, "train")
    pick = torch.from_numpy(np.sort(np.random.RandomState(1).permutation(len(x))[:CALIB_IMAGES]))
    x, y = x[pick], y[pick]
    return [(x[i:i + 128], y[i:i + 128]) for i in range(0, len(x), 128)]


def image_test_batches():
    x, y = train_demo.load_split(DATA, "t10k")
    return [(x[i:i + 1000], y[i:i + 1000]) for i in range(0, len(x), 1000)]


def lm_batches(w, size):
    return [(w[i:i + size, :-1], w[i:i + size, 1:]) for i in range(0, len(w), size)]


def lm_calibration():
    return lm_batches(train_lm.windows(train_lm.load_split("train"), CALIB_WINDOWS, seed=12345), 16)


def lm_test_batches():
    return lm_batches(train_lm.test_windows(train_lm.load_split("test"))[:TEST_WINDOWS], 64)


TEST = {"cnn": image_test_batches, "vit": image_test_batches, "lm": lm_test_batches}


def cnn():
    return load_cnn(), calibration_batches()


def vit():
    return load_vit(), calibration_batches()


def lm():
    return load_lm(), lm_calibration()


def cnn_test():
    return load_cnn(), image_test_batches()


def vit_test():
    return load_vit(), image_test_batches()


def lm_test():
    return load_lm(), lm_test_batches()
