"""The projector contract: what passes between a policy, the safety layer and the run.

A *projector* turns one day's proposed orders into the orders released (hybrid mode,
docs/hybrid.md). This module holds the types both sides share, below ``solvers`` (which
implements them) and below :mod:`fedinv.hybrid` (the gateway that builds the
solver-backed projector):

  * :class:`Projector` -- ``project(state, proposals [B, M], transfers [B, T] | None)
    -> Projection``;
  * :class:`Projection` -- released orders, L1 distance, solve time, relaxations and
    solver events;
  * :class:`Relaxation` -- a constraint the layer had to relax on an infeasible day;
  * :class:`SolverEvent` -- the solver needed help (a cold restart, a looser tolerance)
    to answer a day; the released orders still meet the constraints;
  * :class:`SolverError` -- any solver trouble left (never a silent fallback);
  * :class:`ProposalError` and :func:`check_orders` -- a policy's orders must be finite
    and nonnegative, in pure and hybrid mode alike;
  * :class:`Projected` -- a policy wrapper ``inner policy -> projector -> Decision``;
  * :class:`IdentityProjector` -- releases the proposals, with the same bookkeeping.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
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


class ProposalError(ValueError):
    """A policy proposed an order that is not a finite number >= 0 (NaN, +-inf or
    negative). The message names the policy, the lane, the day and the value."""


def check_orders(
    orders: np.ndarray, *, policy: str, day: int, lane_ids: Sequence[str] | None = None
) -> None:
    """Raise :class:`ProposalError` unless every entry of ``orders [B, M]`` (units) is
    finite and >= 0. Two numpy reductions on the happy path (a few microseconds)."""
    a = np.atleast_2d(np.asarray(orders))
    if a.size == 0 or (a.min() >= 0 and (a.dtype.kind in "biu" or a.max() < np.inf)):
        return  # (a NaN makes the minimum NaN, and NaN >= 0 is False)
    bad = ~(np.isfinite(a) & (a >= 0)) if a.dtype.kind == "f" else a < 0
    b, lane = (int(i) for i in np.argwhere(bad)[0])
    name = lane_ids[lane] if lane_ids is not None and lane < len(lane_ids) else f"#{lane}"
    count = int(bad.sum())
    more = f" ({count - 1} more entries likewise)" if count > 1 else ""
    raise ProposalError(
        f"policy {policy!r} proposed {float(a[b, lane])!r} units on lane {name} on day {day} "
        f"(replication row {b}){more}; orders must be finite numbers >= 0"
    )


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


@dataclass(frozen=True)
class SolverEvent:
    """The solver needed help to answer one day (``replications``: the batch rows it
    solved together). ``kind``: ``cold_restart`` (the warm-started solve ended without an
    optimum, or its orders broke a constraint after repair: solved again from scratch),
    ``tolerance`` (solved from scratch with looser feasibility tolerances, ``detail``
    says which; the orders were repaired and checked at the simulator's tolerances) or
    ``cut_to_fit`` (warm and cold, the orders broke a row by solver noise: its lanes were
    cut until it held; feasible, not necessarily optimal). Not a relaxation: no
    constraint was given up."""

    day: int
    replications: tuple[int, ...]
    kind: str
    detail: str


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
    events: list[SolverEvent] = field(default_factory=list)
    """Solver events of the day (:class:`SolverEvent`)."""
    transfers: np.ndarray | None = None
    """``[B, T]`` units per lateral link: the transfers to release (None: none were
    proposed, or the projector passes them through)."""


class Projector(Protocol):
    """Proposals to released orders and transfers, for one network (a compiled layout).
    Proposals are finite and >= 0 (:func:`check_orders`)."""

    def project(
        self, state: State, proposals: np.ndarray, transfers: np.ndarray | None = None
    ) -> Projection: ...


class Projected:
    """Policy wrapper: the inner policy proposes, ``projector`` decides what is released.

    The proposals are checked first (:func:`check_orders`; ``lane_ids`` name the lanes in
    the message). ``act`` returns ``Decision(orders=released, transfers=inner transfers,
    info=...)``; ``info`` holds ``[B]`` arrays ``projection_l1`` (units), ``solve_ms``,
    ``solved`` (0/1), ``solver_used`` (0/1: HiGHS was called) and ``relaxations``
    (count), and ``relaxation_log`` (a tuple of :class:`Relaxation`) and, on days with
    solver events, ``solver_event_log`` (a tuple of :class:`SolverEvent`). Proposed
    lateral transfers are projected with the orders (the receiver's storage; the
    projector's ``Projection.transfers``; a projector that returns None passes them
    through). Any policy with ``act(state) -> Decision`` can be
    wrapped, a learned one included."""

    def __init__(self, policy: Any, projector: Projector, lane_ids: Sequence[str] | None = None):
        self.policy = policy
        self.projector = projector
        self.needs_confirmations = bool(getattr(policy, "needs_confirmations", False))
        """The inner policy's: the run helpers switch the Supplier Interface on for it."""
        self.inner_name = str(getattr(policy, "name", type(policy).__name__))
        self.name = f"{self.inner_name}+projection"
        self.lane_ids = lane_ids

    def act(self, state: State) -> Decision:
        proposed = self.policy.act(state)
        if not isinstance(proposed, Decision):
            proposed = Decision(np.asarray(proposed, float))
        check_orders(proposed.orders, policy=self.inner_name, day=state.day, lane_ids=self.lane_ids)
        if proposed.transfers is not None:
            check_orders(proposed.transfers, policy=self.inner_name, day=state.day)
        out = self.projector.project(state, proposed.orders, proposed.transfers)
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
        if out.events:
            info["solver_event_log"] = tuple(out.events)
        moved = proposed.transfers if out.transfers is None else out.transfers
        return Decision(orders=out.released, transfers=moved, info=info)


class IdentityProjector:
    """Releases the proposals as they are (finite and >= 0: :class:`Projected` checks)
    with a projector's bookkeeping: the pure-mode reference of a projected run."""

    def project(
        self, state: State, proposals: np.ndarray, transfers: np.ndarray | None = None
    ) -> Projection:
        t0 = time.perf_counter()
        released = np.array(proposals, float)
        b = released.shape[0]
        ms = (time.perf_counter() - t0) * 1e3
        return Projection(released, np.zeros(b), np.full(b, ms), np.zeros(b, bool))
