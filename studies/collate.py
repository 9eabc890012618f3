"""Gather a study's unit files (``OUT/units``) into its result tables (``OUT/results``):
``replications.parquet`` (one row per variant, policy and held-out replication, with the
perfect-information bound and the gap to it) and ``monthly.parquet`` (the paper's
Figure 4 series per month), then render the report (:mod:`studies.report`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from studies.spec import StudySpec
from studies.units import BadUnitsError, plan, scan


def collate(spec: StudySpec, out: Path, render: bool = True) -> Path:
    """Write ``OUT/results/*.parquet`` from the unit files of ``spec``'s plan (those
    present; :class:`studies.units.BadUnitsError` naming every file that is not a valid
    unit); returns the results folder."""
    out = Path(out)
    results = out / "results"
    results.mkdir(parents=True, exist_ok=True)
    found = scan(out, plan(spec))
    if found.bad:
        raise BadUnitsError(out, found.bad)
    records = [(key, found.finished[key]) for key in sorted(found.finished)]
    rows, monthly = [], []
    bounds = {}
    for name, b in records:
        if name.startswith("bound/"):
            bounds[(b["variant"], int(b["replication"]))] = float(b["bound_cost_per_day"])
    for name, u in records:
        if not name.startswith("eval/"):
            continue
        key = (u["variant"], int(u["replication"]))
        row = {
            "variant": u["variant"],
            "policy": u["policy"],
            "replication": int(u["replication"]),
            "mode": u["mode"],
            "seconds": float(u.get("seconds", np.nan)),
            **u["metrics"],
        }
        bound = bounds.get(key, np.nan)
        row["bound_cost_per_day"] = bound
        row["gap_to_bound_pct"] = (
            100.0 * (row["total_cost_per_day"] - bound) / bound
            if np.isfinite(bound) and bound > 0
            else np.nan
        )
        for name, ev in u.get("events", {}).items():
            for k, v in ev.items():
                row[f"event:{name}:{k}"] = v
        row.update(monitor_columns(u.get("monitor")))
        rows.append(row)
        monthly += [
            {
                "variant": u["variant"],
                "policy": u["policy"],
                "replication": int(u["replication"]),
                **m,
            }
            for m in u["monthly"]
        ]
    order = {p.label: i for i, p in enumerate(spec.policies)}
    vorder = {v.name: i for i, v in enumerate(spec.variants)}
    frame = pd.DataFrame(rows)
    if len(frame):
        frame = frame.sort_values(
            ["variant", "policy", "replication"],
            key=lambda c: (
                c.map(vorder) if c.name == "variant" else c.map(order) if c.name == "policy" else c
            ),
        )
    _write_parquet(frame.reset_index(drop=True), results / "replications.parquet")
    _write_parquet(pd.DataFrame(monthly), results / "monthly.parquet")
    if render:
        from studies.report import render_report

        render_report(out)
    return results


def monitor_columns(monitor: dict | None) -> dict[str, float | str]:
    """An evaluation's Analytics Monitor summary (:func:`fedinv.roles.monitor.alert_summary`)
    as ``monitor:*`` columns: ``monitor:drift``, the counts, ``monitor:retrain_by_org:ORG``
    and ``monitor:first_after:METRIC:TARGET`` (days from the drift day; a target without
    an alert after it has no column, NaN in the table: not detected); on a lead-time
    drift ``monitor:shipments_in_budget:LANE`` and ``monitor:shipments_after:LANE``
    (days with a shipment on the lane from the drift day to its detection budget, and to
    the end)."""
    if not monitor:
        return {}
    out: dict[str, float | str] = {"monitor:drift": str(monitor["drift"])}
    for key in ("retrain_alerts", "retrain_per_org_year", "retrain_before_drift"):
        if key in monitor:
            out[f"monitor:{key}"] = float(monitor[key])
    for org, n in monitor.get("retrain_by_org", {}).items():
        out[f"monitor:retrain_by_org:{org}"] = float(n)
    for key, days in monitor.get("first_after", {}).items():
        out[f"monitor:first_after:{key}"] = float(days)
    for lane, counts in monitor.get("shipments", {}).items():
        for key, n in counts.items():
            out[f"monitor:shipments_{key}:{lane}"] = float(n)
    return out


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    from fedinv.files import atomic_write

    atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
