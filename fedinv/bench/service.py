"""``python -m fedinv.bench.service``: decisions per second and latency of one decision
service over loopback (docs/service.md).

A real ``fedinv serve`` process (one worker) for one organization (default: the one of
electronics-5r that buys on the most lanes, ``assemble-co``) in hybrid mode; a real HTTP
client (one keep-alive connection: the standard library's ``http.client`` by default,
``--client httpx`` for httpx) sends decisions one after another. The request
bodies are the organization's states of a simulated year (``simulate --projection
per-org``), cycled with the day index advancing, so the service sees realistic states,
infeasible days and solver calls included. Every decision is logged (SQLite WAL,
``--sync full`` by default, or ``normal``) before its reply, as in production.

    python -m fedinv.bench.service [--scenario electronics-5r] [--org ORG]
        [--policy base-stock] [--requests 2000] [--warmup 50] [--solver highspy]
        [--sync full|normal] [--client stdlib|httpx] [--json]
    python -m fedinv.bench.service --replay [--days N]    (a year through the services)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def largest_org(layout: Any) -> str:
    """The organization that buys on the most lanes (ties: most nodes, then file order)."""
    lanes = np.bincount(layout.lane_org, minlength=len(layout.org_ids))
    nodes = np.bincount(layout.node_org, minlength=len(layout.org_ids))
    best = max(range(len(layout.org_ids)), key=lambda o: (lanes[o], nodes[o], -o))
    return layout.org_ids[best]


def year_of_requests(
    scenario: Any, org: str, policy: str, mode: str, solver: str, days: int | None = None
) -> list[dict[str, Any]]:
    """The request bodies ``org`` receives over one simulated replication (per-org)."""
    from fedinv.registry import prepare, scenario_layout
    from fedinv.service.codec import Codec
    from fedinv.sim.run import simulate
    from fedinv.sim.simulator import Simulator

    layout = scenario_layout(scenario)
    codec = Codec.for_simulator(Simulator(scenario, days=days), org)
    bodies: list[dict[str, Any]] = []

    def record(scope: Any, view: Any, decision: Any) -> None:
        if scope.org_id == org:
            bodies.append(codec.request(view, 0, view.given_orders[0]))

    simulate(
        scenario,
        prepare(policy, scenario, layout).factory,
        replications=1,
        days=days,
        mode=mode,
        solver=solver,
        projection="per-org",
        on_org_decision=record,
    )
    return bodies


class _Post:
    """``post(path, body) -> (status, text)`` over one keep-alive connection: the
    standard library's :class:`http.client.HTTPConnection` (headers and body in one
    write) or an :class:`httpx.Client`."""

    def __init__(self, url: str, kind: str):
        if kind not in CLIENTS:
            raise ValueError(f"client must be one of {', '.join(CLIENTS)}, not {kind!r}")
        self.kind, self.url = kind, url
        if kind == "httpx":
            import httpx

            self.httpx = httpx.Client(timeout=30.0)
        else:
            import http.client
            from urllib.parse import urlsplit

            where = urlsplit(url)
            self.conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30.0)

    def __call__(self, path: str, body: bytes) -> tuple[int, str]:
        headers = {"Content-Type": "application/json"}
        if self.kind == "httpx":
            r = self.httpx.post(self.url + path, content=body, headers=headers)
            return r.status_code, r.text
        self.conn.request("POST", path, body, headers)
        resp = self.conn.getresponse()
        return resp.status, resp.read().decode()

    def close(self) -> None:
        (self.httpx if self.kind == "httpx" else self.conn).close()


CLIENTS = ("stdlib", "httpx")
"""The benchmark's HTTP clients (both real HTTP over loopback)."""


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``; 0 elsewhere)."""
    import os

    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(
    scenario_name: str = "electronics-5r",
    org: str | None = None,
    policy: str = "base-stock",
    requests: int = 2000,
    warmup: int = 50,
    solver: str = "highspy",
    mode: str = "hybrid",
    sync: str = "full",
    client: str = "stdlib",
) -> dict[str, Any]:
    """Start a service (``fedinv serve --sync SYNC``), send ``warmup + requests``
    decisions one after another over one keep-alive connection (``client``: ``stdlib``,
    :mod:`http.client`; or ``httpx``), return the figures (ms, decisions/s)."""
    from fedinv.model.scenario import load_scenario
    from fedinv.registry import scenario_layout
    from fedinv.service.replay import start_service, stop_service

    scenario = load_scenario(scenario_name)
    org = org or largest_org(scenario_layout(scenario))
    bodies = year_of_requests(scenario, org, policy, mode, solver)
    folder = Path(tempfile.mkdtemp(prefix="fedinv-bench-service-"))
    args = ["--scenario", scenario_name, "--policy", policy, "--mode", mode, "--solver", solver]
    service = start_service([*args, "--sync", sync], org, folder / "log.sqlite")
    latencies = []
    solve_ms = []
    try:
        post = _Post(service.url, client)
        total = warmup + requests
        t_start = 0.0
        for k in range(total):
            body = dict(bodies[k % len(bodies)])
            body["day"] = k
            body.pop("date", None)
            if k == warmup:
                t_start = time.perf_counter()
                cpu_start = _cpu_seconds(service.process.pid)
                client_start = time.process_time()
            t0 = time.perf_counter()
            status, text = post("/v1/decide", json.dumps(body).encode())
            dt = time.perf_counter() - t0
            if status != 200:
                raise RuntimeError(f"request {k}: HTTP {status}: {text}")
            if k >= warmup:
                latencies.append(dt * 1e3)
                solve_ms.append(json.loads(text)["solve_ms"])
        wall = time.perf_counter() - t_start
        cpu = _cpu_seconds(service.process.pid) - cpu_start
        client_cpu = time.process_time() - client_start
    finally:
        stop_service(service)
    post.close()
    lat = np.array(latencies)
    return {
        "scenario": scenario_name,
        "org": org,
        "policy": policy,
        "mode": mode,
        "solver": solver,
        "sync": sync,
        "requests": requests,
        "decisions_per_s": requests / wall,
        "latency_ms_p50": float(np.percentile(lat, 50)),
        "latency_ms_p99": float(np.percentile(lat, 99)),
        "latency_ms_max": float(lat.max()),
        "server_cpu_ms_per_decision": cpu / requests * 1e3,
        "client": client,
        "client_cpu_ms_per_request": client_cpu / requests * 1e3,
        "decide_ms_p50": float(np.percentile(solve_ms, 50)),
        "decide_ms_p99": float(np.percentile(solve_ms, 99)),
        "targets": {"decisions_per_s": 200, "latency_ms_p99": 50},
    }


def replay_year(
    scenario_name: str = "electronics-5r",
    policy: str = "base-stock",
    mode: str = "hybrid",
    solver: str = "highspy",
    days: int | None = None,
) -> dict[str, Any]:
    """A whole replication (the horizon, or ``days``) through one service per
    organization, compared with ``simulate(projection="per-org")``."""
    from fedinv.model.scenario import load_scenario
    from fedinv.registry import prepare, scenario_layout
    from fedinv.service.replay import per_org_orders, replay, start_services, stop_service

    scenario = load_scenario(scenario_name)
    folder = Path(tempfile.mkdtemp(prefix="fedinv-bench-replay-"))
    orgs = [o.id for o in scenario.network.organizations]
    args = ["--scenario", scenario_name, "--policy", policy, "--mode", mode, "--solver", solver]
    services = start_services(args, {org: folder / f"{org}.sqlite" for org in orgs})
    try:
        t0 = time.perf_counter()
        released, _ = replay(scenario, {s.org: s.url for s in services}, days=days)
        wall = time.perf_counter() - t0
    finally:
        for s in services:
            stop_service(s)
    factory = prepare(policy, scenario, scenario_layout(scenario)).factory
    expected = per_org_orders(scenario, factory, mode, solver, days)
    return {
        "scenario": scenario_name,
        "policy": policy,
        "mode": mode,
        "days": int(released.shape[0]),
        "organizations": len(orgs),
        "decisions": int(released.shape[0]) * len(orgs),
        "identical": bool(np.array_equal(released, expected)),
        "max_abs_difference": float(np.abs(released - expected).max()),
        "replay_s": wall,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fedinv.bench.service", description=__doc__)
    p.add_argument("--scenario", default="electronics-5r")
    p.add_argument("--org")
    p.add_argument("--policy", default="base-stock")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--solver", default="highspy", choices=("highspy", "pyomo"))
    p.add_argument("--mode", default="hybrid", choices=("hybrid", "pure"))
    p.add_argument(
        "--sync",
        default="full",
        choices=("full", "normal"),
        help="the service's log durability (fedinv serve --sync; default full)",
    )
    p.add_argument(
        "--client",
        default="stdlib",
        choices=CLIENTS,
        help="the HTTP client: stdlib (http.client, default) or httpx; one keep-alive "
        "connection either way",
    )
    p.add_argument(
        "--replay",
        action="store_true",
        help="instead: a whole year through one service per organization, compared "
        "with simulate --projection per-org",
    )
    p.add_argument("--days", type=int, help="with --replay: days (default: the horizon)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if a.replay:
        rep = replay_year(a.scenario, a.policy, a.mode, a.solver, a.days)
        if a.json:
            print(json.dumps(rep, indent=2))
        else:
            print(
                f"replayed {rep['days']} days x {rep['organizations']} organizations "
                f"({rep['decisions']} decisions over HTTP) in {rep['replay_s']:.1f} s: "
                + ("identical" if rep["identical"] else "DIFFERENT")
                + f" to simulate --projection per-org (max |diff| {rep['max_abs_difference']:.3g})"
            )
        return 0 if rep["identical"] else 1
    out = run(a.scenario, a.org, a.policy, a.requests, a.warmup, a.solver, a.mode, a.sync, a.client)
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        print(
            f"{out['org']} ({out['scenario']}, {out['policy']}, {out['mode']}/{out['solver']}, "
            f"sync {out['sync']}, client {out['client']}): "
            f"{out['decisions_per_s']:.0f} decisions/s, p50 {out['latency_ms_p50']:.1f} ms, "
            f"p99 {out['latency_ms_p99']:.1f} ms over {out['requests']} requests "
            f"(decide p50 {out['decide_ms_p50']:.1f} ms, p99 {out['decide_ms_p99']:.1f} ms; "
            f"server CPU {out['server_cpu_ms_per_decision']:.1f} ms per decision, client CPU "
            f"{out['client_cpu_ms_per_request']:.1f} ms per request)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
