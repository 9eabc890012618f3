"""One checkpoint writer and reader (fedinv.agents.checkpoints) for fedinv train and the
federation: round trips, files of the earlier layout, atomic writes, errors naming the
file."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_dqn import small_args, tiny

from fedinv.agents import checkpoints
from fedinv.agents.checkpoints import (
    FORMAT,
    CheckpointError,
    load_checkpoint,
    load_policy,
    save_checkpoint,
    write_checkpoint,
)
from fedinv.agents.dqn import train
from fedinv.federation.task import (
    FedConfig,
    load_global_checkpoint,
    new_model,
    roles_of,
    save_global_checkpoint,
    to_arrays,
)
from fedinv.model.scenario import load_scenario
from fedinv.sim.simulator import Simulator


@pytest.fixture(scope="module")
def trained():
    return train(small_args(total_steps=30, learning_starts=10, eval_every=0), tiny(10))


@pytest.fixture(scope="module")
def serial():
    scenario = load_scenario("serial-3")
    cfg = FedConfig(scenario="serial-3", hidden=(8,), reward_scale=10.0)
    return scenario, cfg, to_arrays(new_model(cfg, roles_of(scenario)))


def test_train_checkpoint_records_how_it_was_trained(trained, tmp_path):
    data = load_checkpoint(save_checkpoint(tmp_path / "a.pt", trained))
    assert data["format"] == FORMAT and data["best_step"] == trained.best_step
    assert data["cost_scale"] == trained.cost_scale and "federated" not in data
    assert data["versions"]["torch"] == torch.__version__
    assert set(data["versions"]) == {"fedinv", "torch", "numpy", "python"}


def test_federated_checkpoint_round_trip(serial, tmp_path):
    scenario, cfg, weights = serial
    path = save_global_checkpoint(tmp_path / "g.pt", scenario, weights, cfg, 4, {"cost": 2.5})
    arrays, server_round = load_global_checkpoint(path)
    assert server_round == 4 and set(arrays) == set(weights)
    for key, value in weights.items():
        np.testing.assert_array_equal(arrays[key], value)
    data = load_checkpoint(path)
    assert data["federated"]["metrics"] == {"cost": 2.5}
    assert data["federated"]["config"]["hidden"] == [8]
    assert data["args"]["learning_starts"] == cfg.learning_starts
    # the same file is a policy for fedinv simulate
    policy = load_policy(path, Simulator(scenario, days=2).layout)
    assert policy.q_network.roles == tuple(sorted(roles_of(scenario)))


def test_a_train_checkpoint_is_not_a_federated_one(trained, tmp_path):
    path = save_checkpoint(tmp_path / "central.pt", trained)
    with pytest.raises(CheckpointError, match="central.pt.*not a federated checkpoint"):
        load_global_checkpoint(path)
    with pytest.raises(CheckpointError, match="missing.pt.*no such file"):
        load_global_checkpoint(tmp_path / "missing.pt")


def test_files_of_the_earlier_layout_still_load(serial, tmp_path):
    """Checkpoints written before the one writer had ``torch_version`` and no
    ``versions``; federated ones had no ``share``."""
    scenario, cfg, weights = serial
    model = new_model(cfg, roles_of(scenario))
    old = {
        "format": "fedinv-dqn/1",
        "algo": "dqn",
        "scenario": scenario.name,
        "args": checkpoints.plain(dataclasses.asdict(cfg.dqn_args())),
        "env_config": checkpoints.plain(cfg.env_config().to_dict()),
        "roles": list(model.roles),
        "obs_size": model.obs_size,
        "num_actions": model.num_actions,
        "hidden": list(model.hidden),
        "dueling": True,
        "policy_state": model.state_dict(),
        "federated": {"round": 2, "config": {}, "metrics": {}},
        "torch_version": "2.0.0",
    }
    torch.save(old, tmp_path / "old.pt")
    arrays, server_round = load_global_checkpoint(tmp_path / "old.pt")
    assert server_round == 2 and set(arrays) == set(weights)
    assert load_policy(tmp_path / "old.pt", Simulator(scenario, days=2).layout)
    torch.save(old | {"format": "fedinv-dqn/0"}, tmp_path / "older.pt")
    with pytest.raises(CheckpointError, match="older.pt.*found 'fedinv-dqn/0'"):
        load_checkpoint(tmp_path / "older.pt")


def test_a_failed_write_leaves_the_previous_file(trained, tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "agent.pt", trained)
    before = path.read_bytes()

    def broken(obj, target):
        with open(target, "wb") as f:
            f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints.torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        write_checkpoint(
            path, trained.policy.q_network, scenario="tiny", args=trained.args, best_step=1
        )
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["agent.pt"]
