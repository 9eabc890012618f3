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
import shutil
import tomllib
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


def staged_app(folder: str | Path) -> Path:
    """A copy, in ``folder`` (replaced), of what the Flower app's FAB carries: the folders
    named by ``[tool.flwr.app] fab-include`` in pyproject.toml (patterns ``NAME/**``),
    pyproject.toml and .gitignore. ``flwr run`` is given this copy rather than the
    checkout because Flower's FAB builder lists every file under the app folder before
    it filters -- a checkout's ``.venv/`` and ``runs/`` included, ~50,000 files and 7.6 s
    of CPU per run on this repository's own checkout -- while the copy holds ~110; the
    FAB built from it is byte for byte the checkout's (tests/test_fab.py). Without
    ``fab-include``: the checkout itself."""
    root = app_dir()
    pyproject = root / "pyproject.toml"
    include = tomllib.loads(pyproject.read_text())["tool"]["flwr"]["app"].get("fab-include")
    if not include:
        return root
    tops = []
    for pattern in include:
        top, _, rest = str(pattern).partition("/")
        if rest != "**" or not (root / top).is_dir():
            raise FederationError(
                f"{pyproject}: [tool.flwr.app] fab-include: expected patterns 'FOLDER/**' "
                f"naming folders of the app, got {pattern!r}"
            )
        tops.append(top)
    dest = Path(folder)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for top in tops:
        shutil.copytree(root / top, dest / top, ignore=skip)
    for name in ("pyproject.toml", ".gitignore"):
        if (root / name).is_file():
            shutil.copy2(root / name, dest / name)
    return dest
