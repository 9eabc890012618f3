"""docs/deployment.md's two-machine walkthrough (section B), on separate network hosts:
the SuperLink and the two organizations' SuperNodes each in a network namespace of
their own on this machine (``ip netns``, a veth pair from the coordinator's namespace to
each organization's), TLS and node authentication on, 2 rounds, with the commands of
the walkthrough (``fedinv deploy certs | node-key | superlink | register | node | nodes
| run``, ``fedinv data export``) and its ``pair.toml``, read from the page itself.

Addresses exist only inside the test's own namespaces. Making namespaces needs root
and ``ip``; where they cannot be made the test skips with the reason, unless
``FEDINV_REQUIRE_NETNS=1`` (CI), where it fails instead."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from fedinv.federation.processes import alive, process_tree, start, stop_tree

ROOT = Path(__file__).resolve().parents[1]
PORT = 9092


def _unavailable(reason: str) -> None:
    if os.environ.get("FEDINV_REQUIRE_NETNS") == "1":
        pytest.fail(f"FEDINV_REQUIRE_NETNS=1 but {reason}")
    pytest.skip(reason)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@pytest.fixture
def hosts():
    """Three namespaces: ``link`` (the coordinator, 10.213.1.1 and 10.213.2.1), ``maker``
    (10.213.1.2) and ``retail`` (10.213.2.2); removed afterwards."""
    if shutil.which("ip") is None:
        _unavailable("network namespaces cannot be made here: no `ip` command (iproute2)")
    if os.geteuid() != 0:
        _unavailable("network namespaces cannot be made here: not running as root")
    tag = secrets.token_hex(3)
    names = {role: f"fedinv-{tag}-{role}" for role in ("link", "maker", "retail")}
    made: list[str] = []
    try:
        for name in names.values():
            _ip("netns", "add", name)
            made.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
        for i, org in enumerate(("maker", "retail"), start=1):
            a, b = f"fi{tag}l{i}", f"fi{tag}n{i}"
            _ip(
                "link",
                "add",
                a,
                "netns",
                names["link"],
                "type",
                "veth",
                "peer",
                "name",
                b,
                "netns",
                names[org],
            )
            _ip("-n", names["link"], "addr", "add", f"10.213.{i}.1/24", "dev", a)
            _ip("-n", names[org], "addr", "add", f"10.213.{i}.2/24", "dev", b)
            _ip("-n", names["link"], "link", "set", a, "up")
            _ip("-n", names[org], "link", "set", b, "up")
    except (subprocess.CalledProcessError, OSError) as exc:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        detail = getattr(exc, "stderr", "") or str(exc)
        _unavailable(f"network namespaces cannot be made here: {detail.strip()}")
    try:
        yield names
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def _pair_toml() -> str:
    """The walkthrough's ``pair.toml``: the first TOML block after it is named."""
    page = (ROOT / "docs" / "deployment.md").read_text()
    section = page[page.index("## B. Two organizations on two machines") :]
    return re.search(r"```toml\n(.*?)```", section, re.S).group(1)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _fedinv(ns: str | None, *args: str) -> list[str]:
    command = [sys.executable, "-m", "fedinv", *args]
    return ["ip", "netns", "exec", ns, *command] if ns else command


def _run(ns: str | None, *args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        _fedinv(ns, *args), env=_env(), capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_organizations_on_separate_network_hosts(hosts, tmp_path):
    link, maker, retail = hosts["link"], hosts["maker"], hosts["retail"]
    alpha, beta = tmp_path / "alpha", tmp_path / "beta"  # the coordinator's, retail's files
    alpha.mkdir()
    beta.mkdir()
    (alpha / "pair.toml").write_text(_pair_toml())
    # 1. certificates naming every address the nodes dial, and loopback
    _run(
        None,
        "deploy",
        "certs",
        "--out",
        str(alpha / "pki"),
        "--host",
        "10.213.1.1",
        "--host",
        "10.213.2.1",
        "--host",
        "localhost",
        "--host",
        "127.0.0.1",
    )
    shutil.copy(alpha / "pki" / "ca.crt", beta / "ca.crt")
    # 2. each organization's own key pair; only the .pub goes to the coordinator
    _run(None, "deploy", "node-key", "--out", str(alpha / "maker-node"))
    _run(None, "deploy", "node-key", "--out", str(beta / "retail-node"))
    shutil.copy(beta / "retail-node.pub", alpha / "retail-node.pub")
    # 3. private data: retail gets its folder, the coordinator keeps maker's only
    _run(
        None, "data", "export", "--scenario", str(alpha / "pair.toml"), "--out", str(alpha / "data")
    )
    shutil.copytree(alpha / "data" / "retail", beta / "data" / "retail")
    shutil.rmtree(alpha / "data" / "retail")

    started = []
    seen: list[tuple[int, str]] = []
    try:
        # 4. the SuperLink on every interface of the coordinator's namespace
        link_proc = start(
            _fedinv(
                link,
                "deploy",
                "superlink",
                "--certs",
                str(alpha / "pki"),
                "--host",
                "0.0.0.0",
                "--port",
                str(PORT),
                "--home",
                str(alpha / "superlink"),
            ),
            env=_env(),
            log=tmp_path / "superlink.out",
        )
        started.append(link_proc)
        ca = ["--ca", str(alpha / "pki" / "ca.crt")]
        local = ["--superlink", f"127.0.0.1:{PORT}", *ca]
        deadline = time.monotonic() + 120
        while True:  # until it answers over TLS on loopback
            done = subprocess.run(
                _fedinv(link, "deploy", "nodes", *local),
                env=_env(),
                capture_output=True,
                text=True,
                timeout=60,
            )
            if done.returncode == 0:
                break
            assert link_proc.poll() is None, (tmp_path / "superlink.out").read_text()[-2000:]
            assert time.monotonic() < deadline, done.stderr[-1000:]
            time.sleep(1)
        # 5. register the two public keys, through loopback
        _run(
            link,
            "deploy",
            "register",
            str(alpha / "maker-node.pub"),
            str(alpha / "retail-node.pub"),
            *local,
        )
        # 6. the SuperNodes, each in its own namespace, dialing the coordinator's address
        for ns, org, data, cert, key, address in (
            (
                maker,
                "maker",
                alpha / "data",
                alpha / "pki" / "ca.crt",
                alpha / "maker-node",
                "10.213.1.1",
            ),
            (retail, "retail", beta / "data", beta / "ca.crt", beta / "retail-node", "10.213.2.1"),
        ):
            started.append(
                start(
                    _fedinv(
                        ns,
                        "deploy",
                        "node",
                        "--org",
                        org,
                        "--data",
                        str(data),
                        "--superlink",
                        f"{address}:{PORT}",
                        "--ca",
                        str(cert),
                        "--key",
                        str(key),
                    ),
                    env=_env(),
                    log=tmp_path / f"{org}.out",
                )
            )
        # 7. two online, then the run
        deadline = time.monotonic() + 180
        while _run(link, "deploy", "nodes", *local).count("online") < 2:
            for proc in started:
                assert proc.poll() is None, f"a party exited; see {tmp_path}"
            assert time.monotonic() < deadline, "the SuperNodes did not come online"
            time.sleep(1)
        for proc in started:
            seen.extend(process_tree(proc.pid))
        out = alpha / "runs" / "pair"
        _run(
            link,
            "deploy",
            "run",
            *local,
            "--scenario",
            str(alpha / "pair.toml"),
            "--rounds",
            "2",
            "--local-steps",
            "12",
            "--replications",
            "2",
            "--eval-replications",
            "2",
            "--eval-days",
            "20",
            "--min-nodes",
            "2",
            "--out",
            str(out),
            timeout=600,
        )
        for proc in started:
            seen.extend(process_tree(proc.pid))
    finally:
        for proc in reversed(started):
            stop_tree(proc, grace=10.0)
    assert [pid for pid, t in seen if alive(pid, t)] == []

    rounds = pd.read_csv(out / "rounds.csv")
    assert rounds["round"].tolist() == [1, 2]
    assert rounds["results"].tolist() == [2, 2] and rounds["failures"].tolist() == [0, 0]
    received = [json.loads(line) for line in (out / "received.jsonl").open()]
    assert len({r["node"] for r in received}) == 2
    # the SuperLink saw the organizations from their own hosts' addresses
    log = (tmp_path / "superlink.out").read_text()
    assert "10.213.1.2:" in log and "10.213.2.2:" in log
