"""Federated DQN, without Flower: what a client computes on its private data and what the
server computes with the weights (the ``task.py`` of Flower's example apps; the Flower
adapters in ``clients/`` and ``server/`` only move arrays and scalars).

* **Model.** Role Q-networks (:class:`fedinv.agents.dqn.RoleQNetworks`) with one network per
  tier of the *whole* network, so every organization holds the same arrays; an
  organization trains the roles of its own nodes.
* **Local training** (:class:`LocalTrainer`): the organization's own scenario
  (:func:`fedinv.federation.private_data.load_org_scenario`: its nodes, its demand
  history bootstrapped,
  the supplier lead times it observed), double DQN on a batch of replications for
  ``local_steps`` days per round, starting from the global weights. Its replay buffers,
  target networks, optimizer and step count live in files of the node
  (``STATE_DIR/ORG/``), so a restarted node continues. FedProx adds
  ``mu/2 ||w - w_global||^2`` to the loss.
* **Aggregation** (:func:`role_weighted_average`): each role's arrays are averaged
  weighted by the transitions each client collected *for that role* this round; a role
  nobody trained keeps the global value (plain FedAvg would dilute it with untrained
  copies).
* **Server side**: :func:`global_evaluation` runs the aggregated greedy policy on the
  whole network on validation replications
  (:func:`fedinv.federation.config.round_replications`); :func:`save_global_checkpoint`
  writes a checkpoint that ``fedinv simulate --policy dqn --checkpoint`` loads.

Seeds: a client's randomness in round ``r`` derives from ``(seed, organization, r)``;
training replications are drawn from ``fedinv.policies.tuning.TRAIN_BASE`` upward, the
per-round evaluations from ``fedinv.agents.dqn.VALIDATION_BASE``: neither overlaps the
held-out replications ``0..R-1`` a study or ``fedinv simulate`` tests on.
"""

from __future__ import annotations

import copy
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedinv.agents.checkpoints import (
    CheckpointError,
    check_layout,
    load_checkpoint,
    weights_from_checkpoint,
    write_checkpoint,
)
from fedinv.agents.dqn import (
    DQNLearner,
    DQNPolicy,
    ExperienceLoop,
    Exploration,
    ReplayBuffer,
    RoleQNetworks,
    torch_globals,
)
from fedinv.agents.envs import BatchedInventoryEnv, EnvConfig, reference_cost
from fedinv.federation.config import (
    FedConfig,
    as_it_runs,
    federated_record,
    role_of_key,
    roles_of,
    round_replications,
)
from fedinv.federation.private_data import load_org_scenario
from fedinv.federation.snapshots import RoundSnapshots
from fedinv.model.network import Scenario
from fedinv.sim.run import mean_cost_per_day
from fedinv.sim.simulator import Simulator

STATE_FORMAT = "fedinv-fed-client/1"


# -- the model ---------------------------------------------------------------------------


def new_model(cfg: FedConfig, roles: Sequence[str]) -> RoleQNetworks:
    """Freshly initialized role Q-networks (a ``torch.Generator`` seeded ``cfg.seed``)."""
    env_cfg = cfg.env_config()
    obs_size = _observation_size(env_cfg)
    return RoleQNetworks(
        roles,
        obs_size,
        env_cfg.actions.size,
        cfg.hidden,
        cfg.dueling,
        generator=torch.Generator().manual_seed(cfg.seed),
    )


def _observation_size(env_cfg: EnvConfig) -> int:
    from fedinv.agents.envs import observation_names

    return len(observation_names(env_cfg))


def to_arrays(model: RoleQNetworks) -> dict[str, np.ndarray]:
    """The model's weights as named numpy arrays (what crosses the wire)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def load_arrays(model: RoleQNetworks, arrays: Mapping[str, np.ndarray]) -> None:
    """Set the model's weights from named arrays (shapes must match)."""
    model.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in arrays.items()})


def role_weighted_average(
    updates: Sequence[Mapping[str, np.ndarray]],
    counts: Sequence[Mapping[str, float]],
    previous: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Average each array over the clients, weighted by each client's transitions for the
    array's role (``counts[i][role]``); an array whose role nobody trained keeps
    ``previous``."""
    out = {}
    for key, old in previous.items():
        role = role_of_key(key)
        weights = np.array([float(c.get(role, 0.0)) for c in counts])
        if weights.sum() <= 0:
            out[key] = np.array(old, copy=True)
            continue
        weights = weights / weights.sum()
        out[key] = sum(
            w * np.asarray(u[key], dtype=np.float64) for w, u in zip(weights, updates, strict=True)
        ).astype(old.dtype)
    return out


# -- a client's local training -----------------------------------------------------------


def _client_seed(cfg: FedConfig, org: str, server_round: int) -> int:
    return (cfg.seed * 1_000_003 + zlib.crc32(org.encode()) + 7919 * server_round) % 2**32


class LocalTrainer(RoundSnapshots):
    """One organization's learner: its scenario, model and experience loop
    (:class:`fedinv.agents.dqn.ExperienceLoop`: replay buffers, learner, step count), with
    the state in ``state_dir`` (loaded if present, saved after every round)."""

    def __init__(
        self, org_dir: str | Path, state_dir: str | Path, cfg: FedConfig, roles: Sequence[str]
    ):
        self.org_dir, self.cfg = Path(org_dir), cfg
        self.org = self.org_dir.name
        self.state_dir = Path(state_dir) / self.org
        self.scenario = load_org_scenario(self.org_dir)
        self.env = BatchedInventoryEnv(self.scenario, cfg.env_config())
        self.model = new_model(cfg, roles)
        self.policy = DQNPolicy(self.env.layout, self.model, cfg.env_config())
        args = cfg.dqn_args()
        self.learner = DQNLearner(self.model, args)
        self.local_roles = sorted(set(self.env.roles))
        self.experience = ExperienceLoop(
            self.env,
            self.policy,
            self.learner,
            args,
            Exploration(cfg.start_e, cfg.end_e, cfg.exploration_steps),
            buffer_order=self.local_roles,
        )
        """The experience loop: replay buffers, step count, learner (saved every round)."""

    @property
    def buffers(self) -> dict[str, ReplayBuffer]:
        """The replay buffer of each of the organization's roles."""
        return self.experience.buffers

    @property
    def steps_done(self) -> int:
        """Local environment steps over all rounds so far."""
        return self.experience.steps

    # -- persistence: one snapshot per round -------------------------------------------

    def load_before(self, server_round: int) -> int:
        """Load the newest saved state from before ``server_round`` (a round re-run after
        a crash starts exactly where it started the first time); returns its round, 0 if
        none."""
        last = self._last_before(server_round)
        if not last:
            return 0
        folder = self._snapshot(last)
        data = torch.load(folder / "learner.pt", map_location="cpu", weights_only=False)
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"{folder}: not a fedinv client state")
        self.learner.load_state_dict(data["learner"])
        self.experience.steps = int(data["steps_done"])
        replay = np.load(folder / "replay.npz")
        for role, buf in self.buffers.items():
            if f"{role}.size" not in replay:
                continue
            size = int(replay[f"{role}.size"])
            for name in ("obs", "next_obs", "action", "reward", "discount"):
                getattr(buf, name)[:size] = replay[f"{role}.{name}"]
            buf.size, buf._pos = size, int(replay[f"{role}.pos"]) % buf.capacity
        return last

    def save(self, server_round: int, keep: int = 2) -> None:
        """Write the learner and replay buffers of the end of ``server_round`` (a folder
        made complete before it is renamed into place); keep the last ``keep`` rounds."""
        arrays = {}
        for role, buf in self.buffers.items():
            n = buf.size
            arrays.update(
                {
                    f"{role}.obs": buf.obs[:n],
                    f"{role}.next_obs": buf.next_obs[:n],
                    f"{role}.action": buf.action[:n],
                    f"{role}.reward": buf.reward[:n],
                    f"{role}.discount": buf.discount[:n],
                    f"{role}.size": np.array(n),
                    f"{role}.pos": np.array(buf._pos),
                }
            )
        state = {
            "format": STATE_FORMAT,
            "learner": self.learner.state_dict(),
            "steps_done": self.steps_done,
        }

        def write(folder: Path) -> None:
            np.savez(folder / "replay.npz", **arrays)
            torch.save(state, folder / "learner.pt")

        self._write_snapshot(server_round, write, keep)

    # -- one round -------------------------------------------------------------------------

    def train_round(
        self, global_arrays: Mapping[str, np.ndarray], server_round: int
    ) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, float]]:
        """Train ``local_steps`` days from the global weights. Returns the new weights,
        the transitions collected per role, and scalar metrics."""
        cfg = self.cfg
        started = time.perf_counter()
        self.load_before(server_round)
        load_arrays(self.model, global_arrays)
        load_arrays(self.learner.target_network, global_arrays)
        anchor = [p.detach().clone() for p in self.model.parameters()]
        mu = cfg.proximal_mu if cfg.strategy == "fedprox" else 0.0
        seed = _client_seed(cfg, self.org, server_round)
        torch_globals(seed, threads=1)
        from fedinv.policies.tuning import TRAIN_BASE

        first = TRAIN_BASE + (server_round * 1000) * cfg.replications
        self.experience.begin(first, np.random.default_rng(seed))
        losses, rewards, costs = [], [], []
        collected = dict.fromkeys(self.local_roles, 0.0)
        for step in range(cfg.local_steps):
            # the round's last step ends the n-step window (its tails bootstrap)
            stats = self.experience.step(flush=step == cfg.local_steps - 1, proximal=(mu, anchor))
            losses += stats.losses
            rewards.append(stats.reward)
            costs.append(stats.network_cost)
            for role, rows in stats.collected.items():
                collected[role] += rows
        self.save(server_round)
        metrics = {
            "num-examples": float(sum(collected.values())),
            "train-loss": float(np.mean(losses)) if losses else float("nan"),
            "train-reward": float(np.mean(rewards)),
            "train-cost-per-day": float(np.mean(costs)),
            "epsilon": float(stats.epsilon),
            "train-seconds": time.perf_counter() - started,
        }
        return to_arrays(self.model), collected, metrics

    def evaluate(
        self, arrays: Mapping[str, np.ndarray], replications: int, days: int
    ) -> dict[str, float]:
        """Greedy cost per day of the weights on the organization's own scenario
        (validation replications, :func:`round_replications`), through the organization's
        safety layer when it trains for it (:func:`as_it_runs`)."""
        model = copy.deepcopy(self.model)
        load_arrays(model, arrays)
        policy = DQNPolicy(self.env.layout, model, self.cfg.env_config())
        days = min(days, self.scenario.horizon_days)
        sim = Simulator(self.scenario, days=days)
        cost = mean_cost_per_day(
            sim, as_it_runs(policy, sim, self.cfg), round_replications(replications)
        )
        return {
            "num-examples": float(replications * days),
            "local-cost-per-day": float(cost.mean()),
        }


def make_trainer(
    org_dir: str | Path,
    state_dir: str | Path,
    cfg: FedConfig,
    roles: Sequence[str],
    base: str | None = None,
) -> Any:
    """The organization's local learner of ``cfg.algo`` (:class:`LocalTrainer` for the
    DQN, :class:`fedinv.federation.hdpo_task.HDPOLocalTrainer` for HDPO, on the server's
    ``base`` message if one came)."""
    if cfg.algo == "hdpo":
        from fedinv.federation.hdpo_task import HDPOLocalTrainer

        return HDPOLocalTrainer(org_dir, state_dir, cfg, roles, base)
    return LocalTrainer(org_dir, state_dir, cfg, roles)


def initial_arrays(cfg: FedConfig, scenario: Scenario) -> dict[str, np.ndarray]:
    """The global weights a new run starts from (what the server sends in round 1)."""
    if cfg.algo == "hdpo":
        from fedinv.federation import hdpo_task

        return hdpo_task.initial_arrays(cfg, scenario)
    return to_arrays(new_model(cfg, roles_of(scenario)))


# -- the server's side ---------------------------------------------------------------------


def default_reward_scale(scenario: Scenario, cfg: FedConfig) -> float:
    """The whole network's reference cost per day divided by its organizations."""
    env_cfg = EnvConfig()
    return reference_cost(scenario, env_cfg) / max(len(scenario.network.organizations), 1)


def global_policy(
    scenario: Scenario, arrays: Mapping[str, np.ndarray], cfg: FedConfig
) -> DQNPolicy:
    """The greedy policy of global weights on the whole network."""
    model = new_model(cfg, roles_of(scenario))
    load_arrays(model, arrays)
    return DQNPolicy(Simulator(scenario, days=2).layout, model, cfg.env_config())


def isolated_policy(
    scenario: Scenario, per_org: Mapping[str, Mapping[str, np.ndarray]], cfg: FedConfig
) -> DQNPolicy:
    """The greedy policy on the whole network when every organization acts with the
    weights it trained alone (``per_org``: organization id -> its arrays): a node of
    organization O and tier T uses O's network for T."""
    roles = roles_of(scenario)
    layout = Simulator(scenario, days=2).layout
    org_of = [n.organization for n in scenario.network.nodes]
    missing = sorted({o for o in org_of} - set(per_org))
    if missing:
        raise ValueError(f"isolated policy: no weights for organization(s) {missing}")
    keys = sorted({f"{org_of[i]}:{layout.tier[i]}" for i in range(layout.num_nodes)})
    template = new_model(cfg, roles)
    # the plain roles too (DQNPolicy checks them); the organization-qualified ones act
    composite = RoleQNetworks(
        keys + list(roles),
        template.obs_size,
        template.num_actions,
        template.hidden,
        template.dueling,
    )
    for key in keys:
        org, tier = key.split(":")
        model = new_model(cfg, roles)
        load_arrays(model, per_org[org])
        composite.nets[key].load_state_dict(model.nets[tier].state_dict())
    policy = DQNPolicy(layout, composite, cfg.env_config())
    policy.agent_roles = tuple(f"{org_of[i]}:{layout.tier[i]}" for i in policy.agent_nodes)
    return policy


def global_evaluation(
    scenario: Scenario, arrays: Mapping[str, np.ndarray], cfg: FedConfig
) -> dict[str, float]:
    """Cost per day of the global greedy policy on the whole network, validation
    replications (:func:`fedinv.federation.config.round_replications`; mean and 95% half-width),
    through the safety layer when the federation trains for it (:func:`as_it_runs`)."""
    from fedinv.sim.metrics import summarize

    if cfg.algo == "hdpo":
        from fedinv.federation import hdpo_task

        policy: Any = hdpo_task.global_policy(scenario, arrays, cfg)
    else:
        policy = global_policy(scenario, arrays, cfg)
    days = min(cfg.eval_days, scenario.horizon_days)
    sim = Simulator(scenario, days=days)
    cost = mean_cost_per_day(
        sim, as_it_runs(policy, sim, cfg), round_replications(cfg.eval_replications)
    )
    import pandas as pd

    row = summarize(pd.DataFrame({"c": cost})).loc["c"]
    return {
        "global-cost-per-day": float(row["mean"]),
        "global-cost-ci95": float(row["ci95"]) if np.isfinite(row["ci95"]) else 0.0,
    }


def save_global_checkpoint(
    path: str | Path,
    scenario: Scenario,
    arrays: Mapping[str, np.ndarray],
    cfg: FedConfig,
    server_round: int,
    metrics: Mapping[str, float],
) -> Path:
    """A checkpoint of the global weights (:mod:`fedinv.agents.checkpoints`, loadable by
    ``fedinv simulate --policy dqn --checkpoint``), trained by the federation up to
    ``server_round``."""
    if cfg.algo == "hdpo":
        from fedinv.federation import hdpo_task

        return hdpo_task.save_global_checkpoint(path, scenario, arrays, cfg, server_round, metrics)
    model = new_model(cfg, roles_of(scenario))
    load_arrays(model, arrays)
    return write_checkpoint(
        path,
        model,
        scenario=scenario.name,
        args=cfg.dqn_args(),
        federated=federated_record(cfg, server_round, metrics),
    )


def load_global_checkpoint(
    path: str | Path, algo: str = "dqn"
) -> tuple[dict[str, np.ndarray], int]:
    """Global weights and round of a checkpoint written by :func:`save_global_checkpoint`
    for ``algo`` (:class:`fedinv.agents.checkpoints.CheckpointError` otherwise)."""
    data = load_checkpoint(path, algo)
    if "federated" not in data:
        raise CheckpointError(
            f"checkpoint {str(path)!r}: not a federated checkpoint (trained by fedinv train)"
        )
    check_layout(data, path)
    if algo == "hdpo":
        from fedinv.federation import hdpo_task

        return hdpo_task.global_arrays_of(data), int(data["federated"]["round"])
    return weights_from_checkpoint(data), int(data["federated"]["round"])
