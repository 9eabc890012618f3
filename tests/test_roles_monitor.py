"""The Analytics Monitor: the CUSUM and the lead-time log-likelihood ratio by hand, the
detectors fire on a planted shift and stay quiet on a stationary stream, overdue shipments
count before they land (and the alert does not depend on when they will), and the rolling
KPIs."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from fedinv.model.scenario import parse_scenario
from fedinv.policies.classical import make_policy
from fedinv.roles.monitor import (
    ALERT_COLUMNS,
    LEAD_HAZARD_FLOOR,
    MonitorConfig,
    cusum,
    lead_alternative,
    lead_llr_terms,
    watch,
)
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


def test_the_slower_law_by_hand():
    """Each whole day ``l`` read as ``(l - 1, l]``, stretched ``rho`` times, rounded up:
    a deterministic 4 days at rho 2 is 7 or 8 days (half each), at rho 1.5 5 or 6 days
    ((4.5, 5] and (5, 6]: 1/3 and 2/3); 1 or 2 days at rho 2 is 1..4 days, 1/4 each."""
    four = np.array([0, 0, 0, 0, 1.0])
    assert lead_alternative(four, 2.0) == pytest.approx([0, 0, 0, 0, 0, 0, 0, 0.5, 0.5])
    assert lead_alternative(four, 1.5) == pytest.approx([0, 0, 0, 0, 0, 1 / 3, 2 / 3])
    assert lead_alternative(np.array([0, 0.5, 0.5]), 2.0) == pytest.approx(
        [0, 0.25, 0.25, 0.25, 0.25]
    )


def test_lead_llr_terms_by_hand():
    """Nominal 1 or 2 days (1/2 each), alternative 1..4 days (1/4 each). Hazards: nominal
    h0(1) = 1/2, h0(2) = 1 (then past its support: 1); alternative h1 = 1/4, 1/3, 1/2, 1.
    Travelling at the end of day 1: log(3/4) - log(1/2) = log 1.5; arriving on day 1:
    log(1/4) - log(1/2); on day 2: log(1/3) - log 1. Still travelling on day 2 or 3 is
    ruled out by the nominal law: log(2/3) resp. log(1/2) minus log(floor). A shipment's
    terms sum to log p1(L) / p0(L) (2 days: log 1/2)."""
    p0 = np.array([0, 0.5, 0.5])
    survive, arrive = lead_llr_terms(p0, lead_alternative(p0, 2.0), ages=5)
    f = LEAD_HAZARD_FLOOR
    assert survive[1] == pytest.approx(np.log(1.5))
    assert arrive[1] == pytest.approx(np.log(0.5))
    assert arrive[2] == pytest.approx(-np.log(3.0))
    assert survive[2] == pytest.approx(np.log(2 / 3) - np.log(f))
    assert survive[3] == pytest.approx(np.log(1 / 2) - np.log(f))
    assert arrive[4] == pytest.approx(0.0, abs=1e-9)  # both laws certain it arrives by then
    assert survive[1] + arrive[2] == pytest.approx(np.log(0.25 / 0.5), abs=1e-5)  # h0(2) floored
    assert survive[0] == arrive[0] == 0.0
    short, _ = lead_llr_terms(p0, lead_alternative(p0, 2.0), ages=2)  # fewer ages watched
    assert short[2] == pytest.approx(survive[2])  # the same hazards: the law is not cut


def test_a_doubled_lead_time_is_seen_from_overdue_shipments(store):
    """The store's lane takes 8 days instead of its deterministic 4 from day 100: the
    shipment of day 100 is still travelling on day 104, which the nominal law rules out
    (log(1 - 0) - log(floor) = 13.8 nats > h = 8), so the lane alerts on day 104, four
    days before that shipment lands (E[L] + 7 = 11 allowed); on-time arrivals before
    the change are evidence against it (a 4-day arrival is impossible under the 7-8 day
    alternative), so nothing alerts before."""
    scen, sim, policy = store
    _, exo = sim.reset(REPS)
    exo.lead[:, SHIFT:, 1] = 8
    a = watch(sim, policy, REPS, exogenous=exo, plan_scenario=scen).alerts
    lead = a[a.metric == "lead_time"]
    assert (lead.day >= SHIFT).all() and set(lead.lane) == {"plant->store"}
    first = lead.groupby("replication").day.min() - SHIFT
    assert sorted(first.index) == REPS
    assert (first == 4).all()


def test_the_alert_does_not_depend_on_a_future_arrival(store):
    """Causality: doubling from day 100 as above, then only the day-100 shipment of
    replication 0 is made to take 11 days instead of 8. Up to day 107 (before either
    version lands) the monitor sees the same thing, so every alert up to then is the same
    (the day-104 one included)."""
    scen, sim, policy = store
    runs = []
    for late in (8, 11):
        _, exo = sim.reset(REPS[:1])
        exo.lead[:, SHIFT:, 1] = 8
        exo.lead[0, SHIFT, 1] = late
        runs.append(watch(sim, policy, REPS[:1], exogenous=exo, plan_scenario=scen).alerts)
    early = [r[(r.day < SHIFT + 8) & (r.metric == "lead_time")] for r in runs]
    assert early[0].to_dict("records") == early[1].to_dict("records")
    assert early[0].day.tolist()[0] == SHIFT + 4


def test_a_random_lead_time_law_quiet_then_doubled(tmp_path):
    """The store's lane drawn uniform 2..5 days (hazards 1/4, 1/3, 1/2, 1): no lead-time
    alert over four replication-years of the law itself (a CUSUM of the log-likelihood
    ratio runs on average about e^h = 2,981 days or more between false alarms), and its
    doubling from day 100 is seen within E[L] + 7 = 10.5 days in every replication (a
    shipment of 6+ days still travelling at the end of day 5, which U{2..5} rules out)."""
    text = STORE.replace(
        'lead_time = { distribution = "deterministic", mean = 4 }',
        'lead_time = { distribution = "uniform", low = 2, high = 5 }',
    )
    scen = parse_scenario(tomllib.loads(text), "store.toml", Path("."))
    sim = Simulator(scen)
    policy = make_policy("base-stock", sim.layout)
    quiet = watch(sim, policy, REPS).alerts
    assert not (quiet.metric == "lead_time").any()
    _, exo = sim.reset(REPS)
    exo.lead[:, SHIFT:, 1] *= 2
    a = watch(sim, policy, REPS, exogenous=exo, plan_scenario=scen).alerts
    lead = a[a.metric == "lead_time"]
    assert (lead.day >= SHIFT).all()
    first = lead.groupby("replication").day.min() - SHIFT
    assert sorted(first.index) == REPS
    assert (first <= 10.5).all()


@pytest.mark.parametrize("lag, alerts", [(1, False), (5, True)])
def test_an_announced_delay_shifts_the_law(lag, alerts):
    """Every shipment to the store 3 days late (4 + 3 = 7 days). Announced a day after
    shipping, the nominal law is shifted to 7 days before the shipment could have
    arrived: no alert. Announced 5 days after, the shipment is still travelling at the
    end of its 4th day unannounced, which the 4-day law rules out: the lane alerts on the
    day the first shipment is 4 days old."""
    delay = (
        '[[delays]]\nlane = "plant->store"\nprobability = 1.0\nmin_days = 3\n'
        f"max_days = 3\nnotice_lag_days = {lag}\n"
    )
    scen = parse_scenario(tomllib.loads(STORE + delay), "store.toml", Path("."))
    sim = Simulator(scen)
    run = watch(sim, make_policy("base-stock", sim.layout), REPS[:1])
    lead = run.alerts[run.alerts.metric == "lead_time"]
    assert lead.empty != alerts
    if alerts:
        first_shipment = np.flatnonzero(run.shipped[:, 0, 1] > 0)[0]
        assert lead.day.min() == first_shipment + 4


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
    with pytest.raises(ValueError, match="lead_rho"):
        MonitorConfig(lead_rho=1.0)
    with pytest.raises(ValueError, match="lead_floor"):
        MonitorConfig(lead_floor=0.0)
