"""The day is written once: numpy and torch run the same code and agree to 1e-9.

Random states come from running a perturbed base-stock policy (random order multipliers,
random lateral transfers) for a random number of days on numpy; from each, the same
orders are stepped on numpy and on torch for several days, and every state field and
every record field must agree. The torch day's gradients are checked against finite
differences of the numpy day, which is an independent computation of the same cost.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedinv.model.scenario import load_scenario
from fedinv.model.synthetic import random_scenario
from fedinv.policies.classical import make_policy
from fedinv.sim.ops import NUMPY, Smoothing, torch_ops
from fedinv.sim.simulator import Decision, Simulator, State

BUILTINS = ("beer-game", "electronics-5r", "serial-3", "single-node", "single-node-lost-sales")
SYNTHETIC = ((10, 0), (15, 1), (25, 2), (40, 3))


def _scenario(name):
    if isinstance(name, tuple):
        return random_scenario(name[0], name[1], horizon_days=60)
    return load_scenario(name)


def _decision(sim: Simulator, policy, state: State, rng: np.random.Generator) -> Decision:
    orders = policy.act(state).orders * rng.uniform(0.0, 2.0, state.owed.shape)
    orders = np.where(rng.random(orders.shape) < 0.2, 0.0, orders)
    transfers = None
    if sim.layout.num_transfers:
        transfers = rng.uniform(0.0, 30.0, (orders.shape[0], sim.layout.num_transfers))
    return Decision(orders, transfers)


def _assert_same(a: State, b: State) -> None:
    for field, value in vars(a).items():
        other = getattr(b, field)
        if isinstance(value, np.ndarray):
            np.testing.assert_allclose(
                other.detach().numpy(), value, rtol=1e-9, atol=1e-9, err_msg=field
            )
        else:
            assert other == value, field


@pytest.mark.parametrize("name", BUILTINS + SYNTHETIC, ids=str)
def test_numpy_and_torch_days_agree(name):
    scenario = _scenario(name)
    rng = np.random.default_rng(7)
    days = min(scenario.horizon_days, 60)
    sim = Simulator(scenario, days=days)
    policy = make_policy("base-stock", sim.layout)
    tops = torch_ops()
    state, exo = sim.reset(3)
    start = int(rng.integers(1, days - 8))
    for _ in range(start):
        state, _ = sim.step(state, exo, _decision(sim, policy, state, rng))
    tstate = state.to(tops)
    _assert_same(state, tstate)
    for _ in range(6):
        d = _decision(sim, policy, state, rng)
        td = Decision(
            torch.from_numpy(d.orders),
            None if d.transfers is None else torch.from_numpy(d.transfers),
        )
        state, rec = sim.step(state, exo, d)
        tstate, trec = sim.step(tstate, exo, td, ops=tops)
        _assert_same(state, tstate)
        assert rec.keys() == trec.keys()
        for key, value in rec.items():
            np.testing.assert_allclose(
                trec[key].detach().numpy(), value, rtol=1e-9, atol=1e-9, err_msg=key
            )


def test_a_step_leaves_its_input_state_alone():
    sim = Simulator(load_scenario("serial-3"), days=10)
    state, exo = sim.reset(2)
    before = state.copy()
    sim.step(state, exo, np.full(state.owed.shape, 7.0))
    _assert_same(before, state.to(torch_ops()))


def test_torch_gradient_matches_finite_differences_of_the_numpy_day():
    """d(total cost over 10 days)/d(day-0 orders) by autograd equals central finite
    differences of the numpy day (serial-3: holding, transit holding and backorders)."""
    scenario = load_scenario("serial-3")
    sim = Simulator(scenario, days=12)
    tops = torch_ops()
    state0, exo = sim.reset(2)
    base = np.array([[3.0, 4.0, 6.0]] * 2)[:, : state0.owed.shape[1]]

    def cost(first, ops, state):
        total = 0.0
        for day in range(10):
            orders = (
                first
                if day == 0
                else (
                    base * 0 + 5.0
                    if ops is NUMPY
                    else torch.full(first.shape, 5.0, dtype=torch.float64)
                )
            )
            state, rec = sim.step(state, exo, Decision(orders), ops=ops)
            total = total + rec["total_cost"].sum()
        return total

    x = torch.tensor(base, requires_grad=True)
    cost(x, tops, state0.to(tops)).backward()
    h = 1e-5
    fd = np.zeros_like(base)
    for idx in np.ndindex(base.shape):
        up, down = base.copy(), base.copy()
        up[idx] += h
        down[idx] -= h
        fd[idx] = (cost(up, NUMPY, state0) - cost(down, NUMPY, state0)) / (2 * h)
    np.testing.assert_allclose(x.grad.numpy(), fd, rtol=1e-5, atol=1e-5)
    assert np.abs(fd).max() > 1.0  # the orders matter for the cost


def test_smoothed_fixed_order_cost():
    """The relaxed indicator: 0 at q = 0, 1 - e^-1 at q = T, and slope 1/T at 0."""
    tops = torch_ops()
    q = torch.tensor([0.0, 2.0, 1e6], dtype=torch.float64, requires_grad=True)
    ind = tops.smooth_indicator(q, 1e-9, Smoothing(order_temperature=2.0))
    np.testing.assert_allclose(ind.detach().numpy(), [0.0, 1 - np.exp(-1), 1.0])
    ind[0].backward()
    assert q.grad[0].item() == pytest.approx(0.5)
    assert tops.smooth_indicator(q, 1e-9, None).tolist() == [0.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="order_temperature"):
        Smoothing(order_temperature=0.0)


def test_classical_orders_agree_on_torch_with_straight_through_lots():
    """StreamPolicy.decide/round_lots on torch give the numpy orders; the lot rounding
    passes the gradient straight through."""
    scenario = load_scenario("electronics-5r")
    sim = Simulator(scenario, days=20)
    policy = make_policy("base-stock", sim.layout)
    state, exo = sim.reset(2)
    for _ in range(5):
        state, _ = sim.step(state, exo, policy.act(state))
    tops = torch_ops()
    levels = torch.tensor(policy.levels, requires_grad=True)
    ts = state.to(tops)
    orders = policy.round_lots(
        policy.decide(ts, lambda pos: torch.clamp(levels - pos, min=0.0), ops=tops), ops=tops
    )
    np.testing.assert_allclose(orders.detach().numpy(), policy.act(state).orders, atol=1e-9)
    orders.sum().backward()
    assert torch.isfinite(levels.grad).all() and levels.grad.abs().sum() > 0
