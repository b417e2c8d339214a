"""The bench's models, as specs of the tools' contract (tools/objective.py).

    cnn()  the demo CNN   (configs/demo/model.safetensors, tools/train_demo.py)
    vit()  the small ViT  (configs/vit/model.safetensors,  tools/train_vit.py)
    lm()   the character-level transformer language model
                          (configs/lm/model.safetensors,   tools/train_lm.py)
    ocr()  the text-line recogniser, CTC over ~6,000 characters
                          (configs/ocr/model.safetensors,  tools/train_ocr.py)

Each returns a dict: the trained float model, its calibration batches, the
loss it was trained with and its task metric -- 512 Fashion-MNIST training
images (a fixed seeded pick, batches of 128 with labels) for the image
models (top-1 accuracy), 64 windows of 128 characters of the training text
(batches of 16, targets the next characters) for the language model
(next-character accuracy), 64 rendered training lines (batches of 16) for
the recogniser (character error rate of the best-path decoding; decisions
decoded and targets drawn as CTC).  cnn_heldout(), ... return other
training data (2,048 images; 256 windows; 512 lines) for
tools/refine_plan.py, tools/calibrate.py and tools/measure_deltas.py
--heldout, and cnn_test(), ... the test data (the 10,000 test images; 1,024
windows of the test text; 2,000 test lines) for tools/evaluate_plan.py.
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import train_demo  # noqa: E402
import train_lm  # noqa: E402
import train_ocr  # noqa: E402
import train_vit  # noqa: E402

DATA = os.environ.get("FASHION_MNIST", "/usr/share/datasets/fashion-mnist")
CALIB_IMAGES = 512
HELDOUT_IMAGES = 2048
CALIB_WINDOWS = 64
HELDOUT_WINDOWS = 256
TEST_WINDOWS = 1024
CALIB_LINES = 64
HELDOUT_LINES = 512
TEST_LINES = 2000


# ---- the task metrics and losses (the contract's `metric` and `loss`) ----------

def accuracy(outputs, batch):
    """Top-1 hits per sample (or per position for sequences)."""
    return (outputs.argmax(-1) == batch[1]).reshape(-1).float()


accuracy.higher_is_better = True


def cross_entropy(outputs, batch):
    """Cross entropy against the batch's labels, summed over its samples."""
    return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), batch[1].reshape(-1),
                           reduction="sum")


def cer(outputs, batch):
    """Character errors and reference characters per line (best-path decoding
    against the line's text): the character error rate."""
    tgt, lens = batch[1]
    errors = [train_ocr.edit_distance(h, tgt[i, :lens[i]].tolist())
              for i, h in enumerate(train_ocr.greedy(outputs))]
    return torch.tensor(errors, dtype=torch.float64), lens.double()


def spec(model, batches, arch):
    if arch == "ocr":
        return dict(model=model, loader=batches, loss=train_ocr.ctc_loss, metric=cer,
                    decode="ctc", likelihood="ctc")
    return dict(model=model, loader=batches, loss=cross_entropy, metric=accuracy)


# ---- models and data ------------------------------------------------------------

def load_cnn():
    path = os.path.join(ROOT, "configs", "demo", "model.safetensors")
    return train_demo.load_weights(train_demo.Net(), path).eval()


def load_vit():
    return train_vit.load_model().eval()


def load_lm():
    return train_lm.load_model().eval()


def load_ocr():
    return train_ocr.load_model().eval()


LOADERS = {"cnn": load_cnn, "vit": load_vit, "lm": load_lm, "ocr": load_ocr}


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


_CORPUS = []


def corpus():
    if not _CORPUS:
        _CORPUS.append(train_ocr.Corpus(charset=train_ocr.load_charset()))
    return _CORPUS[0]


def ocr_calibration(heldout=False):
    """64 training lines (a seeded pick); heldout: 512 others."""
    c = corpus()
    order = np.random.RandomState(3).permutation(len(c.train))
    part = order[CALIB_LINES:CALIB_LINES + HELDOUT_LINES] if heldout else order[:CALIB_LINES]
    lines = [c.train[i] for i in np.sort(part)]
    return c.batches(lines, seed=11 if heldout else 10, size=32 if heldout else 16)


def ocr_test_batches():
    c = corpus()
    return c.batches(c.test_lines(TEST_LINES), seed=7, size=250)


TEST = {"cnn": image_test_batches, "vit": image_test_batches, "lm": lm_test_batches,
        "ocr": ocr_test_batches}
CALIB = {"cnn": calibration_batches, "vit": calibration_batches, "lm": lm_calibration,
         "ocr": ocr_calibration}


def _make(arch, part):
    data = TEST[arch]() if part == "test" else CALIB[arch](heldout=part == "heldout")
    return spec(LOADERS[arch](), data, arch)


def cnn():
    return _make("cnn", "calib")


def vit():
    return _make("vit", "calib")


def lm():
    return _make("lm", "calib")


def ocr():
    return _make("ocr", "calib")


def cnn_heldout():
    return _make("cnn", "heldout")


def vit_heldout():
    return _make("vit", "heldout")


def lm_heldout():
    return _make("lm", "heldout")


def ocr_heldout():
    return _make("ocr", "heldout")


def cnn_test():
    return _make("cnn", "test")


def vit_test():
    return _make("vit", "test")


def lm_test():
    return _make("lm", "test")


def ocr_test():
    return _make("ocr", "test")
