"""Double DQN for ordering agents, in one module read top to bottom (docs/agents.md).

The shape of CleanRL's ``dqn.py``: the arguments (:class:`Args`, a docstring per field),
the network, the exploration schedule, the experience loop, then the training run
(:func:`train`). Acting is apart from learning and from collecting (Tianshou's split):
:class:`DQNPolicy` is a fedinv policy (``act(state) -> Decision``) that owns the
Q-networks and the observer; :class:`DQNLearner` owns the update rule, the target
networks and the optimizer; :class:`ExperienceLoop` is the one act / step / n-step /
replay / update loop, with all its state, that :func:`train` and a federated client
(:class:`fedinv.federation.task.LocalTrainer`) both step.

* **Parameter sharing.** One Q-network per role (a node's tier); every node of a role
  acts and learns through it, told apart by the node features of its observation
  (:mod:`fedinv.agents.envs`). Each role has its own replay buffer, so a role's update always
  sees ``batch_size`` of its own transitions.
* **Update.** n-step double-DQN target ``R + gamma^n Q_target(s', argmax_a Q(s', a))``
  (the online network picks, the target network values), Huber loss, Adam, gradient
  norm clipping; the target networks follow the online ones every
  ``target_network_frequency`` updates (``tau = 1``: a copy).
* **Experience.** ``B`` training replications (indices from
  :data:`fedinv.policies.tuning.TRAIN_BASE`, a fresh batch every episode) step in lockstep in a
  :class:`fedinv.agents.envs.BatchedInventoryEnv`; epsilon-greedy per agent and replication.
  Episodes end at the horizon by truncation, so the last transitions bootstrap.
* **Model selection.** Every ``eval_every`` steps the greedy policy runs on validation
  replications (from :data:`VALIDATION_BASE`, disjoint from training and from the
  held-out replications ``0..R-1``); the weights with the lowest validation cost per day
  are the trained policy. Held-out replications are used only after training.
* **Checkpoint.** :mod:`fedinv.agents.checkpoints` writes and reads the trained policy's
  file (weights, config, how it was trained, versions).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from fedinv.agents.envs import ActionMap, BatchedInventoryEnv, EnvConfig, Observer
from fedinv.hybrid import for_mode
from fedinv.model.layout import Layout
from fedinv.model.network import Scenario
from fedinv.sim.simulator import Decision, Simulator, State

VALIDATION_BASE = 2_000_000
"""First replication index of the validation runs (model selection, training curve)."""


# -- arguments ---------------------------------------------------------------------------


@dataclass(kw_only=True)
class Args:
    """Everything a DQN run depends on (saved in its checkpoint)."""

    scenario: str = "serial-3"
    """Built-in scenario name or path to a scenario TOML file."""
    seed: int = 1
    """Seed of network initialization (a ``torch.Generator``), exploration and minibatch
    sampling (a numpy ``Generator``); the demand streams depend on the scenario seed and
    the replication indices only."""
    total_steps: int = 20_000
    """Environment steps: days stepped by the batch of replications."""
    replications: int = 16
    """Training replications stepped in lockstep (``B``)."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """Observations, actions, rewards (:class:`fedinv.agents.envs.EnvConfig`)."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden layer widths of each role's Q-network (ReLU MLP)."""
    dueling: bool = True
    """Dueling head: state value plus action advantages."""
    share: str = "tier"
    """Parameter sharing: ``tier`` (one network per tier, nodes told apart by their
    features) or ``node`` (one network per node, no sharing)."""
    learning_rate: float = 5e-4
    """Adam step size (at the start)."""
    final_learning_rate: float | None = None
    """Step size reached linearly at the last step (None: constant)."""
    gamma: float = 0.97
    """Discount factor per day."""
    reward_scale: float = 1.0
    """Multiplies the environment's rewards before learning (Huber loss is quadratic
    for TD errors below 1: a small scale keeps it a mean-squared loss)."""
    n_step: int = 3
    """Steps of the return before bootstrapping."""
    buffer_size: int = 500_000
    """Replay capacity per role, in transitions (one per agent, replication and day;
    about 300 bytes each). Too small a buffer forgets the exploratory experience once
    epsilon is low, and the greedy policy can collapse."""
    batch_size: int = 256
    """Transitions per role in each update."""
    learning_starts: int = 400
    """Environment steps before the first update."""
    train_frequency: int = 1
    """Environment steps between updates."""
    updates_per_step: int = 1
    """Gradient steps per update."""
    target_network_frequency: int = 250
    """Updates between target-network updates."""
    tau: float = 1.0
    """Target-network update rate (1: copy)."""
    max_grad_norm: float = 10.0
    """Gradient-norm clipping."""
    start_e: float = 1.0
    """Exploration rate at the start."""
    end_e: float = 0.02
    """Exploration rate at the end of the schedule."""
    exploration_fraction: float = 0.4
    """Share of ``total_steps`` over which epsilon decays linearly."""
    explore_radius: int = 0
    """Random actions within this many action indices of the greedy one (0: uniform)."""
    eval_every: int = 1_000
    """Environment steps between validation runs (0: only at the end)."""
    eval_replications: int = 8
    """Validation replications per run (indices from :data:`VALIDATION_BASE`)."""
    eval_days: int | None = None
    """Days of a validation run (None: the scenario horizon)."""
    threads: int = 1
    """torch CPU threads (small networks: one is fastest)."""


def torch_globals(seed: int, threads: int = 1) -> None:
    """Set the torch state that no generator reaches, once per training (``fedinv train``,
    and a federated client's round): the CPU thread count (one thread is fastest for these
    small networks, and results are bit-identical for a given count) and the global seed.
    Nothing in fedinv draws from torch's global generator — initial weights come from a
    ``torch.Generator`` (:func:`linear_layer`), exploration and minibatches from a numpy
    ``Generator`` — so the seed only pins an operation that might (dropout, say) if one is
    added."""
    torch.set_num_threads(max(1, int(threads)))
    torch.manual_seed(int(seed))


# -- the network -------------------------------------------------------------------------


def linear_layer(fan_in: int, fan_out: int, generator: torch.Generator) -> nn.Linear:
    """``nn.Linear(fan_in, fan_out)`` with torch's default initialization (weights and
    bias uniform in ``+-1/sqrt(fan_in)``: Kaiming-uniform with ``a = sqrt(5)``), drawn
    from ``generator`` instead of torch's global generator (which it never touches)."""
    layer = nn.utils.skip_init(nn.Linear, fan_in, fan_out)
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
    return layer


class QNetwork(nn.Module):
    """An MLP from an observation (``F`` numbers) to one Q-value per action.

    ``dueling``: the last hidden layer feeds a state value ``V`` and advantages ``A``,
    ``Q = V + A - mean(A)`` (Wang et al. 2016): here the value of a state (its stock,
    its backlog) dwarfs the differences between order choices, which the advantage head
    learns on its own. The initial weights are drawn from ``generator``
    (:func:`linear_layer`)."""

    def __init__(
        self,
        obs_size: int,
        num_actions: int,
        hidden: Sequence[int] = (64, 64),
        dueling: bool = True,
        *,
        generator: torch.Generator,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width = obs_size
        for h in hidden:
            layers += [linear_layer(width, h, generator), nn.ReLU()]
            width = h
        self.trunk = nn.Sequential(*layers)
        self.advantage = linear_layer(width, num_actions, generator)
        self.value = linear_layer(width, 1, generator) if dueling else None

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = self.trunk(obs)
        adv = self.advantage(x)
        if self.value is None:
            return adv
        return self.value(x) + adv - adv.mean(dim=-1, keepdim=True)


class RoleQNetworks(nn.Module):
    """One :class:`QNetwork` per role; ``forward(obs [B, A, F]) -> q [B, A, actions]``
    with agent ``a`` through the network of ``agent_roles[a]``. Initial weights from
    ``generator`` (None: a generator seeded 0, for networks whose weights are loaded
    next)."""

    def __init__(
        self,
        roles: Sequence[str],
        obs_size: int,
        num_actions: int,
        hidden: Sequence[int] = (64, 64),
        dueling: bool = True,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.roles = tuple(sorted(set(roles)))
        self.obs_size, self.num_actions, self.hidden = obs_size, num_actions, tuple(hidden)
        self.dueling = dueling
        if generator is None:  # weights about to be loaded; still never the global stream
            generator = torch.Generator().manual_seed(0)
        self.nets = nn.ModuleDict(
            {
                r: QNetwork(obs_size, num_actions, hidden, dueling, generator=generator)
                for r in self.roles  # one stream, drawn role after role in sorted order
            }
        )

    def forward(self, obs: torch.Tensor, agent_roles: Sequence[str]) -> torch.Tensor:
        q = obs.new_empty(obs.shape[:-1] + (self.num_actions,))
        for role, idx in _groups(agent_roles).items():
            q[:, idx] = self.nets[role](obs[:, idx])
        return q


def agent_roles(layout: Layout, agent_nodes: Sequence[int], share: str = "tier") -> tuple[str, ...]:
    """The role (the Q-network) of each agent: its tier, or its node id."""
    if share not in ("tier", "node"):
        raise ValueError(f"share must be 'tier' or 'node', got {share!r}")
    table = layout.tier if share == "tier" else layout.node_ids
    return tuple(str(table[i]) for i in agent_nodes)


def _groups(roles: Sequence[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, r in enumerate(roles):
        out.setdefault(r, []).append(i)
    return out


# -- the schedule ------------------------------------------------------------------------


def linear_schedule(start_e: float, end_e: float, duration: float, t: int) -> float:
    """Epsilon at step ``t``: from ``start_e`` down to ``end_e`` over ``duration`` steps."""
    slope = (end_e - start_e) / max(duration, 1.0)
    return max(slope * t + start_e, end_e)


@dataclass(frozen=True)
class Exploration:
    """The epsilon-greedy schedule: :func:`linear_schedule` from ``start`` to ``end``
    over ``steps`` environment steps (counted from the first step of the training, over
    all of its calls)."""

    start: float
    """Exploration rate at step 0."""
    end: float
    """Exploration rate from ``steps`` on."""
    steps: float
    """Environment steps of the decay."""

    def epsilon(self, step: int) -> float:
        return linear_schedule(self.start, self.end, self.steps, step)


# -- acting: the policy ------------------------------------------------------------------


class DQNPolicy:
    """A fedinv policy acting greedily on role Q-networks: ``act(state) -> Decision``.

    It keeps each node's memory (forecaster, recent demand; :class:`fedinv.agents.envs.Observer`):
    call ``act`` once per day in order; day 0 starts afresh.
    """

    name = "dqn"

    def __init__(
        self, layout: Layout, q_network: RoleQNetworks, config: EnvConfig, share: str = "tier"
    ):
        self.layout, self.config, self.q_network = layout, config, q_network
        self.needs_confirmations = config.confirmations
        ids = config.controlled or layout.node_ids
        unknown = [n for n in ids if n not in layout.node_ids]
        if unknown:
            raise ValueError(f"the agents {unknown} are not nodes of this network")
        self.agent_nodes = np.array([layout.node_ids.index(n) for n in ids], int)
        self.agent_roles = agent_roles(layout, self.agent_nodes, share)
        missing = sorted(set(self.agent_roles) - set(q_network.roles))
        if missing:
            raise ValueError(
                f"no Q-network for role(s) {missing} (trained roles: {', '.join(q_network.roles)})"
            )
        self.observer = Observer(layout, config)
        if self.observer.size != q_network.obs_size:
            raise ValueError(
                f"observation size {self.observer.size} does not match the "
                f"network's {q_network.obs_size}"
            )
        self.action_map = ActionMap(
            layout, config.actions, self.agent_nodes, config.fallback_levels, config.safety_std
        )
        self._day: int | None = None
        self._obs: np.ndarray | None = None

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """Q-values ``[B, A, actions]`` of observations ``[B, A, F]``."""
        with torch.no_grad():
            return self.q_network(torch.as_tensor(obs), self.agent_roles).numpy()

    def greedy(self, obs: np.ndarray) -> np.ndarray:
        """Greedy actions ``[B, A]``."""
        return self.q_values(obs).argmax(axis=2)

    def explore(
        self, obs: np.ndarray, epsilon: float, rng: np.random.Generator, radius: int = 0
    ) -> np.ndarray:
        """Epsilon-greedy actions ``[B, A]`` (each agent and replication on its own): with
        probability ``epsilon`` a random action, uniform over all actions (``radius`` 0)
        or within ``radius`` action indices of the greedy one (the actions are ordered by
        target size, so this explores nearby targets)."""
        actions = self.greedy(obs)
        random = rng.random(actions.shape) < epsilon
        n = self.q_network.num_actions
        if radius > 0:
            other = np.clip(actions + rng.integers(-radius, radius + 1, actions.shape), 0, n - 1)
        else:
            other = rng.integers(0, n, actions.shape)
        return np.where(random, other, actions)

    def act(self, state: State) -> Decision:
        batch = state.on_hand.shape[0]
        if state.day == 0 or self._obs is None or self._obs.shape[0] != batch:
            self.observer.reset(state)
            self._day = None
        if state.day != self._day:  # a second call on the same day reuses the observation
            self._obs = self.observer.observe(state)[:, self.agent_nodes]
            self._day = state.day
        fc = self.observer.forecaster
        return self.action_map.decision(state, self.greedy(self._obs), fc.mean, fc.std)


# -- learning: replay, n-step returns, the update rule ------------------------------------


class ReplayBuffer:
    """Transitions of one role: ``obs, action, n-step return, next obs, discount``."""

    def __init__(self, capacity: int, obs_size: int):
        self.capacity = int(capacity)
        self.obs = np.zeros((self.capacity, obs_size), np.float32)
        self.next_obs = np.zeros((self.capacity, obs_size), np.float32)
        self.action = np.zeros(self.capacity, np.int64)
        self.reward = np.zeros(self.capacity, np.float32)
        self.discount = np.zeros(self.capacity, np.float32)
        self.size = 0
        self._pos = 0

    def add(
        self,
        obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        next_obs: np.ndarray,
        discount: np.ndarray,
    ) -> None:
        """Add ``n`` transitions (arrays with ``n`` rows)."""
        n = len(action)
        idx = (self._pos + np.arange(n)) % self.capacity
        self.obs[idx], self.next_obs[idx] = obs, next_obs
        self.action[idx], self.reward[idx], self.discount[idx] = action, reward, discount
        self._pos = int((self._pos + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        idx = rng.integers(0, self.size, batch_size)
        return {
            "obs": torch.from_numpy(self.obs[idx]),
            "action": torch.from_numpy(self.action[idx]),
            "reward": torch.from_numpy(self.reward[idx]),
            "next_obs": torch.from_numpy(self.next_obs[idx]),
            "discount": torch.from_numpy(self.discount[idx]),
        }


class NStepReturns:
    """Turns the lockstep stream of ``(obs, action, reward)`` into n-step transitions
    ``(obs_t, action_t, sum_k gamma^k r_{t+k}, obs_{t+n}, gamma^n)``; at an episode's end
    the shorter tails bootstrap from the last observation with ``gamma^len``."""

    def __init__(self, n: int, gamma: float):
        self.n, self.gamma = int(n), float(gamma)
        self._window: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def push(
        self,
        obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        next_obs: np.ndarray,
        episode_over: bool,
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]]:
        self._window.append((obs, action, reward))
        out = []
        while self._window and (len(self._window) >= self.n or episode_over):
            ret = np.zeros_like(reward)
            for k, (_, _, r) in enumerate(self._window):
                ret += (self.gamma**k) * r
            first_obs, first_action, _ = self._window.pop(0)
            out.append(
                (first_obs, first_action, ret, next_obs, self.gamma ** (len(self._window) + 1))
            )
        return out


class DQNLearner:
    """The update rule of double DQN (see the module doc), over a policy's networks."""

    def __init__(self, q_network: RoleQNetworks, args: Args):
        self.q_network, self.args = q_network, args
        self.target_network = copy.deepcopy(q_network)
        self.optimizer = torch.optim.Adam(q_network.parameters(), lr=args.learning_rate)
        self.updates = 0

    def update(
        self,
        batches: Mapping[str, Mapping[str, torch.Tensor]],
        proximal: tuple[float, Sequence[torch.Tensor]] | None = None,
    ) -> float:
        """One gradient step on a minibatch per role; returns the mean Huber loss.
        ``proximal = (mu, anchor)`` adds ``mu/2 ||w - anchor||^2`` (FedProx)."""
        losses = []
        for role, b in batches.items():
            online, target = self.q_network.nets[role], self.target_network.nets[role]
            with torch.no_grad():
                best = online(b["next_obs"]).argmax(dim=1, keepdim=True)
                next_q = target(b["next_obs"]).gather(1, best).squeeze(1)
                td_target = b["reward"] + b["discount"] * next_q
            q = online(b["obs"]).gather(1, b["action"].unsqueeze(1)).squeeze(1)
            losses.append(nn.functional.smooth_l1_loss(q, td_target))
        loss = torch.stack(losses).mean()
        objective = loss
        if proximal is not None and proximal[0] > 0:
            mu, anchor = proximal
            drift = sum(
                ((p - a) ** 2).sum()
                for p, a in zip(self.q_network.parameters(), anchor, strict=True)
            )
            objective = loss + 0.5 * mu * drift
        self.optimizer.zero_grad()
        objective.backward()
        nn.utils.clip_grad_norm_(self.q_network.parameters(), self.args.max_grad_norm)
        self.optimizer.step()
        self.updates += 1
        if self.updates % self.args.target_network_frequency == 0:
            tau = self.args.tau
            for tp, p in zip(
                self.target_network.parameters(), self.q_network.parameters(), strict=True
            ):
                tp.data.copy_(tau * p.data + (1.0 - tau) * tp.data)
        return float(loss.item())

    def set_learning_rate(self, rate: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = rate

    def state_dict(self) -> dict[str, Any]:
        return {
            "q_network": self.q_network.state_dict(),
            "target_network": self.target_network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "updates": self.updates,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.q_network.load_state_dict(state["q_network"])
        self.target_network.load_state_dict(state["target_network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = int(state["updates"])


# -- collecting and learning: the experience loop ----------------------------------------


@dataclass
class StepStats:
    """What one :meth:`ExperienceLoop.step` did."""

    epsilon: float
    """Exploration rate of the step."""
    losses: list[float]
    """Huber loss of each gradient step taken (empty before learning starts)."""
    reward: float
    """Mean environment reward over agents and replications (before ``reward_scale``)."""
    network_cost: float
    """Mean network cost of the day over replications ($)."""
    collected: dict[str, int]
    """Transitions added to each role's replay buffer."""


class ExperienceLoop:
    """The experience loop of double DQN and all of its state: the environment's current
    observations, the n-step window, one replay buffer per role, the learner, the step
    count and the random generator of exploration and minibatches.

    :meth:`begin` starts a batch of ``B`` replications (``first .. first + B - 1``; the
    next batch at each horizon, ``first + k B``); each :meth:`step` then acts
    epsilon-greedily (:class:`Exploration`), steps the batch, turns the stream into
    n-step transitions in each role's buffer and, once ``learning_starts`` steps are done
    and every buffer holds a minibatch, takes ``updates_per_step`` gradient steps every
    ``train_frequency`` steps. ``fedinv train`` (:func:`train`) begins once and steps
    ``total_steps`` times; a federated client (:class:`fedinv.federation.task.LocalTrainer`)
    begins every round, steps ``local_steps`` times and flushes the window at the
    round's end, keeping the buffers, the learner and the step count across rounds.
    """

    def __init__(
        self,
        env: BatchedInventoryEnv,
        policy: DQNPolicy,
        learner: DQNLearner,
        args: Args,
        exploration: Exploration,
        buffer_order: Sequence[str] | None = None,
    ):
        self.env, self.policy, self.learner = env, policy, learner
        self.args, self.exploration = args, exploration
        self.groups = _groups(policy.agent_roles)
        """Agent indices of each role (in order of first appearance)."""
        order = list(buffer_order) if buffer_order is not None else list(self.groups)
        if sorted(order) != sorted(self.groups):
            raise ValueError(f"buffer_order {order} must list the roles {sorted(self.groups)}")
        self.buffers = {
            role: ReplayBuffer(args.buffer_size, env.observation_size) for role in order
        }
        """One replay buffer per role; minibatches are drawn in this order."""
        self.steps = 0
        """Environment steps taken since the training started (over all calls)."""
        self.rng: np.random.Generator | None = None
        """Exploration and minibatches (set by :meth:`begin`)."""
        self._nstep = NStepReturns(args.n_step, args.gamma)
        self._obs: np.ndarray | None = None
        self._first, self._episode = 0, 0

    def begin(self, first: int, rng: np.random.Generator) -> None:
        """Reset the environment to replications ``first .. first + B - 1`` with a fresh
        n-step window; exploration and minibatches draw from ``rng`` from now on."""
        self.rng, self._first, self._episode = rng, int(first), 0
        self._nstep = NStepReturns(self.args.n_step, self.args.gamma)
        self._obs = self.env.reset(range(self._first, self._first + self.args.replications))

    def step(
        self,
        flush: bool = False,
        proximal: tuple[float, Sequence[torch.Tensor]] | None = None,
    ) -> StepStats:
        """One environment step of every replication, then learning when it is due.
        ``flush``: end the n-step window here (the shorter tails bootstrap), as at a
        horizon; ``proximal``: FedProx term of the updates (:meth:`DQNLearner.update`)."""
        if self._obs is None or self.rng is None:
            raise RuntimeError("ExperienceLoop.step before begin")
        args, obs, b = self.args, self._obs, self.args.replications
        self.steps += 1
        # act: epsilon-greedy, every agent of every replication on its own
        epsilon = self.exploration.epsilon(self.steps)
        actions = self.policy.explore(obs, epsilon, self.rng, args.explore_radius)
        next_obs, reward, _, truncated, info = self.env.step(actions)
        over = bool(truncated.all())
        # remember: n-step transitions, split by role
        collected = dict.fromkeys(self.buffers, 0)
        for o, a, r, o2, discount in self._nstep.push(
            obs, actions, reward * args.reward_scale, next_obs, over or flush
        ):
            for role, idx in self.groups.items():
                rows = b * len(idx)
                self.buffers[role].add(
                    o[:, idx].reshape(rows, -1),
                    a[:, idx].reshape(-1),
                    r[:, idx].reshape(-1),
                    o2[:, idx].reshape(rows, -1),
                    np.full(rows, discount, np.float32),
                )
                collected[role] += rows
        if over:  # the horizon: the next batch of replications
            self._episode += 1
            start = self._first + self._episode * b
            self._obs = self.env.reset(range(start, start + b))
        else:
            self._obs = next_obs
        # learn
        losses = []
        ready = all(buf.size >= args.batch_size for buf in self.buffers.values())
        if ready and self.steps >= args.learning_starts and self.steps % args.train_frequency == 0:
            if args.final_learning_rate is not None:
                self.learner.set_learning_rate(
                    args.learning_rate
                    + (args.final_learning_rate - args.learning_rate)
                    * self.steps
                    / args.total_steps
                )
            for _ in range(args.updates_per_step):
                batches = {
                    role: buf.sample(args.batch_size, self.rng)
                    for role, buf in self.buffers.items()
                }
                losses.append(self.learner.update(batches, proximal))
        return StepStats(
            epsilon=epsilon,
            losses=losses,
            reward=float(reward.mean()),
            network_cost=float(info["network_cost"].mean()),
            collected=collected,
        )


# -- evaluation --------------------------------------------------------------------------


def evaluate(
    policy: Any, scenario: Scenario, replications: Sequence[int], days: int | None = None
) -> np.ndarray:
    """Total network cost per day of each replication ``[R]`` ($; after warm-up)."""
    from fedinv.sim.run import mean_cost_per_day

    return mean_cost_per_day(Simulator(scenario, days=days), policy, list(replications))


# -- the training loop -------------------------------------------------------------------


@dataclass
class TrainResult:
    """What :func:`train` returns: the selected policy, the learner (final state), the
    training curve (one row per validation run) and the step the policy comes from."""

    args: Args
    scenario: Scenario
    policy: DQNPolicy
    learner: DQNLearner
    curve: pd.DataFrame
    best_step: int
    cost_scale: float


def train(
    args: Args,
    scenario: Scenario | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train role Q-networks on ``scenario`` (default: load ``args.scenario``).
    ``on_step(step, stats)`` is called after every environment step (progress)."""
    from fedinv.model.scenario import load_scenario
    from fedinv.policies.tuning import TRAIN_BASE

    torch_globals(args.seed, args.threads)
    scenario = scenario or load_scenario(args.scenario)
    env = BatchedInventoryEnv(scenario, args.env)
    roles = agent_roles(env.layout, env.agent_nodes, args.share)
    q_network = RoleQNetworks(
        roles,
        env.observation_size,
        env.num_actions,
        args.hidden,
        args.dueling,
        generator=torch.Generator().manual_seed(args.seed),
    )
    policy = DQNPolicy(env.layout, q_network, args.env, args.share)
    learner = DQNLearner(q_network, args)
    exploration = Exploration(
        args.start_e, args.end_e, args.exploration_fraction * args.total_steps
    )
    experience = ExperienceLoop(env, policy, learner, args, exploration)
    experience.begin(TRAIN_BASE, np.random.default_rng(args.seed))
    valid = range(VALIDATION_BASE, VALIDATION_BASE + args.eval_replications)
    eval_policy = DQNPolicy(env.layout, copy.deepcopy(q_network), args.env, args.share)

    rows: list[dict[str, float]] = []
    best_cost, best_step, best_state = np.inf, 0, copy.deepcopy(q_network.state_dict())
    loss, start = float("nan"), time.perf_counter()
    for step in range(1, args.total_steps + 1):
        stats = experience.step()
        loss = stats.losses[-1] if stats.losses else loss
        # validate: the training curve and model selection
        last = step == args.total_steps
        if last or (args.eval_every and step % args.eval_every == 0):
            eval_policy.q_network.load_state_dict(q_network.state_dict())
            run = for_mode(  # validated as it was trained: pure or through the layer
                eval_policy,
                args.env.train_mode,
                env.layout,
                backend="highspy",
                outages=scenario.outages,
            )
            cost = evaluate(run, scenario, valid, args.eval_days)
            rows.append(
                {
                    "step": step,
                    "simulated_days": step * args.replications,
                    "epsilon": stats.epsilon,
                    "loss": loss,
                    "validation_cost_per_day": float(cost.mean()),
                    "validation_ci95": _ci95(cost),
                    "wall_s": time.perf_counter() - start,
                }
            )
            if cost.mean() < best_cost:
                best_cost, best_step = float(cost.mean()), step
                best_state = copy.deepcopy(q_network.state_dict())
        if on_step is not None:
            on_step(step, {"epsilon": stats.epsilon, "loss": loss, "best": best_cost})
    selected = copy.deepcopy(q_network)
    selected.load_state_dict(best_state)
    return TrainResult(
        args,
        scenario,
        DQNPolicy(env.layout, selected, args.env, args.share),
        learner,
        pd.DataFrame(rows),
        best_step,
        env.cost_scale,
    )


def _ci95(values: np.ndarray) -> float:
    from scipy import stats

    n = len(values)
    if n < 2:
        return float("nan")
    return float(stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / np.sqrt(n))
