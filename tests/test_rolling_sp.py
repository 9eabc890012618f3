"""Rolling-horizon stochastic programming (``rolling-sp``): a hand-solved instance,
non-anticipation, model reuse, and the bound."""

from dataclasses import replace

import numpy as np
import pytest

from fedinv.hybrid import make_optimization_policy, perfect_information_bound
from fedinv.model.scenario import load_scenario
from fedinv.sim.run import simulate
from fedinv.sim.simulator import Simulator

NEWSVENDOR = """
name = "nv"
horizon_days = 30
start_date = "2025-01-01"
lost_sales = false
seed = 3

[[organizations]]
id = "o"

[[nodes]]
id = "store"
tier = "distributor"
region = "R1"
organization = "o"
holding_cost = 3.0
stockout_penalty = 7.0
initial_inventory = 14.0
[nodes.demand]
distribution = "uniform"
low = 8
high = 12

[[lanes]]
source = "external"
destination = "store"
lead_time = { distribution = "deterministic", mean = 1 }
price = 0.0
transit_holding_cost = 0.0
"""


def _newsvendor_file(tmp_path, low: int = 8, high: int = 12):
    path = tmp_path / "nv.toml"
    path.write_text(
        NEWSVENDOR.replace("low = 8", f"low = {low}").replace("high = 12", f"high = {high}")
    )
    return path


def _newsvendor(tmp_path):
    return load_scenario(_newsvendor_file(tmp_path))


def test_first_day_order_is_the_newsvendor_quantile(tmp_path):
    """Demand U{8..12}, lead time 1, h = 3, p = 7: tomorrow's stock should be the
    p / (p + h) = 0.7 quantile of demand, 11 (F(10) = 0.6 < 0.7 <= F(11) = 0.8). With a
    two-day plan (today, tomorrow) and no terminal value the program is that newsvendor:
    today's order is 11 minus today's stock net of backlog."""
    scenario = _newsvendor(tmp_path)
    sim = Simulator(scenario, days=10)
    state, exo = sim.reset(1)
    policy = make_optimization_policy(
        "rolling-sp",
        scenario,
        sim.layout,
        {"horizon": 2, "scenarios": 200, "resolve_every": 1, "terminal": 0.0},
    )
    for _ in range(6):
        net = state.on_hand[0, 0] - state.backlog[0, 0]
        decision = policy.act(state)
        assert decision.orders[0, 0] == pytest.approx(max(0.0, 11.0 - net), abs=1e-6)
        state, _ = sim.step(state, exo, decision)


def test_orders_do_not_depend_on_the_future_after_today():
    """Two futures that differ after day 12 (demand and lead times) give the same orders
    up to day 12."""
    scenario = load_scenario("serial-3")
    sim = Simulator(scenario, days=30)
    _, exo = sim.reset(1)
    other = replace(exo, demand=exo.demand.copy(), lead=exo.lead.copy())
    other.demand[:, 13:] *= 3.0
    other.lead[:, 13:] += 2
    orders = []
    for streams in (exo, other):
        state, _ = sim.reset(1, exogenous=streams)
        policy = make_optimization_policy(
            "rolling-sp", scenario, sim.layout, {"horizon": 8, "scenarios": 4, "resolve_every": 2}
        )
        seen = []
        for _ in range(13):
            decision = policy.act(state)
            seen.append(decision.orders.copy())
            state, _ = sim.step(state, streams, decision)
        orders.append(np.concatenate(seen))
    np.testing.assert_array_equal(orders[0], orders[1])


@pytest.mark.parametrize("refresh", [0, 6])
def test_a_model_updated_in_place_gives_the_orders_of_a_rebuilt_one(refresh):
    """Each day the kept model (bounds updated, warm basis; with ``refresh``, every 6th
    day new samples move matrix entries in place) and a model built from scratch on the
    same data reach the same objective and the same first-stage orders."""
    from solvers.stochastic import _Model

    scenario = load_scenario("serial-3")
    sim = Simulator(scenario, days=40)
    state, exo = sim.reset(1)
    policy = make_optimization_policy(
        "rolling-sp",
        scenario,
        sim.layout,
        {"horizon": 10, "scenarios": 3, "resolve_every": 1, "refresh": refresh},
    )
    for day in range(25):
        decision = policy.act(state)
        if day >= 1:  # day 0 built the model; later days update it
            kept = policy._model[0]
            fresh = _Model(policy.blocks(state, 0, policy._sample[0]), 1, True, 60.0)
            x_fresh = fresh.solve()
            assert fresh.h.getInfo().objective_function_value == pytest.approx(
                kept.h.getInfo().objective_function_value, rel=1e-9, abs=1e-7
            )
            o = kept.blocks[0].o[0]
            np.testing.assert_allclose(
                np.where(x_fresh[o] > 1e-9, x_fresh[o], 0.0), decision.orders[0], atol=1e-6
            )
        state, _ = sim.step(state, exo, decision)
    assert policy._model[0].solves == 25  # one model, solved every day


@pytest.mark.parametrize("mode", ["pure", "hybrid"])
def test_rolling_sp_runs_and_is_no_better_than_the_bound(mode):
    scenario = load_scenario("serial-3")
    result = simulate(
        scenario,
        lambda lay: make_optimization_policy(
            "rolling-sp", scenario, lay, {"horizon": 8, "scenarios": 4}
        ),
        replications=2,
        days=60,
        mode=mode,
        solver="highspy",
    )
    cost = result.per_replication.total_cost_per_day.to_numpy()
    bound = perfect_information_bound(scenario, range(2), days=60)
    assert np.all(np.isfinite(cost)) and np.all(bound <= cost)
    assert result.per_replication.violations_per_month.sum() == 0


def test_bad_options_are_refused():
    scenario = load_scenario("serial-3")
    lay = Simulator(scenario, days=2).layout
    for bad in (
        {"scenarios": 0},
        {"terminal": 1.5},
        {"order_cycle": "weekly"},
        {"horizon": 3, "resolve_every": 3},
    ):
        with pytest.raises(ValueError):
            make_optimization_policy("rolling-sp", scenario, lay, bad)
    with pytest.raises(ValueError, match="unknown option"):
        make_optimization_policy("rolling-sp", scenario, lay, {"lead_quantile": "mean"})


def test_rolling_sp_solves_after_another_solve_fixed_highs_threads():
    """HiGHS's thread pool is global, fixed by the first MIP of a process: a process whose
    first solve used 2 threads must still run rolling-sp (it asks for one thread only
    where HiGHS allows it). In a fresh interpreter, so this test's process keeps its own."""
    import subprocess
    import sys

    code = """
import highspy, numpy as np
h = highspy.Highs(); h.setOptionValue("output_flag", False); h.setOptionValue("threads", 2)
h.addVars(1, np.zeros(1), np.ones(1))
h.changeColsIntegrality(1, np.zeros(1, np.int32), np.ones(1, np.int32)); h.run()
from fedinv.hybrid import make_optimization_policy
from fedinv.model.scenario import load_scenario
from fedinv.sim.simulator import Simulator
scenario = load_scenario("single-node")
sim = Simulator(scenario, days=3)
state, exo = sim.reset(1)
policy = make_optimization_policy("rolling-sp", scenario, sim.layout, {"scenarios": 4})
print(float(policy.act(state).orders[0, 0]))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.strip().splitlines()[-1]) >= 0.0


def test_a_replications_orders_do_not_depend_on_its_batch():
    """Replication 3 run alone and as row 3 of a batch of 4 gets the same sampled futures,
    hence the same orders, every day (serial-3, normal demand; resolved daily)."""
    scenario = load_scenario("serial-3")
    sim = Simulator(scenario, days=20)
    orders = []
    for reps, row in (([3], 0), ([0, 1, 2, 3], 3)):
        state, exo = sim.reset(reps)
        policy = make_optimization_policy(
            "rolling-sp",
            scenario,
            sim.layout,
            {"horizon": 8, "scenarios": 4, "resolve_every": 1, "refresh": 7},
        )
        seen = []
        for _ in range(20):
            decision = policy.act(state)
            seen.append(decision.orders[row].copy())
            state, _ = sim.step(state, exo, decision)
        orders.append(np.stack(seen))
    assert orders[0].sum() > 0
    np.testing.assert_array_equal(orders[0], orders[1])


def test_aggregate_sums_periods_and_maps_lead_times_by_hand():
    """Periods of 1, 1, 4 and 4 days (days 0, 1, 2-5, 6-9): demand and arrivals are the
    period's sums, capacity factors its means; a shipment placed on a period's first day
    lands in the period holding its landing day: day 0 + 3 = day 3, period 2 (2 ahead);
    day 2 + 5 = day 7, period 3 (1 ahead); day 6 + 5 = day 11, one day past the plan's
    end (day 9), period 5 (2 ahead, after the plan); day 1 + 1 = day 2 (1 ahead)."""
    from solvers.flowlp import FlowInputs, aggregate, bucket_lengths

    length = bucket_lengths(10, 2, 4)
    np.testing.assert_array_equal(length, [1, 1, 4, 4])
    np.testing.assert_array_equal(bucket_lengths(11, 2, 4), [1, 1, 4, 4, 1])
    k = np.arange(10.0)
    lead = np.array([3, 1, 5, 9, 9, 9, 5, 9, 9, 9])[:, None]
    data = FlowInputs(
        demand=k[:, None],
        lead=lead,
        node_factor=np.where(k < 4, 0.0, 1.0)[:, None],
        lane_factor=np.ones((10, 1)),
        weight=np.ones(10),
        on_hand=np.zeros(1),
        components=np.zeros(0),
        backlog=np.zeros(1),
        owed=np.zeros(1),
        arrivals=np.ones((10, 1)),
        transfers_landing=np.zeros((10, 1)),
        order_open=(k % 3 == 0)[:, None],
    )
    out = aggregate(data, length)
    np.testing.assert_array_equal(out.demand[:, 0], [0, 1, 2 + 3 + 4 + 5, 6 + 7 + 8 + 9])
    np.testing.assert_array_equal(out.arrivals[:, 0], [1, 1, 4, 4])
    np.testing.assert_array_equal(out.node_factor[:, 0], [0, 0, 0.5, 1])
    np.testing.assert_array_equal(out.lead[:, 0], [2, 1, 1, 2])
    np.testing.assert_array_equal(out.order_open[:, 0], [True, False, True, True])
    np.testing.assert_array_equal(out.length, [1, 1, 4, 4])


def test_one_day_periods_give_the_daily_model():
    """Aggregating into periods of one day changes nothing: the same columns (bounds,
    costs) and rows, entry for entry (electronics-5r: components, assembly, transfers)."""
    from solvers.flowlp import aggregate, build_flow

    scenario = load_scenario("electronics-5r")
    sim = Simulator(scenario, days=5)
    state, _ = sim.reset(1)
    policy = make_optimization_policy(
        "rolling-sp", scenario, sim.layout, {"scenarios": 1, "horizon": 30, "bucket": 1}
    )
    policy.act(state)
    data = policy._inputs(state, 0, policy._sample[0])[0]
    assert data.length is None
    models = [
        build_flow(sim.layout, x, fixed_structure=True)
        for x in (data, aggregate(data, np.ones(30, int)))
    ]
    for part in ("lo", "hi", "cost"):
        a, b = (np.concatenate(getattr(fm.var, part)) for fm in models)
        np.testing.assert_array_equal(a, b)
    for part in ("lo", "hi", "ri", "ci", "v"):
        a, b = (np.concatenate(getattr(fm.row, part)) for fm in models)
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("bucket", "covers"), [(1, 1), (3, 3)])
def test_a_bucketed_plans_first_day_order_is_known_by_hand(tmp_path, bucket, covers):
    """Demand 10 a day (uniform 10..10), lead time 1, h = 3, p = 7, a 4-day plan, no
    terminal value. Planned day by day, today's order covers tomorrow (the next order
    lands the day after): 10 - net stock. Planned as today and one 3-day period, the
    period's orders land after the plan (placed on day 1, landing on day 2: the next
    period), so today's order covers the whole period: 30 - net stock."""
    scenario = load_scenario(_newsvendor_file(tmp_path, low=10, high=10))
    sim = Simulator(scenario, days=8)
    state, exo = sim.reset(1)
    policy = make_optimization_policy(
        "rolling-sp",
        scenario,
        sim.layout,
        {
            "horizon": 4,
            "scenarios": 4,
            "resolve_every": 1,
            "terminal": 0.0,
            "daily": 1,
            "bucket": bucket,
        },
    )
    np.testing.assert_array_equal(policy.length, [1, 1, 1, 1] if bucket == 1 else [1, 3])
    for _ in range(5):
        net = state.on_hand[0, 0] - state.backlog[0, 0]
        decision = policy.act(state)
        assert decision.orders[0, 0] == pytest.approx(max(0.0, 10.0 * covers - net), abs=1e-6)
        state, _ = sim.step(state, exo, decision)


def test_a_stock_floor_raises_the_first_day_order_as_computed_by_hand(tmp_path):
    """The newsvendor instance (demand U{8..12}, variance 2, lead time 1, h = 3, p = 7,
    two-day plan, no terminal value) with ``safety = 2``: tomorrow's stock below
    F = 2 sqrt(1 x 2) costs p per unit-day. A unit more of tomorrow's stock y costs h
    where D < y - F, saves p - h = 4 net where y - F < D <= y (stock within the floor),
    saves p where D > y; at y = 10 + F the slope is (2 x 3 - 3 x 4) / 5 < 0 from the left
    and (3 x 3 - 2 x 4) / 5 > 0 from the right: the order is 10 + 2 sqrt(2) - net stock
    (11 - net without the floor; the 200 stratified futures hold U{8..12} exactly)."""
    scenario = _newsvendor(tmp_path)
    sim = Simulator(scenario, days=10)
    state, exo = sim.reset(1)
    options = {"horizon": 2, "scenarios": 200, "resolve_every": 1, "terminal": 0.0}
    policy = make_optimization_policy("rolling-sp", scenario, sim.layout, options)
    assert policy.options()["safety"] == 0.0  # "auto": none where re-solved daily
    policy = make_optimization_policy("rolling-sp", scenario, sim.layout, options | {"safety": 2.0})
    floor = 2.0 * np.sqrt(2.0)
    assert policy.floor[0] == pytest.approx(floor)
    for _ in range(6):
        net = state.on_hand[0, 0] - state.backlog[0, 0]
        decision = policy.act(state)
        assert decision.orders[0, 0] == pytest.approx(max(0.0, 10.0 + floor - net), abs=1e-6)
        state, _ = sim.step(state, exo, decision)
