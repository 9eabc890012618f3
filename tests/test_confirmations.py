"""The Supplier Interface: every source confirms the order it receives with a quantity
and a ship day (docs/model.md, "Confirmations"), and the confirmation matches what it
later ships -- from stock, behind a backlog, in an announced outage."""

import numpy as np

from fedinv.model.network import (
    DemandModel,
    InTransit,
    Lane,
    LeadTime,
    Network,
    Node,
    Organization,
    Outage,
    Scenario,
    Tier,
)
from fedinv.sim.ops import NUMPY, torch_ops
from fedinv.sim.simulator import Decision, Simulator

# lanes: 0-2 external -> S1..S3, 3 S1->A1, 4 S2->A2, 5 S3->A3
FROM_STOCK, BEHIND_BACKLOG, IN_OUTAGE = 3, 4, 5


def _three_suppliers() -> Scenario:
    """S1 has 50 on hand; S2 nothing, 15 arriving on day 2 and 15 on day 4; S3 100 on
    hand, ships at most 10 a day, and is at half capacity (announced) on days 0-9."""

    def store(name: str) -> Node:
        return Node(
            name,
            Tier.DISTRIBUTOR,
            "R",
            "o",
            holding_cost=1,
            stockout_penalty=5,
            demand=DemandModel("deterministic", 0),
        )

    nodes = (
        Node("S1", Tier.SUPPLIER, "R", "o", holding_cost=1, initial_inventory=50),
        Node("S2", Tier.SUPPLIER, "R", "o", holding_cost=1),
        Node("S3", Tier.SUPPLIER, "R", "o", holding_cost=1, capacity=10, initial_inventory=100),
        store("A1"),
        store("A2"),
        store("A3"),
    )
    lanes = (
        Lane("external", "S1", LeadTime(mean=1)),
        Lane(
            "external",
            "S2",
            LeadTime(mean=4),
            initial_pipeline=(InTransit(2, 15.0), InTransit(4, 15.0)),
        ),
        Lane("external", "S3", LeadTime(mean=1)),
        Lane("S1", "A1", LeadTime(mean=2)),
        Lane("S2", "A2", LeadTime(mean=2)),
        Lane("S3", "A3", LeadTime(mean=2)),
    )
    outage = Outage("S3", start_day=0, duration_days=10, capacity_fraction=0.5)
    return Scenario(
        "confirm",
        Network(nodes, lanes, (Organization("o"),)),
        horizon_days=12,
        outages=(outage,),
    )


def _orders(day: int) -> np.ndarray:
    """A1 orders 10 on day 0; A2 20 on day 0 and 10 on day 1; A3 30 on day 0."""
    q = np.zeros((1, 6))
    if day == 0:
        q[0, [FROM_STOCK, BEHIND_BACKLOG, IN_OUTAGE]] = 10, 20, 30
    if day == 1:
        q[0, BEHIND_BACKLOG] = 10
    return q


def test_confirmations_match_what_is_later_shipped():
    sim = Simulator(_three_suppliers(), confirmations=True)
    state, exo = sim.reset(1)
    confirmations, shipped = {}, np.zeros((12, 6))
    for day in range(12):
        state, _ = sim.step(state, exo, Decision(_orders(day)))
        shipped[day] = state.shipped[0]
        # seen the next morning: yesterday's confirmations
        confirmations[day] = (state.confirmed[0].copy(), state.confirm_days[0].copy())
    qty0, days0 = confirmations[0]
    # S1, from stock: all 10 confirmed to ship on day 0 -- and 10 shipped on day 0.
    assert qty0[FROM_STOCK] == 10 and days0[FROM_STOCK] == 0
    assert shipped[0, FROM_STOCK] == 10 and shipped[1:, FROM_STOCK].sum() == 0
    # S2, nothing on hand: 20 owed are covered once 30 have arrived (day 4): confirmed
    # for day 0 + 4; the 10 ordered on day 1 behind them, for day 1 + 3 = 4 too.
    assert qty0[BEHIND_BACKLOG] == 20 and days0[BEHIND_BACKLOG] == 4
    qty1, days1 = confirmations[1]
    assert qty1[BEHIND_BACKLOG] == 10 and days1[BEHIND_BACKLOG] == 3
    np.testing.assert_array_equal(np.flatnonzero(shipped[:, BEHIND_BACKLOG]), [2, 4])
    assert shipped[:, BEHIND_BACKLOG].sum() == 30  # the last unit ships on day 4
    # S3, at half of 10/day: 5 ship today, the other 25 at 5 a day: done on day 0 + 5.
    assert qty0[IN_OUTAGE] == 30 and days0[IN_OUTAGE] == 5
    np.testing.assert_array_equal(shipped[:6, IN_OUTAGE], [5, 5, 5, 5, 5, 5])
    assert shipped[6:, IN_OUTAGE].sum() == 0
    # no order, no confirmation; external lanes of unlimited vendors: all at once
    assert qty1[FROM_STOCK] == 0 and days1[FROM_STOCK] == 0


def test_a_source_that_cannot_ship_within_the_horizon_confirms_only_part():
    """S3 in an outage at 0 % (announced): nothing can ship within the confirmation
    horizon, so nothing is confirmed and the ship day is the horizon's end."""
    scenario = _three_suppliers()
    stop = Outage("S3", start_day=0, duration_days=10, capacity_fraction=0.0)
    from dataclasses import replace

    sim = Simulator(replace(scenario, outages=(stop,)), confirmations=True)
    state, exo = sim.reset(1)
    state, _ = sim.step(state, exo, Decision(_orders(0)))
    assert state.confirmed[0, IN_OUTAGE] == 0
    assert state.confirm_days[0, IN_OUTAGE] == sim.confirm_len
    assert state.promised[0, IN_OUTAGE] == 0 and state.owed[0, IN_OUTAGE] == 30


def test_confirmations_are_the_same_on_torch():
    sim = Simulator(_three_suppliers(), confirmations=True)
    tops = torch_ops()
    state, exo = sim.reset(1)
    ts = state.to(tops)
    for day in range(6):
        state, _ = sim.step(state, exo, Decision(_orders(day)), NUMPY)
        ts, _ = sim.step(ts, exo, Decision(tops.asarray(_orders(day))), tops)
        for name in ("confirmed", "confirm_days", "promised"):
            np.testing.assert_allclose(getattr(ts, name).detach().numpy(), getattr(state, name))


def test_the_confirmed_position_counts_only_what_the_supplier_confirmed():
    """A3 (base-stock level 30) ordered 30 on day 0 from S3, which is stopped (announced)
    for the whole horizon: the ordered position counts the 30 owed and orders nothing
    more; the confirmed one counts none of them and orders 30 again. A1's supplier
    shipped everything: both positions count it in transit."""
    from dataclasses import replace

    from fedinv.policies.classical import make_policy

    scenario = _three_suppliers()
    stop = Outage("S3", start_day=0, duration_days=30, capacity_fraction=0.0)
    sim = Simulator(replace(scenario, outages=(stop,)), confirmations=True)
    levels = {"levels": {"A1": 10, "A2": 0, "A3": 30, "S1": 0, "S2": 0, "S3": 0}}
    ordered = make_policy("base-stock", sim.layout, levels)
    confirmed = make_policy("base-stock", sim.layout, {**levels, "position": "confirmed"})
    state, exo = sim.reset(1)
    first = ordered.act(state).orders
    np.testing.assert_array_equal(first, confirmed.act(state).orders)
    assert first[0, IN_OUTAGE] == 30 and first[0, FROM_STOCK] == 10
    state, _ = sim.step(state, exo, Decision(first))
    assert state.owed[0, IN_OUTAGE] == 30 and state.promised[0, IN_OUTAGE] == 0
    a, b = ordered.act(state).orders, confirmed.act(state).orders
    assert a[0, IN_OUTAGE] == 0 and b[0, IN_OUTAGE] == 30
    assert a[0, FROM_STOCK] == b[0, FROM_STOCK] == 0  # 10 in transit either way


def test_an_unknown_position_is_refused():
    import pytest

    from fedinv.policies.classical import make_policy

    sim = Simulator(_three_suppliers())
    with pytest.raises(ValueError, match="'position' must be one of 'ordered', 'confirmed'"):
        make_policy("sS", sim.layout, {"position": "promised"})


def test_the_private_data_export_carries_the_confirmations(tmp_path):
    """Each organization's confirmations.csv holds one row per order its suppliers outside
    it received (for other organizations' nodes, quantities their demand.csv lists as
    orders: no order lead times here), confirmed at most in full, shipping no earlier
    than the order day."""
    import pandas as pd

    from fedinv.federation.private_data import export_private_data
    from fedinv.model.scenario import load_scenario

    folders = export_private_data(load_scenario("electronics-5r"), tmp_path, days=30)
    demand = pd.concat(pd.read_csv(f / "demand.csv") for f in folders.values())
    orders = demand[(demand["kind"] == "order") & (demand["quantity"] > 0)]
    rows = 0
    for folder in folders.values():
        conf = pd.read_csv(folder / "confirmations.csv")
        assert list(conf.columns) == ["date", "lane", "quantity", "confirmed", "ship_date"]
        assert (conf["confirmed"] <= conf["quantity"] + 1e-9).all()
        assert (pd.to_datetime(conf["ship_date"]) >= pd.to_datetime(conf["date"])).all()
        for row in conf.itertuples():
            source = row.lane.split("->")[0]
            if source == "external":  # an outside vendor: no demand.csv of its own
                continue
            same = orders[(orders["date"] == row.date) & (orders["node"] == source)]
            assert row.quantity <= same["quantity"].sum() + 1e-9
        rows += len(conf)
    assert rows > 0


def test_the_step_is_off_by_default_and_a_policy_that_reads_it_says_so():
    """A default simulator keeps no confirmations (the day is as fast as before); a
    policy counting confirmed units refuses such a state, and the run helpers switch
    the step on for it."""
    import pytest

    from fedinv.policies.classical import make_policy
    from fedinv.sim.run import mean_cost_per_day

    sim = Simulator(_three_suppliers())
    state, _ = sim.reset(1)
    assert state.confirmed is None and state.promised is None
    confirmed = make_policy("base-stock", sim.layout, {"position": "confirmed"})
    assert confirmed.needs_confirmations
    with pytest.raises(ValueError, match=r"Simulator\(\.\.\., confirmations=True\)"):
        confirmed.act(state)
    assert np.isfinite(mean_cost_per_day(sim, confirmed, [0])).all()
    assert sim.confirmations


def test_confirmations_agree_on_torch_with_plants_and_late_notices():
    """electronics-5r (assembly plants) with its delays announced 3 days after shipping:
    the step on torch gives the numpy numbers."""
    from dataclasses import replace

    from fedinv.model.scenario import load_scenario
    from fedinv.policies.classical import make_policy

    base = load_scenario("electronics-5r")
    scenario = replace(
        base, delays=tuple(replace(d, notice_lag_days=3) for d in base.delays), horizon_days=25
    )
    sim = Simulator(scenario, confirmations=True)
    policy = make_policy("base-stock", sim.layout)
    tops = torch_ops()
    state, exo = sim.reset(2)
    ts = state.to(tops)
    for _ in range(20):
        d = policy.act(state)
        state, _ = sim.step(state, exo, d, NUMPY)
        ts, _ = sim.step(ts, exo, Decision(tops.asarray(d.orders)), tops)
        for name in ("confirmed", "confirm_days", "promised", "promise_days", "eta_pipeline"):
            np.testing.assert_allclose(
                getattr(ts, name).detach().numpy(), getattr(state, name), atol=1e-9, err_msg=name
            )
    assert state.promised.sum() > 0 and (state.confirm_days > 0).any()


def test_params_take_the_position_option_beside_the_node_tables():
    import pytest

    from fedinv.registry import InputError, resolve_params

    layout = Simulator(_three_suppliers()).layout
    merged = resolve_params("sS", layout, {"position": "confirmed", "s": {"A1": 3}})
    assert merged["position"] == "confirmed" and merged["s"]["A1"] == 3
    with pytest.raises(InputError, match="'position' must be one of"):
        resolve_params("sS", layout, {"position": "later"})


def test_a_wrapped_policy_that_reads_them_still_says_so():
    """The safety layer's wrapper and both Coordination Nodes pass the inner policy's
    ``needs_confirmations`` on, so the run helpers switch the step on under them too (a
    learner with the confirmation features validated through the layer needs it)."""
    from fedinv.hybrid import for_mode
    from fedinv.policies.classical import make_policy
    from fedinv.roles.coordination import BalanceConfig, BalanceRule, Coordinated
    from fedinv.roles.signals import SignalledCoordination
    from fedinv.sim.run import mean_cost_per_day

    scen = _three_suppliers()
    lay = Simulator(scen).layout
    confirmed = make_policy("base-stock", lay, {"position": "confirmed"})
    plain = make_policy("base-stock", lay)
    for wrap in (
        lambda p: for_mode(p, "hybrid", lay, backend="highspy", outages=scen.outages),
        lambda p: Coordinated(p, BalanceRule(lay, BalanceConfig())),
        lambda p: SignalledCoordination(p, BalanceRule(lay, BalanceConfig())),
    ):
        assert not wrap(plain).needs_confirmations
        sim = Simulator(scen)
        assert np.isfinite(mean_cost_per_day(sim, wrap(confirmed), [0])).all()
        assert sim.confirmations
