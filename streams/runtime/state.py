"""Compact, versioned bytes for per-asset stage state kept in changelog-backed tables.

Not pickle: a changelog outlives the code that wrote it, so the format is a
JSON header (scalars) followed by raw little-endian arrays.
"""
from __future__ import annotations

import json
import struct
from typing import Any, Mapping

import numpy as np

FORMAT_VERSION = 1
_LEN = struct.Struct(">I")


def pack_state(header: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None) -> bytes:
    arrays = arrays or {}
    layout = [[name, np.asarray(a).dtype.newbyteorder("<").str, list(np.shape(a))] for name, a in arrays.items()]
    meta = json.dumps({"v": FORMAT_VERSION, "h": header, "a": layout}, separators=(",", ":")).encode()
    body = b"".join(np.ascontiguousarray(a, dtype=np.asarray(a).dtype.newbyteorder("<")).tobytes() for a in arrays.values())
    return _LEN.pack(len(meta)) + meta + body


def unpack_state(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    (n,) = _LEN.unpack_from(data)
    meta = json.loads(data[_LEN.size : _LEN.size + n])
    if meta.get("v") != FORMAT_VERSION:
        raise ValueError(f"state format {meta.get('v')} is not {FORMAT_VERSION}")
    offset = _LEN.size + n
    arrays = {}
    for name, dtype, shape in meta["a"]:
        count = int(np.prod(shape)) if shape else 1
        arr = np.frombuffer(data, dtype=np.dtype(dtype), count=count, offset=offset).reshape(shape)
        arrays[name] = arr.copy()
        offset += arr.nbytes
    return meta["h"], arrays
