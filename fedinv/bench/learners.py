"""The HDPO learner against its targets (issue 13; docs/agents.md, "HDPO results").

``python -m fedinv.bench.learners [TARGET ...] [--seeds 1,2,3,4,5] [--out DIR]`` trains
HDPO centrally on each target's scenario, one training per seed, and runs the selected
policy and the target's reference policies on the *same* held-out replications (indices
``0..R-1``: common random numbers), pairing every policy against the reference:

=================  ======================================  ==================================
target             reference (what the learner must meet)   held-out replications
=================  ======================================  ==================================
``serial-3``       optimal echelon base-stock (textbook    20 x horizon; <= +0.5 %
                   levels, the Clark-Scarf optimum)
``lost-sales``     the exact optimum (dynamic programming, 20 x 2000 days; <= 4.07 $/day
                   :mod:`fedinv.policies.lost_sales_dp`)
                   and the best base-stock (level 12)
``beer-game``      tuned echelon base-stock                20 x horizon; <= the reference
``electronics-5r`` tuned (s,S) = the learner's own base    20 x horizon; >= 5 % cheaper,
                   (same tuning), perfect-information      fill rate not lower
                   bound reported
=================  ======================================  ==================================

Figures: mean $/day with the Student-t 95% half-width over replications, and the paired
difference learner - reference (mean, half-width, percent). The training budget
(simulated days, wall seconds) is reported with every row. Writes ``OUT/results.csv``
and ``OUT/results.md``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TARGETS = ("serial-3", "lost-sales", "beer-game", "electronics-5r")
SERIAL_LEVELS = {"stage-1": 6.484, "stage-2": 12.028, "stage-3": 22.720}
"""Snyder & Shen Example 6.1's optimal echelon base-stock levels (scenario header)."""


@dataclass(frozen=True)
class Target:
    """One target: the scenario, held-out replications and days, and HDPO settings."""

    name: str
    scenario: str
    replications: int
    days: int | None
    hdpo: dict[str, Any]


DEFAULTS = {
    "serial-3": Target("serial-3", "serial-3", 20, None, {"iterations": 40, "window": 60}),
    "lost-sales": Target(
        "lost-sales", "single-node-lost-sales", 20, 2000, {"iterations": 40, "window": 60}
    ),
    "beer-game": Target("beer-game", "beer-game", 20, None, {"iterations": 40, "window": 60}),
    "electronics-5r": Target(
        "electronics-5r", "electronics-5r", 20, None, {"iterations": 30, "window": 60}
    ),
}


def _per_rep(scenario, factory: Callable, reps: int, days: int | None) -> pd.DataFrame:
    from fedinv.sim.run import simulate

    return simulate(scenario, factory, replications=reps, days=days).per_replication


def references(target: Target, scenario, tuned) -> dict[str, Callable]:
    """The target's reference policies, by label (the first is the one paired against)."""
    from fedinv.policies.classical import make_policy
    from fedinv.policies.tuning import tune

    if target.name == "serial-3":
        return {
            "optimal echelon base-stock": lambda lay: make_policy(
                "echelon-base-stock", lay, {"levels": SERIAL_LEVELS}
            )
        }
    if target.name == "lost-sales":
        from fedinv.policies.lost_sales_dp import LostSalesDPPolicy, solve

        dp = solve(scenario)
        return {
            "best base-stock (12)": lambda lay: make_policy(
                "base-stock", lay, {"levels": {"store": 12}}
            ),
            "optimal (DP)": lambda lay: LostSalesDPPolicy(lay, dp),
        }
    if target.name == "beer-game":
        echelon = tune(scenario, "echelon-base-stock")
        return {
            "tuned echelon base-stock": lambda lay: make_policy(
                "echelon-base-stock", lay, echelon.params
            )
        }
    return {
        f"tuned {tuned.policy} (HDPO's base)": lambda lay: make_policy(
            tuned.policy, lay, tuned.params
        )
    }


def run_target(
    target: Target, seeds: Sequence[int], echo: Callable[[str], None] = print
) -> pd.DataFrame:
    """Train HDPO per seed and pair it against the target's references; one row per
    (policy, seed)."""
    from fedinv.agents import hdpo
    from fedinv.model.scenario import load_scenario
    from fedinv.sim.metrics import paired_difference

    scenario = load_scenario(target.scenario)
    rows: list[dict[str, Any]] = []
    ref_frames: dict[str, pd.DataFrame] = {}
    tuned = None
    for seed in seeds:
        args = replace(hdpo.Args(scenario=target.scenario, seed=int(seed)), **target.hdpo)
        started = time.perf_counter()
        result = hdpo.train(args, scenario, tuned=tuned)
        tuned = result.tuned  # one tuning of the base for every seed
        wall = time.perf_counter() - started
        if not ref_frames:
            for label, factory in references(target, scenario, tuned).items():
                ref_frames[label] = _per_rep(scenario, factory, target.replications, target.days)
        frame = _per_rep(scenario, lambda lay, p=result.policy: p, target.replications, target.days)
        first = next(iter(ref_frames))
        diff = paired_difference(
            frame["total_cost_per_day"], ref_frames[first]["total_cost_per_day"]
        )
        rows.append(
            {
                "target": target.name,
                "policy": "HDPO",
                "seed": int(seed),
                "cost_per_day": frame["total_cost_per_day"].mean(),
                "ci95": _half(frame["total_cost_per_day"]),
                "fill_rate": frame["fill_rate"].mean(),
                "vs": first,
                "diff": diff["mean"],
                "diff_ci95": diff["ci95"],
                "diff_pct": diff["percent"],
                "train_simulated_days": result.simulated_days + tuned.simulated_days,
                "train_wall_s": wall,
                "best_iteration": result.best_iteration,
            }
        )
        ref_mean = ref_frames[first]["total_cost_per_day"].mean()
        echo(
            f"{target.name} seed {seed}: HDPO {rows[-1]['cost_per_day']:.4f} $/day, "
            f"{diff['percent']:+.2f}% (+- {100 * diff['ci95'] / ref_mean:.2f}) vs {first}, "
            f"{wall:.0f} s"
        )
    for label, frame in ref_frames.items():
        rows.append(
            {
                "target": target.name,
                "policy": label,
                "cost_per_day": frame["total_cost_per_day"].mean(),
                "ci95": _half(frame["total_cost_per_day"]),
                "fill_rate": frame["fill_rate"].mean(),
            }
        )
    if target.name == "electronics-5r":
        from fedinv.hybrid import perfect_information_bound

        bound = perfect_information_bound(scenario, target.replications, days=target.days)
        rows.append(
            {
                "target": target.name,
                "policy": "perfect-information bound",
                "cost_per_day": float(np.mean(bound)),
                "ci95": _half(pd.Series(bound)),
            }
        )
    return pd.DataFrame(rows)


def _half(values: pd.Series) -> float:
    from fedinv.sim.metrics import summarize

    return float(summarize(pd.DataFrame({"v": values})).loc["v", "ci95"])


def _markdown(table: pd.DataFrame) -> str:
    """A Markdown table of the results (numbers to 4 significant digits)."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if not np.isfinite(v) else f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m fedinv.bench.learners", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "targets", nargs="*", metavar="TARGET", help=f"of {', '.join(TARGETS)} (default all)"
    )
    p.add_argument("--seeds", default="1,2,3,4,5", help="training seeds (default 1,2,3,4,5)")
    p.add_argument("--iterations", type=int, help="override every target's HDPO iterations")
    p.add_argument("--out", type=Path, default=Path("runs/bench-learners"))
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    unknown = sorted(set(args.targets) - set(TARGETS))
    if unknown:
        p.error(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    frames = []
    for name in args.targets or TARGETS:
        target = DEFAULTS[name]
        if args.iterations:
            target = replace(target, hdpo={**target.hdpo, "iterations": args.iterations})
        frames.append(run_target(target, seeds))
        table = pd.concat(frames, ignore_index=True)
        args.out.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out / "results.csv", index=False)
        (args.out / "results.md").write_text(_markdown(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
