"""Minimal safetensors reader/writer on top of NumPy (no other packages).

The format: an 8-byte little-endian header length, a JSON header mapping
tensor names to {"dtype", "shape", "data_offsets"} (plus an optional
"__metadata__" object of strings), padded with spaces to a multiple of 8,
then the little-endian tensor data back to back.
"""
import json
import os
import struct
import tempfile

import numpy as np

_DTYPES = {
    np.dtype("float32"): "F32", np.dtype("float16"): "F16", np.dtype("float64"): "F64",
    np.dtype("int8"): "I8", np.dtype("uint8"): "U8", np.dtype("int16"): "I16",
    np.dtype("int32"): "I32", np.dtype("int64"): "I64", np.dtype("bool"): "BOOL",
}
_NUMPY = {v: k for k, v in _DTYPES.items()}


def save_file(path, tensors, metadata=None):
    """Write tensors (an ordered dict name -> ndarray) atomically, streaming
    each array to the file (no second copy of the data in memory)."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, array in tensors.items():
        if array.dtype not in _DTYPES:
            raise ValueError(f"{name}: dtype {array.dtype} is not supported")
        header[name] = {"dtype": _DTYPES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp.", suffix=".safetensors")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(text)))
            f.write(text)
            for array in tensors.values():
                a = np.ascontiguousarray(array)
                a = a.astype(a.dtype.newbyteorder("<"), copy=False)
                f.write(memoryview(a.reshape(-1)).cast("B") if a.size else b"")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load_file(path):
    """Return (dict name -> ndarray, metadata dict)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    metadata = header.pop("__metadata__", {})
    base, out = 8 + n, {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        dtype = _NUMPY[info["dtype"]].newbyteorder("<")
        out[name] = np.frombuffer(raw[base + begin:base + end], dtype=dtype).reshape(info["shape"])
    return out, metadata
