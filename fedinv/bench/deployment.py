"""Per-round overhead of Flower's deployment engine against its simulation engine, for
the same work: ``python -m fedinv.bench.deployment [--scenario S] [--rounds R]
[--local-steps N] [--replications B] [--json]``.

One :class:`~fedinv.federation.task.FedConfig` is run twice on the same private data folders:

* simulation: :func:`fedinv.federation.local.run_federation` (a SuperLink in simulation mode, Ray,
  one simulated SuperNode per organization with one CPU each);
* deployment: :class:`fedinv.deploy.engine.LocalDeployment` (a SuperLink and one SuperNode
  process per organization on 127.0.0.1, TLS and node authentication on).

A round's wall time is the difference of consecutive ``wall_s`` in ``rounds.csv`` (the
ServerApp's clock: client training, client evaluation, server evaluation); the overhead
is the deployment's median round minus the simulation's. The whole command's time
(start-up included) is reported too. Seconds throughout.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fedinv.federation.task import FedConfig


def _round_seconds(run_dir: Path) -> list[float]:
    walls = pd.read_csv(run_dir / "rounds.csv")["wall_s"].to_numpy()
    return np.diff(np.concatenate([[0.0], walls])).tolist()


def overhead(
    scenario: str = "electronics-5r",
    rounds: int = 3,
    local_steps: int = 1,
    replications: int = 1,
    eval_replications: int = 1,
    eval_days: int = 2,
    echo=None,
) -> dict:
    """Seconds per round in simulation and in deployment for the same ``FedConfig``
    (defaults: near-empty rounds, so the difference is Flower's), and their difference."""
    from fedinv.deploy.engine import LocalDeployment, run_finished, wait_for
    from fedinv.federation.local import run_federation
    from fedinv.federation.private_data import export_private_data
    from fedinv.model.scenario import load_scenario

    cfg = FedConfig(
        scenario=scenario,
        rounds=rounds,
        local_steps=local_steps,
        replications=replications,
        eval_replications=eval_replications,
        eval_days=eval_days,
        batch_size=8,
        learning_starts=10**6 if local_steps <= 1 else 30,
        reward_scale=100.0,
    )
    say = echo or (lambda _: None)
    out: dict = {
        "scenario": scenario,
        "rounds": rounds,
        "local_steps": local_steps,
        "replications": replications,
    }
    with tempfile.TemporaryDirectory(prefix="fedinv-bench-deploy-") as tmp:
        root = Path(tmp)
        export_private_data(load_scenario(scenario), root / "data")
        orgs = sorted(p.name for p in (root / "data").iterdir())
        out["organizations"] = len(orgs)

        sim = root / "sim"
        (sim / "data").mkdir(parents=True)
        for org in orgs:
            (sim / "data" / org).symlink_to(root / "data" / org)
        say("simulation ...")
        started = time.perf_counter()
        run_federation(cfg, sim)
        out["sim_total_s"] = time.perf_counter() - started
        out["sim_round_s"] = _round_seconds(sim)

        say("deployment (TLS, node authentication) ...")
        started = time.perf_counter()
        with LocalDeployment(root / "site", root / "data", root / "keys", echo=say) as fed:
            out["deploy_startup_s"] = time.perf_counter() - started
            fed.submit(cfg, root / "deployed")
            wait_for(lambda: run_finished(root / "deployed", rounds), 3600, "the run", poll=0.5)
        out["deploy_total_s"] = time.perf_counter() - started
        out["deploy_round_s"] = _round_seconds(root / "deployed")
    out["sim_median_round_s"] = float(np.median(out["sim_round_s"]))
    out["deploy_median_round_s"] = float(np.median(out["deploy_round_s"]))
    out["overhead_per_round_s"] = out["deploy_median_round_s"] - out["sim_median_round_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: print the figures (a table, or ``--json``)."""
    parser = argparse.ArgumentParser(
        prog="python -m fedinv.bench.deployment", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--scenario", default="electronics-5r")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--local-steps", type=int, default=1)
    parser.add_argument("--replications", type=int, default=1)
    parser.add_argument("--eval-replications", type=int, default=1)
    parser.add_argument("--eval-days", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = overhead(
        args.scenario,
        args.rounds,
        args.local_steps,
        args.replications,
        args.eval_replications,
        args.eval_days,
        echo=lambda line: print(line, file=sys.stderr),
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{result['scenario']}: {result['organizations']} organizations, "
        f"{result['rounds']} rounds of {result['local_steps']} local steps x "
        f"{result['replications']} replications"
    )
    print(
        f"simulation: {result['sim_median_round_s']:.1f} s per round (median; rounds "
        f"{', '.join(f'{s:.1f}' for s in result['sim_round_s'])}), "
        f"{result['sim_total_s']:.0f} s in all"
    )
    print(
        f"deployment: {result['deploy_median_round_s']:.1f} s per round (median; rounds "
        f"{', '.join(f'{s:.1f}' for s in result['deploy_round_s'])}), "
        f"{result['deploy_total_s']:.0f} s in all ({result['deploy_startup_s']:.0f} s "
        "to start the SuperLink and SuperNodes)"
    )
    print(f"overhead of deployment: {result['overhead_per_round_s']:+.1f} s per round")
    return 0


if __name__ == "__main__":
    sys.exit(main())
