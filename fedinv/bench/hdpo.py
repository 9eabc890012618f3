"""The HDPO targets of issue 13 (docs/agents.md, "HDPO results"), one command each.

``python -m fedinv.bench.hdpo TARGET [--seeds 1,2,...] [--out DIR]`` trains an HDPO
policy per seed (:func:`fedinv.agents.hdpo.train`, the settings of :data:`TARGETS`) and
compares it, on held-out replications ``0..R-1`` (common random numbers, paired 95%
intervals), with the target's reference policies:

* ``serial-3``: the optimal echelon base-stock policy (the published levels of the
  scenario header) and the tuned installation base-stock (HDPO's base); target: at most
  0.5% above the optimum, every seed;
* ``lost-sales`` (single-node-lost-sales, 20 replications x 2000 days): the best
  base-stock level (12) and the optimal policy by dynamic programming
  (:mod:`fedinv.policies.lost_sales_dp`); target: at most 4.07 per day;
* ``beer-game``: the tuned echelon base-stock policy, and HDPO by default with the
  same information (``--information local`` for the installation-information learner);
  target: no more than it;
* ``electronics``: the tuned (s,S) (HDPO's base), with fill rates and, with
  ``--bound``, the perfect-information bound (:func:`fedinv.hybrid.perfect_information_bound`);
  target: at least 5% cheaper than (s,S), fill rate not lower.

Every row says what its policy observes (``information``): ``local``, a node's own
state (installation policies, HDPO by default), or ``echelon``, also the stock and
pipeline of every node downstream of it (the echelon policies, HDPO with
``--information echelon``: :attr:`fedinv.agents.envs.EnvConfig.information`). A
target's default is in :data:`TARGETS` (``information``, else ``local``).

Prints one row per seed and policy and writes ``results.csv``, ``evaluation.csv`` (cost
per day per replication), each seed's checkpoint ``seed-S.pt`` and training curve
``curve-seed-S.csv`` (validation runs, :func:`fedinv.agents.hdpo.train`) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TARGETS: dict[str, dict[str, Any]] = {
    "serial-3": {
        "scenario": "serial-3",
        "args": {"iterations": 30, "eval_every": 5},
        "test": (20, None),
    },
    "lost-sales": {
        "scenario": "single-node-lost-sales",
        "args": {"iterations": 30, "eval_every": 5},
        "test": (20, 2000),
    },
    "beer-game": {
        "scenario": "beer-game",
        "args": {"iterations": 200, "eval_every": 10, "learning_rate": 2e-2, "share": "node"},
        "information": "echelon",  # the reference is echelon base-stock: the same information
        "test": (20, None),
    },
    "electronics": {
        "scenario": "electronics-5r",
        "args": {"iterations": 80, "eval_every": 8},
        "test": (10, None),
    },
}
"""Per target: the scenario, the :class:`fedinv.agents.hdpo.Args` fields that differ from
the defaults, the learner's information (``local`` where absent; the beer game's
reference is the echelon policy, so its learner sees the echelon positions too, as a
fair comparison needs; docs/agents.md, "HDPO results") and the held-out replications
and days (None: the horizon)."""


def references(target: str, scenario: Any, layout: Any, base_params: dict) -> dict[str, Any]:
    """The reference policies of ``target`` (name -> policy)."""
    from fedinv.policies.classical import make_policy
    from fedinv.policies.tuning import tune

    base = "sS" if target == "electronics" else "base-stock"
    refs = {f"tuned {base}": make_policy(base, layout, base_params)}
    if target == "serial-3":
        levels = {"stage-1": 6.484, "stage-2": 12.028, "stage-3": 22.72}
        refs["optimal echelon"] = make_policy("echelon-base-stock", layout, {"levels": levels})
    elif target == "lost-sales":
        from fedinv.policies.lost_sales_dp import LostSalesDPPolicy, solve

        refs["base-stock 12"] = make_policy("base-stock", layout, {"levels": {"store": 12.0}})
        refs["optimal (DP)"] = LostSalesDPPolicy(layout, solve(scenario))
    elif target == "beer-game":
        echelon = tune(scenario, "echelon-base-stock", train_replications=16)
        refs["tuned echelon"] = make_policy("echelon-base-stock", layout, echelon.params)
    return refs


def evaluate(policy: Any, scenario: Any, reps: range, days: int | None) -> dict[str, np.ndarray]:
    """Per held-out replication (exact numpy day): cost per day, fill rate, and the cost
    split ($/day): holding, penalty, fixed ordering, purchases and shipping, and the
    cost per day of the last 60 days (where stock bought but never sold shows)."""
    from fedinv.sim.metrics import replication_metrics
    from fedinv.sim.run import run_records
    from fedinv.sim.simulator import Simulator

    sim = Simulator(scenario, days=days)
    records = run_records(sim, policy, list(reps))
    table = replication_metrics(records, sim.layout, scenario.warmup_days)
    warm = scenario.warmup_days

    def per_day(key: str) -> np.ndarray:
        return records[key][warm:].sum(axis=2).mean(axis=0)

    return {
        "cost": table["total_cost_per_day"].to_numpy(),
        "fill_rate": table["fill_rate"].to_numpy(),
        "holding": per_day("holding_cost"),
        "penalty": per_day("penalty_cost"),
        "ordering": per_day("ordering_cost"),
        "purchase_shipping": per_day("external_purchase_cost") + per_day("shipping_cost"),
        "last_60_days": replication_metrics(records, sim.layout, max(sim.days - 60, warm))[
            "total_cost_per_day"
        ].to_numpy(),
    }


def run(
    target: str,
    seeds: list[int],
    out: Path | None,
    bound: bool = False,
    overrides: dict[str, Any] | None = None,
    information: str | None = None,
) -> pd.DataFrame:
    """Train one HDPO policy per seed and compare (see the module doc); ``overrides``:
    :class:`fedinv.agents.hdpo.Args` fields over the target's (``env`` as a dict of
    :class:`fedinv.agents.envs.EnvConfig` fields); ``information``: the learner's
    :attr:`fedinv.agents.envs.EnvConfig.information` (None: the target's)."""
    from dataclasses import replace

    from fedinv.agents import hdpo
    from fedinv.agents.envs import EnvConfig
    from fedinv.model.scenario import load_scenario
    from fedinv.sim.metrics import paired_difference

    spec = TARGETS[target]
    scenario = load_scenario(spec["scenario"])
    count, days = spec["test"]
    reps = range(count)
    rows, columns = [], {}
    tuned, refs, ref_eval = None, None, {}
    for seed in seeds:
        fields = spec["args"] | dict(overrides or {})
        env = fields.pop("env", {})
        env = env if isinstance(env, EnvConfig) else EnvConfig.from_dict(env)
        info = information or spec.get("information", "local")
        fields["env"] = replace(env, information=info)
        args = hdpo.Args(scenario=spec["scenario"], seed=seed, **fields)
        started = time.perf_counter()
        result = hdpo.train(args, scenario, tuned=tuned)
        wall = time.perf_counter() - started
        tuned = result.tuned  # the same tuned base for every seed
        if refs is None:
            layout = result.policy.layout
            refs = references(target, scenario, layout, tuned.params)
            ref_eval = {name: evaluate(p, scenario, reps, days) for name, p in refs.items()}
            for name, e in ref_eval.items():
                columns[name] = e["cost"]
                seen = "echelon" if getattr(refs[name], "echelon", False) else "local"
                row = {"target": target, "policy": name, "information": seen, "seed": None}
                rows.append(row | _summary(e))
        if out is not None:
            from fedinv.agents.checkpoints import save_checkpoint

            out.mkdir(parents=True, exist_ok=True)
            save_checkpoint(out / f"seed-{seed}.pt", result)
            result.curve.to_csv(out / f"curve-seed-{seed}.csv", index=False)
        ours = evaluate(result.policy, scenario, reps, days)
        columns[f"hdpo seed {seed}"] = ours["cost"]
        row = {"target": target, "policy": "hdpo", "information": info, "seed": seed}
        row |= _summary(ours)
        for name, e in ref_eval.items():
            d = paired_difference(pd.Series(ours["cost"]), pd.Series(e["cost"]))
            row[f"vs {name}"] = f"{d['mean']:+.4g} ± {d['ci95']:.3g} ({d['percent']:+.2f}%)"
        budget = result.budget()
        row |= {"wall_s": round(wall, 1), "simulated_days": budget["simulated_days"]}
        row["best_iteration"] = result.best_iteration
        if "selected" in result.curve:  # Args.average: raw or averaged weights
            row["selected"] = "".join(result.curve["selected"])
        rows.append(row)
        print(json.dumps(row, default=str), flush=True)
    if bound:
        from fedinv.hybrid import perfect_information_bound

        b = perfect_information_bound(scenario, list(reps), days=days)
        columns["perfect-information bound"] = b
        rows.append({"target": target, "policy": "perfect-information bound", "seed": None})
        rows[-1] |= {"cost": float(np.mean(b))}
    table = pd.DataFrame(rows)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "results.csv", index=False)
        pd.DataFrame(columns, index=reps).rename_axis("replication").to_csv(out / "evaluation.csv")
    return table


def _summary(e: dict[str, np.ndarray]) -> dict[str, float]:
    from fedinv.sim.metrics import summarize

    s = summarize(pd.DataFrame({"c": e["cost"]})).loc["c"]
    split = ("holding", "penalty", "ordering", "purchase_shipping", "last_60_days")
    return {
        "cost": round(float(s["mean"]), 4),
        "ci95": round(float(s["ci95"]), 4),
        "fill_rate": round(float(np.mean(e["fill_rate"])), 4),
    } | {k: round(float(np.mean(e[k])), 2) for k in split}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fedinv.bench.hdpo", description=__doc__)
    p.add_argument("target", choices=sorted(TARGETS))
    p.add_argument("--seeds", default="1", help="training seeds, comma-separated (default 1)")
    p.add_argument("--out", type=Path, help="write results.csv and evaluation.csv here")
    p.add_argument("--bound", action="store_true", help="add the perfect-information bound")
    p.add_argument("--set", default="{}", metavar="JSON", help="Args fields over the target's")
    p.add_argument(
        "--information",
        choices=("local", "echelon"),
        help="what the learner observes (EnvConfig.information; default: the target's)",
    )
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    seeds = [int(s) for s in a.seeds.split(",")]
    table = run(a.target, seeds, a.out, a.bound, json.loads(a.set), a.information)
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
