"""The ``fedinv`` command line, in-process through ``main([...])`` (plus one subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest

from fedinv.cli import OUTPUT_FILES, main
from fedinv.model.scenario import builtin_scenario_text

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = json.dumps({"levels": {"stage-1": 6.484, "stage-2": 12.028, "stage-3": 22.72}})
SIM = [
    "simulate",
    "--scenario",
    "serial-3",
    "--policy",
    "echelon-base-stock",
    "--params",
    PUBLISHED,
    "--days",
    "200",
    "--replications",
    "4",
]
REQUIRED_KEYS = {"scenario", "policy", "params", "days", "replications", "seed", "metrics"}
HEADLINE = (
    "total_cost_per_day",
    "holding_cost_k_per_month",
    "stockouts_per_month",
    "fill_rate",
    "inventory_turnover",
    "bullwhip_ratio",
)


def run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    assert main(argv) == 0
    out = capsys.readouterr().out
    return json.loads(out)  # the whole of stdout is one JSON value


def assert_usage_error(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert "error:" in captured.err
    assert captured.out == ""
    for needle in needles:
        assert needle in captured.err
    return captured.err


# -- scenarios ---------------------------------------------------------------------------


def test_scenarios_list(capsys):
    assert main(["scenarios", "list"]) == 0
    out = capsys.readouterr().out
    assert "serial-3" in out and "single-node" in out
    rows = run_json(capsys, ["scenarios", "list", "--json"])
    serial = next(r for r in rows if r["name"] == "serial-3")
    assert serial["nodes"] == 3 and serial["horizon_days"] == 365


def test_scenarios_show_builtin(capsys):
    assert main(["scenarios", "show", "serial-3"]) == 0
    out = capsys.readouterr().out
    for needle in ("stage-1", "external->stage-3", "horizon: 365 days", 'name = "serial-3"'):
        assert needle in out
    assert main(["scenarios", "show", "serial-3", "--toml"]) == 0
    assert tomllib.loads(capsys.readouterr().out)["name"] == "serial-3"


def test_scenarios_show_lists_lead_time_shifts(capsys, tmp_path):
    shifted = tmp_path / "shifted.toml"
    text = builtin_scenario_text("serial-3")
    text += '\n[[lead_shifts]]\nlane = "stage-2->stage-1"\nfactor = 2.0\nstart_day = 150\n'
    shifted.write_text(text)
    assert main(["scenarios", "show", str(shifted)]) == 0
    out = capsys.readouterr().out
    assert "1 lead-time shift\n" in out and "lead time x2 from day 150" in out


def test_scenarios_validate(capsys, tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(builtin_scenario_text("serial-3"))
    assert main(["scenarios", "validate", str(good)]) == 0
    assert capsys.readouterr().out.startswith("OK: ")
    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text().replace("holding_cost = 7.0", 'holding_cost = "seven"'))
    err = assert_usage_error(
        capsys, ["scenarios", "validate", str(bad)], "holding_cost", "bad.toml"
    )
    assert len(err.strip().splitlines()) == 1
    broken = tmp_path / "broken.toml"
    broken.write_text('name = "x"\n[[nodes]\n')
    assert_usage_error(capsys, ["scenarios", "validate", str(broken)], "broken.toml")


# -- simulate ----------------------------------------------------------------------------


def test_simulate_json(capsys):
    payload = run_json(capsys, [*SIM, "--json"])
    assert REQUIRED_KEYS <= set(payload)
    assert "tuning" not in payload
    assert (payload["scenario"], payload["policy"]) == ("serial-3", "echelon-base-stock")
    assert (payload["days"], payload["replications"], payload["seed"]) == (200, 4, 1)
    assert payload["params"] == json.loads(PUBLISHED)
    for name in HEADLINE:
        stat = payload["metrics"][name]
        assert set(stat) == {"mean", "ci95"}
        assert stat["mean"] is None or isinstance(stat["mean"], float)
    # Clark-Scarf optimum of this system: 47.66 per period
    assert payload["metrics"]["total_cost_per_day"]["mean"] == pytest.approx(47.66, rel=0.1)


def test_simulate_same_seed_same_metrics(capsys):
    a = run_json(capsys, [*SIM, "--json", "--seed", "7"])
    b = run_json(capsys, [*SIM, "--json", "--seed", "7"])
    c = run_json(capsys, [*SIM, "--json", "--seed", "8"])
    assert a["seed"] == 7
    assert a["metrics"] == b["metrics"]
    assert a["metrics"] != c["metrics"]


def test_simulate_table_and_defaults(capsys):
    assert (
        main(
            [
                "simulate",
                "--scenario",
                "serial-3",
                "--policy",
                "base-stock",
                "--days",
                "30",
                "--replications",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.index("total_cost_per_day") < out.index("cycle_service_level")
    assert "stage-3" in out  # the parameters table


def test_simulate_out_files(capsys, tmp_path):
    out_dir = tmp_path / "run"
    payload = run_json(capsys, [*SIM, "--json", "--out", str(out_dir)])
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(OUTPUT_FILES)  # no temp files
    daily = pd.read_parquet(out_dir / "daily.parquet")
    assert len(daily) == 4 * 200 * 3
    assert json.loads((out_dir / "run.json").read_text()) == payload
    assert json.loads((out_dir / "params.json").read_text()) == payload["params"]
    assert len(pd.read_csv(out_dir / "per_replication.csv")) == 4
    summary = pd.read_csv(out_dir / "summary.csv", index_col="metric")
    assert summary.loc["total_cost_per_day", "mean"] == pytest.approx(
        payload["metrics"]["total_cost_per_day"]["mean"]
    )
    assert len(pd.read_csv(out_dir / "nodes.csv")) == 4 * 3
    assert len(pd.read_csv(out_dir / "monthly.csv")) > 0


def test_params_from_file_and_partial(capsys, tmp_path):
    path = tmp_path / "p.json"
    path.write_text(PUBLISHED)
    from_file = run_json(capsys, [*SIM[:5], "--params", str(path), *SIM[7:], "--json"])
    inline = run_json(capsys, [*SIM, "--json"])
    assert from_file["metrics"] == inline["metrics"]
    partial = run_json(
        capsys, [*SIM[:5], "--params", '{"levels": {"stage-1": 7}}', *SIM[7:], "--json"]
    )
    levels = partial["params"]["levels"]
    assert levels["stage-1"] == 7 and set(levels) == {"stage-1", "stage-2", "stage-3"}


def test_installation_levels_equal_echelon_differences(capsys):
    """docs/cli.md: installation levels = differences of the echelon levels (serial)."""
    common = ["--scenario", "serial-3", "--days", "100", "--replications", "3", "--json"]
    echelon = run_json(
        capsys, ["simulate", *common, "--policy", "echelon-base-stock", "--params", PUBLISHED]
    )
    installation = run_json(
        capsys,
        [
            "simulate",
            *common,
            "--policy",
            "base-stock",
            "--params",
            '{"levels": {"stage-1": 6.484, "stage-2": 5.544, "stage-3": 10.692}}',
        ],
    )
    assert installation["metrics"]["total_cost_per_day"]["mean"] == pytest.approx(
        echelon["metrics"]["total_cost_per_day"]["mean"], rel=1e-9
    )


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--policy", "no-such-policy"], ("--policy",)),
        (["--params", '{"levels": {"stage-1": 6'], ("JSON",)),
        (["--params", '{"levels": {"stage-9": 6}}'], ("stage-9",)),
        (["--params", '{"lvls": {"stage-1": 6}}'], ("lvls",)),
        (["--params", '{"levels": {"stage-1": "six"}}'], ("stage-1",)),
        (["--params", "missing-params.json"], ("missing-params.json",)),
        (["--days", "-5"], ("--days",)),
        (["--replications", "-1"], ("--replications",)),
        (["--scenario", "no/such/file.toml"], ("file.toml",)),
        (["--scenario", "no-such-builtin"], ("no-such-builtin",)),
        (["--tune", "--params", PUBLISHED], ("--tune", "--params")),
    ],
)
def test_simulate_bad_input(capsys, args, needles):
    argv = ["simulate", "--scenario", "serial-3", "--policy", "base-stock", "--days", "20", *args]
    assert_usage_error(capsys, argv, *needles)


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (
            ["simulate", "--scenario", "serial-3", "--policy", "base-stock", "--solver", "highspy"],
            ("--solver does nothing without --mode hybrid",),
        ),
        (
            ["simulate", "--scenario", "serial-3", "--policy", "base-stock", "--sweeps", "3"],
            ("--sweeps does nothing without --tune",),
        ),
        (
            ["simulate", "--scenario", "serial-3", "--policy", "sS", "--train-replications", "4"],
            ("--train-replications does nothing without --tune",),
        ),
        (["federate", "--mu", "0.5", "--out", "unused"], ("--mu does nothing without",)),
        (["federate", "--dp-clip", "2", "--out", "unused"], ("--dp-clip does nothing without",)),
        (
            [
                "deploy",
                "run",
                "--superlink",
                "127.0.0.1:9",
                "--insecure",
                "--mu",
                "1",
                "--out",
                "x",
            ],
            ("--mu does nothing without",),
        ),
    ],
)
def test_options_that_would_do_nothing_are_refused(capsys, tmp_path, monkeypatch, argv, needles):
    """An option that has no effect in its context is an error (exit 2), not ignored;
    nothing runs (no folder is made)."""
    monkeypatch.chdir(tmp_path)
    assert_usage_error(capsys, argv, *needles)
    assert list(tmp_path.iterdir()) == []


def test_simulate_tune(capsys):
    payload = run_json(
        capsys,
        [
            "simulate",
            "--scenario",
            "serial-3",
            "--policy",
            "echelon-base-stock",
            "--tune",
            "--train-replications",
            "2",
            "--sweeps",
            "1",
            "--days",
            "40",
            "--replications",
            "2",
            "--json",
        ],
    )
    tuning = payload["tuning"]
    assert tuning["evaluations"] > 1
    assert tuning["simulated_days"] == tuning["evaluations"] * 2 * 40
    assert isinstance(tuning["train_cost_per_day"], float)
    assert set(payload["params"]["levels"]) == {"stage-1", "stage-2", "stage-3"}


# -- tune --------------------------------------------------------------------------------


def test_tune_writes_params_usable_by_simulate(capsys, tmp_path):
    out = tmp_path / "tuned.json"
    payload = run_json(
        capsys,
        [
            "tune",
            "--scenario",
            "serial-3",
            "--policy",
            "base-stock",
            "--train-replications",
            "2",
            "--sweeps",
            "1",
            "--days",
            "40",
            "--out",
            str(out),
            "--json",
            "--quiet",
        ],
    )
    assert payload["params"] == json.loads(out.read_text())
    assert payload["evaluations"] > 1 and payload["simulated_days"] > 0
    assert set(payload["coordinates"]) >= {"z:distributor"}
    sim = run_json(
        capsys,
        [
            "simulate",
            "--scenario",
            "serial-3",
            "--policy",
            "base-stock",
            "--params",
            str(out),
            "--days",
            "20",
            "--replications",
            "2",
            "--json",
        ],
    )
    assert sim["params"] == payload["params"]


# -- bench -------------------------------------------------------------------------------


def test_bench_sim(capsys):
    from fedinv.bench.sim import bench_sim

    rows = bench_sim("serial-3", [1, 3], days=10, policy="echelon-base-stock")
    assert [r["batch"] for r in rows] == [1, 3]
    r = rows[1]
    assert r["node_days_per_s"] == pytest.approx(3 * 10 * 3 / r["step_s"])
    assert r["tracemalloc_peak_mib"] > 0 and r["maxrss_mib"] > 0 and r["reset_s"] >= 0
    listed = run_json(
        capsys,
        ["bench", "sim", "--scenario", "serial-3", "--days", "5", "--batches", "2", "--json"]
        + ["--torch-days", "4"],
    )
    assert [(r["namespace"], r["batch"]) for r in listed] == [("numpy", 2), ("torch-autograd", 256)]
    t = listed[1]
    assert t["days"] == 4 and t["node_days_per_s"] == pytest.approx(
        256 * 4 * 3 / (t["forward_s"] + t["backward_s"]), rel=1e-6
    )
    assert_usage_error(capsys, ["bench", "sim", "--scenario", "no-such-builtin"], "no-such-builtin")
    assert_usage_error(capsys, ["bench", "sim", "--batches", "0,x"], "--batches")


# -- the real entry point ----------------------------------------------------------------


def test_console_script_has_the_study_commands_of_the_entry_point_group():
    """``run``, ``report`` and ``studies`` come from studies' ``fedinv.commands`` entry
    point (installed metadata), through the real ``fedinv`` console script."""
    from importlib.metadata import entry_points

    assert [e.value for e in entry_points(group="fedinv.commands")] == ["studies.cli:register"]
    script = Path(sys.executable).parent / "fedinv"
    proc = subprocess.run(
        [str(script), "run", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage: fedinv run" in proc.stdout and "--restart" in proc.stdout


def test_module_entry_point_prints_only_json():
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "fedinv", *SIM, "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert REQUIRED_KEYS <= set(payload)
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedinv",
            "simulate",
            "--scenario",
            "serial-3",
            "--policy",
            "base-stock",
            "--params",
            "{oops",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("fedinv: error:") and "Traceback" not in bad.stderr


def test_out_below_a_file_names_the_option_and_the_file(tmp_path, capsys):
    """``--out`` whose parent is a file: one line naming --out and the file (it was
    ``[Errno 17] File exists`` without the option)."""
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    common = ["--scenario", "single-node", "--policy", "base-stock", "--days", "20"]
    err = assert_usage_error(
        capsys,
        ["simulate", *common, "--replications", "1", "--out", str(blocker / "run")],
        "--out",
        str(blocker),
        "is a file",
    )
    assert "Errno" not in err
    err = assert_usage_error(
        capsys,
        [
            "tune",
            *common,
            "--train-replications",
            "1",
            "--sweeps",
            "1",
            "--out",
            str(blocker / "p.json"),
            "--quiet",
        ],
        "--out",
        "is a file",
    )


@pytest.mark.parametrize(
    ("extra", "label"),
    [([], "(textbook params)"), (["--params", '{"levels": {"store": 12}}'], "(given params)")],
)
def test_simulate_header_says_where_the_parameters_came_from(capsys, extra, label):
    argv = [
        "simulate",
        "--scenario",
        "single-node",
        "--policy",
        "base-stock",
        "--days",
        "20",
        "--replications",
        "2",
        "--quiet",
        *extra,
    ]
    assert main(argv) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert label in first
