"""Federated HDPO: what an organization sends, its state across restarts, and a real
Flower simulation run whose final checkpoint runs as a policy."""

import math

import numpy as np
import pandas as pd
import pytest
from test_federation import _left_running, chain  # noqa: F401  (a fixture)

from fedinv.federation.hdpo_task import base_message, local_base
from fedinv.federation.task import FedConfig, initial_arrays, roles_of
from fedinv.federation.task import make_trainer as make_trainer_
from fedinv.model.scenario import load_scenario


def _config(scenario, **kw) -> FedConfig:
    base = dict(
        scenario=str(scenario),
        algo="hdpo",
        rounds=2,
        local_iterations=1,
        replications=2,
        window=20,
        eval_replications=2,
        eval_days=20,
        hidden=(16,),
        reward_scale=50.0,
    )
    base.update(kw)
    return FedConfig(**base)


def test_hdpo_client_sends_only_parameters_and_scalar_metrics(chain, tmp_path):  # noqa: F811
    from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from clients.client_app import app

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    scenario, data = chain
    cfg = _config(scenario)
    model = initial_arrays(cfg, load_scenario(scenario))
    stats = [k for k in model if k.endswith((".input_mean", ".input_std"))]
    assert stats and any(np.any(model[k] != 0) for k in stats)  # the server's statistics
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
                    "config": ConfigRecord(
                        {
                            "server-round": 1,
                            "reward-scale": 50.0,
                            "base": base_message(load_scenario(scenario), cfg),
                        }
                    ),
                }
            ),
            dst_node_id=7,
            message_type=kind,
        )
        reply = app(msg, context)
        assert not reply.has_error(), reply.error
        content = reply.content
        assert set(content.config_records) == set()
        for record in content.metric_records.values():
            assert all(isinstance(v, int | float) for v in record.values())
        if kind == "train":
            (arrays,) = content.array_records.values()
            assert list(arrays.keys()) == list(model)
            sent = dict(zip(arrays.keys(), arrays.to_numpy_ndarrays(), strict=True))
            # the retailer trains its distributor network and returns the others as sent
            changed = {k for k in model if not np.array_equal(sent[k], model[k])}
            assert changed and all(k.startswith("nets.distributor.") for k in changed)
            assert not changed & set(stats)  # the statistics come back as sent
            metrics = content.metric_records["metrics"]
            assert metrics["examples-distributor"] > 0 and metrics["examples-supplier"] == 0


def test_hdpo_client_state_survives_a_restart_and_is_deterministic(chain, tmp_path):  # noqa: F811
    scenario, data = chain
    cfg = _config(scenario)
    roles = roles_of(load_scenario(scenario))
    start = initial_arrays(cfg, load_scenario(scenario))
    base = base_message(load_scenario(scenario), cfg)

    def make_trainer(org_dir, state_dir, cfg, roles):
        return make_trainer_(org_dir, state_dir, cfg, roles, base)

    a = make_trainer(data / "wholesale", tmp_path / "a", cfg, roles)
    w1, counts, _ = a.train_round(start, 1)
    assert counts == {"manufacturer": pytest.approx(1 * 2 * 60)}
    # a fresh process (new trainer) continues from the files of round 1
    w2, _, _ = make_trainer(data / "wholesale", tmp_path / "a", cfg, roles).train_round(w1, 2)
    assert make_trainer(data / "wholesale", tmp_path / "a", cfg, roles).saved_rounds() == [1, 2]
    # the same rounds in another folder: the same weights, bit for bit
    b = make_trainer(data / "wholesale", tmp_path / "b", cfg, roles)
    v1, _, _ = b.train_round(start, 1)
    v2, _, _ = make_trainer(data / "wholesale", tmp_path / "b", cfg, roles).train_round(v1, 2)
    for key in start:
        np.testing.assert_array_equal(w2[key], v2[key])
    # a round re-run after a crash starts from the state before it: the same answer
    again, _, _ = make_trainer(data / "wholesale", tmp_path / "a", cfg, roles).train_round(w1, 2)
    for key in start:
        np.testing.assert_array_equal(again[key], w2[key])


def test_clients_train_on_the_servers_base_applied_to_their_own_nodes(chain, tmp_path):  # noqa: F811
    from fedinv.federation.hdpo_task import hdpo_args
    from fedinv.federation.private_data import load_org_scenario
    from fedinv.policies.classical import make_policy
    from fedinv.policies.tuning import TRAIN_BASE, params_from_coordinates
    from fedinv.sim.run import mean_cost_per_day
    from fedinv.sim.simulator import Simulator

    scenario, data = chain
    whole = load_scenario(scenario)
    cfg = _config(scenario, tune_replications=2, tune_sweeps=1)
    server = __import__("json").loads(base_message(whole, cfg))
    assert set(server["coordinates"]) <= {
        "z:supplier",
        "z:manufacturer",
        "z:distributor",
        "k:supplier",
        "k:manufacturer",
        "k:distributor",
    }
    local = load_org_scenario(data / "wholesale")
    args = hdpo_args(cfg, whole)
    tuned = local_base(base_message(whole, cfg), local, args)
    sim = Simulator(local)
    # one evaluation, no search: the server's coordinates on the wholesaler's own nodes
    assert tuned.evaluations == 1
    own = {c: v for c, v in server["coordinates"].items() if c.endswith(":manufacturer")}
    assert own and tuned.coordinates == own
    assert tuned.params == params_from_coordinates(server["policy"], sim.layout, own)
    # its loss scale is the cost of those parameters on the training replications
    policy = make_policy(server["policy"], sim.layout, tuned.params)
    reps = range(TRAIN_BASE, TRAIN_BASE + 2)
    assert tuned.train_cost_per_day == pytest.approx(mean_cost_per_day(sim, policy, reps).mean())
    # a checkpoint's own base: its per-node parameters, the organization's nodes as they are
    from fedinv.federation.hdpo_task import _server_start, checkpoint_base_message

    whole_params = _server_start(whole, cfg)[1].params
    message = checkpoint_base_message(
        {"base": {"policy": server["policy"], "params": whole_params}}, "pure"
    )
    kept = local_base(message, local, args)
    assert kept.evaluations == 1 and kept.params == {
        key: {n: table[n] for n in sim.layout.node_ids} for key, table in whole_params.items()
    }
    trainer = make_trainer_(data / "wholesale", tmp_path / "s", cfg, roles_of(whole), None)
    with pytest.raises(ValueError, match="server sent no base"):
        trainer.train_round(initial_arrays(cfg, whole), 1)
    hybrid = __import__("json").dumps({**server, "mode": "hybrid"})
    with pytest.raises(ValueError, match="tuned hybrid; this organization trains on"):
        local_base(hybrid, local, args)


def test_fedconfig_refuses_an_unknown_learner():
    with pytest.raises(ValueError, match="algo"):
        FedConfig(algo="ppo")
    from fedinv.cli.training import ALGOS
    from fedinv.federation.config import ALGOS as TASK_ALGOS

    assert ALGOS == TASK_ALGOS


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_simulated_hdpo_federation_runs_and_its_checkpoint_simulates(chain, tmp_path):  # noqa: F811
    from fedinv.cli import main
    from fedinv.federation.local import run_federation

    scenario, data = chain
    out = tmp_path / "run"
    (out / "data").mkdir(parents=True)
    for org in data.iterdir():
        (out / "data" / org.name).symlink_to(org)
    run = run_federation(_config(scenario), out, timeout=500)
    rounds = pd.read_csv(run.rounds_csv)
    assert rounds["round"].tolist() == [1, 2]
    assert rounds["results"].tolist() == [3, 3] and rounds["failures"].tolist() == [0, 0]
    assert all(math.isfinite(c) for c in rounds["global-cost-per-day"])
    assert _left_running(run.processes) == []
    argv = ["simulate", "--scenario", str(scenario), "--policy", "hdpo", "--checkpoint"]
    argv += [str(run.final_checkpoint), "--days", "20", "--replications", "2", "--json"]
    assert main(argv) == 0


def test_the_per_round_evaluation_runs_on_validation_replications():
    """The server's per-round cost (rounds.csv) is the global policy's mean cost on the
    validation block from 2,000,000 -- never on the held-out replications 0..R-1 that
    studies and `fedinv simulate` test on."""
    from fedinv.federation.hdpo_task import global_policy
    from fedinv.federation.task import global_evaluation
    from fedinv.sim.run import mean_cost_per_day
    from fedinv.sim.simulator import Simulator

    scenario = load_scenario("serial-3")
    cfg = FedConfig(
        scenario="serial-3",
        algo="hdpo",
        tune_replications=2,
        tune_sweeps=1,
        eval_replications=2,
        eval_days=60,
        replications=2,
    )
    arrays = initial_arrays(cfg, scenario)
    got = global_evaluation(scenario, arrays, cfg)["global-cost-per-day"]
    sim, policy = Simulator(scenario, days=60), global_policy(scenario, arrays, cfg)
    assert got == pytest.approx(mean_cost_per_day(sim, policy, [2_000_000, 2_000_001]).mean())
    assert got != pytest.approx(mean_cost_per_day(sim, policy, [0, 1]).mean())
