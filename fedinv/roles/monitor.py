"""The Analytics Monitor (docs/roles.md): per organization, rolling KPIs and drift
detectors on demand and lead-time residuals, raising alerts as records.

Everything here is causal: an alert on day ``t`` uses only what was observable by the end
of day ``t`` (a shipment's lead time once it has arrived, or how overdue it is; delay
notices; the day's demand), so running the detectors over a finished run's arrays gives
the alerts an online monitor would have raised day by day.

**Demand.** Per customer node and day, the standardized residual against the demand
plan -- the mean the node's policy was set for: the scenario's demand model with its
weekly profile, annual seasonality and promotions, without surges --
``z_t = (d_t - m_t) / s_t`` with ``s_t`` the model's standard deviation at mean ``m_t``
(Poisson ``sqrt m``, negative binomial ``sqrt(m + m^2 / dispersion)``, ...). A two-sided
CUSUM, ``S+ = max(0, S+ + z - k)``, ``S- = max(0, S- - z - k)``, alerts when either
exceeds ``h`` (:class:`MonitorConfig` ``demand_k``, ``demand_h``), then restarts at 0.
The same CUSUM runs on each organization's total customer demand (residuals summed over
its customer nodes, standardized by the square root of their summed variances;
threshold ``org_demand_h``): a shift that moves all of an organization's markets is seen
``sqrt(n)`` times sooner than at one node.

**Lead time.** Per lane (the buyer's organization watches it), each shipment gives its
evidence once: at arrival, ``r = (arrival - expected) / sd`` with ``expected = ship day +
E[L] + announced extra delay`` and ``E[L]``, ``sd`` the exact mean and standard deviation
of the lane's lead-time law (``sd`` at least half a day); or, if it has not arrived
``overdue_sd`` standard deviations past its expected day, on that day, with its lower
bound ``r = (day - expected) / sd`` (an overdue shipment counts before it lands, and a
very late one cannot outweigh the others). A day's evidence is the sum of its
shipments' ``r - k``; a one-sided CUSUM ``S = max(0, S + evidence)`` alerts above ``h``
(``lead_k``, ``lead_h``) and restarts.

Both alerts are ``retrain`` alerts (the policy's inputs moved). **Policy degraded**: an
organization's fill rate over the last ``window_days`` days falls more than
``degraded_points`` below its fill rate over the ``window_days`` before them (alerted on
the day it first does).

Thresholds (defaults, measured by ``python -m fedinv.bench.roles monitor``; docs/roles.md):
``demand_k = 0.5``, ``demand_h = 12``, ``org_demand_h = 8``, ``lead_k = 0.75``,
``lead_h = 3``, ``overdue_sd = 1.25``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from fedinv.model.layout import Layout
from fedinv.model.network import DemandModel, Scenario
from fedinv.sim.exogenous import Exogenous, draw_exogenous
from fedinv.sim.simulator import RECORD_FIELDS, Simulator

ALERT_COLUMNS = (
    "replication",
    "day",
    "organization",
    "node",
    "lane",
    "kind",
    "metric",
    "value",
    "threshold",
)
"""One row per alert: ``kind`` ``retrain`` or ``policy_degraded``; ``metric``
``demand_up``, ``demand_down`` (a node), ``org_demand_up``, ``org_demand_down`` (an
organization's total; ``node`` empty), ``lead_time`` (``lane`` set) or ``fill_rate``;
``value`` the statistic that crossed ``threshold`` (CUSUM units of standard
deviations, or a fill rate)."""
KPI_COLUMNS = (
    "cost_per_day",
    "fill_rate",
    "stockouts",
    "inventory_turnover",
    "forecast_error",
    "lead_time_error_days",
)
"""Rolling KPIs per organization and day over ``window_days``: $ per day; share of demand
filled on the day; (customer node, day) pairs with unmet demand; annualized turnover
(value delivered / mean stock value); mean absolute demand residual / mean plan; mean
absolute lead-time residual (days) of the shipments that arrived."""


@dataclass(frozen=True)
class MonitorConfig:
    """The monitor's window and detector thresholds (module doc)."""

    window_days: int = 28
    demand_k: float = 0.5
    demand_h: float = 12.0
    org_demand_h: float = 8.0
    lead_k: float = 0.75
    lead_h: float = 3.0
    overdue_sd: float = 1.25
    degraded_points: float = 5.0

    def __post_init__(self) -> None:
        if self.window_days < 1:
            raise ValueError(f"monitor window_days must be >= 1, got {self.window_days}")
        for name in (
            "demand_k",
            "demand_h",
            "org_demand_h",
            "lead_k",
            "lead_h",
            "overdue_sd",
            "degraded_points",
        ):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"monitor {name} must be a finite number >= 0, got {v!r}")


@dataclass
class MonitorRun:
    """A run watched by the monitor: the records ``[D, B, N]`` (as
    :func:`fedinv.sim.run.run_records`), the lane shipments ``[D, B, M]``, the alerts
    (:data:`ALERT_COLUMNS`) and the rolling KPIs (:data:`KPI_COLUMNS` per replication,
    day and organization)."""

    records: dict[str, np.ndarray]
    shipped: np.ndarray
    alerts: pd.DataFrame
    kpis: pd.DataFrame


def demand_plan(scenario: Scenario, layout: Layout, days: int) -> np.ndarray:
    """The planned daily demand mean ``[D, N]`` (units): the demand model's mean without
    surges (the same calendar as the simulator's draw)."""
    calm = replace(scenario, surges=())
    return draw_exogenous(calm, layout, [0], days).demand_mean[0]


def demand_sd(model: DemandModel | None, mean: np.ndarray) -> np.ndarray:
    """The demand model's standard deviation at daily mean ``mean`` (units)."""
    if model is None:
        return np.zeros_like(mean)
    base = model.base_mean if model.base_mean > 0 else 1.0
    if model.history:
        return np.full_like(mean, float(np.std(model.history)))
    match model.distribution:
        case "poisson":
            return np.sqrt(mean)
        case "negative_binomial":
            return np.sqrt(mean + mean * mean / model.dispersion)
        case "normal":
            return model.std * mean / base
        case "uniform":
            return math.sqrt(((model.high - model.low + 1) ** 2 - 1) / 12.0) * mean / base
    return np.zeros_like(mean)


def cusum(
    evidence: np.ndarray, h: float, present: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One-sided CUSUM over axis 0 of ``evidence`` (already less ``k``): ``S_t = max(0,
    S_{t-1} + e_t)``, restarting at 0 after an alarm (``S_t > h``). Days where
    ``present`` is false leave ``S`` unchanged. Returns ``(S, alarm)``, both shaped like
    ``evidence`` (``S`` on an alarm day is the value that crossed)."""
    s = np.zeros(evidence.shape[1:])
    stat = np.zeros_like(evidence)
    alarm = np.zeros(evidence.shape, bool)
    for t in range(evidence.shape[0]):
        new = np.maximum(s + evidence[t], 0.0)
        if present is not None:
            new = np.where(present[t], new, s)
        stat[t] = new
        alarm[t] = new > h
        s = np.where(alarm[t], 0.0, new)
    return stat, alarm


def demand_residuals(
    records: dict[str, np.ndarray], scenario: Scenario, layout: Layout
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(z, z_org, plan)``: standardized demand residuals ``[D, B, N]`` (0 at nodes
    without demand), those of each organization's total customer demand ``[D, B, O]``
    (0 for an organization without customers) and the plan ``[D, N]``."""
    days = records["demand"].shape[0]
    plan = demand_plan(scenario, layout, days)
    sd = np.zeros_like(plan)
    for i, node in enumerate(layout.network.nodes):
        sd[:, i] = demand_sd(node.demand, plan[:, i])
    z = np.where(
        sd[:, None, :] > 0,
        (records["demand"] - plan[:, None, :]) / np.maximum(sd, 1e-12)[:, None, :],
        0.0,
    )
    org = np.eye(len(layout.org_ids))[layout.node_org] * layout.customer[:, None]  # [N, O]
    var_org = (sd * sd) @ org
    resid_org = (records["demand"] - plan[:, None, :]) @ org
    z_org = np.where(
        var_org[:, None, :] > 0, resid_org / np.sqrt(np.maximum(var_org, 1e-12))[:, None, :], 0.0
    )
    return z, z_org, plan


def lead_evidence(
    shipped: np.ndarray, exo: Exogenous, layout: Layout, overdue_sd: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per lane and day ``[D, B, M]``: ``(residual sum, count, absolute error days,
    arrivals)`` of the shipments that give their evidence that day (module doc), and
    the absolute residual (days) and count of the ones that arrived."""
    days, b, m = shipped.shape
    mean = np.array([ln.lead_time.mean_days for ln in layout.network.lanes])
    sd = np.maximum(np.sqrt([ln.lead_time.variance_days for ln in layout.network.lanes]), 0.5)
    s_day = np.arange(days)[:, None, None]
    lead = exo.lead.transpose(1, 0, 2)[:days]  # [D, B, M] by ship day
    extra = exo.extra_delay.transpose(1, 0, 2)[:days]
    expected = s_day + mean + extra
    arrival = s_day + lead
    overdue_day = np.ceil(expected + overdue_sd * sd - 1e-9)
    on_arrival = arrival <= overdue_day
    day = np.where(on_arrival, arrival, overdue_day).astype(int)
    r = (day - expected) / sd  # on arrival the residual; overdue its lower bound
    total = np.zeros((days, b, m))
    count = np.zeros((days, b, m))
    abs_err = np.zeros((days, b, m))
    arrivals = np.zeros((days, b, m))
    real = (shipped > 1e-9) & (day < days)
    d_idx, b_idx, m_idx = np.nonzero(real)
    at = day[d_idx, b_idx, m_idx]
    np.add.at(total, (at, b_idx, m_idx), r[d_idx, b_idx, m_idx])
    np.add.at(count, (at, b_idx, m_idx), 1.0)
    ok = on_arrival[d_idx, b_idx, m_idx]
    where = (at[ok], b_idx[ok], m_idx[ok])
    err = np.abs(arrival - expected)[d_idx, b_idx, m_idx][ok]
    np.add.at(abs_err, where, err)
    np.add.at(arrivals, where, 1.0)
    return total, count, abs_err, arrivals


def watch(
    sim: Simulator,
    policy: Any,
    replications: Sequence[int],
    config: MonitorConfig | None = None,
    exogenous: Exogenous | None = None,
    plan_scenario: Scenario | None = None,
) -> MonitorRun:
    """Run ``policy`` on ``replications`` (or on the pre-drawn ``exogenous`` streams,
    e.g. with a planted shift) and watch it: records, alerts, rolling KPIs.
    ``plan_scenario``: the scenario whose demand model is the plan (default the
    simulated one)."""
    cfg = config or MonitorConfig()
    state, exo = sim.reset(list(replications), exogenous=exogenous)
    days = sim.days
    records = {k: np.empty((days, exo.batch, sim.layout.num_nodes)) for k in RECORD_FIELDS}
    shipped = np.zeros((days, exo.batch, sim.layout.num_lanes))
    for t in range(days):
        state, rec = sim.step(state, exo, policy.act(state))
        for k in RECORD_FIELDS:
            records[k][t] = rec[k]
        shipped[t] = state.shipped  # the evening's shipments (the morning keeps them)
    alerts, kpis = detect(records, shipped, exo, plan_scenario or sim.scenario, sim.layout, cfg)
    return MonitorRun(records, shipped, alerts, kpis)


def detect(
    records: dict[str, np.ndarray],
    shipped: np.ndarray,
    exo: Exogenous,
    scenario: Scenario,
    layout: Layout,
    config: MonitorConfig | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The alerts (:data:`ALERT_COLUMNS`) and rolling KPIs of a run's arrays."""
    cfg = config or MonitorConfig()
    reps = list(exo.replications)
    orgs = layout.org_ids
    rows: list[dict[str, Any]] = []
    z, z_org, plan = demand_residuals(records, scenario, layout)
    rows.extend(demand_alerts(z, z_org, layout, reps, cfg))
    total, count, abs_err, arrivals = lead_evidence(shipped, exo, layout, cfg.overdue_sd)
    stat, alarm = cusum(total - cfg.lead_k * count, cfg.lead_h, present=count > 0)
    for t, b, m in zip(*np.nonzero(alarm), strict=True):
        dst = int(layout.lane_dst[m])
        rows.append(
            _alert(
                reps[b],
                t,
                orgs[layout.lane_org[m]],
                layout.node_ids[dst],
                layout.lane_ids[m],
                "retrain",
                "lead_time",
                stat[t, b, m],
                cfg.lead_h,
            )
        )
    kpis = rolling_kpis(records, plan, abs_err, arrivals, layout, reps, cfg.window_days)
    rows.extend(_degraded(kpis, cfg))
    alerts = pd.DataFrame(rows, columns=list(ALERT_COLUMNS))
    return alerts.sort_values(["replication", "day"], kind="stable").reset_index(drop=True), kpis


def demand_alerts(
    z: np.ndarray,
    z_org: np.ndarray,
    layout: Layout,
    reps: Sequence[int],
    cfg: MonitorConfig,
) -> list[dict[str, Any]]:
    """The demand CUSUMs' ``retrain`` alerts (:data:`ALERT_COLUMNS` rows) of the
    residuals of :func:`demand_residuals` (``z [D, B, N]``, ``z_org [D, B, O]``); also
    run by a decision service on the demand it recorded (docs/service.md)."""
    orgs = layout.org_ids
    rows: list[dict[str, Any]] = []
    cust = layout.customer
    has_customers = np.isin(np.arange(len(orgs)), layout.node_org[cust])
    for metric, sign in (("demand_up", 1.0), ("demand_down", -1.0)):
        stat, alarm = cusum(sign * z_org - cfg.demand_k, cfg.org_demand_h)
        for t, b, o in zip(*np.nonzero(alarm & has_customers), strict=True):
            rows.append(
                _alert(
                    reps[b],
                    t,
                    orgs[o],
                    "",
                    "",
                    "retrain",
                    "org_" + metric,
                    stat[t, b, o],
                    cfg.org_demand_h,
                )
            )
        stat, alarm = cusum(sign * z[:, :, cust] - cfg.demand_k, cfg.demand_h)
        for t, b, j in zip(*np.nonzero(alarm), strict=True):
            node = int(np.flatnonzero(cust)[j])
            rows.append(
                _alert(
                    reps[b],
                    t,
                    orgs[layout.node_org[node]],
                    layout.node_ids[node],
                    "",
                    "retrain",
                    metric,
                    stat[t, b, j],
                    cfg.demand_h,
                )
            )
    return rows


def _alert(rep, day, org, node, lane, kind, metric, value, threshold) -> dict[str, Any]:
    return {
        "replication": int(rep),
        "day": int(day),
        "organization": org,
        "node": node,
        "lane": lane,
        "kind": kind,
        "metric": metric,
        "value": float(value),
        "threshold": float(threshold),
    }


def rolling_kpis(
    records: dict[str, np.ndarray],
    plan: np.ndarray,
    lead_abs_err: np.ndarray,
    lead_arrivals: np.ndarray,
    layout: Layout,
    reps: Sequence[int],
    window: int,
) -> pd.DataFrame:
    """:data:`KPI_COLUMNS` per replication, day and organization over the trailing
    ``window`` days (fewer at the start)."""
    days, b, _ = records["demand"].shape
    cust = layout.customer
    frames = []
    for o, org in enumerate(layout.org_ids):
        nodes = layout.node_org == o
        cn = nodes & cust
        lanes = layout.lane_org == o
        daily = {
            "cost": records["total_cost"][:, :, nodes].sum(axis=2),
            "demand": records["demand"][:, :, cn].sum(axis=2),
            "filled": records["filled"][:, :, cn].sum(axis=2),
            "stockouts": ((records["demand"] - records["filled"])[:, :, cn] > 1e-9).sum(axis=2),
            "cogs": (records["sold"][:, :, nodes] * layout.unit_value[nodes]).sum(axis=2),
            "value": records["inventory_value"][:, :, nodes].sum(axis=2),
            "abs_resid": np.abs(records["demand"][:, :, cn] - plan[:, None, cn]).sum(axis=2),
            "plan": np.broadcast_to(plan[:, None, cn].sum(axis=2), (days, b)),
            "lead_err": lead_abs_err[:, :, lanes].sum(axis=2),
            "arrivals": lead_arrivals[:, :, lanes].sum(axis=2),
        }
        roll = {k: _rolling_sum(v, window) for k, v in daily.items()}
        n = np.minimum(np.arange(1, days + 1), window)[:, None]
        kpi = {
            "cost_per_day": roll["cost"] / n,
            "fill_rate": np.where(
                roll["demand"] > 0, roll["filled"] / np.maximum(roll["demand"], 1e-12), np.nan
            ),
            "stockouts": roll["stockouts"],
            "inventory_turnover": np.where(
                roll["value"] > 0,
                roll["cogs"] / np.maximum(roll["value"] / n, 1e-12) * 365.0 / n,
                np.nan,
            ),
            "forecast_error": np.where(
                roll["plan"] > 0, roll["abs_resid"] / np.maximum(roll["plan"], 1e-12), np.nan
            ),
            "lead_time_error_days": np.where(
                roll["arrivals"] > 0, roll["lead_err"] / np.maximum(roll["arrivals"], 1e-12), np.nan
            ),
        }
        frame = pd.DataFrame({k: v.T.reshape(-1) for k, v in kpi.items()})
        frame.insert(0, "organization", org)
        frame.insert(0, "day", np.tile(np.arange(days), b))
        frame.insert(0, "replication", np.repeat(np.asarray(reps), days))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _rolling_sum(x: np.ndarray, window: int) -> np.ndarray:
    c = np.cumsum(x, axis=0)
    out = c.copy()
    out[window:] = c[window:] - c[:-window]
    return out


def _degraded(kpis: pd.DataFrame, cfg: MonitorConfig) -> list[dict[str, Any]]:
    rows = []
    w = cfg.window_days
    for (rep, org), g in kpis.groupby(["replication", "organization"], sort=False):
        fr = g["fill_rate"].to_numpy()
        if np.isnan(fr).all():
            continue
        before = np.full_like(fr, np.nan)
        before[w:] = fr[:-w]
        below = fr < before - cfg.degraded_points / 100.0
        first = below & ~np.concatenate([[False], below[:-1]])
        for t in np.flatnonzero(first):
            rows.append(
                _alert(
                    rep,
                    g["day"].iloc[t],
                    org,
                    "",
                    "",
                    "policy_degraded",
                    "fill_rate",
                    fr[t],
                    before[t] - cfg.degraded_points / 100.0,
                )
            )
    return rows
