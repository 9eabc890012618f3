"""The study commands of the ``fedinv`` command line: ``run``, ``report`` and ``studies``
(docs/studies.md). Registered by :func:`fedinv.cli.build_parser`."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

DEFAULT_STUDY = "quick"


def add_commands(commands, count_t) -> None:
    """Add ``run``, ``report`` and ``studies`` to the subparsers ``commands``."""
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
        type=count_t,
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
    """``fedinv run``: run or resume a study, print its table and where the report is."""
    from studies.runner import StudyRunError, run_study
    from studies.spec import StudyError, load_study, study_text

    try:
        spec = load_study(args.study)
    except StudyError as exc:
        raise ValueError(str(exc)) from None
    out = (args.out or Path("runs") / spec.name).resolve()
    out.mkdir(parents=True, exist_ok=True)
    copy = out / "study.toml"
    if not copy.is_file():
        copy.write_text(study_text(args.study))
    command = (
        "fedinv run " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        if len(sys.argv) > 1 and sys.argv[1] == "run"
        else f"fedinv run {args.study}"
    )
    say = (lambda _m: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
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
    """``fedinv report DIR``: collate and render again."""
    import json

    from studies.collate import collate
    from studies.spec import spec_from_dict

    folder = args.dir.resolve()
    if not (folder / "study.json").is_file() or not (folder / "units").is_dir():
        raise ValueError(
            f"{folder}: not a study run folder (expected study.json and units/ "
            "written by fedinv run)"
        )
    collate(spec_from_dict(json.loads((folder / "study.json").read_text())["spec"]), folder)
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
