"""The Analytics Monitor: the CUSUM by hand, the detectors fire on a planted shift and stay
quiet on a stationary stream, overdue shipments count, and the rolling KPIs."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from fedinv.model.scenario import parse_scenario
from fedinv.policies.classical import make_policy
from fedinv.roles.monitor import ALERT_COLUMNS, MonitorConfig, cusum, watch
from fedinv.sim.simulator import Simulator

STORE = """
name = "store"
horizon_days = 365
[[organizations]]
id = "shop"
[[nodes]]
id = "plant"
tier = "manufacturer"
region = "R"
organization = "shop"
[[nodes]]
id = "store"
tier = "distributor"
region = "R"
organization = "shop"
demand = { distribution = "poisson", mean = 60 }
[[lanes]]
source = "external"
destination = "plant"
lead_time = { distribution = "deterministic", mean = 12 }
[[lanes]]
source = "plant"
destination = "store"
lead_time = { distribution = "deterministic", mean = 4 }
"""
SHIFT = 100
REPS = [0, 1, 2, 3]


@pytest.fixture(scope="module")
def store():
    scen = parse_scenario(tomllib.loads(STORE), "store.toml", Path("."))
    sim = Simulator(scen)
    return scen, sim, make_policy("base-stock", sim.layout)


def test_cusum_by_hand():
    """Evidence (already less k) 1, 1, 1, -5, 2, 2 with h = 2.5: S = 1, 2, 3 (alarm,
    restart), 0, 2, 4 (alarm); a day without evidence leaves S as it was."""
    stat, alarm = cusum(np.array([1.0, 1, 1, -5, 2, 2])[:, None], 2.5)
    assert stat[:, 0].tolist() == [1, 2, 3, 0, 2, 4]
    assert np.flatnonzero(alarm[:, 0]).tolist() == [2, 5]
    present = np.array([True, False, True])[:, None]
    stat, _ = cusum(np.array([1.0, 9.0, 1.0])[:, None], 2.5, present)
    assert stat[:, 0].tolist() == [1, 1, 2]


def test_quiet_on_a_stationary_stream(store):
    """Poisson demand as planned and lead times as their law: no retrain alert in four
    replication-years (the thresholds allow well under one per organization-year)."""
    _, sim, policy = store
    run = watch(sim, policy, REPS)
    assert list(run.alerts.columns) == list(ALERT_COLUMNS)
    assert (run.alerts.kind == "retrain").sum() == 0


def test_fires_on_a_planted_demand_shift(store):
    """Demand 60 -> 78 a day (+30%, 2.3 standard deviations) from day 100: the
    organization's demand detector alerts within 14 days in every replication (expected
    delay about (8 + 1.17) / (2.3 - 0.5) = 5 days), and nothing alerts before."""
    scen, sim, policy = store
    _, exo = sim.reset(REPS)
    rng = np.random.default_rng(7)
    exo.demand[:, SHIFT:, 1] += rng.poisson(18.0, exo.demand[:, SHIFT:, 1].shape)
    a = watch(sim, policy, REPS, exogenous=exo, plan_scenario=scen).alerts
    assert not ((a.kind == "retrain") & (a.day < SHIFT)).any()
    up = a[(a.metric == "org_demand_up") & (a.day >= SHIFT)]
    first = up.groupby("replication").day.min() - SHIFT
    assert sorted(first.index) == REPS
    assert (first <= 14).all()


def test_a_doubled_lead_time_is_seen_from_overdue_shipments(store):
    """The store's lane takes 8 days instead of 4 from day 100: shipments are overdue
    from day 104 + 1.25 x 0.5 (sd floored at half a day) and the lane alerts before the
    first of them lands (day 108), within E[L] + 7 = 11 days of the change."""
    scen, sim, policy = store
    _, exo = sim.reset(REPS)
    exo.lead[:, SHIFT:, 1] = 8
    a = watch(sim, policy, REPS, exogenous=exo, plan_scenario=scen).alerts
    lead = a[a.metric == "lead_time"]
    assert (lead.day >= SHIFT).all() and set(lead.lane) == {"plant->store"}
    first = lead.groupby("replication").day.min() - SHIFT
    assert sorted(first.index) == REPS
    assert (first < 8).all() and (first <= 11).all()


def test_rolling_fill_rate_is_that_of_the_window(store):
    """The KPI stream's fill rate on day t is filled / demand over days t-27..t."""
    _, sim, policy = store
    run = watch(sim, policy, REPS[:1], MonitorConfig(window_days=28))
    k = run.kpis.set_index("day")
    d, f = run.records["demand"][:, 0, 1], run.records["filled"][:, 0, 1]
    for t in (27, 200, 364):
        want = f[t - 27 : t + 1].sum() / d[t - 27 : t + 1].sum()
        assert k.loc[t, "fill_rate"] == pytest.approx(want)
    assert k.loc[364, "cost_per_day"] == pytest.approx(
        run.records["total_cost"][337:, 0].sum() / 28
    )


def test_simulate_monitor_writes_the_alerts(tmp_path, capsys):
    from fedinv.cli import main

    out = tmp_path / "run"
    argv = ["simulate", "--scenario", "electronics-5r", "--policy", "base-stock"]
    rc = main([*argv, "--days", "40", "--replications", "1", "--monitor", "--out", str(out)])
    assert rc == 0
    assert "monitor:" in capsys.readouterr().out
    header = (out / "alerts.csv").read_text().splitlines()[0]
    assert header.split(",") == list(ALERT_COLUMNS)
    kpis = (out / "kpis.csv").read_text().splitlines()
    assert len(kpis) == 1 + 40 * 5  # a row per day and organization
    assert main([*argv, "--monitor", "--mode", "hybrid"]) != 0
    assert "pure-mode" in capsys.readouterr().err


def test_config_is_checked():
    with pytest.raises(ValueError, match="window_days"):
        MonitorConfig(window_days=0)
    with pytest.raises(ValueError, match="lead_h"):
        MonitorConfig(lead_h=float("nan"))
