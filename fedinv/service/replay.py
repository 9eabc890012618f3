"""A simulated year through decision services, and a simulation's decision log.

* :func:`start_service` / :func:`stop_service` -- a ``fedinv serve`` process on a free
  loopback port (tests, the benchmark and ``fedinv replay`` use real processes);
* :func:`replay` -- plays one replication of a scenario day by day: every morning the
  simulator's state goes, organization by organization downstream-first, to that
  organization's service over HTTP (with the orders its customers' services released
  today), and the released orders of all replies are the day's orders. It releases
  exactly what ``simulate(projection="per-org")`` releases (a test): the services run
  the same organization deciders on the same views;
* :class:`SimulationLog` -- ``fedinv simulate --log``: the entries the services would
  write, one chain per organization (``ORG``; ``ORG/rR`` for replication ``R`` when a
  run has several), so a study's decisions are auditable the same way.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedinv.policies.perorg import decision_order
from fedinv.service.codec import Codec, DecisionRequest, digest
from fedinv.service.log import DecisionLog


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServiceProcess:
    """A running ``fedinv serve`` process."""

    process: subprocess.Popen
    url: str
    log: Path
    org: str
    ca: Path | None = None
    """The CA file an HTTPS service's certificate is checked against."""

    @property
    def verify(self) -> Any:
        """httpx's ``verify``: the CA's SSL context (HTTPS), or True."""
        if self.ca is None:
            return True
        import ssl

        return ssl.create_default_context(cafile=str(self.ca))


def start_service(
    serve_args: Sequence[str],
    org: str,
    log: Path,
    *,
    port: int | None = None,
    token_file: Path | None = None,
    tls: tuple[Path, Path, Path] | None = None,
    timeout: float = 120.0,
) -> ServiceProcess:
    """Start ``python -m fedinv serve --org ORG --log LOG SERVE_ARGS...`` on a free port
    and wait until ``/v1/health`` answers (RuntimeError with its stderr if it exits).
    ``tls``: ``(certfile, keyfile, ca file)``, the service then speaks HTTPS."""
    service = launch_service(serve_args, org, log, port=port, token_file=token_file, tls=tls)
    return wait_ready(service, token_file, timeout)


def start_services(
    serve_args: Sequence[str], logs: dict[str, Path], timeout: float = 120.0
) -> list[ServiceProcess]:
    """One service per organization (``logs``: ``{org: log path}``), started together
    (their imports overlap) and each waited for."""
    launched = [launch_service(serve_args, org, log) for org, log in logs.items()]
    ready = []
    try:
        for s in launched:
            ready.append(wait_ready(s, None, timeout))
    except BaseException:
        for s in launched:
            stop_service(s)
        raise
    return ready


def launch_service(
    serve_args: Sequence[str],
    org: str,
    log: Path,
    *,
    port: int | None = None,
    token_file: Path | None = None,
    tls: tuple[Path, Path, Path] | None = None,
) -> ServiceProcess:
    """Start the process without waiting (see :func:`wait_ready`)."""
    port = port or free_port()
    cmd = [
        sys.executable,
        "-m",
        "fedinv",
        "serve",
        "--org",
        org,
        "--log",
        str(log),
        "--port",
        str(port),
        *serve_args,
    ]
    if token_file is not None:
        cmd += ["--token-file", str(token_file)]
    if tls is not None:
        cmd += ["--certfile", str(tls[0]), "--keyfile", str(tls[1])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    scheme = "http" if tls is None else "https"
    return ServiceProcess(
        proc, f"{scheme}://127.0.0.1:{port}", Path(log), org, None if tls is None else tls[2]
    )


def wait_ready(
    service: ServiceProcess, token_file: Path | None = None, timeout: float = 120.0
) -> ServiceProcess:
    """Wait until ``service`` answers ``/v1/health`` (RuntimeError, with its stderr, if
    it exits or does not answer within ``timeout`` seconds)."""
    import httpx

    proc, url, org = service.process, service.url, service.org
    headers = {}
    if token_file is not None:
        headers["Authorization"] = f"Bearer {Path(token_file).read_text().strip()}"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"fedinv serve for {org} exited with {proc.returncode}: {err}")
        try:
            r = httpx.get(url + "/v1/health", headers=headers, timeout=1.0, verify=service.verify)
            if r.status_code == 200:
                return service
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop_service(service)
            raise RuntimeError(f"fedinv serve for {org} did not answer within {timeout} s")
        time.sleep(0.1)


def stop_service(service: ServiceProcess, kill: bool = False) -> None:
    """Stop the process (SIGKILL with ``kill``, else SIGTERM then SIGKILL) and reap it."""
    proc = service.process
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stderr:
        proc.stderr.close()


def replay(
    scenario: Any,
    urls: dict[str, str],
    *,
    days: int | None = None,
    replication: int = 0,
    token: str | None = None,
) -> tuple[np.ndarray, dict[str, str]]:
    """Play replication ``replication`` of ``scenario`` through the services ``urls``
    (``{org: base url}``, one per organization); returns the released orders ``[D, M]``
    and each service's last entry hash ``{org: hash}``."""
    import httpx

    from fedinv.sim.simulator import Decision, Simulator

    sim = Simulator(scenario, days=days)
    lay = sim.layout
    missing = [o for o in lay.org_ids if o not in urls]
    if missing:
        raise ValueError(f"no service for organization(s) {', '.join(missing)}")
    codecs = {o: Codec.for_simulator(sim, o) for o in lay.org_ids}
    order = [lay.org_ids[o] for o in decision_order(lay)]
    lane_index = {name: j for j, name in enumerate(lay.lane_ids)}
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    state, exo = sim.reset([replication])
    out = np.zeros((sim.days, lay.num_lanes))
    heads: dict[str, str] = {}
    with httpx.Client(headers=headers, timeout=60.0) as client:
        for t in range(sim.days):
            released = np.zeros((1, lay.num_lanes))
            for org in order:
                body = codecs[org].request(state, 0, released[0])
                r = client.post(urls[org] + "/v1/decide", json=body)
                if r.status_code != 200:
                    raise RuntimeError(f"{org} on day {t}: HTTP {r.status_code}: {r.text}")
                reply = r.json()
                for name, units in reply["released"].items():
                    released[0, lane_index[name]] = units
                heads[org] = reply["entry_hash"]
            out[t] = released[0]
            state, _ = sim.step(state, exo, Decision(released))
    return out, heads


def per_org_orders(
    scenario: Any,
    factory: Any,
    mode: str,
    solver: str,
    days: int | None = None,
    replication: int = 0,
) -> np.ndarray:
    """Released orders ``[D, M]`` of ``simulate(projection="per-org")`` on replication
    ``replication`` alone (a batch of 1, as the services run)."""
    from fedinv.sim.run import simulate

    rows: dict[int, np.ndarray] = {}

    def record(scope: Any, view: Any, decision: Any) -> None:
        row = rows.setdefault(int(view.day), np.zeros(view.owed.shape[1]))
        row[scope.own] = np.asarray(decision.orders)[0, scope.own]

    result = simulate(
        scenario,
        factory,
        replications=1,
        first_replication=replication,
        days=days,
        mode=mode,
        solver=solver,
        projection="per-org",
        on_org_decision=record,
    )
    return np.array([rows[t] for t in range(result.days)])


class SimulationLog:
    """``simulate(..., on_org_decision=SimulationLog(...))``: appends every
    organization's decision as the service would (same request digest, released
    orders, policy and checkpoint digests); chains per organization and replication."""

    def __init__(
        self,
        path: Path,
        sim: Any,
        replications: Sequence[int],
        policy_digests: dict[str, str],
        checkpoint_digest: str | None,
    ):
        self.log = DecisionLog(path, sync="normal")
        self.codecs = {o: Codec.for_simulator(sim, o) for o in sim.layout.org_ids}
        self.reps = tuple(replications)
        self.policy_digests = policy_digests
        self.checkpoint_digest = checkpoint_digest

    def chain(self, org: str, row: int) -> str:
        return org if len(self.reps) == 1 else f"{org}/r{self.reps[row]}"

    def __call__(self, scope: Any, view: Any, decision: Any) -> None:
        codec = self.codecs[scope.org_id]
        orders = np.asarray(decision.orders)
        for b in range(orders.shape[0]):
            body = codec.request(view, b, view.given_orders[b])
            DecisionRequest.model_validate(body)  # what a service would accept
            request_digest = digest(body)
            self.log.append(
                self.chain(scope.org_id, b),
                kind="decision",
                org=scope.org_id,
                day=int(view.day),
                request_digest=request_digest,
                released=codec.orders(orders[b]),
                policy_digest=self.policy_digests[scope.org_id],
                checkpoint_digest=self.checkpoint_digest,
            )

    def heads(self) -> dict[str, str]:
        return {c: self.log.head(c)[1] for c in self.log.chains()}

    def close(self) -> None:
        """Close the database (``head_hashes`` keeps each chain's last hash)."""
        self.head_hashes = self.heads()
        self.log.close()
