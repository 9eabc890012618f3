"""The simulator against numbers known independently of it: published optima, an exact
Markov chain, the newsvendor formula."""

import numpy as np
import pytest
from scipy import stats

from fedinv.model.scenario import load_scenario
from fedinv.policies.classical import BaseStock
from fedinv.policies.lost_sales_dp import solve
from fedinv.policies.tuning import tune
from fedinv.sim.run import mean_cost_per_day
from fedinv.sim.simulator import Simulator

SERIAL_OPTIMAL_ECHELON = np.array([6.484, 12.028, 22.720])  # Snyder & Shen, Example 6.1
SERIAL_OPTIMAL_COST = 47.66


def _cost_and_halfwidth(sim, policy, reps, warmup=50):
    state, exo = sim.reset(reps)
    total = np.zeros(len(reps))
    for t in range(sim.days):
        state, rec = sim.step(state, exo, policy.act(state))
        if t >= warmup:
            total += rec["total_cost"].sum(axis=1)
    per_rep = total / (sim.days - warmup)
    # three standard errors: a fixed-seed check against an exact number fails only on a
    # real bias (a 95% interval would miss the truth for 1 seed in 20)
    half = 3.0 * per_rep.std(ddof=1) / np.sqrt(len(reps))
    return per_rep.mean(), half


def test_serial3_published_optimal_levels_reproduce_published_cost():
    sim = Simulator(load_scenario("serial-3"), days=3000)
    policy = BaseStock(sim.layout, SERIAL_OPTIMAL_ECHELON, echelon=True)
    mean, half = _cost_and_halfwidth(sim, policy, range(48))
    assert abs(mean - SERIAL_OPTIMAL_COST) <= half, (mean, half)


def test_serial3_installation_levels_equal_echelon_levels():
    # Local levels = differences of echelon levels give the same orders, day by day.
    sim = Simulator(load_scenario("serial-3"), days=200)
    local = np.diff(SERIAL_OPTIMAL_ECHELON, prepend=0.0)
    a = mean_cost_per_day(
        sim, BaseStock(sim.layout, SERIAL_OPTIMAL_ECHELON, echelon=True), range(4)
    )
    b = mean_cost_per_day(sim, BaseStock(sim.layout, local), range(4))
    np.testing.assert_allclose(a, b, rtol=1e-9)


def test_tuner_finds_serial3_base_stock_within_one_percent_of_optimum():
    scenario = load_scenario("serial-3")
    result = tune(scenario, "echelon-base-stock", train_replications=16)
    sim = Simulator(scenario, days=3000)
    levels = np.array([result.params["levels"][n] for n in sim.layout.node_ids])
    mean, half = _cost_and_halfwidth(sim, BaseStock(sim.layout, levels, echelon=True), range(32))
    assert mean <= SERIAL_OPTIMAL_COST * 1.01, (mean, half, levels)
    assert result.simulated_days == result.evaluations * 16 * scenario.horizon_days


def _lost_sales_chain_cost(level: int, lam=5.0, h=1.0, p=4.0) -> float:
    """Exact long-run cost per period of base-stock ``level``, lost sales, Poisson
    demand, an order arriving two days after it is placed (Zipkin's lead time 1): the
    stationary distribution of (on hand after arrivals, units due tomorrow)."""
    idx = {}
    for x in range(level + 1):
        for q in range(level + 1 - x):
            idx[(x, q)] = len(idx)
    n = len(idx)
    trans, cost = np.zeros((n, n)), np.zeros(n)
    pmf = stats.poisson.pmf(np.arange(80), lam)
    pmf[-1] += 1 - pmf.sum()
    for (x, q), i in idx.items():
        for d, pr in enumerate(pmf):
            y = max(x - d, 0)
            cost[i] += pr * (h * y + p * max(d - x, 0))
            trans[i, idx[(y + q, level - y - q)]] += pr
    a = np.vstack([trans.T - np.eye(n), np.ones(n)])
    b = np.zeros(n + 1)
    b[-1] = 1
    pi = np.linalg.lstsq(a, b, rcond=None)[0]
    return float(pi @ cost)


def test_lost_sales_chain_matches_published_optimum():
    costs = {s: _lost_sales_chain_cost(s) for s in (10, 11, 12, 13, 14)}
    assert min(costs, key=costs.get) == 12
    assert costs[12] == pytest.approx(4.1628, abs=5e-5)  # ~4.16; optimum 4.0407 (Zipkin)
    # an independent computation: the DP's own stationary chain of base-stock levels
    dp = solve(load_scenario("single-node-lost-sales"))
    for level, cost in costs.items():
        assert dp.base_stock_costs[level] == pytest.approx(cost, abs=1e-8)


@pytest.mark.parametrize("level", [11, 12, 13])
def test_lost_sales_simulation_matches_exact_chain(level):
    scenario = load_scenario("single-node-lost-sales")
    sim = Simulator(scenario, days=3000)
    mean, half = _cost_and_halfwidth(sim, BaseStock(sim.layout, np.array([level])), range(48))
    assert abs(mean - _lost_sales_chain_cost(level)) <= half, (mean, half)


def test_single_node_backorders_newsvendor_optimum():
    # Demand N(100, 15), h = 1, p = 19, lead time 1: S* = F^-1(p / (p + h)), cost
    # (h + p) sigma phi(z*).
    scenario = load_scenario("single-node")
    sim = Simulator(scenario, days=2000)
    z = stats.norm.ppf(19 / 20)
    best = 100 + z * 15
    expected = 20 * 15 * stats.norm.pdf(z)
    mean, half = _cost_and_halfwidth(sim, BaseStock(sim.layout, np.array([best])), range(32))
    assert abs(mean - expected) <= half, (mean, expected, half)
    for off in (-8.0, 8.0):
        worse, _ = _cost_and_halfwidth(
            sim, BaseStock(sim.layout, np.array([best + off])), range(32)
        )
        assert worse > mean
