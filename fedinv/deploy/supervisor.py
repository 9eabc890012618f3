"""An organization's trainer process (:mod:`fedinv.federation.trainer`), started and
kept alive by the node that owns it (``fedinv deploy node``, :class:`LocalDeployment
<fedinv.deploy.engine.LocalDeployment>`).

:class:`SupervisedTrainer` starts ``python -m fedinv.federation.trainer serve`` in a
session of its own, waits until it answers a ping on its Unix socket, and watches it
from a thread: if it exits while supervised, it is started again (after
:data:`RESTART_DELAY` s) and the restart is counted. :meth:`SupervisedTrainer.stop` ends
supervision, then stops the process (SIGTERM, SIGKILL after a grace period), by PID.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from fedinv.errors import DeployError
from fedinv.federation.processes import kill_tree, start, stop_tree

RESTART_DELAY = 0.5
"""Seconds between a trainer's death and its restart."""
READY_WAIT = 120.0
"""Seconds a (re)started trainer has to answer its first ping (it imports torch)."""


def trainer_command(socket_path: str | Path, data_dir: str | Path, state_dir: str | Path):
    """The trainer's command line."""
    return [
        sys.executable,
        "-m",
        "fedinv.federation.trainer",
        "serve",
        "--socket",
        str(socket_path),
        "--data",
        str(Path(data_dir).resolve()),
        "--state",
        str(Path(state_dir).resolve()),
    ]


def ping(socket_path: str | Path, timeout: float = 5.0) -> dict | None:
    """The trainer's answer to a ping, None if none answers."""
    from fedinv.federation.wire import WireError, request

    try:
        reply, _ = request(str(socket_path), {"kind": "ping"}, timeout=timeout)
    except (OSError, WireError):
        return None
    return reply


class SupervisedTrainer:
    """One organization's trainer, restarted whenever it dies (see the module doc)."""

    def __init__(
        self,
        socket_path: str | Path,
        data_dir: str | Path,
        state_dir: str | Path,
        *,
        env: Mapping[str, str],
        log: str | Path,
        echo: Callable[[str], None] | None = None,
        on_start: Callable[[subprocess.Popen], None] | None = None,
    ):
        self.socket = Path(socket_path)
        self.command = trainer_command(socket_path, data_dir, state_dir)
        self.env, self.log = dict(env), Path(log)
        self.echo = echo or (lambda _: None)
        self.on_start = on_start or (lambda _: None)
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self._lock = threading.Lock()
        self._supervising = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, wait: float | None = READY_WAIT) -> SupervisedTrainer:
        """Start the trainer, wait until it answers (None: do not wait; call
        :meth:`wait_ready`), then supervise it."""
        self._launch()
        if wait is not None:
            self.wait_ready(wait)
        self._supervising.set()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _launch(self) -> None:
        with self._lock:
            self.proc = start(self.command, env=self.env, log=self.log)
            self.on_start(self.proc)
        self.echo(f"trainer on {self.socket} (pid {self.proc.pid})")

    def wait_ready(self, wait: float = READY_WAIT) -> None:
        """Wait until the current trainer process answers a ping."""
        deadline = time.monotonic() + wait
        while True:
            proc = self.proc
            if proc is not None and proc.poll() is None:
                answer = ping(self.socket, timeout=2.0)
                if answer is not None and answer.get("pid") == proc.pid:
                    return
            elif proc is not None and self.restarts == 0 and proc.poll() is not None:
                raise DeployError(
                    f"the trainer exited at start (code {proc.returncode}); see {self.log}"
                )
            if time.monotonic() > deadline:
                raise DeployError(f"the trainer did not answer within {wait:.0f} s; see {self.log}")
            time.sleep(0.1)

    def _watch(self) -> None:
        while self._supervising.is_set():
            proc = self.proc
            if proc is not None and proc.poll() is not None and self._supervising.is_set():
                self.echo(f"trainer {proc.pid} exited (code {proc.returncode}); restarting")
                time.sleep(RESTART_DELAY)
                if not self._supervising.is_set():
                    break
                self.restarts += 1
                self._launch()
            time.sleep(0.1)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def stop(self, grace: float = 5.0) -> None:
        """Stop supervising, then stop the trainer by PID."""
        self._supervising.clear()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        with self._lock:
            stop_tree(self.proc, grace=grace)

    def kill(self) -> None:
        """Stop supervising and SIGKILL the trainer at once (a crash of its machine)."""
        self._supervising.clear()
        with self._lock:
            if self.proc is not None:
                kill_tree(self.proc)
        self.stop()

    def __enter__(self) -> SupervisedTrainer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
