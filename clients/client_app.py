"""Flower ClientApp: one client per organization, training on its own data folder.

A thin adapter (Flower's example-app split): the work is in :mod:`fedinv.federation.task`.
What it sends back is only the model's arrays and scalar metrics.

Where a node's data is:
  * deployment (one SuperNode per organization): ``--node-config "data-dir=PATH"``
    (the organization's folder, as ``fedinv data export`` writes it) and optionally
    ``state-dir=PATH`` (default ``PATH/../.fedinv-state``); the state of a run goes into
    ``STATE/RUN-HASH/`` (the run folder's name and a hash of its path on the coordinator),
    so a resumed run finds it again and two runs never share a replay buffer;
  * simulation: the run config's ``data-dir`` holds one folder per organization; the
    simulated node ``partition-id`` k takes the k-th folder in sorted order, and its state
    goes under the run config's ``state-dir``.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedinv.federation.task import FedConfig, make_trainer, role_of_key, roles_of
from fedinv.model.scenario import load_scenario

app = ClientApp()


def _locate(context: Context) -> tuple[Path, Path]:
    """This node's data folder and state folder."""
    node = context.node_config
    if "data-dir" in node:
        data = Path(str(node["data-dir"]))
        state = Path(str(node.get("state-dir", data.parent / ".fedinv-state")))
        return data, state / run_key(str(context.run_config.get("run-dir", "")))
    run = context.run_config
    root = Path(str(run["data-dir"]))
    orgs = sorted(p for p in root.iterdir() if (p / "scenario.toml").is_file())
    k = int(node["partition-id"])
    if k >= len(orgs):
        raise RuntimeError(
            f"partition {k} has no organization folder in {root} ({len(orgs)} found)"
        )
    return orgs[k], Path(str(run["state-dir"]))


def run_key(run_dir: str) -> str:
    """A deployed run's folder on a node: the run folder's name and a short hash of its
    full path on the coordinator."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(run_dir).name) or "run"
    return f"{name}-{hashlib.sha256(run_dir.encode()).hexdigest()[:8]}"


def _roles(cfg: FedConfig, msg: Message) -> tuple[str, ...]:
    """The roles of the global model, from the names of the arrays the server sent (a node
    need not have the whole network's scenario file); from the scenario otherwise."""
    found = (
        [role_of_key(k) for k in msg.content["arrays"].keys()] if "arrays" in msg.content else []
    )
    roles = tuple(dict.fromkeys(r for r in found if r))
    return roles or roles_of(load_scenario(cfg.scenario))


def _trainer(context: Context, msg: Message) -> tuple[Any, FedConfig, tuple]:
    cfg = FedConfig.from_flat(context.run_config)
    sent = msg.content["config"]  # the server's values win over the run config
    if "reward-scale" in sent:
        cfg.reward_scale = float(sent["reward-scale"])
    if "proximal-mu" in sent:
        cfg.strategy, cfg.proximal_mu = "fedprox", float(sent["proximal-mu"])
    data, state = _locate(context)
    fail = str(context.run_config.get("fail-org", ""))
    if fail and data.name == fail:  # fault injection for tests: this organization raises
        raise RuntimeError(f"fault injected for organization {fail!r}")
    roles = _roles(cfg, msg)
    return make_trainer(data, state, cfg, roles), cfg, roles


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Local training (DQN or HDPO) from the global weights; replies weights and metrics."""
    trainer, _, roles = _trainer(context, msg)
    arrays = msg.content["arrays"].to_numpy_ndarrays()
    keys = list(msg.content["arrays"].keys())
    server_round = int(msg.content["config"]["server-round"]) + int(
        msg.content["config"].get("round-offset", 0)
    )
    weights, collected, metrics = trainer.train_round(
        dict(zip(keys, arrays, strict=True)), server_round
    )
    # every client reports every role (the server needs the same keys from all)
    metrics.update({f"examples-{role}": float(collected.get(role, 0.0)) for role in roles})
    reply = RecordDict(
        {
            "arrays": ArrayRecord({k: _array(v) for k, v in weights.items()}),
            "metrics": MetricRecord(metrics),
        }
    )
    return Message(content=reply, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """The global weights' cost on this organization's held-out replications."""
    trainer, cfg, _ = _trainer(context, msg)
    arrays = msg.content["arrays"]
    weights = dict(zip(arrays.keys(), arrays.to_numpy_ndarrays(), strict=True))
    metrics = trainer.evaluate(weights, cfg.eval_replications, cfg.eval_days)
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)


def _array(value):
    from flwr.app import Array

    return Array(value)
