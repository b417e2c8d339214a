"""Train the text-line recogniser used by bench/e2e (CTC over ~6,000 characters).

Text: Debian's `fortunes-zh` (/usr/share/games/fortunes: chinese, song100,
tang300; colour escapes removed, whitespace dropped), every tenth fortune held
out for testing, cut into lines of 4 to 11 characters.  Characters: every one
of the corpus that the fonts draw (about 6,000 classes, plus the CTC blank,
class 0).  Lines are drawn white on black at 32 x 256 pixels with Debian's
CJK fonts (fonts-wqy-microhei, fonts-arphic-uming), a random font, size
(20-24 px), offset and grey level per line, and Gaussian noise; training
lines are drawn afresh every epoch, the evaluation sets once from their own
seeds.

    stem    conv 3x3 stride 2 (1->32), BatchNorm, ReLU            32 x 16 x 128
    blocks  depthwise 3x3 + pointwise 1x1 convs (BatchNorm, ReLU):
            32->64, 64->128 (stride 2), 128->128, 128->256 (stride 2),
            256->384 (stride 2 x 1)                                384 x 2 x 32
    collapse conv 2x1 (384->128), ReLU                             128 x 1 x 32
    neck    2 transformer blocks (width 128, 4 heads, MLP 384) over the 32 frames
    head    LayerNorm, Linear 128 -> classes: a softmax per frame (CTC)

Every matrix product is an nn.Conv2d or nn.Linear, so tools/capture.py sees
every layer (depthwise convs included); the head holds about a third of the
weights.  Seeded; writes configs/ocr/model.safetensors (F16, every
parameter and BatchNorm statistic) and configs/ocr/charset.txt (the classes,
one per line, blank first as an empty line), with the test character error
rate in the metadata.  Run from the repository root with Debian's Python
(python3-torch, python3-numpy, python3-pil, fortunes-zh, fonts-wqy-microhei,
fonts-arphic-uming):

    /usr/bin/python3 tools/train_ocr.py
"""
import argparse
import os
import re
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import load_file, save_file  # noqa: E402
from train_vit import Block  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORTUNES = os.environ.get("FORTUNES", "/usr/share/games/fortunes")
FILES = ("chinese", "song100", "tang300")
FONTS = ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
         "/usr/share/fonts/truetype/arphic/uming.ttc")
HEIGHT, WIDTH, FRAMES = 32, 256, 32
MIN_LEN, MAX_LEN = 4, 11
DIM, HEADS, MLP, DEPTH = 128, 4, 384, 2
OUT = os.path.join(ROOT, "configs", "ocr")


def fail(msg):
    raise SystemExit(f"train_ocr: {msg}")


def fortunes(root=FORTUNES):
    """Every fortune of fortunes-zh, colour escapes and whitespace removed."""
    out = []
    for name in FILES:
        path = os.path.join(root, name)
        if not os.path.isfile(path):
            fail(f"{path}: missing (apt-get install fortunes-zh)")
        with open(path, encoding="utf-8", errors="replace") as f:
            text = re.sub(r"\x1b\[[0-9;]*m", "", f.read())
        out += [re.sub(r"\s+", "", t) for t in text.split("\n%\n")]
    return [t for t in out if t]


def lines_of(texts, seed):
    """Consecutive pieces of MIN_LEN..MAX_LEN characters (seeded lengths)."""
    rng = np.random.RandomState(seed)
    out = []
    for t in texts:
        i = 0
        while len(t) - i >= MIN_LEN:
            n = rng.randint(MIN_LEN, MAX_LEN + 1)
            out.append(t[i:i + n])
            i += n
    return out


def load_fonts():
    from PIL import ImageFont
    for p in FONTS:
        if not os.path.isfile(p):
            fail(f"{p}: missing (apt-get install fonts-wqy-microhei fonts-arphic-uming)")
    return {(p, s): ImageFont.truetype(p, s) for p in FONTS for s in range(20, 25)}


def drawable(chars, fonts):
    """The characters every font draws (not as its missing-glyph box)."""
    from PIL import Image, ImageDraw
    keep = []
    for font in {f for (p, s), f in fonts.items() if s == 22}:
        def pic(ch):
            im = Image.new("L", (32, 32))
            ImageDraw.Draw(im).text((2, 2), ch, fill=255, font=font)
            return im.tobytes()
        missing = pic("\ue000")
        keep.append({c for c in chars if pic(c) != missing and any(pic(c))})
    return sorted(set.intersection(*keep))


class Corpus:
    """The splits as lines of class ids, and the character set."""

    def __init__(self, root=FORTUNES, charset=None):
        texts = fortunes(root)
        self.fonts = load_fonts()
        if charset is None:
            charset = drawable(sorted({c for t in texts for c in t}), self.fonts)
        self.chars = charset                           # class i + 1 is chars[i]
        index = {c: i + 1 for i, c in enumerate(charset)}
        texts = ["".join(c for c in t if c in index) for t in texts]
        train = [t for i, t in enumerate(texts) if i % 10 != 9]
        test = [t for i, t in enumerate(texts) if i % 10 == 9]
        self.train = lines_of(train, 1)
        self.test = lines_of(test, 2)
        self.index = index

    @property
    def classes(self):
        return len(self.chars) + 1

    def test_lines(self, n):
        """n test lines, a seeded pick over the whole test split."""
        pick = np.sort(np.random.RandomState(4).permutation(len(self.test))[:n])
        return [self.test[i] for i in pick]

    def ids(self, line):
        return [self.index[c] for c in line]

    def text(self, ids):
        return "".join(self.chars[i - 1] for i in ids)

    def render(self, lines, seed):
        """Images (N x 1 x HEIGHT x WIDTH, float32 in [0, 1]) of the lines."""
        from PIL import Image, ImageDraw
        rng = np.random.RandomState(seed)
        out = np.zeros((len(lines), 1, HEIGHT, WIDTH), dtype=np.float32)
        for k, line in enumerate(lines):
            font = self.fonts[(FONTS[rng.randint(len(FONTS))], int(rng.randint(20, 25)))]
            im = Image.new("L", (WIDTH, HEIGHT))
            grey = int(rng.randint(160, 256))
            ImageDraw.Draw(im).text((int(rng.randint(0, 9)), int(rng.randint(1, 6))), line,
                                    fill=grey, font=font)
            out[k, 0] = np.asarray(im, dtype=np.float32) / 255.0
        out += rng.normal(0, 0.06, out.shape).astype(np.float32)
        return out

    def batches(self, lines, seed, size):
        """[(images, (targets, lengths))] of the lines, in order."""
        x = torch.from_numpy(self.render(lines, seed))
        out = []
        for i in range(0, len(lines), size):
            part = lines[i:i + size]
            tgt = torch.zeros(len(part), MAX_LEN, dtype=torch.long)
            for j, line in enumerate(part):
                tgt[j, :len(line)] = torch.tensor(self.ids(line))
            lens = torch.tensor([len(line) for line in part])
            out.append((x[i:i + size], (tgt, lens)))
        return out


def sep(cin, cout, stride=1):
    """Depthwise 3x3 + pointwise 1x1, each with BatchNorm and ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False),
        nn.BatchNorm2d(cin), nn.ReLU(),
        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class Recogniser(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 32, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(32), nn.ReLU())
        self.blocks = nn.Sequential(sep(32, 64), sep(64, 128, 2), sep(128, 128),
                                    sep(128, 256, 2), sep(256, 384, (2, 1)))
        self.collapse = nn.Conv2d(384, DIM, (2, 1))
        self.pos = nn.Parameter(torch.zeros(1, FRAMES, DIM))
        self.neck = nn.ModuleList(Block(DIM, HEADS, MLP) for _ in range(DEPTH))
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, classes)

    def forward(self, x):                    # N x 1 x 32 x 256 -> logits N x FRAMES x classes
        x = F.relu(self.collapse(self.blocks(self.stem(x))))       # N x DIM x 1 x FRAMES
        x = x.flatten(2).transpose(1, 2) + self.pos
        for blk in self.neck:
            x = blk(x)
        return self.head(self.norm(x))


def ctc_loss(logits, batch, reduction="sum"):
    """CTC loss of a batch (blank 0), summed over its lines."""
    tgt, lens = batch[1]
    lp = F.log_softmax(logits.float(), -1).transpose(0, 1)      # T x N x C
    frames = torch.full((logits.shape[0],), logits.shape[1], dtype=torch.long)
    return F.ctc_loss(lp, tgt, frames, lens, blank=0, reduction=reduction, zero_infinity=True)


def greedy(logits):
    """Best-path decoding: argmax per frame, repeats merged, blanks removed."""
    best = logits.argmax(-1)
    out = []
    for row in best.tolist():
        seq, prev = [], 0
        for c in row:
            if c != prev and c != 0:
                seq.append(c)
            prev = c
        out.append(seq)
    return out


def edit_distance(a, b):
    """Levenshtein distance between two sequences."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def cer(outputs, batch):
    """(character errors, reference characters) of a batch: the edit distance of
    the best-path decoding to the line's text (a metric for
    tools/evaluate_plan.py --metric)."""
    tgt, lens = batch[1]
    errors = sum(edit_distance(h, tgt[i, :lens[i]].tolist())
                 for i, h in enumerate(greedy(outputs)))
    return errors, int(lens.sum())


def evaluate(model, batches):
    """(CTC loss per line, character error rate)."""
    model.eval()
    loss = errors = chars = lines = 0.0
    with torch.no_grad():
        for b in batches:
            out = model(b[0])
            loss += ctc_loss(out, b).item()
            e, n = cer(out, b)
            errors += e
            chars += n
            lines += len(b[0])
    return loss / lines, errors / chars


def load_charset(path=os.path.join(OUT, "charset.txt")):
    with open(path, encoding="utf-8") as f:
        rows = f.read().split("\n")
    return [r for r in rows[1:] if r]


def load_model(path=os.path.join(OUT, "model.safetensors")):
    t, meta = load_file(path)
    model = Recogniser(int(meta["classes"]))
    state = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in t.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
        fail(f"{path}: tensors do not match the recogniser ({(unexpected + missing)[0]})")
    return model.eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "),
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lines", type=int, default=0, help="training lines per epoch (0: all)")
    ap.add_argument("--test-lines", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    corpus = Corpus()
    print(f"{corpus.classes} classes, {len(corpus.train)} training lines, "
          f"{len(corpus.test)} test lines ({time.time() - t0:.0f} s)", flush=True)
    test = corpus.batches(corpus.test_lines(args.test_lines), seed=7, size=250)
    model = Recogniser(corpus.classes)
    nn.init.normal_(model.pos, std=0.02)
    per_epoch = args.lines or len(corpus.train)
    steps = args.epochs * (per_epoch // args.batch)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps,
                                                pct_start=0.15)
    step = 0
    for epoch in range(args.epochs):
        rng = np.random.RandomState(100 + epoch)
        order = rng.permutation(len(corpus.train))[:per_epoch]
        lines = [corpus.train[i] for i in order]
        for b in corpus.batches(lines, seed=1000 + epoch, size=args.batch):
            if len(b[0]) < args.batch or step >= steps:
                break
            model.train()
            opt.zero_grad()
            (ctc_loss(model(b[0]), b) / len(b[0])).backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
            step += 1
            if step % 200 == 0:
                print(f"step {step}/{steps} ({time.time() - t0:.0f} s)", flush=True)
        loss, rate = evaluate(model, test)
        print(f"epoch {epoch + 1}: test CTC loss {loss:.3f} per line, CER {rate:.4f} "
              f"({time.time() - t0:.0f} s)", flush=True)
    loss, rate = evaluate(model, test)

    os.makedirs(args.out, exist_ok=True)
    weights = {k: v.detach().numpy().astype(np.float16) for k, v in model.state_dict().items()
               if v.dtype == torch.float32}
    meta = {"dataset": "debian fortunes-zh, rendered", "script": "tools/train_ocr.py",
            "seed": "0", "epochs": str(args.epochs), "classes": str(corpus.classes),
            "test_ctc_loss": f"{loss:.4f}", "test_cer": f"{rate:.4f}"}
    path = os.path.join(args.out, "model.safetensors")
    save_file(path, weights, meta)
    with open(os.path.join(args.out, "charset.txt"), "w", encoding="utf-8") as f:
        f.write("\n" + "\n".join(corpus.chars) + "\n")
    loss16, rate16 = evaluate(load_model(path), test)
    print(f"test CTC loss {loss:.4f} per line, CER {rate:.4f} (F16 file: {loss16:.4f}, "
          f"{rate16:.4f}); {os.path.getsize(path) / 1e6:.2f} MB; {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
