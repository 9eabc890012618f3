"""The array namespace the day is written against: numpy (simulation) or torch (gradients).

:class:`fedinv.sim.simulator.Simulator` writes the day of docs/model.md once, as pure
functions of explicit state, against the few operations below. :data:`NUMPY` runs it on
numpy arrays (the simulator, fast); :func:`torch_ops` runs the very same code on float64
torch tensors, so autograd gives pathwise gradients of a replication's cost with respect
to the orders released (HDPO, docs/agents.md). Every operation returns a new array: no
state is modified in place, which autograd needs and which makes a step a pure function.

**Training-time relaxations** (:class:`Smoothing`, torch path only; evaluation always runs
the exact day): the fixed ordering cost's indicator ``1[q > 0]`` has no useful gradient,
so with ``order_temperature = T`` (units) it becomes ``1 - exp(-q / T)``, which is 0 at
``q = 0``, tends to 1 for ``q >> T`` and has slope ``1 / T`` at 0. Minima, maxima and the
proportional rationing are differentiable almost everywhere and need no relaxation; lot
rounding happens in the policy (``StreamPolicy.finish``: straight-through on torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Smoothing:
    """Training-time relaxations of the day's kinks (torch path only, see module doc)."""

    order_temperature: float | None = None
    """Units: the fixed ordering cost's indicator becomes ``1 - exp(-q / T)``; ``None``
    keeps the exact indicator."""

    def __post_init__(self) -> None:
        t = self.order_temperature
        if t is not None and not (np.isfinite(t) and t > 0):
            raise ValueError(f"Smoothing.order_temperature must be > 0, got {t!r}")


class NumpyOps:
    """The day's operations on numpy float64 arrays (``name = "numpy"``)."""

    name = "numpy"
    differentiable = False

    def asarray(self, x: Any) -> np.ndarray:
        """A float64 array of ``x`` (numpy array, tensor or number); no copy when it is one."""
        if hasattr(x, "detach"):  # a torch tensor
            return x.detach().cpu().numpy().astype(float, copy=True)
        return np.asarray(x, dtype=float)

    def mask(self, x: Any) -> np.ndarray:
        """A boolean array of ``x``."""
        if hasattr(x, "detach"):
            return x.detach().cpu().numpy().astype(bool)
        return np.asarray(x, dtype=bool)

    def index(self, x: Any) -> np.ndarray:
        """An integer index array of ``x``."""
        return np.asarray(x, dtype=np.int64)

    def to_numpy(self, x: np.ndarray) -> np.ndarray:
        return x

    def as_float(self, mask: np.ndarray) -> np.ndarray:
        return mask.astype(float)

    def zeros(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.zeros(shape)

    def where(self, cond: Any, a: Any, b: Any) -> np.ndarray:
        return np.where(cond, a, b)

    def minimum(self, a: Any, b: Any) -> np.ndarray:
        return np.minimum(a, b)

    def maximum(self, a: Any, b: Any) -> np.ndarray:
        return np.maximum(a, b)

    def isinf(self, x: np.ndarray) -> np.ndarray:
        return np.isinf(x)

    def abs(self, x: np.ndarray) -> np.ndarray:
        return np.abs(x)

    def round(self, x: np.ndarray) -> np.ndarray:
        return np.round(x)

    def ceil(self, x: np.ndarray) -> np.ndarray:
        return np.ceil(x)

    def floor(self, x: np.ndarray) -> np.ndarray:
        return np.floor(x)

    def exp(self, x: np.ndarray) -> np.ndarray:
        return np.exp(x)

    def sigmoid(self, x: np.ndarray) -> np.ndarray:
        return 0.5 * (1.0 + np.tanh(0.5 * x))

    def sum(self, x: np.ndarray, axis: int) -> np.ndarray:
        return x.sum(axis=axis)

    def cumsum(self, x: np.ndarray, axis: int) -> np.ndarray:
        return np.cumsum(x, axis=axis)

    def nan_to_zero(self, x: np.ndarray) -> np.ndarray:
        """NaN read as 0 (infinities become the largest finite float, as numpy's)."""
        return np.nan_to_num(x, nan=0.0)

    def segment_min(self, x: np.ndarray, starts: np.ndarray, axis: int = 1) -> np.ndarray:
        """Minimum over contiguous segments of axis ``axis`` starting at ``starts``:
        ``[B, C] -> [B, K]`` (or ``[B, H, C] -> [B, H, K]`` along axis 2)."""
        return np.minimum.reduceat(x, starts, axis=axis)

    def take_slot(
        self, ring: np.ndarray, slot: int, owned: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(ring[:, :, slot], ring with that slot emptied)`` for a ring buffer ``[B, M, P]``;
        ``owned``: the caller made ``ring`` this step, so numpy may empty it in place."""
        out = ring if owned else ring.copy()
        taken = out[:, :, slot].copy()
        out[:, :, slot] = 0.0
        return taken, out

    def add_at_slots(self, ring: np.ndarray, slots: np.ndarray, values: np.ndarray) -> np.ndarray:
        """``ring`` with ``values [B, M]`` added at slot ``slots [B, M]`` of each row."""
        out = ring.copy()
        b, m = values.shape
        bi, mi = np.nonzero(values)
        out[bi, mi, np.broadcast_to(slots, (b, m))[bi, mi]] += values[bi, mi]
        return out

    def scatter_slots(self, values: np.ndarray, slots: np.ndarray, length: int) -> np.ndarray:
        """A ring ``[B, M, length]`` holding ``values [B, M, K]`` summed at slots ``slots
        [B, M, K]`` (integers in ``0 .. length - 1``) of each row."""
        b, m, k = values.shape
        flat = (np.arange(b * m)[:, None] * length + slots.reshape(b * m, k)).ravel()
        return np.bincount(flat, weights=values.ravel(), minlength=b * m * length).reshape(
            b, m, length
        )

    def smooth_indicator(
        self, q: np.ndarray, eps: float, smoothing: Smoothing | None
    ) -> np.ndarray:
        """``1[q > eps]`` (numpy never smooths)."""
        return (q > eps).astype(float)

    def straight_through(self, exact: np.ndarray, soft: np.ndarray) -> np.ndarray:
        """The exact value (numpy has no backward pass)."""
        return exact


NUMPY = NumpyOps()
"""The numpy namespace: :class:`~fedinv.sim.simulator.Simulator`'s default."""


class TorchOps(NumpyOps):
    """The day's operations on float64 torch tensors, differentiable (``name = "torch"``)."""

    name = "torch"
    differentiable = True

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.dtype = torch.float64

    def asarray(self, x: Any):
        t = self.torch
        if isinstance(x, t.Tensor):
            return x if x.dtype == self.dtype else x.to(self.dtype)
        return t.as_tensor(np.asarray(x, dtype=float), dtype=self.dtype)

    def mask(self, x: Any):
        t = self.torch
        if isinstance(x, t.Tensor):
            return x.to(t.bool)
        return t.as_tensor(np.asarray(x, dtype=bool))

    def index(self, x: Any):
        return self.torch.as_tensor(np.asarray(x, dtype=np.int64))

    def to_numpy(self, x) -> np.ndarray:
        return x.detach().cpu().numpy()

    def _t(self, x: Any):
        return x if isinstance(x, self.torch.Tensor) else self.asarray(x)

    def as_float(self, mask):
        return mask.to(self.dtype)

    def zeros(self, shape: tuple[int, ...]):
        return self.torch.zeros(shape, dtype=self.dtype)

    def where(self, cond: Any, a: Any, b: Any):
        t = self.torch
        cond = cond if isinstance(cond, t.Tensor) else self.mask(cond)
        return t.where(cond, self._t(a), self._t(b))

    def minimum(self, a: Any, b: Any):
        return self.torch.minimum(self._t(a), self._t(b))

    def maximum(self, a: Any, b: Any):
        return self.torch.maximum(self._t(a), self._t(b))

    def isinf(self, x):
        return self.torch.isinf(self._t(x))

    def abs(self, x):
        return self.torch.abs(x)

    def round(self, x):
        return self.torch.round(x)

    def ceil(self, x):
        return self.torch.ceil(x)

    def floor(self, x):
        return self.torch.floor(x)

    def exp(self, x):
        return self.torch.exp(x)

    def sigmoid(self, x):
        return self.torch.sigmoid(x)

    def sum(self, x, axis: int):
        return x.sum(dim=axis)

    def cumsum(self, x, axis: int):
        return x.cumsum(dim=axis)

    def nan_to_zero(self, x):
        return self.torch.nan_to_num(self._t(x), nan=0.0)

    def segment_min(self, x, starts: np.ndarray, axis: int = 1):
        ends = list(starts[1:]) + [x.shape[axis]]
        return self.torch.stack(
            [
                x.narrow(axis, int(a), int(b) - int(a)).amin(dim=axis)
                for a, b in zip(starts, ends, strict=True)
            ],
            dim=axis,
        )

    def take_slot(self, ring, slot: int, owned: bool = False):
        keep = self.torch.ones(ring.shape[2], dtype=self.dtype)
        keep[slot] = 0.0
        return ring[:, :, slot], ring * keep

    def add_at_slots(self, ring, slots: np.ndarray, values):
        b, m = values.shape
        idx = self.torch.as_tensor(np.broadcast_to(slots, (b, m))[:, :, None].astype(np.int64))
        return ring.scatter_add(2, idx, values[:, :, None])

    def scatter_slots(self, values, slots: np.ndarray, length: int):
        b, m, _ = values.shape
        idx = self.torch.as_tensor(np.asarray(slots, dtype=np.int64))
        return self.zeros((b, m, length)).scatter_add(2, idx, values)

    def smooth_indicator(self, q, eps: float, smoothing: Smoothing | None):
        """``1[q > eps]``, or ``1 - exp(-q / T)`` under ``smoothing.order_temperature``."""
        if smoothing is None or smoothing.order_temperature is None:
            return (q > eps).to(self.dtype)
        return 1.0 - self.torch.exp(-self.torch.clamp(q, min=0.0) / smoothing.order_temperature)

    def straight_through(self, exact, soft):
        """``exact`` forward, ``soft``'s gradient backward."""
        return soft + (exact - soft).detach()


@cache
def torch_ops() -> TorchOps:
    """The torch namespace (imports torch on first use)."""
    return TorchOps()
