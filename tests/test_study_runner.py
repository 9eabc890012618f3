"""Study definitions, the runner's units and resume (a real run killed and re-run)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from fedinv.model.scenario import builtin_scenario_text
from studies.runner import event_metrics, plan, run_study
from studies.spec import (
    EventSpec,
    StudyError,
    builtin_studies,
    load_study,
    parse_study,
    spec_from_dict,
    variant_scenario,
)

TINY = """
[study]
name = "tiny"
title = "Tiny"
scenario = "serial-3"
replications = {reps}
days = {days}
train_replications = 4
tune_sweeps = 1
bound = {bound}

[[policies]]
label = "echelon (tuned)"
policy = "echelon-base-stock"

[[policies]]
label = "installation (textbook)"
policy = "base-stock"
params = "textbook"

[[policies]]
label = "installation (textbook) + safety layer"
policy = "base-stock"
params = "textbook"
mode = "hybrid"
"""


def tiny(tmp_path: Path, reps: int = 3, days: int = 200, bound: bool = True) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(reps=reps, days=days, bound=str(bound).lower()))
    return path


def test_every_builtin_study_loads_and_its_variants_are_valid_scenarios():
    assert {
        "quick",
        "paper-table3",
        "hybrid-vs-pure",
        "federated-vs-local-vs-central",
        "disruption",
    } <= set(builtin_studies())
    for name in builtin_studies():
        spec = load_study(name)
        assert spec.replications >= 10
        for variant in spec.variants:
            variant_scenario(spec, variant)
        assert spec_from_dict(__import__("dataclasses").asdict(spec)).digest() == spec.digest()


def test_variant_scales_capacities_and_budgets_and_adds_a_fixed_outage():
    spec = load_study("hybrid-vs-pure")
    tight = variant_scenario(spec, spec.variants[0])
    nominal = variant_scenario(spec, spec.variants[1])
    chip = nominal.network.node("S-CHIP-TW")
    assert tight.network.node("S-CHIP-TW").capacity == pytest.approx(0.8 * chip.capacity)
    org = nominal.network.organizations[0]
    assert tight.network.organizations[0].monthly_budget == pytest.approx(0.8 * org.monthly_budget)
    disruption = load_study("disruption")
    hit = variant_scenario(disruption, disruption.variants[1])
    assert len(hit.outages) == len(nominal.outages) + 1
    assert hit.outages[-1].start_day == 120 and hit.outages[-1].duration_days == 30


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d["study"].pop("scenario"), "study.scenario"),
        (lambda d: d["study"].update(replications=1), "study.replications"),
        (lambda d: d["study"].update(reference="nobody"), "study.reference"),
        (lambda d: d["study"].update(colour="red"), "study.colour"),
        (lambda d: d["policies"][0].update(policy="magic"), "policies[0].policy"),
        (
            lambda d: d["policies"][0].update(policy="hdpo", training="isolated"),
            "policies[0].training",
        ),
        (lambda d: d["policies"][0].update(mode="turbo"), "policies[0].mode"),
        (lambda d: d["policies"][1].update(label="echelon (tuned)"), "policies"),
        (lambda d: d["policies"][0].update(training="federated"), "policies[0].training"),
        (
            lambda d: d.update(variants=[{"name": "v", "scale": {"capacity": -1}}]),
            "variants[0].scale.capacity",
        ),
        (
            lambda d: d.update(variants=[{"name": "v", "scale": {"price": 2}}]),
            "variants[0].scale.price",
        ),
        (
            lambda d: d.update(events=[{"name": "e", "first_day": 5, "last_day": 2}]),
            "events[0].last_day",
        ),
        (
            lambda d: d.update(training={"rounds": 2, "learning-speed": 3}),
            "training.learning-speed",
        ),
    ],
)
def test_malformed_study_names_the_field(tmp_path, edit, field):
    import tomllib

    doc = tomllib.loads(tiny(tmp_path).read_text())
    edit(doc)
    with pytest.raises(StudyError) as err:
        parse_study(doc, "bad.toml")
    assert str(err.value).startswith(f"bad.toml: field {field}")


def test_unknown_study_and_bad_variant_scenario(tmp_path):
    with pytest.raises(StudyError, match="unknown study 'nope'.*quick"):
        load_study("nope")
    doc = {
        "study": {"scenario": "serial-3"},
        "policies": [{"policy": "base-stock"}],
        "variants": [
            {"name": "v", "outages": [{"target": "nowhere", "start_day": 1, "duration_days": 2}]}
        ],
    }
    spec = parse_study(doc, "v.toml")
    from fedinv.model.scenario import ScenarioError

    with pytest.raises(ScenarioError, match="outages"):
        variant_scenario(spec, spec.variants[0])


def test_plan_has_one_unit_per_preparation_bound_and_policy_replication(tmp_path):
    spec = load_study(tiny(tmp_path, reps=3))
    units = plan(spec)
    kinds = pd.Series([u.kind for u in units]).value_counts().to_dict()
    assert kinds == {"tune": 1, "bound": 3, "eval": 9}  # the textbook ones need no tuning
    tuned = [u for u in units if u.kind == "eval" and u.policy == "echelon (tuned)"]
    assert all(u.needs == ("tune/echelon-base-stock",) for u in tuned)
    assert len({u.key for u in units}) == len(units)


def test_event_metrics_on_a_hand_made_day_series():
    """One customer node: demand 10/day; fill 10 before day 10, 0 on days 10-12 (the
    event), 5 on days 13-16, 10 after. The 7-day trailing fill rate regains 98% of the
    pre-event level (1.0) on the first day whose window holds only full days: day 23,
    i.e. 11 days after the window's last day (12)."""
    days = np.arange(40)
    filled = np.where(days < 10, 10.0, np.where(days < 13, 0.0, np.where(days < 17, 5.0, 10.0)))
    daily = pd.DataFrame(
        {
            "day": np.repeat(days, 2),
            "node": ["c", "x"] * 40,
            "demand": np.repeat(10.0, 80) * np.tile([1, 0], 40),
            "filled": np.column_stack([filled, np.zeros(40)]).ravel(),
            "total_cost": np.tile([2.0, 1.0], 40),
        }
    )
    scenario = SimpleNamespace(network=SimpleNamespace(customer_nodes=("c",)))
    spec = SimpleNamespace(events=(EventSpec("e", 10, 12), EventSpec("quiet", 30, 31)))
    out = event_metrics(daily, scenario, spec)
    assert out["e"]["recovery_days"] == 11 and out["e"]["recovered"]
    assert out["e"]["stockouts"] == 3
    assert out["e"]["cost_per_day"] == pytest.approx(3.0)
    assert out["e"]["pre_event_fill_rate"] == pytest.approx(1.0)
    assert out["quiet"]["recovery_days"] == 0 and out["quiet"]["stockouts"] == 0


def test_in_process_run_common_random_numbers_and_the_bound(tmp_path):
    """A real study in this process: every policy is evaluated on the same replications,
    the perfect-information bound is below every policy's cost on every replication, and
    where the safety layer has nothing to correct (serial-3 has no constraints that the
    textbook orders break) hybrid releases exactly the pure orders."""
    spec = load_study(tiny(tmp_path, reps=3))
    out = run_study(spec, tmp_path / "out", workers=1, echo=None, progress=False)
    frame = pd.read_parquet(out / "results" / "replications.parquet")
    assert len(frame) == 9
    for _, group in frame.groupby("policy"):
        assert sorted(group["replication"]) == [0, 1, 2]
    assert (frame["bound_cost_per_day"] < frame["total_cost_per_day"]).all()
    pure = frame[frame["policy"] == "installation (textbook)"].set_index("replication")
    hybrid = frame[frame["policy"].str.endswith("safety layer")].set_index("replication")
    pd.testing.assert_series_equal(pure["total_cost_per_day"], hybrid["total_cost_per_day"])
    assert (hybrid["projection_l1_per_day"] == 0).all()
    # the tuned echelon policy beats the textbook installation levels on held-out seeds
    tuned = frame[frame["policy"] == "echelon (tuned)"].set_index("replication")
    assert (tuned["total_cost_per_day"] < pure["total_cost_per_day"]).all()
    meta = json.loads((out / "study.json").read_text())
    assert meta["finished"] and meta["versions"]["fedinv"] and meta["engine"] == "in-process"
    # a different definition in the same folder is refused, not mixed in
    other = load_study(tiny(tmp_path, reps=4))
    from studies.runner import StudyRunError

    with pytest.raises(StudyRunError, match="different study definition"):
        run_study(other, out, workers=1, echo=None, progress=False)


def _unit_files(out: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(out)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in (out / "units").rglob("*.json")
    }


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_killed_ray_run_resumes_without_redoing_or_losing_a_unit(tmp_path):
    """``fedinv run`` on Ray, killed with SIGKILL once some units are written; the
    re-run keeps those files untouched, computes the rest, and the results equal an
    uninterrupted in-process run (common random numbers make them reproducible)."""
    study = tiny(tmp_path, reps=8, days=365, bound=False)
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [
        str(Path(sys.executable).parent / "fedinv"),
        "run",
        str(study),
        "--out",
        str(out),
        "--workers",
        "2",
        "--quiet",
    ]
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list((out / "units" / "eval").rglob("rep-*.json"))) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, (
            f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        )
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = _unit_files(out)
    total = len(plan(load_study(study)))
    assert 3 <= len(before) < total, "the kill should land mid-run"
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = _unit_files(out)
    assert len(after) == total
    assert all(after[k] == v for k, v in before.items()), "a finished unit was redone"
    reference = run_study(
        load_study(study), tmp_path / "whole", workers=1, echo=None, progress=False
    )
    cols = ["variant", "policy", "replication", "total_cost_per_day", "fill_rate"]
    got = pd.read_parquet(out / "results" / "replications.parquet")[cols]
    want = pd.read_parquet(reference / "results" / "replications.parquet")[cols]
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True))


def test_cli_errors_and_listing(tmp_path, capsys):
    from fedinv.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[study]\nscenario = "serial-3"\n[[policies]]\npolicy = "base-stock"\nmode = "turbo"\n'
    )
    assert main(["run", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bad.toml: field policies[0].mode: expected one of pure, hybrid, got 'turbo'" in err
    assert main(["report", str(tmp_path)]) == 2
    assert "not a study run folder" in capsys.readouterr().err
    assert main(["studies", "list"]) == 0
    assert "paper-table3" in capsys.readouterr().out
    assert main(["studies", "show", "quick"]) == 0
    assert 'scenario = "electronics-5r"' in capsys.readouterr().out


TRAINING = """
[study]
name = "train"
title = "Training paths"
scenario = "beer-game"
replications = 2
days = 60
train_replications = 2
bound = false

[training]
rounds = 2
local-steps = 10
replications = 2
eval-replications = 2
eval-days = 30

[[policies]]
label = "bs"
policy = "base-stock"
params = "textbook"

[[policies]]
label = "iso"
policy = "dqn"
training = "isolated"

[[policies]]
label = "central"
policy = "dqn"
training = "central"
"""


def test_isolated_and_centralized_training_units_get_the_same_budget(tmp_path):
    """The beer game has 4 organizations: isolated training steps each of them
    rounds x local-steps days on 2 replications (4 x 2 x 10 x 2 = 160 days); the central
    learner steps the whole network as many days (2 x 10 x 2 = 40) and validates after
    each round's steps on 2 replications of the 100-day horizon (2 x 2 x 100 = 400)."""
    path = tmp_path / "train.toml"
    path.write_text(TRAINING)
    out = run_study(load_study(path), tmp_path / "out", workers=1, echo=None, progress=False)
    iso = json.loads((out / "units" / "train" / "isolated.json").read_text())
    central = json.loads((out / "units" / "train" / "central.json").read_text())
    assert iso["simulated_days"] == 160 and central["simulated_days"] == 40 + 400
    assert sorted(iso["checkpoints"]) == [
        "brewery-co",
        "distribution-co",
        "retail-co",
        "wholesale-co",
    ]
    assert (out / central["checkpoint"]).is_file()
    frame = pd.read_parquet(out / "results" / "replications.parquet")
    assert sorted(frame["policy"].unique()) == ["bs", "central", "iso"]
    assert frame["total_cost_per_day"].notna().all()


# -- bad unit files, checks before any unit, a changed definition -----------------------

CORRUPTIONS = {
    "truncated": lambda text: text[: len(text) // 2].encode(),
    "garbage appended": lambda text: (text + "\n}{ garbage").encode(),
    "empty": lambda text: b"",
    "empty object": lambda text: b"{}",
    "not UTF-8": lambda text: b"\xff\xfe" + text.encode(),
    "another unit's record": lambda text: re.sub(
        r'"replication": \d+', '"replication": 0', text
    ).encode(),
}
"""Ways a unit file (here of replication 1 or 2) is not a finished unit."""


def _eval_files(out: Path) -> list[Path]:
    return sorted((out / "units" / "eval").rglob("rep-*.json"))


def test_bad_unit_files_are_named_by_report_and_recomputed_by_a_rerun(tmp_path, capsys):
    """Each corrupt shape of a unit file is refused as a finished unit: ``fedinv report``
    names every bad file (exit 2); a re-run names them, recomputes exactly them (the
    other units untouched) and gives the results of the intact run."""
    from fedinv.cli import main

    study = tiny(tmp_path, reps=3, days=60, bound=False)
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out), "--workers", "1", "--quiet"]) == 0
    want = pd.read_parquet(out / "results" / "replications.parquet")
    files = [f for f in _eval_files(out) if f.name == "rep-0001.json"]
    files += [f for f in _eval_files(out) if f.name == "rep-0002.json"]
    assert len(files) >= len(CORRUPTIONS)
    bad = dict(zip(CORRUPTIONS, files, strict=False))
    for shape, path in bad.items():
        broken = CORRUPTIONS[shape](path.read_text(encoding="utf-8"))
        assert broken != path.read_bytes()
        path.write_bytes(broken)
    capsys.readouterr()
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for path in bad.values():
        assert str(path) in err
    kept = {p: p.stat().st_mtime_ns for p in _eval_files(out) if p not in bad.values()}
    assert main(["run", str(study), "--out", str(out), "--workers", "1"]) == 0
    err = capsys.readouterr().err
    for path in bad.values():
        assert f"recomputing it: {path}" in err
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # the good ones were not redone
    got = pd.read_parquet(out / "results" / "replications.parquet")
    cols = ["variant", "policy", "replication", "total_cost_per_day", "fill_rate"]
    pd.testing.assert_frame_equal(got[cols], want[cols])


def test_a_failed_run_leaves_no_stale_results(tmp_path, monkeypatch):
    """Results of an earlier run never stay beside units they were not computed from:
    a re-run that fails removes results/, figures/ and report.md (a later successful
    run writes them again)."""
    import studies.runner as runner

    study = tiny(tmp_path, reps=2, days=60, bound=False)
    out = run_study(load_study(study), tmp_path / "out", workers=1, echo=None, progress=False)
    assert (out / "results" / "replications.parquet").is_file() and (out / "report.md").is_file()
    victim = _eval_files(out)[0]
    victim.write_text("{}")

    def broken(spec, folder, unit):
        raise RuntimeError("no solver today")

    monkeypatch.setattr(runner, "execute_unit", broken)
    with pytest.raises(runner.StudyRunError, match="1 unit"):
        run_study(load_study(study), out, workers=1, echo=None, progress=False)
    assert not (out / "results").exists() and not (out / "report.md").exists()
    assert not victim.exists()  # not left looking finished either


BAD_DEFINITIONS = {
    "outage of an unknown node": (
        '[[variants]]\nname = "hit"\n'
        'outages = [{ target = "stage-9", start_day = 5, duration_days = 3 }]\n',
        "field variants[0] ('hit')",
        "stage-9",
    ),
    "policy value naming an unknown node": (
        '[[policies]]\nlabel = "bad values"\npolicy = "base-stock"\n'
        "values = { levels = { stage-9 = 5 } }\n",
        "field policies[3].values",
        "unknown node 'stage-9'",
    ),
    "event after the scenario's horizon": (
        '[[events]]\nname = "late"\nfirst_day = 10\nlast_day = 9999\n',
        "field events",
        "9999",
    ),
}


@pytest.mark.parametrize("case", list(BAD_DEFINITIONS))
def test_the_whole_definition_is_checked_before_any_unit_runs(tmp_path, capsys, case):
    from fedinv.cli import main

    extra, field, needle = BAD_DEFINITIONS[case]
    path = tmp_path / "bad.toml"
    path.write_text(TINY.format(reps=2, days=60, bound="false") + extra)
    if case.startswith("event"):  # days unset: the scenario's 365-day horizon applies
        path.write_text(path.read_text().replace("days = 60\n", ""))
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--workers", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err  # one line
    assert f"{path}: {field}" in err and needle in err
    assert not out.exists()  # no unit ran, no folder was made


def test_a_changed_definition_says_how_to_continue_and_restart_does_it(tmp_path, capsys):
    from fedinv.cli import main

    out = tmp_path / "out"
    study = tiny(tmp_path, reps=2, days=60, bound=False)
    assert main(["run", str(study), "--out", str(out), "--workers", "1", "--quiet"]) == 0
    study = tiny(tmp_path, reps=3, days=60, bound=False)  # the same file, changed
    capsys.readouterr()
    assert main(["run", str(study), "--out", str(out), "--workers", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "different study definition" in err and "--restart" in err
    assert "re-run the same command" not in err  # it would be refused again
    argv = ["run", str(study), "--out", str(out), "--workers", "1", "--quiet", "--restart"]
    assert main(argv) == 0
    frame = pd.read_parquet(out / "results" / "replications.parquet")
    assert sorted(frame["replication"].unique()) == [0, 1, 2]
    assert "reps = 3" not in (out / "study.toml").read_text()  # the new definition's text
    assert "replications = 3" in (out / "study.toml").read_text()
    meta = json.loads((out / "study.json").read_text())
    assert meta["digest"] == load_study(study).digest()


FEDERATED = """
[study]
name = "fed-kill"
title = "Killed during federated training"
scenario = "chain-3.toml"
replications = 2
days = 40
bound = false

[training]
rounds = {rounds}
local-steps = 8
replications = 2
eval-replications = 2
eval-days = 20

[[policies]]
label = "federated dqn"
policy = "dqn"
"""


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return f"{pid} (gone)"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_study_killed_during_federated_training_leaves_no_process(tmp_path):
    """SIGKILL on ``fedinv run`` (the driver only) while its federation trains: every
    process of that federation (SuperLink, SuperExec, flwr-simulation, Ray) is gone
    within seconds and stops writing into the run folder; the re-run resumes and
    finishes with each round's replies received once."""
    from test_federation import THREE_ORGS

    from fedinv.federation.processes import RECORD, alive, tagged

    (tmp_path / "chain-3.toml").write_text(THREE_ORGS)
    study = tmp_path / "fed.toml"
    study.write_text(FEDERATED.format(rounds=4))
    out = tmp_path / "out"
    work = out / "units" / "train" / "federated"
    cmd = [str(Path(sys.executable).parent / "fedinv"), "run", str(study), "--out", str(out)]
    cmd += ["--workers", "1", "--quiet"]
    proc = subprocess.Popen(
        cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    seen: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and proc.poll() is None:
            record = json.loads((work / RECORD).read_text()) if (work / RECORD).is_file() else {}
            if record:
                seen.update(tagged(record["tag"]))
            if (work / "checkpoints" / "round-0001.pt").is_file():
                break
            time.sleep(0.2)
        assert proc.poll() is None, f"the run ended early: {proc.stderr.read().decode()[-2000:]}"
        seen.update(tagged(record["tag"]))
        os.kill(proc.pid, signal.SIGKILL)  # the driver only, as the OOM killer would
        proc.wait()
        assert len(seen) >= 5  # SuperLink, SuperExec, flwr run, flwr-simulation, Ray...
        deadline = time.monotonic() + 10
        while any(alive(p, s) for p, s in seen.items()) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [p for p, s in seen.items() if alive(p, s)]
        assert left == [], [_cmdline(p) for p in left]
        assert tagged(record["tag"]) == []
        files = {p: p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file()}
        time.sleep(3)
        now = {p: p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file()}
        assert now == files, "something still writes into the run folder"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid, started in seen.items():
            if alive(pid, started):
                os.kill(pid, signal.SIGKILL)
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    rounds = pd.read_csv(work / "rounds.csv")
    assert rounds["round"].tolist() == [1, 2, 3, 4]
    replies = [json.loads(line) for line in (work / "received.jsonl").open()]
    keys = [(r["round"], r["phase"], r["node"]) for r in replies]
    assert len(keys) == len(set(keys)), "a round's replies were received twice"
    assert not (work / RECORD).exists()


# -- equal budgets, training through the safety layer -----------------------------------


def test_a_unit_over_the_budget_is_refused_before_the_study_starts(tmp_path):
    """serial-3's tuned echelon base-stock: 3 tiers, golden sections on [-2, 6] to 0.02
    take 15 points each, plus the start: 1 + 3 x 15 = 46 evaluations x 4 training
    replications x 200 days = 36,800 simulated days."""
    import tomllib

    from studies.budget import check_budgets

    doc = tomllib.loads(tiny(tmp_path).read_text())
    doc["study"]["budget_days"] = 36_799
    with pytest.raises(StudyError) as err:
        check_budgets(parse_study(doc, "b.toml"))
    assert str(err.value).startswith("b.toml: field study.budget_days")
    assert "tune/echelon-base-stock plans 36,800" in str(err.value)
    doc["study"]["budget_days"] = 36_800
    spec = parse_study(doc, "b.toml")
    assert check_budgets(spec) == {"tune/echelon-base-stock": 36_800}
    out = tmp_path / "out"
    spec = parse_study({**doc, "study": {**doc["study"], "budget_days": 100}}, "b.toml")
    with pytest.raises(StudyError, match="budget_days"):
        run_study(spec, out, workers=1, echo=None, progress=False)
    assert not (out / "units").exists()  # refused before any unit


HDPO_STUDY = """
[study]
name = "hdpo"
title = "HDPO through the layer"
scenario = "single-node.toml"
replications = 2
days = 60
train_replications = 2
tune_sweeps = 1
bound = false

[training]
rounds = 1
local-iterations = 2
replications = 2
eval-replications = 2

[[policies]]
label = "base-stock through the layer"
policy = "base-stock"
mode = "hybrid"

[[policies]]
label = "hdpo through the layer"
policy = "hdpo"
training = "central"
mode = "hybrid"
"""


def test_hdpo_trained_through_the_safety_layer_in_a_study(tmp_path):
    """A budgeted single node: the safety layer binds (pure orders overspend), the base
    and the learner are tuned and trained for it, and run through it."""
    text = builtin_scenario_text("single-node").replace("horizon_days = 365", "horizon_days = 60")
    text = text.replace('id = "retailer"', 'id = "retailer"\nmonthly_budget = 2900.0')
    text = text.replace('destination = "store"', 'destination = "store"\nprice = 1.0')
    (tmp_path / "single-node.toml").write_text(text)
    path = tmp_path / "hdpo.toml"
    path.write_text(HDPO_STUDY)
    spec = load_study(path)
    assert [p.prepared_by for p in spec.policies] == [
        "tune/base-stock.hybrid",
        "train/hdpo-central.hybrid",
    ]
    out = run_study(spec, tmp_path / "out", workers=1, echo=None, progress=False)
    tuned = json.loads((out / "units" / "tune" / "base-stock.hybrid.json").read_text())
    trained = json.loads((out / "units" / "train" / "hdpo-central.hybrid.json").read_text())
    assert tuned["mode"] == "hybrid" and trained["train_mode"] == "hybrid"
    from fedinv.agents.checkpoints import load_checkpoint

    saved = load_checkpoint(out / trained["checkpoint"], "hdpo")
    assert saved["args"]["train_mode"] == "hybrid"  # the checkpoint says how it was trained
    # the iteration validation selected, as the checkpoint records it, named in the report
    assert trained["selected_iteration"] == saved["best_iteration"]
    report = (out / "report.md").read_text()
    assert f"iteration {saved['best_iteration']} selected on validation" in report
    frame = pd.read_parquet(out / "results" / "replications.parquet")
    assert (frame["violations_per_month"] == 0).all()  # both released through the layer


def test_train_on_a_variant_writes_it_as_a_scenario_a_federation_loads(tmp_path):
    import tomllib

    from fedinv.model.scenario import load_scenario
    from fedinv.registry import scenario_layout
    from studies.spec import training_scenario, training_scenario_path

    doc = tomllib.loads(tiny(tmp_path).read_text())
    doc["variants"] = [{"name": "tight", "scale": {"capacity": 0.5, "monthly_budget": 0.8}}]
    doc["study"]["scenario"] = "electronics-5r"
    doc["study"]["train_on"] = "tight"
    doc["policies"] = doc["policies"][:1]
    spec = parse_study(doc, "t.toml")
    written = load_scenario(training_scenario_path(spec, tmp_path))
    expected = training_scenario(spec)
    base = scenario_layout(load_scenario("electronics-5r"))
    finite = np.isfinite(base.capacity)
    assert finite.sum() >= 5
    for scenario in (written, expected):
        lay = scenario_layout(scenario)
        np.testing.assert_allclose(lay.capacity[finite], 0.5 * base.capacity[finite])
        np.testing.assert_allclose(lay.budget, 0.8 * base.budget)
    assert written.network == expected.network
    doc["study"]["train_on"] = "loose"
    with pytest.raises(StudyError, match="field study.train_on: expected one of the variant"):
        parse_study(doc, "t.toml")


def test_a_federated_hdpo_start_checkpoint_is_its_base_policy(tmp_path):
    """Round 0 of a federated HDPO (a selection candidate) is the base policy exactly: a
    trained checkpoint with its heads zeroed orders what the tuned base orders."""
    import torch

    from fedinv.agents import hdpo
    from fedinv.agents.checkpoints import load_policy, write_hdpo_checkpoint
    from fedinv.federation.config import FedConfig
    from fedinv.model.scenario import load_scenario
    from fedinv.policies.classical import make_policy
    from fedinv.registry import scenario_layout
    from fedinv.sim.run import mean_cost_per_day
    from fedinv.sim.simulator import Simulator
    from studies.runner import _hdpo_start

    scenario = load_scenario("serial-3")
    cfg = FedConfig(scenario="serial-3", algo="hdpo", tune_replications=2, tune_sweeps=1)
    args = hdpo.Args(scenario="serial-3", tune_replications=2, sweeps=1, replications=2)
    policy, tuned = hdpo.initial_policy(args, scenario)
    with torch.no_grad():  # as if trained: the heads move the targets
        for net in policy.networks.nets.values():
            net.head.bias.fill_(2.0)
    first = write_hdpo_checkpoint(
        tmp_path / "round-0001.pt", policy, scenario="serial-3", args=args
    )
    start = _hdpo_start(cfg, scenario, first)
    assert start.name == "round-0000.pt"
    layout = scenario_layout(scenario)
    sim = Simulator(scenario, days=60)
    base = make_policy(tuned.policy, layout, tuned.params)
    started = load_policy(start, layout, "hdpo")
    trained = load_policy(first, layout, "hdpo")
    reps = [0, 1]
    np.testing.assert_allclose(
        mean_cost_per_day(sim, started, reps), mean_cost_per_day(sim, base, reps), rtol=1e-12
    )
    assert not np.allclose(
        mean_cost_per_day(sim, trained, reps), mean_cost_per_day(sim, base, reps)
    )


def test_a_federation_server_reads_the_study_tuning_of_its_base(tmp_path):
    """The quick study's federated HDPO servers reuse its (s,S) tunings (the same tuner
    call: base policy, mode, replications, sweeps, horizon), and a server handed a
    tuning builds the policy it would have tuned itself; a tuning of anything else is
    refused, naming the file and the field."""
    import dataclasses as dc

    from fedinv.agents import hdpo
    from fedinv.federation.config import FedConfig
    from fedinv.federation.hdpo_task import _server_policy, hdpo_args
    from fedinv.model.scenario import load_scenario
    from fedinv.policies.tuning import tune
    from studies.runner import server_bases
    from studies.spec import load_study
    from studies.units import plan

    quick = load_study("quick")
    assert server_bases(quick, plan(quick)) == {
        "train/hdpo-federated": "tune/sS",
        "train/hdpo-federated.hybrid": "tune/sS.hybrid",
    }
    scenario = load_scenario("serial-3")
    cfg = FedConfig(scenario="serial-3", algo="hdpo", tune_replications=2, tune_sweeps=1)
    own = hdpo.initial_policy(hdpo_args(cfg, scenario), scenario)[1]  # the server's tuning
    study = tune(scenario, "base-stock", train_replications=2, sweeps=1, mode="pure")
    path = tmp_path / "base.json"
    path.write_text(json.dumps(study.to_dict()))
    served = _server_policy(scenario, dc.replace(cfg, server_base=str(path)))
    assert served.base.policy == "base-stock"
    assert study.params == own.params
    assert served.base.params == own.params
    mine = hdpo.Base.from_params("base-stock", served.layout, own.params)
    np.testing.assert_array_equal(served.base.level, mine.level)
    wrong = dict(study.to_dict(), mode="hybrid")
    path.write_text(json.dumps(wrong))
    with pytest.raises(ValueError, match=r"base.json: field 'mode' is 'hybrid'"):
        _server_policy(scenario, dc.replace(cfg, server_base=str(path), seed=2))
    del wrong["params"]
    path.write_text(json.dumps(wrong))
    with pytest.raises(ValueError, match=r"base.json: field 'params' is missing"):
        _server_policy(scenario, dc.replace(cfg, server_base=str(path), seed=3))
