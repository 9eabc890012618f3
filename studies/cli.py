"""The study commands of the ``fedinv`` command line: ``run``, ``report`` and ``studies``
(docs/studies.md). :func:`register` is this package's entry point in the
``fedinv.commands`` group (``pyproject.toml``), through which ``fedinv`` finds them
without importing ``studies``."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from pathlib import Path
from typing import Any

DEFAULT_STUDY = "quick"


def register(commands: Any) -> None:
    """Add ``run``, ``report`` and ``studies`` to the ``fedinv`` subparsers ``commands``."""
    from fedinv.cli.common import COUNT

    p = commands.add_parser(
        "run",
        help=f"run a study (default: {DEFAULT_STUDY}) and write its report",
        description="Run a built-in study or a study file: tuned classical policies, trained "
        "DQN (federated through a local Flower federation, isolated or centralized), pure "
        "and hybrid, on common random numbers; writes per-replication results (Parquet), "
        "summary and paired-difference CSVs, figures and report.md. Resumable: re-run the "
        "same command after an interruption. See docs/studies.md.",
    )
    p.add_argument(
        "study",
        nargs="?",
        default=DEFAULT_STUDY,
        metavar="STUDY|FILE",
        help=f"a built-in study ({', '.join(_names())}) or a .toml file (default {DEFAULT_STUDY})",
    )
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="run folder (default runs/STUDY-NAME); an existing one is resumed",
    )
    p.add_argument(
        "--workers",
        type=COUNT,
        metavar="N",
        help=f"parallel workers on this machine (default: CPUs, here "
        f"{os.cpu_count()}); 1 runs everything in this process",
    )
    p.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="run the units on an existing Ray cluster (e.g. 'auto' or "
        "'ray://HOST:10001') instead of starting Ray on this machine",
    )
    p.add_argument(
        "--restart",
        action="store_true",
        help="discard what an earlier run left in --out (units, results, report) and "
        "start over; needed after the study definition changed",
    )
    p.add_argument(
        "--replications",
        type=COUNT,
        metavar="N",
        help="held-out replications 0..N-1 instead of the study's (N >= 2; a quick check: "
        "a different definition, so give a fresh --out)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_run)

    p = commands.add_parser(
        "report",
        help="render a study's report again from its saved results",
        description="Collate the unit files of a study run folder and write results/, "
        "figures/ and report.md again (no simulation).",
    )
    p.add_argument("dir", type=Path, metavar="DIR", help="a folder written by fedinv run")
    p.set_defaults(func=cmd_report)

    p = commands.add_parser(
        "studies",
        help="list or show the built-in studies",
        description="The built-in study definitions.",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("list", help="names and titles")
    a.set_defaults(func=cmd_studies_list)
    a = actions.add_parser("show", help="print a study definition (TOML)")
    a.add_argument("name", metavar="NAME")
    a.set_defaults(func=cmd_studies_show)


def _names() -> list[str]:
    from studies.spec import builtin_studies

    return list(builtin_studies())


def cmd_run(args: argparse.Namespace) -> int:
    """``fedinv run``: check the definition against its scenario, run or resume the study,
    print its table and where the report is."""
    from fedinv.cli.common import output_folder
    from fedinv.errors import CliError
    from fedinv.files import atomic_write
    from studies.runner import StudyDefinitionChanged, StudyRunError, clear_run_folder, run_study
    from studies.spec import check_study, load_study, study_text

    spec = load_study(args.study)  # StudyError (a ValueError): exit 2, file and field named
    if args.replications is not None:
        if args.replications < 2:
            raise CliError(f"--replications: expected an integer >= 2, got {args.replications}")
        spec = dataclasses.replace(spec, replications=args.replications)
    check_study(spec)  # before the folder is made or any unit runs
    out = (args.out or Path("runs") / spec.name).resolve()
    output_folder(out)  # a file in the way: exit 2 naming --out
    say = (lambda _m: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    if args.restart:
        try:
            removed = clear_run_folder(out)
        except StudyRunError as exc:
            print(f"fedinv: error: {exc}", file=sys.stderr)
            return 1
        if removed:
            say(f"--restart: removed {', '.join(removed)} from {out}")
    copy = out / "study.toml"
    if not copy.is_file():
        text = study_text(args.study)
        atomic_write(copy, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    command = (
        "fedinv run " + " ".join(shlex.quote(a) for a in sys.argv[2:] if a != "--restart")
        if len(sys.argv) > 1 and sys.argv[1] == "run"
        else f"fedinv run {args.study}"
    )
    say(f"study {spec.name}: {spec.title}")
    try:
        run_study(
            spec,
            out,
            workers=args.workers,
            address=args.ray_address,
            command=command,
            echo=say,
            progress=not args.quiet and sys.stderr.isatty(),
        )
    except StudyDefinitionChanged as exc:
        print(f"fedinv: error: {exc}", file=sys.stderr)
        return 2
    except StudyRunError as exc:
        print(f"fedinv: error: {exc}", file=sys.stderr)
        print(
            f"finished units are kept in {out}; re-run the same command to continue",
            file=sys.stderr,
        )
        return 1
    _print_summary(out)
    print(f"report: {out / 'report.md'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``fedinv report DIR``: collate and render again; unit files that are not valid
    units are named (one per line) and nothing is rewritten (exit 2)."""
    import json

    from studies.collate import collate
    from studies.spec import spec_from_dict
    from studies.units import BadUnitsError

    folder = args.dir.resolve()
    if not (folder / "study.json").is_file() or not (folder / "units").is_dir():
        raise ValueError(
            f"{folder}: not a study run folder (expected study.json and units/ "
            "written by fedinv run)"
        )
    try:
        spec = spec_from_dict(json.loads((folder / "study.json").read_text())["spec"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{folder / 'study.json'}: not a valid study record ({exc})") from None
    try:
        collate(spec, folder)
    except BadUnitsError as exc:
        for line in str(exc).splitlines():
            print(f"fedinv: error: {line.strip()}", file=sys.stderr)
        return 2
    _print_summary(folder)
    print(f"report: {folder / 'report.md'}")
    return 0


def _print_summary(out: Path) -> None:
    from studies.report import summary_table

    table = summary_table(out)
    if table is not None and len(table):
        print(table.to_string(index=False))


def cmd_studies_list(args: argparse.Namespace) -> int:
    from studies.spec import builtin_studies

    for name, title in builtin_studies().items():
        print(f"{name:32s} {title}")
    return 0


def cmd_studies_show(args: argparse.Namespace) -> int:
    from studies.spec import StudyError, study_text

    try:
        print(study_text(args.name), end="")
    except StudyError as exc:
        raise ValueError(str(exc)) from None
    return 0
