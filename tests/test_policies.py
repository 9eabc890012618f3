"""Classical policies: orders computed by hand on small states."""

import numpy as np
import pytest

from fedinv.model.network import (
    DemandModel,
    Lane,
    LeadTime,
    Network,
    Node,
    Organization,
    Scenario,
    Tier,
)
from fedinv.model.scenario import load_scenario
from fedinv.policies.classical import (
    POLICY_NAMES,
    default_params,
    formula_levels,
    make_policy,
    streams_of,
)
from fedinv.sim.simulator import Simulator


def _single(lot=0.0, fixed=0.0) -> Simulator:
    node = Node(
        "d",
        Tier.DISTRIBUTOR,
        "r",
        "o",
        holding_cost=1,
        stockout_penalty=9,
        initial_inventory=10,
        demand=DemandModel("deterministic", 4),
    )
    lane = Lane("external", "d", LeadTime(mean=3), lot_size=lot, fixed_order_cost=fixed)
    return Simulator(
        Scenario("one", Network((node,), (lane,), (Organization("o"),)), horizon_days=30)
    )


def test_base_stock_orders_up_to_level_on_inventory_position():
    sim = _single()
    state, _ = sim.reset(1)  # day 0: 10 on hand, demand 4 -> 6
    policy = make_policy("base-stock", sim.layout, {"levels": {"d": 20}})
    np.testing.assert_allclose(policy.act(state).orders, [[14.0]])
    state.owed[:] = 5.0  # 5 already on order
    np.testing.assert_allclose(policy.act(state).orders, [[9.0]])


def test_lot_size_rounds_orders_up_to_whole_lots():
    sim = _single(lot=4.0)
    state, _ = sim.reset(1)
    policy = make_policy("base-stock", sim.layout, {"levels": {"d": 20}})
    np.testing.assert_allclose(policy.act(state).orders, [[16.0]])  # 14 -> 4 lots


def test_sS_and_sQ_and_min_stock_triggers():
    sim = _single()
    state, _ = sim.reset(1)  # position 6
    ss = make_policy("sS", sim.layout, {"s": {"d": 5}, "S": {"d": 30}})
    np.testing.assert_allclose(ss.act(state).orders, [[0.0]])  # 6 > s
    ss = make_policy("sS", sim.layout, {"s": {"d": 6}, "S": {"d": 30}})
    np.testing.assert_allclose(ss.act(state).orders, [[24.0]])
    sq = make_policy("sQ", sim.layout, {"s": {"d": 13}, "Q": {"d": 5}})
    np.testing.assert_allclose(sq.act(state).orders, [[10.0]])  # 6 -> 16 > 13 with 2 x 5
    ms = make_policy("min-stock", sim.layout, {"min": {"d": 7}, "quantity": {"d": 12}})
    np.testing.assert_allclose(ms.act(state).orders, [[12.0]])
    state.owed[:] = 1.0  # something on order: the naive trigger waits
    np.testing.assert_allclose(ms.act(state).orders, [[0.0]])


def test_assembly_node_orders_each_component_by_its_bill_of_materials():
    scenario = load_scenario("electronics-5r")
    sim = Simulator(scenario, days=5)
    state, _ = sim.reset(1)
    lay = sim.layout
    plant = "M-APAC-SZ"
    policy = make_policy("base-stock", lay, {"levels": {plant: 1000.0}})
    orders = policy.act(state).orders[0]
    node = lay.node_ids.index(plant)
    bom = lay.network.nodes[node].bill_of_materials
    net = state.on_hand[0, node] - state.backlog[0, node] - (state.owed[0] @ lay.src_mat)[node]
    for item, qty in bom.items():
        lanes = [
            m
            for m in lay.inbound_lanes(node)
            if lay.network.nodes[lay.lane_src[m]].item_name == item
        ]
        stock = state.components[0, lay.lane_comp[lanes[0]]]
        expected = max(qty * (1000.0 - net) - stock - state.on_order[0, lanes].sum(), 0.0)
        got = orders[lanes].sum()
        lot = max(lay.lot_size[lanes].max(), 1.0)
        assert expected - 1e-6 <= got <= expected + lot * len(lanes), (item, expected, got)


def test_unknown_node_and_bad_values_are_clear_errors():
    sim = _single()
    with pytest.raises(ValueError, match="unknown node 'x'"):
        make_policy("base-stock", sim.layout, {"levels": {"x": 3}})
    with pytest.raises(ValueError, match="finite number"):
        make_policy("base-stock", sim.layout, {"levels": {"d": "ten"}})
    with pytest.raises(ValueError, match="unknown parameter"):
        make_policy("base-stock", sim.layout, {"level": {"d": 3}})
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("kanban", sim.layout)


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_every_policy_runs_on_every_builtin_with_defaults(name):
    for scenario in ("serial-3", "beer-game", "electronics-5r"):
        sim = Simulator(load_scenario(scenario), days=20)
        policy = make_policy(name, sim.layout, default_params(name, sim.layout))
        state, exo = sim.reset(2)
        for _ in range(20):
            decision = policy.act(state)
            assert np.all(decision.orders >= 0) and np.all(np.isfinite(decision.orders))
            state, _ = sim.step(state, exo, decision)


def test_formula_level_is_newsvendor_quantile_for_a_single_node():
    scenario = load_scenario("single-node")  # N(100, 15), lead time 1
    lay = Simulator(scenario, days=1).layout
    level = formula_levels(lay, z=1.645)
    assert level[0] == pytest.approx(100 + 1.645 * 15, rel=1e-9)
    assert streams_of(lay).size == 1


def _store(demand: DemandModel, lane_lead: LeadTime, **lane) -> Simulator:
    node = Node("d", Tier.DISTRIBUTOR, "r", "o", holding_cost=0.5, demand=demand)
    network = Network((node,), (Lane("external", "d", lane_lead, **lane),), (Organization("o"),))
    return Simulator(Scenario("one", network, horizon_days=10))


def test_formula_level_uses_exact_lead_time_moments_and_the_order_lead_time():
    """Poisson(5) demand, lead time U{2..4} (mean 3, variance 2/3) after an order lead
    time of 1: L = 4, var(L) = 2/3, level(z) = 5 L + z sqrt(5 L + 25 var(L))."""
    lead = LeadTime("uniform", mean=3.0, low=2, high=4)
    sim = _store(DemandModel("poisson", 5.0), lead, order_lead_time=1)
    expected = 20 + 1.645 * np.sqrt(20 + 25 * 2 / 3)
    assert formula_levels(sim.layout, z=1.645)[0] == pytest.approx(expected, rel=1e-12)


def test_order_quantities_are_the_eoq_and_the_tuner_scales_them_by_k():
    """EOQ = sqrt(2 K mu / h): K = 50 $/order, mu = 4 units/day, h = 0.5 $/unit-day
    gives 28.28; the tuner's k multiplies it (Q, S - s, quantity); level(z) is mu L + z
    sqrt(...) with L = 3 and no variability: 12 whatever z."""
    from fedinv.policies.tuning import params_from_coordinates

    sim = _store(DemandModel("deterministic", 4.0), LeadTime(mean=3), fixed_order_cost=50.0)
    lay = sim.layout
    q = np.sqrt(2 * 50 * 4 / 0.5)
    assert default_params("sQ", lay) == {"s": {"d": 12.0}, "Q": {"d": round(q, 4)}}
    coords = {"z:distributor": 0.0, "k:distributor": 2.5}
    assert params_from_coordinates("sQ", lay, coords)["Q"]["d"] == pytest.approx(2.5 * q, 1e-4)
    ss = params_from_coordinates("sS", lay, coords)
    assert ss["S"]["d"] - ss["s"]["d"] == pytest.approx(2.5 * q, abs=1e-3)
    ms = params_from_coordinates("min-stock", lay, coords)
    assert ms["quantity"]["d"] == pytest.approx(2.5 * q, 1e-4) and ms["min"]["d"] == 12.0
    free = _store(DemandModel("deterministic", 4.0), LeadTime(mean=3))  # K = 0: one day
    assert default_params("sQ", free.layout)["Q"] == {"d": 4.0}
