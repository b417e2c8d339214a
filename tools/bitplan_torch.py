"""What the PyTorch-side tools share: applying bitplan's quantized weights and
activation grids to a model, measuring plans by the user's objective
(tools/objective.py: the spec contract, the objectives) and calling the
bitplan binary.

For your own code, one call applies a plan's weights to your model:

    import sys; sys.path.insert(0, "/path/to/bitplan/tools")  # or PYTHONPATH
    import bitplan_torch
    applied = bitplan_torch.apply(model, "out/q.safetensors")
    ...                       # the model now computes with the plan's weights
                              # (and fake-quantizes the activations it planned)
    applied.restore()         # the float model back, when wanted

Every layer of the file must be an nn.Linear or nn.Conv2d of the model with
the same name and size; anything else raises BitplanError (a SystemExit
subclass) naming the layer.  torch.save(model.state_dict()) afterwards
saves the dequantized weights (the activation hooks are not saved).
"""
import csv
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import load_file  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


from objective import BitplanError, Reference, Task, degradation, fail, measure  # noqa: E402,F401


def layers_of(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


def check_layers(rows, model, config, spec, tool):
    """Every layer of a table is an nn.Linear / nn.Conv2d of the model."""
    names = layers_of(model)
    for r in rows:
        if r["layer"] not in names:
            fail(tool, f"{config}: layer '{r['layer']}' is not an nn.Linear or nn.Conv2d of {spec}")


# ---- bitplan's quantized-weights file -----------------------------------------------

class QuantizedFile:
    """A bitplan-quantized/2 (or /1) safetensors file: per layer the dequantized
    weight (from codes, scales and zero points), the bias to use and the
    activation grid of its planned activation width."""

    def __init__(self, path, tool="bitplan"):
        try:
            self.t, self.meta = load_file(path)
        except (OSError, ValueError) as e:
            fail(tool, f"{path}: cannot read: {e}")
        if self.meta.get("format") not in ("bitplan-quantized/1", "bitplan-quantized/2"):
            fail(tool, f"{path}: not a bitplan quantized-weights file (metadata 'format' is "
                       f"{self.meta.get('format', 'missing')})")
        self.path = path
        self.names = [k[:-6] for k in self.meta if k.endswith(".wbits")]

    def layer(self, name):
        """(weight float32 [out, in], bias or None, act grid or None)."""
        m, t = self.meta, self.t
        if name + ".wbits" not in m:
            fail("bitplan", f"{self.path}: no layer '{name}'")
        wbits, abits = int(m[name + ".wbits"]), int(m[name + ".abits"])
        if wbits >= 16:
            w = np.asarray(t[name + ".weight"], dtype=np.float32)
        else:
            q = np.asarray(t[name + ".qweight"]).astype(np.float32)
            s = np.asarray(t[name + ".scales"], dtype=np.float32)
            z = np.asarray(t[name + ".zeros"], dtype=np.float32)
            gs = int(m.get(name + ".group_size", "0")) or q.shape[1]
            if s.shape[0] == 1 and s.shape[1] == 1:           # per tensor
                w = s[0, 0] * (q - z[0, 0])
            elif name + ".g_idx" in t:                       # groups in GPTQ's column order
                g_idx = np.asarray(t[name + ".g_idx"]).reshape(-1, q.shape[1])
                g = np.repeat(g_idx, q.shape[0] // len(g_idx), axis=0)
                rows = np.arange(q.shape[0])[:, None]
                w = s[rows, g] * (q - z[rows, g])
            else:
                g = np.arange(q.shape[1]) // gs
                w = s[:, g] * (q - z[:, g])
        b = np.asarray(t[name + ".bias"], dtype=np.float32) if name + ".bias" in t else None
        grid = None
        if abits < 16:
            grid = dict(bits=abits, kind=m.get(name + ".act_quantizer", "uniform"),
                        granularity=m.get(name + ".act_granularity", "per_tensor"),
                        symmetric=m.get(name + ".act_symmetric", "false") == "true",
                        range=m.get(name + ".act_range", "minmax"),
                        scale=t.get(name + ".act_scale"), zero=t.get(name + ".act_zero"))
            if grid["granularity"] == "per_token" and grid["range"] != "minmax":
                fail("bitplan", f"{self.path}: layer '{name}': per-token activations with range "
                                f"'{grid['range']}' are not applied here (use minmax)")
            if grid["granularity"] != "per_token" and grid["scale"] is None:
                fail("bitplan", f"{self.path}: layer '{name}': {abits}-bit activations but no "
                                "act_scale (quantized without calibration inputs)")
        return w, b, grid


def _qdq(x, s, z, bits):
    """bitplan's grid in float32: s * (clamp(rne(x / s) + z, 0, 2^b - 1) - z)."""
    q = torch.clamp(torch.round(x / s) + z, 0, 2 ** bits - 1)
    return s * (q - z)


def _token_params(x, bits, symmetric):
    """Per-row min-max grid (bitplan's per_token), rows along the last axis."""
    lo = torch.clamp(x.amin(-1, keepdim=True), max=0)
    hi = torch.clamp(x.amax(-1, keepdim=True), min=0)
    levels = float(2 ** bits - 1)
    if symmetric:
        m = torch.maximum(-lo, hi)
        m = torch.where(m > 0, m, torch.ones_like(m))
        return 2 * m / levels, torch.full_like(m, float(2 ** (bits - 1)))
    span = hi - lo
    s = torch.where(span > 0, span / levels, torch.ones_like(span))
    z = torch.where(span > 0, torch.clamp(torch.round(-lo / s), 0, levels), torch.zeros_like(s))
    return s, z


def fake_quant_rows(x, grid):
    """Quantize-dequantize rows x (tokens or unfolded patches, columns last) as
    bitplan's sensitivity stage does."""
    x = x.float()
    bits = grid["bits"]
    if grid["kind"] == "log2":
        m = float(np.asarray(grid["scale"]).reshape(-1)[0])
        if m <= 0:
            return torch.zeros_like(x)
        xd = x.double()
        maxq = 2.0 ** bits - 1
        q = torch.where(xd > 0, torch.round(-torch.log2(xd / m)), torch.full_like(xd, maxq))
        return (m * torch.exp2(-torch.clamp(q, 0, maxq))).float()
    if grid["granularity"] == "per_token":
        s, z = _token_params(x, bits, grid["symmetric"])
        return _qdq(x, s, z, bits)
    s = torch.from_numpy(np.array(grid["scale"], dtype=np.float32))
    z = torch.from_numpy(np.array(grid["zero"], dtype=np.float32))
    if s.numel() == 1:
        s, z = s.reshape(()), z.reshape(())
    return _qdq(x, s, z, bits)


def _needs_rows(grid):
    """Grids that differ per patch column or per patch (ptf, per-token) are
    applied to a conv's unfolded patches; the others elementwise."""
    return grid["kind"] == "ptf" or grid["granularity"] == "per_token"


class Applied:
    """A model with some layers replaced by bitplan's quantized versions;
    restore() puts the float weights back."""

    def __init__(self, model):
        self.model = model
        self.layers = layers_of(model)
        self.saved = {}
        self.hooks = {}

    def set(self, name, weight, bias, grid):
        mod = self.layers[name]
        if name not in self.saved:
            self.saved[name] = (mod.weight.data, None if mod.bias is None else mod.bias.data)
        mod.weight.data = torch.from_numpy(np.array(weight, dtype=np.float32)).reshape(
            self.saved[name][0].shape)
        if bias is not None and mod.bias is not None:
            mod.bias.data = torch.from_numpy(np.array(bias, dtype=np.float32))
        if name in self.hooks:
            self.hooks.pop(name).remove()
        if grid is None:
            return
        if isinstance(mod, nn.Conv2d) and _needs_rows(grid):
            def conv_rows(m, inp, out, g=grid):
                x = inp[0]
                cols = F.unfold(x, m.kernel_size, dilation=m.dilation, padding=m.padding,
                                stride=m.stride)                     # N x C*k*k x L
                rows = fake_quant_rows(cols.transpose(1, 2), g)      # N x L x C*k*k
                n, L, _ = rows.shape
                gr = m.groups
                W = m.weight.reshape(gr, m.out_channels // gr, -1)
                R = rows.reshape(n, L, gr, -1)
                y = torch.einsum("nlgk,gok->nglo", R, W).reshape(n, m.out_channels, L)
                if m.bias is not None:
                    y = y + m.bias[None, :, None]
                return y.reshape(out.shape)
            self.hooks[name] = mod.register_forward_hook(conv_rows)
        else:
            self.hooks[name] = mod.register_forward_pre_hook(
                lambda m, inp, g=grid: (fake_quant_rows(inp[0], g),) + tuple(inp[1:]))

    def restore(self, name=None):
        for n in [name] if name else list(self.saved):
            w, b = self.saved.pop(n)
            mod = self.layers[n]
            mod.weight.data = w
            if b is not None:
                mod.bias.data = b
            if n in self.hooks:
                self.hooks.pop(n).remove()


# ---- measuring ----------------------------------------------------------------------

def measure_plan(task, ref, qf, objectives=None, keep=False, tool="bitplan", progress=None):
    """Every layer of a quantized file applied to the task's model, measured
    against the float reference; the model is restored afterwards."""
    a = apply_file(task.model, qf, tool)
    try:
        return measure(task, ref, keep=keep, objectives=objectives, progress=progress)
    finally:
        a.restore()


def apply(model, path):
    """Apply the quantized-weights file `path` (output.weights, or bitplan
    quantize's) to `model` in place: each planned layer's dequantized weights
    and bias, and a forward hook fake-quantizing its input on the planned
    activation grid.  Returns the Applied (its restore() undoes it)."""
    if not isinstance(model, nn.Module):
        fail("bitplan_torch", f"apply: the model must be a torch.nn.Module, got "
                              f"{type(model).__name__}")
    return apply_file(model, QuantizedFile(path, "bitplan_torch"), "bitplan_torch")


def apply_file(model, qf, tool="bitplan"):
    """Every layer of the quantized file into the model (an Applied)."""
    layers = layers_of(model)
    missing = [n for n in qf.names if n not in layers]
    if missing:
        fail(tool, f"{qf.path}: layer '{missing[0]}' is not an nn.Linear or nn.Conv2d of the model")
    a = Applied(model)
    for n in qf.names:
        w, b, grid = qf.layer(n)
        if w.size != layers[n].weight.numel():
            a.restore()
            fail(tool, f"{qf.path}: layer '{n}' has {w.size} weights, the model's has "
                       f"{layers[n].weight.numel()}")
        a.set(n, w, b, grid)
    return a


# ---- the bitplan binary ---------------------------------------------------------------

def bitplan_path(given=None):
    for p in (given, os.environ.get("BITPLAN"), os.path.join(ROOT, "build", "bitplan")):
        if p and os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    fail("bitplan", "the bitplan binary was not found (build it, or pass --bitplan PATH)")


def run_bitplan(exe, *args, tool="bitplan"):
    r = subprocess.run([exe, *args], capture_output=True, text=True)
    if r.returncode != 0:
        fail(tool, f"bitplan {args[0]}: {r.stderr.strip()}")
    return r.stdout


def config_outputs(exe, config, tool="bitplan"):
    """(output.dir, [output.formats]) of a config, as bitplan resolves them."""
    out_dir, formats = None, []
    for line in run_bitplan(exe, "inspect", config, tool=tool).splitlines():
        if line.startswith("output.dir: "):
            out_dir = line[len("output.dir: "):]
        elif line.startswith("output.formats:"):
            formats = line[len("output.formats:"):].split()
    if out_dir is None:
        fail(tool, f"{config}: not a bitplan config (bitplan inspect names no output.dir)")
    return out_dir, formats


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def quantize_candidates(exe, config, keys, work, tool="bitplan"):
    """{(wbits, abits, quantizer): path} of `bitplan quantize` for every key."""
    files = {}
    for w, a, q in sorted(keys):
        path = os.path.join(work, f"w{w}a{a}-{q}.safetensors")
        run_bitplan(exe, "quantize", config, "--wbits", str(w), "--abits", str(a),
                    "--quantizer", q, "-o", path, "-q", tool=tool)
        files[(w, a, q)] = path
    return files


def measure_deltas(task, ref, rows, files, objective="kl", progress=None, tool="bitplan"):
    """For every table row (layer, wbits, abits, quantizer): the model with that
    layer alone quantized, measured on the task's batches by the objective
    (objective.degradation: KL or flips as measured, loss or metric as the
    increase over the float model).  Returns one value per row; with a tuple
    of objectives, one dict {objective: value} per row."""
    several = isinstance(objective, (tuple, list))
    objectives = tuple(objective) if several else (objective,)
    applied = Applied(task.model)
    out = [None] * len(rows)
    done = 0
    for key, path in files.items():                 # one file in memory at a time
        qf = QuantizedFile(path, tool)
        for i, r in enumerate(rows):
            if (int(r["wbits"]), int(r["abits"]), r["quantizer"]) != key:
                continue
            if progress:
                progress(done, r["layer"])
            applied.set(r["layer"], *qf.layer(r["layer"]))
            got = measure(task, ref, objectives=objectives)
            applied.restore(r["layer"])
            d = {o: degradation(task, ref, got, o) for o in objectives}
            out[i] = d if several else d[objective]
            done += 1
    return out


def write_deltas(path, rows, deltas):
    """The measured-deltas table (atomically): the sensitivity table's columns
    with the measured value as loss_delta."""
    out = os.path.abspath(path)
    fd, tmp = tempfile.mkstemp(prefix=".deltas-", dir=os.path.dirname(out))
    with os.fdopen(fd, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["layer", "wbits", "abits", "quantizer", "loss_delta", "params",
                    "weight_bits", "macs"])
        for r, d in zip(rows, deltas):
            w.writerow([r["layer"], r["wbits"], r["abits"], r["quantizer"], repr(float(d)),
                        r["params"], r["weight_bits"], r["macs"]])
    os.replace(tmp, out)
