"""The Analytics Monitor (docs/roles.md): per organization, rolling KPIs and drift
detectors on demand residuals and lane lead times, raising alerts as records.

Everything here is causal: an alert on day ``t`` uses only what was observable by the end
of day ``t`` (a shipment's lead time once it has arrived, or only that it has not arrived
yet; the part of its extra delay announced by then; the day's demand), so running the
detectors over a finished run's arrays gives the alerts an online monitor would have
raised day by day.

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

**Lead time.** Per lane (the buyer's organization watches it), a CUSUM of the exact
log-likelihood ratio (nats) of what the monitor sees of each shipment under a lead-time
law ``rho`` times slower (``lead_rho``, :func:`lead_alternative`: each whole day ``l``
read as ``(l - 1, l]``, stretched to ``(rho (l - 1), rho l]`` and rounded up) against
the lane's own law (:meth:`fedinv.model.network.LeadTime.pmf`, the exact law the draws
come from), both shifted by the part of the shipment's extra delay announced so far. A
shipment in transit at the end of its ``a``-th day adds ``log(1 - h1(a)) - log(1 -
h0(a))``; on the morning it arrives, at age ``a``, ``log h1(a) - log h0(a)``, with ``h(a)
= P(L = a) / P(L >= a)`` the discrete hazard (1 past the law's support), clipped to
``[lead_floor, 1 - lead_floor]`` (:data:`LEAD_HAZARD_FLOOR` = 1e-6: an event a law rules
out weighs 13.8 nats, not infinity). A shipment's terms sum to ``log p1(L) / p0(L)`` once
it lands, but they count day by day while it travels: a shipment older than any
nominal lead time gives ~13.8 nats that day, before it lands -- the evidence sparse
(s,S) shipments offer. Shipments in flight together add their terms the same day;
``S = max(0, S + day's sum)`` alerts above ``lead_h`` and restarts at 0. Under the
nominal law the statistic runs on average about ``e^h`` days or more between false
alarms (the CUSUM of a likelihood ratio); one shipment the nominal law rules out is
enough to alert (13.8 > 8): a lane whose real lead times stray outside the scenario's
law needs a larger ``lead_floor`` (1e-3: 6.9 nats, two such shipments).

Both alerts are ``retrain`` alerts (the policy's inputs moved). **Policy degraded**: an
organization's fill rate over the last ``window_days`` days falls more than
``degraded_points`` below its fill rate over the ``window_days`` before them (alerted on
the day it first does).

Thresholds (defaults, measured by ``python -m fedinv.bench.roles monitor``; docs/roles.md):
``demand_k = 0.5``, ``demand_h = 12``, ``org_demand_h = 8``; ``lead_rho = 2`` (the
design alternative: 1.5 detected the same lanes as fast, 3 slower under (s,S)),
``lead_h = 8`` nats (chosen on the no-drift replications 0-19 of electronics-5r under
base-stock and (s,S): 0.02 false lead-time alerts per organization-year, where ``h = 6``
gave 0.25-0.53 and ``h = 7`` 0.09-0.19; checked on replications 100-119),
``lead_floor = 1e-6``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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
``value`` the statistic that crossed ``threshold`` (the demand CUSUMs in standard
deviations, the lead-time CUSUM in nats, or a fill rate)."""
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


LEAD_HAZARD_FLOOR = 1e-6
"""Default floor on a daily arrival hazard and on its complement (both laws), so that an
event the law rules out adds ``log(1e-6) = -13.8`` nats rather than minus infinity."""


@dataclass(frozen=True)
class MonitorConfig:
    """The monitor's window and detector thresholds (module doc)."""

    window_days: int = 28
    demand_k: float = 0.5
    demand_h: float = 12.0
    org_demand_h: float = 8.0
    lead_rho: float = 2.0
    lead_h: float = 8.0
    lead_floor: float = LEAD_HAZARD_FLOOR
    degraded_points: float = 5.0

    def __post_init__(self) -> None:
        if self.window_days < 1:
            raise ValueError(f"monitor window_days must be >= 1, got {self.window_days}")
        for name in (
            "demand_k",
            "demand_h",
            "org_demand_h",
            "lead_rho",
            "lead_h",
            "lead_floor",
            "degraded_points",
        ):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"monitor {name} must be a finite number >= 0, got {v!r}")
        if self.lead_rho <= 1:
            raise ValueError(f"monitor lead_rho must be > 1 (a slower law), got {self.lead_rho}")
        if not 0 < self.lead_floor < 0.5:
            raise ValueError(f"monitor lead_floor must be in (0, 0.5), got {self.lead_floor}")


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


def lead_alternative(pmf: np.ndarray, rho: float) -> np.ndarray:
    """The lead-time law ``rho`` times slower than ``pmf`` (indexed by days): each whole
    day ``l`` read as the interval ``(l - 1, l]``, stretched to ``(rho (l - 1), rho l]``
    and rounded up, mass spread evenly (``P1(a) = F0(a / rho) - F0((a - 1) / rho)`` with
    ``F0`` the CDF linearly interpolated between whole days). ``rho = 1`` returns
    ``pmf``; a deterministic 4 days at ``rho = 2`` becomes 7 or 8 days, half each."""
    cdf = np.concatenate([[0.0], np.cumsum(pmf[1:])])
    top = int(math.ceil(rho * (len(pmf) - 1) - 1e-9))
    a = np.arange(top + 1)
    out = np.diff(np.interp(a / rho, np.arange(len(pmf)), cdf), prepend=0.0)
    return np.clip(out, 0.0, None)


def lead_llr_terms(
    p0: np.ndarray, p1: np.ndarray, ages: int, floor: float = LEAD_HAZARD_FLOOR
) -> tuple[np.ndarray, np.ndarray]:
    """``(survive, arrive)``, each ``[ages + 1]`` indexed by a shipment's age ``a`` in
    days (0 at age 0): the log-likelihood ratio, nats, of the alternative law ``p1``
    against the nominal ``p0`` for a shipment still travelling at the end of its ``a``-th
    day, ``log(1 - h1(a)) - log(1 - h0(a))``, or arriving that morning, ``log h1(a) -
    log h0(a)``, with the discrete hazard ``h(a) = p(a) / P(L >= a)`` (1 past the law's
    support) clipped to ``[floor, 1 - floor]``."""

    def hazard(p: np.ndarray) -> np.ndarray:
        tail = np.cumsum(p[::-1])[::-1]  # P(L >= a), over the whole law
        h = np.where(tail > 1e-12, p / np.maximum(tail, 1e-300), 1.0)
        h = np.concatenate([h, np.ones(max(ages + 1 - len(h), 0))])[: ages + 1]
        return np.clip(h, floor, 1.0 - floor)

    h0, h1 = hazard(np.asarray(p0, float)), hazard(np.asarray(p1, float))
    survive = np.log1p(-h1) - np.log1p(-h0)
    arrive = np.log(h1) - np.log(h0)
    survive[0] = arrive[0] = 0.0
    return survive, arrive


def lead_llr(
    shipped: np.ndarray,
    exo: Exogenous,
    layout: Layout,
    rho: float = 2.0,
    floor: float = LEAD_HAZARD_FLOOR,
    alternative: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Per lane and day ``[D, B, M]``, nats: the summed log-likelihood ratio terms
    (:func:`lead_llr_terms`) of the lane's shipments observed that day -- each one
    shipped before and not yet counted as arrived, at its age that day -- of the lane's
    law slowed ``rho`` times (:func:`lead_alternative`; or ``alternative(pmf)``, e.g.
    a known drifted law) against the law itself, both shifted by the part of the
    shipment's extra delay announced by then."""
    days, b, m = shipped.shape
    lead = exo.lead.transpose(1, 0, 2)[:days]  # [D, B, M] by ship day
    extra = exo.extra_delay.transpose(1, 0, 2)[:days].astype(int)
    ages = int(max(layout.max_lead, lead.max(initial=1)))
    e_max = int(extra.max(initial=0))
    survive = np.zeros((m, e_max + 1, ages + 1))
    arrive = np.zeros((m, e_max + 1, ages + 1))
    for j, lane in enumerate(layout.network.lanes):
        p0 = lane.lead_time.pmf()
        p1 = alternative(p0) if alternative is not None else lead_alternative(p0, rho)
        s, r = lead_llr_terms(p0, p1, ages, floor)
        for e in range(e_max + 1):  # a law shifted by e days: its terms e days later
            survive[j, e, e:] = s[: ages + 1 - e]
            arrive[j, e, e:] = r[: ages + 1 - e]
    # (lane, notice lag, extra days [D, B] by ship day, announced that many days after)
    parts = [(j, lag, part.T[:days].astype(int)) for j, lag, part in exo.delay_parts]
    lanes = np.arange(m)
    evidence = np.zeros((days, b, m))
    for a in range(1, min(ages, days - 1) + 1):
        moving = (shipped[: days - a] > 1e-9) & (lead[: days - a] >= a)
        if not moving.any():
            continue
        known = extra[: days - a].copy()
        for j, lag, part in parts:
            if lag > a:
                known[:, :, j] -= part[: days - a]
        known = np.clip(known, 0, e_max)
        term = np.where(
            lead[: days - a] == a,
            arrive[:, :, a][lanes, known],
            survive[:, :, a][lanes, known],
        )
        evidence[a:] += np.where(moving, term, 0.0)
    return evidence


def lead_errors(
    shipped: np.ndarray, exo: Exogenous, layout: Layout
) -> tuple[np.ndarray, np.ndarray]:
    """Per lane and arrival day ``[D, B, M]``: the summed absolute lead-time residual,
    days, ``|arrival - (ship day + E[L] + extra delay)|``, of the shipments that arrived,
    and their count (``E[L]`` the exact mean of the lane's law)."""
    days, b, m = shipped.shape
    mean = np.array([ln.lead_time.mean_days for ln in layout.network.lanes])
    lead = exo.lead.transpose(1, 0, 2)[:days]
    extra = exo.extra_delay.transpose(1, 0, 2)[:days]
    arrival = np.arange(days)[:, None, None] + lead
    abs_err = np.zeros((days, b, m))
    arrivals = np.zeros((days, b, m))
    d_idx, b_idx, m_idx = np.nonzero((shipped > 1e-9) & (arrival < days))
    at = (arrival[d_idx, b_idx, m_idx], b_idx, m_idx)
    np.add.at(abs_err, at, np.abs(lead - mean - extra)[d_idx, b_idx, m_idx])
    np.add.at(arrivals, at, 1.0)
    return abs_err, arrivals


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
    llr = lead_llr(shipped, exo, layout, cfg.lead_rho, cfg.lead_floor)
    stat, alarm = cusum(llr, cfg.lead_h)
    abs_err, arrivals = lead_errors(shipped, exo, layout)
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


def alert_summary(
    alerts: pd.DataFrame, layout: Layout, days: int, drift_day: int | None = None
) -> dict[str, Any]:
    """One run's retrain alerts (:data:`ALERT_COLUMNS`, one replication) in a study's
    terms: ``retrain_alerts`` (count), ``retrain_per_org_year`` (per organization and 365
    days), ``retrain_by_org`` (count per organization), and with a ``drift_day`` the
    alerts before it (``retrain_before_drift``) and, per alerting metric and target
    (``METRIC:NODE``, ``org_METRIC:ORGANIZATION``, ``lead_time:LANE``), the days from the
    drift day to its first alert on or after it (``first_after``; targets that never
    alert then are absent)."""
    retrain = alerts[alerts.kind == "retrain"]
    by_org = retrain.groupby("organization").size()
    out: dict[str, Any] = {
        "retrain_alerts": int(len(retrain)),
        "retrain_per_org_year": float(len(retrain) / (len(layout.org_ids) * days / 365.0)),
        "retrain_by_org": {o: int(by_org.get(o, 0)) for o in layout.org_ids},
    }
    if drift_day is None:
        return out
    out["retrain_before_drift"] = int((retrain.day < drift_day).sum())
    after = retrain[retrain.day >= drift_day]
    target = np.where(
        after.metric == "lead_time",
        after.lane,
        np.where(after.metric.str.startswith("org_"), after.organization, after.node),
    )
    first = (after.day - drift_day).groupby([after.metric.to_numpy(), target]).min()
    out["first_after"] = {f"{m}:{t}": int(d) for (m, t), d in first.items()}
    return out
