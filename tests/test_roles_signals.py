"""Event-triggered signals: messages only on a threshold crossing, counted per agent-day,
against the daily sharing of the Coordination Node."""

from __future__ import annotations

import numpy as np

from fedinv.policies.classical import make_policy
from fedinv.roles.coordination import BalanceConfig, BalanceRule, Coordinated
from fedinv.roles.signals import SignalledCoordination, demand_signals, rising
from fedinv.sim.run import run_records
from fedinv.sim.simulator import Simulator
from tests.test_roles_coordination import _peers


def _levels(lay, level: float):
    return make_policy("base-stock", lay, {"levels": {"plant": 0, "A": level, "B": level}})


def test_a_crossing_sends_one_risk_message_and_one_offer():
    """Day 0: B (projected -30) crosses below 0 and tells A; A (projected 60, reserve 2
    days = 20) offers 40; 30 move. From day 1 both project 20 (see the coordination
    tests): no more messages. 2 messages over 3 agents x 10 days; the daily-sharing node
    sends 2 (A and B report) every day: 20."""
    sim = Simulator(_peers(), days=10)
    rule = BalanceRule(sim.layout, BalanceConfig(threshold=0.0, reserve=2.0))
    pol = SignalledCoordination(_levels(sim.layout, 60), rule, log=True)
    rec = run_records(sim, pol, [0])
    assert rec["info.messages"][:, 0].tolist() == [2.0] + [0.0] * 9
    assert rec["transferred"][0, 0].tolist() == [0.0, 30.0, 0.0]
    assert [(s.day, s.sender, s.receiver, s.kind, s.value) for s in pol.signals] == [
        (0, "B", "A", "stockout_risk", -30.0),
        (0, "A", "B", "offer", 40.0),
    ]
    assert rec["info.messages"].sum() / (3 * 10) == 2 / 30
    daily = run_records(sim, Coordinated(_levels(sim.layout, 60), rule), [0])
    assert daily["info.messages"].sum() == 20.0


def test_a_node_that_stays_at_risk_signals_once():
    """Nobody reorders (levels 0) and A keeps a 10-day reserve: B is at risk every day
    but signals only on day 0, and no offer comes (A cannot spare)."""
    sim = Simulator(_peers(), days=6)
    rule = BalanceRule(sim.layout, BalanceConfig(threshold=0.0, reserve=10.0))
    rec = run_records(sim, SignalledCoordination(_levels(sim.layout, 0), rule), [0, 1])
    assert rec["info.messages"].tolist() == [[1.0, 1.0]] + [[0.0, 0.0]] * 5
    assert rec["transferred"].sum() == 0.0


def test_threshold_crossings():
    flag = np.array([0, 1, 1, 0, 1], bool)
    assert rising(flag).tolist() == [False, True, False, False, True]
    z = np.array([0.0, 3.5, 4.0, -3.2, 0.1])[:, None, None]
    assert demand_signals(z, 3.0)[:, 0, 0].tolist() == [0, 1, 0, 0, 0]
