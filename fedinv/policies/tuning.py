"""Tune a classical policy's parameters by simulation on training replications.

Method. Each policy has a few search coordinates per tier, mapped to per-node
parameters through the textbook formulas (docs/model.md, "The formulas default and tuned
parameters are relative to"): a level (base-stock level, ``s``, ``min``) is
``mu L + z sqrt(L sigma^2 + mu^2 var(L))`` -- mean lead-time demand plus ``z`` standard
deviations, from :func:`fedinv.policies.classical.flow_stats` (echelon lead time for the
echelon policy) --, and an order quantity (sQ's ``Q``, min-stock's ``quantity``) or the
gap ``S - s`` of (s,S) is ``k x EOQ`` with ``EOQ = sqrt(2 K mu / h)`` from
:func:`fedinv.policies.classical.eoq` (``K`` the share-weighted fixed order cost of the
stream's lanes, ``h`` its holding cost per unit-day; one day of demand ``mu`` where
``K = 0``). The
coordinates are ``z`` per tier for every policy, plus ``k`` per tier for (s,S), (s,Q)
and min-stock (``per="tier"``, the default); ``per="node"`` searches one ``z`` (and
``k``) per node instead (a manufacturer's component streams share its node's
coordinates). The search is cyclic coordinate descent: each coordinate in turn is
minimized by a golden-section search on its interval, ``sweeps`` times over all
coordinates. The objective is the mean total cost per day over the *training*
replications (indices from :data:`TRAIN_BASE`), the same ones at every evaluation
(common random numbers), so the search compares parameters on identical demand and
disruption paths. Held-out evaluation uses replication indices ``0, 1, ...``, disjoint
from training.

**Through the safety layer.** ``mode="hybrid"`` evaluates every candidate as it will run
in hybrid mode (:func:`fedinv.hybrid.for_mode`: the proposals projected by the Pyomo/HiGHS
layer, the released orders simulated), so the parameters are chosen on the costs the
layer lets through, not tuned pure and then projected.

Budget: ``evaluations x train_replications x days`` simulated days, reported in the
result (``simulated_days``) so a learned policy can be given the same budget;
:func:`max_evaluations` bounds ``evaluations`` before the search starts (a study refuses a
tuning its budget cannot pay for).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from fedinv.hybrid import MODES, for_mode
from fedinv.model.layout import Layout
from fedinv.model.network import Scenario
from fedinv.policies.classical import (
    eoq,
    flow_stats,
    make_policy,
    params_from_level_and_quantity,
    streams_of,
)
from fedinv.sim.simulator import Simulator

TRAIN_BASE = 1_000_000
"""First replication index used for training; held-out runs use 0, 1, ..."""
PER = ("tier", "node")
"""One search coordinate (``z``, and ``k``) per tier, or per node."""
Z_RANGE = (-2.0, 6.0)
K_RANGE = (0.1, 8.0)
_GOLDEN = (math.sqrt(5) - 1) / 2


@dataclass
class TuneResult:
    """The tuned parameters (per node, as ``--params`` takes them) and the search log."""

    policy: str
    params: dict[str, dict[str, float]]
    coordinates: dict[str, float]
    train_cost_per_day: float
    evaluations: int
    train_replications: int
    days: int
    history: list[tuple[dict[str, float], float]] = field(default_factory=list)
    mode: str = "pure"
    """How the candidates ran: ``pure`` (proposals released) or ``hybrid`` (through the
    safety layer)."""
    per: str = "tier"

    @property
    def simulated_days(self) -> int:
        return self.evaluations * self.train_replications * self.days

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record of the tuning (the search log left out)."""
        return {
            "policy": self.policy,
            "params": self.params,
            "coordinates": self.coordinates,
            "train_cost_per_day": float(self.train_cost_per_day),
            "evaluations": int(self.evaluations),
            "train_replications": int(self.train_replications),
            "days": int(self.days),
            "mode": self.mode,
            "per": self.per,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "tuning") -> TuneResult:
        """Inverse of :meth:`to_dict`; a missing or mistyped field raises ValueError
        naming ``source`` and the field."""
        kinds = {
            "policy": str,
            "params": dict,
            "coordinates": dict,
            "train_cost_per_day": (int, float),
            "evaluations": int,
            "train_replications": int,
            "days": int,
            "mode": str,
            "per": str,
        }
        for name, kind in kinds.items():
            if name not in data:
                raise ValueError(f"{source}: field {name!r} is missing")
            if not isinstance(data[name], kind) or isinstance(data[name], bool):
                raise ValueError(
                    f"{source}: field {name!r} must be {getattr(kind, '__name__', 'a number')}, "
                    f"got {data[name]!r}"
                )
        return cls(
            data["policy"],
            {k: dict(v) for k, v in data["params"].items()},
            dict(data["coordinates"]),
            float(data["train_cost_per_day"]),
            data["evaluations"],
            data["train_replications"],
            data["days"],
            mode=data["mode"],
            per=data["per"],
        )


def params_from_coordinates(
    policy: str, layout: Layout, coords: dict[str, float]
) -> dict[str, dict]:
    """Per-node parameters from search coordinates ``{"z:TIER": z, "k:TIER": k}`` or
    ``{"z:NODE": z, ...}`` (a node's coordinate over its tier's; 1.645 and 1 if neither)."""
    st = streams_of(layout)
    fs = flow_stats(layout, st)
    lead = fs.echelon_lead if policy == "echelon-base-stock" else fs.lead

    def coordinate(name: str, node: int, default: float) -> float:
        nid, tier = layout.node_ids[node], layout.tier[node]
        return coords.get(f"{name}:{nid}", coords.get(f"{name}:{tier}", default))

    z = np.array([coordinate("z", n, 1.645) for n in st.node])
    k = np.array([coordinate("k", n, 1.0) for n in st.node])
    level = np.maximum(fs.mean * lead + z * np.sqrt(lead * fs.var + fs.mean**2 * fs.lead_var), 0.0)
    return params_from_level_and_quantity(policy, layout, level, eoq(layout) * k)


def search_space(policy: str, layout: Layout, per: str = "tier") -> dict[str, tuple[float, float]]:
    """The coordinates searched for ``policy`` and their intervals (``per``: one per
    tier, upstream first, or one per node in the layout's order)."""
    if per not in PER:
        raise ValueError(f"per must be one of {', '.join(PER)}, got {per!r}")
    if per == "tier":
        tiers = ("supplier", "manufacturer", "distributor")
        names = [t for t in tiers if (layout.tier == t).any()]
    else:
        names = list(layout.node_ids)
    space = {f"z:{t}": Z_RANGE for t in names}
    if policy in ("sS", "sQ", "min-stock"):
        space |= {f"k:{t}": K_RANGE for t in names}
    return space


def golden_evaluations(width: float, tolerance: float) -> int:
    """How many points :func:`_golden` evaluates on an interval of ``width``."""
    if width <= tolerance:
        return 2
    return 2 + math.ceil(math.log(tolerance / width) / math.log(_GOLDEN) - 1e-12)


def max_evaluations(
    policy: str, layout: Layout, sweeps: int = 2, tolerance: float = 0.02, per: str = "tier"
) -> int:
    """An upper bound on :func:`tune`'s ``evaluations`` (repeated points are not
    simulated again, so the search may use fewer): the start point plus every
    golden-section point of every coordinate in every sweep."""
    space = search_space(policy, layout, per)
    per_sweep = sum(golden_evaluations(hi - lo, tolerance) for lo, hi in space.values())
    return 1 + sweeps * per_sweep


def tune(
    scenario: Scenario,
    policy: str,
    train_replications: int = 16,
    days: int | None = None,
    sweeps: int = 2,
    tolerance: float = 0.02,
    progress: Callable[[int, float], None] | None = None,
    *,
    mode: str = "pure",
    solver: str = "highspy",
    per: str = "tier",
    start: Mapping[str, float] | None = None,
) -> TuneResult:
    """Tune ``policy`` on ``scenario`` (see module doc); ``tolerance`` is the width at
    which a golden-section search stops, in coordinate units. ``mode``: run every
    candidate pure or through the safety layer (backend ``solver``); ``per``: one
    coordinate per ``tier`` or per ``node``; ``start``: the coordinates to start from
    (those of this search space; the others are ignored), e.g. with ``sweeps=0`` the
    cost of given coordinates in one evaluation."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    sim = Simulator(scenario, days=days)
    layout = sim.layout
    reps = list(range(TRAIN_BASE, TRAIN_BASE + train_replications))
    state0, exo = sim.reset(reps)  # draw the training streams once
    del state0
    space = search_space(policy, layout, per)
    coords = {c: (1.645 if c.startswith("z:") else 1.0) for c in space}
    coords |= {c: float(v) for c, v in (start or {}).items() if c in space}
    history: list[tuple[dict[str, float], float]] = []
    cache: dict[tuple, float] = {}

    def cost(point: dict[str, float]) -> float:
        key = tuple(round(point[c], 6) for c in space)
        if key not in cache:
            params = params_from_coordinates(policy, layout, point)
            cache[key] = params_cost(sim, policy, params, exo, mode=mode, solver=solver)
            history.append((dict(point), cache[key]))
            if progress is not None:
                progress(len(history), cache[key])
        return cache[key]

    best = cost(coords)
    for _ in range(sweeps):
        for name, (lo, hi) in space.items():

            def along(x: float, name: str = name, base: dict = coords) -> float:
                return cost(base | {name: x})

            x, fx = _golden(along, lo, hi, tolerance)
            if fx < best:
                best, coords = fx, coords | {name: x}
    return TuneResult(
        policy,
        params_from_coordinates(policy, layout, coords),
        coords,
        best,
        len(history),
        train_replications,
        sim.days,
        history,
        mode,
        per,
    )


def params_cost(
    sim: Simulator,
    policy: str,
    params: Mapping[str, Any],
    exo: Any,
    *,
    mode: str = "pure",
    solver: str = "highspy",
) -> float:
    """Mean cost per day ($/day) of ``policy`` with per-node ``params`` on the drawn
    replications ``exo`` of ``sim``, run in ``mode`` (through the safety layer, backend
    ``solver``, when ``hybrid``): what one evaluation of :func:`tune` computes."""
    from fedinv.sim.run import mean_cost_per_day  # pandas: off the CLI's start-up path

    layout = sim.layout
    pol = for_mode(
        make_policy(policy, layout, params),
        mode,
        layout,
        backend=solver,
        outages=sim.scenario.outages,
    )
    return float(mean_cost_per_day(sim, pol, exo.replications, exo).mean())


def _golden(f: Callable[[float], float], lo: float, hi: float, tol: float) -> tuple[float, float]:
    """Minimize a unimodal ``f`` on ``[lo, hi]`` by golden-section search."""
    a, b = lo, hi
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = f(d)
    return (c, fc) if fc <= fd else (d, fd)


def with_seed(scenario: Scenario, seed: int | None) -> Scenario:
    return scenario if seed is None else replace(scenario, seed=int(seed))
