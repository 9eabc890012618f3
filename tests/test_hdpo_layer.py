"""HDPO trained through the safety layer (``Args.layer_gradient``): the training day runs
the orders the layer releases, exactly; the gradient on a lane the layer cut is the
identity's (straight-through) or zero (masked); checkpoints record the choice."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from test_dqn import tiny

from fedinv.agents import hdpo
from fedinv.agents.checkpoints import hdpo_args_from_checkpoint
from fedinv.model.scenario import load_scenario
from fedinv.policies.classical import default_params
from fedinv.policies.tuning import TRAIN_BASE, TuneResult
from fedinv.sim.ops import NUMPY, torch_ops
from fedinv.sim.run import mean_cost_per_day
from fedinv.sim.simulator import Decision, Simulator

DAYS = 30


def capped_serial() -> object:
    """serial-3 with stage-1's inbound lane capped at 5.6 units/day (demand N(5, 1)): the
    layer cuts the base-stock orders on many days."""
    scenario = load_scenario("serial-3")
    net = scenario.network
    lanes = tuple(
        dataclasses.replace(lane, transport_capacity=5.6) if lane.destination == "stage-1" else lane
        for lane in net.lanes
    )
    return dataclasses.replace(scenario, network=dataclasses.replace(net, lanes=lanes))


def perturbed_policy(scenario, args: hdpo.Args) -> hdpo.HDPOPolicy:
    """HDPO on the textbook base-stock levels with every weight moved at random, so its
    orders depend on the state (a trained-looking policy, not the base)."""
    layout = Simulator(scenario, days=2).layout
    params = default_params("base-stock", layout)
    tuned = TuneResult("base-stock", params, {}, 1.0, 0, 0, DAYS, mode=args.train_mode)
    policy = hdpo.initial_policy(args, scenario, tuned)[0]
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in policy.networks.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return policy


def test_training_day_is_the_projected_numpy_day():
    """Day by day, the torch training day through the layer has the states and costs of
    the numpy simulation of the same policy wrapped in the layer (``Projected``, as
    validation runs it), to 1e-9, although the layer cut the proposals on many lanes."""
    scenario = capped_serial()
    args = hdpo.Args(seed=3, replications=2, eval_days=DAYS, base="base-stock")
    policy = perturbed_policy(scenario, args)
    sim = Simulator(scenario, days=DAYS)
    reference = hdpo.through_layer(copy.deepcopy(policy), sim)
    state, exo = sim.reset([0, 1, 2])
    ts = state.to(torch_ops())
    gate = hdpo.through_layer(hdpo.Proposals(), sim)
    cut = 0
    for _ in range(DAYS):
        decision = reference.act(state)
        state, record = sim.step(state, exo, decision)
        ts, trained, moved = hdpo.training_day(policy, sim, ts, exo, layer=gate)
        cut += int((moved.detach().abs() > 1e-6).sum())
        got = ts.to(NUMPY)
        for name in ("on_hand", "backlog", "pipeline", "owed", "last_orders"):
            np.testing.assert_allclose(getattr(got, name), getattr(state, name), rtol=0, atol=1e-9)
        for name in ("total_cost", "holding_cost", "penalty_cost"):
            np.testing.assert_allclose(
                trained[name].detach().numpy(), record[name], rtol=0, atol=1e-9
            )
    assert cut > 20  # the capacity binds: released orders are not the proposals


def test_training_batch_costs_what_the_layer_releases():
    """One training batch through the layer (one window: the weights do not move during
    it) reports the mean cost per day that the numpy run of the policy behind the layer
    has on the same replications; trained by penalty, the same batch runs the proposals
    and costs something else."""
    scenario = capped_serial()
    costs = {}
    for how in ("straight-through", "masked", "penalty"):
        args = hdpo.Args(
            seed=3,
            replications=2,
            iterations=1,
            window=0,
            eval_days=DAYS,
            base="base-stock",
            train_mode="hybrid",
            layer_gradient=how,
        )
        policy = perturbed_policy(scenario, args)
        before = copy.deepcopy(policy)
        sim = Simulator(scenario, days=DAYS)
        optimizer = torch.optim.Adam(policy.networks.parameters(), lr=1e-3)
        costs[how] = hdpo.training_batch(policy, sim, optimizer, args, 1, scale=1.0)
        reps = range(TRAIN_BASE, TRAIN_BASE + 2)
        layer = mean_cost_per_day(
            Simulator(scenario, days=DAYS), hdpo.through_layer(before, sim), reps
        )
        if how != "penalty":
            assert costs[how] == pytest.approx(float(layer.mean()), rel=0, abs=1e-9)
            moved = [
                (a - b).abs().max()
                for a, b in zip(
                    policy.networks.parameters(), before.networks.parameters(), strict=True
                )
            ]
            assert max(moved) > 0  # Adam stepped
    assert abs(costs["penalty"] - costs["straight-through"]) > 1.0


def one_lane_day(capacity: float):
    """One shop (5 on hand, 5 units of demand today, lead time 1), its one lane priced
    2 $/unit plus 0.5 $/unit shipping and capped at ``capacity`` units/day; one day."""
    shop = tiny(1)
    lane = dataclasses.replace(
        shop.network.lanes[0], price=2.0, shipping_cost=0.5, transport_capacity=capacity
    )
    scenario = dataclasses.replace(shop, network=dataclasses.replace(shop.network, lanes=(lane,)))
    return Simulator(scenario, days=1)


@pytest.mark.parametrize(
    ("how", "proposal", "released", "gradient"),
    [
        ("straight-through", 8.0, 3.0, 2.5),  # cut: the identity's gradient, price + shipping
        ("masked", 8.0, 3.0, 0.0),  # cut: no gradient
        ("masked", 2.0, 2.0, 2.5),  # left as proposed: the identity's
        ("straight-through", 2.0, 2.0, 2.5),
    ],
)
def test_gradient_on_a_lane_the_layer_cut(how, proposal, released, gradient):
    """Hand-checked: the day's cost is (2 + 0.5) x the released units (the shop's stock
    meets today's demand, the order arrives tomorrow). The layer cuts an order of 8 to the
    capacity 3; d cost / d proposal is then 2.5 straight-through (what the unprojected day
    gives at the proposal) and 0 masked."""
    sim = one_lane_day(3.0)
    state, exo = sim.reset(1)
    gate = hdpo.through_layer(hdpo.Proposals(), sim)
    gate.policy.decision = Decision(np.array([[proposal]]))
    out = gate.act(state).orders
    assert out[0, 0] == pytest.approx(released, abs=1e-9)
    p = torch.tensor([[proposal]], dtype=torch.float64, requires_grad=True)
    orders = hdpo.layer_release(p, out, how)
    _, record = sim.step(state.to(torch_ops()), exo, Decision(orders), ops=torch_ops())
    cost = record["total_cost"].sum()
    cost.backward()
    assert float(cost.detach()) == pytest.approx(2.5 * released, abs=1e-12)
    assert float(p.grad) == pytest.approx(gradient, abs=1e-12)
    q = torch.tensor([[proposal]], dtype=torch.float64, requires_grad=True)
    _, raw = sim.step(state.to(torch_ops()), exo, Decision(q), ops=torch_ops())
    raw["total_cost"].sum().backward()
    assert float(q.grad) == pytest.approx(2.5, abs=1e-12)  # the unprojected day's


def test_checkpoints_record_the_layer_gradient():
    """The saved arguments carry the field; files from before it load as ``penalty``."""
    saved = dataclasses.asdict(hdpo.Args(train_mode="hybrid", layer_gradient="masked"))
    assert hdpo_args_from_checkpoint({"args": saved}).layer_gradient == "masked"
    del saved["layer_gradient"]
    assert hdpo_args_from_checkpoint({"args": saved}).layer_gradient == "penalty"
    with pytest.raises(ValueError, match="layer_gradient must be one of"):
        hdpo.check_layer_gradient(hdpo.Args(layer_gradient="clamp"))


def test_federated_and_command_line_settings():
    """``fedinv federate --layer-gradient`` reaches the organizations' HDPO arguments."""
    import argparse

    from fedinv.cli.training import add_training_options, fed_config
    from fedinv.federation.hdpo_task import hdpo_args

    parser = argparse.ArgumentParser()
    add_training_options(parser)
    cfg = fed_config(
        parser.parse_args(
            ["--algo", "hdpo", "--train-mode", "hybrid", "--layer-gradient", "masked"]
        )
    )
    assert hdpo_args(cfg, load_scenario("serial-3")).layer_gradient == "masked"
    assert cfg.to_flat()["layer-gradient"] == "masked"


def test_a_hybrid_organization_validates_through_its_layer(tmp_path):
    """A federated organization training for the layer reports the cost of the global
    weights *through its own safety layer* (as central HDPO validates): equal to a
    direct projected simulation, and not the proposals' cost, on a network whose layer
    cuts the orders."""
    from fedinv.federation import hdpo_task
    from fedinv.federation.config import round_replications
    from fedinv.federation.hdpo_task import load_arrays
    from fedinv.federation.private_data import export_private_data
    from fedinv.federation.task import (
        FedConfig,
        global_evaluation,
        initial_arrays,
        make_trainer,
        roles_of,
    )

    scenario = capped_serial()
    export_private_data(scenario, tmp_path / "data")
    cfg = FedConfig(
        scenario="serial-3",
        algo="hdpo",
        train_mode="hybrid",
        client_base="local",
        tune_replications=2,
        tune_sweeps=1,
        replications=2,
        window=20,
        hidden=(16,),
    )
    trainer = make_trainer(tmp_path / "data" / "serial", tmp_path / "s", cfg, roles_of(scenario))
    gen = np.random.default_rng(5)  # a trained-looking policy: every weight moved
    arrays = {
        k: v if k.endswith(("input_mean", "input_std")) else v + 0.3 * gen.standard_normal(v.shape)
        for k, v in initial_arrays(cfg, scenario).items()
    }
    reported = trainer.evaluate(arrays, 2, DAYS)["local-cost-per-day"]
    policy = copy.deepcopy(trainer._policy)
    load_arrays(policy.networks, arrays, trainer.local_roles)
    sim = Simulator(trainer.scenario, days=DAYS)
    reps = round_replications(2)
    projected = mean_cost_per_day(sim, hdpo.through_layer(policy, sim), reps).mean()
    proposed = mean_cost_per_day(sim, policy, reps).mean()
    assert reported == pytest.approx(projected, rel=1e-12)
    assert abs(proposed - projected) > 1e-3 * projected
    # the server's per-round evaluation on the whole network, likewise
    cfg = dataclasses.replace(cfg, eval_replications=2, eval_days=DAYS)
    whole = hdpo_task.global_policy(scenario, arrays, cfg)
    sim = Simulator(scenario, days=DAYS)
    expected = mean_cost_per_day(sim, hdpo.through_layer(whole, sim), reps).mean()
    got = global_evaluation(scenario, arrays, cfg)["global-cost-per-day"]
    assert got == pytest.approx(expected, rel=1e-12)
    assert abs(mean_cost_per_day(sim, whole, reps).mean() - expected) > 1e-3 * expected


def test_the_command_lines_layer_gradients_are_the_learners():
    from fedinv.cli.training import LAYER_GRADIENTS

    assert LAYER_GRADIENTS == hdpo.LAYER_GRADIENTS
