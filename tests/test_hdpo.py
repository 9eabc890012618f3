"""HDPO: step 0 is the base policy exactly, a problem with an obvious optimum is solved,
same seed same weights, checkpoint round trip, the command line."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from test_dqn import tiny

from fedinv.agents import hdpo
from fedinv.agents.checkpoints import (
    CheckpointError,
    hdpo_args_from_checkpoint,
    load_checkpoint,
    load_policy,
    save_checkpoint,
)
from fedinv.agents.compare import REPORT_FILES
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
from fedinv.model.scenario import load_scenario
from fedinv.policies.classical import default_params, make_policy
from fedinv.policies.tuning import TuneResult
from fedinv.sim.ops import NUMPY, torch_ops
from fedinv.sim.simulator import Simulator


def given_base(policy: str, params: dict, days: int) -> TuneResult:
    """A 'tuning' that returns ``params`` (no search): the base the test wants."""
    return TuneResult(policy, params, {}, 1.0, 0, 0, days)


def untrained(scenario: Scenario, policy: str, seed: int = 3) -> hdpo.HDPOPolicy:
    """An HDPO policy at step 0 on the textbook parameters of ``policy``."""
    layout = Simulator(scenario, days=2).layout
    args = hdpo.Args(seed=seed, replications=2, eval_days=5, base=policy)
    tuned = given_base(policy, default_params(policy, layout), 5)
    return hdpo.initial_policy(args, scenario, tuned)[0]


# -- step 0 is the base policy -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "policy"),
    [("serial-3", "base-stock"), ("electronics-5r", "sS"), ("beer-game", "base-stock")],
)
def test_step_zero_orders_are_the_base_policys_exactly(name, policy):
    """The last layer starts at zero: every order of the untrained policy is the base
    policy's, bit for bit, on the exact numpy day (electronics-5r: assembly, lot sizes,
    split sourcing, outages) -- and the hidden layers are not zero."""
    scenario = load_scenario(name)
    ours = untrained(scenario, policy)
    assert any(p.abs().sum() > 0 for n, p in ours.networks.named_parameters() if "trunk" in n)
    sim = Simulator(scenario, days=40)
    base = make_policy(policy, sim.layout, default_params(policy, sim.layout))
    state, exo = sim.reset([0, 1, 2])
    for _ in range(sim.days):
        decision = ours.act(state)
        np.testing.assert_array_equal(decision.orders, base.act(state).orders)
        state, _ = sim.step(state, exo, decision)


def test_torch_orders_at_step_zero_equal_the_numpy_ones():
    """The training path (torch, exact trigger) orders what the numpy path orders."""
    scenario = load_scenario("serial-3")
    ours = untrained(scenario, "base-stock")
    sim = Simulator(scenario, days=30)
    state, exo = sim.reset([0, 1])
    ops = torch_ops()
    for _ in range(sim.days):
        obs = ours.observe(state)
        exact = ours.orders(state, obs).orders
        relaxed = ours.orders(state.to(ops), obs, ops, trigger_temperature=0.1).orders
        np.testing.assert_allclose(relaxed.detach().numpy(), exact, rtol=0, atol=1e-9)
        state, _ = sim.step(state, exo, exact)
    assert NUMPY.name == "numpy"


# -- a problem with an obvious optimum ---------------------------------------------------


@pytest.fixture(scope="module")
def learned():
    """One shop, 5 units/day of deterministic demand, lead time 1, holding 1, backorder
    penalty 10: order-up-to ``S`` costs ``(S - 5)`` per day above 5 and ``10 (5 - S)``
    below, so the optimum is ``S = 5`` at cost 0. The base starts at ``S = 8`` (3 $/day)."""
    scenario = tiny(40)
    args = hdpo.Args(
        seed=1,
        iterations=12,
        replications=2,
        window=10,
        hidden=(16,),
        learning_rate=0.05,
        eval_every=4,
        eval_replications=1,
    )
    return (
        scenario,
        args,
        hdpo.train(args, scenario, tuned=given_base("base-stock", {"levels": {"shop": 8.0}}, 40)),
    )


def test_learner_reaches_the_obvious_optimum(learned):
    scenario, _, result = learned
    assert result.curve["validation_cost_per_day"].iloc[0] == pytest.approx(3.0, abs=0.1)
    cost = hdpo.evaluate(result.policy, scenario, range(3))
    assert cost.max() < 0.25  # from 3 $/day; the optimum is 0
    sim = Simulator(scenario)
    state, exo = sim.reset([0])
    for _ in range(20):
        state, _ = sim.step(state, exo, result.policy.act(state))
    level, _ = result.policy.targets(result.policy.observe(state))
    assert level[0, 0] == pytest.approx(5.0, abs=0.2)  # S = 5, learned from 8


def test_same_seed_same_weights(learned):
    scenario, args, result = learned
    short = dataclasses.replace(args, iterations=3, eval_every=0)
    tuned = given_base("base-stock", {"levels": {"shop": 8.0}}, 40)
    a = hdpo.train(short, scenario, tuned=tuned)
    b = hdpo.train(short, scenario, tuned=tuned)
    c = hdpo.train(dataclasses.replace(short, seed=2), scenario, tuned=tuned)
    for key, value in a.final_state.items():
        assert torch.equal(value, b.final_state[key]), key
    assert not torch.equal(
        a.final_state["nets.distributor.trunk.0.weight"],
        c.final_state["nets.distributor.trunk.0.weight"],
    )
    assert a.training_days == 3 * 2 * 40 and a.budget()["simulated_days"] > a.training_days


# -- pieces ------------------------------------------------------------------------------


def test_embodied_cost_by_hand():
    """The supplier buys at 3 and ships at 1 per unit; the shop assembles 2 of its units
    (bom) into one, bought at an internal price (cancels network-wide) and shipped at 0.5
    per component unit: 4 and 2 x (4 + 0.5) = 9."""
    sup = Node("sup", Tier.SUPPLIER, "r", "o")
    shop = Node(
        "shop",
        Tier.DISTRIBUTOR,
        "r",
        "o",
        demand=DemandModel("deterministic", 1.0),
        bill_of_materials={"sup": 2.0},
    )
    lanes = (
        Lane("external", "sup", LeadTime(mean=1), price=3.0, shipping_cost=1.0),
        Lane("sup", "shop", LeadTime(mean=1), price=100.0, shipping_cost=0.5),
    )
    scenario = Scenario("two", Network((sup, shop), lanes, (Organization("o"),)), horizon_days=5)
    layout = Simulator(scenario, days=2).layout
    np.testing.assert_allclose(hdpo.embodied_cost(layout), [4.0, 9.0])


def test_base_choice_and_schedule():
    assert hdpo.base_policy_name(load_scenario("electronics-5r")) == "sS"
    assert hdpo.base_policy_name(load_scenario("serial-3")) == "base-stock"
    assert hdpo.annealed(1.0, 0.01, 0, 3) == 1.0
    assert hdpo.annealed(1.0, 0.01, 1, 3) == pytest.approx(0.1)
    assert hdpo.annealed(1.0, 0.01, 2, 3) == pytest.approx(0.01)


# -- checkpoints -------------------------------------------------------------------------


def test_checkpoint_round_trip(learned, tmp_path):
    scenario, args, result = learned
    path = save_checkpoint(tmp_path / "checkpoint.pt", result)
    data = load_checkpoint(path, "hdpo")
    assert data["format"] == "fedinv-hdpo/1" and data["base"]["policy"] == "base-stock"
    assert data["best_iteration"] == result.best_iteration
    assert data["budget"]["training_days"] == result.training_days
    assert hdpo_args_from_checkpoint(data) == args
    sim = Simulator(scenario)
    loaded = load_policy(path, sim.layout, "hdpo")
    state, exo = sim.reset([0, 1])
    for _ in range(sim.days):
        ours = result.policy.act(state)
        np.testing.assert_array_equal(loaded.act(state).orders, ours.orders)
        state, _ = sim.step(state, exo, ours)
    with pytest.raises(CheckpointError, match="is a fedinv HDPO checkpoint.*--policy hdpo"):
        load_checkpoint(path)  # a DQN checkpoint was expected


# -- command line ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("hdpo")
    argv = [
        "train",
        "--scenario",
        "single-node",
        "--algo",
        "hdpo",
        "--iterations",
        "2",
        "--window",
        "10",
        "--replications",
        "2",
        "--days",
        "30",
        "--eval-replications",
        "1",
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


def test_train_command_writes_report_and_simulate_loads_it(train_dir, capsys):
    assert sorted(p.name for p in train_dir.iterdir()) == sorted(REPORT_FILES)
    summary = json.loads((train_dir / "summary.json").read_text())
    assert summary["algo"] == "hdpo" and summary["base"] == "base-stock"
    assert summary["training_days"] == 2 * 2 * 30 and summary["wall_s"] > 0
    curve = pd.read_csv(train_dir / "curve.csv")
    assert list(curve["iteration"]) == [0, 2]
    evaluation = pd.read_csv(train_dir / "evaluation.csv", index_col="replication")
    assert list(evaluation.columns) == ["hdpo", "base-stock"]
    capsys.readouterr()
    argv = ["simulate", "--scenario", "single-node", "--policy", "hdpo", "--days", "30"]
    argv += ["--checkpoint", str(train_dir / "checkpoint.pt"), "--replications", "3", "--json"]
    assert main(argv) == 0
    payload = json.loads(capsys.readouterr().out)
    cost = payload["metrics"]["total_cost_per_day"]["mean"]
    assert cost == pytest.approx(evaluation["hdpo"].mean(), rel=1e-9)


def test_command_line_refusals(train_dir, capsys, tmp_path):
    argv = ["train", "--scenario", "single-node", "--algo", "hdpo", "--steps", "5"]
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    assert "--steps is for --algo dqn" in capsys.readouterr().err
    argv = ["simulate", "--scenario", "single-node", "--policy", "dqn", "--checkpoint"]
    assert main([*argv, str(train_dir / "checkpoint.pt")]) == 2
    assert "use --policy hdpo" in capsys.readouterr().err
