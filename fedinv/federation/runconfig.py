"""The Flower run config of a federated training: one source for its defaults.

A run's config is flat, with hyphenated keys (Flower's convention): the training keys are
:class:`fedinv.federation.task.FedConfig`'s fields (:meth:`FedConfig.to_flat`), the
server's are :data:`SERVER_DEFAULTS`, and the run folder's paths are
:data:`PATH_KEYS`. ``pyproject.toml``'s ``[tool.flwr.app.config]`` (the defaults of a bare
``flwr run .``) must equal these; a test checks it. The command-line options of
``fedinv federate`` and ``fedinv deploy`` are generated from the same fields
(:mod:`fedinv.cli.training`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedinv.errors import FederationError

SERVER_DEFAULTS: dict[str, Any] = {
    "fraction-train": 1.0,
    "fraction-evaluate": 1.0,
    "min-train-nodes": 2,
    "min-evaluate-nodes": 2,
    "min-available-nodes": 2,
    "round-timeout": 600.0,
    "eval-in-train": True,
    "pull-interval": 0.1,
    "fail-org": "",
    "dp-noise-multiplier": 0.0,
    "dp-clipping-norm": 1.0,
    "dp-sampled-clients": 0,
}
"""Keys the ServerApp (and the fault injection of the ClientApp) read beside FedConfig's:
fractions and minimum node counts of a round, a round's reply timeout (s), fat rounds
(the clients' evaluation of the weights they receive in their train reply, no separate
evaluate exchange but after the last round), the seconds between two pulls of a
round's replies, an
organization whose client raises (tests), and server-side fixed-clipping differential
privacy (noise multiplier 0: off; clipping norm; sampled clients 0: every organization)."""
PATH_KEYS: dict[str, str] = {
    "data-dir": "runs/federated/data",
    "state-dir": "runs/federated/clients",
    "run-dir": "runs/federated",
}
"""Where a run reads private data and writes client state and results (a bare
``flwr run .`` uses these; ``fedinv federate`` sets them to its run folder)."""
FEDPROX_MU = 0.1
"""The proximal weight the command line uses with ``--strategy fedprox`` unless ``--mu``
is given (FedConfig's own default, 0, is FedAvg's)."""


def toml_value(value: Any) -> str:
    """A run-config value as Flower's ``--run-config`` parser reads it (TOML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def run_config_text(config: Mapping[str, Any]) -> str:
    """``KEY=VALUE KEY=VALUE ...`` for ``flwr run --run-config``."""
    return " ".join(f"{k}={toml_value(v)}" for k, v in config.items())


def app_dir() -> Path:
    """The Flower app: this checkout's root (its pyproject.toml has ``[tool.flwr.app]``)."""
    root = Path(__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file() or "[tool.flwr.app]" not in pyproject.read_text():
        raise FederationError(
            f"no Flower app found at {root}: fedinv federate runs from a source checkout "
            "(pip install -e .), whose pyproject.toml declares [tool.flwr.app]"
        )
    return root
