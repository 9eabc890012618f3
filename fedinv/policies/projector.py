"""The projector contract: what passes between a policy, the safety layer and the run.

A *projector* turns one day's proposed orders into the orders released (hybrid mode,
docs/hybrid.md). This module holds the types both sides share, below ``solvers`` (which
implements them) and below :mod:`fedinv.hybrid` (the gateway that builds the
solver-backed projector):

  * :class:`Projector` -- ``project(state, proposals [B, M]) -> Projection``;
  * :class:`Projection` -- released orders, L1 distance, solve time, relaxations;
  * :class:`Relaxation` -- a constraint the layer had to relax on an infeasible day;
  * :class:`SolverError` -- any solver trouble left (never a silent fallback);
  * :class:`Projected` -- a policy wrapper ``inner policy -> projector -> Decision``;
  * :class:`IdentityProjector` -- releases the proposals, with the same bookkeeping.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fedinv.sim.simulator import Decision, State

SOFT_KINDS = ("contract", "storage", "budget")
"""Constraints the layer may relax on an infeasible day, softest first (the default)."""


class SolverError(RuntimeError):
    """The optimization layer could not produce a trustworthy answer: the solver is
    missing, hit its time limit, failed numerically or returned a non-optimal status.
    The message names the backend, the day and what happened."""


@dataclass(frozen=True)
class Relaxation:
    """One constraint relaxed on one day for one replication.

    ``kind``: ``contract`` (month-end commitment, ``target`` a lane), ``storage``
    (``target`` a node) or ``budget`` (``target`` an organization); ``amount`` in
    ``unit`` (units, or $ for budgets) by which the released orders exceed the
    constraint; ``reason``: why the day was infeasible. ``replication`` is the row in the
    batch (``fedinv.sim.run.simulate`` reports the replication index)."""

    day: int
    replication: int
    kind: str
    target: str
    amount: float
    unit: str
    reason: str


@dataclass
class Projection:
    """What a projector returns for one day of a batch of ``B`` replications."""

    released: np.ndarray
    """``[B, M]`` units per lane: the orders to release."""
    distance: np.ndarray
    """``[B]`` weighted L1 distance ``sum_l w_l |released - proposals|`` (units)."""
    solve_ms: np.ndarray
    """``[B]`` wall milliseconds of the day's projection call (shared by the batch)."""
    solved: np.ndarray
    """``[B]`` True where the proposals were infeasible and the program was solved (by
    the exact fast path or by HiGHS)."""
    relaxations: list[Relaxation] = field(default_factory=list)
    solver_used: np.ndarray | None = None
    """``[B]`` True where HiGHS was called (the fast path could not answer); None: as
    ``solved``."""


class Projector(Protocol):
    """Proposals to released orders, for one network (a compiled layout)."""

    def project(self, state: State, proposals: np.ndarray) -> Projection: ...


class Projected:
    """Policy wrapper: the inner policy proposes, ``projector`` decides what is released.

    ``act`` returns ``Decision(orders=released, transfers=inner transfers, info=...)``;
    ``info`` holds ``[B]`` arrays ``projection_l1`` (units), ``solve_ms``, ``solved``
    (0/1), ``solver_used`` (0/1: HiGHS was called) and ``relaxations`` (count), and
    ``relaxation_log`` (a tuple of :class:`Relaxation`). Lateral transfers pass through
    unchanged. Any policy with ``act(state) -> Decision`` can be wrapped, a learned one
    included."""

    def __init__(self, policy: Any, projector: Projector):
        self.policy = policy
        self.projector = projector
        self.name = f"{getattr(policy, 'name', type(policy).__name__)}+projection"

    def act(self, state: State) -> Decision:
        proposed = self.policy.act(state)
        if not isinstance(proposed, Decision):
            proposed = Decision(np.asarray(proposed, float))
        out = self.projector.project(state, proposed.orders)
        b = out.released.shape[0]
        count = np.zeros(b)
        for r in out.relaxations:
            count[r.replication] += 1
        info: dict[str, Any] = dict(proposed.info or {})
        used = out.solved if out.solver_used is None else out.solver_used
        info.update(
            projection_l1=out.distance,
            solve_ms=out.solve_ms,
            solved=out.solved.astype(float),
            solver_used=used.astype(float),
            relaxations=count,
            relaxation_log=tuple(out.relaxations),
        )
        return Decision(orders=out.released, transfers=proposed.transfers, info=info)


class IdentityProjector:
    """Releases the proposals as they are (negatives and NaN read as 0, as the simulator
    does): the pure-mode reference with the projector's bookkeeping."""

    def project(self, state: State, proposals: np.ndarray) -> Projection:
        t0 = time.perf_counter()
        released = np.maximum(np.nan_to_num(np.asarray(proposals, float), nan=0.0), 0.0)
        b = released.shape[0]
        ms = (time.perf_counter() - t0) * 1e3
        return Projection(released, np.zeros(b), np.full(b, ms), np.zeros(b, bool))
