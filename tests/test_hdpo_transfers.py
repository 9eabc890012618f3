"""HDPO's transfer outputs (``Args.transfers``, the Coordination Node's role learned): a
hand-computed transfer from the pressures, the numpy and torch days agreeing with
transfers moving, through the layer too, a two-peer problem whose transfer the learner
finds, and the checkpoint round trip."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from test_hdpo import given_base
from test_roles_coordination import PEERS, _peers

from fedinv.agents import hdpo
from fedinv.agents.checkpoints import (
    hdpo_args_from_checkpoint,
    load_checkpoint,
    load_policy,
    save_checkpoint,
)
from fedinv.federation.config import FedConfig
from fedinv.federation.hdpo_task import hdpo_args
from fedinv.model.scenario import load_scenario
from fedinv.policies.classical import default_params, make_policy, transfers_landed
from fedinv.sim.ops import NUMPY, torch_ops
from fedinv.sim.run import simulate
from fedinv.sim.simulator import Simulator

LEVELS = {"levels": {"plant": 60.0, "A": 40.0, "B": 40.0}}


def peers_policy(capacity: float = 100.0, share: str = "node") -> tuple[object, hdpo.HDPOPolicy]:
    """Two distributors (A: 100 on hand, B: 10; 10 units/day each) behind one plant, with
    links both ways; HDPO with transfers at step 0 on base-stock levels 40 at A and B."""
    scenario = _peers(capacity=capacity)
    args = hdpo.Args(seed=1, replications=2, eval_days=10, share=share, transfers=True)
    policy = hdpo.initial_policy(args, scenario, given_base("base-stock", LEVELS, 10))[0]
    return scenario, policy


def set_pressure(policy: hdpo.HDPOPolicy, node: str, bias: float) -> None:
    """The pressure output of ``node``'s own network (``share = "node"``) set to
    ``bias`` before the bound ``c tanh(x / c)``."""
    with torch.no_grad():
        policy.networks.nets[node].head.bias[-1] = bias


def test_pressures_propose_the_hand_computed_transfer():
    """B's pressure 30 tanh(3 / 30) = 2.990 days, A's 0: A -> B moves 2.990 x 10 units
    (B's mean demand), B -> A nothing; a link of capacity 10 moves 10; a pressure that
    asks A for more than it has on hand (90 units on the evening of day 0) moves 90. The
    orders are the base-stock orders of the state with the transfer landed."""
    scenario, policy = peers_policy()
    set_pressure(policy, "B", 3.0)
    sim = Simulator(scenario, days=10)
    state, _ = sim.reset([0])
    d = policy.act(state)
    want = 30 * np.tanh(0.1) * 10
    np.testing.assert_allclose(d.transfers, [[want, 0.0]], rtol=0, atol=1e-9)
    base = make_policy("base-stock", sim.layout, LEVELS)
    landed = transfers_landed(sim.layout, state, d.transfers)
    np.testing.assert_allclose(state.on_hand[0, 1:], [90.0, 0.0])  # the evening of day 0
    np.testing.assert_allclose(landed.on_hand[0, 1:], [90 - want, want], atol=1e-9)
    np.testing.assert_allclose(d.orders, base.act(landed).orders, rtol=0, atol=1e-9)

    scenario, policy = peers_policy(capacity=10.0)
    set_pressure(policy, "B", 3.0)
    state, _ = Simulator(scenario, days=10).reset([0])
    np.testing.assert_allclose(policy.act(state).transfers, [[10.0, 0.0]], atol=1e-9)

    scenario, policy = peers_policy(capacity=1000.0)
    set_pressure(policy, "B", 60.0)  # 30 tanh(2) = 28.9 days: 289 units asked of A
    state, _ = Simulator(scenario, days=10).reset([0])
    np.testing.assert_allclose(policy.act(state).transfers, [[90.0, 0.0]], atol=1e-9)


def perturbed(policy: hdpo.HDPOPolicy, scale: float = 0.3) -> hdpo.HDPOPolicy:
    """Every weight moved at random (a trained-looking policy whose transfers and orders
    depend on the state)."""
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in policy.networks.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return policy


@pytest.mark.parametrize("layer", [False, True])
def test_torch_training_day_is_the_numpy_day_with_transfers(layer):
    """electronics-5r (pure) and two-peers (through the safety layer, which projects the
    transfers with the orders): day by day, the torch training day of a perturbed policy
    with transfers has the numpy simulation's states and costs to 1e-9 while stock
    moves on the lateral links."""
    if layer:
        scenario, policy = peers_policy(share="tier")
        days, reps = 10, [0, 1]
    else:
        scenario = load_scenario("electronics-5r")
        days, reps = 20, [0, 1]
        layout = Simulator(scenario, days=2).layout
        args = hdpo.Args(seed=3, replications=2, eval_days=5, base="sS", transfers=True)
        tuned = given_base("sS", default_params("sS", layout), 5)
        policy = hdpo.initial_policy(args, scenario, tuned)[0]
    perturbed(policy, 1.0 if layer else 0.3)
    sim = Simulator(scenario, days=days)
    reference = copy.deepcopy(policy)
    if layer:
        reference = hdpo.through_layer(reference, sim)
    gate = hdpo.through_layer(hdpo.Proposals(), sim) if layer else None
    state, exo = sim.reset(reps)
    ts = state.to(torch_ops())
    moved = 0.0
    for _ in range(days):
        decision = reference.act(state)
        state, record = sim.step(state, exo, decision)
        ts, trained, _ = hdpo.training_day(policy, sim, ts, exo, layer=gate)
        moved += float(record["transferred"].sum())
        got = ts.to(NUMPY)
        for name in ("on_hand", "backlog", "pipeline", "owed", "transfer_pipeline"):
            np.testing.assert_allclose(getattr(got, name), getattr(state, name), rtol=0, atol=1e-9)
        np.testing.assert_allclose(
            trained["total_cost"].detach().numpy(), record["total_cost"], rtol=0, atol=1e-9
        )
    assert moved > 1.0


@pytest.fixture(scope="module")
def learned_peers():
    """Two peers over 40 days: B (10 on hand) is short on days 1-2 whatever it orders (lead
    time 3) unless A (100 on hand) sends it stock; A's link costs $1 a unit against $5 a
    unit-day of backorders. Trained with and without transfers on the same base."""
    scenario = dataclasses.replace(_peers(), horizon_days=40, warmup_days=0)
    out = {}
    for transfers in (False, True):
        args = hdpo.Args(
            seed=1,
            iterations=10,
            replications=2,
            window=0,
            hidden=(16,),
            learning_rate=5e-2,
            eval_replications=1,
            eval_every=5,
            transfers=transfers,
        )
        out[transfers] = hdpo.train(args, scenario, tuned=given_base("base-stock", LEVELS, 40))
    return scenario, out


def test_learner_finds_the_transfer(learned_peers):
    """Without transfers nothing can avoid B's backorders (validation cost stays the
    base's); with them the selected policy moves stock from A to B and costs under a
    third of the base."""
    scenario, runs = learned_peers
    plain, moving = runs[False], runs[True]
    base_cost = float(moving.curve.validation_cost_per_day.iloc[0])
    assert float(plain.curve.validation_cost_per_day.min()) == pytest.approx(base_cost, rel=1e-9)
    assert float(moving.curve.validation_cost_per_day.min()) < base_cost / 3
    metrics = simulate(scenario, lambda layout: moving.policy, replications=1)
    assert float(metrics.per_replication.transfer_units_per_day.iloc[0]) > 0.1


def test_checkpoint_keeps_the_transfer_outputs(learned_peers, tmp_path):
    scenario, runs = learned_peers
    result = runs[True]
    path = save_checkpoint(tmp_path / "checkpoint.pt", result)
    data = load_checkpoint(path, "hdpo")
    assert data["transfers"] is True and hdpo_args_from_checkpoint(data).transfers
    sim = Simulator(scenario)
    loaded = load_policy(path, sim.layout, "hdpo")
    state, exo = sim.reset([0])
    for _ in range(sim.days):
        ours = result.policy.act(state)
        theirs = loaded.act(state)
        np.testing.assert_array_equal(theirs.transfers, ours.transfers)
        np.testing.assert_array_equal(theirs.orders, ours.orders)
        state, _ = sim.step(state, exo, ours)


def test_transfers_need_lateral_links():
    """Central training and a federation refuse transfers on a network without links
    (before any tuning); an organization's policy without links of its own proposes
    none and orders as without the option."""
    scenario = load_scenario("serial-3")
    args = hdpo.Args(seed=1, replications=2, eval_days=5, transfers=True)
    with pytest.raises(ValueError, match="'serial-3' has no lateral links"):
        hdpo.train(args, scenario)
    with pytest.raises(ValueError, match="no lateral links"):
        hdpo_args(FedConfig(scenario="serial-3", algo="hdpo", transfers=True), scenario)
    layout = Simulator(scenario).layout
    tuned = given_base("base-stock", default_params("base-stock", layout), 5)
    with_option = perturbed(hdpo.initial_policy(args, scenario, tuned)[0])
    without = hdpo.initial_policy(dataclasses.replace(args, transfers=False), scenario, tuned)[0]
    with torch.no_grad():  # the same weights but for the (unused) pressure output
        for a, b in zip(
            without.networks.parameters(), with_option.networks.parameters(), strict=True
        ):
            a.copy_(b[: a.shape[0]] if a.shape != b.shape else b)
    sim = Simulator(scenario, days=10)
    state, exo = sim.reset([0, 1])
    for _ in range(sim.days):
        d = with_option.act(state)
        assert d.transfers.shape == (2, 0)
        np.testing.assert_allclose(d.orders, without.act(state).orders, rtol=0, atol=1e-9)
        state, _ = sim.step(state, exo, d)


TWO_ORGS = (
    PEERS.format(cost=1.0, capacity=100.0)
    .replace(
        '[[organizations]]\nid = "o"',
        '[[organizations]]\nid = "maker"\n[[organizations]]\nid = "retail"',
    )
    .replace(
        'region = "R"\norganization = "o"\n[[nodes]]\nid = "A"',
        'region = "R"\norganization = "maker"\n[[nodes]]\nid = "A"',
    )
    .replace('organization = "o"', 'organization = "retail"')
)
"""The two peers of :data:`test_roles_coordination.PEERS` as a retailer's, behind a
maker's plant: two organizations, the links between the retailer's own nodes."""


def test_federated_organizations_train_the_pressure_on_their_own_links(tmp_path):
    """A federation with transfers: the retailer's private data holds its A <-> B links,
    and its local round moves the distributors' pressure output; the maker, without
    links, runs its round with its pressure untouched (no gradient reaches it)."""
    from fedinv.federation.hdpo_task import base_message
    from fedinv.federation.private_data import export_private_data
    from fedinv.federation.task import initial_arrays, make_trainer, roles_of

    path = tmp_path / "two-orgs.toml"
    path.write_text(TWO_ORGS)
    scenario = load_scenario(path)
    export_private_data(scenario, tmp_path / "data")
    cfg = FedConfig(
        scenario=str(path),
        algo="hdpo",
        rounds=1,
        local_iterations=2,
        replications=2,
        window=0,
        eval_replications=1,
        eval_days=10,
        hidden=(8,),
        hdpo_learning_rate=5e-2,
        tune_replications=2,
        tune_sweeps=1,
        transfers=True,
    )
    start = initial_arrays(cfg, scenario)
    head = "nets.{}.head.weight"
    assert start[head.format("distributor")].shape[0] == 2  # S and the pressure
    base = base_message(scenario, cfg)
    out = {}
    for org in ("retail", "maker"):
        trainer = make_trainer(
            tmp_path / "data" / org, tmp_path / "state", cfg, roles_of(scenario), base
        )
        out[org], _, _ = trainer.train_round(start, 1)
    moved = np.abs(out["retail"][head.format("distributor")] - start[head.format("distributor")])
    assert moved[1].max() > 0  # the pressure row learned from the retailer's own links
    maker = np.abs(out["maker"][head.format("manufacturer")] - start[head.format("manufacturer")])
    assert maker[1].max() == 0


def test_the_decision_service_refuses_a_checkpoint_with_transfers(learned_peers, tmp_path):
    """A decision service releases orders only: a checkpoint that proposes transfers is
    refused when the service starts, with the reason (not served with them dropped)."""
    from fedinv.service.core import DecisionService, ServiceConfig

    _, runs = learned_peers
    path = save_checkpoint(tmp_path / "checkpoint.pt", runs[True])
    scenario = tmp_path / "two-peers.toml"
    scenario.write_text(PEERS.format(cost=1.0, capacity=100.0))
    config = ServiceConfig(str(scenario), "o", "hdpo", checkpoint=path, log=tmp_path / "log.sqlite")
    with pytest.raises(ValueError, match="proposes lateral transfers.*orders only"):
        DecisionService(config)


def test_the_command_lines_refuse_transfers_without_links(tmp_path, capsys):
    """Before any tuning or Flower process: `fedinv train` and `fedinv federate` name
    the scenario that has no lateral links."""
    from fedinv.cli import main

    common = ["--algo", "hdpo", "--scenario", "serial-3", "--out"]
    assert main(["federate", "--transfers", "on", *common, str(tmp_path / "f")]) == 2
    assert "'serial-3' has no lateral links" in capsys.readouterr().err
    assert not (tmp_path / "f").exists()
    assert main(["train", "--transfers", *common, str(tmp_path / "t"), "--quiet"]) == 2
    assert "'serial-3' has no lateral links" in capsys.readouterr().err
