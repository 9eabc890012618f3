"""Process handling (fedinv.federation.processes): a guarded run's processes — in sessions
of their own, grandchildren included — never outlive the process that started them by
more than a few seconds, and a re-run into the same folder stops what a killed run left.
The processes here are ``sleep``s, so the checks take seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedinv.federation.processes import (
    RECORD,
    ProcessGuard,
    RunFolderBusy,
    alive,
    reap_leftovers,
    start_time,
    tagged,
)

OWNER = """
import subprocess, sys, time
from fedinv.federation.processes import ProcessGuard
guard = ProcessGuard(sys.argv[1]).__enter__()
child = subprocess.Popen(["sleep", "600"], env=guard.env(), start_new_session=True)
# a grandchild whose parent exits at once: re-parented, found only by its tag
subprocess.Popen(["sh", "-c", "sleep 600 &"], env=guard.env(), start_new_session=True).wait()
guard.note(child, "sleep")
print("ready", flush=True)
time.sleep(600)
"""


def _start_owner(folder: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(folder)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _record(folder: Path) -> dict:
    return json.loads((folder / RECORD).read_text())


def _wait_gone(processes: list[tuple[int, str]], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while True:
        left = [pid for pid, started in processes if alive(pid, started)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def test_children_die_within_seconds_of_a_killed_owner(tmp_path):
    owner = _start_owner(tmp_path)
    record = _record(tmp_path)
    found = tagged(record["tag"])
    try:
        assert len(found) == 2  # the child and the re-parented grandchild
        assert record["owner_pid"] == owner.pid
        assert {p[0] for p in record["processes"]} <= {p for p, _ in found}
        os.kill(owner.pid, signal.SIGKILL)  # the owner only: its children live in
        owner.wait()  # sessions of their own and would survive it
        assert _wait_gone(found, 5.0) == []
        watchdog = record["watchdog_pid"]
        assert _wait_gone([(watchdog, start_time(watchdog) or "")], 5.0) == []
    finally:
        for pid, _ in tagged(record["tag"]):
            os.kill(pid, signal.SIGKILL)


def test_a_rerun_stops_what_a_killed_run_and_its_watchdog_left(tmp_path):
    owner = _start_owner(tmp_path)
    record = _record(tmp_path)
    found = tagged(record["tag"])
    try:
        with pytest.raises(RunFolderBusy, match=f"PID {owner.pid}"):
            reap_leftovers(tmp_path)  # the owner still runs: the folder is busy
        os.kill(record["watchdog_pid"], signal.SIGKILL)  # e.g. the whole session killed
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
        time.sleep(1.0)
        assert len([p for p, s in found if alive(p, s)]) == 2  # orphans, still running
        with ProcessGuard(tmp_path) as guard:  # a re-run into the same folder
            assert sorted(guard.reaped) == sorted(p for p, _ in found)
            assert _wait_gone(found, 5.0) == []
        assert not (tmp_path / RECORD).exists()  # a clean end leaves no record
    finally:
        for pid, _ in tagged(record["tag"]):
            os.kill(pid, signal.SIGKILL)


def test_leaving_the_guard_stops_its_processes(tmp_path):
    with ProcessGuard(tmp_path) as guard:
        proc = subprocess.Popen(["sleep", "600"], env=guard.env(), start_new_session=True)
        guard.note(proc, "sleep")
        started = start_time(proc.pid)
        assert guard.running() == [(proc.pid, started)]
    proc.wait(30)  # generous: a loaded 2-core machine may take seconds to deliver it
    assert guard.seen_so_far() == ((proc.pid, started),)
    deadline = time.monotonic() + 30
    while alive(guard.watchdog.pid, start_time(guard.watchdog.pid) or "x"):
        assert time.monotonic() < deadline, "the watchdog outlived its guard"
        time.sleep(0.1)
