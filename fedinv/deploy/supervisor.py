"""An organization's long-lived helper processes -- its trainer
(:mod:`fedinv.federation.trainer`) and its ClientApp launcher
(:mod:`fedinv.deploy.launcher`) -- started and kept alive by the node that owns them
(``fedinv deploy node``, :class:`LocalDeployment <fedinv.deploy.engine.LocalDeployment>`).

:class:`Supervised` starts a command in a session of its own, waits until it answers a
ping on its Unix socket with its own PID, and watches it from a thread: if it exits
while supervised, it is started again (after :data:`RESTART_DELAY` s) and the restart
is counted. :meth:`Supervised.stop` ends supervision, then stops the process (SIGTERM,
SIGKILL after a grace period), by PID. :class:`SupervisedTrainer` and
:func:`supervised_launcher` are the two kinds.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fedinv.errors import DeployError
from fedinv.federation.processes import kill_tree, start, stop_tree

RESTART_DELAY = 0.5
"""Seconds between a supervised process's death and its restart."""
READY_WAIT = 120.0
"""Seconds a (re)started process has to answer its first ping (a trainer imports torch)."""


LAUNCHER_MODULE = "clients.clientapp_launcher"
"""The launcher's entry module (its Flower imports live in ``clients/``)."""


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


class Supervised:
    """A helper process answering on a Unix socket, restarted whenever it dies (see the
    module doc); ``what`` names it in messages, ``answer`` pings it."""

    def __init__(
        self,
        command: Sequence[str],
        socket_path: str | Path,
        *,
        env: Mapping[str, str],
        log: str | Path,
        echo: Callable[[str], None] | None = None,
        on_start: Callable[[subprocess.Popen], None] | None = None,
        what: str = "trainer",
        answer: Callable[..., dict | None] = ping,
    ):
        self.socket = Path(socket_path)
        self.command = list(command)
        self.what, self.answer = what, answer
        self.env, self.log = dict(env), Path(log)
        self.echo = echo or (lambda _: None)
        self.on_start = on_start or (lambda _: None)
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self._lock = threading.Lock()
        self._supervising = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, wait: float | None = READY_WAIT) -> Supervised:
        """Start the process, wait until it answers (None: do not wait; call
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
        self.echo(f"{self.what} on {self.socket} (pid {self.proc.pid})")

    def wait_ready(self, wait: float = READY_WAIT) -> None:
        """Wait until the current process answers a ping."""
        deadline = time.monotonic() + wait
        while True:
            proc = self.proc
            if proc is not None and proc.poll() is None:
                answer = self.answer(self.socket, timeout=2.0)
                if answer is not None and answer.get("pid") == proc.pid:
                    return
            elif proc is not None and self.restarts == 0 and proc.poll() is not None:
                raise DeployError(
                    f"the {self.what} exited at start (code {proc.returncode}); see {self.log}"
                )
            if time.monotonic() > deadline:
                raise DeployError(
                    f"the {self.what} did not answer within {wait:.0f} s; see {self.log}"
                )
            time.sleep(0.1)

    def _watch(self) -> None:
        while self._supervising.is_set():
            proc = self.proc
            if proc is not None and proc.poll() is not None and self._supervising.is_set():
                self.echo(f"{self.what} {proc.pid} exited (code {proc.returncode}); restarting")
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
        """Stop supervising, then stop the process by PID."""
        self._supervising.clear()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        with self._lock:
            stop_tree(self.proc, grace=grace)

    def kill(self) -> None:
        """Stop supervising and SIGKILL the process at once (a crash of its machine)."""
        self._supervising.clear()
        with self._lock:
            if self.proc is not None:
                kill_tree(self.proc)
        self.stop()

    def __enter__(self) -> Supervised:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SupervisedTrainer(Supervised):
    """One organization's trainer (:func:`trainer_command`), supervised."""

    def __init__(
        self,
        socket_path: str | Path,
        data_dir: str | Path,
        state_dir: str | Path,
        **kwargs: Any,
    ):
        super().__init__(trainer_command(socket_path, data_dir, state_dir), socket_path, **kwargs)


def supervised_launcher(socket_path: str | Path, **kwargs: Any) -> Supervised:
    """One organization's ClientApp launcher (:mod:`fedinv.deploy.launcher`), supervised;
    ``kwargs`` as :class:`Supervised`'s."""
    from fedinv.deploy import launcher

    command = [sys.executable, "-m", LAUNCHER_MODULE, "serve", "--socket", str(socket_path)]
    return Supervised(
        command, socket_path, what="ClientApp launcher", answer=launcher.ping, **kwargs
    )
