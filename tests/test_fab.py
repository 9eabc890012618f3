"""The FAB (Flower App Bundle) that ``flwr run`` ships, built with Flower's own builder
from this checkout: it carries every module the ServerApp and the ClientApp import and
the files they read (the built-in scenarios), and not docs/, studies/, tests/ or
README.md (``fab-include`` in pyproject.toml; docs/deployment.md, "What the FAB
carries"). Flower's ClientApp re-extracts and re-hashes the whole FAB for every message.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_disk
from flwr.cli.install import install_from_fab
from test_architecture import import_graph

from fedinv.errors import FederationError
from fedinv.federation.runconfig import app_dir, staged_app

ROOT = app_dir()
FLWR_APP = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
COMPONENTS = FLWR_APP["components"]
REFS = (COMPONENTS["serverapp"], COMPONENTS["clientapp"])
"""``server.server_app:app`` and ``clients.client_app:app``: what Flower loads."""
APPS = tuple(ref.partition(":")[0] for ref in REFS)
FAB_MAX_BYTES = 3 * 2**19
"""1.5 MiB, the bound docs/deployment.md documents (1.17 MiB in December 2026; 1.75 MiB
with docs/ and studies/ in it). A FAB past it carries something it should not, or the
packages grew: look at what, then raise the bound deliberately."""
NOT_SHIPPED = (
    "README.md",
    "docs/deployment.md",
    "docs/architecture.md",
    "docs/results/README.md",
    "studies/runner.py",
    "studies/definitions/quick.toml",
    "tests/conftest.py",
    "tests/test_fab.py",
)
"""Files of the checkout that the ServerApp and ClientApp never import or read."""


@pytest.fixture(scope="module")
def fab() -> bytes:
    return build_fab_from_disk(ROOT)  # what `flwr run ROOT` sends to the SuperLink


def _names(fab: bytes) -> set[str]:
    return set(zipfile.ZipFile(io.BytesIO(fab)).namelist())


def app_closure() -> set[str]:
    """Every project module the two apps can import: the import graph of
    tests/test_architecture.py (function-level imports counted) from ``APPS``, with the
    packages each module sits in (importing ``a.b.c`` runs ``a`` and ``a.b``)."""
    graph, _ = import_graph()
    seen: set[str] = set()
    todo = list(APPS)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in graph]
        todo += sorted(graph[module])
    return seen


def _source(module: str) -> str:
    """The FAB entry of ``module``'s source file."""
    rel = Path(*module.split("."))
    return (rel / "__init__.py" if (ROOT / rel).is_dir() else rel.with_suffix(".py")).as_posix()


def test_the_fab_carries_every_module_the_apps_import(fab: bytes) -> None:
    names = _names(fab)
    closure = app_closure()
    assert {"server.strategy", "fedinv.hybrid", "solvers.projection"} <= closure
    missing = sorted(_source(m) for m in closure if _source(m) not in names)
    assert missing == []
    # What they read at run time: the built-in scenarios (fedinv.model.scenario reads
    # them as package resources) and the app's own pyproject.toml.
    scenarios = sorted(
        p.relative_to(ROOT).as_posix() for p in (ROOT / "fedinv/model/scenarios").glob("*.toml")
    )
    assert "fedinv/model/scenarios/electronics-5r.toml" in scenarios
    assert set(scenarios) <= names
    assert "pyproject.toml" in names


def test_the_fab_leaves_out_docs_studies_and_tests(fab: bytes) -> None:
    names = _names(fab)
    for name in NOT_SHIPPED:
        assert (ROOT / name).is_file(), name  # the checkout has it ...
        assert name not in names, name  # ... the FAB does not
    tops = {n.split("/")[0] for n in names}
    assert tops == {".info", "pyproject.toml", "fedinv", "solvers", "clients", "server"}
    assert len(fab) < FAB_MAX_BYTES


def test_the_installed_fab_alone_serves_both_apps(fab: bytes, tmp_path: Path) -> None:
    """Flower's install_from_fab and load_app (what the ClientApp and ServerApp
    processes run) in a fresh interpreter: every project module comes from the
    installed FAB, none from this checkout or an installed fedinv (which would hide a
    module missing from the FAB)."""
    app = install_from_fab(fab, tmp_path / "home", skip_prompt=True)
    probe = (
        "import json, sys\n"
        "from flwr.supercore.object_ref import load_app\n"
        f"for ref in {list(REFS)!r}:\n"
        f"    load_app(ref, RuntimeError, {str(app)!r})\n"
        "print(json.dumps({n: getattr(m, '__file__', None) for n, m in sys.modules.items()"
        f" if n.split('.')[0] in {sorted({m.split('.')[0] for m in app_closure()})!r}}}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(APPS) <= set(loaded)
    outside = {n: f for n, f in loaded.items() if f and not Path(f).is_relative_to(app)}
    assert outside == {}


def test_the_staged_app_builds_the_same_fab(fab: bytes, tmp_path: Path, monkeypatch) -> None:
    """``flwr run`` gets :func:`staged_app`'s copy (Flower's builder then walks ~110
    files, not the checkout's .venv/ and runs/): the FAB built from it is the
    checkout's, byte for byte; staging again replaces the copy; a fab-include pattern
    the copy cannot honour is refused naming pyproject.toml."""
    stage = staged_app(tmp_path / "app")
    (stage / "stale.py").write_text("x = 1\n")
    assert staged_app(tmp_path / "app") == stage and not (stage / "stale.py").exists()
    assert build_fab_from_disk(stage) == fab
    assert not list(stage.rglob("__pycache__"))
    bad = tmp_path / "bad"
    shutil.copytree(stage, bad)
    text = (bad / "pyproject.toml").read_text()
    (bad / "pyproject.toml").write_text(text.replace('"server/**"', '"server/*.py"'))
    monkeypatch.setattr("fedinv.federation.runconfig.app_dir", lambda: bad)
    with pytest.raises(FederationError, match=r"pyproject.toml.*fab-include.*server/\*\.py"):
        staged_app(tmp_path / "again")
