"""The Coordination Node: a hand-checked transfer, its cost test and capacity, what the
wrapped ordering policy sees, and the transfers counted in the metrics."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

from fedinv.cli import main
from fedinv.model.scenario import parse_scenario
from fedinv.policies.classical import make_policy
from fedinv.roles.coordination import (
    BalanceConfig,
    BalanceRule,
    Coordinated,
    coordinated_factory,
)
from fedinv.sim.run import simulate
from fedinv.sim.simulator import Decision, Simulator

PEERS = """
name = "two-peers"
horizon_days = 10
[[organizations]]
id = "o"
[[nodes]]
id = "plant"
tier = "manufacturer"
region = "R"
organization = "o"
[[nodes]]
id = "A"
tier = "distributor"
region = "R"
organization = "o"
stockout_penalty = 5.0
initial_inventory = 100.0
demand = {{ distribution = "deterministic", mean = 10 }}
[[nodes]]
id = "B"
tier = "distributor"
region = "R"
organization = "o"
stockout_penalty = 5.0
initial_inventory = 10.0
demand = {{ distribution = "deterministic", mean = 10 }}
[[lanes]]
source = "external"
destination = "plant"
[[lanes]]
source = "plant"
destination = "A"
lead_time = {{ distribution = "deterministic", mean = 3 }}
[[lanes]]
source = "plant"
destination = "B"
lead_time = {{ distribution = "deterministic", mean = 3 }}
[[transfers]]
source = "A"
destination = "B"
unit_cost = {cost}
lead_time_days = 1
capacity = {capacity}
[[transfers]]
source = "B"
destination = "A"
unit_cost = {cost}
lead_time_days = 1
capacity = {capacity}
"""


def _peers(cost: float = 1.0, capacity: float = 100.0):
    text = PEERS.format(cost=cost, capacity=capacity)
    return parse_scenario(tomllib.loads(text), "two-peers.toml", Path("."))


def test_hand_checked_transfer_from_the_peer_with_cover_to_the_one_short():
    """Day 0: A has 100 - 10 = 90 on hand, B 10 - 10 = 0; nothing in transit. Window 3
    days (lead time 3), mean demand 10: y_A = 90 - 30 = 60, y_B = 0 - 30 = -30. With
    threshold 0 and reserve 2 days, B needs 30 and A can spare 60 - 20 = 40: 30 units
    move A -> B, land tomorrow morning, and B fills tomorrow's demand of 10 from them."""
    sim = Simulator(_peers(), days=5)
    state, exo = sim.reset(1)
    rule = BalanceRule(sim.layout, BalanceConfig(threshold=0.0, reserve=2.0))
    assert rule.window.tolist() == [1, 3, 3]
    np.testing.assert_allclose(rule.projected(state)[0, 1:], [60.0, -30.0])
    moves = rule.transfers(state)
    np.testing.assert_allclose(moves, [[30.0, 0.0]])
    nothing = np.zeros((1, sim.layout.num_lanes))
    state, rec = sim.step(state, exo, Decision(nothing, moves))
    assert rec["transferred"][0].tolist() == [0.0, 30.0, 0.0]
    assert rec["transfer_cost"][0].tolist() == [0.0, 30.0, 0.0]  # $1 x 30, to the sender
    assert rec["on_hand"][0].tolist() == [0.0, 60.0, 0.0]
    # next morning: the 30 landed at B, which filled its demand of 10
    assert state.on_hand[0].tolist() == [0.0, 50.0, 20.0]
    assert state.filled[0].tolist() == [0.0, 10.0, 10.0]


def test_a_transfer_dearer_than_the_penalty_it_saves_is_not_made_and_capacity_caps():
    """Penalty $5 x (window 3 - transfer lead 1) = $10 per unit saved at most: a $10
    transfer is not worth it; a capacity of 12 caps the 30 units at 12."""
    sim = Simulator(_peers(cost=10.0), days=5)
    state, _ = sim.reset(1)
    assert BalanceRule(sim.layout).transfers(state).tolist() == [[0.0, 0.0]]
    sim = Simulator(_peers(capacity=12.0), days=5)
    state, _ = sim.reset(1)
    assert BalanceRule(sim.layout).transfers(state).tolist() == [[12.0, 0.0]]


def test_a_donor_gives_only_what_it_spares_and_the_policy_sees_the_transfers_landed():
    """Reserve 4 days: A keeps 40 of its projected 60 -> spares 20 of the 30 B needs.
    Base-stock up to 60 on each store (position = on hand + on order): A, seen with
    90 - 20 = 70, orders nothing; B, seen with 0 + 20, orders 40, which the plant (level
    0, nothing on hand) orders from outside."""
    sim = Simulator(_peers(), days=5)
    state, _ = sim.reset(1)
    rule = BalanceRule(sim.layout, BalanceConfig(threshold=0.0, reserve=4.0))
    moves = rule.transfers(state)
    np.testing.assert_allclose(moves, [[20.0, 0.0]])
    base = make_policy("base-stock", sim.layout, {"levels": {"plant": 0, "A": 60, "B": 60}})
    d = Coordinated(base, rule).act(state)
    np.testing.assert_allclose(d.transfers, moves)
    np.testing.assert_allclose(d.orders, [[40.0, 0.0, 40.0]])


def test_transfer_units_per_day_in_the_metrics_and_none_without_the_node():
    """Reserve 2 days: over 10 days only day 0's 30 units move (afterwards both stores
    order up to 60 and project 20 = 2 days each, so neither needs nor spares): 3 units
    per day."""
    scen = _peers()

    def base(lay):
        return make_policy("base-stock", lay, {"levels": {"plant": 0, "A": 60, "B": 60}})

    config = BalanceConfig(threshold=0.0, reserve=2.0)
    with_node = simulate(scen, coordinated_factory(base, config=config), replications=1)
    without = simulate(scen, base, replications=1)
    rep = with_node.per_replication.iloc[0]
    assert rep["transfer_units_per_day"] == pytest.approx(30.0 / 10.0)
    assert rep["transfer_cost_k_per_month"] > 0
    assert rep["messages_per_agent_day"] == pytest.approx(2 / 3)  # A and B report daily
    assert without.per_replication.iloc[0]["transfer_units_per_day"] == 0.0


def test_config_is_checked():
    with pytest.raises(ValueError, match="finite"):
        BalanceConfig(threshold=float("nan"))


def test_simulate_coordination_flag(capsys):
    rc = main(
        [
            "simulate",
            "--scenario",
            "electronics-5r",
            "--policy",
            "sS",
            "--days",
            "60",
            "--replications",
            "2",
            "--coordination",
            "balance",
            "--coordination-threshold",
            "0.5",
            "--coordination-reserve",
            "1.5",
            "--json",
        ]
    )
    assert rc == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["coordination"] == {"rule": "balance", "threshold": 0.5, "reserve": 1.5}
    assert payload["metrics"]["transfer_units_per_day"]["mean"] >= 0.0
    daily = payload["metrics"]["messages_per_agent_day"]["mean"]
    signalled = ["simulate", "--scenario", "electronics-5r", "--policy", "sS", "--days", "60"]
    signalled += ["--replications", "2", "--coordination", "signalled", "--json"]
    assert main(signalled) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["coordination"]["rule"] == "signalled"
    # the daily node reads every linked peer every day; signals only on crossings
    assert daily > 0 and payload["metrics"]["messages_per_agent_day"]["mean"] < daily / 5
    argv = ["simulate", "--scenario", "serial-3", "--policy", "base-stock"]
    assert main([*argv, "--coordination", "balance"]) != 0
    assert "has no lateral links" in capsys.readouterr().err
    assert main([*argv, "--coordination-threshold", "1"]) != 0
    assert "without --coordination" in capsys.readouterr().err
