"""Command line of hybrid mode, the rolling LP and ``bench lp``."""

import json

import pandas as pd

from fedinv.cli import main
from fedinv.sim.run import RELAXATION_COLUMNS


def test_simulate_hybrid_json_and_out(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(
        [
            "simulate",
            "--scenario",
            "electronics-5r",
            "--policy",
            "base-stock",
            "--days",
            "35",
            "--replications",
            "2",
            "--mode",
            "hybrid",
            "--solver",
            "highspy",
            "--json",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["mode"] == "hybrid" and payload["solver"] == "highspy"
    for m in (
        "projection_l1_per_day",
        "solve_ms_median",
        "solve_ms_p95",
        "relaxations",
        "solved_share",
        "solver_share",
    ):
        assert m in payload["metrics"]
    assert payload["metrics"]["solver_share"]["mean"] <= payload["metrics"]["solved_share"]["mean"]
    frame = pd.read_csv(out / "relaxations.csv")
    assert list(frame.columns) == list(RELAXATION_COLUMNS)
    assert len(frame) == payload["relaxations"]


def test_simulate_pure_writes_no_relaxations(tmp_path, capsys):
    rc = main(
        [
            "simulate",
            "--scenario",
            "serial-3",
            "--policy",
            "base-stock",
            "--days",
            "20",
            "--replications",
            "2",
            "--json",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0 and json.loads(capsys.readouterr().out)["mode"] == "pure"
    assert not (tmp_path / "relaxations.csv").exists()


def test_simulate_rolling_lp_and_its_option_errors(capsys):
    assert (
        main(
            [
                "simulate",
                "--scenario",
                "serial-3",
                "--policy",
                "rolling-lp",
                "--days",
                "20",
                "--replications",
                "1",
                "--params",
                '{"horizon": 6}',
                "--json",
            ]
        )
        == 0
    )
    payload = json.loads(capsys.readouterr().out)
    assert payload["policy_options"] == {"horizon": 6}
    assert (
        main(
            [
                "simulate",
                "--scenario",
                "serial-3",
                "--policy",
                "rolling-lp",
                "--params",
                '{"horizn": 6}',
            ]
        )
        == 2
    )
    assert "unknown option(s) 'horizn'" in capsys.readouterr().err
    assert main(["simulate", "--scenario", "serial-3", "--policy", "rolling-lp", "--tune"]) == 2


def test_bench_lp_json(capsys):
    rc = main(
        [
            "bench",
            "lp",
            "--lanes",
            "12",
            "--solves",
            "5",
            "--scenario",
            "serial-3",
            "--days",
            "10",
            "--replications",
            "1",
            "--json",
        ]
    )
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert {(r["lanes"], r["backend"]) for r in result["solves"]} == {
        (12, "pyomo"),
        (12, "highspy"),
        (12, "pyomo-public"),
    }
    for r in result["solves"]:
        # every way (raw MILP, LP first, fast path) and backend reaches the same optimum
        assert r["max_objective_difference"] <= 1e-6
        assert all(r[f"{w}_median_ms"] > 0 for w in ("milp", "lp_first", "fast"))
        assert 0 <= r["lp_certified_share"] <= 1 and 0 <= r["fast_path_share"] <= 1
    sim = result["simulation"]
    assert [r["mode"] for r in sim] == ["pure", "hybrid", "hybrid"]
    assert all(0 <= r["solver_share"] <= r["solved_share"] <= 1 for r in sim[1:])
    assert "hybrid_over_pure" in result["targets"]
