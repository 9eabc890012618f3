"""The pre-imported ClientApp launcher and its ``flwr-clientapp`` shim
(fedinv.deploy.launcher, clients.clientapp_launcher), and the SuperNode's shortened
idle wait (clients.flower_supernode), on real processes and the real installed Flower.

The shim's exit status is checked against argparse's documented ones (0 after
``--help``, 2 on a usage error) that Flower's real ``flwr_clientapp()`` produces in the
forked child; a real federation over the launcher is tests/test_deploy.py's."""

from __future__ import annotations

import importlib
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clients import flower_supernode
from fedinv.deploy import launcher
from fedinv.federation.processes import start, stop_tree


def _wait(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """A real launcher process, its shim, and its log."""
    root = tmp_path_factory.mktemp("launcher")
    sock = root / "launcher" / "launcher.sock"
    log = root / "launcher.log"
    proc = start(
        [sys.executable, "-m", "clients.clientapp_launcher", "serve", "--socket", str(sock)],
        env=dict(os.environ),
        log=log,
    )
    try:
        _wait(lambda: launcher.ping(sock) is not None, 60, "the launcher")
        yield proc, sock, launcher.write_shim(root / "bin", sock), log
    finally:
        stop_tree(proc)


def _forked(log: Path) -> list[int]:
    return [int(p) for p in re.findall(r"ClientApp (\d+) forked", log.read_text())]


@pytest.mark.timeout(120)
def test_shim_relays_output_and_exit_status(running):
    proc, sock, shim, log = running
    answer = launcher.ping(sock)
    assert answer["pid"] == proc.pid
    assert answer["threads"] == 1  # nothing to break a fork
    assert answer["heavy"] == []  # no torch, pandas or scipy in what the ClientApps inherit
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700

    before = len(_forked(log))
    shown = subprocess.run([str(shim), "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0  # argparse: --help exits 0, on the shim's own stdout
    assert "Run a Flower ClientApp" in shown.stdout and "fedinv:" not in shown.stderr
    bad = subprocess.run([str(shim), "--no-such-flag"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2  # argparse: a usage error exits 2, message on stderr
    assert "flwr-clientapp: error:" in bad.stderr and bad.stdout == ""
    _wait(lambda: len(_forked(log)) == before + 2, 10, "two forks in the log")
    assert f"ClientApp {_forked(log)[-1]} exited (2)" in log.read_text()


@pytest.mark.timeout(120)
def test_a_killed_shim_takes_its_clientapp_along(running, tmp_path):
    _, _, shim, log = running
    before = len(_forked(log))
    # a ClientApp that keeps retrying a SuperNode that is not there
    waiting = subprocess.Popen(
        [str(shim), "--runtime-api-address", "127.0.0.1:1", "--token", "t", "--insecure"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait(lambda: len(_forked(log)) > before, 30, "the ClientApp's fork")
        child = _forked(log)[-1]
        assert Path(f"/proc/{child}").exists()
        waiting.send_signal(signal.SIGKILL)
        waiting.wait(10)
        _wait(lambda: f"ClientApp {child} exited" in log.read_text(), 10, "the child's end")
        assert not Path(f"/proc/{child}").exists()
    finally:
        waiting.kill()


@pytest.mark.timeout(120)
def test_without_a_launcher_the_shim_runs_flowers_own(tmp_path):
    shim = launcher.write_shim(tmp_path / "bin", tmp_path / "none" / "launcher.sock")
    bad = subprocess.run([str(shim), "--no-such-flag"], capture_output=True, text=True, timeout=90)
    assert bad.returncode == 2  # Flower's real flwr-clientapp, exec'd: same argparse status
    assert "fedinv: ClientApp launcher not answering" in bad.stderr
    assert "flwr-clientapp: error:" in bad.stderr


def test_the_supernode_idle_wait_call_site_is_flowers(monkeypatch):
    """On the installed Flower: the one sleep of 3 s, after a pull that found no
    message, is where this module expects it; patched, it waits IDLE_WAIT s and every
    other sleep is left alone."""
    module = importlib.import_module(flower_supernode.MODULE)
    flower_supernode.check_call_site(module)  # raises, naming the Flower version, if moved
    monkeypatch.setattr(module, "time", module.time)
    assert flower_supernode.patch()
    started = time.monotonic()
    module.time.sleep(flower_supernode.FLOWER_IDLE_WAIT)
    waited = time.monotonic() - started
    assert flower_supernode.IDLE_WAIT <= waited < 1.5
    started = time.monotonic()
    module.time.sleep(0.05)
    assert time.monotonic() - started >= 0.05
    assert abs(module.time.time() - time.time()) < 1.0


def test_a_moved_call_site_is_refused_with_the_flower_version(tmp_path, monkeypatch):
    (tmp_path / "fake_start.py").write_text(
        "import time\n\ndef start_client_internal():\n    while True:\n        time.sleep(5)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    fake = importlib.import_module("fake_start")
    with pytest.raises(RuntimeError, match=r"flwr \S+ .*read from flwr 1\.42"):
        flower_supernode.check_call_site(fake)
