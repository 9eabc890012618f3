"""The local link between an organization's thin ClientApp and its long-lived trainer
process (:mod:`fedinv.federation.trainer`): one frame per request and per reply over a
Unix domain socket, standard library and numpy only (the ClientApp process imports
nothing heavier).

A frame is an 8-byte big-endian length, a JSON header of that many bytes, and the raw
bytes of the arrays the header lists (``arrays``: name, dtype, shape, in order). Values
are JSON scalars, strings and lists; arrays are plain numeric numpy arrays. Nothing is
unpickled: a frame from a confused or hostile peer can only fail to parse.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

MAX_HEADER = 16 << 20
"""Largest JSON header accepted (bytes)."""
MAX_ARRAY = 1 << 31
"""Largest single array accepted (bytes)."""
_ALLOWED_KINDS = frozenset("biuf")
"""numpy dtype kinds that may cross the link: bool, signed and unsigned ints, floats."""


class WireError(RuntimeError):
    """A malformed frame or a closed link."""


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise WireError("the link closed in the middle of a frame")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def send_frame(
    sock: socket.socket, header: Mapping[str, Any], arrays: Mapping[str, np.ndarray] = {}
) -> None:
    """Send ``header`` (JSON-serializable) and the named ``arrays`` as one frame."""
    listed, blobs = [], []
    for name, value in arrays.items():
        array = np.asarray(value)
        if array.dtype.kind not in _ALLOWED_KINDS:
            raise WireError(f"array {name!r}: dtype {array.dtype} cannot cross the link")
        listed.append([name, array.dtype.str, list(array.shape)])
        blobs.append(array.tobytes(order="C"))
    text = json.dumps({**header, "arrays": listed}).encode()
    sock.sendall(struct.pack(">Q", len(text)) + text)
    for blob in blobs:
        sock.sendall(blob)


def recv_frame(sock: socket.socket) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Receive one frame: its header (without ``arrays``) and its named arrays."""
    (size,) = struct.unpack(">Q", _recv_exact(sock, 8))
    if size > MAX_HEADER:
        raise WireError(f"frame header of {size} bytes (at most {MAX_HEADER})")
    try:
        header = json.loads(_recv_exact(sock, size))
        listed = header.pop("arrays")
    except (ValueError, KeyError, AttributeError):
        raise WireError("malformed frame header") from None
    arrays: dict[str, np.ndarray] = {}
    for name, dtype_text, shape in listed:
        dtype = np.dtype(dtype_text)
        if dtype.kind not in _ALLOWED_KINDS:
            raise WireError(f"array {name!r}: dtype {dtype} refused")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        nbytes = count * dtype.itemsize
        if count < 0 or nbytes > MAX_ARRAY:
            raise WireError(f"array {name!r}: {nbytes} bytes refused")
        data = _recv_exact(sock, nbytes)
        arrays[str(name)] = np.frombuffer(data, dtype=dtype).reshape(tuple(shape)).copy()
    return header, arrays


def request(
    path: str,
    header: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray] = {},
    *,
    timeout: float | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One request to the trainer listening on the Unix socket ``path``; its reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        send_frame(sock, header, arrays)
        return recv_frame(sock)
