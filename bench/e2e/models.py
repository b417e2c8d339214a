"""The bench's models, as tools/capture.py specs and for evaluation.

    cnn()  the demo CNN   (configs/demo/model.safetensors, tools/train_demo.py)
    vit()  the small ViT  (configs/vit/model.safetensors,  tools/train_vit.py)
    lm()   the character-level transformer language model
                          (configs/lm/model.safetensors,   tools/train_lm.py)

Each returns (model, batches): the trained float model and its calibration
data -- 512 Fashion-MNIST training images (a fixed seeded pick, batches of
128 with labels) for the image models, 64 windows of 128 characters of the
training text (batches of 16, targets the next characters) for the language
model.  cnn_heldout(), vit_heldout() and lm_heldout() return other training
data (2,048 images; 256 windows) for tools/refine_plan.py and
tools/measure_deltas.py --heldout, and cnn_test(), vit_test() and lm_test()
the test data (the 10,000 test images; 1,024 windows of the test text) for
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
HELDOUT_IMAGES = 2048
CALIB_WINDOWS = 64
HELDOUT_WINDOWS = 256
TEST_WINDOWS = 1024


def load_cnn():
    path = os.path.join(ROOT, "configs", "demo", "model.safetensors")
    return train_demo.load_weights(train_demo.Net(), path).eval()


def load_vit():
    return train_vit.load_model().eval()


def load_lm():
    return train_lm.load_model().eval()


LOADERS = {"cnn": load_cnn, "vit": load_vit, "lm": load_lm}


def calibration_batches(heldout=False):
    """512 training images (seeded pick); heldout: the next 2,048 of the same
    permutation, which the calibration inputs do not include."""
    x, y = train_demo.load_split(DATA, "train")
    order = np.random.RandomState(1).permutation(len(x))
    part = order[CALIB_IMAGES:CALIB_IMAGES + HELDOUT_IMAGES] if heldout else order[:CALIB_IMAGES]
    pick = torch.from_numpy(np.sort(part))
    x, y = x[pick], y[pick]
    return [(x[i:i + 128], y[i:i + 128]) for i in range(0, len(x), 128)]


def image_test_batches():
    x, y = train_demo.load_split(DATA, "t10k")
    return [(x[i:i + 1000], y[i:i + 1000]) for i in range(0, len(x), 1000)]


def lm_batches(w, size):
    return [(w[i:i + size, :-1], w[i:i + size, 1:]) for i in range(0, len(w), size)]


def lm_calibration(heldout=False):
    """64 windows of the training text; heldout: 256 others (another seed)."""
    n, seed = (HELDOUT_WINDOWS, 54321) if heldout else (CALIB_WINDOWS, 12345)
    return lm_batches(train_lm.windows(train_lm.load_split("train"), n, seed=seed), 16)


def lm_test_batches():
    return lm_batches(train_lm.test_windows(train_lm.load_split("test"))[:TEST_WINDOWS], 64)


TEST = {"cnn": image_test_batches, "vit": image_test_batches, "lm": lm_test_batches}


def cnn():
    return load_cnn(), calibration_batches()


def vit():
    return load_vit(), calibration_batches()


def lm():
    return load_lm(), lm_calibration()


def cnn_heldout():
    return load_cnn(), calibration_batches(heldout=True)


def vit_heldout():
    return load_vit(), calibration_batches(heldout=True)


def lm_heldout():
    return load_lm(), lm_calibration(heldout=True)


def cnn_test():
    return load_cnn(), image_test_batches()


def vit_test():
    return load_vit(), image_test_batches()


def lm_test():
    return load_lm(), lm_test_batches()
