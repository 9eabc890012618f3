"""``python -m fedinv.bench.continual``: cost with and without continual learning after a
mid-year demand shift (docs/service.md, "Continual learning").

The network (default ``serial-3``, one organization) gets a fixed surge from day
``--shift-day`` to the end of the year (its customers' demand times ``--multiplier``).
A :class:`~fedinv.service.core.DecisionService` (the same core ``fedinv serve`` runs,
in process, no HTTP) decides every day of the closed loop -- the simulator's state goes
in as the organization's request, the released orders drive the simulator -- twice per
replication: *static* (the starting parameters all year) and *continual* (``--data``
and ``--auto-retrain``: the Analytics Monitor's demand detectors on the recorded days
start a re-tuning on the recorded folder, swapped in when it ends). The bench waits for
each retrain before the next day (a retrain that takes less than a day of operation).
Costs are $ per day over the days after the shift, and over the year.

    python -m fedinv.bench.continual [--scenario serial-3] [--replications 2]
        [--shift-day 182] [--multiplier 1.6] [--window DAYS] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from fedinv.model.network import Surge


def shifted(scenario: Any, day: int, multiplier: float) -> Any:
    """``scenario`` with every region's customer demand times ``multiplier`` from
    ``day`` on (a fixed surge per region lasting past the horizon)."""
    regions = sorted({n.region for n in scenario.network.nodes if n.demand is not None})
    surges = tuple(
        Surge(r, multiplier, float(scenario.horizon_days + 1), start_day=day) for r in regions
    )
    return replace(scenario, surges=(*scenario.surges, *surges))


def closed_loop(
    scenario_file: Path,
    scenario: Any,
    org: str,
    params: dict[str, Any],
    replication: int,
    folder: Path,
    continual: bool,
    window: int | None = None,
) -> dict[str, Any]:
    """Cost per day of one replication with a service deciding (module doc)."""
    from fedinv.service.codec import DecisionRequest
    from fedinv.service.core import DecisionService, ServiceConfig
    from fedinv.sim.simulator import Decision, Simulator

    svc = DecisionService(
        ServiceConfig(
            scenario=str(scenario_file),
            org=org,
            policy="base-stock",
            params=params,
            mode="pure",
            log=folder / "log.sqlite",
            data=folder / "data" if continual else None,
            record_every=7,
            auto_retrain=continual,
            retrain_cooldown=28,
            retrain_window=window,
        )
    )
    sim = Simulator(scenario)
    lane = {lid: m for m, lid in enumerate(sim.layout.lane_ids)}
    state, exo = sim.reset([replication])
    cost = np.zeros(sim.days)
    retrains = []
    for t in range(sim.days):
        body = svc.codec.request(state)
        reply = svc.decide(DecisionRequest.model_validate(body), body)
        orders = np.zeros((1, sim.layout.num_lanes))
        for lid, units in reply["released"].items():
            orders[0, lane[lid]] = units
        state, record = sim.step(state, exo, Decision(orders))
        cost[t] = float(record["total_cost"][0].sum())
        job = svc.retrain_job
        if job is not None and (not retrains or retrains[-1]["job"] != job.job):
            while job.status == "running":
                time.sleep(0.05)
            retrains.append(
                {"job": job.job, "day": t, "trigger": job.trigger, "status": job.status}
            )
            if job.status == "swapped":
                retrains[-1]["levels"] = job.swap["params"].get("levels")
    svc.close()
    return {"cost": cost, "retrains": retrains}


def main(argv: list[str] | None = None) -> int:
    from fedinv.model.scenario import load_scenario

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", default="serial-3")
    ap.add_argument("--replications", type=int, default=2)
    ap.add_argument("--shift-day", type=int, default=182)
    ap.add_argument("--multiplier", type=float, default=1.6)
    ap.add_argument("--params", default=None, help="starting --params (JSON)")
    ap.add_argument("--window", type=int, default=None, help="retrain on the last N days")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    base = load_scenario(args.scenario)
    scenario = shifted(base, args.shift_day, args.multiplier)
    org = scenario.network.organizations[0].id
    if len(scenario.network.organizations) != 1:
        raise SystemExit("the bench runs a one-organization network (the closed loop)")
    params = (
        json.loads(args.params)
        if args.params
        else {"levels": {n.id: n.initial_inventory for n in base.network.nodes}}
    )
    t0 = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # the service loads the base file (it is not told of the shift); only the
        # simulator playing the organization's world draws it
        for rep in range(args.replications):
            out = {}
            for continual in (False, True):
                folder = Path(tmp) / f"r{rep}-{'continual' if continual else 'static'}"
                folder.mkdir()
                out[continual] = closed_loop(
                    Path(args.scenario), scenario, org, params, rep, folder, continual, args.window
                )
            after = slice(args.shift_day, None)
            rows.append(
                {
                    "replication": rep,
                    "static_after": float(out[False]["cost"][after].mean()),
                    "continual_after": float(out[True]["cost"][after].mean()),
                    "static_year": float(out[False]["cost"].mean()),
                    "continual_year": float(out[True]["cost"].mean()),
                    "retrains": out[True]["retrains"],
                }
            )
    result = {
        "scenario": scenario.name,
        "shift_day": args.shift_day,
        "multiplier": args.multiplier,
        "params": params,
        "window": args.window,
        "rows": rows,
        "seconds": time.perf_counter() - t0,
    }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for r in rows:
            print(
                f"replication {r['replication']}: after the shift static "
                f"{r['static_after']:.2f} $/day, continual {r['continual_after']:.2f}; "
                f"year {r['static_year']:.2f} vs {r['continual_year']:.2f}; "
                f"{len(r['retrains'])} retrains"
            )
            for j in r["retrains"]:
                print(f"  day {j['day']}: {j['trigger']} -> {j['status']} {j.get('levels')}")
        print(f"{result['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
