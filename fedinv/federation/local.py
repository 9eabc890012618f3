"""``fedinv federate``: a local simulated federation on Flower's simulation engine.

It exports each organization's private data (unless the run folder has it), starts a
SuperLink of its own (simulation mode, loopback, Flower's home folder inside the run
folder), runs the app of this checkout with ``flwr run ... --stream``, and stops every
process it started, by PID, whatever happens. Runtime dependency installation is
disabled, so Flower never builds an environment of its own.

Every process of the run (the SuperLink, ``flwr run``, and what they start: the
SuperExec, ``flwr-simulation``, its Ray cluster) carries the run's tag and is stopped
within seconds even if the calling process is killed (a watchdog); a re-run into the
same folder first stops whatever a killed run left (:mod:`fedinv.federation.processes`).

Run folder ``OUT/``: ``data/ORG/`` (private data), ``clients/ORG/`` (each client's replay
buffer and learner), ``checkpoints/``, ``final.pt``, ``rounds.csv``, ``rounds.png``,
``summary.json`` (written by the ServerApp), ``flower.log``, ``.flwr/`` (Flower's home:
its state database and the SuperLink's log) and, while it runs, ``processes.json`` (the
run's tag and the PIDs it started).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedinv.errors import FederationError
from fedinv.federation.processes import (
    ProcessGuard,
    RunFolderBusy,
    flower_env,
    free_port,
    stop_tree,
)
from fedinv.federation.runconfig import run_config_text, staged_app
from fedinv.federation.task import FedConfig
from fedinv.files import atomic_write


@dataclass
class FederationRun:
    """Where a finished run put its results."""

    out_dir: Path
    rounds_csv: Path
    final_checkpoint: Path
    log: Path
    processes: tuple[tuple[int, str], ...] = ()
    """(PID, start time) of every process of the run seen while it ran (all stopped)."""


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


def run_federation(
    cfg: FedConfig,
    out_dir: str | Path,
    *,
    supernodes: int | None = None,
    extra: Mapping[str, Any] | None = None,
    timeout: float = 3600.0,
    echo: Callable[[str], None] | None = None,
    notice: Callable[[str], None] | None = None,
) -> FederationRun:
    """Run ``cfg`` as a local simulated federation into ``out_dir`` (see module doc).
    ``extra``: more run-config keys (e.g. ``fail-org``, ``min-train-nodes``); ``echo``
    receives Flower's output line by line, ``notice`` (default ``echo``) what this
    module has to say (leftovers of an interrupted run stopped). Every process it starts
    is tagged and recorded in ``OUT/processes.json``
    (:class:`fedinv.federation.processes.ProcessGuard`): they are stopped when this
    returns or raises, within seconds if this process is killed, and by the next run
    into ``out_dir`` if all else failed."""
    from fedinv.federation.private_data import export_private_data
    from fedinv.model.scenario import load_scenario

    out = Path(out_dir).resolve()
    data = out / "data"
    scenario = load_scenario(cfg.scenario)
    try:
        with ProcessGuard(out, echo=notice or echo) as guard:
            if not data.is_dir() or not any(data.iterdir()):
                export_private_data(scenario, data)
            return _run(cfg, out, guard, supernodes, extra, timeout, echo)
    except RunFolderBusy as exc:
        raise FederationError(str(exc)) from None


def _run(
    cfg: FedConfig,
    out: Path,
    guard: ProcessGuard,
    supernodes: int | None,
    extra: Mapping[str, Any] | None,
    timeout: float,
    echo: Callable[[str], None] | None,
) -> FederationRun:
    data = out / "data"
    orgs = sorted(p.name for p in data.iterdir() if (p / "scenario.toml").is_file())
    n_nodes = supernodes or len(orgs)
    home = out / ".flwr"
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config_text = (
        f'[superlink]\ndefault = "fedinv"\n\n[superlink.fedinv]\n'
        f'address = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    atomic_write(home / "config.toml", lambda tmp: tmp.write_text(config_text))
    env = guard.env(flower_env(home))
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
    guard.note(superlink, "superlink")
    try:
        _wait_port(port, superlink)
        command = [
            shutil.which("flwr", path=env["PATH"]) or "flwr",
            "run",
            str(staged_app(home / "app")),
            "fedinv",
            "--stream",
            "--run-config",
            run_config_text(run_config),
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
            guard.note(proc, "flwr run")
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
                stop_tree(proc, grace=5.0)
        if proc.returncode != 0:
            raise FederationError(f"flwr run exited with code {proc.returncode}; see {log_path}")
    finally:
        stop_tree(superlink)
        link_log.close()
    final = out / "final.pt"
    summary = out / "summary.json"
    if not final.is_file() or not summary.is_file():
        raise FederationError(
            f"the ServerApp finished without a final checkpoint; see "
            f"{log_path} and {home / 'superlink.log'}"
        )
    return FederationRun(out, out / "rounds.csv", final, log_path, guard.seen_so_far())
