"""An organization's long-lived local trainer: what the thin ClientApp hands every Flower
message to (docs/deployment.md, "The trainer process").

* :class:`TrainerService` turns one request (the run config, the server's config, the
  global arrays) into one reply (arrays and scalar metrics) with the organization's
  learner (:func:`fedinv.federation.task.make_trainer`), kept in memory across rounds:
  torch, the scenario, the model, the environment are made once per run, not once per
  message. The learner still loads its state of the round before from its files and
  saves the new one (so a restarted trainer, or a round re-run after a crash, continues
  exactly as an uninterrupted one) — the files are the truth, the memory a cache.
* :func:`serve` listens on a Unix domain socket (mode 0600 in a folder of mode 0700,
  and only peers of the same user id, checked with ``SO_PEERCRED``) and answers one
  request at a time: ``python -m fedinv.federation.trainer serve --socket PATH --data
  ORG_DIR --state STATE_DIR``. ``fedinv deploy node`` starts it and restarts it if it
  dies (:mod:`fedinv.deploy.supervisor`).
* In simulation the ClientApp calls a :class:`TrainerService` of its own process.

This module imports nothing heavy at import time (the ClientApp imports it for
:func:`locate`); torch comes with the first request (or :meth:`TrainerService.warm`).
A request may not choose the data folder of a served trainer: that is fixed when the
trainer starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import stat
import struct
import sys
import time
import traceback
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedinv.federation.wire import WireError, recv_frame, send_frame

HEAVY_MODULES = ("torch", "pandas", "scipy")
"""What the ClientApp process must not import (the trainer holds them)."""
CACHED_RUNS = 4
"""Learners kept in memory at once (one per run configuration)."""


def run_key(run_dir: str) -> str:
    """A deployed run's folder on a node: the run folder's name and a short hash of its
    full path on the coordinator."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(run_dir).name) or "run"
    return f"{name}-{hashlib.sha256(run_dir.encode()).hexdigest()[:8]}"


def locate(node_config: Mapping[str, Any], run_config: Mapping[str, Any]) -> tuple[Path, Path]:
    """A node's data folder and state folder: from its node config (``data-dir``,
    ``state-dir``; deployment: the state of a run in ``STATE/RUN-KEY/``), else from the
    run config's ``data-dir`` (simulation: partition k takes the k-th organization
    folder, sorted) and ``state-dir``."""
    if "data-dir" in node_config:
        data = Path(str(node_config["data-dir"]))
        state = Path(str(node_config.get("state-dir", data.parent / ".fedinv-state")))
        return data, state / run_key(str(run_config.get("run-dir", "")))
    root = Path(str(run_config["data-dir"]))
    orgs = sorted(p for p in root.iterdir() if (p / "scenario.toml").is_file())
    k = int(node_config["partition-id"])
    if k >= len(orgs):
        raise RuntimeError(
            f"partition {k} has no organization folder in {root} ({len(orgs)} found)"
        )
    return orgs[k], Path(str(run_config["state-dir"]))


class TrainerService:
    """One organization's learners, in memory, answering requests (see the module doc).

    A request header: ``kind`` (``train``, ``evaluate`` or ``ping``), ``run-config``
    (Flower's run config, flat), ``config`` (what the server sent: ``server-round``,
    ``round-offset``, ``reward-scale``, ``proximal-mu``, ``local-eval``), and, in
    simulation only, ``data-dir`` / ``state-dir``. The arrays: the global weights, in
    the server's order. A reply: ``ok``, ``metrics`` (floats), the new weights for
    ``train``; or ``ok: false`` and ``error`` (the exception's text)."""

    def __init__(self, data_dir: str | Path | None = None, state_dir: str | Path | None = None):
        self.data_dir = None if data_dir is None else Path(data_dir).resolve()
        self.state_dir = None if state_dir is None else Path(state_dir).resolve()
        self._learners: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self.served = 0

    @staticmethod
    def warm() -> None:
        """Import torch and the learners now, and what torch imports lazily on a first
        optimizer and network (``torch._dynamo``: seconds), so the first round does not
        pay for them (a served trainer does it at start)."""
        import torch

        import fedinv.federation.task  # noqa: F401
        from fedinv.federation.private_data import load_org_scenario  # noqa: F401

        layer = torch.nn.Linear(2, 1)
        torch.optim.Adam(layer.parameters()).step()

    def _where(self, header: Mapping[str, Any]) -> tuple[Path, Path]:
        run = header.get("run-config", {})
        if self.data_dir is not None:  # a served trainer: its own folders, always
            assert self.state_dir is not None
            return self.data_dir, self.state_dir / run_key(str(run.get("run-dir", "")))
        return Path(str(header["data-dir"])), Path(str(header["state-dir"]))

    def _learner(self, header: Mapping[str, Any], arrays: Mapping[str, np.ndarray]):
        from fedinv.federation.task import FedConfig, make_trainer, role_of_key, roles_of
        from fedinv.model.scenario import load_scenario

        run = dict(header.get("run-config", {}))
        sent = dict(header.get("config", {}))
        cfg = FedConfig.from_flat(run)
        if "reward-scale" in sent:  # the server's values win over the run config
            cfg.reward_scale = float(sent["reward-scale"])
        if "proximal-mu" in sent:
            cfg.strategy, cfg.proximal_mu = "fedprox", float(sent["proximal-mu"])
        data, state = self._where(header)
        fail = str(run.get("fail-org", ""))
        if fail and data.name == fail:  # fault injection for tests: this organization raises
            raise RuntimeError(f"fault injected for organization {fail!r}")
        # the roles of the global model, from the names of the arrays the server sent (a
        # node need not have the whole network's scenario file)
        roles = tuple(dict.fromkeys(r for r in (role_of_key(k) for k in arrays) if r))
        roles = roles or roles_of(load_scenario(cfg.scenario))
        base = str(sent["base"]) if "base" in sent else None  # HDPO: the server's base
        key = json.dumps([str(data), str(state), cfg.to_flat(), list(roles), base], default=str)
        if key in self._learners:
            self._learners.move_to_end(key)
            learner, uses = self._learners[key]
        else:
            learner, uses = make_trainer(data, state, cfg, roles, base), 0
        self._learners[key] = (learner, uses + 1)
        while len(self._learners) > CACHED_RUNS:
            self._learners.popitem(last=False)
        return key, learner, uses, cfg, roles, base

    def handle(
        self, header: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Answer one request (errors become an ``ok: false`` reply)."""
        kind = str(header.get("kind", ""))
        self.served += 1
        if kind == "ping":
            return {"ok": True, "pid": os.getpid(), "served": self.served}, {}
        try:
            if kind == "train":
                return self._train(header, arrays)
            if kind == "evaluate":
                return self._evaluate(header, arrays)
            raise ValueError(f"unknown request kind {kind!r}")
        except Exception as exc:  # noqa: BLE001 - reported to the server as the node's failure
            text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            return {"ok": False, "error": text}, {}

    def _train(self, header, arrays):
        from fedinv.federation.task import make_trainer

        key, learner, uses, cfg, roles, base = self._learner(header, arrays)
        sent = header.get("config", {})
        server_round = int(sent["server-round"]) + int(sent.get("round-offset", 0))
        if uses and learner._last_before(server_round) == 0:
            # a round re-run with no saved state before it: start from a fresh learner,
            # as a restarted trainer would (the cached one has trained since)
            learner = make_trainer(*self._where(header), cfg, roles, base)
            self._learners[key] = (learner, 1)
        metrics: dict[str, float] = {}
        if sent.get("local-eval"):  # a fat round: the received weights' local cost first
            found = learner.evaluate(arrays, cfg.eval_replications, cfg.eval_days)
            metrics["local-cost-per-day"] = found["local-cost-per-day"]
            metrics["local-eval-examples"] = found["num-examples"]
        weights, collected, trained = learner.train_round(dict(arrays), server_round)
        metrics.update(trained)
        # every client reports every role (the server needs the same keys from all)
        metrics.update({f"examples-{r}": float(collected.get(r, 0.0)) for r in roles})
        reply = {"ok": True, "metrics": {k: float(v) for k, v in metrics.items()}}
        return reply, {k: weights[k] for k in arrays}

    def _evaluate(self, header, arrays):
        _, learner, _, cfg, _, _ = self._learner(header, arrays)
        metrics = learner.evaluate(dict(arrays), cfg.eval_replications, cfg.eval_days)
        return {"ok": True, "metrics": {k: float(v) for k, v in metrics.items()}}, {}


# -- the served trainer ------------------------------------------------------------------


def socket_path_for(folder: str | Path) -> Path:
    """Where a node's trainer listens: ``FOLDER/trainer.sock`` (a Unix socket's path is
    at most 107 bytes; a longer one goes into a fresh private folder under /tmp)."""
    path = Path(folder).resolve() / "trainer.sock"
    if len(str(path).encode()) < 100:
        return path
    import tempfile

    return Path(tempfile.mkdtemp(prefix="fedinv-trainer-")) / "trainer.sock"


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def listen(path: str | Path) -> socket.socket:
    """A listening Unix socket at ``path``, mode 0600, in a folder of mode 0700 (made if
    missing); a stale socket file is replaced, a live trainer's is an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise RuntimeError(f"{path} exists and is not a socket")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            if probe.connect_ex(str(path)) == 0:
                raise RuntimeError(f"another trainer is listening on {path}")
        path.unlink()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        server.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    server.listen(8)
    return server


def serve(path: str | Path, service: TrainerService, *, log=None) -> None:
    """Answer requests on the Unix socket ``path`` until SIGTERM / SIGINT (one at a time;
    a peer of another user id is refused)."""
    say = log or (lambda line: print(f"{time.strftime('%H:%M:%S')} {line}", flush=True))
    server = listen(path)
    stopping = False

    def stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True
        server.close()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    say(f"trainer {os.getpid()} listening on {path}")
    try:
        while not stopping:
            try:
                conn, _ = server.accept()
            except OSError:
                break
            with conn:
                if _peer_uid(conn) != os.getuid():
                    say("refused a peer of another user id")
                    continue
                try:
                    header, arrays = recv_frame(conn)
                except (WireError, OSError) as exc:
                    say(f"bad request: {exc}")
                    continue
                started = time.perf_counter()
                reply, out = service.handle(header, arrays)
                try:
                    send_frame(conn, reply, out)
                except OSError as exc:  # the ClientApp went away (its node was stopped)
                    say(f"reply not delivered: {exc}")
                round_ = header.get("config", {}).get("server-round", "")
                say(
                    f"{header.get('kind')} round {round_}: "
                    f"{'ok' if reply.get('ok') else reply.get('error')} "
                    f"({time.perf_counter() - started:.2f} s)"
                )
    finally:
        server.close()
        try:
            Path(path).unlink()
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    """``python -m fedinv.federation.trainer serve --socket PATH --data DIR --state DIR``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m fedinv.federation.trainer")
    parser.add_argument("action", choices=["serve"])
    parser.add_argument("--socket", required=True)
    parser.add_argument("--data", required=True, help="the organization's private data folder")
    parser.add_argument("--state", required=True, help="its training state folder")
    args = parser.parse_args(argv)
    service = TrainerService(args.data, args.state)
    service.warm()
    serve(args.socket, service)
    return 0


if __name__ == "__main__":
    sys.exit(main())
