"""Hybrid mode: the one narrow gateway from ``fedinv`` to ``solvers`` (docs/hybrid.md).

Every day a policy proposes orders; in hybrid mode a *projector* returns the orders
released instead: the nearest orders (weighted L1, units) that satisfy capacity, budget,
storage, lot-size and contract constraints (the program is in ``solvers/program.py``
and docs/hybrid.md). The contract types live below both sides, in
:mod:`fedinv.policies.projector` (:class:`Projector`, :class:`Projection`,
:class:`Relaxation`, :class:`SolverError`, :class:`Projected`, ...; re-exported here for
the gateway's callers). This module decides and builds:

  * :func:`for_mode` -- the policy to run in a mode (``pure``: the policy itself;
    ``hybrid``: the policy behind the solver-backed projector); the one place the mode
    and the backend name are read;
  * :func:`make_projector` -- the solver-backed projector of a layout;
  * :func:`make_optimization_policy` (``rolling-lp``, ``rolling-sp``),
    :func:`perfect_information_bound`.

Projection applies where a run asks for it: ``simulate(mode="hybrid")``, ``fedinv
simulate --mode hybrid`` and study variants with ``mode = "hybrid"``. :class:`Projected`
wraps any policy with ``act(state) -> Decision``, a learned one included, so a trainer
can learn from released orders: the tuner in hybrid mode, the DQN's environment and
HDPO's training day with ``layer_gradient`` straight-through or masked
(docs/agents.md, "Training through the safety layer") do.

Importing this module does not import Pyomo, highspy or ``solvers`` (the factories
import them when called); nothing else in ``fedinv`` imports ``solvers``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from fedinv.policies.projector import (
    SOFT_KINDS,
    IdentityProjector,
    Projected,
    Projection,
    Projector,
    ProposalError,
    Relaxation,
    SolverError,
    SolverEvent,
)

if TYPE_CHECKING:
    from fedinv.model.layout import Layout
    from fedinv.model.network import Outage, Scenario

__all__ = [
    "BACKENDS",
    "MODES",
    "OPTIMIZATION_POLICIES",
    "ROLLING_LP_OPTIONS",
    "ROLLING_SP_OPTIONS",
    "SOFT_KINDS",
    "IdentityProjector",
    "Projected",
    "Projection",
    "Projector",
    "ProposalError",
    "Relaxation",
    "SolverError",
    "SolverEvent",
    "for_mode",
    "make_optimization_policy",
    "org_decider",
    "per_org_policy",
    "make_projector",
    "perfect_information_bound",
]

MODES = ("pure", "hybrid")
"""``pure``: proposals are released; ``hybrid``: the safety layer's orders are."""
BACKENDS = ("pyomo", "highspy")
"""Solver backends of the projection: Pyomo's persistent HiGHS interface, or highspy."""
OPTIMIZATION_POLICIES = ("rolling-lp", "rolling-sp")
"""Policies implemented in ``solvers`` (built by :func:`make_optimization_policy`)."""
ROLLING_LP_OPTIONS = (
    "horizon",
    "forecast",
    "window",
    "safety",
    "lead_quantile",
    "order_cycle",
    "time_limit",
)
"""Options of ``rolling-lp`` (``--params '{"horizon": 21, "forecast": "calendar"}'``)."""
ROLLING_SP_OPTIONS = (
    "horizon",
    "scenarios",
    "resolve_every",
    "refresh",
    "bucket",
    "daily",
    "terminal",
    "service",
    "safety",
    "order_cycle",
    "feedback",
    "seed",
    "time_limit",
)
"""Options of ``rolling-sp`` (``--params '{"scenarios": 8, "resolve_every": 7}'``)."""


def for_mode(
    policy: Any,
    mode: str,
    layout: Layout,
    *,
    backend: str = "pyomo",
    outages: Sequence[Outage] = (),
    **options: Any,
) -> Any:
    """The policy to run in ``mode``: ``pure`` returns ``policy`` itself (its proposals
    are released); ``hybrid`` returns ``Projected(policy, make_projector(layout,
    backend, outages=outages, **options))``. Raises ValueError for an unknown mode and
    :class:`SolverError` for an unknown or unavailable backend."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode == "pure":
        return policy
    projector = make_projector(layout, backend, outages=outages, **options)
    return Projected(policy, projector, lane_ids=layout.lane_ids)


def org_decider(
    policy: Any,
    mode: str,
    layout: Layout,
    org: str | int,
    *,
    backend: str = "pyomo",
    outages: Sequence[Outage] = (),
    **options: Any,
) -> Any:
    """Organization ``org``'s decision in ``mode`` (per-org information mode,
    :mod:`fedinv.policies.perorg`): ``policy`` restricted to its lanes, behind
    :func:`for_mode` with the projection program restricted to the organization
    (:func:`fedinv.policies.perorg.org_layout`, its own outages). What one decision
    service runs and what ``simulate(projection="per-org")`` runs per organization."""
    from fedinv.policies.perorg import OrgDecider, org_layout, org_outages, org_scope

    scope = org_scope(layout, org)
    restricted = org_layout(layout, scope)
    own_outages = org_outages(layout, scope, outages)
    return OrgDecider(
        scope,
        policy,
        lambda inner: for_mode(
            inner, mode, restricted, backend=backend, outages=own_outages, **options
        ),
    )


def per_org_policy(
    factory: Any,
    mode: str,
    layout: Layout,
    *,
    backend: str = "pyomo",
    outages: Sequence[Outage] = (),
    on_decision: Any = None,
    **options: Any,
) -> Any:
    """Every organization's :func:`org_decider` (each with its own ``factory(layout)``
    policy, so a policy's memory is the organization's), downstream-first:
    :class:`fedinv.policies.perorg.PerOrgPolicy`."""
    from fedinv.policies.perorg import PerOrgPolicy

    deciders = [
        org_decider(factory(layout), mode, layout, o, backend=backend, outages=outages, **options)
        for o in range(len(layout.org_ids))
    ]
    return PerOrgPolicy(layout, deciders, on_decision)


def make_projector(
    layout: Layout, backend: str = "pyomo", *, outages: Sequence[Outage] = (), **options: Any
) -> Projector:
    """The solver-backed projector of ``layout`` (imports ``solvers`` and the backend).

    ``backend``: ``pyomo`` (persistent HiGHS through ``pyomo.contrib.solver``) or
    ``highspy`` (HiGHS directly, the speed reference). ``outages``: the scenario's
    outages, whose ``capacity_fraction`` applies to a capacity once ``state.alert``
    announces it. ``options`` go to :class:`solvers.program.ProjectionProgram` and
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
    """An optimization baseline from ``solvers`` by name (``rolling-lp``, ``rolling-sp``)."""
    if name not in OPTIMIZATION_POLICIES:
        raise ValueError(
            f"unknown optimization policy {name!r}; choose one of "
            f"{', '.join(OPTIMIZATION_POLICIES)}"
        )
    params = dict(params or {})
    allowed = ROLLING_LP_OPTIONS if name == "rolling-lp" else ROLLING_SP_OPTIONS
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for {name}; "
            f"expected some of {', '.join(allowed)}"
        )
    if name == "rolling-sp":
        from solvers.stochastic import RollingSP

        return RollingSP(layout, scenario, **params)
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
