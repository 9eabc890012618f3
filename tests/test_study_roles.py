"""The roles study's rows and variants (docs/studies.md, docs/roles.md): the signalled
Coordination Node sharing another row's tuned rule, messages per agent-day, lasting
lead-time drifts in the draws, and the Analytics Monitor on a monitored variant."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedinv.cli import main
from fedinv.model.scenario import ScenarioError, parse_scenario
from fedinv.policies.classical import make_policy
from fedinv.roles.monitor import alert_summary
from fedinv.sim.exogenous import draw_exogenous
from fedinv.sim.run import run_records
from fedinv.sim.simulator import Simulator
from studies.spec import StudyError, check_study, parse_study
from studies.units import plan
from tests.test_roles_coordination import PEERS

LEVELS = "{ levels = { plant = 0, A = 60, B = 60 } }"


def _peers_file(tmp_path: Path, demand: str = "deterministic", mean: float = 10) -> Path:
    text = PEERS.format(cost=1.0, capacity=100.0).replace(
        '{ distribution = "deterministic", mean = 10 }',
        f'{{ distribution = "{demand}", mean = {mean} }}',
    )
    path = tmp_path / "peers.toml"
    path.write_text(text)
    return path


def _doc(**policy) -> dict:
    return {
        "study": {"scenario": "serial-3"},
        "policies": [
            {"label": "sS", "policy": "sS"},
            {"label": "sS + node", "policy": "sS", "coordination": "balance"},
            {"label": "p", "policy": "sS", **policy},
        ],
    }


@pytest.mark.parametrize(
    ("policy", "field", "says"),
    [
        (
            {"coordination": "signalled", "coordination_tuned_with": "nope"},
            "policies[2].coordination_tuned_with",
            "expected the label of another row",
        ),
        (
            {"coordination_tuned_with": "sS + node"},
            "policies[2].coordination_tuned_with",
            "only on a row with a Coordination Node",
        ),
        (
            {
                "coordination": "signalled",
                "coordination_tuned_with": "sS + node",
                "coordination_params": {"threshold": 0, "reserve": 0},
            },
            "policies[2].coordination_tuned_with",
            "got coordination_params as well",
        ),
        (
            {"coordination": "signalled", "coordination_tuned_with": "sS"},
            "policies[2].coordination_tuned_with",
            "which has no node",
        ),
        (
            {"coordination": "signalled", "coordination_tuned_with": "sS + node", "mode": "hybrid"},
            "policies[2].coordination_tuned_with",
            "with mode 'pure' (this row: 'hybrid')",
        ),
        (
            {"coordination": "gossip"},
            "policies[2].coordination",
            "expected one of none, balance, signalled",
        ),
    ],
)
def test_a_bad_signalled_row_names_the_file_and_field(policy, field, says):
    with pytest.raises(StudyError) as err:
        parse_study(_doc(**policy), "bad.toml")
    assert str(err.value).startswith(f"bad.toml: field {field}: ")
    assert says in str(err.value)


@pytest.mark.parametrize(
    ("variant", "field", "says"),
    [
        ({"monitor": {"drift": "wind"}}, "variants[0].monitor.drift", "expected one of none"),
        ({"monitor": {"drift": "demand"}}, "variants[0].monitor.day", "it is required"),
        (
            {"monitor": {"drift": "lead_time", "day": 5}},
            "variants[0].monitor.drift",
            "expected lead_shifts on the variant",
        ),
        ({"monitor": {"drift": "none", "day": 5}}, "variants[0].monitor.day", "expected none"),
        ({"monitor": {"drift": "none", "k": 1}}, "variants[0].monitor.k", "unknown key 'k'"),
        ({"without_surges": 1}, "variants[0].without_surges", "expected true or false"),
    ],
)
def test_a_bad_monitored_variant_names_the_file_and_field(variant, field, says):
    doc = {**_doc(), "variants": [{"name": "v", **variant}]}
    with pytest.raises(StudyError) as err:
        parse_study(doc, "bad.toml")
    assert str(err.value).startswith(f"bad.toml: field {field}: ")
    assert says in str(err.value)


def test_a_lead_shift_on_an_unknown_lane_is_refused_before_any_unit():
    doc = {
        **_doc(),
        "variants": [
            {"name": "slow", "lead_shifts": [{"lane": "x->y", "factor": 2, "start_day": 3}]}
        ],
    }
    with pytest.raises(
        StudyError, match=r"^bad.toml: field variants\[0\] \('slow'\): .*lead_shifts"
    ):
        check_study(parse_study(doc, "bad.toml"))


def test_the_signalled_row_reads_the_daily_rows_tuning_and_adds_no_unit():
    spec = parse_study(
        _doc(coordination="signalled", coordination_tuned_with="sS + node"), "ok.toml"
    )
    assert spec.preparations() == ["tune/sS", "tune/coordination-ss-node"]
    row = next(u for u in plan(spec) if u.kind == "eval" and u.policy == "p")
    assert row.needs == ("tune/sS", "tune/coordination-ss-node")
    bare = parse_study(_doc(coordination="signalled"), "ok.toml")  # its own tuning unit
    assert bare.preparations() == ["tune/sS", "tune/coordination-p", "tune/coordination-ss-node"]


def test_signalled_and_daily_messages_per_agent_day_in_the_study(tmp_path):
    """The hand-checked case of tests/test_roles_signals.py as study rows (threshold 0,
    reserve 2 days, base-stock levels 60, 10 days): day 0 B crosses below 0 and tells A,
    A offers; no message after. 2 messages over 3 agents x 10 days = 1/15 per agent-day;
    the daily node counts its 2 linked nodes every day: 2/3."""
    _peers_file(tmp_path)
    study = tmp_path / "study.toml"
    given = "coordination_params = { threshold = 0.0, reserve = 2.0 }"
    study.write_text(
        f"""
[study]
scenario = "peers.toml"
replications = 2
days = 10
bound = false
[[policies]]
label = "alone"
policy = "base-stock"
values = {LEVELS}
[[policies]]
label = "daily"
policy = "base-stock"
values = {LEVELS}
coordination = "balance"
{given}
[[policies]]
label = "signals"
policy = "base-stock"
values = {LEVELS}
coordination = "signalled"
{given}
"""
    )
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out), "--workers", "1", "--quiet"]) == 0
    frame = pd.read_parquet(out / "results" / "replications.parquet").set_index("policy")
    assert frame.loc["signals", "messages_per_agent_day"].tolist() == pytest.approx([1 / 15] * 2)
    assert frame.loc["daily", "messages_per_agent_day"].tolist() == pytest.approx([2 / 3] * 2)
    assert frame.loc["alone", "messages_per_agent_day"].isna().all()
    assert (frame.loc["signals", "transfer_units_per_day"] == 3.0).all()  # 30 units / 10 days
    report = (out / "report.md").read_text()
    assert "Messages/agent-day" in report
    # both move B's 30 units on day 0: the same cost, 30 - 3 = 27 $/day below the row alone
    assert "signals keep 100% of daily sharing's cost gain" in report
    assert "daily sharing 27 ± 0 $/day, signals 27 ± 0 $/day" in report


UNIFORM = """
name = "drifting"
horizon_days = 60
[[organizations]]
id = "o"
[[nodes]]
id = "shop"
tier = "distributor"
region = "R"
organization = "o"
initial_inventory = 50.0
demand = { distribution = "poisson", mean = 10 }
[[lanes]]
source = "external"
destination = "shop"
lead_time = { distribution = "uniform", low = 2, high = 4 }
"""


def _drifting(shifts: str = "") -> object:
    return parse_scenario(tomllib.loads(UNIFORM + shifts), "drifting.toml", Path("."))


def test_a_lead_shift_stretches_only_the_draws_from_its_day():
    """factor 2 from day 20: the same draws before, each draw doubled from day 20 (2..4
    becomes 4..8), every other stream unchanged; a simulation on both is the same day by
    day until the first shipment sent on day 20 would have landed (day 22 at the earliest),
    and not after; the layout makes room for 8-day lead times."""
    base, slow = (
        _drifting(),
        _drifting('[[lead_shifts]]\nlane = "external->shop"\nfactor = 2.0\nstart_day = 20\n'),
    )
    sim0, sim1 = Simulator(base), Simulator(slow)
    assert sim0.layout.max_lead == 4 and sim1.layout.max_lead == 8
    a = draw_exogenous(base, sim0.layout, [0, 1], 60)
    b = draw_exogenous(slow, sim1.layout, [0, 1], 60)
    assert np.array_equal(a.lead[:, :20], b.lead[:, :20])
    assert np.array_equal(b.lead[:, 20:], 2 * a.lead[:, 20:])
    assert set(np.unique(b.lead[:, 20:])) == {4, 6, 8}
    for name in ("demand", "demand_mean", "extra_delay", "node_factor", "lane_factor", "alert"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    pol = make_policy("base-stock", sim0.layout, {"levels": {"shop": 60}})
    r0, r1 = run_records(sim0, pol, [0, 1]), run_records(sim1, pol, [0, 1])
    first = 20 + int(a.lead[:, 20, 0].min())  # the first doubled shipment's old arrival
    for k in ("on_hand", "filled", "total_cost"):
        assert np.array_equal(r0[k][:first], r1[k][:first]), k
    assert not np.array_equal(r0["on_hand"][first:], r1["on_hand"][first:])


def test_a_lead_shift_is_validated_like_the_scenario():
    with pytest.raises(ScenarioError, match=r"lead_shifts\[0\]\.factor"):
        _drifting('[[lead_shifts]]\nlane = "external->shop"\nfactor = 0.5\nstart_day = 2\n')
    with pytest.raises(ScenarioError, match=r"lead_shifts\[0\]\.lane"):
        _drifting('[[lead_shifts]]\nlane = "shop->x"\nfactor = 2\nstart_day = 2\n')


def test_alert_summary_by_hand():
    """Three retrain alerts, one before the drift day 10 (not counted as a detection),
    two after: the organization's total 2 days after, node B 5 days after; the
    policy-degraded alert is not a retrain alert; 3 alerts / (1 organization x 73/365
    years) = 15 per organization-year."""
    from fedinv.roles.monitor import ALERT_COLUMNS

    lay = Simulator(_drifting()).layout
    rows = [
        (0, 4, "o", "B", "", "retrain", "demand_up", 13.0, 12.0),
        (0, 12, "o", "", "", "retrain", "org_demand_up", 9.0, 8.0),
        (0, 15, "o", "B", "", "retrain", "demand_up", 12.5, 12.0),
        (0, 16, "o", "", "", "policy_degraded", "fill_rate", 0.8, 0.85),
    ]
    got = alert_summary(pd.DataFrame(rows, columns=list(ALERT_COLUMNS)), lay, 73, 10)
    assert got == {
        "retrain_alerts": 3,
        "retrain_per_org_year": 15.0,
        "retrain_by_org": {"o": 3},
        "retrain_before_drift": 1,
        "first_after": {"org_demand_up:o": 2, "demand_up:B": 5},
    }


def test_the_monitor_in_a_study_sees_a_planted_demand_shift_at_once(tmp_path):
    """Poisson demand of mean 20 at A and B; demand-drift triples it from day 30. The
    organization's total residual that day is about (120 - 40) / sqrt(40) = 12.6 standard
    deviations (its own noise is sqrt(120) / sqrt(40) = 1.7), so the CUSUM (k 0.5, h 8)
    crosses on day 30 itself in every replication: delay 0. Each node's residual is about
    (60 - 20) / sqrt(20) = 8.9 a day against h = 12: day 31 at the latest."""
    _peers_file(tmp_path, "poisson", 20)
    study = tmp_path / "study.toml"
    study.write_text(
        f"""
[study]
scenario = "peers.toml"
replications = 4
days = 45
bound = false
[[variants]]
name = "calm"
without_surges = true
monitor = {{ drift = "none" }}
[[variants]]
name = "demand-drift"
without_surges = true
surges = [{{ region = "R", multiplier = 3.0, duration_days = 15, start_day = 30 }}]
monitor = {{ drift = "demand", day = 30 }}
[[policies]]
label = "alone"
policy = "base-stock"
values = {LEVELS}
"""
    )
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out), "--workers", "1", "--quiet"]) == 0
    frame = pd.read_parquet(out / "results" / "replications.parquet").set_index("variant")
    drift = frame.loc["demand-drift"]
    assert (drift["monitor:first_after:org_demand_up:o"] == 0).all()
    assert (drift["monitor:first_after:demand_up:A"] <= 1).all()
    assert (drift["monitor:first_after:demand_up:B"] <= 1).all()
    calm = frame.loc["calm"]
    assert (calm["monitor:drift"] == "none").all()
    assert not any(c.startswith("monitor:first_after") and calm[c].notna().any() for c in calm)
    report = (out / "report.md").read_text()
    assert "## Analytics Monitor" in report
    assert "o total 4/4 within 14 days (median 0)" in report
    assert "each customer node alone 4-4/4 within 14 days" in report
    rate = float(calm["monitor:retrain_per_org_year"].mean())
    assert f"false retrain alerts {rate:.2f} per organization-year" in report
    assert math.isfinite(rate)
