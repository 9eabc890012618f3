"""Optimization baselines: the perfect-information bound and the rolling-horizon LP."""

import subprocess
import sys

import numpy as np
import pytest

from fedinv.hybrid import make_optimization_policy, perfect_information_bound
from fedinv.model.scenario import load_scenario
from fedinv.policies.classical import BaseStock, make_policy
from fedinv.sim.run import mean_cost_per_day, simulate
from fedinv.sim.simulator import Simulator

SERIAL_OPTIMAL_ECHELON = np.array([6.484, 12.028, 22.720])  # Snyder & Shen, Example 6.1


def test_bound_is_below_the_optimal_base_stock_cost_serial3():
    scenario = load_scenario("serial-3")
    bound = perfect_information_bound(scenario, range(4))
    sim = Simulator(scenario)
    cost = mean_cost_per_day(
        sim, BaseStock(sim.layout, SERIAL_OPTIMAL_ECHELON, echelon=True), range(4)
    )
    assert np.all(bound < 47.66)
    assert np.all(bound <= cost)  # replication by replication, common random numbers
    # with the demand known, what stays is the pipeline's holding cost: 5 units/day on
    # each internal lane of lead time 1, at $2 and $4 per unit-day
    assert np.all(np.abs(bound - 30.0) < 1.5), bound


def test_bound_is_below_the_newsvendor_cost_single_node():
    scenario = load_scenario("single-node")
    bound = perfect_information_bound(scenario, range(3))
    cost = simulate(
        scenario,
        lambda lay: make_policy("base-stock", lay, {"levels": {"store": 124.67}}),
        replications=3,
    ).per_replication.total_cost_per_day
    assert np.all(bound < 30.94) and np.all(bound <= cost.to_numpy())
    # lead time 1 with tomorrow's demand known: only day 0's surplus stock costs
    assert np.all(bound < 0.2)


def test_bound_is_below_every_policy_on_common_replications_lost_sales():
    scenario = load_scenario("single-node-lost-sales")
    bound = perfect_information_bound(scenario, range(3), days=120)
    for policy in ("base-stock", "sS"):
        cost = simulate(
            scenario, lambda lay, p=policy: make_policy(p, lay), replications=3, days=120
        ).per_replication.total_cost_per_day.to_numpy()
        assert np.all(bound <= cost + 1e-9)


@pytest.mark.parametrize("mode", ["pure", "hybrid"])
def test_rolling_lp_runs_and_is_no_better_than_the_bound(mode):
    scenario = load_scenario("serial-3")
    result = simulate(
        scenario,
        lambda lay: make_optimization_policy("rolling-lp", scenario, lay, {"horizon": 8}),
        replications=2,
        days=60,
        mode=mode,
        solver="highspy",
    )
    cost = result.per_replication.total_cost_per_day.to_numpy()
    bound = perfect_information_bound(scenario, range(2), days=60)
    assert np.all(np.isfinite(cost)) and np.all(bound <= cost)
    assert result.per_replication.violations_per_month.sum() == 0


def test_rolling_lp_does_not_read_future_demand():
    """Two histories that differ only after day 12 get the same orders up to day 12."""
    from dataclasses import replace

    scenario = load_scenario("serial-3")
    sim = Simulator(scenario, days=30)
    _, exo = sim.reset(1)
    other = replace(exo, demand=exo.demand.copy())
    other.demand[:, 13:] *= 3.0
    orders = []
    for streams in (exo, other):
        state, _ = sim.reset(1, exogenous=streams)
        policy = make_optimization_policy("rolling-lp", scenario, sim.layout, {"horizon": 8})
        seen = []
        for _ in range(13):
            decision = policy.act(state)
            seen.append(decision.orders.copy())
            state, _ = sim.step(state, streams, decision)
        orders.append(np.concatenate(seen))
    np.testing.assert_array_equal(orders[0], orders[1])


def test_fedinv_does_not_import_the_solvers_at_import_time():
    code = (
        "import sys, fedinv.hybrid, fedinv.sim.run, fedinv.cli, fedinv.sim.simulator, "
        "fedinv.policies.classical\n"
        "bad = [m for m in ('pyomo', 'highspy', 'solvers') if m in sys.modules]\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bound_sees_an_outage_that_shuts_an_unlimited_node():
    """serial-3's top stage has unlimited capacity; shut for 10 days (capacity_fraction 0),
    the perfect-information bound must pre-stock around it, so it rises on every
    replication (inf * 0 used to make the outage invisible)."""
    from dataclasses import replace

    from fedinv.hybrid import perfect_information_bound
    from fedinv.model.network import Outage
    from fedinv.model.scenario import load_scenario

    base = load_scenario("serial-3")
    shut = replace(base, outages=(Outage(target="stage-3", start_day=100, duration_days=10),))
    free = perfect_information_bound(base, [0, 1], days=300)
    hit = perfect_information_bound(shut, [0, 1], days=300)
    assert (hit > free + 1.0).all()
