"""Hybrid mode: the one narrow interface between ``fedinv`` and ``solvers`` (DESIGN 1, 7).

Every day a policy proposes orders; in hybrid mode a *projector* returns the orders
released instead: the nearest orders (weighted L1, units) that satisfy capacity, budget,
storage, lot-size and contract constraints (the program is in ``solvers/projection.py``
and ``docs/hybrid.md``). This module defines what crosses the boundary:

  * :class:`Projector` -- ``project(state, proposals [B, M]) -> Projection``;
  * :class:`Projection` -- released orders, L1 distance, solve time, relaxations;
  * :class:`Relaxation` -- a constraint the layer had to relax on an infeasible day;
  * :class:`SolverError` -- any solver trouble (never a silent fallback);
  * :class:`Projected` -- a policy wrapper ``inner policy -> projector -> Decision``.
    It works on any policy with ``act(state) -> Decision``: evaluation wraps a policy
    with it, and RL training can wrap its acting policy the same way (the *training-time
    projection switch*: train on released orders rather than proposals);
  * factories that import ``solvers`` lazily: :func:`make_projector`,
    :func:`make_optimization_policy` (``rolling-lp``), :func:`perfect_information_bound`.

Importing this module does not import Pyomo, highspy or ``solvers``; nothing else in
``fedinv`` imports ``solvers``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from fedinv.sim.simulator import Decision, State

if TYPE_CHECKING:
    from fedinv.model.layout import Layout
    from fedinv.model.network import Outage, Scenario

BACKENDS = ("pyomo", "highspy")
"""Solver backends of the projection: Pyomo's persistent HiGHS interface, or highspy."""
OPTIMIZATION_POLICIES = ("rolling-lp",)
"""Policies implemented in ``solvers`` (built by :func:`make_optimization_policy`)."""
ROLLING_LP_OPTIONS = ("horizon", "forecast", "window", "safety", "time_limit")
"""Options of ``rolling-lp`` (``--params '{"horizon": 21, "forecast": "calendar"}'``)."""
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
    unchanged. Wrap any policy, including a learned one during training."""

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


def make_projector(
    layout: Layout, backend: str = "pyomo", *, outages: Sequence[Outage] = (), **options: Any
) -> Projector:
    """The solver-backed projector of ``layout`` (imports ``solvers`` and the backend).

    ``backend``: ``pyomo`` (persistent HiGHS through ``pyomo.contrib.solver``) or
    ``highspy`` (HiGHS directly, the speed reference). ``outages``: the scenario's
    outages, whose ``capacity_fraction`` applies to a capacity once ``state.alert``
    announces it. ``options`` go to :class:`solvers.projection.ProjectionProgram` and
    the backend (``weights``, ``soft_order``, ``time_limit``, ``skip_feasible``, ...).
    Raises :class:`SolverError` for an unknown or unavailable backend."""
    if backend not in BACKENDS:
        raise SolverError(
            f"unknown projection backend {backend!r}; choose one of {', '.join(BACKENDS)}"
        )
    try:
        from solvers.projection import make_backend
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise SolverError(f"the {backend} projection backend cannot be imported: {exc}") from exc
    return make_backend(layout, backend, outages=tuple(outages), **options)


def make_optimization_policy(
    name: str, scenario: Scenario, layout: Layout, params: Mapping[str, Any] | None = None
) -> Any:
    """An optimization baseline from ``solvers`` by name (``rolling-lp``)."""
    if name != "rolling-lp":
        raise ValueError(
            f"unknown optimization policy {name!r}; choose one of "
            f"{', '.join(OPTIMIZATION_POLICIES)}"
        )
    params = dict(params or {})
    unknown = sorted(set(params) - set(ROLLING_LP_OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for rolling-lp; "
            f"expected some of {', '.join(ROLLING_LP_OPTIONS)}"
        )
    from solvers.rolling import RollingLP

    return RollingLP(layout, scenario, **params)


def perfect_information_bound(
    scenario: Scenario,
    replications: Sequence[int] | int = 1,
    days: int | None = None,
    **options: Any,
) -> np.ndarray:
    """Perfect-information LP lower bound on the total cost per day (after warm-up) of
    every policy, per replication ``[R]`` $/day -- a bound, not a policy (it sees
    realized demand, lead times and outages). See ``solvers/bound.py``."""
    from solvers.bound import perfect_information_bound as bound

    return bound(scenario, replications, days=days, **options)
