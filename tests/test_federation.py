"""Federated training: aggregation, what a client sends, client state, and real Flower
simulation runs (2 rounds, 3 organizations) with resume and a failing client."""

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fedinv.federation.private_data import export_private_data
from fedinv.federation.task import (
    FedConfig,
    LocalTrainer,
    load_global_checkpoint,
    new_model,
    role_weighted_average,
    roles_of,
    to_arrays,
)
from fedinv.model.scenario import load_scenario

THREE_ORGS = """
name = "chain-3"
horizon_days = 60
seed = 5
[[organizations]]
id = "maker"
[[organizations]]
id = "wholesale"
[[organizations]]
id = "retail"
[[nodes]]
id = "plant"
tier = "supplier"
region = "R"
organization = "maker"
holding_cost = 0.5
stockout_penalty = 1.0
capacity = 40.0
initial_inventory = 40.0
[[nodes]]
id = "hub"
tier = "manufacturer"
region = "R"
organization = "wholesale"
holding_cost = 1.0
stockout_penalty = 1.0
initial_inventory = 30.0
[[nodes]]
id = "store"
tier = "distributor"
region = "R"
organization = "retail"
holding_cost = 2.0
stockout_penalty = 10.0
initial_inventory = 30.0
[nodes.demand]
distribution = "poisson"
mean = 10.0
[[lanes]]
source = "external"
destination = "plant"
lead_time = 2
transit_holding_cost = 0.0
[[lanes]]
source = "plant"
destination = "hub"
lead_time = { distribution = "uniform", low = 1, high = 3 }
[[lanes]]
source = "hub"
destination = "store"
lead_time = 1
"""


def _config(scenario: Path, **kw) -> FedConfig:
    base = dict(
        scenario=str(scenario),
        rounds=2,
        local_steps=12,
        replications=2,
        eval_replications=2,
        eval_days=20,
        batch_size=16,
        learning_starts=4,
        exploration_steps=20,
        hidden=(16,),
        reward_scale=50.0,
    )
    base.update(kw)
    return FedConfig(**base)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("chain")
    path = root / "chain-3.toml"
    path.write_text(THREE_ORGS)
    export_private_data(load_scenario(path), root / "data")
    return path, root / "data"


def test_role_weighted_average_by_hand():
    prev = {"nets.supplier.w": np.zeros(2), "nets.distributor.w": np.zeros(2)}
    a = {"nets.supplier.w": np.array([1.0, 1.0]), "nets.distributor.w": np.array([4.0, 0.0])}
    b = {"nets.supplier.w": np.array([3.0, 3.0]), "nets.distributor.w": np.array([8.0, 8.0])}
    out = role_weighted_average(
        [a, b], [{"supplier": 1, "distributor": 0}, {"supplier": 3, "distributor": 0}], prev
    )
    np.testing.assert_allclose(out["nets.supplier.w"], [2.5, 2.5])  # (1 + 9) / 4
    np.testing.assert_allclose(out["nets.distributor.w"], [0.0, 0.0])  # nobody trained it


def test_client_sends_only_weights_and_scalar_metrics(chain, tmp_path):
    from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from clients.client_app import app

    # the identity of a server-side task, as a ServerApp process has it
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1

    scenario, data = chain
    cfg = _config(scenario)
    model = to_arrays(new_model(cfg, roles_of(load_scenario(scenario))))
    history_days = len(pd.read_csv(data / "retail" / "demand.csv"))
    context = Context(
        run_id=1,
        node_id=7,
        state=RecordDict(),
        run_config=cfg.to_flat(),
        node_config={"data-dir": str(data / "retail"), "state-dir": str(tmp_path / "state")},
    )
    for kind in ("train", "evaluate"):
        msg = Message(
            content=RecordDict(
                {
                    "arrays": ArrayRecord({k: Array(v) for k, v in model.items()}),
                    "config": ConfigRecord({"server-round": 1, "reward-scale": 50.0}),
                }
            ),
            dst_node_id=7,
            message_type=kind,
        )
        reply = app(msg, context)
        assert not reply.has_error(), reply.error
        content = reply.content
        assert set(content.config_records) == set()  # no strings, no configs
        for record in content.metric_records.values():
            assert all(isinstance(v, int | float) for v in record.values())
            assert all(not isinstance(v, str) for v in record.values())
        if kind == "train":
            (arrays,) = content.array_records.values()
            assert list(arrays.keys()) == list(model)
            for key, value in zip(arrays.keys(), arrays.to_numpy_ndarrays(), strict=True):
                assert value.shape == model[key].shape
                assert history_days not in value.shape
        else:
            assert not content.array_records


def test_restarted_client_continues_from_its_files(chain, tmp_path):
    scenario, data = chain
    cfg = _config(scenario)
    roles = roles_of(load_scenario(scenario))
    weights = to_arrays(new_model(cfg, roles))
    first = LocalTrainer(data / "wholesale", tmp_path, cfg, roles)
    after1, _, _ = first.train_round(weights, 1)
    # a fresh process: round 2 starts from round 1's buffers, step count and optimizer
    again = LocalTrainer(data / "wholesale", tmp_path, cfg, roles)
    assert again.load_before(2) == 1
    assert again.steps_done == cfg.local_steps
    assert sum(b.size for b in again.buffers.values()) == cfg.local_steps * cfg.replications
    # re-running round 2 after a crash reproduces it exactly
    a, _, _ = LocalTrainer(data / "wholesale", tmp_path, cfg, roles).train_round(after1, 2)
    b, _, _ = LocalTrainer(data / "wholesale", tmp_path, cfg, roles).train_round(after1, 2)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_fedprox_keeps_local_weights_near_the_global_ones(chain, tmp_path):
    scenario, data = chain
    roles = roles_of(load_scenario(scenario))
    start = to_arrays(new_model(_config(scenario), roles))

    def drift(**kw):
        cfg = _config(scenario, local_steps=30, **kw)
        out, _, _ = LocalTrainer(data / "retail", tmp_path / str(kw), cfg, roles).train_round(
            start, 1
        )
        return sum(float(((out[k] - start[k]) ** 2).sum()) for k in start)

    assert drift(strategy="fedprox", proximal_mu=100.0) < drift(strategy="fedavg")


def _final_weights(run_dir: Path) -> dict[str, np.ndarray]:
    weights, _ = load_global_checkpoint(run_dir / "final.pt")
    return weights


def _left_running(processes, seconds: float = 15.0) -> list[int]:
    """PIDs of ``processes`` ((PID, start time) pairs of one run) still running after
    waiting up to ``seconds`` for them to exit; other runs' processes do not count."""
    from fedinv.federation.processes import alive

    deadline = time.monotonic() + seconds
    while True:
        left = [pid for pid, started in processes if alive(pid, started)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_simulated_federation_end_to_end_resume_and_failure(chain, tmp_path):
    from fedinv.federation.local import run_federation

    scenario, data = chain
    # 1. two rounds, three organizations, on Flower's simulation engine
    full = tmp_path / "full"
    (full / "data").mkdir(parents=True)
    for org in data.iterdir():
        (full / "data" / org.name).symlink_to(org)
    run = run_federation(_config(scenario), full, timeout=400)
    rounds = pd.read_csv(run.rounds_csv)
    assert rounds["round"].tolist() == [1, 2]
    assert rounds["results"].tolist() == [3, 3] and rounds["failures"].tolist() == [0, 0]
    assert all(math.isfinite(c) for c in rounds["global-cost-per-day"])
    assert len(run.processes) >= 3  # the SuperLink, flwr run, and what they started
    assert _left_running(run.processes) == []  # everything it started is gone
    # the final checkpoint runs as a policy
    from fedinv.cli import main

    assert (
        main(
            [
                "simulate",
                "--scenario",
                str(scenario),
                "--policy",
                "dqn",
                "--checkpoint",
                str(run.final_checkpoint),
                "--days",
                "20",
                "--replications",
                "2",
                "--json",
            ]
        )
        == 0
    )

    # 2. one round, then resumed to two: the same weights as the uninterrupted run
    split = tmp_path / "split"
    (split / "data").mkdir(parents=True)
    for org in data.iterdir():
        (split / "data" / org.name).symlink_to(org)
    run_federation(_config(scenario, rounds=1), split, timeout=400)
    assert pd.read_csv(split / "rounds.csv")["round"].tolist() == [1]
    run_federation(_config(scenario, rounds=2), split, timeout=400)
    assert pd.read_csv(split / "rounds.csv")["round"].tolist() == [1, 2]
    a, b = _final_weights(full), _final_weights(split)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-6)

    # 3. a client that raises is a reported failure, and its role is not averaged in
    failing = tmp_path / "failing"
    (failing / "data").mkdir(parents=True)
    for org in data.iterdir():
        (failing / "data" / org.name).symlink_to(org)
    cfg = _config(scenario, rounds=1)
    failed = run_federation(cfg, failing, extra={"fail-org": "maker"}, timeout=400)
    row = pd.read_csv(failing / "rounds.csv").iloc[0]
    assert (row["results"], row["failures"]) == (2, 1)
    assert "fault injected" in str(row["failure_reasons"])
    start = to_arrays(new_model(cfg, roles_of(load_scenario(scenario))))
    after = _final_weights(failing)
    supplier = [k for k in start if k.startswith("nets.supplier.")]
    others = [k for k in start if not k.startswith("nets.supplier.")]
    for key in supplier:  # only "maker" has a supplier: its network stays as it was
        np.testing.assert_array_equal(after[key], start[key])
    assert any(not np.array_equal(after[k], start[k]) for k in others)
    assert _left_running(failed.processes) == []
    torch.set_num_threads(1)


def test_differential_privacy_wraps_the_role_weighted_strategy():
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping

    from server.strategy import RoleFedProx, make_strategy, with_differential_privacy

    inner = make_strategy("fedprox", proximal_mu=0.5)
    assert isinstance(inner, RoleFedProx) and inner.proximal_mu == 0.5
    dp = with_differential_privacy(
        inner, noise_multiplier=0.8, clipping_norm=2.0, num_sampled_clients=3
    )
    assert isinstance(dp, DifferentialPrivacyServerSideFixedClipping)
    assert dp.strategy is inner and dp.noise_multiplier == 0.8 and dp.clipping_norm == 2.0
    with pytest.raises(ValueError, match="unknown strategy"):
        make_strategy("fedsgd")


def test_pyproject_run_config_is_fedconfig_and_the_server_defaults():
    """One source of the federation's defaults: ``flwr run .`` (pyproject's run config)
    trains exactly what FedConfig() and fedinv.federation.runconfig describe."""
    import tomllib

    from fedinv.federation.runconfig import PATH_KEYS, SERVER_DEFAULTS

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    config = tomllib.loads(pyproject.read_text())["tool"]["flwr"]["app"]["config"]
    flat = FedConfig().to_flat()
    assert {k: config[k] for k in flat} == flat
    assert FedConfig.from_flat(config) == FedConfig()  # reward-scale 0 there: None here
    assert {k: config[k] for k in SERVER_DEFAULTS} == SERVER_DEFAULTS
    assert {k: config[k] for k in PATH_KEYS} == PATH_KEYS
    assert set(config) == {*flat, "reward-scale", *SERVER_DEFAULTS, *PATH_KEYS}


def test_training_options_default_to_fedconfig():
    """``fedinv federate`` and ``fedinv deploy run`` read the same FedConfig defaults."""
    import argparse

    from fedinv.cli.training import add_training_options, fed_config

    parser = argparse.ArgumentParser()
    add_training_options(parser)
    assert fed_config(parser.parse_args([])) == FedConfig()
    prox = fed_config(parser.parse_args(["--strategy", "fedprox"]))
    assert (prox.strategy, prox.proximal_mu) == ("fedprox", 0.1)
    assert fed_config(parser.parse_args(["--strategy", "fedprox", "--mu", "2"])).proximal_mu == 2
    help_text = parser.format_help()
    assert "(default 120)" in help_text and "(default electronics-5r)" in help_text


def test_a_resumed_run_forgets_rounds_it_has_no_checkpoint_for(tmp_path):
    """The server writes a round's row and audit lines before its checkpoint; a run
    killed in between resumes after the newest checkpoint, so the rows of later rounds
    are dropped first (the resumed run trains and writes them again, once)."""
    import json

    from server.server_app import forget_after

    pd.DataFrame({"round": [1, 2, 3], "global-cost-per-day": [3.0, 2.0, 1.0]}).to_csv(
        tmp_path / "rounds.csv", index=False
    )
    (tmp_path / "received.jsonl").write_text(
        "".join(json.dumps({"round": r, "org": o}) + "\n" for r in (1, 2, 3) for o in "ab")
    )
    forget_after(tmp_path, 2)
    assert pd.read_csv(tmp_path / "rounds.csv")["round"].tolist() == [1, 2]
    lines = (tmp_path / "received.jsonl").read_text().splitlines()
    assert [json.loads(x)["round"] for x in lines] == [1, 1, 2, 2]
    forget_after(tmp_path, 0)  # no checkpoint at all: a fresh start
    assert pd.read_csv(tmp_path / "rounds.csv").empty
    assert (tmp_path / "received.jsonl").read_text() == ""
