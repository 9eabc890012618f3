"""Environments over the simulator: API conformance, seeding, observations, actions."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from pettingzoo.test import parallel_api_test, parallel_seed_test

from fedinv.agents.envs import (
    OBS_CLIP,
    ActionMap,
    ActionSet,
    BatchedInventoryEnv,
    EnvConfig,
    InventoryParallelEnv,
    RewardConfig,
    SingleNodeEnv,
    observation_names,
)
from fedinv.agents.forecast import DemandForecaster
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
from fedinv.policies.classical import default_params, make_policy
from fedinv.sim.simulator import Simulator


def short(name: str, days: int) -> Scenario:
    return dataclasses.replace(load_scenario(name), horizon_days=days)


def tiny(days: int = 30, demand: float = 5.0, lead: int = 1) -> Scenario:
    """One shop, deterministic demand, an outside vendor with lead time ``lead``."""
    node = Node(
        "shop",
        Tier.DISTRIBUTOR,
        "r",
        "o",
        holding_cost=1.0,
        stockout_penalty=10.0,
        initial_inventory=demand,
        demand=DemandModel("deterministic", demand),
    )
    lane = Lane("external", "shop", LeadTime(mean=lead))
    return Scenario("tiny", Network((node,), (lane,), (Organization("o"),)), horizon_days=days)


# -- the forecaster ----------------------------------------------------------------------


def test_forecaster_smooths_level_and_residuals():
    fc = DemandForecaster(np.array([10.0, 0.0]), np.array([4.0, 1.0]), alpha=0.5, beta=0.5)
    fc.reset(batch=3)
    assert fc.mean.shape == (3, 2)
    fc.update(np.tile([14.0, 2.0], (3, 1)))
    np.testing.assert_allclose(fc.mean[0], [12.0, 1.0])  # level + alpha * error
    np.testing.assert_allclose(fc.std[0] ** 2, [0.5 * 4 + 0.5 * 16, 0.5 * 1 + 0.5 * 4])
    for _ in range(60):  # a constant series: the level converges, the interval shrinks
        fc.update(np.tile([7.0, 3.0], (3, 1)))
    f = fc.forecast(horizon_days=4, coverage=0.9)
    np.testing.assert_allclose(f.mean[0], [28.0, 12.0], rtol=1e-6)
    assert np.all(f.lower <= f.mean) and np.all(f.mean <= f.upper)
    assert np.all(f.upper - f.lower < 1e-3)


# -- observations ------------------------------------------------------------------------


def test_observations_shape_names_and_bounds():
    env = BatchedInventoryEnv(short("electronics-5r", 20))
    obs = env.reset([0, 1])
    assert obs.shape == (2, 23, env.observation_size) and obs.dtype == np.float32
    assert env.observation_size == len(observation_names(env.config))
    for _ in range(19):
        obs, reward, terminated, truncated, _ = env.step(np.full((2, 23), 7))
        assert np.isfinite(obs).all() and np.abs(obs).max() <= OBS_CLIP
        assert reward.shape == (2, 23) and not terminated.any()
    assert not truncated.any()
    _, _, _, truncated, _ = env.step(np.full((2, 23), 7))
    assert truncated.all()
    with pytest.raises(RuntimeError):
        env.step(np.full((2, 23), 7))


def test_observation_has_no_future_information():
    """Changing demand, lead times and disruptions after day t leaves every observation
    up to day t unchanged (and the first observation after it does change)."""
    scenario = short("electronics-5r", 40)
    env = BatchedInventoryEnv(scenario)
    rng = np.random.default_rng(0)
    actions = rng.integers(0, env.num_actions, (40, 2, len(env.agents)))
    cut = 25

    def trajectory(exo):
        obs = [env.reset(exo.replications, exogenous=exo)]
        for t in range(cut + 1):
            obs.append(env.step(actions[t])[0])
        return obs

    exo = env.sim.reset([3, 4])[1]
    future = dataclasses.replace(
        exo,
        demand=exo.demand.copy(),
        lead=exo.lead.copy(),
        alert=exo.alert.copy(),
        delay_notice=exo.delay_notice.copy(),
        node_factor=exo.node_factor.copy(),
    )
    future.demand[:, cut + 1 :] *= 3.0
    future.lead[:, cut + 1 :] += 2
    future.alert[:, cut + 1 :] = 1.0
    future.delay_notice[:, cut + 1 :] = 5.0
    future.node_factor[:, cut + 1 :] = 0.5
    base, changed = trajectory(exo), trajectory(future)
    for day in range(cut + 1):
        np.testing.assert_array_equal(base[day], changed[day], err_msg=f"day {day}")
    assert not np.array_equal(base[cut + 1], changed[cut + 1])


def test_same_replications_same_trajectory_regardless_of_batch():
    env = BatchedInventoryEnv(short("beer-game", 30))
    actions = np.random.default_rng(1).integers(0, env.num_actions, (30, 2, 4))
    a = [env.reset([7, 8])]
    for t in range(30):
        a.append(env.step(actions[t])[0])
    b = [env.reset([8])]
    for t in range(30):
        b.append(env.step(actions[t, 1:])[0])
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x[1:], y)


# -- actions -----------------------------------------------------------------------------


@pytest.mark.parametrize("safety_std", ["static", "forecast"])
def test_action_targets_follow_the_documented_formula(safety_std):
    layout = Simulator(short("electronics-5r", 5)).layout
    actions = ActionSet(safety_factors=(0.0, 1.0), cover_days=(3.0,), cover_safety_factor=2.0)
    amap = ActionMap(layout, actions, np.arange(layout.num_nodes), safety_std=safety_std)
    st, fs = amap.streams, amap.stats
    mean = np.full((1, layout.num_nodes), 10.0)
    std = np.full((1, layout.num_nodes), 2.0)
    for a, (z, cover) in zip((1, 2, 3), [(0.0, 0.0), (1.0, 0.0), (2.0, 3.0)], strict=True):
        levels, zero = amap.levels(np.full((1, layout.num_nodes), a), mean, std)
        m = 10.0 * st.bom
        s = 2.0 * st.bom if safety_std == "forecast" else np.sqrt(fs.var)
        expected = m * (fs.lead + cover) + z * np.sqrt(fs.lead * s * s + m * m * fs.lead_var)
        np.testing.assert_allclose(levels[0], expected)
        assert not zero.any()
    # one choice orders every component of an assembly plant: same z, per-component lead
    plant = layout.node_ids.index("M-APAC-SZ")
    comps = np.flatnonzero(st.node == plant)
    assert len(comps) == 3
    _, zero = amap.levels(np.zeros((1, layout.num_nodes), int), mean, std)
    assert zero.all()


def test_nodes_outside_the_agents_follow_base_stock():
    sim = Simulator(short("serial-3", 30))
    levels = {"stage-1": 6.0, "stage-2": 6.0, "stage-3": 11.0}
    amap = ActionMap(sim.layout, ActionSet(), [], fallback_levels=levels)
    policy = make_policy("base-stock", sim.layout, {"levels": levels})
    state, exo = sim.reset(3)
    for _ in range(20):
        ours = amap.decision(state, np.zeros((3, 0), int), np.ones((3, 3)), np.ones((3, 3)))
        np.testing.assert_allclose(ours.orders, policy.act(state).orders)
        state, _ = sim.step(state, exo, ours)


def test_order_nothing_and_orders_up_to_target():
    env = BatchedInventoryEnv(tiny())
    env.reset([0])
    _, _, _, _, info = env.step(np.array([[0]]))  # order nothing: tomorrow's demand unmet
    assert env.state.last_orders[0, 0] == 0.0
    env.step(np.array([[3]]))  # z = 0: up to one day of demand
    assert env.state.last_orders[0, 0] == pytest.approx(5.0 + 5.0)  # demand + backorder


def test_reward_weights():
    scenario = short("serial-3", 10)
    team = BatchedInventoryEnv(
        scenario, EnvConfig(reward=RewardConfig(own_weight=0.0, network_share=1.0, scale=10.0))
    )
    own = BatchedInventoryEnv(
        scenario,
        EnvConfig(
            reward=RewardConfig(
                own_weight=1.0, network_share=0.0, order_change_cost=2.0, scale=10.0
            )
        ),
    )
    team.reset([0, 1])
    own.reset([0, 1])
    acts = np.array([[5, 6, 7], [8, 2, 1]])
    _, r_team, _, _, info = team.step(acts)
    _, r_own, _, _, _ = own.step(acts)
    np.testing.assert_allclose(
        r_team, -np.repeat(info["network_cost"][:, None], 3, 1) / 10, rtol=1e-6
    )
    change = own.state.last_orders @ own.observer.lane_to_node  # yesterday's orders were 0
    np.testing.assert_allclose(r_own, -(info["cost"] + 2.0 * change) / 10, rtol=1e-6)
    assert BatchedInventoryEnv(scenario).cost_scale > 0


def test_config_round_trip():
    cfg = EnvConfig(
        actions=ActionSet(safety_factors=(0.5,)),
        controlled=("stage-1",),
        reward=RewardConfig(network_share=0.5),
        fallback_levels={"stage-2": 3.0},
    )
    assert EnvConfig.from_dict(cfg.to_dict()) == cfg


# -- API checkers ------------------------------------------------------------------------


def test_pettingzoo_parallel_api():
    env = InventoryParallelEnv(short("beer-game", 25))
    parallel_api_test(env, num_cycles=100)
    assert env.possible_agents == ["retailer", "wholesaler", "distributor", "manufacturer"]


def test_pettingzoo_parallel_seed():
    parallel_seed_test(lambda: InventoryParallelEnv(short("serial-3", 25)), num_cycles=30)


def test_pettingzoo_seed_selects_the_replication():
    env = InventoryParallelEnv(short("serial-3", 10), replication_base=0)
    _, info = env.reset(seed=4)
    assert info["stage-1"]["replication"] == 4
    _, info = env.reset()
    assert info["stage-1"]["replication"] == 5
    _, info = env.reset(options={"replication": 11})
    assert info["stage-1"]["replication"] == 11


def test_gymnasium_single_node_env():
    env = SingleNodeEnv(short("serial-3", 20), node="stage-2")
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=3)
    first = [obs]
    for _ in range(5):
        first.append(env.step(4)[0])
    obs, _ = env.reset(seed=3)
    again = [obs]
    for _ in range(5):
        again.append(env.step(4)[0])
    np.testing.assert_array_equal(np.array(first), np.array(again))


def test_single_node_env_others_use_fallback_levels():
    scenario = short("serial-3", 15)
    levels = default_params("base-stock", Simulator(scenario).layout)["levels"]
    env = SingleNodeEnv(scenario, node="stage-1")
    assert env.env.agents == ("stage-1",)
    np.testing.assert_allclose(
        env.env.action_map.fallback, [levels["stage-1"], levels["stage-2"], levels["stage-3"]]
    )


def test_training_through_the_safety_layer_releases_the_projection_and_charges_it():
    """single-node with 104 units/day of transport capacity: an action that proposes
    more is cut to 104 by the layer; the simulator runs 104, and the reward charges one
    day of the store's stockout penalty (19 $/unit-day) per unit cut."""
    import tomllib

    from fedinv.model.scenario import builtin_scenario_text, parse_scenario

    text = builtin_scenario_text("single-node").replace(
        'destination = "store"', 'destination = "store"\ntransport_capacity = 104.0'
    )
    scenario = parse_scenario(tomllib.loads(text), "capped", None)
    reward = RewardConfig(own_weight=1.0, network_share=0.0, scale=1.0)
    pure = BatchedInventoryEnv(scenario, EnvConfig(reward=reward))
    layer = BatchedInventoryEnv(scenario, EnvConfig(reward=reward, train_mode="hybrid"))
    top = np.array([[pure.num_actions - 1]])  # the largest order the action set has
    pure.reset([0])
    layer.reset([0])
    pure.step(top)
    proposed = float(pure.state.last_orders[0, 0])
    assert proposed > 104.0  # the layer must act
    _, r, _, _, info = layer.step(top)
    assert float(layer.state.last_orders[0, 0]) == pytest.approx(104.0, abs=1e-6)
    moved = proposed - 104.0
    assert float(r[0, 0]) == pytest.approx(-(info["cost"][0, 0] + 19.0 * moved), rel=1e-6)
    with pytest.raises(ValueError, match="train_mode must be pure or hybrid"):
        BatchedInventoryEnv(scenario, EnvConfig(train_mode="projected"))
