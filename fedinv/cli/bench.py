"""``fedinv bench sim | lp | deploy``: simulator throughput, safety-layer latency
(docs/cli.md, docs/hybrid.md), and a federation's rounds simulated vs deployed
(docs/deployment.md)."""

from __future__ import annotations

import argparse
from typing import Any

from fedinv.cli.common import (
    COUNT,
    DAYS,
    CliError,
    batch_list,
    dump,
    int_at_least,
    load,
    num,
    stderr_console,
    stdout_console,
)
from fedinv.jsonout import finite


def add_parser(commands: Any) -> None:
    """``fedinv bench`` and its kinds."""
    from fedinv.bench.sim import DEFAULT_BATCHES, DEFAULT_POLICY, DEFAULT_SCENARIO
    from fedinv.policies.classical import POLICY_NAMES

    bench = commands.add_parser("bench", help="benchmarks", description="Benchmarks.")
    kinds = bench.add_subparsers(dest="kind", required=True, metavar="KIND")
    p = kinds.add_parser(
        "sim",
        help="simulator throughput (node-days per second) on one core",
        description="Time Simulator.reset and the stepping loop per batch size, on one core.",
    )
    p.add_argument(
        "--scenario",
        default=DEFAULT_SCENARIO,
        metavar="NAME|FILE",
        help=f"default {DEFAULT_SCENARIO}",
    )
    p.add_argument("--days", type=DAYS, metavar="N", help="days (default: horizon)")
    p.add_argument(
        "--batches",
        type=batch_list,
        default=list(DEFAULT_BATCHES),
        metavar="B,...",
        help="comma-separated batch sizes (default 1,256)",
    )
    p.add_argument(
        "--policy",
        choices=POLICY_NAMES,
        default=DEFAULT_POLICY,
        help=f"policy with default parameters (default {DEFAULT_POLICY})",
    )
    p.add_argument(
        "--torch-days",
        type=DAYS,
        default=60,
        metavar="N",
        help="days of the torch forward+backward pass at batch 256 (default 60)",
    )
    p.add_argument(
        "--no-torch", action="store_true", help="skip the torch forward+backward throughput"
    )
    p.add_argument("--json", action="store_true", help="print the result rows as a JSON list")
    p.set_defaults(func=cmd_bench_sim)
    p = kinds.add_parser(
        "lp",
        help="safety-layer latency: Pyomo persistent vs highspy, and hybrid vs pure",
        description="Median and p95 ms per daily projection solve on random networks "
        "(fedinv.model.synthetic) for each lane count, Pyomo persistent and highspy, model build "
        "time, and the simulation time of a scenario in hybrid vs pure mode.",
    )
    p.add_argument(
        "--lanes",
        type=batch_list,
        default=[20, 100, 500],
        metavar="L,...",
        help="comma-separated lane counts (default 20,100,500)",
    )
    p.add_argument(
        "--solves",
        type=int_at_least(5),
        default=200,
        metavar="N",
        help="timed solves per lane count and backend (default 200)",
    )
    p.add_argument(
        "--scenario",
        default=DEFAULT_SCENARIO,
        metavar="NAME|FILE",
        help=f"scenario of the hybrid-vs-pure timing (default {DEFAULT_SCENARIO})",
    )
    p.add_argument(
        "--replications",
        type=COUNT,
        default=10,
        metavar="R",
        help="replications of the hybrid-vs-pure timing (default 10)",
    )
    p.add_argument(
        "--days",
        type=DAYS,
        metavar="N",
        help="days of the hybrid-vs-pure timing (default: horizon)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_bench_lp)
    p = kinds.add_parser(
        "deploy",
        help="a federation's seconds per round, simulated vs deployed, and peak memory",
        description="Run one FedConfig (the training options; defaults: fedinv federate's) "
        "on Flower's simulation engine, then deployed on 127.0.0.1 (a SuperLink, and per "
        "organization a SuperNode and its trainer, TLS and node authentication); print the "
        "seconds of every round side by side, the medians of rounds 2..N, and the peak "
        "memory per organization.",
    )
    from fedinv.cli.training import add_training_options

    add_training_options(p)
    p.add_argument(
        "--near-empty",
        action="store_true",
        help="rounds of 1 local step x 1 replication and a 2-day evaluation (what is left "
        "is the engines' own cost)",
    )
    p.add_argument(
        "--no-launcher",
        action="store_true",
        help="deployed: a cold flwr-clientapp per message (no pre-imported ClientApp launcher)",
    )
    p.add_argument(
        "--flower-wait",
        action="store_true",
        help="deployed: the SuperNodes wait Flower's fixed 3 s after an empty pull (not 0.25 s)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_bench_deploy)


def cmd_bench_sim(args: argparse.Namespace) -> int:
    """``fedinv bench sim``: node-days per second per batch size, on one core."""
    from fedinv.bench.sim import (
        DEFAULT_SCENARIO,
        TARGET_BATCH,
        bench_sim,
        bench_torch,
        print_bench,
    )
    from fedinv.model.scenario import ScenarioError

    try:
        scenario = load(args.scenario)
    except ScenarioError as exc:
        hint = (
            " (the default benchmark scenario is missing from this installation; "
            "pass --scenario NAME|FILE)"
            if args.scenario == DEFAULT_SCENARIO
            else ""
        )
        raise CliError(f"cannot load benchmark scenario {args.scenario!r}{hint}: {exc}") from None
    if not args.json:
        stderr_console().print(
            f"benchmarking {scenario.name} at batch sizes {', '.join(map(str, args.batches))} ...",
            markup=False,
        )
    rows = bench_sim(scenario, args.batches, args.days, args.policy)
    torch_row = None if args.no_torch else bench_torch(scenario, TARGET_BATCH, args.torch_days)
    if args.json:
        listed = [{"namespace": "numpy", **r} for r in rows]
        if torch_row is not None:
            listed.append({"namespace": "torch-autograd", **torch_row})
        print(
            dump(
                [{k: (num(v) if isinstance(v, float) else v) for k, v in r.items()} for r in listed]
            )
        )
    else:
        print_bench(rows, stdout_console())
        if torch_row is not None:
            t = torch_row
            stdout_console().print(
                f"torch (float64, autograd, one thread), base-stock levels as parameters, "
                f"batch {t['batch']} x {t['days']} days: forward {t['forward_s']:.2f} s + "
                f"backward {t['backward_s']:.2f} s = {t['node_days_per_s']:,.0f} node-days/s",
                markup=False,
                highlight=False,
            )
    return 0


def cmd_bench_lp(args: argparse.Namespace) -> int:
    """``fedinv bench lp``: safety-layer latency per lane count, hybrid vs pure time."""
    from fedinv.bench.lp import bench_lp, print_bench_lp

    if min(args.lanes) < 10:
        raise CliError(f"--lanes: synthetic networks need at least 10 lanes, got {args.lanes}")
    scenario = load(args.scenario)
    if args.json:
        result = bench_lp(args.lanes, args.solves, scenario, args.replications, args.days)
        print(dump(finite(result)))
        return 0
    with stderr_console().status("bench lp") as status:
        result = bench_lp(
            args.lanes,
            args.solves,
            scenario,
            args.replications,
            args.days,
            progress=lambda text: status.update(f"bench lp: {text}"),
        )
    print_bench_lp(result, stdout_console())
    return 0


def cmd_bench_deploy(args: argparse.Namespace) -> int:
    """``fedinv bench deploy``: rounds simulated vs deployed on the same FedConfig."""
    import dataclasses
    import sys

    from fedinv.bench.deployment import NEAR_EMPTY, compare, report
    from fedinv.cli.training import fed_config

    cfg = fed_config(args)
    if args.near_empty:
        cfg = dataclasses.replace(cfg, **NEAR_EMPTY)
    result = compare(
        cfg,
        echo=lambda line: print(line, file=sys.stderr),
        launcher=not args.no_launcher,
        short_wait=not args.flower_wait,
    )
    print(dump(finite(result)) if args.json else report(result))
    return 0
