"""Federated HDPO, without Flower: what an organization computes on its private data and
what the server computes with the weights (the DQN's counterpart is
:mod:`fedinv.federation.task`, which dispatches here when ``FedConfig.algo = "hdpo"``).

* **Model.** Role policy networks (:class:`fedinv.agents.hdpo.RolePolicyNetworks`), one
  network per tier of the *whole* network, so every organization holds the same
  arrays; an organization trains the roles of its own nodes. The input standardization
  (the ``input_mean`` / ``input_std`` buffers) is part of the global model: set once by
  the server from a base-policy run on the whole network, sent with the weights and
  never trained, so every holder feeds the networks the same way (local statistics made
  the averaged networks meaningless elsewhere: measured in docs/federation.md). So is
  the base (``FedConfig.client_base = "server"``, the default): the server's tuned
  coordinates travel in every train message (:func:`base_message`) and each
  organization applies them to its own nodes (:func:`local_base`), so the residual is
  trained on the base it is evaluated on; ``"local"``: each organization tunes its own.
* **Local training** (:class:`HDPOLocalTrainer`): the organization's own scenario
  (:func:`fedinv.federation.private_data.load_org_scenario`: its nodes, its demand
  history, the lead times it observed; what it buys from other organizations is an
  external purchase at the transfer price, so its local cost includes those payments,
  which cancel in the network's cost). The base policy (the whole network's base kind,
  ``sS`` or ``base-stock``) is the server's, or tuned on it once; every round then runs
  ``local_iterations`` pathwise-gradient batches (:func:`fedinv.agents.hdpo.run_batch`,
  fresh training replications) from the global weights. Adam's state and the tuned base
  live in ``STATE_DIR/ORG/round-NNNN/``, so a restarted node continues where it stopped.
  FedProx adds ``mu/2 ||w - w_global||^2`` to every window's loss.
* **Aggregation**: as for the DQN (:func:`fedinv.federation.task.role_weighted_average`),
  each role's arrays weighted by the node-days the client simulated for that role.
* **Server side**: :func:`global_policy` puts the averaged networks on the whole network
  over the base tuned on the whole network (the server's reference, as its evaluation
  scenario is); :func:`global_evaluation` runs it
  exactly (numpy) on validation replications.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedinv.agents import hdpo
from fedinv.federation.config import (
    FedConfig,
    as_it_runs,
    federated_record,
    role_of_key,
    round_replications,
)
from fedinv.federation.private_data import load_org_scenario
from fedinv.federation.snapshots import RoundSnapshots
from fedinv.model.network import Scenario
from fedinv.policies.tuning import TuneResult
from fedinv.sim.run import mean_cost_per_day
from fedinv.sim.simulator import Simulator

STATE_FORMAT = "fedinv-fed-hdpo-client/1"


def hdpo_args(cfg: FedConfig, scenario: Scenario | None = None) -> hdpo.Args:
    """The HDPO settings of a federated run (the base kind is the whole network's)."""
    from fedinv.model.scenario import load_scenario

    whole = scenario or load_scenario(cfg.scenario)
    args = hdpo.Args(
        scenario=cfg.scenario,
        seed=cfg.seed,
        iterations=cfg.rounds * cfg.local_iterations,
        replications=cfg.replications,
        window=cfg.window if cfg.window > 0 else None,
        base=hdpo.base_policy_name(whole),
        hidden=tuple(cfg.hidden),
        learning_rate=cfg.hdpo_learning_rate,
        eval_replications=cfg.eval_replications,
        train_mode=cfg.train_mode,
        layer_gradient=cfg.layer_gradient,
        tune_replications=cfg.tune_replications,
        sweeps=cfg.tune_sweeps,
        transfers=cfg.transfers,
    )
    hdpo.check_transfers(args.transfers, whole)
    return args


def new_networks(cfg: FedConfig, roles: Sequence[str], outputs: int) -> hdpo.RolePolicyNetworks:
    """Freshly initialized role policy networks (a ``torch.Generator`` seeded ``cfg.seed``)."""
    from fedinv.agents.envs import observation_names

    return hdpo.RolePolicyNetworks(
        roles,
        len(observation_names(hdpo.Args().env)),
        outputs,
        tuple(cfg.hidden),
        generator=torch.Generator().manual_seed(cfg.seed),
    )


def outputs_of(scenario: Scenario) -> int:
    """Target changes per node of the whole network's base: 2 for (s,S), 1 otherwise."""
    return 2 if hdpo.base_policy_name(scenario) == "sS" else 1


def to_arrays(networks: hdpo.RolePolicyNetworks) -> dict[str, np.ndarray]:
    """The networks' weights and input statistics as named numpy arrays (what crosses the
    wire)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in networks.state_dict().items()}


def load_arrays(
    networks: hdpo.RolePolicyNetworks, arrays: Mapping[str, np.ndarray], roles: Sequence[str]
) -> None:
    """Set the parameters of ``roles`` from named arrays (others are left as they are)."""
    wanted = set(roles)
    state = networks.state_dict()
    for key, value in arrays.items():
        if role_of_key(key) in wanted:
            if key not in state or tuple(state[key].shape) != tuple(np.shape(value)):
                raise ValueError(f"global array {key!r} does not fit the local networks")
            state[key] = torch.as_tensor(np.asarray(value, dtype=np.float64))
    networks.load_state_dict(state)


class HDPOLocalTrainer(RoundSnapshots):
    """One organization's HDPO learner: its scenario, tuned base, networks and optimizer,
    with the state in ``state_dir`` (loaded if present, saved after every round). The
    same interface as :class:`fedinv.federation.task.LocalTrainer`."""

    def __init__(
        self,
        org_dir: str | Path,
        state_dir: str | Path,
        cfg: FedConfig,
        roles: Sequence[str],
        base: str | None = None,
    ):
        self.org_dir, self.cfg, self.base = Path(org_dir), cfg, base
        self.org = self.org_dir.name
        self.state_dir = Path(state_dir) / self.org
        self.scenario = load_org_scenario(self.org_dir)
        self.args = hdpo_args(cfg)
        self.roles = tuple(roles)
        self.sim = Simulator(self.scenario)
        self._policy: hdpo.HDPOPolicy | None = None
        self._optimizer: torch.optim.Optimizer | None = None

    # -- the policy: built on first use (tunes the base unless a saved tuning exists) -----

    def _build(self, tuned: TuneResult | None) -> None:
        if tuned is None and self.cfg.client_base == "server":
            if not self.base:
                raise ValueError(
                    "client-base = server, but the server sent no base (a ServerApp older "
                    "than this client?); set client-base = local to tune one here"
                )
            tuned = local_base(self.base, self.scenario, self.args)
        policy, tuned = hdpo.initial_policy(self.args, self.scenario, tuned)
        self._tuned = tuned
        self.local_roles = tuple(sorted(set(policy.roles)))
        self._policy = policy
        self._optimizer = torch.optim.Adam(policy.networks.parameters(), lr=self.args.learning_rate)

    # -- persistence: one snapshot per round ---------------------------------------------

    def load_before(self, server_round: int) -> int:
        """Load the newest state saved before ``server_round`` (or build afresh); returns
        its round, 0 if none."""
        last = self._last_before(server_round)
        if not last:
            self._build(None)
            return 0
        folder = self._snapshot(last)
        data = torch.load(folder / "learner.pt", map_location="cpu", weights_only=False)
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"{folder}: not a fedinv HDPO client state")
        self._build(data["tuned"])
        assert self._policy is not None and self._optimizer is not None
        self._policy.networks.load_state_dict(data["networks"])
        self._optimizer.load_state_dict(data["optimizer"])
        return last

    def save(self, server_round: int, keep: int = 2) -> None:
        """Write the networks, optimizer and tuned base of the end of ``server_round`` (a
        folder made complete before it is renamed into place); keep the last ``keep``."""
        assert self._policy is not None and self._optimizer is not None
        state = {
            "format": STATE_FORMAT,
            "networks": self._policy.networks.state_dict(),
            "optimizer": self._optimizer.state_dict(),
            "tuned": self._tuned,
        }
        base = json.dumps({"policy": self._policy.base.policy, "params": self._tuned.params})

        def write(folder: Path) -> None:
            torch.save(state, folder / "learner.pt")
            (folder / "base.json").write_text(base)

        self._write_snapshot(server_round, write, keep)

    # -- one round -----------------------------------------------------------------------

    def train_round(
        self, global_arrays: Mapping[str, np.ndarray], server_round: int
    ) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, float]]:
        """``local_iterations`` gradient batches from the global weights. Returns the
        weights (every global array; the roles this organization does not have are sent
        back unchanged), the node-days simulated per role, and scalar metrics."""
        from fedinv.agents.dqn import torch_globals

        cfg, args = self.cfg, self.args
        started = time.perf_counter()
        self.load_before(server_round)
        policy, optimizer = self._policy, self._optimizer
        assert policy is not None and optimizer is not None
        load_arrays(policy.networks, global_arrays, self.local_roles)
        torch_globals(cfg.seed, threads=1)
        mu = cfg.proximal_mu if cfg.strategy == "fedprox" else 0.0
        anchor = [p.detach().clone() for p in policy.networks.parameters()]
        scale = max(float(self._tuned.train_cost_per_day), 1e-9)
        losses = [
            hdpo.training_batch(
                policy,
                self.sim,
                optimizer,
                args,
                (server_round - 1) * cfg.local_iterations + i + 1,  # the federation's batch
                scale,
                proximal=(mu, anchor),
            )
            for i in range(cfg.local_iterations)
        ]
        self.save(server_round)
        days = cfg.local_iterations * args.replications * self.sim.days
        collected = {
            role: float(days * sum(r == role for r in policy.roles)) for role in self.local_roles
        }
        weights = {k: np.array(v, copy=True) for k, v in global_arrays.items()}
        weights.update({k: v for k, v in to_arrays(policy.networks).items() if k in global_arrays})
        metrics = {
            "num-examples": float(sum(collected.values())),
            "train-cost-per-day": float(np.mean(losses)),
            "train-seconds": time.perf_counter() - started,
            "simulated-days": float(days),
        }
        return weights, collected, metrics

    def evaluate(
        self, arrays: Mapping[str, np.ndarray], replications: int, days: int
    ) -> dict[str, float]:
        """Exact cost per day of the global weights on the organization's own scenario
        (validation replications, :func:`fedinv.federation.config.round_replications`),
        over its own base and input statistics; with ``train_mode = "hybrid"`` through
        the organization's safety layer (:func:`fedinv.federation.config.as_it_runs`)."""
        if self._policy is None:
            self.load_before(10**9)
        assert self._policy is not None
        policy = copy.deepcopy(self._policy)
        load_arrays(policy.networks, arrays, self.local_roles)
        days = min(days, self.scenario.horizon_days)
        sim = Simulator(self.scenario, days=days)
        cost = mean_cost_per_day(
            sim, as_it_runs(policy, sim, self.cfg), round_replications(replications)
        )
        return {
            "num-examples": float(replications * days),
            "local-cost-per-day": float(cost.mean()),
        }


# -- the server's side -------------------------------------------------------------------


_SERVER_POLICIES: dict[str, tuple[hdpo.HDPOPolicy, TuneResult]] = {}
"""The server's untrained whole-network policy and its base's tuning per run
configuration (tuned once)."""


def _server_start(scenario: Scenario, cfg: FedConfig) -> tuple[hdpo.HDPOPolicy, TuneResult]:
    """The untrained policy on the whole network and its base's tuning (tuned once per
    process, or read from ``cfg.server_base``)."""
    key = json.dumps([scenario.name, scenario.source, cfg.to_flat()], sort_keys=True, default=str)
    if key not in _SERVER_POLICIES:
        args = hdpo_args(cfg, scenario)
        tuned = server_base_tuning(cfg, scenario, args) if cfg.server_base else None
        _SERVER_POLICIES[key] = hdpo.initial_policy(args, scenario, tuned)
    return _SERVER_POLICIES[key]


def _server_policy(scenario: Scenario, cfg: FedConfig) -> hdpo.HDPOPolicy:
    """The untrained policy on the whole network (its base tuned once per process)."""
    return _server_start(scenario, cfg)[0]


def base_message(scenario: Scenario, cfg: FedConfig) -> str:
    """What the server sends every organization of its base (``FedConfig.client_base =
    "server"``): JSON with the base policy, the mode it was tuned in and its search
    coordinates (per tier: no node's figure, nothing of any organization's data)."""
    tuned = _server_start(scenario, cfg)[1]
    return json.dumps(
        {"policy": tuned.policy, "mode": tuned.mode, "coordinates": tuned.coordinates},
        sort_keys=True,
    )


def local_base(message: str, scenario: Scenario, args: hdpo.Args) -> TuneResult:
    """The server's base (:func:`base_message`) on an organization's own scenario: its
    coordinates turned into the organization's per-node parameters with its own demand
    and lead-time statistics -- or, where the message carries ``params`` per node (a
    checkpoint's own base, :func:`checkpoint_base_message`), those of the
    organization's nodes as they are -- and their cost per day on its training
    replications (one evaluation; the loss scale). ValueError if it is not the base
    this run trains on."""
    from fedinv.policies.tuning import TRAIN_BASE, params_cost, tune

    try:
        data = json.loads(message)
        policy, mode = data["policy"], data["mode"]
        coords, params = dict(data.get("coordinates", {})), data.get("params")
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"the server's base is not a base message: {exc}") from None
    want = hdpo.base_policy_name(scenario) if args.base == "auto" else args.base
    if (policy, mode) != (want, args.train_mode):
        raise ValueError(
            f"the server's base is {policy!r} tuned {mode}; this organization trains on "
            f"{want!r} tuned {args.train_mode}"
        )
    days = scenario.horizon_days
    if params is None:
        return tune(
            scenario,
            policy,
            train_replications=args.tune_replications,
            days=days,
            sweeps=0,
            mode=mode,
            start=coords,
        )
    sim = Simulator(scenario, days=days)
    nodes = list(sim.layout.node_ids)  # params: {parameter: {node: value}}
    missing = [n for n in nodes if not any(n in table for table in params.values())]
    if missing:
        raise ValueError(f"the base message has no parameters for node(s) {', '.join(missing)}")
    own = {key: {n: table[n] for n in nodes if n in table} for key, table in params.items()}
    reps = range(TRAIN_BASE, TRAIN_BASE + args.tune_replications)
    exo = sim.reset(reps)[1]
    cost = params_cost(sim, policy, own, exo, mode=mode)
    return TuneResult(policy, own, {}, cost, 1, args.tune_replications, sim.days, [], mode)


def checkpoint_base_message(data: Mapping[str, Any], mode: str) -> str:
    """A base message (:func:`local_base`) carrying a loaded HDPO checkpoint's own base:
    its policy and per-node parameters, tuned in ``mode``."""
    base = data["base"]
    return json.dumps(
        {"policy": base["policy"], "mode": mode, "params": base["params"]}, sort_keys=True
    )


def server_base_tuning(cfg: FedConfig, scenario: Scenario, args: hdpo.Args) -> TuneResult:
    """The whole network's base tuning read from ``cfg.server_base``; ValueError naming
    the file and the field unless it is the tuning the server would have run (the base
    policy, mode, replications and days, one coordinate per tier)."""
    path = Path(cfg.server_base)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"server-base {path}: cannot read a tuning: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"server-base {path}: expected a JSON object")
    tuned = TuneResult.from_dict(data, f"server-base {path}")
    name = hdpo.base_policy_name(scenario) if args.base == "auto" else args.base
    want = {
        "policy": name,
        "mode": args.train_mode,
        "train_replications": args.tune_replications,
        "days": scenario.horizon_days,
        "per": "tier",
    }
    for field_name, value in want.items():
        if getattr(tuned, field_name) != value:
            raise ValueError(
                f"server-base {path}: field {field_name!r} is {getattr(tuned, field_name)!r}, "
                f"this run tunes its base with {value!r}"
            )
    return tuned


def global_policy(
    scenario: Scenario, arrays: Mapping[str, np.ndarray], cfg: FedConfig
) -> hdpo.HDPOPolicy:
    """The global networks on the whole network, over the base tuned on it (tuned once
    per server process)."""
    policy = copy.deepcopy(_server_policy(scenario, cfg))
    load_arrays(policy.networks, arrays, sorted({role_of_key(k) for k in arrays}))
    return policy


def initial_arrays(cfg: FedConfig, scenario: Scenario) -> dict[str, np.ndarray]:
    """The starting global weights (zero last layers: every client starts at its base)
    and the input statistics every holder uses, from the server's base-policy run on the
    whole network."""
    return to_arrays(_server_policy(scenario, cfg).networks)


def save_global_checkpoint(
    path: str | Path,
    scenario: Scenario,
    arrays: Mapping[str, np.ndarray],
    cfg: FedConfig,
    server_round: int,
    metrics: Mapping[str, float],
) -> Path:
    """A checkpoint of the global policy on the whole network (loadable by ``fedinv
    simulate --policy hdpo --checkpoint``), trained by the federation up to
    ``server_round``."""
    from fedinv.agents.checkpoints import write_hdpo_checkpoint

    policy = global_policy(scenario, arrays, cfg)
    return write_hdpo_checkpoint(
        path,
        policy,
        scenario=scenario.name,
        args=hdpo_args(cfg, scenario),
        federated=federated_record(cfg, server_round, metrics),
    )


def global_arrays_of(data: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The wire arrays of a loaded HDPO checkpoint's networks."""
    return {
        k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
        for k, v in data["policy_state"].items()
    }
