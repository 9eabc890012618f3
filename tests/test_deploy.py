"""Deployment across organizations (fedinv.deploy.engine, fedinv.cli.deploy): certificates
and keys, command-line errors, and a real federation on 127.0.0.1 — a SuperLink and 3
SuperNodes as processes, TLS and node authentication on — that trains 2 rounds, refuses
an unregistered node,
survives a SuperNode killed mid-round (it restarts and rejoins with its replay buffer)
and a ServerApp killed after a round (a resubmitted run resumes, no round lost).

Every process is started in a session of its own and stopped by PID (with its whole
tree) by the fixtures, whatever happens. Each message gets a ClientApp process (forked
by the organization's ClientApp launcher, fedinv.deploy.launcher; each hands it to the
organization's trainer process), so a round costs several seconds on a loaded 2-core
machine; the slow tests share one
federation and one run folder to stay within a few minutes. The last one kills and
restarts the SuperLink itself."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_federation import THREE_ORGS

from fedinv.cli import main
from fedinv.deploy.engine import (
    LocalDeployment,
    deploy_env,
    list_nodes,
    make_certs,
    make_node_key,
    refused,
    register_node,
    run_finished,
    stop_run,
    superlink_command,
    supernode_command,
    wait_for,
)
from fedinv.errors import DeployError
from fedinv.federation.private_data import export_private_data
from fedinv.federation.processes import alive as _alive
from fedinv.federation.processes import proc_table as _proc_table
from fedinv.federation.processes import process_tree, start, stop_tree
from fedinv.federation.task import FedConfig, load_global_checkpoint, new_model, roles_of, to_arrays
from fedinv.model.scenario import load_scenario

LOCAL_STEPS, REPLICATIONS = 12, 2


def _config(scenario: Path, rounds: int) -> FedConfig:
    return FedConfig(
        scenario=str(scenario),
        rounds=rounds,
        local_steps=LOCAL_STEPS,
        replications=REPLICATIONS,
        eval_replications=2,
        eval_days=20,
        batch_size=16,
        learning_starts=4,
        exploration_steps=20,
        hidden=(16,),
        reward_scale=50.0,
    )


# -- certificates, keys, commands (fast) ---------------------------------------------------


def test_certificates_have_the_right_names_and_keys_are_private(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    certs = make_certs(
        tmp_path,
        hosts=["localhost", "127.0.0.1", "coord.example.org", "10.1.2.3"],
        nodes=["maker", "retail"],
    )
    ca = x509.load_pem_x509_certificate(certs.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(certs.server_cert.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert server.issuer == ca.subject
    server.verify_directly_issued_by(ca)  # raises if the CA did not sign it
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost", "coord.example.org"]
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "10.1.2.3"]
    for private in (certs.ca_key, certs.server_key, *(k for k, _ in certs.nodes.values())):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    private, public = certs.nodes["maker"]
    key = serialization.load_ssh_private_key(private.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    assert public.read_text().startswith("ecdsa-sha2-nistp384 ")
    loaded = serialization.load_ssh_public_key(public.read_bytes())
    assert loaded.public_numbers() == key.public_key().public_numbers()
    with pytest.raises(DeployError, match="already exists"):
        make_node_key(private)
    with pytest.raises(DeployError, match="neither an IP address nor a DNS name"):
        make_certs(tmp_path / "bad", hosts=["not a host!"])


def test_secure_defaults_in_the_commands(tmp_path):
    certs = make_certs(tmp_path)
    from fedinv.deploy.engine import ServerTls

    link = superlink_command(tmp_path, tls=ServerTls.from_args(tmp_path))
    assert link[link.index("--host") + 1] == "127.0.0.1"
    assert "--enable-supernode-auth" in link and "--insecure" not in link
    assert link[link.index("--ssl-ca-certfile") + 1] == str(certs.ca_cert.resolve())
    with pytest.raises(DeployError, match="needs TLS"):
        superlink_command(tmp_path, tls=None, auth=True)
    node = supernode_command(
        "127.0.0.1:9092",
        data_dir=tmp_path,
        state_dir=tmp_path,
        root_cert=certs.ca_cert,
        private_key=tmp_path / "k",
        port=1,
    )
    assert "--insecure" not in node and "--root-certificates" in node
    assert "--auth-supernode-private-key" in node


def _usage_error(capsys, argv: list[str], *needles: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error:" in err
    for needle in needles:
        assert needle in err, err


def test_command_line_errors_are_one_clear_line(tmp_path, capsys):
    _usage_error(
        capsys,
        ["deploy", "superlink", "--certs", str(tmp_path / "none")],
        "CA certificate not found",
        "fedinv deploy certs",
    )
    make_certs(tmp_path / "c", nodes=["maker"])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        _usage_error(
            capsys,
            ["deploy", "superlink", "--certs", str(tmp_path / "c"), "--port", str(port)],
            f"port {port}",
            "in use",
        )
    _usage_error(
        capsys, ["deploy", "superlink", "--certs", str(tmp_path / "c"), "--insecure"], "choose one"
    )
    data = tmp_path / "data" / "maker"
    data.mkdir(parents=True)
    (data / "scenario.toml").write_text("")
    node = [
        "deploy",
        "node",
        "--org",
        "maker",
        "--data",
        str(tmp_path / "data"),
        "--superlink",
        "127.0.0.1:9092",
        "--ca",
        str(tmp_path / "c" / "ca.crt"),
    ]
    _usage_error(capsys, node, "no node private key given", "--key")
    _usage_error(
        capsys,
        [*node, "--key", str(tmp_path / "c" / "ca.crt")],
        "not an unencrypted OpenSSH private key",
    )
    _usage_error(
        capsys,
        [*node[:-2], "--key", str(tmp_path / "c" / "nodes" / "maker")],
        "CA certificate",
        "--ca",
    )
    _usage_error(
        capsys,
        [
            "deploy",
            "node",
            "--org",
            "retail",
            "--data",
            str(tmp_path / "data"),
            "--superlink",
            "127.0.0.1:9092",
            "--insecure",
        ],
        "no private data for 'retail'",
    )
    _usage_error(
        capsys,
        ["deploy", "register", "x.pub", "--superlink", "nohost", "--insecure"],
        "expected HOST:PORT",
    )
    _usage_error(capsys, ["deploy", "certs", "--out", str(tmp_path / "c")], "already exists")


# -- a real federation on 127.0.0.1 (slow) --------------------------------------------------


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy-chain")
    path = root / "chain-3.toml"
    path.write_text(THREE_ORGS)
    export_private_data(load_scenario(path), root / "data")
    return path, root / "data"


@pytest.fixture(scope="module")
def federation(chain, tmp_path_factory):
    """A SuperLink and the 3 organizations' SuperNodes, TLS and node authentication on;
    certificates and keys in a folder of their own, outside every run and Flower folder.
    Stops every process of every tree by PID afterwards, and checks none is left."""
    _, data = chain
    root = tmp_path_factory.mktemp("deploy")
    probe = root / "probe"  # each real ClientApp process writes its heavy modules here
    fed = LocalDeployment(
        root / "site", data, root / "keys", env={"FEDINV_CLIENTAPP_PROBE": str(probe)}
    )
    fed.probe = probe
    seen: list[tuple[int, str]] = []
    try:
        fed.start()
        yield fed
    finally:
        for proc in [fed.superlink, *(n.proc for n in fed.nodes.values())]:
            if proc is not None and proc.poll() is None:
                seen.extend(process_tree(proc.pid))
        fed.close()
    left = [pid for pid, started in seen if _alive(pid, started)]
    assert not left, f"processes left running: {left}"


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on ``port`` (from /proc/net/tcp)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if int(hex_port, 16) == port and state == "0A":
                found.add(address)
    return found


@pytest.mark.timeout(300)
def test_tls_loopback_and_refusal_of_unregistered_nodes(federation, tmp_path):
    # the SuperLink listens on 127.0.0.1 only
    assert _listening_addresses(federation.port) == {"0100007F"}
    # TLS is on: without the federation's CA the SuperLink is not trusted
    other = make_certs(tmp_path / "other")
    with pytest.raises(DeployError):
        list_nodes(address=federation.address, root_cert=other.ca_cert)
    # a SuperNode with a key the SuperLink never registered is refused (Flower: exit 305)
    private, _ = make_node_key(tmp_path / "keys" / "rogue")
    rogue = start(
        supernode_command(
            federation.address,
            data_dir=federation.data / "maker",
            state_dir=tmp_path / "state",
            root_cert=federation.root_cert,
            private_key=private,
            port=_free_port(),
        ),
        env=deploy_env(tmp_path / "home"),
        log=tmp_path / "rogue.log",
    )
    try:
        assert rogue.wait(90) != 0
    finally:
        stop_tree(rogue)
    assert refused(tmp_path / "rogue.log")  # Flower's exit code 305, in its log
    nodes = list_nodes(address=federation.address, root_cert=federation.root_cert)
    assert len(nodes) == 3 and all(n["status"] == "online" for n in nodes)
    assert "No SuperNode found with the given public key" in federation.link_log.read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def two_rounds(federation, chain):
    """A 2-round run (training and the organizations' evaluation) over TLS."""
    scenario, _ = chain
    run_dir = federation.root.parent / "runs" / "run"
    federation.submit(_config(scenario, 2), run_dir, extra={"round-timeout": 240.0})
    wait_for(lambda: run_finished(run_dir, 2), 360, "2 rounds", check=_alive_check(federation))
    return run_dir


def _alive_check(fed: LocalDeployment):
    def check() -> None:
        if fed.superlink.poll() is not None:
            raise AssertionError(f"the SuperLink exited; see {fed.link_log}")

    return check


def _key_fragments(keys: Path) -> list[bytes]:
    """Lines of random key material of every private key in ``keys``."""
    fragments = []
    for path in keys.rglob("*"):
        if path.is_file() and path.suffix not in (".pub", ".crt"):
            lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("-----")]
            fragments += [ln.encode() for ln in lines[1:] if len(ln) >= 40]
    assert fragments
    return fragments


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_two_rounds_over_tls_with_node_authentication(federation, two_rounds, chain):
    scenario, data = chain
    rounds = pd.read_csv(two_rounds / "rounds.csv")
    assert rounds["round"].tolist() == [1, 2]
    assert rounds["results"].tolist() == [3, 3] and rounds["failures"].tolist() == [0, 0]
    assert all(math.isfinite(c) for c in rounds["global-cost-per-day"])
    assert all(math.isfinite(c) for c in rounds["local-cost-per-day"])  # clients' evaluation
    assert all(math.isfinite(c) for c in rounds["train-loss"])
    weights, done = load_global_checkpoint(two_rounds / "final.pt")
    assert done == 2
    start_weights = to_arrays(new_model(_config(scenario, 2), roles_of(load_scenario(scenario))))
    assert set(weights) == set(start_weights)
    assert any(not np.array_equal(weights[k], start_weights[k]) for k in weights)
    again, _ = load_global_checkpoint(two_rounds / "checkpoints" / "round-0002.pt")
    for key in weights:
        np.testing.assert_array_equal(weights[key], again[key])

    # the ClientApp processes Flower started imported no torch, pandas or scipy
    probes = [json.loads(p.read_text()) for p in federation.probe.glob("*.json")]
    assert len(probes) >= 2 * 3 and all(loaded == [] for loaded in probes)
    # ... and each was forked by its organization's ClientApp launcher (no cold fallback):
    # a train message per round and the final evaluate one
    for node in federation.nodes.values():
        assert (node.home / "launcher" / "launcher.log").read_text().count(" forked") >= 3
        assert "launcher not answering" not in node.log.read_text()

    # what crossed the wire (as the ServerApp received it): weights and scalar metrics only
    received = [json.loads(line) for line in (two_rounds / "received.jsonl").open()]
    # fat rounds: a train exchange per round (carrying the clients' evaluation of the
    # weights they received) and one evaluate exchange after the last round
    assert len(received) == (2 + 1) * 3
    assert [r["phase"] for r in received].count("evaluate") == 3
    assert {r["node"] for r in received} == set(federation.node_ids.values())
    for reply in received:
        assert "error" not in reply
        records = reply["records"]
        expected = {"arrays", "metrics"} if reply["phase"] == "train" else {"metrics"}
        assert set(records) == expected
        assert records["metrics"]["kind"] == "MetricRecord"
        assert set(records["metrics"]["fields"].values()) <= {"float", "int"}
        if reply["phase"] == "train":
            arrays = records["arrays"]
            assert arrays["kind"] == "ArrayRecord"
            # one packed vector (fedinv.federation.packing) of exactly the model's values
            size = sum(v.size for v in start_weights.values())
            assert {k: tuple(v[0]) for k, v in arrays["fields"].items()} == {"packed": (size,)}

    # private keys appear in no log, no Flower folder, no run folder
    fragments = _key_fragments(federation.keys)
    for root in (federation.root, two_rounds):
        for path in root.rglob("*"):
            if path.is_file():
                content = path.read_bytes()
                assert not any(f in content for f in fragments), f"key material in {path}"


def _steps_and_buffer(state: Path, org: str, server_round: int) -> tuple[int, int]:
    """A node's saved step count and replay-buffer size after ``server_round``."""
    (folder,) = state.glob(f"*/{org}/round-{server_round:04d}")
    learner = torch.load(folder / "learner.pt", map_location="cpu", weights_only=False)
    replay = np.load(folder / "replay.npz")
    size = sum(int(replay[k]) for k in replay.files if k.endswith(".size"))
    return int(learner["steps_done"]), size


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_killed_supernode_rejoins_and_killed_serverapp_resumes(federation, two_rounds, chain):
    """Continue the 2-round run to 4 rounds. Round 3: retail's SuperNode (and ClientApp)
    is SIGKILLed while training; the round completes with the two others. Then the
    ServerApp is SIGKILLed; retail's node restarts and rejoins; the run, submitted again,
    resumes after round 3: round 4 with all three, retail continuing from its files."""
    scenario, _ = chain
    run_dir, cfg = two_rounds, _config(scenario, 4)
    extra = {"round-timeout": 180.0, "fraction-evaluate": 0.0, "min-evaluate-nodes": 0}
    check = _alive_check(federation)
    run_id = federation.submit(cfg, run_dir, extra=extra)
    retail = federation.nodes["retail"]

    def retail_training() -> bool:
        table = _proc_table()
        return any(
            # Flower's flwr-clientapp, or fedinv's shim for it (python -S .../flwr-clientapp)
            pid in table and any(b"flwr-clientapp" in a for a in table[pid][2][:3])
            for pid, _ in process_tree(retail.proc.pid)
        )

    wait_for(retail_training, 180, "retail's ClientApp in round 3", check=check, poll=0.1)
    federation.kill_node("retail")
    # the SuperLink declares it unavailable after two missed heartbeats (<= 60 s)
    ckpt3 = run_dir / "checkpoints" / "round-0003.pt"
    wait_for(ckpt3.exists, 240, "round 3 without retail", check=check, poll=0.1)
    serverapps = federation.serverapps()
    assert len(serverapps) == 1
    os.kill(serverapps[0], signal.SIGKILL)
    stop_run(run_id, address=federation.address, root_cert=federation.root_cert)
    row3 = pd.read_csv(run_dir / "rounds.csv").set_index("round").loc[3]
    assert row3["results"] == 2 and row3["failures"] + row3["no_reply"] == 1
    assert not run_finished(run_dir, 4)

    federation.start_node("retail", rejoin=150)  # refused until seen offline; retried
    federation.wait_online(3, 60)
    federation.submit(cfg, run_dir, extra=extra)
    wait_for(lambda: run_finished(run_dir, 4), 300, "round 4", check=check)

    rounds = pd.read_csv(run_dir / "rounds.csv")
    assert rounds["round"].tolist() == [1, 2, 3, 4]  # none lost, none repeated
    assert rounds["results"].tolist() == [3, 3, 2, 3]
    _, done = load_global_checkpoint(run_dir / "final.pt")
    assert done == 4
    # retail trained rounds 1, 2 and 4: it continued from its round-2 files
    per_round = LOCAL_STEPS * REPLICATIONS
    assert _steps_and_buffer(retail.state, "retail", 4) == (3 * LOCAL_STEPS, 3 * per_round)
    maker = federation.nodes["maker"]
    assert _steps_and_buffer(maker.state, "maker", 4) == (4 * LOCAL_STEPS, 4 * per_round)


def test_registering_a_missing_key_is_a_clear_error(tmp_path):
    with pytest.raises(DeployError, match="node public key not found"):
        register_node(tmp_path / "none.pub", address="127.0.0.1:1", root_cert=None)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_killed_superlink_restarts_and_the_run_resumes(federation, two_rounds, chain):
    """Continue the run to 6 rounds: once round 5's checkpoint is written, the SuperLink is
    SIGKILLed with its whole tree (its SuperExec and the ServerApp, mid-round 6), then
    restarted on the same port and state database. The SuperNodes reconnect by
    themselves (registered keys survive in the database); the run, submitted again,
    resumes after round 5, and no round is counted twice: every round appears once, and
    each organization's step count is its rounds trained x local steps."""
    scenario, _ = chain
    run_dir, cfg = two_rounds, _config(scenario, 6)
    extra = {"round-timeout": 180.0, "fraction-evaluate": 0.0, "min-evaluate-nodes": 0}
    if not run_finished(run_dir, 4):  # the test above did not run: bring the run to 4
        federation.submit(_config(scenario, 4), run_dir, extra=extra)
        wait_for(lambda: run_finished(run_dir, 4), 300, "round 4", check=_alive_check(federation))
    missed = 3 - int(pd.read_csv(run_dir / "rounds.csv").set_index("round").loc[3, "results"])
    run_id = federation.submit(cfg, run_dir, extra=extra)
    ckpt5 = run_dir / "checkpoints" / "round-0005.pt"
    wait_for(ckpt5.exists, 240, "round 5", check=_alive_check(federation), poll=0.1)
    assert federation.serverapps()  # round 6 is under way
    federation.kill_superlink()
    assert not (run_dir / "checkpoints" / "round-0006.pt").exists()
    federation.start_superlink()
    federation.wait_online(3, 120)
    stop_run(run_id, address=federation.address, root_cert=federation.root_cert)
    federation.submit(cfg, run_dir, extra=extra)
    wait_for(lambda: run_finished(run_dir, 6), 300, "round 6", check=_alive_check(federation))

    rounds = pd.read_csv(run_dir / "rounds.csv")
    assert rounds["round"].tolist() == [1, 2, 3, 4, 5, 6]
    assert rounds["results"].tolist()[3:] == [3, 3, 3]
    _, done = load_global_checkpoint(run_dir / "final.pt")
    assert done == 6
    maker = federation.nodes["maker"]
    assert _steps_and_buffer(maker.state, "maker", 6)[0] == 6 * LOCAL_STEPS
    retail = federation.nodes["retail"]  # it missed round 3 if the test above killed it
    assert _steps_and_buffer(retail.state, "retail", 6)[0] == (6 - missed) * LOCAL_STEPS
