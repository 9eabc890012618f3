"""The organization's long-lived trainer (fedinv.federation.trainer) and the thin
ClientApp over it (clients/client_app.py): the ClientApp module imports no torch,
pandas or scipy; the link carries arrays and scalars only; a real trainer process on a
Unix socket of mode 0600 answers exactly what the learner computes in-process; killed,
it is restarted by its supervisor and continues from the organization's files."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_federation import THREE_ORGS

from fedinv.deploy.supervisor import SupervisedTrainer, ping
from fedinv.federation.private_data import export_private_data
from fedinv.federation.task import FedConfig, LocalTrainer, new_model, roles_of, to_arrays
from fedinv.federation.trainer import TrainerService, listen, run_key
from fedinv.federation.wire import WireError, recv_frame, request, send_frame
from fedinv.model.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainer-chain")
    path = root / "chain-3.toml"
    path.write_text(THREE_ORGS)
    export_private_data(load_scenario(path), root / "data")
    return path, root / "data"


def _config(scenario: Path) -> FedConfig:
    return FedConfig(
        scenario=str(scenario),
        rounds=2,
        local_steps=6,
        replications=2,
        eval_replications=2,
        eval_days=10,
        batch_size=8,
        learning_starts=2,
        exploration_steps=10,
        hidden=(8,),
        reward_scale=50.0,
    )


def test_the_clientapp_module_imports_nothing_heavy():
    code = (
        "import sys, json, clients.client_app\n"
        "print(json.dumps([m for m in ('torch', 'pandas', 'scipy') if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_frames_carry_numeric_arrays_and_json_only(tmp_path):
    a, b = socket.socketpair()
    with a, b:
        arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.array(7)}
        send_frame(a, {"kind": "x", "v": [1.5, "s"]}, arrays)
        header, got = recv_frame(b)
        assert header == {"kind": "x", "v": [1.5, "s"]}
        assert list(got) == ["w", "n"]
        np.testing.assert_array_equal(got["w"], arrays["w"])
        assert got["w"].dtype == np.float32 and got["n"].shape == ()
        with pytest.raises(WireError, match="cannot cross"):
            send_frame(a, {}, {"o": np.array([object()])})
        a.sendall(b"\x00" * 7 + b"\x03" + b"{x}")
        with pytest.raises(WireError, match="malformed"):
            recv_frame(b)


def test_the_socket_is_private_to_its_user(tmp_path):
    path = tmp_path / "t" / "trainer.sock"
    server = listen(path)
    try:
        assert stat.S_ISSOCK(path.lstat().st_mode)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        with pytest.raises(RuntimeError, match="another trainer"):
            listen(path)
    finally:
        server.close()
    server = listen(path)  # a stale socket file (nobody listening) is replaced
    server.close()


def _header(cfg: FedConfig, server_round: int, run_dir: str = "/coord/runs/r") -> dict:
    return {
        "kind": "train",
        "run-config": {**cfg.to_flat(), "run-dir": run_dir},
        "config": {"server-round": server_round, "reward-scale": 50.0, "local-eval": True},
    }


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_served_trainer_answers_as_the_learner_and_survives_a_kill(chain, tmp_path):
    scenario, data = chain
    cfg = _config(scenario)
    roles = roles_of(load_scenario(scenario))
    start = to_arrays(new_model(cfg, roles))
    # the reference: the learner in this process, rounds 1 and 2
    ref = LocalTrainer(data / "retail", tmp_path / "ref", cfg, roles)
    ref_eval = ref.evaluate(start, cfg.eval_replications, cfg.eval_days)
    ref1, collected1, _ = ref.train_round(start, 1)
    ref2, _, _ = LocalTrainer(data / "retail", tmp_path / "ref", cfg, roles).train_round(ref1, 2)

    state = tmp_path / "state"
    sock = tmp_path / "node" / "trainer.sock"
    restarted: list[int] = []
    trainer = SupervisedTrainer(
        sock,
        data / "retail",
        state,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        log=tmp_path / "trainer.log",
        on_start=lambda p: restarted.append(p.pid),
    )
    with trainer:
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        reply, out = request(str(sock), _header(cfg, 1), start)
        assert reply["ok"], reply
        assert list(out) == list(start)
        for key in start:
            np.testing.assert_array_equal(out[key], ref1[key])
        metrics = reply["metrics"]
        assert metrics["local-cost-per-day"] == pytest.approx(ref_eval["local-cost-per-day"])
        assert metrics["examples-distributor"] == collected1["distributor"]
        assert all(isinstance(v, float) for v in metrics.values())
        # a request cannot choose another folder: the trainer serves retail's data only
        other = {**_header(cfg, 1, "/coord/runs/other"), "data-dir": str(data / "maker")}
        reply, _ = request(str(sock), other, start)
        assert reply["ok"] and "examples-supplier" in reply["metrics"]
        assert reply["metrics"]["examples-supplier"] == 0.0  # retail has no supplier

        first = trainer.pid
        os.kill(first, signal.SIGKILL)  # the trainer dies; its supervisor restarts it
        deadline = time.monotonic() + 90
        while (trainer.pid == first or ping(sock) is None) and time.monotonic() < deadline:
            time.sleep(0.2)
        answer = ping(sock)
        assert answer is not None and answer["pid"] == trainer.pid != first
        assert trainer.restarts == 1 and len(restarted) == 2
        # round 2 in the new process continues from retail's round-1 files
        reply, out = request(str(sock), _header(cfg, 2), ref1)
        assert reply["ok"], reply
        for key in start:
            np.testing.assert_array_equal(out[key], ref2[key])
        saved = state / run_key("/coord/runs/r") / "retail"
        assert (saved / "round-0002" / "learner.pt").is_file()
    # stopped: the process is gone and so is its socket
    assert trainer.proc.poll() is not None
    assert not sock.exists()


def test_a_failing_request_is_an_error_reply_not_a_crash(chain, tmp_path):
    scenario, data = chain
    cfg = _config(scenario)
    service = TrainerService(data / "maker", tmp_path)
    header = _header(cfg, 1)
    header["run-config"]["fail-org"] = "maker"
    reply, out = service.handle(header, {})
    assert reply == {"ok": False, "error": "RuntimeError: fault injected for organization 'maker'"}
    assert out == {}
    assert service.handle({"kind": "ping"}, {})[0]["ok"]


def test_packing_is_exact_and_checks_the_layout():
    from fedinv.federation.packing import layout_of, layout_text, pack, parse_layout, unpack

    rng = np.random.default_rng(3)
    arrays = {
        "nets.a.w": rng.standard_normal((3, 4)).astype(np.float32),
        "nets.a.n": np.array(2**40 + 1, dtype=np.int64),
        "nets.b.b": rng.standard_normal(5),
    }
    layout = parse_layout(layout_text(layout_of(arrays)))
    flat = pack(arrays, layout)
    assert flat.shape == (12 + 1 + 5,) and flat.dtype == np.float64
    back = unpack(flat, layout)
    assert list(back) == list(arrays)
    for key, value in arrays.items():
        assert back[key].dtype == value.dtype and back[key].shape == value.shape
        np.testing.assert_array_equal(back[key], value)
    with pytest.raises(ValueError, match="layout says"):
        pack({**arrays, "nets.b.b": np.zeros(4)}, layout)
    with pytest.raises(ValueError, match="layout needs 18"):
        unpack(flat[:-1], layout)


def test_a_kept_learner_trains_as_a_fresh_one_from_the_files(chain, tmp_path):
    """The trainer keeps its learner across rounds; round 2 from memory gives exactly
    what a fresh process loading round 1's files gives (the files are the truth)."""
    scenario, data = chain
    cfg = _config(scenario)
    roles = roles_of(load_scenario(scenario))
    start = to_arrays(new_model(cfg, roles))
    service = TrainerService(data / "wholesale", tmp_path / "kept")
    reply, after1 = service.handle(_header(cfg, 1), start)
    assert reply["ok"], reply
    reply, kept2 = service.handle(_header(cfg, 2), after1)
    assert reply["ok"], reply
    fresh = TrainerService(data / "wholesale", tmp_path / "fresh")
    fresh.handle(_header(cfg, 1), start)
    reply, fresh2 = TrainerService(data / "wholesale", tmp_path / "fresh").handle(
        _header(cfg, 2), after1
    )
    for key in start:
        np.testing.assert_array_equal(kept2[key], fresh2[key])
    # a round 1 re-run after round 2 (no saved state before it) starts afresh too
    reply, again1 = service.handle(_header(cfg, 1), start)
    for key in start:
        np.testing.assert_array_equal(again1[key], after1[key])
