"""A Coordination Node on a study row (docs/studies.md, docs/roles.md): validated at the
edge, tuned by its own preparation unit counted in the budget, wrapped around the
ordering policy before the mode, and its transfers reported."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pandas as pd
import pytest

from fedinv.cli import main
from studies.budget import check_budgets, planned_days
from studies.spec import StudyError, check_study, load_study, parse_study
from studies.units import plan

PEERS = """
name = "peers"
horizon_days = 60
seed = 3
[[organizations]]
id = "o"
[[nodes]]
id = "plant"
tier = "manufacturer"
region = "R"
organization = "o"
initial_inventory = 40.0
[[nodes]]
id = "A"
tier = "distributor"
region = "R"
organization = "o"
stockout_penalty = 8.0
initial_inventory = 60.0
demand = { distribution = "poisson", mean = 10 }
[[nodes]]
id = "B"
tier = "distributor"
region = "R"
organization = "o"
stockout_penalty = 8.0
initial_inventory = 5.0
demand = { distribution = "poisson", mean = 10 }
[[lanes]]
source = "external"
destination = "plant"
lead_time = { distribution = "deterministic", mean = 2 }
[[lanes]]
source = "plant"
destination = "A"
lead_time = { distribution = "deterministic", mean = 4 }
[[lanes]]
source = "plant"
destination = "B"
lead_time = { distribution = "deterministic", mean = 4 }
[[transfers]]
source = "A"
destination = "B"
unit_cost = 1.0
lead_time_days = 1
capacity = 100.0
[[transfers]]
source = "B"
destination = "A"
unit_cost = 1.0
lead_time_days = 1
capacity = 100.0
"""

STUDY = """
[study]
name = "coordinated"
scenario = "peers.toml"
replications = 5
days = 40
train_replications = 2
tune_sweeps = 1
bound = false

[[policies]]
label = "sS"
policy = "sS"

[[policies]]
label = "sS + node"
policy = "sS"
coordination = "balance"

[[policies]]
label = "textbook + node (given) + layer"
policy = "base-stock"
params = "textbook"
mode = "hybrid"
coordination = "balance"
coordination_params = { threshold = 1.0, reserve = 0.0 }
"""


def _write(tmp_path: Path, study: str = STUDY) -> Path:
    (tmp_path / "peers.toml").write_text(PEERS)
    path = tmp_path / "study.toml"
    path.write_text(study)
    return path


@pytest.mark.parametrize(
    ("edit", "field", "says"),
    [
        ({"coordination": "pool"}, "policies[0].coordination", "expected one of none, balance"),
        (
            {"coordination_params": {"threshold": 1.0, "reserve": 0.0}},
            "policies[0].coordination_params",
            "only with a Coordination Node (coordination = balance or signalled)",
        ),
        (
            {"coordination": "balance", "coordination_params": {"threshold": 1.0}},
            "policies[0].coordination_params.reserve",
            "give both threshold and reserve",
        ),
        (
            {"coordination": "balance", "coordination_params": {"threshold": 1, "reserve": "x"}},
            "policies[0].coordination_params.reserve",
            "expected a finite number",
        ),
        (
            {"coordination": "balance", "coordination_params": {"threshold": 1, "cap": 2}},
            "policies[0].coordination_params.cap",
            "expected threshold or reserve",
        ),
    ],
)
def test_a_bad_coordination_names_the_file_and_field(edit, field, says):
    doc = {
        "study": {"scenario": "serial-3"},
        "policies": [{"label": "p", "policy": "sS", **edit}],
    }
    with pytest.raises(StudyError) as err:
        parse_study(doc, "bad.toml")
    assert str(err.value).startswith(f"bad.toml: field {field}: ")
    assert says in str(err.value)


def test_coordination_is_refused_on_a_scenario_without_lateral_links():
    doc = {
        "study": {"scenario": "serial-3"},
        "policies": [{"label": "p", "policy": "sS", "coordination": "balance"}],
    }
    spec = parse_study(doc, "serial.toml")
    with pytest.raises(StudyError, match=r"^serial.toml: field policies\[0\].coordination: "):
        check_study(spec)


def test_the_node_is_tuned_after_its_policy_and_counted_in_the_budget(tmp_path):
    """The node's tuning reads the tuned (s,S) params, so it is planned after that unit
    and every evaluation of the row waits for both; its plan is the start point plus 20
    evaluations per coordinate and sweep (2 coordinates, 1 sweep) of 2 training
    replications x 40 days: 41 x 2 x 40 = 3,280 replication-days. The row with given
    params needs no tuning."""
    spec = load_study(_write(tmp_path))
    units = plan(spec)
    keys = [u.key for u in units if u.kind == "tune"]
    assert keys == ["tune/sS", "tune/coordination-ss-node"]
    node = next(u for u in units if u.key == "tune/coordination-ss-node")
    assert node.needs == ("tune/sS",)
    row = next(u for u in units if u.kind == "eval" and u.policy == "sS + node")
    assert row.needs == ("tune/sS", "tune/coordination-ss-node")
    given = next(u for u in units if u.kind == "eval" and u.policy.endswith("layer"))
    assert given.needs == ()
    assert planned_days(spec, "tune/coordination-ss-node") == 41 * 2 * 40
    assert check_budgets(spec)["tune/coordination-ss-node"] == 3280
    doc = tomllib.loads(STUDY)  # a textbook policy: the node's tuning is the only unit
    doc["policies"] = [
        {"label": "tb", "policy": "base-stock", "params": "textbook", "coordination": "balance"}
    ]
    doc["study"]["budget_days"] = 3280
    assert check_budgets(parse_study(doc, str(tmp_path / "study.toml"))) == {
        "tune/coordination-tb": 3280
    }
    doc["study"]["budget_days"] = 3279
    with pytest.raises(StudyError, match=r"budget_days: .* tune/coordination-tb plans 3,280"):
        check_budgets(parse_study(doc, str(tmp_path / "study.toml")))


def test_a_study_with_coordinated_rows_runs_end_to_end(tmp_path):
    """On common random numbers the three rows see the same demand; only the rows with a
    node move stock (B starts with 5 units against A's 60, so day 0 already calls for a
    transfer at threshold 1); the tuned node stays inside its search box and within its
    planned budget; the report shows transfers per day and how each node was set."""
    study = _write(tmp_path)
    out = tmp_path / "out"  # --replications 2: a quick check of the 5-replication study
    args = ["run", str(study), "--out", str(out), "--workers", "1", "--quiet"]
    assert main([*args, "--replications", "2"]) == 0
    frame = pd.read_parquet(out / "results" / "replications.parquet").set_index(
        ["policy", "replication"]
    )
    assert sorted(frame.loc["sS"].index) == [0, 1]
    moved = frame["transfer_units_per_day"]
    assert (moved.loc["sS"] == 0).all()
    assert (moved.loc["textbook + node (given) + layer"] > 0).all()
    import json

    record = json.loads((out / "units" / "tune" / "coordination-ss-node.json").read_text())
    assert record["row"] == "sS + node"
    assert -3 <= record["params"]["threshold"] <= 4 and -3 <= record["params"]["reserve"] <= 4
    assert 0 < record["simulated_days"] <= 3280
    report = (out / "report.md").read_text()
    assert "Transfers units/day" in report
    assert "threshold 1.00 and reserve 0.00 days of mean demand given" in report
    assert "tune the Coordination Node of sS + node" in report
    assert "projects its transfers with the orders" in report
    assert main([*args, "--replications", "1"]) == 2


def test_rows_without_a_node_keep_the_digest_they_had_before_the_field():
    """Run folders of studies written before ``coordination`` (and the variants' monitor
    fields) existed still resume: the digest of such a study is the hash of the
    definition with the old policy and variant fields only (the format before these
    changes, spelled out here); a node changes it."""
    import hashlib
    import json
    from dataclasses import asdict

    old = ("label", "policy", "params", "values", "training", "mode", "solver")
    old += ("train_mode", "tune_per")
    spec = load_study("disruption")
    data = asdict(spec)
    for key in ("title", "description", "source", "paper"):
        data.pop(key)
    data["policies"] = [{k: p[k] for k in old} for p in data["policies"]]
    kept = ("name", "description", "scale", "outages", "surges")  # variants before the monitor
    data["variants"] = [{k: v[k] for k in kept} for v in data["variants"]]
    text = json.dumps(data, sort_keys=True, default=str).encode()
    assert spec.digest() == hashlib.sha256(text).hexdigest()[:16]
    roles = load_study("roles")
    bare = dataclasses.replace(
        roles, policies=tuple(dataclasses.replace(p, coordination="none") for p in roles.policies)
    )
    assert roles.digest() != bare.digest()
