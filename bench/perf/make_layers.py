"""Write a synthetic transformer layer set for the speed bench:
    /usr/bin/python3 bench/perf/make_layers.py OUT_DIR BLOCKS ROWS
BLOCKS blocks of fc1 (768 -> 3072) and fc2 (3072 -> 768) with ROWS tokens of
correlated, heavy-tailed inputs each (F32), seeded."""
import os
import sys

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 3)[0] + "/tools")
from safetensors_io import save_file  # noqa: E402

out, blocks, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.RandomState(0)
w, c = {}, {}
for b in range(blocks):
    for name, (o, d) in (("fc1", (3072, 768)), ("fc2", (768, 3072))):
        n = f"blk{b}.{name}"
        w[n + ".weight"] = (rng.randn(o, d) / np.sqrt(d)).astype(np.float32)
        z = rng.randn(rows, 32) @ rng.randn(32, d) * 0.3
        c[n + ".input"] = (z + rng.standard_t(4, size=(rows, d)) * 0.2).astype(np.float32)
os.makedirs(out, exist_ok=True)
save_file(os.path.join(out, "model.safetensors"), w)
save_file(os.path.join(out, "calib.safetensors"), c)
