"""What a node knows of its shipments in transit (docs/model.md): the carrier's ETA until
the delay notice, the truth after it, overdue shipments due tomorrow; and no policy input
anticipates a delay that has not been announced."""

from dataclasses import replace

import numpy as np
import pytest

from fedinv.agents.envs import EnvConfig, Observer
from fedinv.hybrid import make_optimization_policy
from fedinv.model.network import (
    DemandModel,
    ExtraDelay,
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
from fedinv.sim.ops import NUMPY, torch_ops
from fedinv.sim.simulator import Decision, Simulator


def _late_lane(lag: int) -> Scenario:
    """S (10 on hand) ships to A on a lane of lead time 3 whose every shipment is 2 days
    late, announced ``lag`` days after shipping."""
    nodes = (
        Node("S", Tier.SUPPLIER, "R", "o", holding_cost=1, initial_inventory=10),
        Node(
            "A",
            Tier.DISTRIBUTOR,
            "R",
            "o",
            holding_cost=1,
            stockout_penalty=5,
            demand=DemandModel("deterministic", 0),
        ),
    )
    lanes = (Lane("external", "S", LeadTime(mean=1)), Lane("S", "A", LeadTime(mean=3)))
    delay = ExtraDelay("S->A", probability=1.0, min_days=2, max_days=2, notice_lag_days=lag)
    return Scenario(
        "late", Network(nodes, lanes, (Organization("o"),)), horizon_days=8, delays=(delay,)
    )


def _known_due(state) -> list[float]:
    """Lane S->A's units in transit by known arrival day ``t+1 .. t+P-1``."""
    ring = state.known_pipeline
    p = ring.shape[2]
    return list(ring[0, 1, (state.day + np.arange(1, p)) % p])


def test_known_eta_is_the_carrier_eta_until_the_notice_then_the_truth():
    sim = Simulator(_late_lane(lag=4))
    state, exo = sim.reset(1)
    assert sim.pipeline_len == 6  # lead 3 + 2 extra + 1
    state, _ = sim.step(state, exo, Decision(np.array([[0.0, 10.0]])))  # day 0: 10 ship
    # Truth: arrival on day 0 + 3 + 2 = 5. Known: ETA day 3 (no notice yet).
    assert state.day == 1
    assert _known_due(state) == [0, 10, 0, 0, 0]  # due day 3
    assert list(state.pipeline[0, 1, (1 + np.arange(1, 6)) % 6]) == [0, 0, 0, 10, 0]  # day 5
    state, _ = sim.step(state, exo, Decision(np.zeros((1, 2))))
    assert _known_due(state) == [10, 0, 0, 0, 0]  # day 2: due tomorrow (day 3)
    state, _ = sim.step(state, exo, Decision(np.zeros((1, 2))))
    # Day 3: its ETA came, it did not arrive: overdue, shown as due tomorrow.
    assert state.on_hand[0, 1] == 0
    assert _known_due(state) == [10, 0, 0, 0, 0]
    state, _ = sim.step(state, exo, Decision(np.zeros((1, 2))))
    # Day 4 = ship day + notice lag: the notice moves it to its true day, 5 (tomorrow).
    assert state.delay_notice[0, 1] == 2
    np.testing.assert_array_equal(state.known_pipeline, state.pipeline)
    assert _known_due(state) == [10, 0, 0, 0, 0]
    state, _ = sim.step(state, exo, Decision(np.zeros((1, 2))))
    assert state.on_hand[0, 1] == 10 and state.known_pipeline.sum() == 0  # day 5: arrived


def test_known_eta_before_the_notice_differs_from_the_truth_and_equals_it_after():
    sim = Simulator(_late_lane(lag=2))
    state, exo = sim.reset(1)
    state, _ = sim.step(state, exo, Decision(np.array([[0.0, 10.0]])))
    # Day 1: ETA day 3, truth day 5; totals in transit are the same.
    assert _known_due(state) == [0, 10, 0, 0, 0]
    assert not np.array_equal(state.known_pipeline, state.pipeline)
    np.testing.assert_array_equal(state.known_pipeline.sum(axis=2), state.in_transit)
    state, _ = sim.step(state, exo, Decision(np.zeros((1, 2))))
    # Day 2: the notice; the truth from now on.
    assert _known_due(state) == [0, 0, 10, 0, 0]
    np.testing.assert_array_equal(state.known_pipeline, state.pipeline)


def test_a_notice_at_most_one_day_after_shipping_is_the_truth_at_once():
    """Shipments ship in the evening: a notice on the next morning comes before anyone
    sees the shipment, so the known ring is the true one (and no extra state is kept)."""
    sim = Simulator(_late_lane(lag=1))
    state, exo = sim.reset(1)
    state, _ = sim.step(state, exo, Decision(np.array([[0.0, 10.0]])))
    assert state.eta_pipeline is None and state.known_pipeline is state.pipeline
    assert _known_due(state) == [0, 0, 0, 10, 0]


def test_known_ring_is_the_same_on_torch():
    sim = Simulator(_late_lane(lag=4))
    tops = torch_ops()
    state, exo = sim.reset(2)
    ts = state.to(tops)
    orders = np.array([[0.0, 6.0], [0.0, 9.0]])
    for _ in range(5):
        state, _ = sim.step(state, exo, Decision(orders), NUMPY)
        ts, _ = sim.step(ts, exo, Decision(tops.asarray(orders)), tops)
        np.testing.assert_allclose(ts.known_pipeline.detach().numpy(), state.known_pipeline)
        np.testing.assert_allclose(ts.sent.detach().numpy(), state.sent)


def _late_electronics() -> Scenario:
    """electronics-5r over 30 days where every lane may be 4 days late (never, in the
    draw: probability 1e-12), announced 5 days after shipping."""
    base = load_scenario("electronics-5r")
    delays = tuple(
        ExtraDelay(lane.id, 1e-12, 4, 4, notice_lag_days=5)
        for lane in base.network.lanes
        if lane.source != "external"
    )
    return replace(base, delays=delays, horizon_days=30)


def _with_hidden_delay(exo, day: int, part_index: int, extra: int):
    """``exo`` with ``extra`` more days of delay of ``delays[part_index]`` on what ships
    on ``day`` (replication 0), announced after that delay's notice lag."""
    lane, lag, _ = exo.delay_parts[part_index]
    parts = [(m, g, p.copy()) for m, g, p in exo.delay_parts]
    parts[part_index][2][0, day] += extra
    lead, extra_delay, notice = exo.lead.copy(), exo.extra_delay.copy(), exo.delay_notice.copy()
    lead[0, day, lane] += extra
    extra_delay[0, day, lane] += extra
    notice[0, day + lag, lane] += extra
    return replace(
        exo, lead=lead, extra_delay=extra_delay, delay_notice=notice, delay_parts=tuple(parts)
    )


@pytest.mark.parametrize("reader", ["observer", "rolling-lp"])
def test_no_policy_input_anticipates_an_unannounced_delay(reader):
    """Two draws differing only in one shipment's unannounced extra delay give the same
    observations (or the same rolling-LP orders) every day before its notice, although
    the true pipelines differ from the day after it ships."""
    scenario = _late_electronics()
    sim = Simulator(scenario)

    def acting():  # what orders: base-stock under the observer, else the rolling LP
        if reader == "observer":
            return make_policy("base-stock", sim.layout)
        return make_optimization_policy("rolling-lp", scenario, sim.layout, {"horizon": 28})

    _, exo_a = sim.reset(1)
    state, policy, shipped = sim.initial(exo_a), acting(), []
    for _ in range(15):  # the first day something ships on a delayed lane
        state, rec = sim.step(state, exo_a, policy.act(state))
        shipped.append(state.shipped[0])
    lane_of = [m for m, _, _ in exo_a.delay_parts]  # into a customer node
    lane_of = [m if sim.layout.customer[sim.layout.lane_dst[m]] else -1 for m in lane_of]
    day_of = np.array(
        [  # each delayed lane's first day with a shipment due in 6 to 9 days
            min(
                [
                    d
                    for d in range(15)
                    if m >= 0 and shipped[d][m] > 0 and 5 < exo_a.lead[0, d, m] < 10
                ]
                + [99]
            )
            for m in lane_of
        ]
    )
    part = int(np.argmin(day_of))
    ship_day = int(day_of[part])
    lane, lag, _ = exo_a.delay_parts[part]
    assert exo_a.lead[0, ship_day, lane] > lag  # the notice comes before any arrival
    exo_b = _with_hidden_delay(exo_a, ship_day, part, 4)
    notice = ship_day + lag
    if reader == "observer":
        policy = acting()
        first, second = Observer(sim.layout, EnvConfig()), Observer(sim.layout, EnvConfig())
    else:
        first, second = acting(), acting()
    sa, sb = sim.initial(exo_a), sim.initial(exo_b)
    if reader == "observer":
        first.reset(sa)
        second.reset(sb)
    for day in range(notice + 1):
        if reader == "observer":
            same = np.array_equal(first.observe(sa), second.observe(sb))
            da = db = policy.act(sa)
        else:
            da, db = first.act(sa), second.act(sb)
            same = np.array_equal(da.orders, db.orders)
        if day < notice:
            assert same, f"day {day}: the inputs differ before the notice on day {notice}"
        elif reader == "observer":
            assert not same  # the notice and the new ETA reach the observation
        assert np.array_equal(sa.pipeline, sb.pipeline) == (day <= ship_day)
        sa, _ = sim.step(sa, exo_a, da)
        sb, _ = sim.step(sb, exo_b, db)
