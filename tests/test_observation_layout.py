"""Observation layouts are versioned in checkpoints: a checkpoint trained on another
layout is refused with both versions named; the confirmations are an opt-in feature
that leaves the default observation as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedinv.agents.checkpoints import CheckpointError, load_policy, write_checkpoint
from fedinv.agents.dqn import Args, RoleQNetworks
from fedinv.agents.envs import (
    CONFIRMATION_FEATURES,
    OBS_CLIP,
    EnvConfig,
    Observer,
    observation_layout,
    observation_names,
)
from fedinv.federation.task import roles_of
from fedinv.model.scenario import load_scenario
from fedinv.policies.classical import make_policy
from fedinv.sim.simulator import Simulator


def _checkpoint(tmp_path, env: EnvConfig):
    scenario = load_scenario("serial-3")
    sim = Simulator(scenario, days=3)
    roles = sorted(roles_of(scenario))
    q = RoleQNetworks(roles, len(observation_names(env)), env.actions.size, (4,), False)
    args = Args(env=env)
    path = write_checkpoint(tmp_path / "q.pt", q, scenario="serial-3", args=args)
    return path, sim.layout


def test_a_checkpoint_records_its_layout_and_a_different_one_is_refused(tmp_path):
    path, layout = _checkpoint(tmp_path, EnvConfig())
    data = torch.load(path, weights_only=True)
    assert data["observation_layout"] == "fedinv-obs/1"
    data["observation_layout"] = "fedinv-obs/0"
    torch.save(data, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match=r"old.pt.*'fedinv-obs/0'.*'fedinv-obs/1'"):
        load_policy(tmp_path / "old.pt", layout)


def test_a_checkpoint_without_a_layout_is_the_first_one(tmp_path):
    """Files written before layouts were recorded hold the default layout, version 1;
    one whose settings ask for the confirmation features cannot be one of them."""
    path, layout = _checkpoint(tmp_path, EnvConfig(confirmations=True))
    data = torch.load(path, weights_only=True)
    assert data["observation_layout"] == "fedinv-obs/1+confirmations"
    assert load_policy(path, layout)
    del data["observation_layout"]
    torch.save(data, tmp_path / "legacy.pt")
    with pytest.raises(CheckpointError, match=r"'fedinv-obs/1'.*'fedinv-obs/1\+confirmations'"):
        load_policy(tmp_path / "legacy.pt", layout)


def test_the_confirmation_features_are_opt_in_and_read_the_confirmations():
    scenario = load_scenario("serial-3")
    sim = Simulator(scenario, days=10, confirmations=True)
    policy = make_policy("base-stock", sim.layout)
    plain, extended = EnvConfig(), EnvConfig(confirmations=True)
    assert observation_names(extended) == observation_names(plain) + list(CONFIRMATION_FEATURES)
    assert observation_layout(plain) == "fedinv-obs/1"
    a, b = Observer(sim.layout, plain), Observer(sim.layout, extended)
    state, exo = sim.reset(2)
    a.reset(state)
    b.reset(state)
    seen = 0.0
    for _ in range(6):
        oa, ob = a.observe(state), b.observe(state)
        np.testing.assert_array_equal(ob[:, :, : oa.shape[2]], oa)  # the default unchanged
        # promised: what the suppliers confirm of all they owe each node, in days of demand
        promised = state.promised @ b.lane_to_node / b.unit
        np.testing.assert_allclose(ob[:, :, -1], np.clip(promised, -OBS_CLIP, OBS_CLIP), rtol=1e-6)
        seen += float(promised.sum())
        state, _ = sim.step(state, exo, policy.act(state))
    assert seen > 0  # the suppliers did confirm something
