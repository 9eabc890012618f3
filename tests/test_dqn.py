"""Double DQN: learns a problem with an obvious optimum, determinism, checkpoints, CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from fedinv.agents.checkpoints import (
    CheckpointError,
    args_from_checkpoint,
    load_checkpoint,
    load_policy,
    save_checkpoint,
)
from fedinv.agents.compare import REPORT_FILES
from fedinv.agents.dqn import Args, NStepReturns, evaluate, linear_schedule, train
from fedinv.agents.envs import ActionSet, EnvConfig
from fedinv.cli import main
from fedinv.model.network import (
    DemandModel,
    Lane,
    LeadTime,
    Network,
    Node,
    Organization,
    Scenario,
    Tier,
)
from fedinv.sim.simulator import Simulator

# order nothing | up to lead-time demand | + 1, 3 or 6 days of demand
CHOICES = ActionSet(safety_factors=(0.0,), cover_days=(1.0, 3.0, 6.0), cover_safety_factor=0.0)


def tiny(days: int = 60) -> Scenario:
    """One shop, 5 units/day of deterministic demand, lead time 1: the optimum orders
    the demand every day (cost 0); every other choice holds stock or backorders."""
    node = Node(
        "shop",
        Tier.DISTRIBUTOR,
        "r",
        "o",
        holding_cost=1.0,
        stockout_penalty=10.0,
        initial_inventory=5.0,
        demand=DemandModel("deterministic", 5.0),
    )
    lane = Lane("external", "shop", LeadTime(mean=1))
    return Scenario("tiny", Network((node,), (lane,), (Organization("o"),)), horizon_days=days)


def small_args(**kw) -> Args:
    base = dict(
        total_steps=400,
        replications=4,
        learning_starts=50,
        eval_every=20,
        eval_replications=1,
        exploration_fraction=0.5,
        buffer_size=20_000,
        batch_size=64,
        hidden=(32,),
        gamma=0.9,
        n_step=1,
        learning_rate=1e-3,
        target_network_frequency=25,
        updates_per_step=2,
        env=EnvConfig(actions=CHOICES),
    )
    return Args(**(base | kw))


@pytest.fixture(scope="module")
def trained():
    scenario = tiny()
    return scenario, train(small_args(seed=1), scenario)


def test_learns_to_order_the_demand(trained):
    scenario, result = trained
    sim = Simulator(scenario)
    state, exo = sim.reset(2)
    for _ in range(sim.days):
        decision = result.policy.act(state)
        np.testing.assert_allclose(decision.orders, 5.0)
        state, _ = sim.step(state, exo, decision)
    assert evaluate(result.policy, scenario, range(2)) == pytest.approx([0.0, 0.0], abs=1e-9)
    curve = result.curve
    assert list(curve.columns[:2]) == ["step", "simulated_days"]
    assert curve["validation_cost_per_day"].iloc[0] > 1.0  # it had to learn
    assert result.best_step in set(curve["step"])


def test_same_seed_same_parameters():
    scenario = tiny(20)
    args = small_args(total_steps=80, learning_starts=20, eval_every=0)
    a, b = train(args, scenario), train(args, scenario)
    c = train(small_args(total_steps=80, learning_starts=20, eval_every=0, seed=2), scenario)
    for key, value in a.learner.q_network.state_dict().items():
        assert torch.equal(value, b.learner.q_network.state_dict()[key])
    assert a.learner.updates == b.learner.updates > 0
    assert any(
        not torch.equal(v, c.learner.q_network.state_dict()[k])
        for k, v in a.learner.q_network.state_dict().items()
    )


def test_checkpoint_round_trip(trained, tmp_path):
    scenario, result = trained
    path = save_checkpoint(tmp_path / "agent.pt", result)
    data = load_checkpoint(path)
    assert data["scenario"] == "tiny" and data["args"]["seed"] == 1
    assert set(data["learner_state"]) == {"q_network", "target_network", "optimizer", "updates"}
    assert args_from_checkpoint(data) == result.args
    sim = Simulator(scenario)
    loaded = load_policy(path, sim.layout)
    rng = np.random.default_rng(0)
    state, exo = sim.reset(3)
    for _ in range(sim.days):
        ours = result.policy.act(state)
        np.testing.assert_array_equal(loaded.act(state).orders, ours.orders)
        # random orders visit states the trained policy would not
        state, _ = sim.step(state, exo, rng.integers(0, 12, ours.orders.shape).astype(float))


def test_bad_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(garbage)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not a fedinv DQN checkpoint"):
        load_checkpoint(other)


def test_n_step_returns_and_schedule():
    acc = NStepReturns(n=2, gamma=0.5)
    o = [np.full((1, 1, 1), float(i)) for i in range(4)]
    r = [np.full((1, 1), float(v)) for v in (1, 2, 4)]
    a = np.zeros((1, 1), int)
    assert acc.push(o[0], a, r[0], o[1], False) == []
    (first,) = acc.push(o[1], a, r[1], o[2], False)
    assert first[2][0, 0] == 1 + 0.5 * 2 and first[3] is o[2] and first[4] == 0.25
    tail = acc.push(o[2], a, r[2], o[3], True)  # episode over: the tails bootstrap
    assert [t[2][0, 0] for t in tail] == [2 + 0.5 * 4, 4] and [t[4] for t in tail] == [0.25, 0.5]
    assert linear_schedule(1.0, 0.1, 10, 0) == 1.0
    assert linear_schedule(1.0, 0.1, 10, 5) == pytest.approx(0.55)
    assert linear_schedule(1.0, 0.1, 10, 50) == 0.1


# -- command line ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    argv = [
        "train",
        "--scenario",
        "single-node",
        "--algo",
        "dqn",
        "--steps",
        "60",
        "--replications",
        "2",
        "--days",
        "30",
        "--eval-replications",
        "2",
        "--test-replications",
        "3",
        "--train-replications",
        "2",
        "--sweeps",
        "1",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    return out


def test_train_command_writes_report(train_dir, capsys):
    assert sorted(p.name for p in train_dir.iterdir()) == sorted(REPORT_FILES)
    curve = pd.read_csv(train_dir / "curve.csv")
    assert {"step", "validation_cost_per_day", "base-stock_validation_cost_per_day"} <= set(
        curve.columns
    )
    assert curve["step"].iloc[-1] == 60
    evaluation = pd.read_csv(train_dir / "evaluation.csv", index_col="replication")
    assert list(evaluation.index) == [0, 1, 2] and list(evaluation.columns) == ["dqn", "base-stock"]
    summary = json.loads((train_dir / "summary.json").read_text())
    assert set(summary["cost_per_day"]) == {"dqn", "base-stock"}
    assert summary["difference_vs"]["base-stock"]["mean"] == pytest.approx(
        (evaluation["dqn"] - evaluation["base-stock"]).mean()
    )
    assert (train_dir / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_simulate_with_checkpoint(train_dir, capsys):
    argv = [
        "simulate",
        "--scenario",
        "single-node",
        "--policy",
        "dqn",
        "--checkpoint",
        str(train_dir / "checkpoint.pt"),
        "--days",
        "30",
        "--replications",
        "3",
        "--json",
    ]
    assert main(argv) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["policy"] == "dqn" and payload["params"] == {}
    # the same held-out replications as fedinv train's evaluation
    evaluation = pd.read_csv(train_dir / "evaluation.csv", index_col="replication")
    assert payload["metrics"]["total_cost_per_day"]["mean"] == pytest.approx(
        evaluation["dqn"].mean()
    )
    assert main(argv[:-1] + ["--quiet"]) == 0
    assert "checkpoint" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ([], "--checkpoint"),
        (["--checkpoint", "no/such/checkpoint.pt"], "no such file"),
        (["--checkpoint", "CORRUPT"], "cannot be read"),
        (["--checkpoint", "CKPT", "--params", "{}"], "--params"),
    ],
)
def test_simulate_dqn_bad_input(capsys, tmp_path, train_dir, extra, needle):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00" * 64)
    extra = [
        {"CORRUPT": str(corrupt), "CKPT": str(train_dir / "checkpoint.pt")}.get(x, x) for x in extra
    ]
    argv = ["simulate", "--scenario", "single-node", "--policy", "dqn", "--days", "10", *extra]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and needle in captured.err


def test_checkpoint_only_for_learned_policies(capsys, train_dir):
    argv = [
        "simulate",
        "--scenario",
        "single-node",
        "--policy",
        "base-stock",
        "--days",
        "10",
        "--checkpoint",
        str(train_dir / "checkpoint.pt"),
    ]
    assert main(argv) == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_checkpoint_for_another_network(capsys, train_dir):
    """A single distributor's agent has no Q-network for serial-3's upstream roles."""
    argv = [
        "simulate",
        "--scenario",
        "serial-3",
        "--policy",
        "dqn",
        "--days",
        "10",
        "--checkpoint",
        str(train_dir / "checkpoint.pt"),
    ]
    assert main(argv) == 2
    assert "role" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--baselines", "no-such-policy"], "--baselines"),
        (["--network-share", "-1"], "--network-share"),
        (["--algo", "ppo"], "--algo"),
    ],
)
def test_train_bad_input(capsys, tmp_path, extra, needle):
    argv = ["train", "--scenario", "single-node", "--steps", "5", "--out", str(tmp_path), *extra]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and needle in captured.err


def test_one_network_per_node(tmp_path):
    from fedinv.agents.dqn import agent_roles

    scenario = tiny(10)
    layout = Simulator(scenario).layout
    assert agent_roles(layout, [0], "node") == ("shop",)
    assert agent_roles(layout, [0], "tier") == ("distributor",)
    with pytest.raises(ValueError, match="share"):
        agent_roles(layout, [0], "organization")
    result = train(
        small_args(total_steps=30, learning_starts=10, eval_every=0, share="node"), scenario
    )
    assert result.policy.q_network.roles == ("shop",)
    loaded = load_policy(save_checkpoint(tmp_path / "node.pt", result), layout)
    assert loaded.agent_roles == ("shop",)
