"""``fedinv simulate`` and ``fedinv tune``: a policy on held-out replications, and the
tuning of a classical policy's parameters by simulation (docs/cli.md)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedinv.cli.common import (
    COUNT,
    DAYS,
    SEED,
    CliError,
    dump,
    fmt,
    load,
    num,
    output_folder,
    params_table,
    refuse_unused,
    scenario_policy_args,
    stderr_console,
    stdout_console,
    write_text,
)

if TYPE_CHECKING:
    from fedinv.model.network import Scenario
    from fedinv.policies.tuning import TuneResult
    from fedinv.sim.run import SimulationResult

OUTPUT_FILES = (
    "daily.parquet",
    "per_replication.csv",
    "summary.csv",
    "nodes.csv",
    "monthly.csv",
    "params.json",
    "run.json",
)
"""What ``simulate --out DIR`` writes."""
TRAIN_REPLICATIONS, SWEEPS, SOLVER = 16, 2, "pyomo"
"""Defaults of ``--train-replications``, ``--sweeps`` (with ``--tune``) and ``--solver``
(with ``--mode hybrid``)."""


def add_parsers(commands: Any) -> None:
    """``fedinv simulate`` and ``fedinv tune``."""
    from fedinv.hybrid import BACKENDS, MODES
    from fedinv.policies.classical import POLICY_NAMES
    from fedinv.policies.tuning import PER
    from fedinv.registry import ALL_POLICIES
    from fedinv.roles.coordination import BalanceConfig
    from fedinv.roles.signals import NODE_RULES

    p = commands.add_parser(
        "simulate",
        help="simulate a classical policy and report its metrics",
        description="Simulate a policy on held-out replications 0..R-1 and report the "
        "metrics (mean and 95% interval half-width over replications).",
    )
    scenario_policy_args(p, ALL_POLICIES)
    p.add_argument(
        "--checkpoint",
        type=Path,
        metavar="PATH",
        help="with --policy dqn or hdpo: a checkpoint written by fedinv train",
    )
    p.add_argument(
        "--mode",
        choices=MODES,
        default="pure",
        help="pure: release the proposals; hybrid: release what the Pyomo/HiGHS "
        "safety layer returns (docs/hybrid.md; default pure)",
    )
    p.add_argument(
        "--solver",
        choices=BACKENDS,
        help=f"with --mode hybrid: pyomo (persistent HiGHS) or highspy (default {SOLVER})",
    )
    p.add_argument(
        "--projection",
        choices=("network", "per-org"),
        default="network",
        help="network: one safety layer and one decision for the whole network; per-org: "
        "each organization decides its own lanes from its own view behind its own layer, "
        "downstream-first, as its decision service does (docs/service.md; default network)",
    )
    p.add_argument(
        "--log",
        type=Path,
        metavar="PATH",
        help="with --projection per-org: write every organization's decisions to the "
        "SQLite decision log PATH, as the services do (one chain per organization, "
        "ORG/rR per replication when R > 1)",
    )
    p.add_argument(
        "--params",
        metavar="JSON|FILE",
        help="per-node policy parameters: a JSON object such as "
        '\'{"levels": {"stage-1": 6.5}}\' or a path to a JSON file '
        "(default: the textbook parameters)",
    )
    p.add_argument(
        "--tune",
        action="store_true",
        help="tune the parameters on training replications first (not with --params)",
    )
    p.add_argument(
        "--train-mode",
        choices=MODES,
        help="with --tune: tune pure, or through the safety layer (hybrid); default: "
        "the --mode the policy runs in",
    )
    p.add_argument(
        "--tune-per",
        choices=PER,
        help="with --tune: one search coordinate per tier (default) or per node",
    )
    p.add_argument(
        "--train-replications",
        type=COUNT,
        metavar="K",
        help=f"with --tune: training replications (default {TRAIN_REPLICATIONS})",
    )
    p.add_argument(
        "--sweeps",
        type=COUNT,
        metavar="S",
        help=f"with --tune: coordinate-descent sweeps (default {SWEEPS})",
    )
    p.add_argument(
        "--coordination",
        choices=NODE_RULES,
        default="none",
        help="balance: add the Coordination Node, which moves stock between same-region "
        "peers on the scenario's lateral links, sharing every day; signalled: the same "
        "rule driven by threshold-triggered messages only (docs/roles.md; default none)",
    )
    p.add_argument(
        "--coordination-threshold",
        type=float,
        metavar="DAYS",
        help="with --coordination: a node projected below DAYS of mean demand at "
        f"the end of its lead time receives (default {BalanceConfig.threshold})",
    )
    p.add_argument(
        "--coordination-reserve",
        type=float,
        metavar="DAYS",
        help="with --coordination: days of mean demand a donor keeps "
        f"(default {BalanceConfig.reserve})",
    )
    p.add_argument(
        "--monitor",
        action="store_true",
        help="watch the run with the Analytics Monitor (docs/roles.md): alert counts in "
        "the output; --out also writes alerts.csv and kpis.csv (pure mode)",
    )
    p.add_argument("--days", type=DAYS, metavar="N", help="days to simulate (default: horizon)")
    p.add_argument(
        "--replications",
        type=COUNT,
        default=10,
        metavar="R",
        help="replications 0..R-1 (default 10)",
    )
    p.add_argument("--seed", type=SEED, metavar="S", help="override the scenario's seed")
    p.add_argument(
        "--out", type=Path, metavar="DIR", help="write " + ", ".join(OUTPUT_FILES) + " to DIR"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=cmd_simulate)

    p = commands.add_parser(
        "tune",
        help="tune a policy's parameters by simulation",
        description="Cyclic coordinate descent over per-tier (or per-node) safety factors "
        "(and order-size multipliers) on training replications, each candidate run pure or "
        "through the safety layer; see fedinv.policies.tuning.",
    )
    scenario_policy_args(p, POLICY_NAMES)
    p.add_argument(
        "--mode",
        choices=MODES,
        default="pure",
        help="pure: score candidates on their proposals; hybrid: on the orders the safety "
        "layer releases (tuned for fedinv simulate --mode hybrid; default pure)",
    )
    p.add_argument(
        "--solver",
        choices=BACKENDS,
        help=f"with --mode hybrid: pyomo or highspy (default {SOLVER})",
    )
    p.add_argument(
        "--per",
        choices=PER,
        default="tier",
        help="one search coordinate per tier (default) or per node",
    )
    p.add_argument(
        "--train-replications",
        type=COUNT,
        default=TRAIN_REPLICATIONS,
        metavar="K",
        help=f"training replications (default {TRAIN_REPLICATIONS})",
    )
    p.add_argument("--days", type=DAYS, metavar="N", help="days per replication (default: horizon)")
    p.add_argument(
        "--sweeps",
        type=COUNT,
        default=SWEEPS,
        metavar="S",
        help=f"coordinate-descent sweeps (default {SWEEPS})",
    )
    p.add_argument("--seed", type=SEED, metavar="S", help="override the scenario's seed")
    p.add_argument(
        "--out",
        type=Path,
        metavar="FILE.json",
        help="write the tuned params (usable as simulate --params FILE)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=cmd_tune)


# -- params ------------------------------------------------------------------------------


def read_params(text: str, policy: str | None = None) -> dict[str, Any]:
    """``--params``: a JSON object, or a path to a JSON file (a params object, or a
    ``run.json`` / ``tune --json`` output whose ``params`` entry is used)."""
    try:
        obj = json.loads(text)
        where = "--params"
    except json.JSONDecodeError as exc:
        path = Path(text)
        if path.is_file():
            where = f"params file {text}"
            try:
                obj = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc2:
                raise CliError(
                    f"{where}: invalid JSON: {exc2.msg} at line {exc2.lineno} column {exc2.colno}"
                ) from None
        elif text.lstrip().startswith(("{", "[", '"')):
            raise CliError(
                f"--params: invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
        else:
            raise CliError(
                f"--params: no such file {text!r} (give a JSON object or the path to a JSON file)"
            ) from None
    if not isinstance(obj, dict):
        raise CliError(
            f"{where}: expected a JSON object such as "
            f'{{"levels": {{"NODE": 10}}}}, got {type(obj).__name__}'
        )
    if isinstance(obj.get("params"), dict):
        if policy is not None and obj.get("policy") not in (None, policy):
            raise CliError(f"{where}: params are for policy {obj['policy']!r}, not {policy!r}")
        obj = obj["params"]
    return obj


def _run_tuner(
    scenario: Scenario,
    policy: str,
    train_replications: int,
    days: int | None,
    sweeps: int,
    quiet: bool,
    mode: str = "pure",
    solver: str = SOLVER,
    per: str = "tier",
) -> TuneResult:
    from fedinv.policies.tuning import tune

    how = {"mode": mode, "solver": solver, "per": per}
    if quiet:
        return tune(
            scenario,
            policy,
            train_replications=train_replications,
            days=days,
            sweeps=sweeps,
            **how,
        )
    best = math.inf
    label = f"tuning {policy} on {scenario.name} ({train_replications} training replications" + (
        ", through the safety layer)" if mode == "hybrid" else ")"
    )
    with stderr_console().status(label) as status:

        def progress(evaluations: int, cost: float) -> None:
            nonlocal best
            best = min(best, cost)
            status.update(f"{label}: {evaluations} evaluations, best {best:,.4f} $/day")

        return tune(
            scenario,
            policy,
            train_replications=train_replications,
            days=days,
            sweeps=sweeps,
            progress=progress,
            **how,
        )


def _tuning_payload(result: TuneResult, sweeps: int) -> dict[str, Any]:
    return {
        "evaluations": result.evaluations,
        "simulated_days": result.simulated_days,
        "train_cost_per_day": num(result.train_cost_per_day),
        "train_replications": result.train_replications,
        "sweeps": sweeps,
        "mode": result.mode,
        "per": result.per,
        "coordinates": {k: num(v) for k, v in result.coordinates.items()},
    }


def cmd_tune(args: argparse.Namespace) -> int:
    """``fedinv tune``: tune, print coordinates, params and budget; ``--out`` the params."""
    from rich.table import Table

    refuse_unused(
        args,
        args.mode == "hybrid",
        ("solver",),
        "without --mode hybrid (only the safety layer solves)",
    )
    scenario = load(args.scenario, args.seed)
    result = _run_tuner(
        scenario,
        args.policy,
        args.train_replications,
        args.days,
        args.sweeps,
        args.quiet,
        args.mode,
        args.solver or SOLVER,
        args.per,
    )
    if args.out is not None:
        write_text(args.out, dump(result.params) + "\n")
    payload = {
        "scenario": scenario.name,
        "policy": args.policy,
        "seed": scenario.seed,
        "days": result.days,
        **_tuning_payload(result, args.sweeps),
        "params": result.params,
    }
    if args.json:
        print(dump(payload))
        return 0
    con = stdout_console()
    coords = Table(title=f"Tuned {args.policy} on {scenario.name}")
    coords.add_column("coordinate")
    coords.add_column("value", justify="right")
    for k, v in result.coordinates.items():
        coords.add_row(k, f"{v:.4f}")
    con.print(coords)
    con.print(params_table(result.params, "Parameters per node"))
    layer = " through the safety layer" if result.mode == "hybrid" else ""
    con.print(
        f"training cost{layer} {result.train_cost_per_day:,.4f} $/day on "
        f"{result.train_replications} replications x {result.days} days; budget: "
        f"{result.evaluations} evaluations, {result.simulated_days:,} simulated days",
        markup=False,
    )
    if args.out is not None:
        con.print(
            f"wrote {args.out} (use: fedinv simulate --scenario {args.scenario} "
            f"--policy {args.policy} --params {args.out}"
            + (" --mode hybrid)" if result.mode == "hybrid" else ")"),
            markup=False,
        )
    return 0


def run_payload(
    result: SimulationResult,
    policy: str,
    params: Mapping[str, Any],
    tuning: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON object of ``simulate --json`` (also ``run.json``)."""
    summary = result.summary
    payload: dict[str, Any] = {
        "scenario": result.scenario.name,
        "policy": policy,
        "params": params,
        "days": result.days,
        "replications": len(result.replications),
        "seed": result.scenario.seed,
        "metrics": {
            str(m): {"mean": num(summary.at[m, "mean"]), "ci95": num(summary.at[m, "ci95"])}
            for m in summary.index
        },
    }
    if tuning is not None:
        payload["tuning"] = dict(tuning)
    return payload


def write_outputs(
    out_dir: Path, result: SimulationResult, params: Mapping[str, Any], payload: Mapping[str, Any]
) -> list[Path]:
    """Write :data:`OUTPUT_FILES` (and, in hybrid mode, ``relaxations.csv``) to
    ``out_dir``, each atomically; returns their paths."""
    writers: dict[str, Callable[[Path], None]] = {
        "daily.parquet": lambda p: result.daily.to_parquet(p, index=False),
        "per_replication.csv": lambda p: result.per_replication.to_csv(p),
        "summary.csv": lambda p: result.summary.to_csv(p, index_label="metric"),
        "nodes.csv": lambda p: result.nodes.to_csv(p, index=False),
        "monthly.csv": lambda p: result.monthly.to_csv(p, index=False),
        "params.json": lambda p: p.write_text(dump(params) + "\n", encoding="utf-8"),
        "run.json": lambda p: p.write_text(dump(payload) + "\n", encoding="utf-8"),
    }
    if result.relaxations is not None:  # hybrid mode
        relaxations = result.relaxations
        writers["relaxations.csv"] = lambda p: relaxations.to_csv(p, index=False)
    from fedinv.files import atomic_write

    output_folder(out_dir)
    paths = []
    for name, write in writers.items():
        atomic_write(out_dir / name, write)
        paths.append(out_dir / name)
    return paths


def cmd_simulate(args: argparse.Namespace) -> int:
    """``fedinv simulate``: run a policy on replications 0..R-1, print/write metrics."""
    from fedinv.registry import OPTIMIZATION, prepare, scenario_layout
    from fedinv.sim.metrics import HEADLINE
    from fedinv.sim.run import simulate

    if args.tune and args.params is not None:
        raise CliError("--tune and --params cannot be used together (--tune finds the params)")
    learned = _check_learned_args(args)
    optimization = args.policy in OPTIMIZATION
    if optimization and args.tune:
        raise CliError(
            f"--tune is for classical policies, not --policy {args.policy} (give "
            "its options with --params, e.g. '{\"horizon\": 21}')"
        )
    refuse_unused(
        args,
        args.tune,
        ("train_replications", "sweeps", "train_mode", "tune_per"),
        "without --tune (they set how the parameters are tuned)",
    )
    refuse_unused(
        args,
        "hybrid" in (args.mode, args.train_mode),
        ("solver",),
        "without --mode hybrid or --train-mode hybrid (only the safety layer solves; pure "
        "mode releases the proposals)",
    )
    refuse_unused(
        args,
        args.coordination != "none",
        ("coordination_threshold", "coordination_reserve"),
        "without --coordination",
    )
    if args.projection == "per-org" and (args.coordination != "none" or args.monitor):
        raise CliError(
            "--projection per-org decides orders only: drop --coordination and --monitor"
        )
    if args.monitor and args.mode != "pure":
        raise CliError("--monitor watches pure-mode runs (drop --mode hybrid)")
    solver = args.solver or SOLVER
    given = read_params(args.params, args.policy) if args.params is not None else None
    scenario = load(args.scenario, args.seed)
    layout = scenario_layout(scenario)
    tuning = None
    if args.tune:
        sweeps = args.sweeps or SWEEPS
        tuned = _run_tuner(
            scenario,
            args.policy,
            args.train_replications or TRAIN_REPLICATIONS,
            args.days,
            sweeps,
            args.quiet,
            args.train_mode or args.mode,
            solver,
            args.tune_per or "tier",
        )
        given, tuning = tuned.params, _tuning_payload(tuned, sweeps)
    prepared = prepare(
        args.policy,
        scenario,
        layout,
        params=given,
        checkpoint=args.checkpoint if learned else None,
        where=f"--params for --policy {args.policy}",
    )
    factory, coordination = _coordination(args, scenario, prepared.factory)
    decision_log = _decision_log(args, scenario, prepared, solver)
    try:
        result = simulate(
            scenario,
            factory,
            replications=args.replications,
            days=args.days,
            progress=not args.quiet and not args.json and sys.stdout.isatty(),
            mode=args.mode,
            solver=solver,
            projection=args.projection,
            on_org_decision=decision_log,
        )
    finally:
        if decision_log is not None:
            decision_log.close()
    payload = run_payload(result, args.policy, prepared.params, tuning)
    watched = _monitor(args, scenario, factory) if args.monitor else None
    if watched is not None:
        alerts = watched.alerts
        payload["monitor"] = {
            "alerts": len(alerts),
            "by_metric": {str(k): int(v) for k, v in alerts.groupby("metric").size().items()},
        }
    if learned:
        payload["checkpoint"] = str(args.checkpoint)
    if optimization:
        payload["policy_options"] = prepared.options
    payload["mode"] = args.mode
    if coordination is not None:
        payload["coordination"] = coordination
    if args.projection != "network":
        payload["projection"] = args.projection
    if decision_log is not None:
        payload["log"] = {"path": str(args.log), "heads": decision_log.head_hashes}
    if args.mode == "hybrid":
        payload["solver"] = solver
        payload["relaxations"] = len(result.relaxations)
    paths = (
        write_outputs(args.out, result, prepared.params, payload) if args.out is not None else []
    )
    if watched is not None and args.out is not None:
        from fedinv.files import atomic_write

        for name, frame in (("alerts.csv", watched.alerts), ("kpis.csv", watched.kpis)):
            atomic_write(args.out / name, lambda p, f=frame: f.to_csv(p, index=False))
            paths.append(args.out / name)
    if args.json:
        print(dump(payload))
        return 0
    _print_run(payload, HEADLINE, _params_source(args, learned, optimization))
    if paths:
        stdout_console().print(
            f"wrote {', '.join(p.name for p in paths)} to {args.out}", markup=False
        )
    return 0


def _decision_log(args: argparse.Namespace, scenario: Scenario, prepared: Any, solver: str):
    """``--log``: the :class:`fedinv.service.replay.SimulationLog` of this run, or None."""
    if args.log is None:
        return None
    if args.projection != "per-org":
        raise CliError(
            "--log needs --projection per-org (the log holds each organization's own "
            "decisions, as its service writes them)"
        )
    if args.coordination != "none":
        raise CliError("--log with --coordination: lateral transfers are not logged")
    if args.log.exists():
        raise CliError(f"--log {args.log} exists: a simulation writes a fresh log")
    from fedinv.service.core import file_digest, policy_digest, policy_info
    from fedinv.service.replay import SimulationLog
    from fedinv.sim.simulator import Simulator

    sim = Simulator(scenario, days=args.days)
    digests = {
        org: policy_digest(
            policy_info(scenario, org, prepared, args.mode, solver, prepared.checkpoint)
        )
        for org in sim.layout.org_ids
    }
    return SimulationLog(
        args.log,
        sim,
        range(args.replications),
        digests,
        file_digest(prepared.checkpoint),
    )


def _coordination(
    args: argparse.Namespace, scenario: Scenario, factory: Callable
) -> tuple[Callable, dict[str, Any] | None]:
    """The policy factory with ``--coordination`` applied, and its JSON description."""
    from fedinv.roles.coordination import BalanceConfig
    from fedinv.roles.signals import node_factory

    if args.coordination == "none":
        return factory, None
    if not scenario.network.transfers:
        raise CliError(
            f"--coordination {args.coordination}: scenario {scenario.name} has no lateral "
            "links ([[transfers]]) to move stock on"
        )
    default = BalanceConfig()
    threshold = (
        default.threshold if args.coordination_threshold is None else args.coordination_threshold
    )
    reserve = default.reserve if args.coordination_reserve is None else args.coordination_reserve
    try:
        config = BalanceConfig(threshold, reserve)
    except ValueError as exc:
        raise CliError(f"--coordination-threshold/--coordination-reserve: {exc}") from None
    wrapped = node_factory(factory, args.coordination, config)
    return wrapped, {"rule": args.coordination, "threshold": threshold, "reserve": reserve}


def _monitor(args: argparse.Namespace, scenario: Scenario, factory: Callable) -> Any:
    """``--monitor``: the same replications watched by the Analytics Monitor."""
    from fedinv.roles.monitor import watch
    from fedinv.sim.simulator import Simulator

    sim = Simulator(scenario, days=args.days)
    return watch(sim, factory(sim.layout), range(args.replications))


def _check_learned_args(args: argparse.Namespace) -> bool:
    """True for a learned policy; its options are checked (``--checkpoint`` needed, no
    ``--params`` or ``--tune``)."""
    from fedinv.registry import LEARNED_POLICIES

    if args.policy not in LEARNED_POLICIES:
        if args.checkpoint is not None:
            raise CliError(
                f"--checkpoint is for --policy {' or '.join(LEARNED_POLICIES)}, "
                f"not {args.policy!r} (classical policies take --params)"
            )
        return False
    if args.checkpoint is None:
        raise CliError(
            f"--policy {args.policy} needs --checkpoint PATH (written by "
            "fedinv train --out DIR, as DIR/checkpoint.pt)"
        )
    if args.params is not None or args.tune:
        raise CliError(
            f"--params and --tune are for classical policies, not --policy {args.policy}"
        )
    return True


def _params_source(args: argparse.Namespace, learned: bool, optimization: bool) -> str:
    """Where the policy's parameters came from, for the header line."""
    if learned:
        return "checkpoint"
    if optimization:
        return "given options" if args.params is not None else "default options"
    if args.tune:
        return "tuned params"
    return "given params" if args.params is not None else "textbook params"


def _print_run(payload: Mapping[str, Any], headline: Sequence[str], source: str) -> None:
    from rich.table import Table

    con = stdout_console()
    tuned = source == "tuned params"
    con.print(
        f"{payload['scenario']} | {payload['policy']} ({source}) "
        f"| {payload['days']} days x {payload['replications']} replications | "
        f"seed {payload['seed']}",
        markup=False,
    )
    if tuned:
        t = payload["tuning"]
        con.print(
            f"tuning: {t['evaluations']} evaluations, {t['simulated_days']:,} simulated "
            f"days, training cost {fmt(t['train_cost_per_day'])} $/day",
            markup=False,
        )
    if payload.get("checkpoint"):
        con.print(f"checkpoint: {payload['checkpoint']}", markup=False)
    if payload.get("policy_options") is not None:
        con.print(f"options: {json.dumps(payload['policy_options'])}", markup=False)
    if payload.get("coordination"):
        c = payload["coordination"]
        con.print(
            f"coordination: {c['rule']} (threshold {c['threshold']:g}, reserve "
            f"{c['reserve']:g} days of mean demand)",
            markup=False,
        )
    if payload.get("monitor") is not None:
        by = ", ".join(f"{k} {v}" for k, v in payload["monitor"]["by_metric"].items())
        con.print(
            f"monitor: {payload['monitor']['alerts']} alert(s) ({by or 'none'})", markup=False
        )
    if payload.get("mode") == "hybrid":
        con.print(
            f"hybrid mode: the {payload['solver']} safety layer released the orders; "
            f"{payload['relaxations']} constraint(s) relaxed",
            markup=False,
        )
    if payload["params"]:
        con.print(params_table(payload["params"], "Parameters per node"))
    metrics = payload["metrics"]
    table = Table(title="Metrics (mean ± 95% CI half-width over replications)")
    table.add_column("metric")
    table.add_column("mean", justify="right")
    table.add_column("± ci95", justify="right")
    first = [m for m in headline if m in metrics]
    for m in first:
        table.add_row(m, fmt(metrics[m]["mean"]), fmt(metrics[m]["ci95"]), style="bold")
    table.add_section()
    for m, v in metrics.items():
        if m not in first:
            table.add_row(m, fmt(v["mean"]), fmt(v["ci95"]))
    con.print(table)
