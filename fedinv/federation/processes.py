"""Processes that Flower (and Ray) start for us: finding them, stopping them, and making
sure none outlives the run that started it (Linux ``/proc``; standard library only).

Flower's processes are started in sessions of their own (so a Ctrl-C of ours does not
reach them half-way) and detach helpers of their own: the SuperExec watches its parent
by ``--parent-pid``; the simulation engine starts a Ray cluster whose processes may be
re-parented. So a run is found three ways:

* by process tree (:func:`process_tree`: parent PIDs, and ``--parent-pid`` helpers);
* by process group (:func:`stop_tree` signals the group of a process it started);
* by **tag** (:class:`ProcessGuard`): every process a run starts carries the
  environment variable :data:`TAG_VARIABLE` with the run's own random tag, which every
  descendant inherits (Flower's and Ray's included), whatever its parent or session is
  later. :func:`tagged` lists them by reading ``/proc/PID/environ``.

:class:`ProcessGuard` records the run in ``FOLDER/processes.json`` (the tag, the owner's
PID and start time, the PIDs started) and starts a small watchdog process
(``python -m fedinv.federation.processes watch ...``) that stops every tagged process
within a second or two of the owner's death (SIGKILL, no grace: a killed run has
nothing to shut down gracefully), a SIGKILL of the owner included. A later run into the
same folder reads the record first and stops what an earlier, killed run left (if its
watchdog was killed too) before it starts anything.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TAG_VARIABLE = "FEDINV_RUN_TAG"
"""The environment variable that marks every process of a guarded run."""
RECORD = "processes.json"
"""The guard's record in a run folder."""
WATCH_INTERVAL = 0.5
"""Seconds between the watchdog's checks of its owner."""


# -- the process table -------------------------------------------------------------------


def proc_table() -> dict[int, tuple[int, str, list[bytes]]]:
    """PID -> (parent PID, start time in clock ticks, argv) of every process we can read."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), fields[19], args)
    return table


def start_time(pid: int) -> str | None:
    """The start time of ``pid`` (clock ticks since boot, as text), None if it is gone or a
    zombie: with the PID it identifies a process even after the PID is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return None if fields[0] == "Z" else fields[19]


def alive(pid: int, started: str) -> bool:
    """Whether the process ``pid`` that started at ``started`` is still running."""
    return start_time(pid) == started


def process_tree(pid: int, root_alive: bool = True) -> list[tuple[int, str]]:
    """``pid`` and its descendants — by parent PID, and Flower's detached helpers started
    with ``--parent-pid`` — as (PID, start time) pairs. ``root_alive=False``: ``pid`` has
    exited (and may be reused): only the helpers naming it in ``--parent-pid``, and
    their descendants."""
    table = proc_table()
    found, todo = [], [pid]
    seen = set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        is_root = current == pid
        if current in table and (root_alive or not is_root):
            found.append((current, table[current][1]))
        flag = str(current).encode()
        for other, (ppid, _, args) in table.items():
            if ppid == current and (root_alive or not is_root):
                todo.append(other)
            elif b"--parent-pid" in args:
                i = args.index(b"--parent-pid")
                if i + 1 < len(args) and args[i + 1] == flag:
                    todo.append(other)
    return found


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# -- starting and stopping ---------------------------------------------------------------


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    log: str | Path,
    cwd: str | Path | None = None,
) -> subprocess.Popen:
    """Start ``command`` in a session of its own, appending its output to ``log``."""
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(command),
            env=dict(env),
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def kill_tree(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to ``proc`` and every process of its tree at once (a crash)."""
    for pid, started in process_tree(proc.pid):
        if alive(pid, started):
            _signal(pid, sig)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass


def _stop_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM the process group of ``proc`` (started in its own session), SIGKILL after
    ``grace`` s; then SIGKILL Flower's helpers that name it in ``--parent-pid``."""
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
    for pid, _ in process_tree(proc.pid, root_alive=False):
        _signal(pid, signal.SIGKILL)


def stop_tree(proc: subprocess.Popen | None, grace: float = 10.0) -> None:
    """Stop ``proc`` gracefully (its process group, SIGTERM then SIGKILL after
    ``grace`` s), then kill whatever of its tree, found by PID beforehand, is left."""
    if proc is None:
        return
    tree = process_tree(proc.pid, root_alive=proc.poll() is None)
    _stop_group(proc, grace)
    deadline = time.monotonic() + 5.0
    for pid, started in tree:
        while alive(pid, started) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid, started):
            _signal(pid, signal.SIGKILL)


def run_foreground(
    command: Sequence[str], env: Mapping[str, str], watch: str | None = None
) -> tuple[int, bool]:
    """Run ``command`` with its output copied to our stderr until it exits or we are
    interrupted (Ctrl-C, SIGTERM: KeyboardInterrupt, after its tree is stopped by PID).
    Returns its exit status and whether ``watch`` appeared in its output.

    The process is reaped as soon as it exits (not when its output ends): Flower's
    helpers hold the output pipe and watch their parent by PID, and a parent left a
    zombie still looks alive to them."""
    proc = subprocess.Popen(
        list(command),
        env=dict(env),
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    seen = threading.Event()

    def copy() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stderr.write(line)
            sys.stderr.flush()
            if watch is not None and watch in line:
                seen.set()

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    reader = threading.Thread(target=copy, daemon=True)
    reader.start()
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        code = proc.wait()
        reader.join(10.0)
        return code, seen.is_set()
    finally:
        stop_tree(proc, grace=10.0)
        signal.signal(signal.SIGTERM, previous)


# -- tagged runs -------------------------------------------------------------------------


def tagged(tag: str, exclude: Sequence[int] = ()) -> list[tuple[int, str]]:
    """(PID, start time) of every running process whose environment carries
    ``TAG_VARIABLE=tag`` (ours only: other users' environments are unreadable).

    A process in the middle of ``execve`` shows an empty environment for a moment (the
    kernel has swapped in the new image but not yet its environment), so a user process
    read empty is read again a little later rather than skipped."""
    needle = f"{TAG_VARIABLE}={tag}".encode()
    skip = {os.getpid(), *exclude}
    found: list[tuple[int, str]] = []
    empty: list[int] = []

    def check(pid: int) -> bool:
        """Whether ``pid`` carries the tag (recorded in ``found``); False if unreadable
        or read empty."""
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            return False
        if needle in environ.split(b"\0"):
            started = start_time(pid)
            if started is not None:
                found.append((pid, started))
            return True
        if not environ and start_time(pid) is not None and not _kernel_thread(pid):
            empty.append(pid)
        return False

    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) not in skip:
            check(int(entry.name))
    for _ in range(20):  # up to ~1 s for an exec to finish
        if not empty:
            break
        time.sleep(0.05)
        waiting, empty[:] = list(empty), []
        for pid in waiting:
            if start_time(pid) is not None:
                check(pid)
    return found


def _kernel_thread(pid: int) -> bool:
    """Whether ``pid`` is a kernel thread (kthreadd or one of its children: they have no
    environment at all), or is gone."""
    if pid == 2:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2 :].split()[1] == "2"


def stop_tagged(tag: str, grace: float = 3.0, exclude: Sequence[int] = ()) -> list[int]:
    """Stop every process tagged ``tag``: SIGTERM, then SIGKILL after ``grace`` s, again
    until none is left (a dying parent may start one more); returns the PIDs stopped."""
    stopped: list[int] = []
    for attempt in range(20):
        found = tagged(tag, exclude)
        if not found:
            break
        sig = signal.SIGTERM if attempt == 0 and grace > 0 else signal.SIGKILL
        for pid, _ in found:
            _signal(pid, sig)
            if pid not in stopped:
                stopped.append(pid)
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 2.0)
        while time.monotonic() < deadline and any(alive(p, s) for p, s in found):
            time.sleep(0.05)
    return stopped


@dataclass(frozen=True)
class Record:
    """What :class:`ProcessGuard` writes to ``FOLDER/processes.json``."""

    tag: str
    owner_pid: int
    owner_started: str
    watchdog_pid: int | None
    processes: tuple[tuple[int, str, str], ...] = ()
    """(PID, start time, role) of each process started."""

    def to_json(self) -> str:
        return json.dumps(
            {
                "tag": self.tag,
                "owner_pid": self.owner_pid,
                "owner_started": self.owner_started,
                "watchdog_pid": self.watchdog_pid,
                "processes": [list(p) for p in self.processes],
            },
            indent=1,
        )

    @classmethod
    def read(cls, path: Path) -> Record | None:
        """The record at ``path``; None if there is none or it is unreadable."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                tag=str(raw["tag"]),
                owner_pid=int(raw["owner_pid"]),
                owner_started=str(raw["owner_started"]),
                watchdog_pid=raw.get("watchdog_pid"),
                processes=tuple(
                    (int(p[0]), str(p[1]), str(p[2])) for p in raw.get("processes", [])
                ),
            )
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return None


class RunFolderBusy(RuntimeError):
    """Another live process owns the run folder."""


def reap_leftovers(folder: str | Path) -> list[int]:
    """Stop what an earlier run into ``folder`` left running (its record names the tag);
    returns the PIDs stopped. :class:`RunFolderBusy` if that run's owner still lives."""
    path = Path(folder) / RECORD
    record = Record.read(path)
    if record is None:
        path.unlink(missing_ok=True)
        return []
    if record.owner_pid != os.getpid() and alive(record.owner_pid, record.owner_started):
        raise RunFolderBusy(
            f"{folder} is in use by another running fedinv process (PID "
            f"{record.owner_pid}); wait for it to finish or stop it first"
        )
    stopped = stop_tagged(record.tag, grace=3.0)
    for pid, started, _ in record.processes:  # started before tagging existed
        if alive(pid, started):
            _signal(pid, signal.SIGKILL)
            stopped.append(pid)
    path.unlink(missing_ok=True)
    return stopped


class ProcessGuard:
    """Every process a run starts, found and stopped: within a few seconds of the owner's
    death (a watchdog), at the end of the ``with`` block, or by the next run into the
    same folder (see the module doc).

    Start processes with ``env=guard.env(base)`` and report each with :meth:`note`."""

    def __init__(self, folder: str | Path, echo: Callable[[str], None] | None = None):
        self.folder = Path(folder)
        self.path = self.folder / RECORD
        self.tag = secrets.token_hex(8)
        self.echo = echo or (lambda _m: None)
        self.watchdog: subprocess.Popen | None = None
        self.reaped: list[int] = []
        self._processes: list[tuple[int, str, str]] = []
        self._seen: dict[int, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def __enter__(self) -> ProcessGuard:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.reaped = reap_leftovers(self.folder)
        if self.reaped:
            self.echo(
                f"stopped {len(self.reaped)} process(es) left running by an earlier, "
                f"interrupted run in {self.folder}"
            )
        owner = os.getpid()
        self.watchdog = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fedinv.federation.processes",
                "watch",
                self.tag,
                str(owner),
                start_time(owner) or "",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env={k: v for k, v in os.environ.items() if k != TAG_VARIABLE},
        )
        self._write()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(1.0):
            self.seen_so_far()

    def seen_so_far(self) -> tuple[tuple[int, str], ...]:
        """(PID, start time) of every tagged process seen so far (sampled each second
        while the guard is open, and now), in the order first seen."""
        running = self.running()
        with self._lock:
            for pid, started in running:
                self._seen.setdefault(pid, started)
            for pid, started, _ in self._processes:
                self._seen.setdefault(pid, started)
            return tuple(self._seen.items())

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: our environment) with this run's tag."""
        return {**(os.environ if base is None else base), TAG_VARIABLE: self.tag}

    def note(self, proc: subprocess.Popen, role: str) -> None:
        """Record a process this run started (its PID and start time)."""
        started = start_time(proc.pid)
        if started is not None:
            self._processes.append((proc.pid, started, role))
            self._write()

    def running(self) -> list[tuple[int, str]]:
        """The tagged processes running now."""
        exclude = [self.watchdog.pid] if self.watchdog is not None else []
        return tagged(self.tag, exclude)

    def _write(self) -> None:
        from fedinv.files import atomic_write

        owner = os.getpid()
        record = Record(
            self.tag,
            owner,
            start_time(owner) or "",
            None if self.watchdog is None else self.watchdog.pid,
            tuple(self._processes),
        )
        text = record.to_json() + "\n"
        atomic_write(self.path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def close(self) -> None:
        """Stop every tagged process left, then the watchdog; remove the record."""
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join(5.0)
        self.seen_so_far()
        exclude = [self.watchdog.pid] if self.watchdog is not None else []
        stop_tagged(self.tag, grace=3.0, exclude=exclude)
        if self.watchdog is not None:
            if self.watchdog.poll() is None:
                self.watchdog.terminate()
            try:
                self.watchdog.wait(5)
            except subprocess.TimeoutExpired:
                self.watchdog.kill()
                self.watchdog.wait(5)
        self.path.unlink(missing_ok=True)

    def __exit__(self, *exc: object) -> None:
        self.close()


def watch(tag: str, owner: int, owner_started: str) -> int:
    """The watchdog: once ``owner`` is gone, stop every process tagged ``tag``.

    While the owner lives it remembers every tagged process it sees: a process may lose
    its tag from ``/proc/PID/environ`` later (Ray's agents call setproctitle, which
    overwrites the environment block), so the kill covers the remembered ones (PID and
    start time, never a reused PID) and their descendants as well as a fresh scan."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    known: dict[int, str] = {}
    while alive(owner, owner_started):
        known.update(tagged(tag))
        time.sleep(WATCH_INTERVAL)
    # The owner died without closing its guard (SIGKILL, OOM): nothing is left to shut
    # down gracefully (finished rounds are on disk, atomically), so SIGKILL at once, and
    # keep looking until several scans in a row find nothing: a process caught between
    # fork and exec (its environment not yet readable) shows up on a later scan.
    quiet, deadline = 0, time.monotonic() + 30.0
    while quiet < 4 and time.monotonic() < deadline:
        targets = {pid: s for pid, s in known.items() if alive(pid, s)}
        for pid in list(targets):
            targets.update(dict(process_tree(pid)))
        for pid in targets:
            _signal(pid, signal.SIGKILL)
        stopped = stop_tagged(tag, grace=0.0)
        quiet = 0 if (targets or stopped) else quiet + 1
        time.sleep(WATCH_INTERVAL)
    return 0


if __name__ == "__main__":  # python -m fedinv.federation.processes watch TAG PID START
    if len(sys.argv) == 5 and sys.argv[1] == "watch":
        raise SystemExit(watch(sys.argv[2], int(sys.argv[3]), sys.argv[4]))
    raise SystemExit("usage: python -m fedinv.federation.processes watch TAG PID START")
