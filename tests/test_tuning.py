"""The tuner: its evaluation bound, tuning through the safety layer, one coordinate per
node (serial-3 against its known optimum)."""

import tomllib
from pathlib import Path

import numpy as np
import pytest

from fedinv.model.scenario import builtin_scenario_text, load_scenario, parse_scenario
from fedinv.policies.classical import BaseStock
from fedinv.policies.tuning import (
    TRAIN_BASE,
    _golden,
    golden_evaluations,
    max_evaluations,
    search_space,
    tune,
)
from fedinv.registry import prepare, scenario_layout
from fedinv.sim.run import mean_cost_per_day, simulate
from fedinv.sim.simulator import Simulator

SERIAL_OPTIMAL_ECHELON = np.array([6.484, 12.028, 22.720])  # Snyder & Shen, Example 6.1


@pytest.mark.parametrize(("width", "tol"), [(8.0, 0.02), (7.9, 0.02), (1.0, 0.5), (0.01, 0.02)])
def test_golden_evaluations_counts_the_points_the_search_evaluates(width, tol):
    calls = []

    def f(x):
        calls.append(x)
        return (x - 0.3 * width) ** 2

    x, _ = _golden(f, 0.0, width, tol)
    assert len(calls) == golden_evaluations(width, tol)
    assert abs(x - 0.3 * width) <= max(tol, 1e-9)


def test_max_evaluations_bounds_a_real_search():
    scenario = load_scenario("serial-3")
    layout = scenario_layout(scenario)
    result = tune(scenario, "base-stock", train_replications=2, days=60, sweeps=1)
    bound = max_evaluations("base-stock", layout, sweeps=1)
    # 3 coordinates on [-2, 6] at tolerance 0.02: 2 + ceil(log(0.0025) / log(0.618)) = 15
    assert bound == 1 + 3 * 15
    assert result.evaluations <= bound
    assert result.simulated_days == result.evaluations * 2 * 60


def test_per_node_space_has_a_coordinate_per_node():
    layout = scenario_layout(load_scenario("beer-game"))
    tiers = search_space("sS", layout, "tier")
    nodes = search_space("sS", layout, "node")
    assert len(nodes) == 2 * layout.num_nodes
    assert len(tiers) < len(nodes)  # retailer, wholesaler and distributor share a tier
    with pytest.raises(ValueError, match="per must be one of tier, node"):
        search_space("sS", layout, "org")


def _budgeted_single_node():
    """single-node with a price of 1 $/unit and a budget below a 31-day month's mean
    spend (3,100 $): pure mode overspends, the safety layer cuts orders."""
    doc = tomllib.loads(builtin_scenario_text("single-node"))
    doc["horizon_days"] = 120
    doc["lanes"][0]["price"] = 1.0
    doc["organizations"][0]["monthly_budget"] = 2900.0
    return parse_scenario(doc, "budgeted single-node", Path("."))


def test_hybrid_tuning_scores_candidates_through_the_safety_layer():
    scenario = _budgeted_single_node()
    layout = scenario_layout(scenario)
    costs = {}
    for mode in ("pure", "hybrid"):
        result = tune(scenario, "base-stock", train_replications=3, sweeps=1, mode=mode)
        assert result.mode == mode
        factory = prepare("base-stock", scenario, layout, params=result.params).factory
        run = simulate(
            scenario,
            factory,
            replications=3,
            first_replication=TRAIN_BASE,
            mode=mode,
            solver="highspy",
        )
        # the tuner's objective is the cost of its params run in its own mode
        assert result.train_cost_per_day == pytest.approx(
            run.summary.at["total_cost_per_day", "mean"], rel=1e-9
        )
        costs[mode] = result.train_cost_per_day
        if mode == "pure":
            assert run.summary.at["violations_per_month", "mean"] > 0
        else:
            assert run.summary.at["violations_per_month", "mean"] == 0
    # the budget binds: through the layer, backorders cost more than the pure overspend
    assert costs["hybrid"] > costs["pure"] + 50
    with pytest.raises(ValueError, match="mode must be one of pure, hybrid"):
        tune(scenario, "base-stock", mode="projected")


@pytest.mark.slow
def test_per_node_tuning_reaches_serial3_optimum_within_0_3_percent():
    """Installation base-stock, one level per node: the optimal echelon levels'
    differences are installation levels (test_textbook), so per-node tuning can reach
    the optimum; evaluated against it on the same held-out replications."""
    scenario = load_scenario("serial-3")
    result = tune(scenario, "base-stock", train_replications=16, sweeps=3, per="node")
    assert set(result.coordinates) == {"z:stage-1", "z:stage-2", "z:stage-3"}
    sim = Simulator(scenario, days=2000)
    levels = np.array([result.params["levels"][n] for n in sim.layout.node_ids])
    tuned = mean_cost_per_day(sim, BaseStock(sim.layout, levels), range(16))
    optimum = mean_cost_per_day(
        sim, BaseStock(sim.layout, SERIAL_OPTIMAL_ECHELON, echelon=True), range(16)
    )
    gap = tuned.mean() / optimum.mean() - 1
    assert gap <= 0.003, (gap, levels)
