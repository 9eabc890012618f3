"""studies.report on a synthetic run folder with numbers small enough to check by hand."""

import dataclasses
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from studies.report import (
    PAIRED_COLUMNS,
    SUMMARY_COLUMNS,
    load_run,
    print_summary,
    render_report,
    summary_frame,
    summary_table,
)
from studies.spec import EventSpec, PolicySpec, StudySpec, VariantSpec

BS, SS, DQN = "Base-stock (tuned)", "(s,S) textbook", "DQN federated + safety"
COST = {  # variant -> policy -> total cost per day of replications 0..3
    "base": {
        BS: [1000.0, 1100.0, 1050.0, 980.0],
        SS: [1100.0, 1150.0, 1120.0, 1050.0],
        DQN: [960.0, 1040.0, 1030.0, 950.0],
    },
    "tight": {
        BS: [1200.0, 1300.0, 1250.0, 1180.0],
        SS: [1400.0, 1450.0, 1420.0, 1350.0],
        DQN: [1250.0, 1240.0, 1290.0, 1160.0],
    },
}
BOUND = {"base": [900.0, 950.0, 1000.0, 920.0], "tight": [1100.0, 1150.0, 1200.0, 1120.0]}
PAPER = {
    "label": "RL-based (paper)",
    "inventory_turnover": 9.51,
    "stockouts_per_month": 3.02,
    "holding_cost_k_per_month": 14.32,
}


def _spec(**changes) -> StudySpec:
    spec = StudySpec(
        name="demo",
        title="Demo study",
        description="A synthetic study.",
        scenario="electronics-5r",
        replications=4,
        days=365,
        reference=BS,
        policies=(
            PolicySpec(BS, "base-stock"),
            PolicySpec(SS, "sS", params="textbook"),
            PolicySpec(DQN, "dqn", training="federated", mode="hybrid", train_mode="pure"),
        ),
        variants=(
            VariantSpec("base"),
            VariantSpec("tight", "Capacity cut by 20%.", scale={"capacity": 0.8}),
        ),
        events=(EventSpec("outage", 100, 129),),
        training={"rounds": 3},
        paper=(PAPER,),
        source="studies/demo.toml",
    )
    return dataclasses.replace(spec, **changes)


def _replications(spec: StudySpec, gap: bool = True) -> pd.DataFrame:
    rows = []
    for variant in (v.name for v in spec.variants):
        for p in spec.policies:
            for r, cost in enumerate(COST[variant][p.label]):
                if variant == "base" and p.label == SS and r == 3:
                    continue  # a replication missing: paired on the common ones only
                hybrid = p.mode == "hybrid"
                row = {
                    "variant": variant,
                    "policy": p.label,
                    "replication": r,
                    "mode": p.mode,
                    "seconds": 2.0 + r,
                    "total_cost_per_day": cost,
                    "holding_cost_k_per_month": cost / 100.0 + r,
                    "stockouts_per_month": 3.0 + r + (p.label == SS),
                    "fill_rate": 0.95 + 0.01 * r,
                    "inventory_turnover": 8.0 + r,
                    "violations_per_month": 0.0 if hybrid else 1.0 + r,
                    "projection_l1_per_day": 5.0 + r if hybrid else math.nan,
                    "solve_ms_median": 1.5 if hybrid else math.nan,
                    "bound_cost_per_day": BOUND[variant][r],
                    "event:outage:recovery_days": 10 + r,
                    "event:outage:stockouts": 2 * r,
                    "event:outage:cost_per_day": cost * 1.5,
                    "event:outage:recovered": not (p.label == SS and r == 2),
                }
                if gap:
                    row["gap_to_bound_pct"] = 100 * (cost - BOUND[variant][r]) / BOUND[variant][r]
                rows.append(row)
    return pd.DataFrame(rows)


def _monthly(spec: StudySpec) -> pd.DataFrame:
    rows = []
    for variant in (v.name for v in spec.variants):
        for i, p in enumerate(spec.policies):
            for r in range(spec.replications):
                for month in range(1, 13):
                    rows.append(
                        {
                            "variant": variant,
                            "policy": p.label,
                            "replication": r,
                            "month": month,
                            "days": 30,
                            "holding_cost_k": 10.0 + i,
                            "total_cost_k": 30.0 + month,
                            "stockouts": r + i,
                            "fill_rate": 0.97,
                            "inventory_turnover": 8.0 + month / 12,
                        }
                    )
    return pd.DataFrame(rows)


def write_run(
    out: Path,
    spec: StudySpec,
    *,
    replications: pd.DataFrame | None = None,
    monthly: bool = True,
    units: bool = True,
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "spec": dataclasses.asdict(spec),
        "digest": spec.digest(),
        "command": "fedinv run studies/demo.toml --out runs/demo",
        "versions": {"fedinv": "0.1.0", "numpy": "2.0.0"},
        "started": "2025-01-01T10:00:00",
        "finished": "2025-01-01T10:05:00",
        "seconds": 300.0,
        "workers": 4,
        "engine": "in-process",
    }
    (out / "study.json").write_text(json.dumps(doc))
    (out / "results").mkdir(exist_ok=True)
    if replications is not None:
        replications.to_parquet(out / "results" / "replications.parquet")
    if monthly:
        _monthly(spec).to_parquet(out / "results" / "monthly.parquet")
    if units:
        tune, train = out / "units" / "tune", out / "units" / "train"
        tune.mkdir(parents=True)
        train.mkdir(parents=True)
        (tune / "base-stock.json").write_text(
            json.dumps(
                {
                    "policy": "base-stock",
                    "params": {"r1": {"level": 40.0}},
                    "coords": {"z:retailer": 1.23},
                    "train_cost_per_day": 1010.5,
                    "evaluations": 45,
                    "simulated_days": 262800,
                    "train_replications": 16,
                    "seconds": 12.3,
                }
            )
        )
        pd.DataFrame(
            {
                "x": [1, 2, 3],
                "x_label": "round",
                "cost_per_day": [2000.0, 1500, 1100],
                "ci95": [100.0, 80, 50],
            }
        ).to_csv(train / "federated-curve.csv", index=False)
        (train / "federated.json").write_text(
            json.dumps(
                {
                    "kind": "federated",
                    "seconds": 95.0,
                    "simulated_days": 43200,
                    "checkpoint": "units/train/federated.pt",
                    "curve": "units/train/federated-curve.csv",
                }
            )
        )
    return out


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    spec = _spec()
    out = write_run(tmp_path_factory.mktemp("run"), spec, replications=_replications(spec))
    report = render_report(out)
    return out, report.read_text(encoding="utf-8")


def _row(frame: pd.DataFrame, **keys) -> pd.Series:
    mask = np.ones(len(frame), bool)
    for k, v in keys.items():
        mask &= frame[k] == v
    assert mask.sum() == 1, keys
    return frame[mask].iloc[0]


def _t_half(x) -> float:
    x = np.asarray(x, float)
    return stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))


def test_summary_csv_means_and_t_intervals(rendered):
    out, _ = rendered
    summary = pd.read_csv(out / "results" / "summary.csv")
    assert tuple(summary.columns) == SUMMARY_COLUMNS
    row = _row(summary, variant="base", policy=DQN, metric="total_cost_per_day")
    assert row["n"] == 4 and row["mode"] == "hybrid"
    assert row["mean"] == pytest.approx(995.0)
    assert row["ci95"] == pytest.approx(_t_half(COST["base"][DQN]))
    # the missing replication: n = 3
    row = _row(summary, variant="base", policy=SS, metric="total_cost_per_day")
    assert row["n"] == 3 and row["mean"] == pytest.approx(np.mean(COST["base"][SS][:3]))
    # hybrid-only metrics: rows for the hybrid policy only
    l1 = summary[summary["metric"] == "projection_l1_per_day"]
    assert set(l1["policy"]) == {DQN}
    # booleans as shares
    row = _row(summary, variant="base", policy=SS, metric="event:outage:recovered")
    assert row["mean"] == pytest.approx(2 / 3)


def test_gap_to_bound_is_the_mean_of_per_replication_gaps(rendered):
    out, _ = rendered
    summary = pd.read_csv(out / "results" / "summary.csv")
    gaps = [100 * (c - b) / b for c, b in zip(COST["base"][DQN], BOUND["base"], strict=True)]
    row = _row(summary, variant="base", policy=DQN, metric="gap_to_bound_pct")
    assert row["mean"] == pytest.approx(np.mean(gaps))  # 5.600...
    assert row["ci95"] == pytest.approx(_t_half(gaps))


def test_gap_is_computed_when_the_runner_left_it_out(tmp_path):
    spec = _spec()
    out = write_run(
        tmp_path, spec, replications=_replications(spec, gap=False), monthly=False, units=False
    )
    run = load_run(out)
    summary = summary_frame(run.replications, run.variants, run.policies)
    row = _row(summary, variant="tight", policy=BS, metric="gap_to_bound_pct")
    gaps = [100 * (c - b) / b for c, b in zip(COST["tight"][BS], BOUND["tight"], strict=True)]
    assert row["mean"] == pytest.approx(np.mean(gaps))


def test_paired_differences_on_common_replications(rendered):
    out, _ = rendered
    paired = pd.read_csv(out / "results" / "paired.csv")
    assert tuple(paired.columns) == PAIRED_COLUMNS
    assert not (paired["policy"] == BS).any()  # the reference is not compared with itself
    diff = np.subtract(COST["base"][DQN], COST["base"][BS])  # -40 -60 -20 -30
    row = _row(paired, variant="base", policy=DQN, metric="total_cost_per_day")
    low, high = stats.t.interval(0.95, len(diff) - 1, loc=diff.mean(), scale=stats.sem(diff))
    assert row["mean"] == pytest.approx(-37.5)
    assert row["ci95"] == pytest.approx((high - low) / 2)
    assert row["percent"] == pytest.approx(100 * -37.5 / np.mean(COST["base"][BS]))
    assert row["percent_ci95"] == pytest.approx(100 * row["ci95"] / np.mean(COST["base"][BS]))
    assert row["excludes_zero"] and row["n"] == 4 and row["reference"] == BS
    # (s,S) lacks replication 3 on base: compared on 0..2 only
    row = _row(paired, variant="base", policy=SS, metric="total_cost_per_day")
    d3 = np.subtract(COST["base"][SS][:3], COST["base"][BS][:3])
    assert row["n"] == 3 and row["mean"] == pytest.approx(d3.mean())
    assert row["reference_mean"] == pytest.approx(np.mean(COST["base"][BS][:3]))
    # tight: DQN - BS = 50, -60, 40, -20 -> mean 2.5, the interval includes 0
    row = _row(paired, variant="tight", policy=DQN, metric="total_cost_per_day")
    assert row["mean"] == pytest.approx(2.5) and not row["excludes_zero"]
    assert set(paired["metric"]) == {
        "total_cost_per_day",
        "fill_rate",
        "stockouts_per_month",
        "holding_cost_k_per_month",
        "inventory_turnover",
        "violations_per_month",
    }


def test_report_reads_as_a_results_section(rendered):
    out, text = rendered
    assert text.startswith("# Demo study\n")
    assert "## Method" in text and "common random numbers" in text
    assert "0–3" in text and "1,000,000" in text and "Student-t" in text
    assert "45 evaluations = 262,800 simulated days" in text
    assert "43,200 simulated days planned" in text and "textbook parameters" in text
    assert "a lower bound" in text and "not a policy" in text
    # the direction is stated whichever way it points
    pct = 100 * 37.5 / np.mean(COST["base"][BS])
    assert f"**{DQN}** is {pct:.1f}% ±" in text and f"cheaper than **{BS}**" in text
    assert "more expensive than" in text and "not significant at the 95% level" in text
    # hybrid columns, the bound row, the event table
    assert "Projection L1/day" in text and "Perfect-information bound (not a policy)" in text
    assert "**Event `outage` (days 100–129) on `base`**" in text and "1 of 3" in text
    # figures exist and are linked relatively
    for name in (
        "monthly.png",
        "monthly-tight.png",
        "training.png",
        "cost.png",
        "cost-vs-violations.png",
    ):
        assert (out / "figures" / name).stat().st_size > 1000
        assert f"](figures/{name})" in text or name == "monthly-tight.png"
    assert "](figures/monthly-tight.png)" in text
    assert "fedinv run studies/demo.toml --out runs/demo" in text and "numpy 2.0.0" in text
    assert "5 min 00 s" in text and "`in-process` engine with 4 workers" in text
    assert not list(out.rglob("*.tmp"))


def test_paper_rows_are_labelled_as_the_papers(rendered):
    _, text = rendered
    section = text.split("## Ours vs the paper's reported figures", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("| ")]
    paper = [ln for ln in lines if "RL-based (paper)" in ln]
    assert len(paper) == 1 and "the paper (as reported)" in paper[0]
    assert "9.51" in paper[0] and "3.02" in paper[0] and "14.32" in paper[0]
    ours = [ln for ln in lines if "ours (`base`" in ln]
    assert len(ours) == 3 and any(DQN in ln for ln in ours)
    assert "Turnover" in lines[0] and "Holding $K/month" in lines[0]


def test_rerendering_is_idempotent(rendered):
    out, text = rendered
    files = sorted(p for p in out.rglob("*") if p.is_file())
    before = {p: p.read_bytes() for p in files}
    render_report(out)
    assert sorted(p for p in out.rglob("*") if p.is_file()) == files
    changed = [p.name for p in files if p.read_bytes() != before[p]]
    assert changed == []


def test_missing_optional_parts_are_tolerated(tmp_path):
    spec = StudySpec(
        name="mini",
        title="Mini",
        scenario="serial-3",
        policies=(PolicySpec("sS", "sS", params="textbook"),),
        reference="sS",
        replications=2,
        bound=False,
    )
    rep = pd.DataFrame(
        {
            "variant": "base",
            "policy": "sS",
            "replication": [0, 1],
            "mode": "pure",
            "seconds": 1.0,
            "total_cost_per_day": [10.0, 12.0],
            "fill_rate": [0.9, 0.8],
            "violations_per_month": [0.0, 0.0],
            "bound_cost_per_day": math.nan,
            "gap_to_bound_pct": math.nan,
        }
    )
    out = write_run(tmp_path / "a", spec, replications=rep, monthly=False, units=False)
    text = render_report(out).read_text()
    assert "paper" not in text.lower() and "Gap to bound" not in text
    assert "Event" not in text and "Perfect-information" not in text
    assert "**sS** — (s, S) policy, pure mode: textbook parameters" in text
    assert "none (no other policy)" in text
    assert sorted(p.name for p in (out / "figures").iterdir()) == [
        "cost-vs-violations.png",
        "cost.png",
    ]
    assert pd.read_csv(out / "results" / "paired.csv").empty
    summary = pd.read_csv(out / "results" / "summary.csv")
    row = _row(summary, policy="sS", metric="total_cost_per_day")
    assert row["mean"] == pytest.approx(11.0) and row["n"] == 2
    # nothing but study.json: a report that says so
    empty = write_run(tmp_path / "b", spec, monthly=False, units=False)
    text = render_report(empty).read_text()
    assert "No replication has finished yet" in text
    assert pd.read_csv(empty / "results" / "summary.csv").empty
    assert summary_table(empty).empty


def test_summary_table_for_the_cli(rendered, capsys):
    out, _ = rendered
    table = summary_table(out)
    # the hybrid DQN respects the constraints; the pure rows release violating orders
    # (1 + r a month) and come after it
    assert list(table["Policy"])[:3] == [DQN, f"{BS} (reference)", SS]
    assert list(table["Respects constraints"])[:3] == ["yes", "no", "no"]
    assert table.loc[0, "Cost $/day"] == f"995 ± {_t_half(COST['base'][DQN]):.0f}"
    assert table.loc[1, "Fill rate"].startswith("0.965 ± ")
    assert summary_table(out, "tight").loc[1, "Cost $/day"].startswith("1,232 ± ")
    print_summary(out)
    assert "Demo study: variant base" in capsys.readouterr().out
    from rich.console import Console

    buffer = io.StringIO()
    print_summary(out, Console(file=buffer, width=250))
    assert "995 ±" in buffer.getvalue()


def test_load_run_reads_units(rendered):
    out, _ = rendered
    run = load_run(out)
    assert run.spec == _spec()
    assert set(run.tuned) == {"base-stock"} and set(run.trained) == {"federated"}
    assert run.variants == ["base", "tight"] and run.policies == [BS, SS, DQN]
