"""The trained policy's file: one writer and one reader for ``fedinv train`` and the
federation (docs/agents.md, "Checkpoints").

A checkpoint is one ``torch.save`` file of plain types and tensors (readable with
``torch.load(weights_only=True)``), written atomically (:func:`fedinv.files.atomic_write`).
Two kinds, told apart by the ``format`` tag: a DQN's (:data:`FORMAT`) and an HDPO
policy's (:data:`HDPO_FORMAT`, :func:`write_hdpo_checkpoint`). A DQN checkpoint holds:

* **arrays**: ``policy_state``, the role Q-networks' weights, and what rebuilds them
  (``roles``, ``obs_size``, ``num_actions``, ``hidden``, ``dueling``, ``share``);
* **config**: ``scenario`` (its name), ``args`` (all of :class:`fedinv.agents.dqn.Args`)
  and ``env_config`` (:class:`fedinv.agents.envs.EnvConfig`);
* **how it was trained**: by ``fedinv train``, ``best_step`` (the validation run the
  weights come from), ``cost_scale`` and ``learner_state`` (online and target weights,
  Adam state, update count at the end); by a federation, ``federated`` (the round, the
  federation's config, the round's metrics);
* **versions**: ``versions`` (fedinv, torch, numpy, python) and the ``format`` tag.

An HDPO checkpoint holds the role policy networks' weights (``policy_state``, input
statistics included) and what rebuilds them (``roles``, ``obs_size``, ``outputs``,
``hidden``, ``share``, ``max_change``), the base policy (``base``: its name and per-node
parameters), the config (``scenario``, ``args`` = all of :class:`fedinv.agents.hdpo.Args`,
``env_config``), how it was trained (``best_iteration``, ``final_state`` and
``optimizer_state`` at the end, ``budget``: simulated days of training and of the base's
tuning, wall seconds; or ``federated``) and ``versions``.

:func:`load_checkpoint` raises :class:`CheckpointError`, naming the file, when it is
missing, unreadable or not of the expected kind.
"""

from __future__ import annotations

import dataclasses
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedinv.agents import hdpo
from fedinv.agents.dqn import Args, DQNPolicy, RoleQNetworks, TrainResult
from fedinv.agents.envs import EnvConfig, observation_layout
from fedinv.files import atomic_write
from fedinv.model.layout import Layout

FORMAT = "fedinv-dqn/1"
"""The format tag of a DQN checkpoint (bumped, with a message for older files, if a key
changes meaning)."""
HDPO_FORMAT = "fedinv-hdpo/1"
"""The format tag of an HDPO checkpoint."""
FORMATS = {"dqn": FORMAT, "hdpo": HDPO_FORMAT}
"""The format tag of each learned policy's checkpoint."""


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable or not a fedinv checkpoint of the
    expected kind."""


# -- writing -----------------------------------------------------------------------------


def write_checkpoint(
    path: str | Path,
    q_network: RoleQNetworks,
    *,
    scenario: str,
    args: Args,
    best_step: int | None = None,
    cost_scale: float | None = None,
    learner_state: Mapping[str, Any] | None = None,
    federated: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``q_network``'s weights with the config that made them (``args``, whose
    ``env`` is the environment config) and how they were trained: ``best_step``,
    ``cost_scale`` and ``learner_state`` for ``fedinv train``, ``federated`` (round,
    config, metrics) for a federation. Returns ``path``."""
    payload: dict[str, Any] = {
        "format": FORMAT,
        "algo": "dqn",
        "scenario": str(scenario),
        "args": plain(dataclasses.asdict(args)),
        "env_config": plain(args.env.to_dict()),
        "observation_layout": observation_layout(args.env),
        "roles": list(q_network.roles),
        "obs_size": int(q_network.obs_size),
        "num_actions": int(q_network.num_actions),
        "hidden": list(q_network.hidden),
        "dueling": bool(q_network.dueling),
        "share": str(args.share),
        "policy_state": q_network.state_dict(),
    }
    if learner_state is not None:
        payload["learner_state"] = dict(learner_state)
    if best_step is not None:
        payload["best_step"] = int(best_step)
    if cost_scale is not None:
        payload["cost_scale"] = float(cost_scale)
    if federated is not None:
        payload["federated"] = plain(dict(federated))
    payload["versions"] = versions()
    path = Path(path)
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
    return path


def write_hdpo_checkpoint(
    path: str | Path,
    policy: hdpo.HDPOPolicy,
    *,
    scenario: str,
    args: hdpo.Args,
    best_iteration: int | None = None,
    final_state: Mapping[str, Any] | None = None,
    optimizer_state: Mapping[str, Any] | None = None,
    budget: Mapping[str, Any] | None = None,
    federated: Mapping[str, Any] | None = None,
) -> Path:
    """Write an HDPO ``policy`` (its networks' weights and its base) with the config that
    made it and how it was trained (see the module doc). Returns ``path``."""
    nets = policy.networks
    payload: dict[str, Any] = {
        "format": HDPO_FORMAT,
        "algo": "hdpo",
        "scenario": str(scenario),
        "args": plain(dataclasses.asdict(args)),
        "env_config": plain(args.env.to_dict()),
        "observation_layout": observation_layout(args.env),
        "roles": list(nets.roles),
        "obs_size": int(nets.obs_size),
        "outputs": int(nets.outputs),
        "hidden": list(nets.hidden),
        "share": str(policy.share),
        "max_change": float(policy.max_change),
        "transfers": bool(policy.proposes_transfers),
        "base": {"policy": policy.base.policy, "params": plain(policy.base.params)},
        "policy_state": nets.state_dict(),
    }
    optional = {
        "best_iteration": None if best_iteration is None else int(best_iteration),
        "final_state": None if final_state is None else dict(final_state),
        "optimizer_state": None if optimizer_state is None else dict(optimizer_state),
        "budget": None if budget is None else plain(dict(budget)),
        "federated": None if federated is None else plain(dict(federated)),
    }
    payload |= {k: v for k, v in optional.items() if v is not None}
    payload["versions"] = versions()
    path = Path(path)
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
    return path


def save_checkpoint(path: str | Path, result: TrainResult | hdpo.TrainResult) -> Path:
    """The checkpoint of a ``fedinv train`` run: the selected weights, the learner's final
    state and the config (a DQN's or an HDPO policy's)."""
    if isinstance(result, hdpo.TrainResult):
        return write_hdpo_checkpoint(
            path,
            result.policy,
            scenario=result.scenario.name,
            args=result.args,
            best_iteration=result.best_iteration,
            final_state=result.final_state,
            optimizer_state=result.optimizer_state,
            budget=result.budget(),
        )
    return write_checkpoint(
        path,
        result.policy.q_network,
        scenario=result.scenario.name,
        args=result.args,
        best_step=result.best_step,
        cost_scale=result.cost_scale,
        learner_state=result.learner.state_dict(),
    )


def versions() -> dict[str, str]:
    """The versions of the software that wrote a checkpoint."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        fedinv = version("fedinv")
    except PackageNotFoundError:
        fedinv = "unknown"
    return {
        "fedinv": fedinv,
        "torch": str(torch.__version__),
        "numpy": str(np.__version__),
        "python": platform.python_version(),
    }


def plain(obj: Any) -> Any:
    """Lists for tuples, recursively (what ``torch.load(weights_only=True)`` reads)."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    return obj


# -- reading -----------------------------------------------------------------------------


def load_checkpoint(path: str | Path, algo: str = "dqn") -> dict[str, Any]:
    """Read a checkpoint of learned policy ``algo`` (``dqn`` or ``hdpo``;
    :class:`CheckpointError`, naming the file, if it is missing or not one)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r}: no such file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds on a corrupt file
        raise CheckpointError(
            f"checkpoint {str(path)!r}: cannot be read ({type(exc).__name__}: {exc})"
        ) from None
    expected = FORMATS[algo]
    if not isinstance(data, dict) or data.get("format") != expected:
        found = data.get("format") if isinstance(data, dict) else None
        other = [a for a, f in FORMATS.items() if f == found]
        if other:
            raise CheckpointError(
                f"checkpoint {str(path)!r} is a fedinv {other[0].upper()} checkpoint "
                f"(format {found!r}), not a {algo.upper()} one: use --policy {other[0]}"
            )
        raise CheckpointError(
            f"checkpoint {str(path)!r}: not a fedinv {algo.upper()} checkpoint "
            f"(expected format {expected!r}"
            + (f", found {found!r}: written by another fedinv version" if found else "")
            + ")"
        )
    return data


def load_policy(path: str | Path, layout: Layout, algo: str = "dqn") -> DQNPolicy | hdpo.HDPOPolicy:
    """The trained policy of a checkpoint of ``algo`` (a :class:`DQNPolicy` or an
    :class:`fedinv.agents.hdpo.HDPOPolicy`), acting on ``layout`` (the network it was
    trained on, or any whose node roles it has a network for)."""
    return policy_from_checkpoint(load_checkpoint(path, algo), layout, path)


LEGACY_LAYOUT = "fedinv-obs/1"
"""The layout of checkpoints written before layouts were recorded."""


def check_layout(data: Mapping[str, Any], path: str | Path = "checkpoint") -> None:
    """Refuse (:class:`CheckpointError`, naming both versions) a checkpoint whose
    observation layout is not the one this fedinv builds for its ``env_config``."""
    try:
        config = EnvConfig.from_dict(data["env_config"])
    except (KeyError, TypeError) as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r}: inconsistent contents ({type(exc).__name__}: {exc})"
        ) from None
    written = str(data.get("observation_layout", LEGACY_LAYOUT))
    expected = observation_layout(config)
    if written != expected:
        raise CheckpointError(
            f"checkpoint {str(path)!r} was trained on observation layout {written!r}; "
            f"this fedinv builds {expected!r} for its settings: retrain it (the "
            "networks would misread the observations)"
        )


def policy_from_checkpoint(
    data: Mapping[str, Any], layout: Layout, path: str | Path = "checkpoint"
) -> DQNPolicy | hdpo.HDPOPolicy:
    """:func:`load_policy` from the contents :func:`load_checkpoint` returned (a DQN or
    an HDPO policy, by the format tag); refused if its observation layout differs
    (:func:`check_layout`)."""
    check_layout(data, path)
    if data.get("format") == HDPO_FORMAT:
        return _hdpo_policy(data, layout, path)
    try:
        config = EnvConfig.from_dict(data["env_config"])
        q = RoleQNetworks(
            data["roles"],
            int(data["obs_size"]),
            int(data["num_actions"]),
            tuple(data["hidden"]),
            bool(data.get("dueling", False)),
        )
        q.load_state_dict(data["policy_state"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r}: inconsistent contents ({type(exc).__name__}: {exc})"
        ) from None
    q.eval()
    try:
        return DQNPolicy(layout, q, config, str(data.get("share", "tier")))
    except ValueError as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not fit this network: {exc}"
        ) from None


def _hdpo_policy(data: Mapping[str, Any], layout: Layout, path: str | Path) -> hdpo.HDPOPolicy:
    try:
        config = EnvConfig.from_dict(data["env_config"])
        nets = hdpo.RolePolicyNetworks(
            data["roles"], int(data["obs_size"]), int(data["outputs"]), tuple(data["hidden"])
        )
        nets.load_state_dict(data["policy_state"])
        base = data["base"]
        policy, params = str(base["policy"]), dict(base["params"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r}: inconsistent contents ({type(exc).__name__}: {exc})"
        ) from None
    nets.eval()
    try:
        return hdpo.HDPOPolicy(
            layout,
            nets,
            hdpo.Base.from_params(policy, layout, params),
            config,
            str(data.get("share", "tier")),
            float(data.get("max_change", hdpo.Args().max_change)),
            bool(data.get("transfers", False)),
        )
    except ValueError as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not fit this network: {exc}"
        ) from None


def hdpo_args_from_checkpoint(data: Mapping[str, Any]) -> hdpo.Args:
    """The :class:`fedinv.agents.hdpo.Args` saved in an HDPO checkpoint (files written
    while ``cost_of_goods`` was a flag read ``True`` as ``before-last``; files written
    before ``layer_gradient`` existed were trained, and load, with ``penalty``; those
    written before ``average`` existed, with 0: no weight averaging)."""
    raw = dict(data["args"])
    raw.setdefault("layer_gradient", "penalty")
    raw.setdefault("average", 0.0)
    raw["env"] = EnvConfig.from_dict(raw.get("env", {}))
    for key in ("hidden", "trigger_temperature", "order_temperature"):
        if key in raw:
            raw[key] = tuple(raw[key])
    if isinstance(raw.get("cost_of_goods"), bool):
        raw["cost_of_goods"] = "before-last" if raw["cost_of_goods"] else "none"
    return hdpo.Args(**raw)


def weights_from_checkpoint(data: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The policy's weights as named numpy arrays (what a federation exchanges)."""
    return {k: v.numpy() for k, v in data["policy_state"].items()}


def args_from_checkpoint(data: Mapping[str, Any]) -> Args:
    """The :class:`Args` saved in a checkpoint."""
    raw = dict(data["args"])
    raw["env"] = EnvConfig.from_dict(raw.get("env", {}))
    raw["hidden"] = tuple(raw.get("hidden", (64, 64)))
    return Args(**raw)
