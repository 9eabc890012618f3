"""Check HDPO's tight-network setting on replications it was not chosen on (docs/agents.md,
"Trained through the layer", "Independent check").

``python -m studies.check_tight --seeds 1,4,5 --first 100 [--out DIR]`` writes the
like-with-like-tight study's training variant (electronics-5r at 80% capacities and
budgets, :func:`studies.spec.training_scenario_path`), tunes (s,S) through the safety layer
on it (8 training replications x 2 sweeps, as the study), trains HDPO centrally through the
layer with the setting under test (``layer_gradient = "penalty"``, ``window = 365``,
learning rate 1e-2, 16 iterations x 8 replications, 4 validation replications) per seed on
the same tuning, and runs both through the layer (highspy) on held-out replications
``first .. first + R - 1``: cost per day, fill rate and the paired differences with their
95% intervals, printed and written to ``DIR/check-tight.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _ci95(x: np.ndarray) -> float:
    return float(1.96 * x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m studies.check_tight", description=__doc__)
    p.add_argument("--seeds", default="1,4,5", help="HDPO training seeds (default 1,4,5)")
    p.add_argument("--first", type=int, default=100, help="first held-out replication")
    p.add_argument("--replications", type=int, default=20, help="held-out replications")
    p.add_argument("--out", type=Path, default=None, help="folder of check-tight.json")
    a = p.parse_args(argv)

    from fedinv.agents import hdpo
    from fedinv.model.scenario import load_scenario
    from fedinv.policies.classical import make_policy
    from fedinv.policies.tuning import tune
    from fedinv.sim.run import simulate
    from studies.spec import load_study, training_scenario_path

    out = a.out or Path(tempfile.mkdtemp(prefix="check-tight-"))
    out.mkdir(parents=True, exist_ok=True)
    definition = Path(__file__).parent / "definitions" / "like-with-like-tight.toml"
    path = training_scenario_path(load_study(definition), out)
    scenario = load_scenario(path)
    started = time.perf_counter()
    tuned = tune(scenario, "sS", train_replications=8, days=scenario.horizon_days, mode="hybrid")
    print(f"(s,S) tuned through the layer in {time.perf_counter() - started:.0f} s", flush=True)
    run = dict(replications=a.replications, first_replication=a.first, mode="hybrid")

    def held_out(factory):
        return simulate(scenario, factory, solver="highspy", **run).per_replication

    ref = held_out(lambda layout: make_policy("sS", layout, tuned.params))
    cost, fill = ref.total_cost_per_day.to_numpy(), ref.fill_rate.to_numpy()
    print(f"(s,S) through the layer: {cost.mean():,.0f} $/day, fill {fill.mean():.3f}")
    result = {"first": a.first, "sS": {"cost": cost.tolist(), "fill": fill.tolist()}}
    for seed in (int(s) for s in a.seeds.split(",") if s.strip()):
        started = time.perf_counter()
        args = hdpo.Args(
            scenario=path,
            seed=seed,
            iterations=16,
            replications=8,
            eval_replications=4,
            tune_replications=8,
            train_mode="hybrid",
            layer_gradient="penalty",
            window=365,
            learning_rate=1e-2,
        )
        trained = hdpo.train(args, scenario, tuned=tuned)
        m = held_out(lambda layout, policy=trained.policy: policy)
        c, f = m.total_cost_per_day.to_numpy(), m.fill_rate.to_numpy()
        d, g = c - cost, f - fill
        print(
            f"seed {seed}: iteration {trained.best_iteration}, {c.mean():,.0f} $/day, "
            f"{d.mean():+,.0f} ± {_ci95(d):,.0f} ({100 * d.mean() / cost.mean():+.1f}%), fill "
            f"{f.mean():.3f} ({g.mean():+.3f} ± {_ci95(g):.3f}), "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
        result[f"seed-{seed}"] = {
            "selected_iteration": trained.best_iteration,
            "cost": c.tolist(),
            "fill": f.tolist(),
        }
    (out / "check-tight.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {out / 'check-tight.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
