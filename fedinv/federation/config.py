"""The configuration of a federated run and the names of its arrays, shared by the DQN's
task (:mod:`fedinv.federation.task`) and HDPO's (:mod:`fedinv.federation.hdpo_task`).
Flower's run config carries :class:`FedConfig` flat (:meth:`FedConfig.to_flat`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedinv.agents.dqn import VALIDATION_BASE, Args
from fedinv.agents.envs import TIERS, EnvConfig, RewardConfig
from fedinv.federation.server_step import check_server_step
from fedinv.model.network import Scenario

ALGOS = ("dqn", "hdpo")
"""Learners a federation can train (``FedConfig.algo``)."""
CLIENT_BASES = ("server", "local")
"""Where a federated HDPO client's base comes from (:attr:`FedConfig.client_base`)."""


@dataclass(kw_only=True)
class FedConfig:
    """Everything a federated run depends on (Flower's run config carries it flat)."""

    scenario: str = "electronics-5r"
    """The whole network: roles, global evaluation."""
    rounds: int = 3
    """Server rounds."""
    strategy: str = "fedavg"
    """``fedavg`` or ``fedprox``."""
    proximal_mu: float = 0.0
    """FedProx proximal weight (used when strategy is fedprox)."""
    local_steps: int = 120
    """Environment steps (days of the batch) per client and round."""
    replications: int = 4
    """Training replications per client, stepped in lockstep."""
    eval_replications: int = 4
    """Held-out replications of the global and local evaluations (indices 0..R-1)."""
    eval_days: int = 120
    """Days of an evaluation run."""
    seed: int = 1
    """Seed of initialization, exploration and minibatches."""
    hidden: tuple[int, ...] = (64, 64)
    dueling: bool = True
    """Dueling Q-network head (fedinv.agents.dqn.QNetwork)."""
    learning_rate: float = 5e-4
    gamma: float = 0.97
    n_step: int = 3
    batch_size: int = 128
    buffer_size: int = 100_000
    learning_starts: int = 30
    """Local steps of the first round before the first update."""
    target_network_frequency: int = 100
    start_e: float = 1.0
    end_e: float = 0.05
    exploration_steps: int = 240
    """Local steps (per client, counted over rounds) over which epsilon decays; a fixed
    count, so a run resumed with more rounds explores exactly as an uninterrupted one."""
    algo: str = "dqn"
    """The learner: ``dqn`` (double DQN, :mod:`fedinv.agents.dqn`) or ``hdpo`` (pathwise
    gradients, :mod:`fedinv.agents.hdpo`; the DQN-only fields are then unused)."""
    local_iterations: int = 2
    """HDPO: gradient batches (each ``replications`` fresh replications over the horizon)
    per client and round."""
    window: int = 0
    """HDPO: days of one gradient step (truncated back-propagation; 0: the learner's
    default, four echelon lead times, :func:`fedinv.agents.hdpo.auto_window`)."""
    hdpo_learning_rate: float = 3e-3
    """HDPO: Adam step size."""
    tune_replications: int = 16
    """HDPO: training replications of the base policy's tuning (the server's, on the
    whole network; with ``client_base = "local"`` every organization's too, on its local
    scenario)."""
    tune_sweeps: int = 2
    """HDPO: coordinate-descent sweeps of those tunings."""
    train_mode: str = "pure"
    """``pure``, or ``hybrid``: trained for the safety layer -- the DQN on the orders the
    layer releases with a penalty on the projection distance
    (:attr:`fedinv.agents.envs.EnvConfig.train_mode`), HDPO with its bases tuned through
    the layer and violations penalized in every local loss
    (:attr:`fedinv.agents.hdpo.Args.train_mode`)."""
    layer_gradient: str = "penalty"
    """HDPO with ``train_mode = "hybrid"``: how each local training meets the safety layer
    (:attr:`fedinv.agents.hdpo.Args.layer_gradient`: ``penalty``, ``straight-through`` or
    ``masked``; the organization's layer is its local scenario's)."""
    transfers: bool = False
    """HDPO: propose lateral transfers (:attr:`fedinv.agents.hdpo.Args.transfers`; the
    whole network must have lateral links): each organization trains the pressure output
    on the links between its own nodes (those its private data holds); an organization
    without links trains the orders only."""
    server_base: str = ""
    """HDPO: a JSON file (:meth:`fedinv.policies.tuning.TuneResult.to_dict`) with the
    tuning of the whole network's base policy already done -- a study passes its own
    tuning unit of the same policy, mode, replications and sweeps --, read by the server
    instead of tuning it again; empty: the server tunes it."""
    client_base: str = "server"
    """HDPO: the base each organization's residual trains on. ``server``: the server's
    tuned coordinates (a safety factor, and an order-quantity multiple, per tier), sent
    in every train message as part of the global model and applied to the
    organization's own nodes with its own demand and lead-time statistics, so every
    holder trains on the base the global policy is evaluated on (one evaluation per
    organization, for its loss scale); ``local``: each organization tunes its own on its
    local scenario (``tune_replications``, ``tune_sweeps``)."""
    server_step: float = 1.0
    """The server's step size ``eta`` in (0, 1]: the next global weights are ``sent +
    eta (average - sent)``, ``sent`` those the round's clients trained from (1: plain
    FedAvg; :mod:`fedinv.federation.server_step`)."""
    acceptance: str = "off"
    """The server's acceptance rule: ``off``, or ``local-cost``: the organizations each
    report their local validation cost of the weights they received (one scalar, in
    fat rounds); when the sum rose above that of the last accepted weights, the server
    keeps those, halves the step and discards the round's updates
    (:mod:`fedinv.federation.server_step`)."""
    reward_scale: float | None = None
    """$ per day dividing costs in every client's reward (the same for all, so Q-values
    average meaningfully); None: the whole network's reference cost / organizations."""

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"FedConfig.algo must be one of {', '.join(ALGOS)}, got {self.algo!r}")
        if self.client_base not in CLIENT_BASES:
            raise ValueError(
                f"FedConfig.client_base must be one of {', '.join(CLIENT_BASES)}, "
                f"got {self.client_base!r}"
            )
        check_server_step(self.server_step, self.acceptance)
        if self.layer_gradient not in ("penalty", "straight-through", "masked"):
            raise ValueError(
                "FedConfig.layer_gradient must be penalty, straight-through or masked, "
                f"got {self.layer_gradient!r}"
            )
        if self.train_mode not in ("pure", "hybrid"):
            raise ValueError(
                f"FedConfig.train_mode must be pure or hybrid, got {self.train_mode!r}"
            )

    def dqn_args(self) -> Args:
        return Args(
            scenario=self.scenario,
            seed=self.seed,
            hidden=tuple(self.hidden),
            dueling=self.dueling,
            learning_rate=self.learning_rate,
            gamma=self.gamma,
            n_step=self.n_step,
            batch_size=self.batch_size,
            buffer_size=self.buffer_size,
            learning_starts=self.learning_starts,
            target_network_frequency=self.target_network_frequency,
            replications=self.replications,
            env=self.env_config(),
        )

    def env_config(self) -> EnvConfig:
        return EnvConfig(reward=RewardConfig(scale=self.reward_scale), train_mode=self.train_mode)

    def to_flat(self) -> dict[str, Any]:
        """Flat hyphenated keys (Flower run config): tuples as comma strings."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = ",".join(str(v) for v in value)
            if value is None:
                continue
            out[f.name.replace("_", "-")] = value
        return out

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> FedConfig:
        """Inverse of :meth:`to_flat`; unknown keys are ignored (the run config has more)."""
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            key = f.name.replace("_", "-")
            if key not in flat:
                continue
            value = flat[key]
            if f.name == "hidden":
                value = tuple(int(v) for v in str(value).split(",") if v.strip())
            elif isinstance(cls.__dataclass_fields__[f.name].default, bool):
                value = bool(value)
            elif isinstance(cls.__dataclass_fields__[f.name].default, int):
                value = int(value)
            elif isinstance(cls.__dataclass_fields__[f.name].default, float):
                value = float(value)
            elif f.name == "reward_scale":
                value = float(value) if float(value) > 0 else None
            kwargs[f.name] = value
        return cls(**kwargs)


def federated_record(
    cfg: FedConfig, server_round: int, metrics: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """What a global checkpoint records of the federation that trained it (its
    ``federated`` entry): the round, the whole configuration and the round's metrics."""
    return {
        "round": int(server_round),
        "config": dataclasses.asdict(cfg),
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
    }


def round_replications(count: int) -> list[int]:
    """The replications of every per-round evaluation (the server's global one and each
    organization's local one): ``count`` from :data:`fedinv.agents.dqn.VALIDATION_BASE`,
    disjoint from training and from the held-out replications ``0..R-1``."""
    return list(range(VALIDATION_BASE, VALIDATION_BASE + count))


def as_it_runs(policy: Any, sim: Any, cfg: FedConfig) -> Any:
    """``policy`` as every per-round evaluation runs it: behind the safety layer of
    ``sim``'s network (:func:`fedinv.agents.hdpo.through_layer`, the layer central
    validation runs) when ``cfg.train_mode = "hybrid"``, else as it is."""
    if cfg.train_mode != "hybrid":
        return policy
    from fedinv.agents.hdpo import through_layer

    return through_layer(policy, sim)


def roles_of(scenario: Scenario) -> tuple[str, ...]:
    """Tiers present in the network, in :data:`fedinv.agents.envs.TIERS` order."""
    present = {n.tier.value for n in scenario.network.nodes}
    return tuple(t for t in TIERS if t in present)


def role_of_key(key: str) -> str:
    """The role an array belongs to: ``nets.<role>.<...>``."""
    parts = key.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "nets" else ""
