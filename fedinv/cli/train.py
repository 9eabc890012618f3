"""``fedinv train``: tune the baselines, train a DQN or an HDPO policy, compare them on
held-out replications (docs/agents.md)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedinv.cli.common import (
    COUNT,
    DAYS,
    SEED,
    CliError,
    dump,
    fmt,
    int_at_least,
    load,
    output_folder,
    stderr_console,
    stdout_console,
)
from fedinv.cli.training import LAYER_GRADIENTS

ALGOS = ("dqn", "hdpo")
"""Learning algorithms of ``fedinv train --algo``."""


def add_parser(commands: Any) -> None:
    """``fedinv train``."""
    p = commands.add_parser(
        "train",
        help="train a learned ordering policy and compare it with tuned base-stock",
        description="Tune the baseline(s) on training replications, train a DQN or an HDPO "
        "policy on training replications (validation curve on separate replications), then "
        "evaluate them on held-out replications 0..R-1; see docs/agents.md.",
    )
    p.add_argument(
        "--scenario",
        required=True,
        metavar="NAME|FILE",
        help="built-in scenario name or path to a .toml file",
    )
    p.add_argument(
        "--algo",
        choices=ALGOS,
        default="dqn",
        help="learning algorithm: dqn (double DQN) or hdpo (pathwise gradients through the "
        "differentiable day, a residual on tuned base-stock or (s,S)); default dqn",
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="DIR",
        help="write checkpoint.pt, curve.csv, curve.png, evaluation.csv, summary.json to DIR",
    )
    p.add_argument(
        "--steps",
        type=COUNT,
        metavar="N",
        help="dqn: environment steps (days of the training batch; default 20000)",
    )
    p.add_argument(
        "--iterations",
        type=COUNT,
        metavar="N",
        help="hdpo: training batches, each fresh replications over the horizon (default 40)",
    )
    p.add_argument(
        "--window",
        type=int_at_least(0),
        metavar="D",
        help="hdpo: days per gradient step, truncated back-propagation (default: four "
        "times the longest echelon lead time, at least 30 days; 0: the whole horizon)",
    )
    p.add_argument(
        "--train-mode",
        choices=("pure", "hybrid"),
        help="pure (default), or trained for the safety layer: the DQN on the released "
        "orders with a penalty on the projection distance, HDPO with violations penalized "
        "in its loss and its base tuned through the layer; the baselines are then tuned, "
        "and every policy validated and evaluated, through the layer",
    )
    p.add_argument(
        "--layer-gradient",
        choices=LAYER_GRADIENTS,
        help="hdpo with --train-mode hybrid: how training meets the safety layer: penalty "
        "(default: the day runs the proposals, violations priced in the loss), "
        "straight-through (the day runs the orders the layer releases, gradient the "
        "identity) or masked (the same, no gradient on lanes the layer changed); "
        "docs/agents.md",
    )
    p.add_argument(
        "--learning-rate",
        type=float,
        metavar="LR",
        help="hdpo: Adam step size at the first iteration (default 1e-2; it moves linearly "
        "to 1e-3 by the last)",
    )
    p.add_argument(
        "--information",
        choices=("local", "echelon"),
        help="what each node observes: local (its own state, the default) or echelon (also "
        "its echelon inventory position: its downstream nodes' stock and pipeline, a "
        "shared-information assumption; docs/agents.md)",
    )
    p.add_argument(
        "--confirmations",
        action="store_true",
        help="observe the Supplier Interface's confirmations (yesterday's confirmed units "
        "and ship days; the simulator runs the confirmation step; docs/roles.md)",
    )
    p.add_argument(
        "--transfers",
        action="store_true",
        default=None,
        help="hdpo: also propose lateral transfers (scenarios with [[transfers]]): one more "
        "output per node, its pressure; a link moves stock from the lower to the higher "
        "(the Coordination Node's role, learned; docs/roles.md)",
    )
    p.add_argument(
        "--base",
        choices=("auto", "base-stock", "sS"),
        metavar="P",
        help="hdpo: the tuned classical policy it is a residual on: auto (sS where a lane "
        "has a fixed ordering cost, else base-stock; default), base-stock or sS",
    )
    p.add_argument(
        "--seed",
        type=SEED,
        default=1,
        metavar="S",
        help="training seed: initialization (and, dqn, exploration and minibatches; default 1)",
    )
    p.add_argument(
        "--replications",
        type=COUNT,
        default=16,
        metavar="B",
        help="training replications stepped in lockstep (hdpo: per batch; default 16)",
    )
    p.add_argument(
        "--days",
        type=DAYS,
        metavar="N",
        help="days per episode and evaluation (default: horizon)",
    )
    p.add_argument(
        "--eval-every",
        type=int_at_least(0),
        metavar="N",
        help="steps (hdpo: iterations) between validation runs (default: steps / 20; hdpo: 5)",
    )
    p.add_argument(
        "--eval-replications",
        type=COUNT,
        default=8,
        metavar="R",
        help="validation replications (default 8)",
    )
    p.add_argument(
        "--test-replications",
        type=COUNT,
        default=10,
        metavar="R",
        help="held-out replications 0..R-1 of the final comparison (default 10)",
    )
    p.add_argument(
        "--network-share",
        type=float,
        metavar="W",
        help="dqn: reward weight of the network's cost next to the node's own "
        "(default 1; see docs/agents.md)",
    )
    p.add_argument(
        "--order-change-cost",
        type=float,
        metavar="C",
        help="dqn: reward penalty in $ per unit of day-to-day order change (default 0)",
    )
    p.add_argument(
        "--baselines",
        default="base-stock",
        metavar="P,...",
        help="tuned classical policies to compare with (default base-stock)",
    )
    p.add_argument(
        "--train-replications",
        type=COUNT,
        default=16,
        metavar="K",
        help="training replications of the baselines' tuning (and of hdpo's base; default 16)",
    )
    p.add_argument(
        "--sweeps",
        type=COUNT,
        default=2,
        metavar="S",
        help="coordinate-descent sweeps of the tuning (default 2)",
    )
    p.add_argument("--json", action="store_true", help="print summary.json on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    """``fedinv train``: tune the baselines, train a DQN or an HDPO policy, compare on
    held-out replications (:mod:`fedinv.agents.compare`); writes the checkpoint, the curve
    and the evaluation."""
    from dataclasses import replace

    from fedinv.agents import hdpo
    from fedinv.agents.dqn import Args
    from fedinv.agents.envs import EnvConfig, RewardConfig
    from fedinv.policies.classical import POLICY_NAMES

    only = {
        "dqn": ("iterations", "window", "base", "layer_gradient", "learning_rate", "transfers"),
        "hdpo": ("steps", "network_share", "order_change_cost"),
    }
    for name in only[args.algo]:
        if getattr(args, name) is not None:
            other = "hdpo" if args.algo == "dqn" else "dqn"
            raise CliError(
                f"--{name.replace('_', '-')} is for --algo {other}, not --algo {args.algo}"
            )

    baselines = list(dict.fromkeys(b.strip() for b in args.baselines.split(",") if b.strip()))
    unknown = [b for b in baselines if b not in POLICY_NAMES]
    if not baselines or unknown:
        raise CliError(
            f"--baselines: expected policies among {', '.join(POLICY_NAMES)}, got "
            f"{args.baselines!r}"
        )
    output_folder(args.out)
    scenario = load(args.scenario)
    hdpo.check_transfers(bool(args.transfers), scenario)  # before any tuning
    if args.days is not None:
        scenario = replace(
            scenario, horizon_days=args.days, warmup_days=min(scenario.warmup_days, args.days - 2)
        )
    common = dict(
        baselines=baselines,
        tune_replications=args.train_replications,
        sweeps=args.sweeps,
        test_replications=args.test_replications,
    )
    observed = dict(information=args.information or "local", confirmations=bool(args.confirmations))
    if args.algo == "hdpo":
        defaults = hdpo.Args()
        train_args: Args | hdpo.Args = hdpo.Args(
            scenario=args.scenario,
            seed=args.seed,
            iterations=args.iterations or defaults.iterations,
            replications=args.replications,
            window=defaults.window if args.window is None else args.window,
            base=args.base or defaults.base,
            tune_replications=args.train_replications,
            sweeps=args.sweeps,
            eval_replications=args.eval_replications,
            eval_every=defaults.eval_every if args.eval_every is None else args.eval_every,
            train_mode=args.train_mode or defaults.train_mode,
            layer_gradient=args.layer_gradient or defaults.layer_gradient,
            learning_rate=defaults.learning_rate
            if args.learning_rate is None
            else args.learning_rate,
            env=replace(defaults.env, **observed),
            transfers=bool(args.transfers),
        )
        if args.learning_rate is not None and not (
            math.isfinite(args.learning_rate) and args.learning_rate > 0
        ):
            raise CliError(f"--learning-rate: expected a number > 0, got {args.learning_rate}")
        return _run(args, scenario, train_args, train_args.iterations, common)
    steps = args.steps or Args().total_steps
    reward = RewardConfig()
    for name in ("network_share", "order_change_cost"):
        value = getattr(args, name)
        if value is not None:
            if not math.isfinite(value) or value < 0:
                raise CliError(f"--{name.replace('_', '-')}: expected a number >= 0, got {value}")
            reward = replace(reward, **{name: value})
    train_args = Args(
        scenario=args.scenario,
        seed=args.seed,
        total_steps=steps,
        replications=args.replications,
        eval_replications=args.eval_replications,
        eval_every=(max(steps // 20, 1) if args.eval_every is None else args.eval_every),
        env=EnvConfig(reward=reward, train_mode=args.train_mode or "pure", **observed),
    )
    return _run(args, scenario, train_args, steps, common)


def _run(args: argparse.Namespace, scenario: Any, train_args: Any, steps: int, common: dict) -> int:
    """Train and compare with a progress bar (unless ``--quiet`` or ``--json``), write the
    report, print it."""
    from fedinv.agents.compare import train_and_compare, write_report

    algo = args.algo
    if args.quiet or args.json:
        report = train_and_compare(scenario, train_args, **common)
    else:
        from fedinv.progress import progress_bar

        with progress_bar(stderr_console(), transient=True) as bar:
            tuning = bar.add_task("tuning baselines", total=None)
            training = bar.add_task(
                f"training {algo} on {scenario.name}", total=steps, visible=False
            )

            def on_tune(policy: str, evaluations: int, cost: float) -> None:
                bar.update(
                    tuning,
                    description=f"tuning {policy}: {evaluations} evaluations, "
                    f"last {cost:,.2f} $/day",
                )

            def on_step(step: int, stats: Mapping[str, float]) -> None:
                if step <= 1:
                    bar.update(tuning, visible=False)
                    bar.update(training, visible=True)
                if step % (1 if algo == "hdpo" else 10) == 0 or step == steps:
                    best = stats["best"]
                    if algo == "hdpo":
                        what = f"loss {stats['loss']:,.2f} $/day"
                    else:
                        what = f"eps {stats['epsilon']:.2f}"
                    bar.update(
                        training,
                        completed=step,
                        description=(
                            f"training {algo} on {scenario.name} ({what}"
                            + (
                                f", best validation {best:,.2f} $/day)"
                                if math.isfinite(best)
                                else ")"
                            )
                        ),
                    )

            report = train_and_compare(
                scenario, train_args, on_tune=on_tune, on_step=on_step, **common
            )
    paths = write_report(report, args.out)
    if args.json:
        print(dump(report.payload()))
        return 0
    _print_training(report.payload())
    stdout_console().print(f"wrote {', '.join(p.name for p in paths)} to {args.out}", markup=False)
    return 0


def _print_training(payload: Mapping[str, Any]) -> None:
    from rich.table import Table

    con = stdout_console()
    algo = payload["algo"]
    if algo == "hdpo":
        con.print(
            f"{payload['scenario']} | hdpo on tuned {payload['base']}, seed {payload['seed']} | "
            f"{payload['iterations']:,} iterations x {payload['replications']} replications "
            f"x {payload['days']} days = {payload['training_days']:,} simulated days (+ "
            f"{payload['validation_days']:,} validation, {payload['tuning_days']:,} tuning) "
            f"| training {payload['wall_s']:,.0f} s | selected iteration "
            f"{payload['best_iteration']:,}",
            markup=False,
        )
    else:
        con.print(
            f"{payload['scenario']} | dqn, seed {payload['seed']} | {payload['steps']:,} "
            f"steps x {payload['replications']} replications = "
            f"{payload['simulated_days']:,} simulated days | selected step "
            f"{payload['best_step']:,}",
            markup=False,
        )
    for name, b in payload["baselines"].items():
        con.print(
            f"tuned {name}: {b['evaluations']} evaluations, {b['simulated_days']:,} simulated days",
            markup=False,
        )
    table = Table(
        title=f"Held-out cost per day ({payload['test_replications']} replications "
        "0..R-1, mean ± 95% CI half-width)"
    )
    table.add_column("policy")
    table.add_column("cost per day", justify="right")
    table.add_column("± ci95", justify="right")
    table.add_column(f"{algo} - policy (paired)", justify="right")
    table.add_column("%", justify="right")
    for name, c in payload["cost_per_day"].items():
        d = payload["difference_vs"].get(name)
        table.add_row(
            name,
            fmt(c["mean"]),
            fmt(c["ci95"]),
            "" if d is None else f"{fmt(d['mean'])} ± {fmt(d['ci95'])}",
            "" if d is None else f"{fmt(d['percent'])}",
        )
    con.print(table)
