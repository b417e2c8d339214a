"""Calibration statistics instead of rows (tools/capture.py --stats).

Everything bitplan computes from a layer's calibration rows X (n x in) is a
function of a few sums over the rows, accumulated here in float64 over any
number of tokens:
  S.count [1]                  n, the rows summed
  S.xtx   [in, in]             X^T X           ([groups, in, in] for grouped convs)
  S.xsum  [in]                 the column sums ([groups, in])
  S.range [r, in * groups]     a subset of the rows (F32), which activation grids
                               are fitted on
and for every static activation grid k some layer reading S asks for:
  S.grid<k>.scale / .zero [m]  the grid (F32; m = 1, or in * groups for ptf)
  S.grid<k>.qtq / .qtx         Xbar^T Xbar and Xbar^T X, Xbar = the rows on that grid
  S.grid<k>.qsum               Xbar's column sums
  metadata S.grid<k> = "<uniform|ptf|log2> <bits>"
S is the first layer reading the tensor; layers that read the same tensor
(q/k/v, gate/up) share one set, named by metadata NAME.stats = S.

Two passes over the loader: the first keeps up to `range_rows` rows per
shared input (from the first `range_batches` batches, 0: all); bitplan then
fits the config's activation grids on them (`bitplan grids`), exactly as it
would on rows; the second pass accumulates the sums under those grids.

precision "double" (the default) forms every product in float64: the sums are
those of the rows to rounding (the table from them equals the table from rows
within 1e-9).  precision "single" forms the products of chunks of CHUNK rows in
float32 (ssyrk / sgemm: float32's BLAS speed and half the memory traffic)
and sums them in float64, of small quantities only, so that float32 rounds
what the errors are made of rather than what cancels in them: the rows shifted
by a per-column offset a (the first chunk's column means, in float32), y = x - a,
and each grid's change dx = xbar - x.  The file's sums follow in float64:
  X^T X = sum y y^T + a sy^T + sy a^T + n a a^T            (sy = sum y)
  Xbar^T X = X^T X + sum dx y^T + sdx a^T                  (sdx = sum dx)
  Xbar^T Xbar = X^T X + D + D^T + sum dx dx^T               (D = sum dx x^T)
"""
import ctypes
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn

from progress import Progress
from safetensors_io import save_file


def conv_key(mod):
    if isinstance(mod, nn.Conv2d):
        return ("conv", mod.kernel_size, mod.stride, mod.padding, mod.dilation)
    return ("linear",)


class Sharing:
    """Which layers read the same tensor: found on the first batch (object
    identity of the forward input and the same unfolding), checked on every
    later batch."""

    def __init__(self):
        self.group = {}          # layer -> set name (its first reader)
        self.batch = []          # this batch: (tensor, key, set name)
        self.first = True

    def see(self, name, mod, x):
        key = conv_key(mod)
        found = next((s for t, k, s in self.batch if t is x and k == key), None)
        if self.first:
            self.group[name] = found or name
        elif self.group.get(name) != (found or name):
            raise SystemExit(f"capture: layer '{name}' shares its input differently from the "
                             "first batch; --stats needs the same sharing in every batch")
        if found is None:
            self.batch.append((x, key, name))
        return found is None     # the set's first reader: accumulate

    def end_batch(self):
        self.batch = []
        self.first = False


def _cblas():
    """OpenBLAS's CBLAS (dsyrk forms a symmetric product in half the flops of
    a matrix product), or None: then NumPy's matrix products."""
    for name in ("libopenblas.so.0", "libblas.so.3"):
        try:
            lib = ctypes.CDLL(name)
            lib.cblas_dsyrk, lib.cblas_dgemm, lib.cblas_ssyrk, lib.cblas_sgemm
            return lib
        except (OSError, AttributeError):
            continue
    return None


_BLAS = _cblas()
_ROW, _UPPER, _NOTRANS, _TRANS = 101, 121, 111, 112


def _ptr(a):
    return a.ctypes.data_as(ctypes.c_void_p)


def add_ata(C, A):
    """C += A^T A, float64 (C's upper triangle only with CBLAS: symmetrize at the end)."""
    n, d = A.shape
    if _BLAS is None:
        C += A.T @ A
        return
    _BLAS.cblas_dsyrk(_ROW, _UPPER, _TRANS, d, n, ctypes.c_double(1.0), _ptr(A), d,
                      ctypes.c_double(1.0), _ptr(C), d)


def add_atb(C, A, B):
    """C += A^T B, float64."""
    n, d = A.shape
    if _BLAS is None:
        C += A.T @ B
        return
    _BLAS.cblas_dgemm(_ROW, _TRANS, _NOTRANS, d, B.shape[1], n, ctypes.c_double(1.0), _ptr(A),
                      d, _ptr(B), B.shape[1], ctypes.c_double(1.0), _ptr(C), B.shape[1])


def symmetrize(C, blk=512):
    """Lower triangle from the upper one (after add_ata with CBLAS), in blocks
    (index arrays for a whole 11,008-wide matrix would take seconds)."""
    if _BLAS is None:
        return
    d = C.shape[0]
    for i in range(0, d, blk):
        j = min(i + blk, d)
        C[i:j, :i] = C[:i, i:j].T
        D = C[i:j, i:j]
        iu = np.tril_indices(j - i, -1)
        D[iu] = D.T[iu]


CHUNK = 512          # rows per float32 product (precision "single")


def add_outer(C, x, y, blk=512):
    """C += x y^T in place (float64), in row blocks: no d x d temporary."""
    for i in range(0, C.shape[0], blk):
        C[i:i + blk] += np.outer(x[i:i + blk], y)


def _acc_syrk32(acc, y, buf):
    """acc (float64, upper) += y^T y formed in float32."""
    n, d = y.shape
    if _BLAS is None:
        acc += (y.T @ y).astype(np.float64)
        return
    _BLAS.cblas_ssyrk(_ROW, _UPPER, _TRANS, d, n, ctypes.c_float(1.0), _ptr(y), d,
                      ctypes.c_float(0.0), _ptr(buf), d)
    acc += buf


def _acc_gemm32(acc, a, b, buf):
    """acc (float64) += a^T b formed in float32."""
    n, d = a.shape
    if _BLAS is None:
        acc += (a.T @ b).astype(np.float64)
        return
    _BLAS.cblas_sgemm(_ROW, _TRANS, _NOTRANS, d, b.shape[1], n, ctypes.c_float(1.0), _ptr(a), d,
                      _ptr(b), b.shape[1], ctypes.c_float(0.0), _ptr(buf), b.shape[1])
    acc += buf


def blocks(rows, groups):
    """rows (n x in*g, torch float32) -> g contiguous float64 [n, in] blocks."""
    a = rows.numpy()
    d = a.shape[1] // groups
    return [np.ascontiguousarray(a[:, j * d:(j + 1) * d], dtype=np.float64)
            for j in range(groups)]


def apply_grid(x, g):
    """x on grid g exactly as bitplan quantizes it (sensitivity/quant.c)."""
    bits = int(g["bits"])
    maxq = float((1 << bits) - 1)
    s = torch.tensor(np.asarray(g["scale"], dtype=np.float32))
    z = torch.tensor(np.asarray(g["zero"], dtype=np.float32))
    if g["kind"] == "log2":
        m = float(s[0])
        if m <= 0.0:
            return torch.zeros_like(x)
        q = torch.where(x > 0, torch.round(-torch.log2(x.double() / m)),
                        torch.tensor(maxq, dtype=torch.float64))
        q = q.clamp(0.0, maxq)
        return (m * torch.exp2(-q)).float()
    q = torch.round(x / s) + z
    q = torch.where(q > 0, q, torch.zeros((), dtype=q.dtype))
    q = torch.where(q < maxq, q, torch.full((), maxq, dtype=q.dtype))
    return s * (q - z)


class SetStats:
    def __init__(self, width, groups, grids, precision="double"):
        d = width // groups
        self.groups, self.n, self.precision = groups, 0, precision
        self.xtx = np.zeros((groups, d, d))
        self.xsum = np.zeros((groups, d))
        self.grids = grids
        self.q = [(np.zeros((groups, d, d)), np.zeros((groups, d, d)), np.zeros((groups, d)))
                  for _ in grids]
        self.shift = None        # single: the rows' shift per group, float32
        self.buf = None

    def add(self, rows):
        if self.precision == "single":
            for i in range(0, rows.shape[0], CHUNK):
                self._add_single(rows[i:i + CHUNK])
            return
        xb = blocks(rows, self.groups)
        self.n += rows.shape[0]
        for j, x in enumerate(xb):
            add_ata(self.xtx[j], x)
            self.xsum[j] += x.sum(0)
        for (qtq, qtx, qsum), g in zip(self.q, self.grids):
            for j, q in enumerate(blocks(apply_grid(rows, g), self.groups)):
                add_ata(qtq[j], q)
                add_atb(qtx[j], q, xb[j])
                qsum[j] += q.sum(0)

    def _add_single(self, rows):
        d = self.xtx.shape[1]
        views = [rows] + [apply_grid(rows, g) - rows for g in self.grids]   # x, then each dx
        parts = [[np.ascontiguousarray(v.numpy()[:, j * d:(j + 1) * d], dtype=np.float32)
                  for j in range(self.groups)] for v in views]
        if self.shift is None:
            self.shift = [p.mean(0, dtype=np.float64).astype(np.float32) for p in parts[0]]
            self.buf = np.empty((d, d), dtype=np.float32)
        self.n += rows.shape[0]
        for j in range(self.groups):
            y = parts[0][j] - self.shift[j]             # float32, shifted
            _acc_syrk32(self.xtx[j], y, self.buf)
            self.xsum[j] += y.sum(0, dtype=np.float64)
            for k, (dtd, dty, dsum) in enumerate(self.q):   # until finish: the dx sums
                dx = parts[k + 1][j]
                _acc_syrk32(dtd[j], dx, self.buf)
                _acc_gemm32(dty[j], dx, y, self.buf)
                dsum[j] += dx.sum(0, dtype=np.float64)

    def finish(self):
        for j in range(self.groups):
            symmetrize(self.xtx[j])
            for qtq, _, _ in self.q:
                symmetrize(qtq[j])
        if self.precision != "single" or self.shift is None:
            return
        n = float(self.n)
        for j in range(self.groups):     # back to the file's sums, exactly, in float64
            a = self.shift[j].astype(np.float64)
            sy = self.xsum[j].copy()
            u = sy + 0.5 * n * a             # a u^T + u a^T = a sy^T + sy a^T + n a a^T
            add_outer(self.xtx[j], a, u)
            add_outer(self.xtx[j], u, a)
            self.xsum[j] += n * a
            for dtd, dty, dsum in self.q:
                # dx^T x = dx^T y + dsum a^T;  xbar = x + dx:
                # qtx = xtx + dx^T x,  qtq = xtx + dx^T x + x^T dx + dx^T dx
                add_outer(dty[j], dsum[j], a)
                dtd[j] += self.xtx[j]
                dtd[j] += dty[j]
                dtd[j] += dty[j].T
                dty[j] += self.xtx[j]
                dsum[j] += self.xsum[j]

    def tensors(self, S, squeeze):
        f = (lambda a: a[0]) if squeeze else (lambda a: a)
        t = {S + ".count": np.array([float(self.n)]), S + ".xtx": f(self.xtx),
             S + ".xsum": f(self.xsum)}
        meta = {}
        for k, (g, (qtq, qtx, qsum)) in enumerate(zip(self.grids, self.q)):
            p = f"{S}.grid{k}"
            meta[p] = f"{g['kind']} {g['bits']}"
            t[p + ".scale"] = np.asarray(g["scale"], dtype=np.float32)
            t[p + ".zero"] = np.asarray(g["zero"], dtype=np.float32)
            t[p + ".qtq"], t[p + ".qtx"], t[p + ".qsum"] = f(qtq), f(qtx), f(qsum)
        return t, meta


def run_pass(task, layers, batches, on_rows, sharing, label, quiet):
    hooks = []
    for name, mod in layers.items():
        def fwd(m, inp, out, name=name):
            if sharing.see(name, m, inp[0]):     # the tensor object itself: shared or not
                on_rows(name, m, inp[0].detach())
        hooks.append(mod.register_forward_hook(fwd))
    loader = task.batches
    total = len(loader) if not batches else min(batches, len(loader))
    prog = Progress(label, total or 1, quiet, "batches")
    try:
        with torch.no_grad():
            for i, batch in enumerate(loader):
                if batches and i >= batches:
                    break
                prog(i)
                task.forward(batch)
                sharing.end_batch()
    finally:
        prog.close()
        for h in hooks:
            h.remove()


def fit_grids(bitplan, config, weights_path, range_tensors, out_dir):
    """bitplan grids CONFIG on the range rows: {layer: [grid, ...]}."""
    fd, rpath = tempfile.mkstemp(dir=out_dir, prefix=".range.", suffix=".safetensors")
    os.close(fd)
    gpath = rpath + ".json"
    try:
        save_file(rpath, range_tensors, {"format": "pt"})
        cmd = [bitplan, "grids", config, "--calibration", rpath, "-o", gpath, "-q"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"capture: {' '.join(cmd)} failed:\n{r.stderr.strip()}")
        with open(gpath) as f:
            got = json.load(f)
    finally:
        for p in (rpath, gpath):
            if os.path.exists(p):
                os.unlink(p)
    return {e["layer"]: e["grids"] for e in got["layers"]}


def capture_stats(task, layers, layer_rows, out_dir, weights_path, config=None,
                  bitplan="bitplan", range_rows=2048, range_batches=0, batches=0, seed=0,
                  quiet=True, precision="double"):
    """The statistics file's (tensors, metadata); out_dir holds the
    temporaries of the grid fit, weights_path the captured weights the
    config names."""
    rng = np.random.RandomState(seed)
    kept, sharing = {}, Sharing()

    def keep(name, mod, x):
        r = layer_rows(mod, x).float().numpy()
        a = np.concatenate([kept[name], r]) if name in kept else r
        if len(a) > 4 * range_rows:
            a = a[np.sort(rng.permutation(len(a))[:4 * range_rows])]
        kept[name] = a

    run_pass(task, layers, range_batches or batches, keep, sharing,
             "capture --stats: ranges", quiet)
    group = dict(sharing.group)
    for S in kept:
        if len(kept[S]) > range_rows:
            kept[S] = kept[S][np.sort(rng.permutation(len(kept[S]))[:range_rows])]
    grids = {}
    if config:
        rows_of = {n: kept[group[n]] for n in layers if group[n] in kept}
        got = fit_grids(bitplan, config, weights_path,
                        {n + ".input": rows_of[n] for n in rows_of}, out_dir)
        for n, gl in got.items():           # each set: the distinct grids of its readers
            S = group.get(n, n)
            have = grids.setdefault(S, [])
            for g in gl:
                if not any(h["kind"] == g["kind"] and h["bits"] == g["bits"] and
                           h["scale"] == g["scale"] and h["zero"] == g["zero"] for h in have):
                    have.append(g)
    stats = {}

    def accumulate(name, mod, x):
        r = layer_rows(mod, x).float()
        if name not in stats:
            groups = mod.groups if isinstance(mod, nn.Conv2d) else 1
            stats[name] = SetStats(r.shape[1], groups, grids.get(name, []), precision)
        stats[name].add(r)

    sharing2 = Sharing()
    run_pass(task, layers, batches, accumulate, sharing2, "capture --stats: sums", quiet)
    if sharing2.group != group:
        raise SystemExit("capture: the layers shared their inputs differently in the two passes")
    tensors, meta = {}, {"format": "bitplan-stats", "rows_summed": "per set: S.count",
                         "products": "float32" if precision == "single" else "float64"}
    for S, st in stats.items():
        st.finish()
        t, m = st.tensors(S, squeeze=st.groups == 1)
        tensors.update(t)
        tensors[S + ".range"] = kept[S].astype(np.float32)
        meta.update(m)
    for n in layers:
        if group.get(n) in stats:
            meta[n + ".stats"] = group[n]
    return tensors, meta
