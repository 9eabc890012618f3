"""Seconds per round of Flower's deployment engine against its simulation engine, for the
same :class:`~fedinv.federation.task.FedConfig`, and peak memory: ``fedinv bench deploy``
(or ``python -m fedinv.bench.deployment``).

The configuration runs twice, one after the other, on the same private data folders:

* simulation: :func:`fedinv.federation.local.run_federation` (a SuperLink in simulation
  mode, Ray, one simulated SuperNode per organization with one CPU each; the same
  ClientApp, its trainer in the Ray worker's process);
* deployment: :class:`fedinv.deploy.engine.LocalDeployment` (a SuperLink, and per
  organization a SuperNode and its trainer process, on 127.0.0.1 with TLS and node
  authentication).

A round's seconds are the differences of consecutive ``wall_s`` of ``rounds.csv`` (the
ServerApp's clock: the clients' training and evaluation, the server's evaluation and
checkpoint); a run's figure is the median of rounds 2..N (round 1 includes the
engines' warm-up). Memory: the peak, sampled every 0.5 s, of the resident set of every
process of the simulation, and per organization of its SuperNode (with the ClientApp
processes it starts), its trainer and its ClientApp launcher (with the ClientApps it
forks), plus the coordinator's SuperLink and ServerApp.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fedinv.federation.task import FedConfig

NEAR_EMPTY = {
    "local_steps": 1,
    "replications": 1,
    "eval_replications": 1,
    "eval_days": 2,
    "batch_size": 8,
    "learning_starts": 10**6,
}
"""FedConfig fields of a near-empty round (what is left is the engines' own cost)."""


def _round_seconds(run_dir: Path) -> list[float]:
    import pandas as pd

    walls = pd.read_csv(run_dir / "rounds.csv")["wall_s"].to_numpy()
    return np.diff(np.concatenate([[0.0], walls])).tolist()


def steady(rounds: list[float]) -> float:
    """The median of rounds 2..N (all of them if there is one)."""
    return float(np.median(rounds[1:] if len(rounds) > 1 else rounds))


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakMemory:
    """Peak resident memory (MiB) of groups of process trees, sampled every ``every`` s
    from a thread: ``groups()`` returns ``{name: [root PID, ...]}`` at each sample."""

    def __init__(self, groups: Callable[[], dict[str, list[int]]], every: float = 0.5):
        self.groups, self.every = groups, every
        self.peak: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from fedinv.federation.processes import process_tree

        while not self._stop.wait(self.every):
            try:
                groups = self.groups()
            except Exception:  # noqa: BLE001 - a process list changing under us
                continue
            for name, roots in groups.items():
                pids = {p for root in roots for p, _ in process_tree(root)}
                pids.discard(os.getpid())
                total = sum(_rss_kib(p) for p in pids) / 1024.0
                self.peak[name] = max(self.peak.get(name, 0.0), total)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5.0)


def compare(
    cfg: FedConfig,
    echo: Callable[[str], None] | None = None,
    *,
    launcher: bool = True,
    short_wait: bool = True,
) -> dict:
    """Seconds per round and peak memory in simulation and in deployment for ``cfg``
    (deployed with the nodes' ClientApp launchers and short idle wait unless told not
    to: :class:`fedinv.deploy.engine.LocalDeployment`'s ``launcher``, ``short_wait``)."""
    from fedinv.deploy.engine import SUPERNODE_IDLE_WAIT, LocalDeployment, run_finished, wait_for
    from fedinv.federation.local import run_federation
    from fedinv.federation.private_data import export_private_data
    from fedinv.model.scenario import load_scenario

    say = echo or (lambda _: None)
    out: dict = {
        "config": dataclasses.asdict(cfg),
        "launcher": launcher,
        "supernode_idle_wait_s": SUPERNODE_IDLE_WAIT if short_wait else 3.0,
    }
    with tempfile.TemporaryDirectory(prefix="fedinv-bench-deploy-") as tmp:
        root = Path(tmp)
        export_private_data(load_scenario(cfg.scenario), root / "data")
        orgs = sorted(p.name for p in (root / "data").iterdir())
        out["organizations"] = len(orgs)

        sim = root / "sim"
        (sim / "data").mkdir(parents=True)
        for org in orgs:
            (sim / "data" / org).symlink_to(root / "data" / org)
        say(f"simulation: {len(orgs)} organizations, {cfg.rounds} rounds ...")
        started = time.perf_counter()
        with PeakMemory(lambda: {"all": [os.getpid()]}) as memory:
            run_federation(cfg, sim)
        out["sim_total_s"] = time.perf_counter() - started
        out["sim_round_s"] = _round_seconds(sim)
        out["sim_peak_mib"] = memory.peak.get("all", 0.0)

        say("deployment (TLS, node authentication) ...")
        started = time.perf_counter()
        with LocalDeployment(
            root / "site",
            root / "data",
            root / "keys",
            echo=say,
            launcher=launcher,
            short_wait=short_wait,
        ) as fed:
            out["deploy_startup_s"] = time.perf_counter() - started

            def groups() -> dict[str, list[int]]:
                found = {
                    org: [
                        p.pid
                        for p in (
                            node.proc,
                            getattr(node.trainer, "proc", None),
                            getattr(node.launcher, "proc", None),
                        )
                        if p is not None
                    ]
                    for org, node in fed.nodes.items()
                }
                found["coordinator"] = [fed.superlink.pid] if fed.superlink else []
                return found

            with PeakMemory(groups) as memory:
                fed.submit(cfg, root / "deployed")
                wait_for(
                    lambda: run_finished(root / "deployed", cfg.rounds), 3600, "the run", poll=0.5
                )
        out["deploy_total_s"] = time.perf_counter() - started
        out["deploy_round_s"] = _round_seconds(root / "deployed")
        out["deploy_peak_mib"] = dict(memory.peak)
    out["sim_steady_round_s"] = steady(out["sim_round_s"])
    out["deploy_steady_round_s"] = steady(out["deploy_round_s"])
    out["ratio"] = out["deploy_steady_round_s"] / max(out["sim_steady_round_s"], 1e-9)
    return out


def report(result: dict) -> str:
    """The figures as text: per round side by side, medians, memory."""
    cfg = result["config"]
    lines = [
        f"{cfg['scenario']}: {result['organizations']} organizations, {cfg['rounds']} rounds "
        f"of {cfg['local_steps']} local steps x {cfg['replications']} replications, "
        f"evaluation {cfg['eval_replications']} x {cfg['eval_days']} days",
        f"{'round':>5}  {'simulated s':>11}  {'deployed s':>10}",
    ]
    for i, (a, b) in enumerate(zip(result["sim_round_s"], result["deploy_round_s"], strict=False)):
        lines.append(f"{i + 1:>5}  {a:>11.1f}  {b:>10.1f}")
    lines += [
        f"{'2..N':>5}  {result['sim_steady_round_s']:>11.1f}  "
        f"{result['deploy_steady_round_s']:>10.1f}   (median; deployed / simulated = "
        f"{result['ratio']:.2f})",
        f"whole commands: simulation {result['sim_total_s']:.0f} s, deployment "
        f"{result['deploy_total_s']:.0f} s ({result['deploy_startup_s']:.0f} s to start the "
        "SuperLink, the trainers and the SuperNodes)",
        f"peak memory: simulation {result['sim_peak_mib']:.0f} MiB in all; deployment per "
        "organization (SuperNode, its ClientApps, its trainer): "
        + ", ".join(
            f"{org} {mib:.0f} MiB"
            for org, mib in sorted(result["deploy_peak_mib"].items())
            if org != "coordinator"
        )
        + f"; coordinator (SuperLink, ServerApp) "
        f"{result['deploy_peak_mib'].get('coordinator', 0.0):.0f} MiB",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m fedinv.bench.deployment ARGS``: as ``fedinv bench deploy ARGS``."""
    from fedinv.cli import main as cli

    return cli(["bench", "deploy", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
