"""The one DQN experience loop (fedinv.agents.dqn.ExperienceLoop): transition counts known
by hand, determinism, and a federated client resumed from its files = one that never
stopped."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedinv.agents.dqn import (
    Args,
    DQNLearner,
    DQNPolicy,
    ExperienceLoop,
    Exploration,
    RoleQNetworks,
    agent_roles,
    linear_layer,
)
from fedinv.agents.envs import ActionSet, BatchedInventoryEnv, EnvConfig
from fedinv.federation.private_data import export_private_data
from fedinv.federation.task import FedConfig, LocalTrainer, new_model, roles_of, to_arrays
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

CHOICES = ActionSet(safety_factors=(0.0,), cover_days=(1.0, 3.0), cover_safety_factor=0.0)

TWO_ORGS = """
name = "pair"
horizon_days = 40
seed = 3
[[organizations]]
id = "maker"
[[organizations]]
id = "shop"
[[nodes]]
id = "plant"
tier = "supplier"
region = "R"
organization = "maker"
holding_cost = 0.5
stockout_penalty = 1.0
initial_inventory = 30.0
[[nodes]]
id = "store"
tier = "distributor"
region = "R"
organization = "shop"
holding_cost = 2.0
stockout_penalty = 10.0
initial_inventory = 20.0
[nodes.demand]
distribution = "poisson"
mean = 8.0
[[lanes]]
source = "external"
destination = "plant"
lead_time = 2
[[lanes]]
source = "plant"
destination = "store"
lead_time = { distribution = "uniform", low = 1, high = 2 }
"""


def two_shops(days: int) -> Scenario:
    """Two shops (two agents of one role), deterministic demand."""
    nodes = tuple(
        Node(
            name,
            Tier.DISTRIBUTOR,
            "r",
            "o",
            holding_cost=1.0,
            stockout_penalty=10.0,
            initial_inventory=5.0,
            demand=DemandModel("deterministic", 5.0),
        )
        for name in ("a", "b")
    )
    lanes = tuple(Lane("external", n.id, LeadTime(mean=1)) for n in nodes)
    return Scenario("two-shops", Network(nodes, lanes, (Organization("o"),)), horizon_days=days)


def _loop(days: int, **kw) -> ExperienceLoop:
    base = dict(
        replications=3,
        n_step=3,
        batch_size=8,
        learning_starts=4,
        buffer_size=1_000,
        hidden=(8,),
        env=EnvConfig(actions=CHOICES),
    )
    args = Args(**(base | kw))
    env = BatchedInventoryEnv(two_shops(days), args.env)
    roles = agent_roles(env.layout, env.agent_nodes)
    q = RoleQNetworks(
        roles,
        env.observation_size,
        env.num_actions,
        args.hidden,
        args.dueling,
        generator=torch.Generator().manual_seed(0),  # the same initial weights
    )
    policy = DQNPolicy(env.layout, q, args.env)
    return ExperienceLoop(env, policy, DQNLearner(q, args), args, Exploration(1.0, 0.1, 10))


def test_transition_counts_and_flush_by_hand():
    """n = 3, B = 3 replications, 2 agents of one role: the window emits nothing for two
    steps, then one transition per agent and replication each step; a flush empties it."""
    loop = _loop(days=30)
    loop.begin(100, np.random.default_rng(0))
    counts = [loop.step().collected["distributor"] for _ in range(5)]
    assert counts == [0, 0, 6, 6, 6]
    assert loop.buffers["distributor"].size == 18 and loop.steps == 5
    # flushing emits the step's transition and the two shorter tails: 3 x 6 rows
    assert loop.step(flush=True).collected["distributor"] == 18
    buf = loop.buffers["distributor"]
    gamma = loop.args.gamma
    # the last three transitions bootstrap with gamma^3, gamma^2, gamma^1
    np.testing.assert_allclose(
        sorted(set(buf.discount[: buf.size].round(6))),
        sorted({round(gamma**3, 6), round(gamma**2, 6), round(gamma, 6)}),
    )
    assert loop.step().collected["distributor"] == 0  # a fresh window after the flush


def test_epsilon_follows_the_schedule_and_learning_waits():
    loop = _loop(days=30, learning_starts=2)
    loop.begin(100, np.random.default_rng(0))
    stats = [loop.step() for _ in range(12)]
    # 1.0 -> 0.1 over 10 steps, counted from the first step
    np.testing.assert_allclose(
        [s.epsilon for s in stats], [1 - 0.09 * t for t in range(1, 11)] + [0.1, 0.1]
    )
    # learning_starts is 2, but the first update waits for a minibatch in the buffer:
    # 6 rows after step 3, 12 after step 4 (batch_size 8)
    assert [bool(s.losses) for s in stats] == [False] * 3 + [True] * 9


def test_horizon_starts_the_next_batch_of_replications():
    """At the horizon the loop resets to replications first + B .. first + 2B - 1."""
    loop = _loop(days=4)
    loop.begin(100, np.random.default_rng(0))
    seen = []
    reset = loop.env.reset

    def spy(replications, *a, **k):
        seen.append(list(replications))
        return reset(replications, *a, **k)

    loop.env.reset = spy
    for _ in range(8):
        loop.step()
    assert seen == [[103, 104, 105], [106, 107, 108]]


def test_same_seed_same_loop():
    def run(seed):
        loop = _loop(days=10)
        loop.begin(100, np.random.default_rng(seed))
        losses = [x for _ in range(15) for x in loop.step().losses]
        return losses, loop.learner.q_network.state_dict()

    (la, a), (lb, b), (lc, c) = run(1), run(1), run(2)
    assert la == lb and la != lc
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_initial_weights_come_from_the_generator_only():
    """A layer drawn from a generator seeded s is torch's default layer after
    ``torch.manual_seed(s)``, and building networks never moves the global generator."""
    torch.manual_seed(5)
    reference = torch.nn.Linear(7, 3)
    ours = linear_layer(7, 3, torch.Generator().manual_seed(5))
    assert torch.equal(ours.weight, reference.weight) and torch.equal(ours.bias, reference.bias)
    assert float(ours.weight.detach().abs().max()) <= 1 / 7**0.5
    before = torch.get_rng_state()
    a = RoleQNetworks(["x", "y"], 4, 3, (8,), generator=torch.Generator().manual_seed(2))
    b = RoleQNetworks(["x", "y"], 4, 3, (8,), generator=torch.Generator().manual_seed(2))
    c = RoleQNetworks(["x", "y"], 4, 3, (8,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert not torch.equal(a.nets["x"].advantage.weight, c.nets["x"].advantage.weight)
    assert not torch.equal(a.nets["x"].advantage.weight, a.nets["y"].advantage.weight)


# -- a federated client ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("pair")
    path = root / "pair.toml"
    path.write_text(TWO_ORGS)
    export_private_data(load_scenario(path), root / "data")
    return path, root / "data"


def _cfg(scenario) -> FedConfig:
    return FedConfig(
        scenario=str(scenario),
        local_steps=10,
        replications=2,
        batch_size=16,
        learning_starts=4,
        exploration_steps=20,
        hidden=(8,),
        reward_scale=20.0,
    )


def _three_rounds(data, state, cfg, roles, fresh_each_round: bool, remember: bool = True):
    """Rounds 1-3 of the shop (its weights fed back as the next round's global ones)."""
    weights = to_arrays(new_model(cfg, roles))
    trainer = LocalTrainer(data / "shop", state, cfg, roles)
    if not remember:  # a trainer that never reads its files: the state stays in memory
        trainer.load_before = lambda server_round: 0
    out = []
    for server_round in (1, 2, 3):
        if fresh_each_round:  # a new process each round: everything comes from the files
            trainer = LocalTrainer(data / "shop", state, cfg, roles)
        weights, collected, metrics = trainer.train_round(weights, server_round)
        metrics.pop("train-seconds")
        out.append((weights, collected, metrics, trainer.steps_done))
    return out


def test_federated_client_resumed_from_files_equals_uninterrupted(pair, tmp_path):
    scenario, data = pair
    cfg = _cfg(scenario)
    roles = roles_of(load_scenario(scenario))
    kept = _three_rounds(data, tmp_path / "a", cfg, roles, False, remember=False)
    resumed = _three_rounds(data, tmp_path / "b", cfg, roles, True)
    again = _three_rounds(data, tmp_path / "c", cfg, roles, True)  # same seed
    for (wa, ca, ma, sa), (wb, cb, mb, sb), (wc, _, mc, _) in zip(
        kept, resumed, again, strict=True
    ):
        assert sa == sb and ca == cb and ma == mb == mc
        for key in wa:
            np.testing.assert_array_equal(wa[key], wb[key])
            np.testing.assert_array_equal(wb[key], wc[key])
    assert [s for *_, s in kept] == [10, 20, 30]
    assert kept[-1][2]["train-loss"] == kept[-1][2]["train-loss"]  # it learned (not NaN)
