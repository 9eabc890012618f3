"""The ``fedinv`` command line: scenarios, simulate, tune, train, bench (docs/cli.md).

Errors in the input (unknown scenario or node, malformed params or scenario file, bad
numbers) print one line ``fedinv: error: ...`` on stderr and exit with status 2;
argparse's own usage errors exit 2 as well. With ``--json`` the only thing on stdout is
one JSON object (or list); progress goes to stderr.

Heavy modules (numpy, pandas, the simulator) are imported only once the command is
known, so ``fedinv bench`` can set the BLAS thread variables before numpy loads.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from fedinv.model.layout import Layout
    from fedinv.model.network import Scenario
    from fedinv.policies.tuning import TuneResult
    from fedinv.sim.run import SimulationResult

PROG = "fedinv"
EXIT_USAGE = 2
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
LEARNED_POLICIES = ("dqn",)
"""Policies loaded from a checkpoint (``simulate --policy dqn --checkpoint PATH``)."""
ALGOS = ("dqn",)
"""Learning algorithms of ``fedinv train --algo``."""


class CliError(Exception):
    """A bad argument or input: reported as ``fedinv: error: MESSAGE``, exit status 2."""


# -- entry point -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if _command(argv) == "bench":
        from fedinv.bench.sim import pin_single_thread_env

        pin_single_thread_env()  # before numpy is imported, where it still counts
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors (status 2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    from fedinv.model.scenario import ScenarioError

    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # e.g. `fedinv scenarios show X | head`
        _silence_stdout()
        return 141
    except (CliError, ScenarioError, ValueError, OSError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    except RuntimeError as exc:
        from fedinv.policies.projector import SolverError

        if not isinstance(exc, SolverError):
            raise
        _error(f"solver: {exc}")
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _command(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def _error(message: str) -> None:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # pragma: no cover - stdout without a descriptor
        pass


# -- parser ------------------------------------------------------------------------------


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _batch_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 1,256, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected batch sizes >= 1, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of every command."""
    from fedinv.bench.sim import DEFAULT_BATCHES, DEFAULT_POLICY, DEFAULT_SCENARIO
    from fedinv.hybrid import BACKENDS, OPTIMIZATION_POLICIES
    from fedinv.policies.classical import POLICY_NAMES
    from fedinv.sim.run import MODES

    days_t, reps_t, seed_t = _int_at_least(2), _int_at_least(1), _int_at_least(0)
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inventory control in multi-tier supply networks: built-in "
        "scenarios, simulation of classical policies, tuning, benchmarks. See docs/cli.md.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    scen = commands.add_parser(
        "scenarios",
        help="list, show or validate scenarios",
        description="Built-in scenarios and scenario files.",
    )
    actions = scen.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = actions.add_parser("list", help="table of the built-in scenarios")
    p.add_argument("--json", action="store_true", help="print a JSON list instead")
    p.set_defaults(func=cmd_scenarios_list)
    p = actions.add_parser("show", help="summary of a scenario (and its TOML, for built-ins)")
    p.add_argument("scenario", metavar="NAME|FILE")
    p.add_argument(
        "--toml",
        action="store_true",
        help="print only the scenario's TOML text (a template to copy)",
    )
    p.set_defaults(func=cmd_scenarios_show)
    p = actions.add_parser("validate", help="check a scenario file; exit 2 if malformed")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=cmd_scenarios_validate)

    p = commands.add_parser(
        "simulate",
        help="simulate a classical policy and report its metrics",
        description="Simulate a policy on held-out replications 0..R-1 and report the "
        "metrics (mean and 95% interval half-width over replications).",
    )
    _scenario_policy_args(p, (*POLICY_NAMES, *LEARNED_POLICIES, *OPTIMIZATION_POLICIES))
    p.add_argument(
        "--checkpoint",
        type=Path,
        metavar="PATH",
        help="with --policy dqn: a checkpoint written by fedinv train",
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
        default="pyomo",
        help="with --mode hybrid: pyomo (persistent HiGHS) or highspy (default pyomo)",
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
        "--train-replications",
        type=reps_t,
        default=16,
        metavar="K",
        help="with --tune: training replications (default 16)",
    )
    p.add_argument(
        "--sweeps",
        type=reps_t,
        default=2,
        metavar="S",
        help="with --tune: coordinate-descent sweeps (default 2)",
    )
    p.add_argument("--days", type=days_t, metavar="N", help="days to simulate (default: horizon)")
    p.add_argument(
        "--replications",
        type=reps_t,
        default=10,
        metavar="R",
        help="replications 0..R-1 (default 10)",
    )
    p.add_argument("--seed", type=seed_t, metavar="S", help="override the scenario's seed")
    p.add_argument(
        "--out", type=Path, metavar="DIR", help="write " + ", ".join(OUTPUT_FILES) + " to DIR"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=cmd_simulate)

    p = commands.add_parser(
        "tune",
        help="tune a policy's parameters by simulation",
        description="Cyclic coordinate descent over per-tier safety factors (and order-size "
        "multipliers) on training replications; see fedinv.policies.tuning.",
    )
    _scenario_policy_args(p, POLICY_NAMES)
    p.add_argument(
        "--train-replications",
        type=reps_t,
        default=16,
        metavar="K",
        help="training replications (default 16)",
    )
    p.add_argument(
        "--days", type=days_t, metavar="N", help="days per replication (default: horizon)"
    )
    p.add_argument(
        "--sweeps",
        type=reps_t,
        default=2,
        metavar="S",
        help="coordinate-descent sweeps (default 2)",
    )
    p.add_argument("--seed", type=seed_t, metavar="S", help="override the scenario's seed")
    p.add_argument(
        "--out",
        type=Path,
        metavar="FILE.json",
        help="write the tuned params (usable as simulate --params FILE)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=cmd_tune)

    p = commands.add_parser(
        "train",
        help="train a learned ordering policy and compare it with tuned base-stock",
        description="Tune the baseline(s) on training replications, train a DQN on training "
        "replications (validation curve on separate replications), then evaluate both on "
        "held-out replications 0..R-1; see docs/agents.md.",
    )
    p.add_argument(
        "--scenario",
        required=True,
        metavar="NAME|FILE",
        help="built-in scenario name or path to a .toml file",
    )
    p.add_argument("--algo", choices=ALGOS, default="dqn", help="learning algorithm (dqn)")
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="DIR",
        help="write checkpoint.pt, curve.csv, curve.png, evaluation.csv, summary.json to DIR",
    )
    p.add_argument(
        "--steps",
        type=reps_t,
        metavar="N",
        help="environment steps (days of the training batch; default 20000)",
    )
    p.add_argument(
        "--seed",
        type=seed_t,
        default=1,
        metavar="S",
        help="training seed: initialization, exploration, minibatches (default 1)",
    )
    p.add_argument(
        "--replications",
        type=reps_t,
        default=16,
        metavar="B",
        help="training replications stepped in lockstep (default 16)",
    )
    p.add_argument(
        "--days",
        type=days_t,
        metavar="N",
        help="days per episode and evaluation (default: horizon)",
    )
    p.add_argument(
        "--eval-every",
        type=_int_at_least(0),
        metavar="N",
        help="steps between validation runs (default: steps / 20)",
    )
    p.add_argument(
        "--eval-replications",
        type=reps_t,
        default=8,
        metavar="R",
        help="validation replications (default 8)",
    )
    p.add_argument(
        "--test-replications",
        type=reps_t,
        default=10,
        metavar="R",
        help="held-out replications 0..R-1 of the final comparison (default 10)",
    )
    p.add_argument(
        "--network-share",
        type=float,
        metavar="W",
        help="reward weight of the network's cost next to the node's own "
        "(default 1; see docs/agents.md)",
    )
    p.add_argument(
        "--order-change-cost",
        type=float,
        metavar="C",
        help="reward penalty in $ per unit of day-to-day order change (default 0)",
    )
    p.add_argument(
        "--baselines",
        default="base-stock",
        metavar="P,...",
        help="tuned classical policies to compare with (default base-stock)",
    )
    p.add_argument(
        "--train-replications",
        type=reps_t,
        default=16,
        metavar="K",
        help="training replications of the baselines' tuning (default 16)",
    )
    p.add_argument(
        "--sweeps",
        type=reps_t,
        default=2,
        metavar="S",
        help="coordinate-descent sweeps of the tuning (default 2)",
    )
    p.add_argument("--json", action="store_true", help="print summary.json on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=cmd_train)

    data = commands.add_parser(
        "data",
        help="organizations' private data folders",
        description="Organizations' private data (docs/federation.md).",
    )
    data_actions = data.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = data_actions.add_parser(
        "export",
        help="simulate one history and write each organization's own files",
        description="Simulate one history of a scenario under a reference policy and write, "
        "per organization, DIR/ORG/{scenario.toml,demand.csv,leadtimes.csv,inventory.csv}.",
    )
    p.add_argument(
        "--scenario",
        required=True,
        metavar="NAME|FILE",
        help="built-in scenario name or path to a .toml file",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write")
    p.add_argument(
        "--policy",
        choices=POLICY_NAMES,
        default="base-stock",
        help="reference policy of the history (default base-stock, textbook levels)",
    )
    p.add_argument("--days", type=days_t, metavar="N", help="days of history (default: horizon)")
    p.add_argument("--seed", type=seed_t, metavar="S", help="override the scenario seed")
    p.set_defaults(func=cmd_data_export)

    p = commands.add_parser(
        "federate",
        help="federated DQN training on a local simulated Flower federation",
        description="Export each organization's private data, run a Flower simulation "
        "(one client per organization, FedAvg or FedProx), checkpoint every round, and stop "
        "every process it started. Re-running into the same --out resumes after the last "
        "finished round. See docs/federation.md.",
    )
    p.add_argument(
        "--scenario",
        default="electronics-5r",
        metavar="NAME|FILE",
        help="the whole network (default electronics-5r)",
    )
    p.add_argument("--rounds", type=reps_t, default=3, metavar="R", help="server rounds")
    p.add_argument("--strategy", choices=("fedavg", "fedprox"), default="fedavg")
    p.add_argument(
        "--mu",
        type=float,
        default=0.1,
        metavar="MU",
        help="FedProx proximal weight (default 0.1; with --strategy fedprox)",
    )
    p.add_argument(
        "--local-steps",
        type=reps_t,
        default=120,
        metavar="N",
        help="days of local training per client and round (default 120)",
    )
    p.add_argument(
        "--replications",
        type=reps_t,
        default=4,
        metavar="B",
        help="training replications per client (default 4)",
    )
    p.add_argument(
        "--eval-replications",
        type=reps_t,
        default=4,
        metavar="R",
        help="held-out replications of each round's evaluation (default 4)",
    )
    p.add_argument("--eval-days", type=days_t, default=120, metavar="N")
    p.add_argument("--seed", type=seed_t, default=1, metavar="S")
    p.add_argument(
        "--out", default="runs/federated", metavar="DIR", help="run folder (default runs/federated)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="stop the run after this long (default 3600)",
    )
    p.add_argument(
        "--dp-noise",
        type=float,
        default=0.0,
        metavar="Z",
        help="differential privacy: Gaussian noise multiplier of Flower's "
        "server-side fixed clipping (0: off, the default)",
    )
    p.add_argument(
        "--dp-clip",
        type=float,
        default=1.0,
        metavar="C",
        help="differential privacy: L2 clipping norm of a client's update",
    )
    p.add_argument("--quiet", action="store_true", help="do not echo Flower's log")
    p.set_defaults(func=cmd_federate)

    from fedinv.deploy.engine import add_deploy_parser  # fedinv deploy ... (docs/deployment.md)

    add_deploy_parser(commands)

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
    p.add_argument("--days", type=days_t, metavar="N", help="days (default: horizon)")
    p.add_argument(
        "--batches",
        type=_batch_list,
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
        type=_batch_list,
        default=[20, 100, 500],
        metavar="L,...",
        help="comma-separated lane counts (default 20,100,500)",
    )
    p.add_argument(
        "--solves",
        type=_int_at_least(5),
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
        type=reps_t,
        default=10,
        metavar="R",
        help="replications of the hybrid-vs-pure timing (default 10)",
    )
    p.add_argument(
        "--days",
        type=days_t,
        metavar="N",
        help="days of the hybrid-vs-pure timing (default: horizon)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_bench_lp)

    from studies.cli import add_commands as add_study_commands  # run, report, studies

    add_study_commands(commands, reps_t)
    return parser


def _scenario_policy_args(p: argparse.ArgumentParser, policies: Sequence[str]) -> None:
    p.add_argument(
        "--scenario",
        required=True,
        metavar="NAME|FILE",
        help="built-in scenario name or path to a .toml file",
    )
    p.add_argument(
        "--policy",
        required=True,
        choices=policies,
        metavar="NAME",
        help="one of: " + ", ".join(policies),
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fedinv")
    except PackageNotFoundError:
        return "(not installed)"


# -- helpers -----------------------------------------------------------------------------


def _stdout() -> Console:
    from rich.console import Console

    # not a terminal (a pipe, a file, a test): wide enough that tables are not cut
    wide = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160
    return Console(highlight=False, width=wide)


def _stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _num(x: Any) -> float | None:
    """A float for JSON: NaN and infinities become None (null)."""
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _fmt(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    if abs(x) >= 1e5:
        return f"{x:,.0f}"
    return f"{x:.5g}"


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, allow_nan=False)


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """:func:`fedinv.files.atomic_write` (readers never see a partial file)."""
    from fedinv.files import atomic_write

    atomic_write(path, write)


def _write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _load(name_or_path: str, seed: int | None = None) -> Scenario:
    from fedinv.model.scenario import load_scenario
    from fedinv.policies.tuning import with_seed

    return with_seed(load_scenario(name_or_path), seed)


def _counts(values: Sequence[str]) -> str:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return ", ".join(f"{k} {n}" for k, n in out.items())


def _disruptions(s: Scenario) -> int:
    return len(s.outages) + len(s.delays) + len(s.surges)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _one_line_summary(s: Scenario) -> str:
    net = s.network
    return (
        f"scenario {s.name!r}: {_plural(len(net.nodes), 'node')} "
        f"({_counts([n.tier.value for n in net.nodes])}), "
        f"{_plural(len(net.lanes), 'lane')}, {_plural(len(net.transfers), 'transfer')}, "
        f"{_plural(len(net.organizations), 'organization')}, "
        f"{_plural(_disruptions(s), 'disruption')}, horizon {s.horizon_days} days"
    )


# -- scenarios ---------------------------------------------------------------------------


def cmd_scenarios_list(args: argparse.Namespace) -> int:
    """``fedinv scenarios list``: name, description, nodes and horizon of each built-in."""
    from rich.table import Table

    from fedinv.model.scenario import ScenarioError, builtin_scenarios, load_scenario

    rows = []
    for name, description in builtin_scenarios().items():
        try:
            s = load_scenario(name)
            rows.append(
                {
                    "name": name,
                    "description": description,
                    "nodes": len(s.network.nodes),
                    "horizon_days": s.horizon_days,
                }
            )
        except ScenarioError as exc:
            rows.append(
                {
                    "name": name,
                    "description": description,
                    "nodes": None,
                    "horizon_days": None,
                    "error": str(exc),
                }
            )
    if args.json:
        print(_dump(rows))
        return 0
    table = Table(title="Built-in scenarios")
    table.add_column("name", no_wrap=True)
    table.add_column("description")
    table.add_column("nodes", justify="right")
    table.add_column("horizon (days)", justify="right")
    for r in rows:
        desc = r["description"]
        if "error" in r:
            desc += f" [invalid: {r['error']}]"
        table.add_row(r["name"], _plain(desc), _opt(r["nodes"]), _opt(r["horizon_days"]))
    _stdout().print(table)
    return 0


def _plain(text: str) -> Any:
    from rich.text import Text

    return Text(text)


def _opt(x: Any) -> str:
    return "?" if x is None else str(x)


def _builtin_toml(s: Scenario) -> str | None:
    from fedinv.model.scenario import builtin_scenario_text

    if not s.source.startswith("builtin:"):
        return None
    return builtin_scenario_text(s.source.removeprefix("builtin:"))


def cmd_scenarios_show(args: argparse.Namespace) -> int:
    """``fedinv scenarios show NAME|FILE``: nodes by tier/region/organization, lanes,
    transfers, disruptions, horizon; the TOML text for built-ins."""
    s = _load(args.scenario)
    text = _builtin_toml(s)
    if args.toml:
        sys.stdout.write(text if text is not None else Path(args.scenario).read_text("utf-8"))
        return 0
    from rich.rule import Rule
    from rich.table import Table

    net, con = s.network, _stdout()
    out = [
        f"{s.name}: {s.description}" if s.description else s.name,
        f"source: {s.source}",
        f"horizon: {s.horizon_days} days from {s.start_date} (warm-up {s.warmup_days}), "
        f"seed {s.seed}, {'lost sales' if s.lost_sales else 'backorders'}",
        f"nodes: {len(net.nodes)} ({len(net.customer_nodes)} facing customers)",
        f"  by tier: {_counts([n.tier.value for n in net.nodes])}",
        f"  by region: {_counts([n.region for n in net.nodes])}",
        f"  by organization: {_counts([n.organization for n in net.nodes])}",
        f"lanes: {len(net.lanes)}, transfers: {len(net.transfers)}, "
        f"disruptions: {len(s.outages)} outages, {len(s.delays)} extra delays, "
        f"{len(s.surges)} surges",
    ]
    for line in out:
        con.print(line, markup=False)

    nodes = Table(title="Nodes")
    for col in ("id", "tier", "region", "organization", "holding $/u/d", "penalty $", "demand/day"):
        nodes.add_column(col, justify="right" if "$" in col or "/" in col else "left")
    for n in net.nodes:
        nodes.add_row(
            _plain(n.id),
            n.tier.value,
            _plain(n.region),
            _plain(n.organization),
            f"{n.holding_cost:g}",
            f"{n.stockout_penalty:g}",
            f"{n.demand.base_mean:g}" if n.demand else "",
        )
    con.print(nodes)
    lanes = Table(title="Lanes")
    for col in ("lane", "lead time", "price $", "lot size"):
        lanes.add_column(col)
    for lane in net.lanes:
        lanes.add_row(
            _plain(lane.id),
            lane.lead_time.describe(),
            "" if lane.price is None else f"{lane.price:g}",
            f"{lane.lot_size:g}" if lane.lot_size else "",
        )
    con.print(lanes)
    if net.transfers:
        tr = Table(title="Lateral transfers")
        for col in ("link", "lead (d)", "$ / unit", "capacity"):
            tr.add_column(col)
        for t in net.transfers:
            tr.add_row(
                _plain(f"{t.source}->{t.destination}"),
                str(t.lead_time_days),
                f"{t.unit_cost:g}",
                f"{t.capacity:g}",
            )
        con.print(tr)
    if _disruptions(s):
        dis = Table(title="Disruptions")
        for col in ("kind", "target", "details"):
            dis.add_column(col)
        for o in s.outages:
            dis.add_row(
                "outage",
                _plain(o.target),
                _plain(
                    f"p(start)/day {o.start_probability:g}, mean {o.mean_duration_days:g} d, "
                    f"capacity x{o.capacity_fraction:g}, notice {o.notice_lag_days} d"
                ),
            )
        for d in s.delays:
            dis.add_row(
                "extra delay",
                _plain(d.lane),
                _plain(
                    f"p {d.probability:g}, {d.min_days}..{d.max_days} d, "
                    f"notice {d.notice_lag_days} d"
                ),
            )
        for u in s.surges:
            when = (
                f"from day {u.start_day}"
                if u.start_day is not None
                else f"p(start)/day {u.start_probability:g}"
            )
            dis.add_row(
                "surge",
                _plain(u.region),
                _plain(f"demand x{u.multiplier:g} for {u.duration_days:g} d, {when}"),
            )
        con.print(dis)
    if text is not None:
        con.print(Rule(f"{s.source} (TOML)"))
        sys.stdout.flush()
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def cmd_scenarios_validate(args: argparse.Namespace) -> int:
    """``fedinv scenarios validate FILE``: ``OK: ...`` or the ScenarioError (exit 2)."""
    s = _load(args.file)
    _layout(s)  # the simulator compiles it too
    print(f"OK: {args.file}: {_one_line_summary(s)}")
    return 0


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


def resolve_params(
    policy: str, layout: Layout, given: Mapping[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """Every node's parameters: ``given`` over the textbook defaults (a component table
    of an assembling node merged item by item), checked by building the policy."""
    from fedinv.policies.classical import default_params, make_policy

    defaults = default_params(policy, layout)
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise CliError(
            f"unknown parameter(s) {', '.join(map(repr, unknown))} for policy "
            f"{policy!r}; expected {', '.join(map(repr, defaults))}"
        )
    order = {n: i for i, n in enumerate(layout.node_ids)}  # report nodes in file order
    merged = {
        k: dict(sorted(v.items(), key=lambda kv: order.get(kv[0], len(order))))
        for k, v in defaults.items()
    }
    for key, values in given.items():
        if not isinstance(values, dict):
            raise CliError(
                f"parameter {key!r} must map node ids to numbers, e.g. "
                f'{{"{key}": {{"{layout.node_ids[0]}": 10}}}}, got {values!r}'
            )
        for node, value in values.items():
            if node not in merged[key]:
                raise CliError(
                    f"unknown node {node!r} in parameter {key!r} (known nodes: "
                    f"{', '.join(layout.node_ids)})"
                )
            old = merged[key][node]
            merged[key][node] = (
                {**old, **value} if isinstance(old, dict) and isinstance(value, dict) else value
            )
    make_policy(policy, layout, merged)  # the policy's own checks (numbers, components)
    return merged


def _layout(scenario: Scenario) -> Layout:
    """The layout the simulator compiles for ``scenario``."""
    from fedinv.sim.simulator import Simulator

    return Simulator(scenario, days=2).layout


# -- tuning ------------------------------------------------------------------------------


def _run_tuner(
    scenario: Scenario,
    policy: str,
    train_replications: int,
    days: int | None,
    sweeps: int,
    quiet: bool,
) -> TuneResult:
    from fedinv.policies.tuning import tune

    if quiet:
        return tune(
            scenario, policy, train_replications=train_replications, days=days, sweeps=sweeps
        )
    best = math.inf
    label = f"tuning {policy} on {scenario.name} ({train_replications} training replications)"
    with _stderr().status(label) as status:

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
        )


def _tuning_payload(result: TuneResult, sweeps: int) -> dict[str, Any]:
    return {
        "evaluations": result.evaluations,
        "simulated_days": result.simulated_days,
        "train_cost_per_day": _num(result.train_cost_per_day),
        "train_replications": result.train_replications,
        "sweeps": sweeps,
        "coordinates": {k: _num(v) for k, v in result.coordinates.items()},
    }


def _param_text(value: Any) -> str:
    """A node's parameter: a number, or ``item value, ...`` for a component table."""
    if isinstance(value, Mapping):
        return ", ".join(f"{item} {_param_text(v)}" for item, v in value.items())
    return _fmt(_num(value))


def _params_table(params: Mapping[str, Mapping[str, float]], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("node")
    for key in params:
        table.add_column(key, justify="right")
    nodes = next(iter(params.values()), {})
    for node in nodes:
        table.add_row(_plain(node), *(_plain(_param_text(params[k][node])) for k in params))
    return table


def cmd_tune(args: argparse.Namespace) -> int:
    """``fedinv tune``: tune, print coordinates, params and budget; ``--out`` the params."""
    from rich.table import Table

    scenario = _load(args.scenario, args.seed)
    result = _run_tuner(
        scenario, args.policy, args.train_replications, args.days, args.sweeps, args.quiet
    )
    if args.out is not None:
        _write_text(args.out, _dump(result.params) + "\n")
    payload = {
        "scenario": scenario.name,
        "policy": args.policy,
        "seed": scenario.seed,
        "days": result.days,
        **_tuning_payload(result, args.sweeps),
        "params": result.params,
    }
    if args.json:
        print(_dump(payload))
        return 0
    con = _stdout()
    coords = Table(title=f"Tuned {args.policy} on {scenario.name}")
    coords.add_column("coordinate")
    coords.add_column("value", justify="right")
    for k, v in result.coordinates.items():
        coords.add_row(k, f"{v:.4f}")
    con.print(coords)
    con.print(_params_table(result.params, "Parameters per node"))
    con.print(
        f"training cost {result.train_cost_per_day:,.4f} $/day on "
        f"{result.train_replications} replications x {result.days} days; budget: "
        f"{result.evaluations} evaluations, {result.simulated_days:,} simulated days",
        markup=False,
    )
    if args.out is not None:
        con.print(
            f"wrote {args.out} (use: fedinv simulate --scenario {args.scenario} "
            f"--policy {args.policy} --params {args.out})",
            markup=False,
        )
    return 0


# -- simulate ----------------------------------------------------------------------------


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
            str(m): {"mean": _num(summary.at[m, "mean"]), "ci95": _num(summary.at[m, "ci95"])}
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
        "params.json": lambda p: p.write_text(_dump(params) + "\n", encoding="utf-8"),
        "run.json": lambda p: p.write_text(_dump(payload) + "\n", encoding="utf-8"),
    }
    if result.relaxations is not None:  # hybrid mode
        relaxations = result.relaxations
        writers["relaxations.csv"] = lambda p: relaxations.to_csv(p, index=False)
    if out_dir.exists() and not out_dir.is_dir():
        raise CliError(f"--out {out_dir}: exists and is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, write in writers.items():
        _atomic_write(out_dir / name, write)
        paths.append(out_dir / name)
    return paths


def cmd_simulate(args: argparse.Namespace) -> int:
    """``fedinv simulate``: run a policy on replications 0..R-1, print/write metrics."""
    from fedinv.hybrid import OPTIMIZATION_POLICIES, make_optimization_policy
    from fedinv.policies.classical import make_policy
    from fedinv.sim.metrics import HEADLINE
    from fedinv.sim.run import simulate

    if args.tune and args.params is not None:
        raise CliError("--tune and --params cannot be used together (--tune finds the params)")
    learned = _check_learned_args(args)
    optimization = args.policy in OPTIMIZATION_POLICIES
    if optimization and args.tune:
        raise CliError(
            f"--tune is for classical policies, not --policy {args.policy} (give "
            "its options with --params, e.g. '{\"horizon\": 21}')"
        )
    given = read_params(args.params, args.policy) if args.params is not None else None
    scenario = _load(args.scenario, args.seed)
    layout = _layout(scenario)
    tuning = None
    if args.tune:
        tuned = _run_tuner(
            scenario, args.policy, args.train_replications, args.days, args.sweeps, args.quiet
        )
        given, tuning = tuned.params, _tuning_payload(tuned, args.sweeps)
    options: dict[str, Any] = {}
    if learned:
        params: dict[str, Any] = {}
        factory = _learned_factory(args.checkpoint, layout)
    elif optimization:
        params, options = {}, dict(given or {})
        try:  # check the options now, before simulating
            make_optimization_policy(args.policy, scenario, layout, options)
        except TypeError as exc:
            raise CliError(f"--params for --policy {args.policy}: {exc}") from None

        def factory(lay: Layout) -> Any:
            return make_optimization_policy(args.policy, scenario, lay, options)
    else:
        params = resolve_params(args.policy, layout, given)

        def factory(lay: Layout) -> Any:
            return make_policy(args.policy, lay, params)

    result = simulate(
        scenario,
        factory,
        replications=args.replications,
        days=args.days,
        progress=not args.quiet and not args.json and sys.stdout.isatty(),
        mode=args.mode,
        solver=args.solver,
    )
    payload = run_payload(result, args.policy, params, tuning)
    if learned:
        payload["checkpoint"] = str(args.checkpoint)
    if optimization:
        payload["policy_options"] = options
    payload["mode"] = args.mode
    if args.mode == "hybrid":
        payload["solver"] = args.solver
        payload["relaxations"] = len(result.relaxations)
    paths = write_outputs(args.out, result, params, payload) if args.out is not None else []
    if args.json:
        print(_dump(payload))
        return 0
    _print_run(payload, HEADLINE, tuning is not None)
    if paths:
        _stdout().print(f"wrote {', '.join(p.name for p in paths)} to {args.out}", markup=False)
    return 0


def _check_learned_args(args: argparse.Namespace) -> bool:
    """True for a learned policy; its options are checked (``--checkpoint`` needed, no
    ``--params`` or ``--tune``)."""
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


def _learned_factory(checkpoint: Path, layout: Layout) -> Callable[[Layout], Any]:
    """A policy factory for ``simulate`` from a checkpoint (read and checked once)."""
    from fedinv.agents.checkpoints import load_checkpoint, policy_from_checkpoint

    data = load_checkpoint(checkpoint)
    policy_from_checkpoint(data, layout, checkpoint)  # fail early, before simulating
    return lambda lay: policy_from_checkpoint(data, lay, checkpoint)


def _print_run(payload: Mapping[str, Any], headline: Sequence[str], tuned: bool) -> None:
    from rich.table import Table

    con = _stdout()
    con.print(
        f"{payload['scenario']} | {payload['policy']} ({'tuned' if tuned else 'given'} "
        f"params) | {payload['days']} days x {payload['replications']} replications | "
        f"seed {payload['seed']}",
        markup=False,
    )
    if tuned:
        t = payload["tuning"]
        con.print(
            f"tuning: {t['evaluations']} evaluations, {t['simulated_days']:,} simulated "
            f"days, training cost {_fmt(t['train_cost_per_day'])} $/day",
            markup=False,
        )
    if payload.get("checkpoint"):
        con.print(f"checkpoint: {payload['checkpoint']}", markup=False)
    if payload.get("policy_options") is not None:
        con.print(f"options: {json.dumps(payload['policy_options'])}", markup=False)
    if payload.get("mode") == "hybrid":
        con.print(
            f"hybrid mode: the {payload['solver']} safety layer released the orders; "
            f"{payload['relaxations']} constraint(s) relaxed",
            markup=False,
        )
    if payload["params"]:
        con.print(_params_table(payload["params"], "Parameters per node"))
    metrics = payload["metrics"]
    table = Table(title="Metrics (mean ± 95% CI half-width over replications)")
    table.add_column("metric")
    table.add_column("mean", justify="right")
    table.add_column("± ci95", justify="right")
    first = [m for m in headline if m in metrics]
    for m in first:
        table.add_row(m, _fmt(metrics[m]["mean"]), _fmt(metrics[m]["ci95"]), style="bold")
    table.add_section()
    for m, v in metrics.items():
        if m not in first:
            table.add_row(m, _fmt(v["mean"]), _fmt(v["ci95"]))
    con.print(table)


# -- train -------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    """``fedinv train``: tune the baselines, train a DQN, compare on held-out replications
    (:mod:`fedinv.agents.compare`); writes the checkpoint, the curve and the evaluation."""
    from dataclasses import replace

    from fedinv.agents.compare import train_and_compare, write_report
    from fedinv.agents.dqn import Args
    from fedinv.agents.envs import EnvConfig, RewardConfig
    from fedinv.policies.classical import POLICY_NAMES

    baselines = list(dict.fromkeys(b.strip() for b in args.baselines.split(",") if b.strip()))
    unknown = [b for b in baselines if b not in POLICY_NAMES]
    if not baselines or unknown:
        raise CliError(
            f"--baselines: expected policies among {', '.join(POLICY_NAMES)}, got "
            f"{args.baselines!r}"
        )
    if args.out.exists() and not args.out.is_dir():
        raise CliError(f"--out {args.out}: exists and is not a directory")
    scenario = _load(args.scenario)
    if args.days is not None:
        scenario = replace(
            scenario, horizon_days=args.days, warmup_days=min(scenario.warmup_days, args.days - 2)
        )
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
        env=EnvConfig(reward=reward),
    )
    common = dict(
        baselines=baselines,
        tune_replications=args.train_replications,
        sweeps=args.sweeps,
        test_replications=args.test_replications,
    )
    if args.quiet or args.json:
        report = train_and_compare(scenario, train_args, **common)
    else:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=_stderr(),
            transient=True,
        ) as bar:
            tuning = bar.add_task("tuning baselines", total=None)
            training = bar.add_task(f"training dqn on {scenario.name}", total=steps, visible=False)

            def on_tune(policy: str, evaluations: int, cost: float) -> None:
                bar.update(
                    tuning,
                    description=f"tuning {policy}: {evaluations} evaluations, "
                    f"last {cost:,.2f} $/day",
                )

            def on_step(step: int, stats: Mapping[str, float]) -> None:
                if step == 1:
                    bar.update(tuning, visible=False)
                    bar.update(training, visible=True)
                if step % 10 == 0 or step == steps:
                    best = stats["best"]
                    bar.update(
                        training,
                        completed=step,
                        description=(
                            f"training dqn on {scenario.name} (eps {stats['epsilon']:.2f}"
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
        print(_dump(report.payload()))
        return 0
    _print_training(report.payload())
    _stdout().print(f"wrote {', '.join(p.name for p in paths)} to {args.out}", markup=False)
    return 0


def _print_training(payload: Mapping[str, Any]) -> None:
    from rich.table import Table

    con = _stdout()
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
    table.add_column("dqn - policy (paired)", justify="right")
    table.add_column("%", justify="right")
    for name, c in payload["cost_per_day"].items():
        d = payload["difference_vs"].get(name)
        table.add_row(
            name,
            _fmt(c["mean"]),
            _fmt(c["ci95"]),
            "" if d is None else f"{_fmt(d['mean'])} ± {_fmt(d['ci95'])}",
            "" if d is None else f"{_fmt(d['percent'])}",
        )
    con.print(table)


# -- bench -------------------------------------------------------------------------------


def cmd_bench_sim(args: argparse.Namespace) -> int:
    """``fedinv bench sim``: node-days per second per batch size, on one core."""
    from fedinv.bench.sim import DEFAULT_SCENARIO, bench_sim, print_bench
    from fedinv.model.scenario import ScenarioError

    try:
        scenario = _load(args.scenario)
    except ScenarioError as exc:
        hint = (
            " (the default benchmark scenario is missing from this installation; "
            "pass --scenario NAME|FILE)"
            if args.scenario == DEFAULT_SCENARIO
            else ""
        )
        raise CliError(f"cannot load benchmark scenario {args.scenario!r}{hint}: {exc}") from None
    if not args.json:
        _stderr().print(
            f"benchmarking {scenario.name} at batch sizes {', '.join(map(str, args.batches))} ...",
            markup=False,
        )
    rows = bench_sim(scenario, args.batches, args.days, args.policy)
    if args.json:
        print(
            _dump(
                [{k: (_num(v) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
            )
        )
    else:
        print_bench(rows, _stdout())
    return 0


def cmd_bench_lp(args: argparse.Namespace) -> int:
    """``fedinv bench lp``: safety-layer latency per lane count, hybrid vs pure time."""
    from fedinv.bench.lp import bench_lp, print_bench_lp

    if min(args.lanes) < 10:
        raise CliError(f"--lanes: synthetic networks need at least 10 lanes, got {args.lanes}")
    scenario = _load(args.scenario)
    if args.json:
        result = bench_lp(args.lanes, args.solves, scenario, args.replications, args.days)
        print(_dump(_finite(result)))
        return 0
    with _stderr().status("bench lp") as status:
        result = bench_lp(
            args.lanes,
            args.solves,
            scenario,
            args.replications,
            args.days,
            progress=lambda text: status.update(f"bench lp: {text}"),
        )
    print_bench_lp(result, _stdout())
    return 0


def _finite(obj: Any) -> Any:
    """``obj`` with non-finite floats as None (JSON null)."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float):
        return _num(obj)
    return obj


def cmd_data_export(args: argparse.Namespace) -> int:
    """``fedinv data export``: one folder of private data per organization."""
    from fedinv.federation.private_data import export_private_data
    from fedinv.model.scenario import load_scenario

    scenario = load_scenario(args.scenario)
    folders = export_private_data(
        scenario, args.out, policy=args.policy, days=args.days, seed=args.seed
    )
    for org, folder in folders.items():
        print(f"{org}: {folder}")
    return 0


def cmd_federate(args: argparse.Namespace) -> int:
    """``fedinv federate``: a local simulated federation (fedinv.federation.local)."""
    import pandas as pd

    from fedinv.federation.local import FederationError, run_federation
    from fedinv.federation.task import FedConfig
    from fedinv.model.scenario import load_scenario

    scenario = load_scenario(args.scenario)  # a bad name fails here, before Flower starts
    source = scenario.source.removeprefix("builtin:")
    cfg = FedConfig(
        scenario=source
        if scenario.source.startswith("builtin:")
        else str(Path(args.scenario).resolve()),
        rounds=args.rounds,
        strategy=args.strategy,
        proximal_mu=args.mu if args.strategy == "fedprox" else 0.0,
        local_steps=args.local_steps,
        replications=args.replications,
        eval_replications=args.eval_replications,
        eval_days=args.eval_days,
        seed=args.seed,
    )
    echo = None if args.quiet else (lambda line: print(line, file=sys.stderr))
    try:
        extra = {"dp-noise-multiplier": args.dp_noise, "dp-clipping-norm": args.dp_clip}
        run = run_federation(cfg, args.out, timeout=args.timeout, echo=echo, extra=extra)
    except FederationError as exc:
        raise CliError(str(exc)) from None
    rounds = pd.read_csv(run.rounds_csv)
    cols = [
        c
        for c in (
            "round",
            "global-cost-per-day",
            "global-cost-ci95",
            "results",
            "failures",
            "local-cost-per-day",
            "wall_s",
        )
        if c in rounds
    ]
    print(rounds[cols].to_string(index=False))
    print(f"final global policy: {run.final_checkpoint}")
    print(
        f"evaluate it: fedinv simulate --scenario {args.scenario} --policy dqn "
        f"--checkpoint {run.final_checkpoint}"
    )
    return 0
