"""HDPO's weight averaging (``Args.average``): the averaged candidate is the hand-computed
moving average of the iterates, averaging leaves the raw iterates bit for bit as they
were, selection takes the best candidate, and old checkpoints load with it off."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from test_dqn import tiny
from test_hdpo import given_base

from fedinv.agents import hdpo
from fedinv.agents.checkpoints import hdpo_args_from_checkpoint, load_checkpoint, save_checkpoint
from fedinv.agents.dqn import VALIDATION_BASE

DECAY = 0.6
ARGS = hdpo.Args(
    seed=1,
    iterations=3,
    replications=2,
    window=10,
    hidden=(16,),
    learning_rate=0.05,
    eval_every=1,
    eval_replications=1,
)
TUNED = given_base("base-stock", {"levels": {"shop": 8.0}}, 40)


def with_iterates(args: hdpo.Args, monkeypatch: pytest.MonkeyPatch):
    """Train on the one-shop scenario, recording the raw weights after every batch."""
    seen: list[dict[str, torch.Tensor]] = []
    batch = hdpo.training_batch

    def recording(policy, *a, **kw):
        loss = batch(policy, *a, **kw)
        seen.append(copy.deepcopy(policy.networks.state_dict()))
        return loss

    monkeypatch.setattr(hdpo, "training_batch", recording)
    scenario = tiny(40)
    return scenario, hdpo.train(args, scenario, tuned=TUNED), seen


@pytest.fixture(scope="module")
def runs():
    with pytest.MonkeyPatch.context() as mp:
        on = with_iterates(dataclasses.replace(ARGS, average=DECAY), mp)
    with pytest.MonkeyPatch.context() as mp:
        off = with_iterates(ARGS, mp)
    return on, off


def validation_cost(result: hdpo.TrainResult, scenario, state: dict) -> float:
    nets = copy.deepcopy(result.policy.networks)
    nets.load_state_dict(state)
    p = result.policy
    policy = hdpo.HDPOPolicy(p.layout, nets, p.base, p.config, p.share, p.max_change)
    valid = range(VALIDATION_BASE, VALIDATION_BASE + ARGS.eval_replications)
    return float(hdpo.evaluate(policy, scenario, valid).mean())


def test_averaged_candidate_is_the_hand_computed_average(runs):
    (scenario, result, (w1, w2, w3)), _ = runs
    curve = result.curve.set_index("iteration")
    # iteration 1: the average is the iterate itself
    assert (
        curve.loc[1, "averaged_validation_cost_per_day"] == curve.loc[1, "validation_cost_per_day"]
    )
    # iteration 3: d^2 w1 + d (1 - d) w2 + (1 - d) w3, from 0.36, 0.24, 0.4
    by_hand = {
        k: (0.36 * w1[k].double() + 0.24 * w2[k].double() + 0.4 * w3[k].double()).float()
        if k.endswith(("weight", "bias"))
        else w3[k]
        for k in w3
    }
    averaged = curve.loc[3, "averaged_validation_cost_per_day"]
    assert averaged == pytest.approx(validation_cost(result, scenario, by_hand), rel=1e-6)
    assert abs(averaged - curve.loc[3, "validation_cost_per_day"]) > 1e-3  # a real difference
    curve_nan = curve.loc[0, "averaged_validation_cost_per_day"]
    assert curve_nan != curve_nan  # nothing averaged before training


def test_averaging_leaves_the_raw_iterates_as_they_were(runs):
    (_, on, seen_on), (_, off, seen_off) = runs
    for a, b in zip(seen_on, seen_off, strict=True):
        for key in a:
            assert torch.equal(a[key], b[key]), key
    assert list(on.curve["validation_cost_per_day"]) == list(off.curve["validation_cost_per_day"])
    # off: the curve is as it was before the field existed
    assert list(off.curve.columns) == [
        "iteration",
        "simulated_days",
        "loss",
        "temperature",
        "validation_cost_per_day",
        "validation_ci95",
        "wall_s",
    ]
    assert on.validation_days == off.validation_days + 3 * 40  # 3 averaged validations


def test_the_best_candidate_is_selected(runs):
    (scenario, result, _), _ = runs
    curve = result.curve
    raw = curve["validation_cost_per_day"]
    avg = curve["averaged_validation_cost_per_day"]
    best = min(raw.min(), avg.min())
    row = curve[curve["selected"] != ""]
    assert len(row) == 1 and int(row["iteration"].iloc[0]) == result.best_iteration
    which = row["selected"].iloc[0]
    column = "validation_cost_per_day" if which == "raw" else "averaged_validation_cost_per_day"
    assert row[column].iloc[0] == best
    state = result.policy.networks.state_dict()
    assert validation_cost(result, scenario, state) == pytest.approx(best, rel=1e-12)


def test_checkpoints_keep_the_decay_and_old_ones_load_with_it_off(runs, tmp_path):
    (_, result, _), _ = runs
    data = load_checkpoint(save_checkpoint(tmp_path / "c.pt", result), "hdpo")
    assert hdpo_args_from_checkpoint(data).average == DECAY
    del data["args"]["average"]  # a file written before the field existed
    assert hdpo_args_from_checkpoint(data) == dataclasses.replace(result.args, average=0.0)
    with pytest.raises(ValueError, match="average"):
        hdpo.train(dataclasses.replace(ARGS, average=1.0), tiny(40), tuned=TUNED)
