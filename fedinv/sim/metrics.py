"""Metrics of docs/design.md section 4 from a simulation's daily records, and their statistics.

Definitions (per replication; days before ``warmup_days`` are left out):
  * costs: sums of the daily cost columns; ``total_cost_per_day`` is the network's
    total cost per day; ``holding_cost_k_per_month`` is holding cost in $K per month of
    365/12 days (likewise ``penalty_cost_k_per_month``, ``purchase_cost_k_per_month``,
    ``shipping_cost_k_per_month``, ``total_cost_k_per_month``);
  * ``transfer_units_per_day``: units moved on lateral links per day (the Coordination
    Node's transfers, docs/roles.md);
  * ``stockouts_per_month``: (customer-facing node, day) pairs with demand not filled on
    the day, per month; ``internal_stockouts_per_month``: (node, day) pairs with orders
    from downstream left unfilled at the end of the day;
  * ``fill_rate``: demand filled on the day it arrives / demand; ``cycle_service_level``:
    share of (customer node, day) pairs with all of that day's demand filled;
  * ``inventory_turnover``: value of units delivered to customers / mean value of
    on-hand stock (all nodes, components included), x 365 / days;
  * ``bullwhip_ratio``: variance of the daily orders placed by the most upstream tier that
    orders (in units) / variance of total daily customer demand; per tier likewise
    (``bullwhip_<tier>``); ``order_variability``: std of the day-to-day change of a
    node's orders, averaged over nodes;
  * violations of released orders: ``violations_per_month`` (count) and their magnitudes
    (``capacity_violation_units``, ``budget_violation_dollars``, ...);
  * hybrid mode (:func:`projection_metrics`): how far the safety layer moved the
    proposals (``projection_l1_per_day``), its latency (``solve_ms_median``,
    ``solve_ms_p95``), ``solved_share`` and ``relaxations``.
Statistics over replications: mean and the half-width of a Student-t 95% interval.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedinv.model.layout import Layout

DAYS_PER_MONTH = 365.0 / 12.0
TIER_ORDER = ("supplier", "manufacturer", "distributor")
HEADLINE = (
    "total_cost_per_day",
    "holding_cost_k_per_month",
    "stockouts_per_month",
    "fill_rate",
    "inventory_turnover",
    "bullwhip_ratio",
)


def replication_metrics(
    records: dict[str, np.ndarray],
    layout: Layout,
    warmup_days: int = 0,
    end_day: int | None = None,
) -> pd.DataFrame:
    """Network-wide metrics, one row per replication, from records ``[D, B, N]`` over
    days ``warmup_days .. end_day - 1`` (``end_day`` None: to the last day; a window,
    e.g. the year before its last 60 days, where stock the horizon will not sell shows)."""
    r = {k: v[warmup_days:end_day] for k, v in records.items()}
    days = r["total_cost"].shape[0]
    if days < 2:
        total = records["total_cost"].shape[0]
        end = total if end_day is None else end_day
        raise ValueError(f"metrics need at least 2 days, got days {warmup_days}..{end} of {total}")
    months = days / DAYS_PER_MONTH
    cust = layout.customer
    out: dict[str, np.ndarray] = {}
    for col in (
        "total",
        "holding",
        "penalty",
        "purchase",
        "external_purchase",
        "shipping",
        "ordering",
        "transfer",
    ):
        total = r[f"{col}_cost"].sum(axis=(0, 2))
        out[f"{col}_cost_k_per_month"] = total / months / 1000.0
    out["total_cost_per_day"] = r["total_cost"].sum(axis=(0, 2)) / days
    if "transferred" in r:
        out["transfer_units_per_day"] = r["transferred"].sum(axis=(0, 2)) / days
    demand = r["demand"][:, :, cust]
    unfilled = demand - r["filled"][:, :, cust]
    out["stockouts_per_month"] = (unfilled > 1e-9).sum(axis=(0, 2)) / months
    out["internal_stockouts_per_month"] = (r["internal_shortfall"] > 1e-9).sum(axis=(0, 2)) / months
    total_demand = demand.sum(axis=(0, 2))
    out["fill_rate"] = np.where(
        total_demand > 0,
        r["filled"][:, :, cust].sum(axis=(0, 2)) / np.maximum(total_demand, 1e-12),
        1.0,
    )
    out["cycle_service_level"] = (unfilled <= 1e-9).mean(axis=(0, 2))
    cogs = (r["sold"] * layout.unit_value).sum(axis=(0, 2))
    avg_value = r["inventory_value"].sum(axis=2).mean(axis=0)
    # undefined (NaN) where stock carries no value (e.g. textbook instances without prices)
    out["inventory_turnover"] = (
        np.where(avg_value > 0, cogs / np.maximum(avg_value, 1e-12), np.nan) * 365.0 / days
    )
    demand_var = demand.sum(axis=2).var(axis=0, ddof=1)
    ordering_tiers = [t for t in TIER_ORDER if (layout.tier == t).any()]
    top = None
    for tier in ordering_tiers:
        orders = r["ordered"][:, :, layout.tier == tier].sum(axis=2)
        ratio = np.where(
            demand_var > 0, orders.var(axis=0, ddof=1) / np.maximum(demand_var, 1e-12), np.nan
        )
        out[f"bullwhip_{tier}"] = ratio
        top = ratio if top is None else top
    out["bullwhip_ratio"] = top if top is not None else np.full(len(total_demand), np.nan)
    change = np.diff(r["ordered"], axis=0)
    out["order_variability"] = change.std(axis=0, ddof=1).mean(axis=1)
    out["violations_per_month"] = r["violations"].sum(axis=(0, 2)) / months
    for name in ("capacity", "transport", "lot", "storage", "contract"):
        out[f"{name}_violation_units"] = r[f"{name}_violation"].sum(axis=(0, 2))
    out["budget_violation_dollars"] = r["budget_violation"].sum(axis=(0, 2))
    frame = pd.DataFrame(out)
    frame.index.name = "replication"
    return frame


def projection_metrics(records: dict[str, np.ndarray], warmup_days: int = 0) -> pd.DataFrame:
    """Hybrid mode, per replication (days after the warm-up): ``projection_l1_per_day``
    (mean weighted L1 distance between released orders and proposals, units/day),
    ``solve_ms_median`` / ``solve_ms_p95`` (wall ms of the daily safety-layer call, over
    days), ``solved_share`` (share of days the program was solved: proposals
    infeasible) and ``relaxations`` (count of relaxed constraints), from the records
    ``info.*`` ``[D, B]`` that :func:`fedinv.sim.run.run_records` collects."""

    def col(name: str) -> np.ndarray:
        return records["info." + name][warmup_days:]

    ms = col("solve_ms")
    return pd.DataFrame(
        {
            "projection_l1_per_day": col("projection_l1").mean(axis=0),
            "solve_ms_median": np.median(ms, axis=0),
            "solve_ms_p95": np.percentile(ms, 95, axis=0),
            "solved_share": col("solved").mean(axis=0),
            "relaxations": col("relaxations").sum(axis=0),
        }
    )


def node_metrics(
    records: dict[str, np.ndarray], layout: Layout, warmup_days: int = 0
) -> pd.DataFrame:
    """Per node and replication: costs per day, fill rate, stockouts/month, bullwhip."""
    r = {k: v[warmup_days:] for k, v in records.items()}
    days, reps, n = r["total_cost"].shape
    months = days / DAYS_PER_MONTH
    rows = {
        "total_cost_per_day": r["total_cost"].mean(axis=0),
        "holding_cost_per_day": r["holding_cost"].mean(axis=0),
        "penalty_cost_per_day": r["penalty_cost"].mean(axis=0),
        "mean_on_hand": r["on_hand"].mean(axis=0),
        "mean_backlog": r["backlog"].mean(axis=0),
        "stockouts_per_month": ((r["demand"] - r["filled"]) > 1e-9).sum(axis=0) / months,
        "fill_rate": np.where(
            r["demand"].sum(axis=0) > 0,
            r["filled"].sum(axis=0) / np.maximum(r["demand"].sum(axis=0), 1e-12),
            np.nan,
        ),
        "order_mean": r["ordered"].mean(axis=0),
        "order_std": r["ordered"].std(axis=0, ddof=1),
        "violations": r["violations"].sum(axis=0),
    }
    frame = pd.DataFrame({k: v.reshape(-1) for k, v in rows.items()})
    frame.insert(0, "node", np.tile(np.array(layout.node_ids), reps))
    frame.insert(0, "replication", np.repeat(np.arange(reps), n))
    frame["tier"] = np.tile(layout.tier, reps)
    return frame


def monthly_metrics(
    records: dict[str, np.ndarray], layout: Layout, month: np.ndarray, warmup_days: int = 0
) -> pd.DataFrame:
    """Per calendar month and replication: holding cost ($K), stockouts, total cost ($K),
    fill rate and annualized turnover (the paper's Figure 4 series)."""
    cust = layout.customer
    rows = []
    for mo in np.unique(month[warmup_days:]):
        sel = np.flatnonzero(month == mo)
        sel = sel[sel >= warmup_days]
        sub = {k: v[sel] for k, v in records.items()}
        d = sub["demand"][:, :, cust]
        f = sub["filled"][:, :, cust]
        value = sub["inventory_value"].sum(axis=2).mean(axis=0)
        cogs = (sub["sold"] * layout.unit_value).sum(axis=(0, 2))
        for b in range(d.shape[1]):
            rows.append(
                {
                    "replication": b,
                    "month": int(mo),
                    "days": len(sel),
                    "holding_cost_k": sub["holding_cost"][:, b].sum() / 1000.0,
                    "total_cost_k": sub["total_cost"][:, b].sum() / 1000.0,
                    "stockouts": int(((d[:, b] - f[:, b]) > 1e-9).sum()),
                    "fill_rate": float(f[:, b].sum() / d[:, b].sum()) if d[:, b].sum() > 0 else 1.0,
                    "inventory_turnover": float(cogs[b] / value[b] * 365.0 / len(sel))
                    if value[b] > 0
                    else float("nan"),
                }
            )
    return pd.DataFrame(rows)


def summarize(per_replication: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Mean, standard deviation and the t-interval half-width of every column."""
    n = len(per_replication)
    mean = per_replication.mean()
    std = per_replication.std(ddof=1) if n > 1 else per_replication.mean() * np.nan
    t = _t_quantile(0.5 + confidence / 2, n - 1) if n > 1 else np.nan
    half = t * std / np.sqrt(n) if n > 1 else std
    return pd.DataFrame({"mean": mean, "std": std, "ci95": half, "n": n})


def paired_difference(a: pd.Series, b: pd.Series, confidence: float = 0.95) -> dict[str, float]:
    """Mean of ``a - b`` over common replications, its t-interval half-width and the
    change in percent of ``b``."""
    diff = (a - b).dropna()
    n = len(diff)
    half = (
        _t_quantile(0.5 + confidence / 2, n - 1) * diff.std(ddof=1) / np.sqrt(n)
        if n > 1
        else np.nan
    )
    base = b.loc[diff.index].mean()
    return {
        "mean": float(diff.mean()),
        "ci95": float(half),
        "percent": float(100.0 * diff.mean() / base) if base else float("nan"),
    }


def _t_quantile(q: float, dof: int) -> float:
    """Student-t quantile (scipy.stats imported here: it costs a second at start-up)."""
    from scipy import stats

    return float(stats.t.ppf(q, dof))
