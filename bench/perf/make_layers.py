"""Write a synthetic transformer layer set for the speed bench:

    /usr/bin/python3 bench/perf/make_layers.py OUT_DIR BLOCKS ROWS [HIDDEN]

BLOCKS blocks of qkv (H -> 3H), proj (H -> H), fc1 (H -> 4H) and fc2 (4H -> H),
H = HIDDEN (default 768), each with ROWS tokens of correlated, heavy-tailed
inputs (F32), seeded.  Writes OUT_DIR/model.safetensors and calib.safetensors.
"""
import os
import sys

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 3)[0] + "/tools")
from safetensors_io import save_file  # noqa: E402


def main():
    if len(sys.argv) not in (4, 5):
        raise SystemExit(__doc__)
    out, blocks, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    h = int(sys.argv[4]) if len(sys.argv) == 5 else 768
    rng = np.random.RandomState(0)
    w, c = {}, {}
    for b in range(blocks):
        for name, (o, d) in (("qkv", (3 * h, h)), ("proj", (h, h)),
                             ("fc1", (4 * h, h)), ("fc2", (h, 4 * h))):
            n = f"blk{b}.{name}"
            w[n + ".weight"] = (rng.randn(o, d) / np.sqrt(d)).astype(np.float32)
            z = rng.randn(rows, 32).astype(np.float32) @ rng.randn(32, d).astype(np.float32) * 0.3
            c[n + ".input"] = (z + rng.standard_t(4, size=(rows, d)).astype(np.float32) * 0.2)
    os.makedirs(out, exist_ok=True)
    save_file(os.path.join(out, "model.safetensors"), w)
    save_file(os.path.join(out, "calib.safetensors"), c)


if __name__ == "__main__":
    main()
