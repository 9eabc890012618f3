"""The server's step and acceptance rule (fedinv.federation.server_step), by hand."""

import numpy as np
import pytest

from fedinv.federation.config import FedConfig
from fedinv.federation.server_step import ServerStep, server_step_of


def w(a: float, b: float) -> dict[str, np.ndarray]:
    return {"nets.retailer.w": np.array([a, b])}


def test_server_step_moves_a_fraction_of_the_way_to_the_average():
    step = ServerStep(step=0.25)
    out, log = step.next_global(w(1.0, 1.0), w(5.0, -3.0), reports=[9e9])  # no rule: ignored
    np.testing.assert_allclose(out["nets.retailer.w"], [2.0, 0.0])  # 1 + (4, -4) / 4
    assert log == {"server-step": 0.25}
    full, _ = ServerStep().next_global(w(1.0, 1.0), w(5.0, -3.0))
    np.testing.assert_allclose(full["nets.retailer.w"], [5.0, -3.0])  # eta 1: FedAvg


def test_acceptance_keeps_the_old_global_when_the_reported_sum_rises():
    rule = ServerStep(step=1.0, acceptance="local-cost")
    # round 1: the starting weights (0, 0), reported 10 + 20; clients average to (4, 8)
    out, log = rule.next_global(w(0.0, 0.0), w(4.0, 8.0), [10.0, 20.0])
    np.testing.assert_allclose(out["nets.retailer.w"], [4.0, 8.0])
    assert log == {"server-step": 1.0, "server-accepted": 1.0, "server-reported-cost": 30.0}
    # round 2: (4, 8) is reported worse (31 > 30): keep (0, 0), halve the step along the
    # direction (4, 8); the updates trained from (4, 8) are discarded
    out, log = rule.next_global(w(4.0, 8.0), w(100.0, 100.0), [11.0, 20.0])
    np.testing.assert_allclose(out["nets.retailer.w"], [2.0, 4.0])
    assert log == {"server-step": 0.5, "server-accepted": 0.0, "server-reported-cost": 31.0}
    # round 3: (2, 4) reported 29 <= 30: accepted; the new direction is its clients'
    # average (3, 4) minus (2, 4), taken with the halved step
    out, log = rule.next_global(w(2.0, 4.0), w(3.0, 4.0), [9.0, 20.0])
    np.testing.assert_allclose(out["nets.retailer.w"], [2.5, 4.0])
    assert log["server-accepted"] == 1.0 and log["server-step"] == 0.5
    assert rule.anchor_cost == 29.0
    # round 4: worse than 29 again: back to (2, 4) with a quarter of (1, 0)
    out, log = rule.next_global(w(2.5, 4.0), w(0.0, 0.0), [10.0, 20.0])
    np.testing.assert_allclose(out["nets.retailer.w"], [2.25, 4.0])
    assert log["server-accepted"] == 0.0 and log["server-step"] == 0.25


def test_sums_over_different_organizations_are_not_compared():
    rule = ServerStep(acceptance="local-cost")
    rule.next_global(w(0.0, 0.0), w(1.0, 1.0), [10.0, 20.0])
    out, log = rule.next_global(w(1.0, 1.0), w(3.0, 1.0), [50.0])  # one org failed
    assert log["server-accepted"] == 1.0  # nothing to compare with: accepted
    np.testing.assert_allclose(out["nets.retailer.w"], [3.0, 1.0])


def test_the_config_refuses_a_bad_step_or_rule_and_a_rule_without_reports():
    with pytest.raises(ValueError, match="server_step"):
        FedConfig(server_step=0.0)
    with pytest.raises(ValueError, match="server_step"):
        FedConfig(server_step=1.5)
    with pytest.raises(ValueError, match="acceptance"):
        FedConfig(acceptance="always")
    cfg = FedConfig(acceptance="local-cost")
    with pytest.raises(ValueError, match="eval-in-train"):
        server_step_of(cfg.server_step, cfg.acceptance, reports_in_train=False)
    assert server_step_of(1.0, "off", reports_in_train=False) is None  # plain FedAvg
    assert server_step_of(1.0, "local-cost", reports_in_train=True).acceptance == "local-cost"
    assert FedConfig.from_flat(FedConfig(server_step=0.5).to_flat()).server_step == 0.5


def test_the_strategy_applies_the_rule_to_real_flower_replies():
    """RoleFedAvg on two Flower train replies per round: the role-weighted average, then
    the rule (the second round's weights were reported worse: the server goes back)."""
    from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from server.strategy import make_strategy

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    strategy = make_strategy("fedavg")
    strategy.server_step = server_step_of(1.0, "local-cost", True)

    def round_of(sent, replies):
        strategy._global = {"nets.retailer.w": np.array(sent)}  # what configure_train keeps
        ask = Message(
            content=RecordDict({"arrays": ArrayRecord({"nets.retailer.w": Array(np.array(sent))})}),
            dst_node_id=7,
            message_type="train",
        )
        msgs = [
            Message(
                RecordDict(
                    {
                        "arrays": ArrayRecord({"nets.retailer.w": Array(np.array(v))}),
                        "metrics": MetricRecord(
                            {"num-examples": n, "examples-retailer": n, "local-cost-per-day": c}
                        ),
                    }
                ),
                reply_to=ask,
            )
            for v, n, c in replies
        ]
        arrays, _ = strategy.aggregate_train(len(strategy.round_log) + 1, msgs)
        return arrays["nets.retailer.w"].numpy()

    # round 1: average (1*[4, 0] + 3*[0, 4]) / 4 = [1, 3], taken in full
    np.testing.assert_allclose(
        round_of([0.0, 0.0], [([4.0, 0.0], 1, 5.0), ([0.0, 4.0], 3, 5.0)]), [1, 3]
    )
    # round 2: [1, 3] reported 11 > 10: back to [0, 0] + [1, 3] / 2
    out = round_of([1.0, 3.0], [([9.0, 9.0], 1, 6.0), ([9.0, 9.0], 3, 5.0)])
    np.testing.assert_allclose(out, [0.5, 1.5])
    assert strategy.round_log[2]["server-accepted"] == 0.0
    assert strategy.round_log[2]["server-reported-cost"] == 11.0


def test_the_command_line_sets_the_step_the_rule_and_hdpo_s_window():
    import argparse

    from fedinv.cli.common import CliError
    from fedinv.cli.training import add_training_options, fed_config

    parser = argparse.ArgumentParser()
    add_training_options(parser)
    args = ["--server-step", "0.5", "--acceptance", "local-cost", "--window", "365"]
    cfg = fed_config(parser.parse_args([*args, "--hdpo-learning-rate", "0.001"]))
    assert (cfg.server_step, cfg.acceptance, cfg.window) == (0.5, "local-cost", 365)
    assert cfg.hdpo_learning_rate == 0.001
    with pytest.raises(CliError, match="server_step"):
        fed_config(parser.parse_args(["--server-step", "2"]))
