"""A study run folder -> statistics, figures and ``report.md`` (``fedinv report DIR``).

Works from saved files only, so a run can be re-rendered at any time. Reads the runner's
output (every part optional except ``study.json``): ``study.json``,
``results/replications.parquet``, ``results/monthly.parquet``, ``units/tune/*.json`` and
``units/train/*.json`` (curves: CSV with ``x, x_label, cost_per_day[, ci95]``).

Writes, each file atomically (a temporary file in the same folder, then ``os.replace``):

* ``results/summary.csv`` -- *long* format, one row per (variant, policy, metric):
  ``variant, policy, mode, metric, n, mean, std, ci95``. ``metric`` is any numeric or
  boolean column of ``replications.parquet`` (``seconds`` included); ``n`` counts the
  replications with a value (NaN left out, so the hybrid-only metrics have no rows for
  pure policies); ``mean``, ``std`` and ``ci95`` (half-width of the Student-t 95%
  interval, :func:`fedinv.sim.metrics.summarize`) are in the metric's own unit; booleans
  (``event:E:recovered``) are shares in [0, 1]. Rows: variants, then policies, in the
  study's order; metrics in column order.
* ``results/paired.csv`` -- per variant, policy other than the reference and metric of
  :data:`PAIRED_METRICS`: ``variant, policy, reference, metric, n, policy_mean,
  reference_mean, mean, ci95, percent, percent_ci95, excludes_zero``: the paired
  difference policy - reference on the replications both have
  (:func:`fedinv.sim.metrics.paired_difference`), its means, ``percent`` / ``percent_ci95``
  in percent of the reference's mean, and whether the 95% interval excludes 0.
* ``figures/monthly.png`` (``monthly-VARIANT.png`` for every further variant),
  ``figures/training.png``, ``figures/cost-vs-violations.png``, ``figures/cost.png``
  (matplotlib, Agg), each only when its data exists;
* ``report.md``: a results section (method, tables, paired comparisons, the paper's
  reported figures beside ours, events, figures, how to reproduce).

Public: :func:`render_report`, :func:`load_run`, :func:`summary_frame`,
:func:`paired_frame`, :func:`main_table`, :func:`summary_table`, :func:`print_summary`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedinv.files import atomic_write
from fedinv.policies.tuning import TRAIN_BASE
from fedinv.sim.metrics import paired_difference, summarize
from studies.spec import (
    SAME_ORDERING_POLICY,
    PolicySpec,
    StudySpec,
    VariantSpec,
    slugify,
    spec_from_dict,
)
from studies.units import read_json

SUMMARY_COLUMNS = ("variant", "policy", "mode", "metric", "n", "mean", "std", "ci95")
PAIRED_COLUMNS = (
    "variant",
    "policy",
    "reference",
    "metric",
    "n",
    "policy_mean",
    "reference_mean",
    "mean",
    "ci95",
    "percent",
    "percent_ci95",
    "excludes_zero",
)
PAIRED_METRICS = (
    "total_cost_per_day",
    "fill_rate",
    "stockouts_per_month",
    "holding_cost_k_per_month",
    "inventory_turnover",
    "violations_per_month",
)
"""Metrics compared pairwise with the reference policy."""
ID_COLUMNS = ("variant", "policy", "replication", "mode")
EVENT_FIELDS = ("recovery_days", "stockouts", "cost_per_day", "recovered")
MISSING = "—"


@dataclass(frozen=True)
class _Metric:
    label: str
    decimals: int | None  # None: by magnitude (0 from 100 up, else 2)
    lower: str = "lower"  # the reading when the policy's value is below the reference's
    higher: str = "higher"
    relative: bool = True  # read differences in percent of the reference (else absolute)


METRICS: dict[str, _Metric] = {
    "total_cost_per_day": _Metric("Cost $/day", None, "cheaper", "more expensive"),
    "gap_to_bound_pct": _Metric("Gap to bound %", 1),
    "fill_rate": _Metric("Fill rate", 3, "lower fill rate", "higher fill rate", False),
    "cycle_service_level": _Metric("Cycle service level", 3, relative=False),
    "stockouts_per_month": _Metric("Stockouts/month", 2, "fewer stockouts", "more stockouts"),
    "internal_stockouts_per_month": _Metric("Internal stockouts/month", 2),
    "holding_cost_k_per_month": _Metric(
        "Holding $K/month", 2, "lower holding cost", "higher holding cost"
    ),
    "total_cost_k_per_month": _Metric("Total cost $K/month", 2),
    "inventory_turnover": _Metric("Turnover", 2, "lower turnover", "higher turnover"),
    "bullwhip_ratio": _Metric("Bullwhip ratio", 2),
    "violations_per_month": _Metric("Violations/month", 2, "fewer violations", "more violations"),
    "projection_l1_per_day": _Metric("Projection L1/day", 2),
    "solve_ms_median": _Metric("Solve ms (median)", 1),
    "transfer_units_per_day": _Metric("Transfers units/day", 2, relative=False),
    "messages_per_agent_day": _Metric("Messages/agent-day", 3, relative=False),
}
MAIN_METRICS = (
    "total_cost_per_day",
    "gap_to_bound_pct",
    "fill_rate",
    "stockouts_per_month",
    "holding_cost_k_per_month",
    "inventory_turnover",
    "violations_per_month",
)
HYBRID_METRICS = ("projection_l1_per_day", "solve_ms_median")
COORDINATION_METRICS = ("transfer_units_per_day", "messages_per_agent_day")
"""Shown when a row has a Coordination Node: units moved on lateral links per day, and
the node's messages per agent-day (every node an agent)."""
MONITOR_PREFIX = "monitor:"
"""Replications-table columns of the Analytics Monitor (:func:`studies.collate.monitor_columns`):
reported by :func:`_monitor_section`, not summarized as metrics."""
DEMAND_DRIFT_BUDGET_DAYS = 14
LEAD_DRIFT_EXTRA_DAYS = 7
"""Detection targets (issue 16): a demand-mean shift within 14 days; a doubled lead time
within the lane's expected lead time + 7 days."""
BOOTSTRAP_SAMPLES = 4000
POLICY_NAMES = {
    "base-stock": "installation base-stock",
    "echelon-base-stock": "echelon base-stock",
    "sS": "(s, S)",
    "sQ": "(s, Q)",
    "min-stock": "min-stock",
    "rolling-lp": "rolling-horizon LP",
    "rolling-sp": "rolling-horizon stochastic program",
    "dqn": "DQN",
    "hdpo": "HDPO (pathwise gradients, a residual on a tuned base-stock or (s, S) policy)",
}
TRAINING_TEXT = {
    "federated": "as a Flower federation of the organizations (role-weighted FedAvg: "
    "only model weights leave an organization)",
    "isolated": "by each organization alone on its own data (no federation)",
    "central": "by one learner on the pooled data of the whole network",
}


# ------------------------------------------------------------------------------ loading


@dataclass
class StudyRun:
    """What a run folder holds (missing parts are ``None`` or empty)."""

    out: Path
    spec: StudySpec
    meta: dict[str, Any]
    """``study.json`` without its ``spec``: digest, command, versions, times, engine."""
    replications: pd.DataFrame | None = None
    monthly: pd.DataFrame | None = None
    tuned: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Tuning records by policy name (``units/tune/NAME.json``)."""
    trained: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Training records by kind (``units/train/KIND.json``)."""

    @property
    def variants(self) -> list[str]:
        """Variant names: the study's order, then any others found in the results."""
        return _ordered([v.name for v in self.spec.variants], self.replications, "variant")

    @property
    def policies(self) -> list[str]:
        """Policy labels: the study's order, then any others found in the results."""
        return _ordered([p.label for p in self.spec.policies], self.replications, "policy")

    def mode(self, label: str) -> str:
        try:
            return self.spec.policy(label).mode
        except StopIteration:
            return "pure"


def _ordered(names: list[str], frame: pd.DataFrame | None, column: str) -> list[str]:
    if frame is not None and column in frame:
        names = names + [x for x in pd.unique(frame[column]) if x not in names]
    return names


def load_run(out: Path) -> StudyRun:
    """Read a run folder (``FileNotFoundError`` without ``study.json``;
    :class:`studies.units.UnitFileError` naming a tune or train record that is not a JSON
    object)."""
    out = Path(out)
    doc = json.loads((out / "study.json").read_text(encoding="utf-8"))
    spec = spec_from_dict(doc["spec"])
    meta = {k: v for k, v in doc.items() if k != "spec"}
    run = StudyRun(out, spec, meta)
    path = out / "results" / "replications.parquet"
    if path.is_file():
        run.replications = _with_gap(pd.read_parquet(path))
    path = out / "results" / "monthly.parquet"
    if path.is_file():
        run.monthly = pd.read_parquet(path)
    for folder, target, key in (("tune", run.tuned, "policy"), ("train", run.trained, "kind")):
        for item in sorted((out / "units" / folder).glob("*.json")):
            record = read_json(item)
            target[str(record.get(key, item.stem))] = {**record, "_path": item}
    return run


def _with_gap(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``gap_to_bound_pct`` from ``bound_cost_per_day`` if the runner left it out."""
    if "gap_to_bound_pct" not in frame and "bound_cost_per_day" in frame:
        frame = frame.copy()
        bound = frame["bound_cost_per_day"].astype(float)
        frame["gap_to_bound_pct"] = 100.0 * (frame["total_cost_per_day"] - bound) / bound
    return frame


# --------------------------------------------------------------------------- statistics


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """The numeric and boolean columns of a replications table (not the identifiers)."""
    return [
        c
        for c in frame.columns
        if c not in ID_COLUMNS
        and not str(c).startswith(MONITOR_PREFIX)
        and (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))
    ]


def summary_frame(
    replications: pd.DataFrame,
    variants: Sequence[str] | None = None,
    policies: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Long table of :data:`SUMMARY_COLUMNS` (module doc) from a replications table."""
    metrics = metric_columns(replications)
    rows: list[dict[str, Any]] = []
    for variant, policy, group in _groups(replications, variants, policies):
        values = group[metrics].astype(float)
        mode = str(group["mode"].iloc[0]) if "mode" in group else ""
        complete = [m for m in metrics if values[m].notna().all()]
        stats = {}
        if complete:  # one call for the columns without gaps, then one per column
            table = summarize(values[complete])
            stats.update({m: table.loc[m] for m in complete})
        for m in metrics:
            if m not in stats:
                column = values[[m]].dropna()
                if len(column):
                    stats[m] = summarize(column).loc[m]
        for m in metrics:
            if m in stats:
                s = stats[m]
                rows.append(
                    {
                        "variant": variant,
                        "policy": policy,
                        "mode": mode,
                        "metric": m,
                        "n": int(s["n"]),
                        "mean": float(s["mean"]),
                        "std": float(s["std"]),
                        "ci95": float(s["ci95"]),
                    }
                )
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def paired_frame(
    replications: pd.DataFrame,
    reference: str,
    variants: Sequence[str] | None = None,
    policies: Sequence[str] | None = None,
    metrics: Sequence[str] = PAIRED_METRICS,
) -> pd.DataFrame:
    """Long table of :data:`PAIRED_COLUMNS` (module doc): every policy - ``reference``."""
    rows: list[dict[str, Any]] = []
    by_variant = {v: g for v, _, g in _groups(replications, variants, None, by_policy=False)}
    for variant, sub in by_variant.items():
        ref = _by_replication(sub, reference)
        if ref.empty:
            continue
        for policy in policies if policies is not None else pd.unique(sub["policy"]):
            cur = _by_replication(sub, policy)
            if policy == reference or cur.empty:
                continue
            common = cur.index.intersection(ref.index)
            for m in metrics:
                if m not in cur or m not in ref:
                    continue
                a = cur.loc[common, m].astype(float)
                b = ref.loc[common, m].astype(float)
                both = a.notna() & b.notna()
                if not both.any():
                    continue
                d = paired_difference(a, b)
                ref_mean = float(b[both].mean())
                percent_ci = 100.0 * d["ci95"] / abs(ref_mean) if ref_mean else math.nan
                rows.append(
                    {
                        "variant": variant,
                        "policy": policy,
                        "reference": reference,
                        "metric": m,
                        "n": int(both.sum()),
                        "policy_mean": float(a[both].mean()),
                        "reference_mean": ref_mean,
                        "mean": d["mean"],
                        "ci95": d["ci95"],
                        "percent": d["percent"],
                        "percent_ci95": percent_ci,
                        "excludes_zero": bool(
                            math.isfinite(d["ci95"]) and abs(d["mean"]) > d["ci95"]
                        ),
                    }
                )
    return pd.DataFrame(rows, columns=list(PAIRED_COLUMNS))


def _groups(
    frame: pd.DataFrame,
    variants: Sequence[str] | None,
    policies: Sequence[str] | None,
    by_policy: bool = True,
) -> Iterable[tuple[str, str, pd.DataFrame]]:
    variants = list(variants) if variants is not None else list(pd.unique(frame["variant"]))
    for variant in variants:
        sub = frame[frame["variant"] == variant]
        if sub.empty:
            continue
        if not by_policy:
            yield variant, "", sub
            continue
        names = list(policies) if policies is not None else list(pd.unique(sub["policy"]))
        for policy in names:
            group = sub[sub["policy"] == policy]
            if not group.empty:
                yield variant, policy, group


def _by_replication(frame: pd.DataFrame, policy: str) -> pd.DataFrame:
    sub = frame[frame["policy"] == policy]
    return sub.drop_duplicates("replication", keep="last").set_index("replication")


def event_names(columns: Iterable[str], spec: StudySpec | None = None) -> list[str]:
    """Event names of ``event:E:FIELD`` columns (the study's order first)."""
    found = []
    for c in columns:
        m = re.fullmatch(r"event:(.+):(" + "|".join(EVENT_FIELDS) + ")", str(c))
        if m and m.group(1) not in found:
            found.append(m.group(1))
    first = [e.name for e in spec.events if e.name in found] if spec is not None else []
    return first + [e for e in found if e not in first]


class _Stats:
    """Lookup of the summary table: (variant, policy, metric) -> mean, ci95, n."""

    def __init__(self, summary: pd.DataFrame):
        self.table = {
            (r.variant, r.policy, r.metric): (r.mean, r.ci95, r.n)
            for r in summary.itertuples(index=False)
        }

    def get(self, variant: str, policy: str, metric: str) -> tuple[float, float, int]:
        return self.table.get((variant, policy, metric), (math.nan, math.nan, 0))

    def has(self, variant: str, policy: str) -> bool:
        return any(k[0] == variant and k[1] == policy for k in self.table)


# --------------------------------------------------------------------------- formatting


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _decimals(metric: str, value: float) -> int:
    spec = METRICS.get(metric)
    if spec is not None and spec.decimals is not None:
        return spec.decimals
    if spec is None and not metric.endswith("cost_per_day"):
        return 3 if abs(value) < 10 else 2
    return 0 if abs(value) >= 100 else 2


def _number(x: float, decimals: int) -> str:
    if not _finite(x):
        return MISSING
    text = f"{float(x):,.{decimals}f}"
    return text[1:] if re.fullmatch(r"-0[.,0]*", text) else text  # no "-0.00"


def _pm(mean: float, ci: float, decimals: int) -> str:
    """``mean ± ci`` (``ci`` shown with 2 significant digits where it rounds to 0)."""
    if not _finite(mean):
        return MISSING
    text = _number(mean, decimals)
    if not _finite(ci):
        return text
    half = _number(ci, decimals)
    if ci > 0 and float(half.replace(",", "")) == 0:
        half = f"{ci:.2g}"
    return f"{text} ± {half}"


def _stat_text(stats: _Stats, variant: str, policy: str, metric: str) -> str:
    mean, ci, _ = stats.get(variant, policy, metric)
    return _pm(mean, ci, _decimals(metric, mean if _finite(mean) else 0.0))


def _duration(seconds: Any) -> str:
    """``42 s``, ``3 min 20 s``, ``2 h 05 min``."""
    if not _finite(seconds):
        return "unknown time"
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(round(s % 60)):02d} s"
    return f"{int(s // 3600)} h {int(round(s % 3600 / 60)):02d} min"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub markdown table of a frame of strings (columns: headers); columns of
    numbers are right-aligned."""
    head = "| " + " | ".join(_cell(c) for c in frame.columns) + " |"
    numeric = [
        len(frame) > 0 and all(re.match(r"[-+−$0-9.]|—$", str(v)) for v in frame[c])
        for c in frame.columns
    ]
    rule = "|" + "|".join("---:" if n else "---" for n in numeric) + "|"
    body = [
        "| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)
    ]
    return "\n".join([head, rule, *body])


def _label(metric: str) -> str:
    if metric in METRICS:
        return METRICS[metric].label
    return metric.replace("_", " ").replace(" k per month", " $K/month").capitalize()


# -------------------------------------------------------------------------------- tables


def main_table(run: StudyRun, summary: pd.DataFrame, variant: str) -> pd.DataFrame:
    """The main results of a variant as strings: one row per policy (mean ± 95% CI), and
    the perfect-information bound's row when there is one."""
    stats = _Stats(summary)
    policies = [p for p in run.policies if stats.has(variant, p)]
    has_bound = any(_finite(stats.get(variant, p, "gap_to_bound_pct")[0]) for p in policies)
    hybrid = any(run.mode(p) == "hybrid" for p in policies)
    metrics = [m for m in MAIN_METRICS if has_bound or m != "gap_to_bound_pct"]
    metrics += list(HYBRID_METRICS) if hybrid else []
    if any(getattr(run.spec.policy(p), "coordination", "none") != "none" for p in policies):
        metrics += list(COORDINATION_METRICS)
    rows = []
    respecting = [p for p in policies if respects_constraints(run, stats, variant, p)]
    for p in respecting + [p for p in policies if p not in respecting]:
        label = f"{p} (reference)" if p == run.spec.reference else p
        n = max(stats.get(variant, p, m)[2] for m in ("total_cost_per_day", "fill_rate"))
        rows.append(
            [label, run.mode(p), "yes" if p in respecting else "no", str(n)]
            + [_stat_text(stats, variant, p, m) for m in metrics]
        )
    if has_bound and run.replications is not None:
        bound = _bound_stats(run.replications, variant)
        if bound is not None:
            mean, ci, n = bound
            rows.append(
                [
                    "Perfect-information bound (not a policy)",
                    MISSING,
                    MISSING,
                    str(n),
                    _pm(mean, ci, _decimals("total_cost_per_day", mean)),
                ]
                + [MISSING] * (len(metrics) - 1)
            )
    columns = ["Policy", "Mode", "Respects constraints", "n"]
    return pd.DataFrame(rows, columns=columns + [_label(m) for m in metrics])


def respects_constraints(run: StudyRun, stats: _Stats, variant: str, policy: str) -> bool:
    """A policy respects the constraints on ``variant`` if it runs through the safety
    layer (hybrid mode: what it releases breaks only what docs/hybrid.md names as
    unavoidable, each counted) or releases no violating order on any replication."""
    if run.mode(policy) == "hybrid":
        return True
    mean, _, n = stats.get(variant, policy, "violations_per_month")
    return n > 0 and _finite(mean) and mean == 0


def cheapest_respecting(run: StudyRun, summary: pd.DataFrame, variant: str) -> str | None:
    """The label of the cheapest policy (mean total cost per day) that respects the
    constraints on ``variant``, or None."""
    stats = _Stats(summary)
    best: tuple[float, str] | None = None
    for p in run.policies:
        if stats.has(variant, p) and respects_constraints(run, stats, variant, p):
            cost = stats.get(variant, p, "total_cost_per_day")[0]
            if _finite(cost) and (best is None or cost < best[0]):
                best = (cost, p)
    return None if best is None else best[1]


def _bound_stats(replications: pd.DataFrame, variant: str) -> tuple[float, float, int] | None:
    if "bound_cost_per_day" not in replications:
        return None
    sub = replications[replications["variant"] == variant]
    per_rep = sub.groupby("replication")["bound_cost_per_day"].first().astype(float).dropna()
    if per_rep.empty:
        return None
    s = summarize(per_rep.to_frame()).iloc[0]
    return float(s["mean"]), float(s["ci95"]), int(s["n"])


def summary_table(out: Path, variant: str | None = None) -> pd.DataFrame:
    """The first (or the named) variant's main table, as strings, from a run folder."""
    return _summary_table(load_run(out), variant)


def _summary_table(run: StudyRun, variant: str | None = None) -> pd.DataFrame:
    if run.replications is None:
        return pd.DataFrame(columns=["Policy", "Mode", "Respects constraints", "n"])
    summary = summary_frame(run.replications, run.variants, run.policies)
    return main_table(run, summary, variant or _first_variant(run))


def print_summary(out: Path, console: Any = None) -> None:
    """Print :func:`summary_table` in plain text (``console.print`` of a rich table when
    a console is given, else ``print``)."""
    run = load_run(out)
    table = _summary_table(run)
    title = f"{run.spec.title}: variant {_first_variant(run)} (mean ± 95% CI)"
    if console is None:
        print(title)
        print(table.to_string(index=False) if len(table) else "(no results yet)")
        return
    from rich.table import Table

    rich_table = Table(title=title)
    for i, column in enumerate(table.columns):
        rich_table.add_column(column, justify="left" if i < 2 else "right")
    for row in table.itertuples(index=False):
        rich_table.add_row(*map(str, row))
    console.print(rich_table)


def _first_variant(run: StudyRun) -> str:
    present = (
        run.variants
        if run.replications is None
        else [v for v in run.variants if (run.replications["variant"] == v).any()]
    )
    return (present or run.variants)[0]


# ------------------------------------------------------------------------------ writing


_atomic = atomic_write


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    _atomic(path, lambda tmp: frame.to_csv(tmp, index=False))


def render_report(out: Path) -> Path:
    """Write ``results/summary.csv``, ``results/paired.csv``, the figures and
    ``report.md`` of the run folder ``out`` from its saved files; returns report.md's
    path. Rendering twice gives the same files."""
    out = Path(out)
    run = load_run(out)
    rep = run.replications
    if rep is not None:
        summary = summary_frame(rep, run.variants, run.policies)
        paired = paired_frame(rep, run.spec.reference, run.variants, run.policies)
    else:
        summary = pd.DataFrame(columns=list(SUMMARY_COLUMNS))
        paired = pd.DataFrame(columns=list(PAIRED_COLUMNS))
    _write_csv(out / "results" / "summary.csv", summary)
    _write_csv(out / "results" / "paired.csv", paired)
    figures = write_figures(run, summary)
    path = out / "report.md"
    text = report_markdown(run, summary, paired, figures)
    _atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


# ------------------------------------------------------------------------------ figures


def write_figures(run: StudyRun, summary: pd.DataFrame) -> dict[str, str]:
    """Every figure whose data exists; returns ``{key: path relative to the run}``
    (keys: ``monthly:VARIANT``, ``training``, ``cost-vs-violations``, ``cost``)."""
    import matplotlib

    matplotlib.use("Agg")
    figures: dict[str, str] = {}
    colors = {p: f"C{i % 10}" for i, p in enumerate(run.policies)}
    if run.monthly is not None and len(run.monthly):
        present = [v for v in run.variants if (run.monthly["variant"] == v).any()]
        for i, variant in enumerate(present):
            name = "monthly.png" if i == 0 else f"monthly-{slugify(variant)}.png"
            sub = run.monthly[run.monthly["variant"] == variant]
            _save(
                run.out / "figures" / name,
                lambda ax, sub=sub, v=variant: _plot_monthly(ax, sub, run, colors, v),
                panels=3,
            )
            figures[f"monthly:{variant}"] = f"figures/{name}"
    curves = _training_curves(run)
    if curves:
        _save(
            run.out / "figures" / "training.png",
            lambda ax: _plot_training(ax, curves),
            panels=len(curves),
        )
        figures["training"] = "figures/training.png"
    stats = _Stats(summary)
    points = [(v, p) for v in run.variants for p in run.policies if stats.has(v, p)]
    if points:
        if any(_finite(stats.get(v, p, "violations_per_month")[0]) for v, p in points):
            _save(
                run.out / "figures" / "cost-vs-violations.png",
                lambda ax: _plot_cost_violations(ax[0], stats, points, run, colors),
            )
            figures["cost-vs-violations"] = "figures/cost-vs-violations.png"
        _save(
            run.out / "figures" / "cost.png",
            lambda ax: _plot_cost(ax[0], stats, points, run, colors),
        )
        figures["cost"] = "figures/cost.png"
    return figures


def _save(path: Path, draw: Callable[[Any], None], panels: int = 1) -> None:
    import matplotlib.pyplot as plt

    width = 7.0 if panels == 1 else 4.6 * panels
    fig, axes = plt.subplots(1, panels, figsize=(width, 4.2), dpi=120, squeeze=False)
    try:
        draw(list(axes[0]))
        fig.tight_layout()
        _atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


def _plot_monthly(
    axes: list[Any], monthly: pd.DataFrame, run: StudyRun, colors: Mapping[str, str], variant: str
) -> None:
    panels = (
        ("inventory_turnover", "Inventory turnover (annualized)"),
        ("stockouts", "Stockouts per month"),
        ("holding_cost_k", "Holding cost ($K per month)"),
    )
    for ax, (column, title) in zip(axes, panels, strict=True):
        for policy in run.policies:
            sub = monthly[monthly["policy"] == policy]
            if sub.empty or column not in sub:
                continue
            series = sub.groupby("month")[column].mean()
            ax.plot(
                series.index,
                series.to_numpy(),
                marker="o",
                ms=3,
                color=colors[policy],
                label=policy,
            )
        ax.set_title(title)
        ax.set_xlabel("month")
        ax.set_xticks(range(1, 13))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[0].figure.suptitle(f"Variant {variant}: mean over replications", fontsize=10)


def _training_curves(run: StudyRun) -> list[tuple[str, pd.DataFrame]]:
    curves = []
    for kind, record in run.trained.items():
        rel = record.get("curve")
        if not rel:
            continue
        for base in (run.out, Path(record["_path"]).parent):
            if (base / rel).is_file():
                curves.append((kind, pd.read_csv(base / rel)))
                break
    return curves


def _plot_training(axes: list[Any], curves: list[tuple[str, pd.DataFrame]]) -> None:
    for i, (ax, (kind, curve)) in enumerate(zip(axes, curves, strict=True)):
        x = curve["x"].to_numpy(dtype=float)
        y = curve["cost_per_day"].to_numpy(dtype=float)
        ax.plot(x, y, marker="o", ms=3, color=f"C{i}", label=f"{kind}")
        if "ci95" in curve:
            ci = curve["ci95"].fillna(0.0).to_numpy(dtype=float)
            ax.fill_between(x, y - ci, y + ci, alpha=0.2, color=f"C{i}")
        finite = y[np.isfinite(y) & (y > 0)]
        if len(finite) and finite.max() > 20 * finite.min():
            ax.set_yscale("log")  # early exploratory policies can cost far more
        unit = str(curve["x_label"].iloc[0]) if "x_label" in curve and len(curve) else "x"
        if unit == "round":
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel({"round": "federated round", "step": "environment steps"}.get(unit, unit))
        ax.set_ylabel("validation cost per day ($)")
        ax.set_title(f"DQN, {kind} training")
        ax.grid(alpha=0.3)


_MARKERS = {"pure": "o", "hybrid": "s"}


def _plot_cost_violations(
    ax: Any, stats: _Stats, points: list[tuple[str, str]], run: StudyRun, colors: Mapping[str, str]
) -> None:
    several = len({v for v, _ in points}) > 1
    seen: set[str] = set()
    for variant, policy in points:
        cost, cost_ci, _ = stats.get(variant, policy, "total_cost_per_day")
        viol, viol_ci, _ = stats.get(variant, policy, "violations_per_month")
        if not (_finite(cost) and _finite(viol)):
            continue
        mode = run.mode(policy)
        respects = respects_constraints(run, stats, variant, policy)
        ax.errorbar(
            viol,
            cost,
            xerr=_nan0(viol_ci),
            yerr=_nan0(cost_ci),
            fmt=_MARKERS.get(mode, "o"),
            color=colors[policy],
            mfc=colors[policy] if respects else "none",
            capsize=3,
            ms=7,
            label=None if policy in seen else f"{policy} ({mode})",
        )
        seen.add(policy)
        if several:
            ax.annotate(
                variant, (viol, cost), textcoords="offset points", xytext=(5, 5), fontsize=7
            )
    ax.set_xlabel("constraint violations per month (mean ± 95% CI)")
    ax.set_ylabel("total cost per day ($, mean ± 95% CI)")
    ax.set_title("Cost vs violations (circle: pure, square: hybrid; hollow: violates constraints)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _plot_cost(
    ax: Any, stats: _Stats, points: list[tuple[str, str]], run: StudyRun, colors: Mapping[str, str]
) -> None:
    variants = list(dict.fromkeys(v for v, _ in points))
    policies = [p for p in run.policies if any(q == p for _, q in points)]
    width = 0.8 / max(len(policies), 1)
    for j, policy in enumerate(policies):
        xs, ys, cis = [], [], []
        for i, variant in enumerate(variants):
            mean, ci, _ = stats.get(variant, policy, "total_cost_per_day")
            if _finite(mean):
                xs.append(i - 0.4 + width * (j + 0.5))
                ys.append(mean)
                cis.append(_nan0(ci))
        ax.bar(
            xs,
            ys,
            width=width * 0.9,
            yerr=cis,
            capsize=3,
            color=colors[policy],
            label=policy,
            hatch="//" if run.mode(policy) == "hybrid" else None,
        )
    labelled = False
    for i, variant in enumerate(variants):
        bound = _bound_stats(run.replications, variant) if run.replications is not None else None
        if bound is not None and _finite(bound[0]):
            ax.hlines(
                bound[0],
                i - 0.45,
                i + 0.45,
                colors="black",
                linestyles="--",
                label=None if labelled else "perfect-information bound",
            )
            labelled = True
    ax.set_xticks(range(len(variants)))
    ax.set_xticklabels(variants)
    ax.set_ylabel("total cost per day ($, mean ± 95% CI)")
    ax.set_title("Cost per day by variant")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)


def _nan0(x: float) -> float:
    return float(x) if _finite(x) else 0.0


# ----------------------------------------------------------------------------- markdown


def report_markdown(
    run: StudyRun, summary: pd.DataFrame, paired: pd.DataFrame, figures: Mapping[str, str]
) -> str:
    """The text of ``report.md``."""
    spec = run.spec
    parts = [f"# {spec.title}", ""]
    if spec.description:
        parts += [spec.description.strip(), ""]
    parts += [
        f"Study `{spec.name}`, scenario `{spec.scenario}`, definition digest "
        f"`{run.meta.get('digest', spec.digest())}`.",
        "",
    ]
    parts += _method(run)
    parts += ["## Results", ""]
    if run.replications is None or summary.empty:
        parts += ["No replication has finished yet: there are no results to report.", ""]
    else:
        several = len([v for v in run.variants if (summary["variant"] == v).any()]) > 1
        for variant in run.variants:
            if (summary["variant"] == variant).any():
                parts += _variant_section(run, summary, paired, figures, variant, several)
        parts += _monitor_section(run)
        parts += _figures_section(figures)
        parts += _paper_section(run, summary)
    parts += _training_section(run, figures)
    parts += _reproduce(run)
    return "\n".join(parts).rstrip() + "\n"


def _horizon(run: StudyRun) -> str:
    if run.spec.days is not None:
        return f"{run.spec.days:,} days"
    m = run.monthly
    if m is not None and len(m) and "days" in m:
        first = m.iloc[0]
        one = m[
            (m["variant"] == first["variant"])
            & (m["policy"] == first["policy"])
            & (m["replication"] == first["replication"])
        ]
        return f"the scenario's horizon ({int(one['days'].sum()):,} days evaluated)"
    return "the scenario's horizon"


def _method(run: StudyRun) -> list[str]:
    spec = run.spec
    r = spec.replications
    out = ["## Method", ""]
    out.append(
        f"**Setup.** Every policy runs on scenario `{spec.scenario}` for {_horizon(run)} on "
        f"the same {r} held-out replications, numbered 0–{r - 1}. A replication's index "
        "fixes every random draw (demand, lead times, disruptions), so all policies face "
        "identical demand and disruption paths (common random numbers) and are compared "
        "replication by replication. Tuning and training use other replications, numbered "
        f"from {TRAIN_BASE:,} upward and disjoint from the held-out ones, "
        + (
            f"on the variant `{spec.train_on}` only"
            if spec.train_on
            else "on the base scenario only"
        )
        + (
            ": the other variants below are evaluation conditions that no policy was tuned or "
            "trained on."
            if len(spec.variants) > 1
            else "."
        )
    )
    out += ["", "**Policies.**", ""]
    out += [f"- {_policy_text(run, p)}" for p in spec.policies]
    out += _preparation_section(run)
    if len(spec.variants) > 1 or _variant_changes(spec.variants[0]):
        out += ["", "**Variants.**", ""]
        out += [f"- `{v.name}`: {_variant_text(v)}" for v in spec.variants]
    if spec.events:
        windows = "; ".join(f"`{e.name}`: days {e.first_day}–{e.last_day}" for e in spec.events)
        out += [
            "",
            f"**Events.** For each event window ({windows}) we report per "
            "policy the days the network needed to recover, the customer stockouts "
            "during the window and the total cost per day during the window, and how "
            "many replications had not recovered when the horizon ended.",
        ]
    if spec.bound:
        out += [
            "",
            "**Perfect-information bound.** For every held-out replication we also "
            "solve a linear program that knows the replication's realized demand, lead "
            "times and outages in advance and relaxes integrality, lot sizes, fixed "
            "ordering costs, budgets, storage and contracts. Its cost per day is a lower "
            "bound on the cost per day of any policy on that replication, pure or "
            "hybrid: a yardstick, not a policy that could be run. The gap to the bound "
            "is 100 × (cost − bound) / bound per replication, averaged over "
            "replications.",
        ]
    out += [
        "",
        "**Statistics.** Tables show means over the held-out replications ± the "
        "half-width of a 95% Student-t confidence interval, t(0.975, n − 1) · s / √n. Each "
        f"policy is compared with the reference policy, **{spec.reference}**, by paired "
        "differences on the replications both have: the mean of the per-replication "
        "difference (policy − reference), its 95% t-interval, and the change in percent "
        "of the reference's mean; a difference is called significant when its interval "
        "excludes 0. Stockouts count (customer-facing node, day) pairs with demand left "
        "unfilled; the fill rate is the share of demand filled on the day it arrives; "
        "turnover is annualized; violations count released orders that break a "
        "constraint (capacity, budget, storage, lot size, contract).",
        "",
    ]
    return out


def _preparation_section(run: StudyRun) -> list[str]:
    """Every tuning and training with its simulated replication-days (planned and, for a
    tuning, used) and wall time, against the study's budget."""
    keys = run.spec.preparations()
    if not keys:
        return []
    planned = run.meta.get("planned_days") or {}
    rows = []
    for key in keys:
        kind, name = key.split("/", 1)
        record = (run.tuned if kind == "tune" else run.trained).get(name) or {}
        used = record.get("simulated_days") if kind == "tune" else None
        rows.append(
            [
                f"`{key}`",
                ", ".join(p.label for p in run.spec.policies if key in p.needs),
                _int(planned.get(key)),
                _int(used) if used is not None else MISSING,
                _duration(record.get("seconds")) if record else MISSING,
            ]
        )
    budget = run.spec.budget_days
    frame = pd.DataFrame(
        rows, columns=["Unit", "Used by", "Planned days", "Used days", "Wall time"]
    )
    return [
        "",
        "**Preparation and budgets.** Simulated replication-days of the whole network per "
        "tuning or training (a federation sums its organizations' local days; training, "
        "validation and a residual's base tuning count); planned before the study starts "
        + (
            f"and refused above the study's budget of {budget:,} days each."
            if budget is not None
            else "(the study sets no budget: they may differ)."
        ),
        "",
        markdown_table(frame),
    ]


def _policy_text(run: StudyRun, p: PolicySpec) -> str:
    name = POLICY_NAMES.get(p.policy, p.policy)
    head = f"**{p.label}** — {name} policy, {p.mode} mode"
    prepared = p.prepared_by
    key = prepared.split("/", 1)[1] if prepared else ""
    layer = " through the safety layer" if p.trained_in == "hybrid" else ""
    if p.policy in ("dqn", "hdpo"):
        record = run.trained.get(key)
        text = f"trained{layer} {TRAINING_TEXT.get(p.training, p.training)}"
        if p.policy == "hdpo" and p.trained_in == "hybrid":
            text += (
                " (its base tuned through the layer, the value of every violation its "
                "proposals make added to the training loss, validation run through the "
                "layer)"
            )
        if record is not None:
            text += (
                f": {_int(record.get('simulated_days'))} simulated days planned (training, "
                f"validation and base tunings), {_duration(record.get('seconds'))} of wall time"
            )
            if record.get("selected_round") is not None:
                text += (
                    f"; global round {record['selected_round']} selected on validation "
                    "replications over the full horizon"
                )
                if p.policy == "hdpo" and int(record["selected_round"]) == 0:
                    text += " (round 0 is its base policy, exactly)"
            if record.get("selected_iteration") is not None:
                k = int(record["selected_iteration"])
                text += (
                    f"; iteration {k} selected on validation replications over the full "
                    "horizon" + (" (iteration 0 is its base policy, exactly)" if k == 0 else "")
                )
        else:
            text += f" (no training record `units/{prepared}.json`)"
    elif prepared is not None and prepared.startswith("tune/"):
        record = run.tuned.get(key)
        per = "node" if p.tune_per == "node" else "tier"
        text = (
            f"parameters tuned{layer} by simulation: cyclic coordinate descent with a "
            f"golden-section search per coordinate (a safety factor z per {per}, and an "
            f"order-quantity multiple k of the EOQ per {per} where the policy has one), "
            f"{run.spec.tune_sweeps} sweeps, minimizing the mean cost per day"
            + (" of the orders the layer releases" if layer else "")
            + " over "
        )
        if record is not None:
            text += (
                f"{record.get('train_replications', run.spec.train_replications)} "
                f"training replications: {_int(record.get('evaluations'))} evaluations "
                f"= {_int(record.get('simulated_days'))} simulated days, "
                f"{_duration(record.get('seconds'))} of wall time"
            )
            coords = record.get("coords") or record.get("coordinates") or {}
            if coords:
                text += "; result " + ", ".join(f"{k} = {_number(v, 2)}" for k, v in coords.items())
            if _finite(record.get("train_cost_per_day")):
                text += f" (training cost ${_number(record['train_cost_per_day'], 2)}/day)"
        else:
            text += (
                f"{run.spec.train_replications} training replications (no tuning "
                f"record `units/{prepared}.json`)"
            )
    elif p.values is not None:
        text = (
            "fixed parameters given in the study definition: "
            f"`{json.dumps(p.values, sort_keys=True)}`"
        )
        if p.policy in _ROLLING:
            text = (
                "an optimization policy: "
                + _ROLLING[p.policy]
                + "; options "
                + f"`{json.dumps(p.values, sort_keys=True)}`"
            )
    elif p.policy in _ROLLING:
        text = "an optimization policy: " + _ROLLING[p.policy]
    else:
        text = (
            "textbook parameters, not tuned: levels at a 95% service factor (z = 1.645) "
            "on lead-time demand, order quantities from the EOQ"
        )
    if p.mode == "hybrid":
        text += (
            f". In hybrid mode its proposed orders pass through the safety layer "
            f"({p.solver}): each day the released orders are the nearest orders "
            "(weighted L1) that satisfy the capacity, budget, storage, lot-size and "
            "contract constraints"
        )
    if getattr(p, "coordination", "none") != "none":
        text += (
            ". "
            + _coordination_text(run, p)
            + (
                " (the safety layer projects its transfers with the orders)"
                if p.mode == "hybrid"
                else ""
            )
        )
    return f"{head}: {text}."


def _coordination_text(run: StudyRun, p: PolicySpec) -> str:
    """How a row's Coordination Node was set (docs/roles.md)."""
    text = (
        f"With a Coordination Node ({p.coordination}: lateral transfers between same-region "
        "peers from the one with stock to spare to the one projected short, the ordering "
        "policy seeing them as landed"
        + (
            "; it acts only on the day a node's projection crosses below the threshold, "
            "from a stock-out-risk signal to its peers and their offers"
            if p.coordination == "signalled"
            else "; every linked node shares its projection every day"
        )
        + ")"
    )
    if p.coordination_tuned_with:
        text += (
            f", with the threshold and reserve tuned for the node of {p.coordination_tuned_with}"
        )
    if p.coordination_params is not None:
        c = p.coordination_params
        return text + (
            f", threshold {_number(c['threshold'], 2)} and reserve "
            f"{_number(c['reserve'], 2)} days of mean demand given in the study definition"
        )
    record = run.tuned.get(str(p.coordinated_by).split("/", 1)[1])
    if record is None:
        return text + f", tuned (no tuning record `units/{p.coordinated_by}.json`)"
    c = record.get("params") or {}
    return text + (
        f", threshold {_number(c.get('threshold'), 2)} and reserve "
        f"{_number(c.get('reserve'), 2)} days of mean demand tuned around it by cyclic "
        f"coordinate descent on {_int(record.get('train_replications'))} training "
        f"replications{' through the safety layer' if record.get('mode') == 'hybrid' else ''}: "
        f"{_int(record.get('evaluations'))} evaluations = "
        f"{_int(record.get('simulated_days'))} simulated days, "
        f"{_duration(record.get('seconds'))} of wall time"
    )


_ROLLING = {
    "rolling-lp": "each day it solves the network-flow LP over a rolling horizon on a "
    "demand forecast and releases the first day's orders (nothing tuned or trained)",
    "rolling-sp": "every resolve_every days it solves a two-stage sample-average program "
    "over sampled futures of demand, lead times and outages (what a policy may know at "
    "decision time) from today's state and releases the plan's orders day by day "
    "(docs/hybrid.md; nothing tuned or trained)",
}


def _int(x: Any) -> str:
    return f"{int(x):,}" if _finite(x) else "an unknown number of"


def _variant_changes(v: VariantSpec) -> bool:
    return bool(v.scale or v.outages or v.surges or v.without_surges or v.lead_shifts)


def _variant_text(v: VariantSpec) -> str:
    changes = [f"{k.replace('_', ' ')} × {float(x):g}" for k, x in v.scale.items()]
    if v.outages:
        changes.append(f"{len(v.outages)} added outage{'s' if len(v.outages) > 1 else ''}")
    if v.without_surges:
        changes.append("the scenario's own surges removed")
    if v.surges:
        changes.append(f"{len(v.surges)} added demand surge{'s' if len(v.surges) > 1 else ''}")
    if v.lead_shifts:
        changes.append(
            "lead time "
            + ", ".join(
                f"× {float(x['factor']):g} on {x['lane']} from day {x['start_day']}"
                for x in v.lead_shifts
            )
        )
    what = "; ".join(changes) if changes else "the scenario as defined"
    return f"{v.description.rstrip('.')} ({what})." if v.description else f"{what}."


def _variant_section(
    run: StudyRun,
    summary: pd.DataFrame,
    paired: pd.DataFrame,
    figures: Mapping[str, str],
    variant: str,
    several: bool,
) -> list[str]:
    out = [f"### Variant `{variant}`" if several else "### Main results", ""]
    table = main_table(run, summary, variant)
    out += [
        f"**Policies on `{variant}`**: mean ± 95% CI over the held-out replications "
        "(n per policy).",
        "",
        markdown_table(table),
        "",
    ]
    cheapest = cheapest_respecting(run, summary, variant)
    stats = _Stats(summary)
    if cheapest is None:
        out += ["No policy respects the constraints on this variant.", ""]
    else:
        cost, ci, _ = stats.get(variant, cheapest, "total_cost_per_day")
        violating = [
            p
            for p in run.policies
            if stats.has(variant, p) and not respects_constraints(run, stats, variant, p)
        ]
        out += [
            f"**Cheapest policy that respects the constraints: {cheapest}** "
            f"(${_pm(cost, ci, _decimals('total_cost_per_day', cost))}/day). A policy "
            "respects them if it runs through the safety layer (hybrid mode) or releases "
            "no violating order on any replication"
            + (
                f"; {', '.join(violating)} release violating orders and are listed last, "
                "not comparable on cost alone."
                if violating
                else "; every policy here does."
            ),
            "",
        ]
    out += _hybrid_violations_section(run, summary, variant)
    out += _paired_section(run, paired, variant)
    out += _signals_section(run, variant)
    out += _event_section(run, summary, variant)
    key = f"monthly:{variant}"
    if key in figures:
        out += [
            f"![Monthly inventory turnover, stockouts and holding cost on `{variant}`]"
            f"({figures[key]})",
            "",
            f"*Monthly inventory turnover (annualized), stockouts and holding cost ($K) "
            f"on `{variant}`, mean over replications, one line per policy.*",
            "",
        ]
    return out


def bootstrap_ratio(
    num: np.ndarray, den: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> tuple[float, float, float]:
    """``mean(num) / mean(den)`` and its 95% percentile interval from a paired bootstrap
    over replications (the same resampled replications for both; ``seed`` fixed)."""
    num, den = np.asarray(num, float), np.asarray(den, float)
    ratio = float(num.mean() / den.mean()) if den.mean() else math.nan
    idx = np.random.default_rng(seed).integers(0, len(num), size=(samples, len(num)))
    d = den[idx].mean(axis=1)
    r = np.where(d != 0, num[idx].mean(axis=1) / np.where(d != 0, d, 1.0), np.nan)
    lo, hi = np.nanpercentile(r, [2.5, 97.5]) if np.isfinite(r).any() else (math.nan,) * 2
    return ratio, float(lo), float(hi)


def _daily_twin(spec: StudySpec, p: PolicySpec) -> PolicySpec | None:
    """A signalled row's daily-sharing twin: the row whose tuned rule it takes
    (``coordination_tuned_with``), or a ``balance`` row with the same ordering policy and
    the same given ``coordination_params`` (or, tuned itself, one tuned too); None if
    none (or ``p`` is not signalled)."""
    if p.coordination != "signalled":
        return None
    if p.coordination_tuned_with:
        return spec.policy(p.coordination_tuned_with)
    given = None if p.coordination_params is None else dict(p.coordination_params)
    return next(
        (
            q
            for q in spec.policies
            if q.coordination == "balance"
            and not q.coordination_tuned_with
            and (None if q.coordination_params is None else dict(q.coordination_params)) == given
            and all(getattr(q, k) == getattr(p, k) for k in SAME_ORDERING_POLICY)
        ),
        None,
    )


def _signals_section(run: StudyRun, variant: str) -> list[str]:
    """Per signalled row with a daily-sharing twin (:func:`_daily_twin`): the share of
    the daily node's gain over the row without a node that signals keep."""
    reps = run.replications
    if reps is None:
        return []
    sub = reps[reps["variant"] == variant]
    out: list[str] = []
    for p in run.spec.policies:
        daily = _daily_twin(run.spec, p)
        if daily is None:
            continue
        alone = next(
            (
                q
                for q in run.spec.policies
                if q.coordination == "none" and q.policy == p.policy and q.mode == p.mode
            ),
            None,
        )
        if alone is None:
            continue
        rows = {q.label: _by_replication(sub, q.label) for q in (p, daily, alone)}
        if any(r.empty for r in rows.values()):
            continue
        common = rows[p.label].index
        for r in rows.values():
            common = common.intersection(r.index)
        if len(common) < 2:
            continue
        texts = []
        for metric, sign, unit in (("total_cost_per_day", -1.0, "$/day"), ("fill_rate", 1.0, "")):
            a = rows[alone.label].loc[common, metric].to_numpy(float)
            g_daily = sign * (rows[daily.label].loc[common, metric].to_numpy(float) - a)
            g_sig = sign * (rows[p.label].loc[common, metric].to_numpy(float) - a)
            scale, unit = (100.0, " points") if metric == "fill_rate" else (1.0, f" {unit}")
            dd = paired_difference(pd.Series(g_daily * scale), pd.Series(np.zeros(len(a))))
            ds = paired_difference(pd.Series(g_sig * scale), pd.Series(np.zeros(len(a))))
            kept, lo, hi = bootstrap_ratio(g_sig, g_daily)
            significant = math.isfinite(dd["ci95"]) and abs(dd["mean"]) > dd["ci95"]
            what = "cost" if metric == "total_cost_per_day" else "fill-rate"
            texts.append(
                f"signals keep {_number(100 * kept, 0)}% of daily sharing's {what} gain "
                f"(95% bootstrap CI {_number(100 * lo, 0)}% to {_number(100 * hi, 0)}%): "
                f"daily sharing {_pm(dd['mean'], dd['ci95'], 2 if scale == 100 else 0)}"
                f"{unit}, signals {_pm(ds['mean'], ds['ci95'], 2 if scale == 100 else 0)}"
                f"{unit}"
                + (
                    ""
                    if significant
                    else " (daily sharing's own gain is not different from zero, so the "
                    "share says little)"
                )
            )
        msgs = {
            q.label: rows[q.label].loc[common].get("messages_per_agent_day") for q in (p, daily)
        }
        m_text = ", ".join(
            f"{'signals' if q is p else 'daily'} {_number(float(msgs[q.label].mean()), 3)}"
            for q in (p, daily)
            if msgs[q.label] is not None
        )
        out += [
            f"**Signals vs daily sharing on `{variant}`** ({p.label} against "
            f"{daily.label}, both against {alone.label}, {len(common)} common "
            f"replications): " + "; ".join(texts) + f". Messages per agent-day: {m_text}.",
            "",
        ]
    return out


def _monitor_section(run: StudyRun) -> list[str]:
    """The Analytics Monitor on the variants with a ``monitor`` table: false retrain
    alerts per organization-year on the no-drift control; on a drift variant, per
    target (each organization's total demand, each customer node, each drifted lane) how
    many replications alerted within the target and the median delay from the drift day
    (a replication without an alert on or after it counts as never)."""
    reps = run.replications
    monitored = [v for v in run.spec.variants if v.monitor is not None]
    if reps is None or not monitored or "monitor:drift" not in reps:
        return []
    from fedinv.model.scenario import load_scenario

    network = load_scenario(run.spec.scenario).network
    lanes = {ln.id: ln for ln in network.lanes}
    customers = list(network.customer_nodes)
    sellers = sorted({network.node(c).organization for c in customers})
    out = [
        "## Analytics Monitor",
        "",
        "The Analytics Monitor (docs/roles.md; default thresholds) on every evaluation of "
        "the monitored variants: retrain alerts from the demand CUSUMs (per customer node "
        "and per organization's total, against the plan: the scenario's demand model "
        "without surges) and the lead-time likelihood-ratio CUSUM per lane. Targets: a "
        f"demand shift within {DEMAND_DRIFT_BUDGET_DAYS} days, a doubled lead time within "
        f"the lane's expected lead time + {LEAD_DRIFT_EXTRA_DAYS} days, in at least 9 of 10 "
        "replications; at most one false alert per organization-year without drift.",
        "",
    ]
    rows = []
    for v in monitored:
        sub = reps[reps["variant"] == v.name]
        for p in run.policies:
            g = sub[sub["policy"] == p]
            if g.empty:
                continue
            n = len(g)
            cells = [v.name, p, str(n)]
            if v.monitor["drift"] == "none":
                per_org = [c for c in g.columns if c.startswith("monitor:retrain_by_org:")]
                years = len(per_org) and (run.spec.days or 365) / 365.0
                worst = max(
                    (float(g[c].mean()) / years for c in per_org if years), default=math.nan
                )
                rate = float(g["monitor:retrain_per_org_year"].mean())
                cells += [
                    f"false retrain alerts {_number(rate, 2)} per organization-year "
                    f"({int(g['monitor:retrain_alerts'].sum())} alerts; "
                    f"worst organization {_number(worst, 2)})"
                ]
            else:
                day = int(v.monitor["day"])
                cells += [_detections(g, v, day, lanes, customers, sellers)]
            rows.append(cells)
    out += [
        markdown_table(pd.DataFrame(rows, columns=["Variant", "Policy", "n", "Alerts"])),
        "",
    ]
    return out


def _detections(
    g: pd.DataFrame,
    v: VariantSpec,
    day: int,
    lanes: Mapping[str, Any],
    customers: Sequence[str],
    sellers: Sequence[str],
) -> str:
    """One drift variant's detections for one policy (:func:`_monitor_section`)."""
    n = len(g)

    def delays(column: str) -> np.ndarray:
        x = g[column].to_numpy(float) if column in g else np.full(n, np.nan)
        return np.where(np.isfinite(x), x, np.inf)

    def text(name: str, d: np.ndarray, budget: float) -> str:
        med = float(np.median(d))
        return (
            f"{name} {int((d <= budget).sum())}/{n} within {round(budget, 1):g} days "
            f"(median {_number(med, 0) if math.isfinite(med) else 'never'})"
        )

    before = (
        float(g["monitor:retrain_before_drift"].sum())
        if "monitor:retrain_before_drift" in g
        else 0.0
    )
    parts = []
    if v.monitor["drift"] == "demand":
        budget = DEMAND_DRIFT_BUDGET_DAYS
        parts += [
            text(f"{o} total", delays(f"monitor:first_after:org_demand_up:{o}"), budget)
            for o in sellers
        ]
        node_delays = [delays(f"monitor:first_after:demand_up:{x}") for x in customers]
        hits = [int((d <= budget).sum()) for d in node_delays]
        median = float(np.median(np.concatenate(node_delays)))
        parts.append(
            f"each customer node alone {min(hits)}-{max(hits)}/{n} within {budget} days "
            f"(median {_number(median, 0) if math.isfinite(median) else 'never'})"
        )
    else:
        for shift in v.lead_shifts:
            lane = str(shift["lane"])
            expected = float(lanes[lane].lead_time.mean_days) if lane in lanes else math.nan
            found = text(
                f"{lane} (E[L] {_number(expected, 1)})",
                delays(f"monitor:first_after:lead_time:{lane}"),
                expected + LEAD_DRIFT_EXTRA_DAYS,
            )
            col = f"monitor:shipments_in_budget:{lane}"
            if col in g:
                sent = g[col].to_numpy(float)
                none = int((g[f"monitor:shipments_after:{lane}"] == 0).sum())
                found += (
                    f" [{int(sent.min())}-{int(sent.max())} shipment days by then"
                    + (f"; none after the drift day in {none}/{n}" if none else "")
                    + "]"
                )
            parts.append(found)
    return "; ".join(parts) + f"; {int(before)} retrain alerts before day {day}"


HYBRID_VIOLATIONS = (
    ("capacity_violation_units", "Capacity (units)"),
    ("transport_violation_units", "Transport (units)"),
    ("lot_violation_units", "Lot size (units)"),
    ("storage_violation_units", "Storage (units)"),
    ("contract_violation_units", "Contract (units)"),
    ("budget_violation_dollars", "Budget ($)"),
    ("relaxations", "Relaxations"),
)
"""What a hybrid run may still release, by kind (per replication-year)."""


def _hybrid_violations_section(run: StudyRun, summary: pd.DataFrame, variant: str) -> list[str]:
    """Hybrid rows: what the released orders still break, by kind, and the relaxations
    recorded (docs/hybrid.md names the unavoidable ones)."""
    stats = _Stats(summary)
    rows = []
    for p in run.policies:
        if run.mode(p) != "hybrid" or not stats.has(variant, p):
            continue
        rows.append(
            [p] + [_stat_text(stats, variant, p, metric) for metric, _ in HYBRID_VIOLATIONS]
        )
    if not rows:
        return []
    frame = pd.DataFrame(rows, columns=["Policy"] + [label for _, label in HYBRID_VIOLATIONS])
    return [
        "**What hybrid mode still releases**, totals over the horizon per replication (mean ± 95% "
        "CI): violations by "
        "kind and the constraints the layer relaxed on infeasible days. docs/hybrid.md names "
        "the unavoidable ones: capacity during an outage's notice lag (the layer projects "
        "on the capacity announced so far) and the recorded relaxations (contract "
        "commitments first, then storage, then budgets, by the least amount).",
        "",
        markdown_table(frame),
        "",
    ]


def _reading(row: Any) -> str:
    """``4.1% ± 1.0% cheaper`` (or an absolute difference), whichever way it points."""
    spec = METRICS.get(row.metric, _Metric(row.metric, 2))
    word_of = spec.lower if row.mean < 0 else spec.higher
    if row.mean == 0:
        return "no difference"
    if spec.relative and _finite(row.percent):
        half = f" ± {abs(row.percent_ci95):.1f}%" if _finite(row.percent_ci95) else ""
        return f"{abs(row.percent):.1f}%{half} {word_of}"
    d = _decimals(row.metric, row.reference_mean)
    return f"{_pm(abs(row.mean), row.ci95, d)} {word_of}"


def _paired_section(run: StudyRun, paired: pd.DataFrame, variant: str) -> list[str]:
    ref = run.spec.reference
    sub = paired[paired["variant"] == variant]
    title = f"**Paired differences against the reference, {ref}** (policy − reference)"
    if sub.empty:
        others = [p for p in run.policies if p != ref]
        why = (
            "no other policy"
            if not others
            else f"no results for the reference {ref} or no replication in common"
        )
        return [f"{title}: none ({why}).", ""]
    out = [f"{title}, on common replications:", ""]
    for row in sub[sub["metric"] == "total_cost_per_day"].itertuples(index=False):
        d = _decimals(row.metric, row.reference_mean)
        sign = "−" if row.mean < 0 else "+"
        money = f"{sign}${_pm(abs(row.mean), row.ci95, d)} per day"
        verdict = (
            "the interval excludes 0."
            if row.excludes_zero
            else "the interval includes 0, so the difference is not significant at the 95% level."
        )
        reading = _reading(row)
        sentence = (
            f"**{row.policy}** has the same cost as **{ref}**"
            if reading == "no difference"
            else f"**{row.policy}** is {reading} than **{ref}**"
        )
        out.append(f"- {sentence} ({money}, n = {row.n}); {verdict}")
    out.append("")
    rows = []
    for row in sub.itertuples(index=False):
        d = _decimals(row.metric, row.reference_mean)
        rows.append(
            [
                row.policy,
                _label(row.metric),
                _pm(row.mean, row.ci95, d),
                (f"{row.percent:+.1f}%" if _finite(row.percent) else MISSING),
                _reading(row),
                "yes" if row.excludes_zero else "no",
                str(row.n),
            ]
        )
    table = pd.DataFrame(
        rows,
        columns=["Policy", "Metric", "Difference ± 95% CI", "Change", "Reading", "Excludes 0", "n"],
    )
    return out + [markdown_table(table), ""]


def _event_section(run: StudyRun, summary: pd.DataFrame, variant: str) -> list[str]:
    rep = run.replications
    if rep is None:
        return []
    stats = _Stats(summary)
    out: list[str] = []
    windows = {e.name: e for e in run.spec.events}
    for event in event_names(rep.columns, run.spec):
        prefix = f"event:{event}:"
        sub = rep[rep["variant"] == variant]
        rows = []
        censored_note = False
        for p in run.policies:
            group = sub[sub["policy"] == p]
            if group.empty:
                continue
            cells = [p]
            for f in ("recovery_days", "stockouts", "cost_per_day"):
                metric = prefix + f
                mean, ci, _ = stats.get(variant, p, metric)
                d = 1 if f != "cost_per_day" else _decimals("total_cost_per_day", mean)
                cells.append(_pm(mean, ci, d) if metric in rep else MISSING)
            if prefix + "recovered" in group:
                recovered = group[prefix + "recovered"].astype(bool)
                missing = int((~recovered).sum())
                cells.append(f"{missing} of {len(group)}")
                days = group.get(prefix + "recovery_days")
                if missing and days is not None and days[~recovered].notna().any():
                    censored_note = True
            else:
                cells.append(MISSING)
            rows.append(cells)
        if not rows:
            continue
        e = windows.get(event)
        span = f" (days {e.first_day}–{e.last_day})" if e is not None else ""
        table = pd.DataFrame(
            rows,
            columns=[
                "Policy",
                "Recovery days",
                "Stockouts in window",
                "Cost $/day in window",
                "Not recovered",
            ],
        )
        out += [
            f"**Event `{event}`{span} on `{variant}`**: mean ± 95% CI.",
            "",
            markdown_table(table),
            "",
        ]
        definition = run.meta.get("recovery_definition")
        if definition and event == event_names(rep.columns, run.spec)[0]:
            out += [f"Recovery days: {definition}.", ""]
        if censored_note:
            out += [
                "Replications that had not recovered when the horizon ended count in "
                "the recovery days with the days they were observed, so those means "
                "are lower bounds.",
                "",
            ]
        elif any(r[-1] not in (MISSING,) and not r[-1].startswith("0 ") for r in rows):
            out += ["Recovery days are means over the replications that recovered.", ""]
    return out


def _figures_section(figures: Mapping[str, str]) -> list[str]:
    out = []
    if "cost" in figures:
        out += [
            "### Cost and constraint violations",
            "",
            f"![Mean cost per day per policy and variant]({figures['cost']})",
            "",
            "*Mean total cost per day with 95% CIs, grouped by variant (hatched: hybrid "
            "mode); dashed: the perfect-information bound, a lower bound.*",
            "",
        ]
    if "cost-vs-violations" in figures:
        out += [
            f"![Cost vs violations]({figures['cost-vs-violations']})",
            "",
            "*Mean total cost per day against constraint violations per month, 95% CIs "
            "on both axes; circles: pure mode, squares: hybrid mode.*",
            "",
        ]
    return out


def _paper_section(run: StudyRun, summary: pd.DataFrame) -> list[str]:
    paper = run.spec.paper
    if not paper:
        return []
    stats = _Stats(summary)
    variant = _first_variant(run)
    metrics: list[str] = []
    for row in paper:
        metrics += [k for k in row if k not in ("label", "source") and k not in metrics]
    rows = []
    for row in paper:
        cells = [f"{row['label']}", "the paper (as reported)"]
        for m in metrics:
            value = row.get(m)
            cells.append(_number(value, _decimals(m, float(value))) if _finite(value) else MISSING)
        rows.append(cells)
    for p in run.policies:
        if stats.has(variant, p):
            rows.append(
                [p, f"ours (`{variant}`, n = {stats.get(variant, p, 'total_cost_per_day')[2]})"]
                + [_stat_text(stats, variant, p, m) for m in metrics]
            )
    table = pd.DataFrame(rows, columns=["Policy", "Source"] + [_label(m) for m in metrics])
    sources = sorted({str(r["source"]) for r in paper if r.get("source")})
    cite = f" ({'; '.join(sources)})" if sources else ""
    return [
        "## Ours vs the paper's reported figures",
        "",
        f"The first rows are the figures the paper reports{cite}, copied, not "
        "re-measured; the rows marked *ours* are measured here (mean ± 95% CI). The "
        "paper's setup and metric definitions may differ from ours, so compare "
        "directions and orders of magnitude rather than exact values.",
        "",
        markdown_table(table),
        "",
    ]


def _training_section(run: StudyRun, figures: Mapping[str, str]) -> list[str]:
    if not run.trained and not run.tuned:
        return []
    out = ["## Preparation: tuning and training", ""]
    rows = []
    for name, r in run.tuned.items():
        what = POLICY_NAMES.get(name, name)
        if "row" in r and "rule" in r:
            what = f"the Coordination Node of {r['row']}"
        rows.append(
            [
                f"tune {what} ({_int(r.get('evaluations'))} evaluations)",
                _int(r.get("simulated_days")),
                _duration(r.get("seconds")),
                _number(r.get("train_cost_per_day"), 2),
            ]
        )
    curves = dict(_training_curves(run))
    for kind, r in run.trained.items():
        curve = curves.get(kind)
        last, what = MISSING, ""
        if curve is not None and len(curve):
            last = _number(curve["cost_per_day"].iloc[-1], 2)
            unit = str(curve["x_label"].iloc[-1]) if "x_label" in curve else "x"
            what = f" ({unit} {_number(curve['x'].iloc[-1], 0)})"
        rows.append(
            [
                f"train {str(r.get('algo') or 'dqn').upper()}, {kind}{what}",
                _int(r.get("simulated_days")),
                _duration(r.get("seconds")),
                last,
            ]
        )
    table = pd.DataFrame(rows, columns=["Unit", "Simulated days", "Wall time", "Final cost $/day"])
    out += [
        markdown_table(table),
        "",
        "Final cost: tuning, the mean cost per day of the tuned parameters on the "
        "training replications; training, the last point of the validation curve.",
        "",
    ]
    if run.spec.training:
        settings = ", ".join(f"{k} = {v}" for k, v in run.spec.training.items())
        out += [f"Training settings: {settings}.", ""]
    if "training" in figures:
        out += [
            f"![Training curves]({figures['training']})",
            "",
            "*Validation cost per day of the learned policies during training (95% CI "
            "where recorded); validation replications, not the held-out ones.*",
            "",
        ]
    return out


def _reproduce(run: StudyRun) -> list[str]:
    meta = run.meta
    out = ["## Reproduce", ""]
    if meta.get("command"):
        out += ["```", str(meta["command"]), "```", ""]
    engine = meta.get("engine", "unknown")
    workers = meta.get("workers")
    on = f"the `{engine}` engine" + (f" with {workers} workers" if workers else "")
    if meta.get("finished"):
        out.append(
            f"The run started {meta.get('started', '?')} and finished "
            f"{meta['finished']}: {_duration(meta.get('seconds'))} of wall time on "
            f"{on}."
        )
    else:
        out.append(
            f"The run started {meta.get('started', '?')} and has not finished "
            f"({_duration(meta.get('seconds'))} so far, on {on}): these results cover "
            "the replications finished so far."
        )
    rep = run.replications
    if rep is not None and "seconds" in rep and rep["seconds"].notna().any():
        out[-1] += f" The evaluation units' own times sum to {_duration(rep['seconds'].sum())}."
    out += ["", "`fedinv report DIR` re-renders this report from the saved results.", ""]
    versions = meta.get("versions") or {}
    if versions:
        out += [
            "Package versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) + ".",
            "",
        ]
    return out
