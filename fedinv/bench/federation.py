"""Benchmarks of federated training, run on demand: ``python -m fedinv.bench.federation
[--compare-only]`` (docs/federation.md quotes its figures).

* :func:`overhead`: Flower's cost per round in simulation. Clients train for one day
  and evaluate almost nothing, so a round's wall time is Flower's overhead (message
  passing, the simulation engine, a fresh ClientApp per message) plus the server's small
  global evaluation; peak memory is the largest sum of the resident memory of every
  process of the run (sampled every 0.5 s).
* :func:`compare`: federated vs isolated (each organization alone on its own data) vs
  centralized (one learner on the whole network), with the same training budget per
  organization: ``rounds x local_steps`` days on ``replications`` replications; every
  policy evaluated on the whole network on the same held-out replications, beside the
  tuned base-stock policy.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from fedinv.federation.task import (
    FedConfig,
    LocalTrainer,
    new_model,
    role_weighted_average,
    roles_of,
    to_arrays,
)


def _tree_rss_mb() -> float:
    """Resident memory of every process of this user but PID 1, MiB."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or entry.name == "1":
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024.0


def overhead(scenario: str = "electronics-5r", rounds: int = 3) -> dict[str, float]:
    """Seconds per round of a near-empty federated round, and peak memory (MiB)."""
    from fedinv.federation.local import run_federation

    cfg = FedConfig(
        scenario=scenario,
        rounds=rounds,
        local_steps=1,
        replications=1,
        eval_replications=1,
        eval_days=2,
        batch_size=8,
        learning_starts=10**6,
        reward_scale=100.0,
    )
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        base = _tree_rss_mb()
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss_mb() - base)
            time.sleep(0.5)

    watcher = threading.Thread(target=sample, daemon=True)
    with tempfile.TemporaryDirectory() as tmp:
        watcher.start()
        started = time.perf_counter()
        try:
            run = run_federation(cfg, tmp)
        finally:
            done.set()
            watcher.join()
        total = time.perf_counter() - started
        rounds_frame = pd.read_csv(run.rounds_csv)
    walls = np.diff(np.concatenate([[0.0], rounds_frame["wall_s"].to_numpy()]))
    return {
        "clients": float(rounds_frame["results"].iloc[0]),
        "rounds": float(rounds),
        "seconds_per_round": float(np.median(walls)),
        "client_train_seconds": float(rounds_frame["train-seconds"].mean()),
        "total_seconds_with_startup": total,
        "peak_memory_mib": peak[0],
    }


def compare(
    scenario_name: str = "electronics-5r",
    rounds: int = 4,
    local_steps: int = 120,
    replications: int = 4,
    eval_replications: int = 10,
    seed: int = 1,
) -> pd.DataFrame:
    """Held-out cost per day of federated, isolated and centralized DQN and the tuned
    base-stock policy, on the whole network (see module doc)."""
    import torch

    from fedinv.agents.dqn import train
    from fedinv.federation.private_data import export_private_data
    from fedinv.federation.task import default_reward_scale, isolated_policy
    from fedinv.model.scenario import load_scenario
    from fedinv.policies.classical import make_policy
    from fedinv.policies.tuning import tune
    from fedinv.sim.metrics import summarize
    from fedinv.sim.run import mean_cost_per_day
    from fedinv.sim.simulator import Simulator

    scenario = load_scenario(scenario_name)
    days = scenario.horizon_days
    cfg = FedConfig(
        scenario=scenario_name,
        rounds=rounds,
        local_steps=local_steps,
        replications=replications,
        eval_replications=eval_replications,
        eval_days=days,
        seed=seed,
        exploration_steps=rounds * local_steps // 2,
    )
    cfg = replace(cfg, reward_scale=default_reward_scale(scenario, cfg))
    roles = roles_of(scenario)
    sim = Simulator(scenario)
    held_out = list(range(eval_replications))
    rows = []

    def record(name: str, cost: np.ndarray, seconds: float) -> None:
        s = summarize(pd.DataFrame({"c": cost})).loc["c"]
        rows.append(
            {"policy": name, "cost_per_day": s["mean"], "ci95": s["ci95"], "train_seconds": seconds}
        )

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        export_private_data(scenario, data)
        orgs = sorted(p for p in data.iterdir() if (p / "scenario.toml").is_file())
        # federated: role-weighted FedAvg, in process (the same computation Flower runs)
        start = time.perf_counter()
        weights = to_arrays(new_model(cfg, roles))
        for r in range(1, rounds + 1):
            updates, counts = [], []
            for org in orgs:
                out, collected, _ = LocalTrainer(org, Path(tmp) / "fed", cfg, roles).train_round(
                    weights, r
                )
                updates.append(out)
                counts.append(collected)
            weights = role_weighted_average(updates, counts, weights)
        fed_seconds = time.perf_counter() - start
        record(
            "DQN federated (role-weighted FedAvg)",
            _cost(scenario, weights, cfg, held_out, sim),
            fed_seconds,
        )
        # isolated: each organization trains alone; its nodes act with its own networks
        start = time.perf_counter()
        per_org = {}
        for org in orgs:
            w = to_arrays(new_model(cfg, roles))
            for r in range(1, rounds + 1):
                w, _, _ = LocalTrainer(org, Path(tmp) / "iso", cfg, roles).train_round(w, r)
            per_org[org.name] = w
        iso_seconds = time.perf_counter() - start
        iso_policy = isolated_policy(scenario, per_org, cfg)
        record(
            "DQN isolated (each organization alone)",
            mean_cost_per_day(sim, iso_policy, held_out),
            iso_seconds,
        )
        # centralized: one learner on the whole network, the same days and replications
        start = time.perf_counter()
        args = replace(
            cfg.dqn_args(),
            total_steps=rounds * local_steps,
            eval_every=0,
            learning_starts=cfg.learning_starts,
            eval_replications=2,
            exploration_fraction=0.5,
        )
        result = train(args, scenario)
        record(
            "DQN centralized (all data pooled)",
            mean_cost_per_day(sim, result.policy, held_out),
            time.perf_counter() - start,
        )
        torch.set_num_threads(1)
    # the classical reference, tuned with its own simulation budget
    start = time.perf_counter()
    tuned = tune(scenario, "base-stock", train_replications=8)
    record(
        "base-stock (tuned)",
        mean_cost_per_day(sim, make_policy("base-stock", sim.layout, tuned.params), held_out),
        time.perf_counter() - start,
    )
    return pd.DataFrame(rows)


def _cost(scenario, weights, cfg, held_out, sim) -> np.ndarray:
    from fedinv.federation.task import global_policy
    from fedinv.sim.run import mean_cost_per_day

    return mean_cost_per_day(sim, global_policy(scenario, weights, cfg), held_out)


if __name__ == "__main__":  # pragma: no cover - a benchmark, run on demand
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import sys

    if "--compare-only" not in sys.argv:
        print(overhead())
    print(compare().to_string(index=False))
