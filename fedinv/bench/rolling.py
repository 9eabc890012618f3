"""Speed of the rolling-horizon stochastic program (``python -m fedinv.bench.rolling``).

Simulates ``--replications`` replications of ``--days`` days of a scenario under
``rolling-sp`` (options ``--params``, JSON) and reports CPU seconds (``time.process_time``:
this process only, so that other work on a shared machine counts less than in wall
time) per replication-year, and per solve: the numpy data of the futures, the update of
the kept HiGHS model (bounds, and matrix entries on a refresh) and the HiGHS solve, with
the model's size and simplex iterations. The target (docs/hybrid.md): at most 30 s per
replication-year on electronics-5r on one core at the default settings.

``--tune GRID --train-replications N`` first chooses rolling-sp's options on the tuner's
training replications (:data:`fedinv.policies.tuning.TRAIN_BASE` on, disjoint from the
held-out ``0..``): every point of the grid (JSON: option -> list of values; ``--params``
fixed) is simulated on the same ``N`` training replications in ``--mode``, the cheapest
mean ``total_cost_per_day`` wins (the tuners' objective) and is then run on the held-out
replications; the grid's costs and simulated days (points x N x days, the tuners' budget
unit) are reported under ``"tuning"``.

``--against POLICY --against-params JSON`` (a classical policy, or a file of its tuned
parameters) also runs that policy on the same replications and mode and reports the
paired difference of ``total_cost_per_day`` (rolling-sp minus it) with its 95% t
half-width, and both fill rates.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

TARGET_S_PER_YEAR = 30.0


def tune_rolling_sp(
    scenario_name: str,
    grid: dict[str, list[Any]],
    train_replications: int = 2,
    days: int | None = None,
    params: dict[str, Any] | None = None,
    mode: str = "pure",
) -> dict[str, Any]:
    """Grid search of rolling-sp's options on training replications (see module doc):
    ``{"best": params, "points": [{"params", "total_cost_per_day", "fill_rate"}],
    "simulated_days": int}``."""
    import itertools

    from fedinv.hybrid import make_optimization_policy
    from fedinv.model.scenario import load_scenario
    from fedinv.policies.tuning import TRAIN_BASE
    from fedinv.sim.run import simulate

    scenario = load_scenario(scenario_name)
    keys = sorted(grid)
    points = []
    n_days = 0
    for values in itertools.product(*(grid[k] for k in keys)):
        point = dict(params or {}) | dict(zip(keys, values, strict=True))
        result = simulate(
            scenario,
            lambda layout, p=point: make_optimization_policy("rolling-sp", scenario, layout, p),
            replications=train_replications,
            days=days,
            mode=mode,
            solver="highspy",
            first_replication=TRAIN_BASE,
        )
        n_days = result.days
        pr = result.per_replication
        points.append(
            {
                "params": point,
                "total_cost_per_day": float(pr.total_cost_per_day.mean()),
                "fill_rate": float(pr.fill_rate.mean()),
            }
        )
    best = min(points, key=lambda p: p["total_cost_per_day"])
    return {
        "best": best["params"],
        "points": points,
        "train_replications": train_replications,
        "first_train_replication": TRAIN_BASE,
        "simulated_days": len(points) * train_replications * n_days,
    }


def bench_rolling(
    scenario_name: str = "electronics-5r",
    replications: int = 1,
    days: int | None = None,
    params: dict[str, Any] | None = None,
    mode: str = "pure",
    first_replication: int = 0,
    against: str | None = None,
    against_params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``rolling-sp`` (replications ``first_replication..``) and return its timings
    and costs, and with ``against`` the paired difference to that classical policy (a
    JSON-able dict)."""
    from fedinv.hybrid import make_optimization_policy
    from fedinv.model.scenario import load_scenario
    from fedinv.sim.run import simulate

    scenario = load_scenario(scenario_name)
    built: list[Any] = []

    def factory(layout):
        policy = make_optimization_policy("rolling-sp", scenario, layout, params or {})
        built.append(policy)
        return policy

    c0, t0 = time.process_time(), time.perf_counter()
    runs = dict(
        replications=replications,
        days=days,
        mode=mode,
        solver="highspy",
        first_replication=first_replication,
    )
    result = simulate(scenario, factory, **runs)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    policy = built[-1]
    model = next(m for m in policy._model if m is not None)
    n_days = result.days
    years = replications * n_days / 365.0
    solve, data, update = (np.asarray(x) for x in (policy.solve_s, policy.data_s, policy.build_s))
    pr = result.per_replication
    out = {
        "scenario": scenario.name,
        "options": policy.options(),
        "mode": mode,
        "replications": replications,
        "days": n_days,
        "cpu_s_per_replication_year": cpu / years,
        "wall_s_per_replication_year": wall / years,
        "solves_per_replication_year": len(solve) / years,
        "solve_cpu_ms": {"median": 1e3 * np.median(solve), "p95": 1e3 * np.percentile(solve, 95)},
        "first_solve_cpu_ms": 1e3 * float(solve[0]),
        "share_of_cpu": {
            "highs_solve": float(solve.sum() / cpu),
            "futures_data": float(data.sum() / cpu),
            "model_update": float(update.sum() / cpu),
            "simulator_and_rest": float(1 - (solve.sum() + data.sum() + update.sum()) / cpu),
        },
        "model": {
            "columns": int(model.h.getNumCol()),
            "rows": int(model.h.getNumRow()),
            "nonzeros": int(model.h.getNumNz()),
            "simplex_iterations_per_solve": model.iterations / max(model.solves, 1),
        },
        "total_cost_per_day": float(pr.total_cost_per_day.mean()),
        "fill_rate": float(pr.fill_rate.mean()),
        "target_s_per_replication_year": TARGET_S_PER_YEAR,
    }
    if against is not None:
        from fedinv.registry import prepare, scenario_layout
        from fedinv.sim.metrics import paired_difference

        ref = prepare(against, scenario, scenario_layout(scenario), params=against_params)
        other = simulate(scenario, ref.factory, **runs).per_replication
        out["against"] = {
            "policy": against,
            "params": against_params or {},
            "total_cost_per_day": float(other.total_cost_per_day.mean()),
            "fill_rate": float(other.fill_rate.mean()),
            "paired_difference": paired_difference(pr.total_cost_per_day, other.total_cost_per_day),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fedinv.bench.rolling", description=__doc__)
    parser.add_argument("--scenario", default="electronics-5r")
    parser.add_argument("--replications", type=int, default=1)
    parser.add_argument("--days", type=int, default=None)
    parser.add_argument("--params", default="{}", help="rolling-sp options, JSON")
    parser.add_argument("--mode", default="pure", choices=("pure", "hybrid"))
    parser.add_argument("--first", type=int, default=0, help="first replication index")
    parser.add_argument("--tune", default=None, help="grid of options to tune, JSON")
    parser.add_argument("--train-replications", type=int, default=2)
    parser.add_argument("--against", default=None, help="a classical policy to pair with")
    parser.add_argument(
        "--against-params", default="{}", help="its parameters: JSON or a params.json file"
    )
    args = parser.parse_args(argv)
    ref = args.against_params
    ref_params = json.loads(Path(ref).read_text() if Path(ref).is_file() else ref)
    params = json.loads(args.params)
    tuning = None
    if args.tune is not None:
        c0 = time.process_time()
        tuning = tune_rolling_sp(
            args.scenario,
            json.loads(args.tune),
            args.train_replications,
            args.days,
            params,
            args.mode,
        )
        tuning["cpu_s"] = time.process_time() - c0
        params = tuning["best"]
    out = bench_rolling(
        args.scenario,
        args.replications,
        args.days,
        params,
        args.mode,
        args.first,
        args.against,
        ref_params,
    )
    if tuning is not None:
        out["tuning"] = tuning
    print(json.dumps(out, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
