"""The lost-sales DP against numbers known independently of it: Zipkin's published
optimum, the newsvendor optimum, and fedinv's simulator on common random numbers."""

from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from fedinv.model.network import LeadTime
from fedinv.model.scenario import load_scenario
from fedinv.policies.classical import BaseStock
from fedinv.policies.lost_sales_dp import LostSalesDPPolicy, solve
from fedinv.sim.simulator import Simulator

WARMUP = 100


def _lane(scenario, **changes):
    net = scenario.network
    return replace(scenario, network=replace(net, lanes=(replace(net.lanes[0], **changes),)))


def _per_replication(sim, policy, reps):
    """Cost per day of each replication after the warm-up, ``[R]`` $."""
    state, exo = sim.reset(reps)
    total = np.zeros(len(reps))
    for t in range(sim.days):
        state, rec = sim.step(state, exo, policy.act(state))
        if t >= WARMUP:
            total += rec["total_cost"].sum(axis=1)
    return total / (sim.days - WARMUP)


def _three_se(x):
    # three standard errors: a fixed-seed check against an exact number fails only on a
    # real bias (a 95% interval would miss the truth for 1 seed in 20)
    return 3.0 * x.std(ddof=1) / np.sqrt(len(x))


@pytest.fixture(scope="module")
def zipkin():
    scenario = load_scenario("single-node-lost-sales")
    return scenario, solve(scenario)


def test_optimum_is_zipkins_published_value(zipkin):
    _, dp = zipkin
    assert round(dp.average_cost, 4) == 4.0407  # Zipkin (2008), lead time 1, p = 4
    lo, hi = dp.bounds
    assert lo - 1e-9 <= dp.average_cost <= hi + 1e-9 and hi - lo <= 1e-9
    assert dp.base_stock_level == 12
    assert dp.average_cost < dp.base_stock_cost == dp.base_stock_costs.min()
    # the cap binds nowhere: the largest position the optimum orders up to is far below it
    position = np.arange(dp.cap + 1) + dp.order
    assert position[dp.order > 0].max() < dp.cap / 2


def test_base_stock_exact_cost_matches_simulated_base_stock(zipkin):
    scenario, dp = zipkin
    sim = Simulator(scenario, days=2000)
    cost = _per_replication(sim, BaseStock(sim.layout, np.array([12.0])), range(20))
    assert abs(cost.mean() - dp.base_stock_costs[12]) <= _three_se(cost)


def test_dp_policy_simulates_to_its_average_cost_and_beats_base_stock(zipkin):
    scenario, dp = zipkin
    sim = Simulator(scenario, days=2000)
    reps = range(20)
    cost = _per_replication(sim, LostSalesDPPolicy(sim.layout, dp), reps)
    assert abs(cost.mean() - dp.average_cost) <= _three_se(cost)
    gain = _per_replication(sim, BaseStock(sim.layout, np.array([12.0])), reps) - cost
    assert gain.mean() - _three_se(gain) > 0  # paired on common replications


def test_zero_lead_time_in_zipkins_terms_is_the_newsvendor():
    # fedinv's lead time 1: the order is on hand before the next demand, so ordering up
    # to the p / (p + h) quantile every day is optimal, at the newsvendor cost
    dp = solve(_lane(load_scenario("single-node-lost-sales"), lead_time=LeadTime(mean=1)))
    level = int(stats.poisson.ppf(4 / 5, 5.0))
    d = np.arange(200)
    pmf = stats.poisson.pmf(d, 5.0)
    newsvendor = pmf @ (np.maximum(level - d, 0) + 4 * np.maximum(d - level, 0))
    assert dp.base_stock_level == level
    assert dp.average_cost == pytest.approx(newsvendor, abs=1e-9)
    assert dp.base_stock_cost == pytest.approx(newsvendor, abs=1e-9)


def test_longer_lead_time_and_order_costs_simulate_to_the_dp_cost():
    # lead time 3 (a two-slot pipeline in the state), a fixed order cost, a price and
    # transit holding: the DP's accounting must be the simulator's
    scenario = _lane(
        load_scenario("single-node-lost-sales"),
        lead_time=LeadTime(mean=3),
        fixed_order_cost=6.0,
        price=0.5,
        transit_holding_cost=0.2,
    )
    dp = solve(scenario, cap=40)
    assert dp.model.unit_cost == pytest.approx(0.5 + 3 * 0.2)
    sim = Simulator(scenario, days=2000)
    cost = _per_replication(sim, LostSalesDPPolicy(sim.layout, dp), range(12))
    assert abs(cost.mean() - dp.average_cost) <= _three_se(cost)
    assert dp.average_cost < dp.base_stock_cost


def test_refuses_what_it_does_not_model():
    with pytest.raises(ValueError, match="single-node.*backordered.*normal demand"):
        solve(load_scenario("single-node"))
    with pytest.raises(ValueError, match="nodes"):
        solve(load_scenario("serial-3"))
    lost = load_scenario("single-node-lost-sales")
    with pytest.raises(ValueError, match="uniform lead time"):
        solve(_lane(lost, lead_time=LeadTime(distribution="uniform", low=1, high=3)))
    dp = solve(lost)
    other = Simulator(_lane(lost, lead_time=LeadTime(mean=3)), days=10)
    with pytest.raises(ValueError, match="lead time 2 days"):
        LostSalesDPPolicy(other.layout, dp)
