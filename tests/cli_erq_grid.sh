#!/bin/bash
# quantizer erq without a range uses ERQ's own grids, as ERQ's code fits them
# (its UniformQuantizer.init_quantization_scale): per weight row and per
# activation tensor, p over its search lists, lo/hi from torch.quantile, the
# lowest mean squared error, the first p on ties.  The grids bitplan writes
# must be those, bit for bit (with weights.scales: fp32, as ERQ keeps them);
# with the default fp16 scales, the same search with each step rounded up to
# the next fp16 value.  The reference here is written from that description
# in PyTorch (only where Debian's python3-torch is installed).
source "$SRC/tests/lib.sh"

needs_torch "ERQ grid test"
export PYTHONPATH="$SRC/tools"
$PY - <<'PYEOF' || bad "layer written"
import numpy as np
from safetensors_io import save_file
r = np.random.RandomState(5)
W = (r.randn(48, 96) / 10).astype(np.float32)
W[:, 7] *= 6                                   # a heavy column: clipping pays on some rows
X = (r.standard_t(3, size=(512, 96)) + 0.2).astype(np.float32)
save_file("model.safetensors", {"l.weight": W, "l.bias": (r.randn(48) / 10).astype(np.float32)})
save_file("calib.safetensors", {"l.input": X})
PYEOF
cat >cfg.yaml <<'YAML'
model: {weights: model.safetensors, calibration: calib.safetensors}
candidates: {wbits: [3], abits: [4, 16]}
weights: {quantizer: erq, scales: fp32}
YAML
sed 's/, scales: fp32//' cfg.yaml >cfg16.yaml
check "quantize W3 A16" "$BITPLAN" quantize cfg.yaml --wbits 3 --abits 16 -o w.safetensors -q
check "quantize W3 A16, fp16 scales" "$BITPLAN" quantize cfg16.yaml --wbits 3 --abits 16 \
    -o h.safetensors -q
check "quantize W3 A4" "$BITPLAN" quantize cfg.yaml --wbits 3 --abits 4 -o a.safetensors -q
$PY - <<'PYEOF' && ok || bad "bitplan's ERQ grids equal ERQ's (torch.quantile, per row / per tensor)"
import numpy as np, torch
from safetensors_io import load_file

def up_fp16(d):
    """The smallest fp16 value >= d (a float32 tensor)."""
    h = np.float16(d.item())
    if np.float32(h) < d.item():
        h = np.nextafter(h, np.float16(np.inf))
    return torch.tensor(np.float32(h))

def erq_grid(x, bits, ps, fp16=False):
    """ERQ's search: delta, zero point of the lowest-MSE p (strictly lower wins)."""
    best, out = float("inf"), None
    for p in ps:
        hi, lo = torch.quantile(x, p), torch.quantile(x, 1.0 - p)
        delta = (hi - lo) / (2 ** bits - 1)
        if fp16:
            delta = up_fp16(delta)
        zp = (-lo / delta).round()
        xq = (torch.clamp(torch.round(x / delta) + zp, 0, 2 ** bits - 1) - zp) * delta
        score = (x - xq).abs().pow(2).mean().item()
        if score < best:
            best, out = score, (delta.item(), zp.item())
    return out

pw = [0.97, 0.98, 0.99, 0.995, 0.9995, 0.9997, 0.9999, 0.99995, 0.99999, 1]
pa = [0.999, 0.9999, 0.99999]
W = torch.from_numpy(load_file("model.safetensors")[0]["l.weight"])
X = torch.from_numpy(load_file("calib.safetensors")[0]["l.input"])
q, _ = load_file("w.safetensors")           # A16: Aqer changes nothing, rows as given
rows = [erq_grid(W[r], 3, pw) for r in range(W.shape[0])]
assert all(np.float32(q["l.scales"][r, 0]) == np.float32(rows[r][0]) for r in range(48)), \
    [(q["l.scales"][r, 0], rows[r][0]) for r in range(48) if q["l.scales"][r, 0] != np.float32(rows[r][0])][:4]
assert all(q["l.zeros"][r, 0] == rows[r][1] for r in range(48))
clipped = sum(q["l.scales"][r, 0] < (W[r].max() - W[r].min()).item() / 7 - 1e-9 for r in range(48))
assert clipped > 0, "no row clipped: the test would not see the interpolation"
assert q["l.scales"].dtype == np.float32
h, _ = load_file("h.safetensors")           # fp16 scales: stored as F16, zeros as codes
assert h["l.scales"].dtype == np.float16 and h["l.zeros"].dtype == np.uint8, \
    (h["l.scales"].dtype, h["l.zeros"].dtype)
rows16 = [erq_grid(W[r], 3, pw, fp16=True) for r in range(W.shape[0])]
assert all(np.float32(h["l.scales"][r, 0]) == np.float32(rows16[r][0]) for r in range(48)), \
    [(h["l.scales"][r, 0], rows16[r][0]) for r in range(48)][:4]
assert all(h["l.zeros"][r, 0] == rows16[r][1] for r in range(48))
assert any(h["l.scales"][r, 0] != q["l.scales"][r, 0] for r in range(48))
a, _ = load_file("a.safetensors")
d, z = erq_grid(X.reshape(-1), 4, pa)
assert np.float32(a["l.act_scale"][0]) == np.float32(d) and a["l.act_zero"][0] == z, (a["l.act_scale"], d, a["l.act_zero"], z)
PYEOF
finish
