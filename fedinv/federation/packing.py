"""The model's named arrays as one flat array on Flower's wire, and back.

Flower moves every array of a message as objects of their own (an object per array
and per chunk, each one HTTPS request between a SuperNode and the SuperLink): a model
of tens of arrays costs tens of round trips per message. Packed, a message carries one
array. The layout (names, dtypes, shapes, in order) is the server's: it sends it in
every train and evaluate message's config (``layout``, a JSON string), and a client
replies in the same layout. Values are packed as float64, which holds every float32
and every integer below 2**53 exactly, so packing changes no value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np

PACKED = "packed"
"""The one array name of a packed ArrayRecord."""
LAYOUT_KEY = "layout"
"""The config key of the layout."""

Layout = list[tuple[str, str, tuple[int, ...]]]


def layout_of(arrays: Mapping[str, np.ndarray]) -> Layout:
    """The layout of named arrays, in their order."""
    return [(k, np.asarray(v).dtype.str, tuple(np.shape(v))) for k, v in arrays.items()]


def layout_text(layout: Layout) -> str:
    return json.dumps([[k, d, list(s)] for k, d, s in layout])


def parse_layout(text: str) -> Layout:
    return [(str(k), str(d), tuple(int(n) for n in s)) for k, d, s in json.loads(text)]


def pack(arrays: Mapping[str, np.ndarray], layout: Sequence[tuple[str, str, tuple]]) -> np.ndarray:
    """The arrays of ``layout``, in its order, as one float64 vector (shapes checked)."""
    parts = []
    for name, _, shape in layout:
        value = np.asarray(arrays[name])
        if tuple(value.shape) != tuple(shape):
            raise ValueError(f"array {name!r}: shape {value.shape}, layout says {shape}")
        parts.append(value.astype(np.float64, copy=False).ravel())
    return np.concatenate(parts) if parts else np.zeros(0)


def unpack(flat: np.ndarray, layout: Sequence[tuple[str, str, tuple]]) -> dict[str, np.ndarray]:
    """Named arrays of ``layout`` from one vector made by :func:`pack`."""
    flat = np.asarray(flat).ravel()
    sizes = [int(np.prod(shape, dtype=np.int64)) for _, _, shape in layout]
    if flat.size != sum(sizes):
        raise ValueError(f"packed array of {flat.size} values, layout needs {sum(sizes)}")
    out, at = {}, 0
    for (name, dtype, shape), size in zip(layout, sizes, strict=True):
        out[name] = flat[at : at + size].astype(np.dtype(dtype)).reshape(shape)
        at += size
    return out
