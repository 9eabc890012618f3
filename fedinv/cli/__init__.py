"""The ``fedinv`` command line (docs/cli.md): one module per command group.

* :mod:`fedinv.cli.scenarios` -- ``scenarios list | show | validate``;
* :mod:`fedinv.cli.simulate` -- ``simulate`` and ``tune``;
* :mod:`fedinv.cli.train` -- ``train`` (a DQN against tuned baselines);
* :mod:`fedinv.cli.data` -- ``data export`` (organizations' private data);
* :mod:`fedinv.cli.federate` -- ``federate`` (a local simulated Flower federation);
* :mod:`fedinv.cli.deploy` -- ``deploy ...`` (Flower's deployment engine);
* :mod:`fedinv.cli.bench` -- ``bench sim | lp``;
* :mod:`fedinv.cli.service` -- ``serve``, ``log verify | export``, ``replay`` (decision
  services, docs/service.md);
* :mod:`fedinv.cli.common`, :mod:`fedinv.cli.training` -- what they share.

More commands come from installed packages through the entry-point group
:data:`COMMANDS_GROUP`: each entry point names a function ``register(commands)`` that
adds its subparsers (``studies`` registers ``run``, ``report`` and ``studies`` this way,
so ``fedinv`` never imports ``studies``).

Errors in the input (unknown scenario or node, malformed params or scenario file, bad
numbers, an option that does nothing in context) print one line ``fedinv: error: ...``
on stderr and exit with status 2; argparse's own usage errors exit 2 as well. With
``--json`` the only thing on stdout is one JSON object (or list); progress goes to stderr.

Heavy modules (torch, pandas, the simulator) are imported only once the command is
known, so ``fedinv bench`` can set the BLAS thread variables before numpy loads.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from fedinv.cli.common import EXIT_USAGE, PROG, CliError, version
from fedinv.cli.simulate import OUTPUT_FILES

__all__ = ["COMMANDS_GROUP", "OUTPUT_FILES", "CliError", "build_parser", "main"]

COMMANDS_GROUP = "fedinv.commands"
"""Entry-point group of command plug-ins (``pyproject.toml``:
``[project.entry-points."fedinv.commands"]``)."""
STUDY_COMMANDS = ("run", "report", "studies")
"""Commands the ``studies`` package registers (named in the hint when they are missing)."""


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command(argv)
    if command == "bench":
        from fedinv.bench.sim import pin_single_thread_env

        pin_single_thread_env()  # before numpy is imported, where it still counts
    parser, commands = _build()
    if command in STUDY_COMMANDS and command not in commands.choices:
        _error(
            f"the study commands ({', '.join(STUDY_COMMANDS)}) are not registered: they come "
            f"from the {COMMANDS_GROUP!r} entry points of the installed package; "
            "reinstall it (pip install -e .)"
        )
        return EXIT_USAGE
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


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of every command (the built-in groups, then the plug-ins)."""
    return _build()[0]


def _build() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    from fedinv.cli import bench, data, deploy, federate, scenarios, service, simulate, train

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inventory control in multi-tier supply networks: built-in "
        "scenarios, simulation of classical policies, tuning, benchmarks. See docs/cli.md.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    scenarios.add_parser(commands)
    simulate.add_parsers(commands)
    train.add_parser(commands)
    data.add_parser(commands)
    federate.add_parser(commands)
    deploy.add_parser(commands)
    bench.add_parser(commands)
    service.add_parsers(commands)
    _add_plugins(commands)
    return parser, commands


def _add_plugins(commands: argparse._SubParsersAction) -> None:
    """Let every entry point of :data:`COMMANDS_GROUP` add its commands."""
    from importlib.metadata import entry_points

    for entry in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        try:
            register = entry.load()
        except Exception as exc:  # noqa: BLE001 - a broken plug-in must not break fedinv
            print(
                f"{PROG}: warning: commands {entry.name!r} ({entry.value}) not loaded: {exc}",
                file=sys.stderr,
            )
            continue
        register(commands)


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
