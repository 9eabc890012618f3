"""The day's mechanics on a hand-computed trace, and determinism."""

import numpy as np
import pandas as pd
import pytest

from fedinv.model.network import (
    DemandModel,
    InTransit,
    Lane,
    LeadTime,
    Network,
    Node,
    Organization,
    Scenario,
    Tier,
)
from fedinv.model.scenario import load_scenario
from fedinv.policies.classical import make_policy
from fedinv.sim.run import simulate
from fedinv.sim.simulator import Decision, Simulator


def _two_store_scenario() -> Scenario:
    """Supplier S (production 10/day) feeds store A (lead time 2) and store B (lead 1)."""
    nodes = (
        Node("S", Tier.SUPPLIER, "R", "o", holding_cost=1, capacity=10, initial_inventory=6),
        Node(
            "A",
            Tier.DISTRIBUTOR,
            "R",
            "o",
            holding_cost=2,
            stockout_penalty=10,
            initial_inventory=5,
            demand=DemandModel("deterministic", 4),
        ),
        Node(
            "B",
            Tier.DISTRIBUTOR,
            "R",
            "o",
            holding_cost=2,
            stockout_penalty=10,
            demand=DemandModel("deterministic", 2),
        ),
    )
    lanes = (
        Lane("external", "S", LeadTime(mean=1), transit_holding_cost=0),
        Lane("S", "A", LeadTime(mean=2)),
        Lane("S", "B", LeadTime(mean=1)),
    )
    return Scenario("trace", Network(nodes, lanes, (Organization("o"),)), horizon_days=4)


def test_hand_computed_trace_with_lead_time_backorder_rationing_and_outage():
    sim = Simulator(_two_store_scenario())
    state, exo = sim.reset(1)
    exo.node_factor[0, 2, 0] = 0.0  # supplier S is down on day 2
    # Day 0, steps 1-3: A fills 4 of 5 on hand; B has nothing: 2 backordered.
    np.testing.assert_allclose(state.on_hand[0], [6, 1, 0])
    np.testing.assert_allclose(state.backlog[0], [0, 0, 2])
    # Day 0 orders: A and B each ask S for 6; S has 6: rationed 3 and 3.
    state, rec = sim.step(state, exo, Decision(np.array([[0.0, 6.0, 6.0]])))
    np.testing.assert_allclose(rec["shipped"][0], [6, 0, 0])
    np.testing.assert_allclose(rec["internal_shortfall"][0], [6, 0, 0])  # 3 + 3 still owed
    # holding: A 1 x 2 + 3 in transit x S's rate 1; B 3 in transit; penalty B 2 x 10
    np.testing.assert_allclose(rec["holding_cost"][0], [0, 2 + 3, 3])
    np.testing.assert_allclose(rec["penalty_cost"][0], [0, 0, 20])
    # Day 1: B receives 3 (lead 1), serves its backorder of 2 first, then 1 of 2 today.
    np.testing.assert_allclose(state.on_hand[0], [0, 0, 0])
    np.testing.assert_allclose(state.backlog[0], [0, 3, 1])
    np.testing.assert_allclose(state.filled[0], [0, 1, 1])
    state, rec = sim.step(state, exo, Decision(np.array([[10.0, 0.0, 0.0]])))
    np.testing.assert_allclose(rec["penalty_cost"][0], [0, 30, 10])
    np.testing.assert_allclose(rec["capacity_violation"][0], [0, 0, 0])  # 10 <= capacity 10
    # Day 2: A receives 3 (lead 2) -> its 3 backorders; S receives its 10; S is down, so
    # it ships nothing of the 6 it owes.
    np.testing.assert_allclose(state.on_hand[0], [10, 0, 0])
    np.testing.assert_allclose(state.backlog[0], [0, 4, 3])
    state, rec = sim.step(state, exo, Decision(np.zeros((1, 3))))
    np.testing.assert_allclose(rec["shipped"][0], [0, 0, 0])
    np.testing.assert_allclose(rec["holding_cost"][0], [10, 0, 0])
    np.testing.assert_allclose(rec["penalty_cost"][0], [0, 40, 30])
    # Day 3: S is back; it ships 3 + 3 from its 10; ordering 15 from outside exceeds its
    # production capacity 10 by 5: counted, and only 10 are produced.
    state, rec = sim.step(state, exo, Decision(np.array([[15.0, 0.0, 0.0]])))
    np.testing.assert_allclose(rec["shipped"][0], [6, 0, 0])
    np.testing.assert_allclose(rec["capacity_violation"][0], [5, 0, 0])
    np.testing.assert_allclose(rec["violations"][0], [1, 0, 0])
    np.testing.assert_allclose(rec["on_hand"][0], [4, 0, 0])
    np.testing.assert_allclose(rec["backlog"][0], [0, 8, 5])
    np.testing.assert_allclose(state.owed[0], [5, 0, 0])
    np.testing.assert_allclose(rec["holding_cost"][0], [4, 3, 3])


def test_same_seed_gives_identical_frames():
    scenario = load_scenario("beer-game")

    def run():
        return simulate(
            scenario, lambda lay: make_policy("base-stock", lay), replications=3, seed=7
        )

    a, b = run(), run()
    pd.testing.assert_frame_equal(a.daily, b.daily)
    pd.testing.assert_frame_equal(a.per_replication, b.per_replication)
    c = simulate(scenario, lambda lay: make_policy("base-stock", lay), replications=3, seed=8)
    assert not np.array_equal(a.daily["demand"].to_numpy(), c.daily["demand"].to_numpy())


def test_replication_streams_do_not_depend_on_the_batch():
    # Common random numbers: replication 2 sees the same demand alone or in a batch.
    sim = Simulator(load_scenario("beer-game"))
    _, batch = sim.reset([0, 1, 2, 3])
    _, alone = sim.reset([2])
    np.testing.assert_array_equal(batch.demand[2], alone.demand[0])
    np.testing.assert_array_equal(batch.lead[2], alone.lead[0])


def test_daily_frame_has_one_row_per_replication_day_node():
    scenario = load_scenario("serial-3")
    res = simulate(scenario, lambda lay: make_policy("base-stock", lay), replications=2, days=30)
    assert len(res.daily) == 2 * 30 * 3
    assert set(res.summary.index) >= {"total_cost_per_day", "fill_rate", "bullwhip_ratio"}
    assert (res.daily["on_hand"] >= 0).all()


def test_fixed_outage_shuts_an_unlimited_node_without_nan():
    """capacity_fraction 0 on a node of unlimited capacity shuts it (inf * 0 is not NaN):
    serial-3's top stage buys nothing from its vendor during days 10..14, and only then."""
    from dataclasses import replace

    from fedinv.model.network import Outage

    base = load_scenario("serial-3")
    scenario = replace(base, outages=(Outage(target="stage-3", start_day=10, duration_days=5),))
    sim = Simulator(scenario, days=30)
    top = sim.layout.network.node_index["stage-3"]
    vendor_lane = int(np.flatnonzero(sim.layout.external & (sim.layout.lane_dst == top))[0])
    policy = make_policy("echelon-base-stock", sim.layout)
    state, exo = sim.reset([0, 1])
    bought = []
    for _ in range(30):
        state, rec = sim.step(state, exo, policy.act(state))
        assert all(np.isfinite(rec[k]).all() for k in ("on_hand", "total_cost", "filled"))
        bought.append(state.shipped[:, vendor_lane].copy())
    bought = np.array(bought)
    assert (bought[10:15] == 0).all()
    assert (bought[15:20] > 0).any()  # the backlog of orders is bought once it ends


def _one_lane(lane: Lane, demand: float = 0.0, days: int = 6) -> Scenario:
    """A store fed from outside by ``lane`` (destination "A")."""
    node = Node(
        "A",
        Tier.DISTRIBUTOR,
        "R",
        "o",
        holding_cost=1,
        stockout_penalty=10,
        demand=DemandModel("deterministic", demand),
    )
    return Scenario("one", Network((node,), (lane,), (Organization("o"),)), horizon_days=days)


def test_order_lead_time_delays_the_source_receiving_the_order():
    """Order lead time 2, lead time 1: an order released at the end of day 0 is received
    by the vendor on day 2 (owed from that morning), shipped that evening, on hand on
    day 3; until day 2 it is on order but owed by nobody."""
    lane = Lane("external", "A", LeadTime(mean=1), order_lead_time=2, transit_holding_cost=1)
    sim = Simulator(_one_lane(lane))
    state, exo = sim.reset(1)
    state, rec = sim.step(state, exo, Decision(np.array([[5.0]])))
    assert rec["orders_received"].sum() == 0  # an external vendor is no node
    np.testing.assert_allclose(state.owed[0], [0])
    np.testing.assert_allclose(state.on_order[0], [5])  # day 1: still travelling
    np.testing.assert_allclose(rec["holding_cost"][0], [0])  # nothing in transit yet
    state, rec = sim.step(state, exo, Decision(np.zeros((1, 1))))
    np.testing.assert_allclose(state.owed[0], [5])  # day 2 morning: the vendor has it
    np.testing.assert_allclose(state.arrived_orders[0], [5])
    state, rec = sim.step(state, exo, Decision(np.zeros((1, 1))))
    np.testing.assert_allclose(rec["shipped"][0], [0])  # external lanes ship from no node
    np.testing.assert_allclose(rec["in_transit"][0], [5])  # shipped on day 2, overnight
    np.testing.assert_allclose(state.on_hand[0], [5])  # day 3
    np.testing.assert_allclose(state.on_order[0], [0])


def test_order_lead_time_between_nodes_counts_as_received_orders():
    """A node sees an order on a lane with order lead time 1 the day after it is placed:
    that day it is owed (and charged as owed downstream if unfilled)."""
    nodes = (
        Node("S", Tier.SUPPLIER, "R", "o", stockout_penalty=3),
        Node("A", Tier.DISTRIBUTOR, "R", "o", demand=DemandModel("deterministic", 0.0)),
    )
    lanes = (
        Lane("external", "S", LeadTime(mean=1)),
        Lane("S", "A", LeadTime(mean=1), order_lead_time=1),
    )
    sim = Simulator(Scenario("two", Network(nodes, lanes, (Organization("o"),)), horizon_days=4))
    state, exo = sim.reset(1)
    state, rec = sim.step(state, exo, Decision(np.array([[0.0, 4.0]])))
    np.testing.assert_allclose(rec["orders_received"][0], [0, 0])
    np.testing.assert_allclose(rec["penalty_cost"][0], [0, 0])
    np.testing.assert_allclose(state.owed[0], [0, 4])  # day 1 morning
    state, rec = sim.step(state, exo, Decision(np.zeros((1, 2))))
    np.testing.assert_allclose(rec["orders_received"][0], [4, 0])
    np.testing.assert_allclose(rec["penalty_cost"][0], [12, 0])  # S has nothing: 4 x 3
    np.testing.assert_allclose(state.last_received[0], [0, 4])


def test_initial_pipeline_arrives_on_its_days_and_is_charged_in_transit():
    lane = Lane(
        "external",
        "A",
        LeadTime(mean=4),
        transit_holding_cost=0.5,
        initial_pipeline=(InTransit(1, 3.0), InTransit(3, 2.0)),
    )
    sim = Simulator(_one_lane(lane, demand=1.0))
    state, exo = sim.reset(1)
    on_hand, holding = [], []
    for _ in range(5):
        on_hand.append(float(state.on_hand[0, 0]))
        state, rec = sim.step(state, exo, Decision(np.zeros((1, 1))))
        holding.append(float(rec["holding_cost"][0, 0]))
    # day 0: nothing on hand (1 backordered); day 1: 3 arrive, 1 + 1 served; day 3: 2 more
    assert on_hand == [0.0, 1.0, 0.0, 1.0, 0.0]
    # end of day 0: 5 in transit x 0.5; day 1: 2 in transit x 0.5 + 1 on hand; ...
    assert holding == [2.5, 2.0, 1.0, 1.0, 0.0]


def test_the_perfect_information_bound_refuses_order_lead_times():
    from fedinv.hybrid import perfect_information_bound

    lane = Lane("external", "A", LeadTime(mean=1), order_lead_time=1)
    with pytest.raises(ValueError, match="order lead times"):
        perfect_information_bound(_one_lane(lane, demand=1.0), 1)


def test_a_horizon_that_cannot_fit_in_memory_is_refused_before_allocating(tmp_path):
    from fedinv.model.scenario import builtin_scenario_text

    with pytest.raises(ValueError, match=r"^days = 1000000000000: .* need about .* limit of"):
        Simulator(load_scenario("serial-3"), days=10**12)
    path = tmp_path / "long.toml"
    text = builtin_scenario_text("serial-3").replace("horizon_days = 365", "horizon_days = 10")
    path.write_text(text.replace("horizon_days = 10", f"horizon_days = {10**12}"))
    with pytest.raises(ValueError, match=r"^horizon_days \(scenario .*long.toml\) = 10{12}"):
        Simulator(load_scenario(path))
    sim = Simulator(load_scenario("serial-3"), days=10**6)  # one fits; a big batch does not
    with pytest.raises(ValueError, match=r"100000 replication\(s\) of 1000000 days"):
        sim.reset(100_000)


def test_capacity_1e15_simulates_without_overflow_warnings(tmp_path):
    import warnings

    from fedinv.model.scenario import builtin_scenario_text

    text = builtin_scenario_text("serial-3").replace(
        "holding_cost = 7.0", "holding_cost = 7.0\ncapacity = 1e15", 1
    )
    path = tmp_path / "cap.toml"
    path.write_text(text)
    scenario = load_scenario(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("base-stock", "sS"):
            simulate(scenario, lambda lay, name=name: make_policy(name, lay), 2, days=40)
