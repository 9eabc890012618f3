"""The learner's information option (``EnvConfig.information = "echelon"``): the feature
is a node's echelon inventory position, by hand on serial-3 and exactly what the echelon
base-stock policy reads on the beer game; an HDPO checkpoint trained with it says so and
loads back; the default observation is unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedinv.agents import hdpo
from fedinv.agents.checkpoints import (
    CheckpointError,
    hdpo_args_from_checkpoint,
    load_checkpoint,
    load_policy,
    policy_from_checkpoint,
    write_hdpo_checkpoint,
)
from fedinv.agents.envs import EnvConfig, Observer, observation_layout, observation_names
from fedinv.model.scenario import load_scenario
from fedinv.policies.classical import default_params, make_policy
from fedinv.policies.tuning import TuneResult
from fedinv.sim.simulator import Simulator

ECHELON = EnvConfig(information="echelon")


def run_days(scenario_name: str, days: int, policy_name: str):
    """Yield ``(layout, state, local obs, echelon obs)`` for each day of two replications
    under the textbook ``policy_name``."""
    sim = Simulator(load_scenario(scenario_name), days=days)
    lay = sim.layout
    policy = make_policy(policy_name, lay, default_params(policy_name, lay))
    local, echelon = Observer(lay, EnvConfig()), Observer(lay, ECHELON)
    state, exo = sim.reset([0, 1])
    local.reset(state)
    echelon.reset(state)
    for _ in range(days):
        yield lay, state, local.observe(state), echelon.observe(state), policy
        state, _ = sim.step(state, exo, policy.act(state))


def test_serial_echelon_position_is_the_sum_of_installation_positions_by_hand():
    """serial-3 (no order lead times, mean demand 5 at every stage): a stage's echelon
    position is its installation position (on hand - backorders - owed downstream + on
    order) plus those of every stage below it, in days of 5 units; the local features
    are the default observation unchanged, with the echelon one appended last."""
    names = observation_names(ECHELON)
    assert names[:-1] == observation_names(EnvConfig()) and names[-1] == "echelon_position"
    checked = 0
    for lay, s, local, ech, _ in run_days("serial-3", 25, "base-stock"):
        np.testing.assert_array_equal(ech[..., :-1], local)
        order = [lay.node_ids.index(f"stage-{k}") for k in (1, 2, 3)]  # downstream first
        installation = []
        for n in order:
            owed = s.owed[:, lay.lane_src == n].sum(axis=1)
            on_order = s.on_order[:, lay.lane_dst == n].sum(axis=1)
            installation.append(s.on_hand[:, n] - s.backlog[:, n] - owed + on_order)
        by_hand = np.cumsum(np.stack(installation, axis=1), axis=1) / 5.0
        np.testing.assert_allclose(ech[:, order, -1], by_hand, rtol=0, atol=1e-5)
        checked += int(np.abs(by_hand[:, 1:] - by_hand[:, :1]).max() > 0.1)
    assert checked > 10  # the upstream stages' positions differ from the retailer's


def test_beer_game_feature_is_what_the_echelon_policy_reads():
    """Beer game (order lead times 2: orders on their way to a supplier are the
    ordering node's, not the supplier's): every echelon base-stock order is
    ``max(level - echelon_position x u, 0)`` with ``u = 1`` unit/day at every stage."""
    positive = 0
    for lay, s, _, ech, echelon in run_days("beer-game", 30, "echelon-base-stock"):
        orders = echelon.act(s).orders  # [B, M], one inbound lane per stage
        for m in range(lay.num_lanes):
            n = lay.lane_dst[m]
            level = echelon.levels[list(echelon.streams.node).index(n)]
            positive += int((orders[:, m] > 0).sum())
            expected = np.maximum(level - ech[:, n, -1].astype(float), 0.0)
            np.testing.assert_allclose(orders[:, m], expected, rtol=0, atol=1e-4)
    assert positive > 20


def test_unknown_information_is_refused():
    with pytest.raises(ValueError, match="information must be one of local, echelon"):
        EnvConfig(information="global")
    assert observation_layout(EnvConfig()) == "fedinv-obs/1"
    assert observation_layout(ECHELON) == "fedinv-obs/1+echelon"


def test_checkpoint_with_echelon_features_says_so_and_loads_back(tmp_path):
    """An HDPO policy on echelon features (its weights perturbed so that the network
    matters) round-trips through its checkpoint: the file records the layout, the
    loaded policy observes 38 features and orders exactly as the original; a file
    whose config claims local features is refused."""
    scenario = load_scenario("serial-3")
    layout = Simulator(scenario, days=2).layout
    args = hdpo.Args(seed=4, replications=2, eval_days=20, env=ECHELON)
    params = default_params("base-stock", layout)
    tuned = TuneResult("base-stock", params, {}, 1.0, 0, 0, 20)
    policy = hdpo.initial_policy(args, scenario, tuned)[0]
    assert policy.observer.size == len(observation_names(EnvConfig())) + 1
    with torch.no_grad():
        for net in policy.networks.nets.values():
            net.head.weight.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(1))
    path = write_hdpo_checkpoint(tmp_path / "c.pt", policy, scenario="serial-3", args=args)
    data = load_checkpoint(path, "hdpo")
    assert data["observation_layout"] == "fedinv-obs/1+echelon"
    assert data["env_config"]["information"] == "echelon" and data["obs_size"] == 38
    assert hdpo_args_from_checkpoint(data) == args  # retraining resumes with the option
    sim = Simulator(scenario, days=20)
    loaded = load_policy(path, sim.layout, "hdpo")
    base = make_policy("base-stock", sim.layout, params)
    state, exo = sim.reset([0, 1])
    differs = 0
    for _ in range(sim.days):
        ours = policy.act(state)
        np.testing.assert_array_equal(loaded.act(state).orders, ours.orders)
        differs += int(np.abs(ours.orders - base.act(state).orders).max() > 1e-6)
        state, _ = sim.step(state, exo, ours)
    assert differs > 0  # the network, and so its echelon input, changes the orders
    data["env_config"] = dict(data["env_config"], information="local")
    with pytest.raises(CheckpointError, match="fedinv-obs/1\\+echelon"):
        policy_from_checkpoint(data, sim.layout, path)


def test_train_command_information_and_confirmations_reach_the_checkpoint(tmp_path, capsys):
    """``fedinv train --information echelon --confirmations``: the checkpoint records the
    observation it was trained on (both opt-in features), and ``simulate`` runs it on that
    observation, reproducing the training command's own held-out cost; ``--information``
    takes only the documented values."""
    import json

    import pandas as pd

    from fedinv.cli import main

    out = tmp_path / "run"
    argv = ["train", "--scenario", "serial-3", "--algo", "hdpo", "--iterations", "1"]
    argv += ["--window", "10", "--replications", "2", "--days", "30", "--eval-replications"]
    argv += ["1", "--test-replications", "2", "--train-replications", "2", "--sweeps", "1"]
    argv += ["--information", "echelon", "--confirmations", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    data = load_checkpoint(out / "checkpoint.pt", "hdpo")
    config = EnvConfig(information="echelon", confirmations=True)
    assert data["observation_layout"] == observation_layout(config)
    assert hdpo_args_from_checkpoint(data).env == config
    evaluation = pd.read_csv(out / "evaluation.csv", index_col="replication")
    capsys.readouterr()
    argv = ["simulate", "--scenario", "serial-3", "--policy", "hdpo", "--days", "30", "--json"]
    assert main([*argv, "--checkpoint", str(out / "checkpoint.pt"), "--replications", "2"]) == 0
    cost = json.loads(capsys.readouterr().out)["metrics"]["total_cost_per_day"]["mean"]
    assert cost == pytest.approx(evaluation["hdpo"].mean(), rel=1e-9)
    argv = ["train", "--scenario", "serial-3", "--out", str(tmp_path / "x")]
    assert main([*argv, "--information", "global"]) == 2
    assert "--information: invalid choice: 'global'" in capsys.readouterr().err
