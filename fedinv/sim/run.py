"""Run a policy on a scenario: the daily records as a DataFrame, and the metrics."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from fedinv.hybrid import (  # noqa: F401 (MODES re-exported for callers)
    MODES,
    for_mode,
    per_org_policy,
)
from fedinv.model.network import Scenario
from fedinv.policies.projector import check_orders
from fedinv.sim.exogenous import Exogenous
from fedinv.sim.metrics import (
    monthly_metrics,
    node_metrics,
    projection_metrics,
    replication_metrics,
    summarize,
)
from fedinv.sim.simulator import RECORD_FIELDS, Decision, Simulator

DAILY_COLUMNS = (
    "on_hand",
    "backlog",
    "demand",
    "filled",
    "lost",
    "ordered",
    "orders_received",
    "shipped",
    "in_transit",
    "holding_cost",
    "penalty_cost",
    "purchase_cost",
    "shipping_cost",
    "ordering_cost",
    "transfer_cost",
    "transferred",
    "total_cost",
    "violations",
)


@dataclass
class SimulationResult:
    """What :func:`simulate` returns. ``daily``: one row per (replication, day, node);
    ``per_replication``: network metrics per replication; ``summary``: their mean and
    95% interval; ``nodes`` and ``monthly``: per node and per month breakdowns."""

    scenario: Scenario
    policy: str
    replications: tuple[int, ...]
    days: int
    daily: pd.DataFrame
    per_replication: pd.DataFrame
    summary: pd.DataFrame
    nodes: pd.DataFrame
    monthly: pd.DataFrame
    mode: str = "pure"
    relaxations: pd.DataFrame | None = None
    """Hybrid mode: one row per relaxed constraint (:func:`relaxation_frame`)."""
    solver_events: pd.DataFrame | None = None
    """Hybrid mode: one row per replication and solver event (:func:`solver_event_frame`):
    days the solver needed a cold restart or looser tolerances (no constraint relaxed)."""
    records: dict[str, np.ndarray] | None = None
    """``simulate(..., keep_records=True)``: the run's records (:func:`run_records`, with
    ``shipped``, units shipped per lane and day ``[D, B, M]``), e.g. for the Analytics
    Monitor; else None."""


INFO_PREFIX = "info."
"""Records key prefix of a policy's per-day ``Decision.info`` arrays (``[D, B]``)."""


def run_records(
    sim: Simulator,
    policy,
    replications: Sequence[int],
    on_day: Callable[[int], None] | None = None,
    logs: dict[str, list] | None = None,
    shipped: bool = False,
) -> dict[str, np.ndarray]:
    """Step ``policy`` through the horizon on a batch; records ``[D, B, N]`` per field.

    ``Decision.info`` entries that are numeric ``[B]`` arrays become records
    ``info.<key>`` of shape ``[D, B]`` (e.g. ``info.projection_l1`` in hybrid mode);
    other entries (e.g. ``relaxation_log``) are appended per day to ``logs[key]`` when
    ``logs`` is given. ``shipped``: also ``_shipped``, the evening's shipments per lane
    ``[D, B, M]`` (units; what the Analytics Monitor watches). A policy with
    ``needs_confirmations`` switches on ``sim.confirmations``."""
    if getattr(policy, "needs_confirmations", False):
        sim.confirmations = True
    state, exo = sim.reset(replications)
    days = sim.days
    out: dict[str, np.ndarray] = {}
    who, lanes = _name(policy), sim.layout.lane_ids
    for t in range(days):
        decision = policy.act(state)
        check_orders(_orders(decision), policy=who, day=t, lane_ids=lanes)
        state, rec = sim.step(state, exo, decision)
        if not out:
            out = {k: np.empty((days,) + rec[k].shape) for k in RECORD_FIELDS}
            if shipped:
                out["_shipped"] = np.empty((days,) + state.shipped.shape)
        for k in RECORD_FIELDS:
            out[k][t] = rec[k]
        if shipped:
            out["_shipped"][t] = state.shipped
        for key, value in (getattr(decision, "info", None) or {}).items():
            arr = np.asarray(value) if isinstance(value, np.ndarray) else None
            if arr is not None and arr.shape == (exo.batch,) and arr.dtype.kind in "biuf":
                name = INFO_PREFIX + key
                if name not in out:
                    out[name] = np.full((days, exo.batch), np.nan)
                out[name][t] = arr
            elif logs is not None:
                logs.setdefault(key, []).append(value)
        if on_day is not None:
            on_day(t)
    out["_month"] = np.asarray(exo.calendar.month)
    return out


def mean_cost_per_day(
    sim: Simulator, policy, replications: Sequence[int], exogenous: Exogenous | None = None
) -> np.ndarray:
    """Total network cost per day of each replication (after warm-up), ``[B]`` $: the
    fast path for tuning (no DataFrame). ``exogenous``: streams drawn before, reused; a
    policy with ``needs_confirmations`` switches on ``sim.confirmations``."""
    if getattr(policy, "needs_confirmations", False):
        sim.confirmations = True
    state, exo = sim.reset(replications, exogenous=exogenous)
    warm = sim.scenario.warmup_days
    total = np.zeros(exo.batch)
    who, lanes = _name(policy), sim.layout.lane_ids
    for t in range(sim.days):
        decision = policy.act(state)
        check_orders(_orders(decision), policy=who, day=t, lane_ids=lanes)
        state, rec = sim.step(state, exo, decision)
        if t >= warm:
            total += rec["total_cost"].sum(axis=1)
    return total / max(sim.days - warm, 1)


def _name(policy: Any) -> str:
    return str(getattr(policy, "name", type(policy).__name__))


def _orders(decision: Any) -> np.ndarray:
    return decision.orders if isinstance(decision, Decision) else np.asarray(decision)


def simulate(
    scenario: Scenario,
    policy_factory,
    replications: int = 10,
    seed: int | None = None,
    days: int | None = None,
    first_replication: int = 0,
    progress: bool = False,
    mode: str = "pure",
    solver: str = "pyomo",
    projector_options: Mapping[str, Any] | None = None,
    projection: str = "network",
    on_org_decision: Callable[..., None] | None = None,
    keep_records: bool = False,
) -> SimulationResult:
    """Simulate ``replications`` replications (indices ``first_replication..``) of
    ``scenario`` (seed overridden by ``seed``) for ``days`` days under the policy that
    ``policy_factory(layout)`` builds.

    ``mode`` (:data:`fedinv.hybrid.MODES`): ``pure`` releases the proposals; ``hybrid``
    releases what the safety layer (backend ``solver``: ``pyomo`` or ``highspy``, options
    ``projector_options``) returns; :func:`fedinv.hybrid.for_mode` decides. Hybrid runs
    add the per-replication metrics of :func:`fedinv.sim.metrics.projection_metrics` and
    keep the relaxed constraints in ``result.relaxations``. ``projection``
    (:data:`fedinv.policies.perorg.PROJECTIONS`): ``network`` runs the policy on the whole
    state; ``per-org`` lets every organization decide its lanes from its own view behind
    its own restricted layer, downstream-first (:func:`fedinv.hybrid.per_org_policy`;
    ``on_org_decision(scope, view, decision)`` sees each). A policy that reports
    ``Decision.info["messages"]`` (the Coordination Node, docs/roles.md) adds
    ``messages_per_agent_day`` (messages / (nodes x days)). ``keep_records``: the
    result keeps the records (:attr:`SimulationResult.records`)."""
    if seed is not None:
        scenario = replace(scenario, seed=int(seed))
    sim = Simulator(scenario, days=days)
    if projection == "per-org":
        policy = per_org_policy(
            policy_factory,
            mode,
            sim.layout,
            backend=solver,
            outages=scenario.outages,
            on_decision=on_org_decision,
            **dict(projector_options or {}),
        )
    elif projection == "network":
        policy = for_mode(
            policy_factory(sim.layout),
            mode,
            sim.layout,
            backend=solver,
            outages=scenario.outages,
            **dict(projector_options or {}),
        )
    else:
        raise ValueError(f"unknown projection {projection!r}; choose network or per-org")
    reps = tuple(range(first_replication, first_replication + replications))
    logs: dict[str, list] = {}
    if progress:
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task(f"simulating {scenario.name} ({policy.name})", total=sim.days)
            records = run_records(
                sim,
                policy,
                reps,
                on_day=lambda t: bar.advance(task),
                logs=logs,
                shipped=keep_records,
            )
    else:
        records = run_records(sim, policy, reps, logs=logs, shipped=keep_records)
    month = records.pop("_month")
    lanes_shipped = records.pop("_shipped", None)
    lay = sim.layout
    warm = min(scenario.warmup_days, sim.days - 2)
    per_rep = replication_metrics(records, lay, warm)
    relaxations = solver_events = None
    if INFO_PREFIX + "projection_l1" in records:  # the orders went through a projector
        per_rep = per_rep.join(projection_metrics(records, warm))
        if "info.solver_used" in records:  # share of days HiGHS was called (no fast path)
            per_rep["solver_share"] = records["info.solver_used"][warm:].mean(axis=0)
        dates = _dates(scenario.start_date, sim.days)
        relaxations = relaxation_frame(logs.get("relaxation_log", []), reps, dates)
        solver_events = solver_event_frame(logs.get("solver_event_log", []), reps, dates)
    if INFO_PREFIX + "messages" in records:  # a Coordination Node counted its messages
        per_rep["messages_per_agent_day"] = (
            records[INFO_PREFIX + "messages"][warm:].mean(axis=0) / lay.num_nodes
        )
    per_rep.index = pd.Index(reps, name="replication")
    daily = daily_frame(
        records, lay.node_ids, reps, np.asarray(_dates(scenario.start_date, sim.days))
    )
    nodes = node_metrics(records, lay, warm)
    nodes["replication"] = np.asarray(reps)[nodes["replication"].to_numpy()]
    monthly = monthly_metrics(records, lay, month, warm)
    if len(monthly):
        monthly["replication"] = np.asarray(reps)[monthly["replication"].to_numpy()]
    return SimulationResult(
        scenario,
        policy.name,
        reps,
        sim.days,
        daily,
        per_rep,
        summarize(per_rep),
        nodes,
        monthly,
        mode,
        relaxations,
        solver_events,
        {**records, "shipped": lanes_shipped} if keep_records else None,
    )


RELAXATION_COLUMNS = ("replication", "day", "date", "kind", "target", "amount", "unit", "reason")


def relaxation_frame(
    log: Sequence[Sequence[Any]], reps: Sequence[int], dates: np.ndarray
) -> pd.DataFrame:
    """One row per :class:`fedinv.policies.projector.Relaxation` in the per-day ``log``,
    with the replication index (not the batch row) and the date:
    :data:`RELAXATION_COLUMNS`."""
    rows = [
        {
            "replication": int(reps[r.replication]),
            "day": r.day,
            "date": dates[r.day],
            "kind": r.kind,
            "target": r.target,
            "amount": r.amount,
            "unit": r.unit,
            "reason": r.reason,
        }
        for day in log
        for r in day
    ]
    return pd.DataFrame(rows, columns=list(RELAXATION_COLUMNS))


SOLVER_EVENT_COLUMNS = ("replication", "day", "date", "kind", "detail")


def solver_event_frame(
    log: Sequence[Sequence[Any]], reps: Sequence[int], dates: np.ndarray
) -> pd.DataFrame:
    """One row per replication of each :class:`fedinv.policies.projector.SolverEvent` in
    the per-day ``log``: :data:`SOLVER_EVENT_COLUMNS`."""
    rows = [
        {
            "replication": int(reps[b]),
            "day": e.day,
            "date": dates[e.day],
            "kind": e.kind,
            "detail": e.detail,
        }
        for day in log
        for e in day
        for b in e.replications
    ]
    return pd.DataFrame(rows, columns=list(SOLVER_EVENT_COLUMNS))


def daily_frame(
    records: dict[str, np.ndarray], node_ids: Sequence[str], reps: Sequence[int], dates: np.ndarray
) -> pd.DataFrame:
    """Long frame: one row per (replication, day, node) with :data:`DAILY_COLUMNS`."""
    days, b, n = records["total_cost"].shape
    cols = {c: records[c].transpose(1, 0, 2).reshape(-1) for c in DAILY_COLUMNS}
    frame = pd.DataFrame(
        {
            "replication": np.repeat(np.asarray(reps), days * n),
            "day": np.tile(np.repeat(np.arange(days), n), b),
            "date": np.tile(np.repeat(dates, n), b),
            "node": pd.Categorical(np.tile(np.asarray(node_ids), days * b), categories=node_ids),
            **cols,
        }
    )
    return frame


def _dates(start: str, days: int) -> np.ndarray:
    return np.datetime64(start, "D") + np.arange(days)
