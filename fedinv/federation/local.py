"""``fedinv federate``: a local simulated federation on Flower's simulation engine.

It exports each organization's private data (unless the run folder has it), starts a
SuperLink of its own (simulation mode, loopback, Flower's home folder inside the run
folder), runs the app of this checkout with ``flwr run ... --stream``, and stops every
process it started, by PID, whatever happens. Runtime dependency installation is
disabled, so Flower never builds an environment of its own.

Run folder ``OUT/``: ``data/ORG/`` (private data), ``clients/ORG/`` (each client's replay
buffer and learner), ``checkpoints/``, ``final.pt``, ``rounds.csv``, ``rounds.png``,
``summary.json`` (written by the ServerApp), ``flower.log`` and ``.flwr/`` (Flower's home:
its state database and the SuperLink's log).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedinv.federation.task import FedConfig


class FederationError(RuntimeError):
    """The federation could not run; the message says why and where the logs are."""


@dataclass
class FederationRun:
    """Where a finished run put its results."""

    out_dir: Path
    rounds_csv: Path
    final_checkpoint: Path
    log: Path


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise FederationError(f"the SuperLink exited at start (code {proc.returncode})")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise FederationError(f"the SuperLink did not open port {port} within {seconds:.0f} s")


def flower_env(home: Path) -> dict[str, str]:
    """Environment of every Flower process: home inside the run, quiet, no installs."""
    env = dict(os.environ)
    env.update(
        {
            "FLWR_HOME": str(home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
            "RAY_DEDUP_LOGS": "0",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    return env


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def stop_process_tree(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop ``proc`` (started in its own session) and every process of its group; and
    Flower's SuperExec, which watches its parent by PID."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(5)
    for pid in _children_by_parent_flag(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _children_by_parent_flag(parent: int) -> list[int]:
    """PIDs of processes started with ``--parent-pid PARENT`` (Flower's SuperExec)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--parent-pid" in args:
            i = args.index(b"--parent-pid")
            if i + 1 < len(args) and args[i + 1] == str(parent).encode():
                found.append(int(entry.name))
    return found


def run_federation(
    cfg: FedConfig,
    out_dir: str | Path,
    *,
    supernodes: int | None = None,
    extra: Mapping[str, Any] | None = None,
    timeout: float = 3600.0,
    echo: Callable[[str], None] | None = None,
) -> FederationRun:
    """Run ``cfg`` as a local simulated federation into ``out_dir`` (see module doc).
    ``extra``: more run-config keys (e.g. ``fail-org``, ``min-train-nodes``); ``echo``
    receives Flower's output line by line."""
    from fedinv.federation.private_data import export_private_data
    from fedinv.model.scenario import load_scenario

    out = Path(out_dir).resolve()
    data = out / "data"
    scenario = load_scenario(cfg.scenario)
    if not data.is_dir() or not any(data.iterdir()):
        export_private_data(scenario, data)
    orgs = sorted(p.name for p in data.iterdir() if (p / "scenario.toml").is_file())
    n_nodes = supernodes or len(orgs)
    home = out / ".flwr"
    home.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "fedinv"\n\n[superlink.fedinv]\n'
        f'address = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    env = flower_env(home)
    run_config = {
        **cfg.to_flat(),
        "data-dir": str(data),
        "state-dir": str(out / "clients"),
        "run-dir": str(out),
        "min-train-nodes": min(2, n_nodes),
        "min-evaluate-nodes": min(2, n_nodes),
        "min-available-nodes": min(2, n_nodes),
        **(extra or {}),
    }
    run_args = " ".join(f"{k}={_toml_value(v)}" for k, v in run_config.items())
    log_path = out / "flower.log"
    link_log = (home / "superlink.log").open("ab")
    superlink = subprocess.Popen(
        [
            shutil.which("flower-superlink", path=env["PATH"]) or "flower-superlink",
            "--insecure",
            "--simulation",
            "--isolation",
            "subprocess",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--database",
            str(home / "state.db"),
        ],
        cwd=out,
        env=env,
        stdout=link_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_port(port, superlink)
        command = [
            shutil.which("flwr", path=env["PATH"]) or "flwr",
            "run",
            str(app_dir()),
            "fedinv",
            "--stream",
            "--run-config",
            run_args,
            "--federation-config",
            f"num-supernodes={n_nodes} client-resources-num-cpus=1",
        ]
        with log_path.open("a") as log:
            proc = subprocess.Popen(
                command,
                cwd=out,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            try:
                deadline = time.monotonic() + timeout
                assert proc.stdout is not None
                for line in proc.stdout:
                    log.write(line)
                    log.flush()
                    if echo is not None:
                        echo(line.rstrip("\n"))
                    if time.monotonic() > deadline:
                        raise FederationError(f"the run took longer than {timeout:.0f} s")
                proc.wait()
            finally:
                stop_process_tree(proc, grace=5.0)
        if proc.returncode != 0:
            raise FederationError(f"flwr run exited with code {proc.returncode}; see {log_path}")
    finally:
        stop_process_tree(superlink)
        link_log.close()
    final = out / "final.pt"
    summary = out / "summary.json"
    if not final.is_file() or not summary.is_file():
        raise FederationError(
            f"the ServerApp finished without a final checkpoint; see "
            f"{log_path} and {home / 'superlink.log'}"
        )
    return FederationRun(out, out / "rounds.csv", final, log_path)
