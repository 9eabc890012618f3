"""The roles bench's learner part (fedinv/bench/roles.py, ``learner``): the pipeline that
compares HDPO with and without the Supplier Interface's confirmation features and its
transfer outputs."""

import numpy as np
import pytest

from fedinv.bench import roles
from fedinv.model.scenario import load_scenario
from fedinv.policies.classical import make_policy
from fedinv.policies.tuning import tune
from fedinv.sim.run import run_records
from fedinv.sim.simulator import Simulator


def test_the_supplier_interface_changes_nothing_for_a_policy_that_does_not_read_it():
    """The learner part evaluates every arm with ``confirmations=True``: that must leave
    a policy that ignores the confirmations exactly as it runs without them."""
    scen = roles.variant("electronics-5r", "disrupted", roles.COORDINATION_VARIANTS["disrupted"])
    costs = []
    for on in (False, True):
        sim = Simulator(scen, confirmations=on)
        rec = run_records(sim, make_policy("sS", sim.layout), [0, 1])
        costs.append(rec["total_cost"])
    assert costs[1].sum() > 0
    np.testing.assert_array_equal(costs[0], costs[1])


def test_untrained_arms_are_the_tuned_base_on_every_variant_and_replication():
    """At iteration 0 every arm's residual is zero, so its orders, and its cost on each
    held-out replication, are the shared tuned base's, with confirmation features or
    transfer outputs or neither (trained on nominal, run on a variant); the cost before
    the last 60 days is the records' days 0-304 by hand."""
    scen = load_scenario("electronics-5r")
    tuned = tune(scen, "sS", train_replications=1, sweeps=0)  # one evaluation: textbook
    budget = {"replications": 2, "eval_replications": 1, "eval_every": 0, "eval_days": 30}
    variants = {"lane-outage": roles.COORDINATION_VARIANTS["lane-outage"]}
    out = roles.learner_study(
        seeds=[3, 4],
        replications=2,
        iterations=0,
        budget=budget,
        tuned=tuned,
        variants=variants,
        log=lambda _: None,
    )
    assert set(out["training"]) == {
        f"{a} seed {s}" for a in ("none", "confirmations", "transfers") for s in (3, 4)
    }
    assert out["arms"]["confirmations"]["env"]["confirmations"] is True
    for name, row in out["variants"].items():
        per_rep = row["cost_per_replication"]
        assert all(per_rep[label] == per_rep["base"] for label in out["training"])
        run = row["runs"]["confirmations seed 4"]
        assert run["vs_none"]["mean"] == 0.0 and run["vs_none"]["ci95"] == 0.0
        assert run["fill_vs_none_points"]["mean"] == 0.0
        pooled = row["mean_over_seeds"]["confirmations"]
        assert pooled["vs_none"]["mean"] == 0.0 and pooled["vs_none_across_seeds"]["mean"] == 0.0
        assert pooled["vs_base"]["mean"] == 0.0
        moving = row["runs"]["transfers seed 3"]  # pressures all 0: no stock moves
        assert moving["transfer_units_per_day"] == 0.0
        assert moving["vs_transfers_withheld"]["mean"] == 0.0
        sim = Simulator(roles.variant("electronics-5r", name, variants[name]))
        rec = run_records(sim, make_policy("sS", sim.layout, tuned.params), [0, 1])
        by_hand = rec["total_cost"][:305].sum(axis=(0, 2)).mean() / 305
        assert row["base"]["cost_per_day_before_tail"] == pytest.approx(by_hand, rel=1e-12)


def test_unknown_arm_is_refused():
    with pytest.raises(ValueError, match="unknown arm"):
        roles.learner_study(arms=["none", "telepathy"], log=lambda _: None)
