"""What every command group of the ``fedinv`` command line shares: argparse types, the
consoles, number formatting, loading a scenario, and the parameter table."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedinv.errors import CliError
from fedinv.jsonout import dump, num

if TYPE_CHECKING:
    from rich.console import Console

    from fedinv.model.network import Scenario

__all__ = ["CliError", "dump", "num"]

PROG = "fedinv"
EXIT_USAGE = 2


# -- argparse types ----------------------------------------------------------------------


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``."""

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


DAYS = int_at_least(2)
"""``--days``: at least 2."""
COUNT = int_at_least(1)
"""Replications, steps, sweeps, rounds: at least 1."""
SEED = int_at_least(0)
"""``--seed``: at least 0."""


def batch_list(text: str) -> list[int]:
    """An argparse type: comma-separated integers >= 1 (``1,256``)."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 1,256, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected batch sizes >= 1, got {text!r}")
    return values


def scenario_policy_args(p: argparse.ArgumentParser, policies: Sequence[str]) -> None:
    """``--scenario NAME|FILE`` and ``--policy NAME`` (both required)."""
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


def refuse_unused(args: argparse.Namespace, condition: bool, options: Sequence[str], why: str):
    """:class:`CliError` if any of ``options`` (attribute names; ``None`` = not given) was
    given although ``condition`` does not hold: an option that would do nothing."""
    given = [o for o in options if getattr(args, o) is not None]
    if given and not condition:
        flags = " and ".join("--" + o.replace("_", "-") for o in given)
        raise CliError(f"{flags} {'does' if len(given) == 1 else 'do'} nothing {why}")


# -- output ------------------------------------------------------------------------------


def stdout_console() -> Console:
    """A rich console on stdout; not a terminal (a pipe, a file, a test): wide enough that
    tables are not cut."""
    from rich.console import Console

    wide = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160
    return Console(highlight=False, width=wide)


def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def fmt(x: float | None) -> str:
    """A number for a table: ``n/a``, thousands separators above 1e5, else 5 digits."""
    if x is None or not math.isfinite(x):
        return "n/a"
    if abs(x) >= 1e5:
        return f"{x:,.0f}"
    return f"{x:.5g}"


def plain(text: str) -> Any:
    """Text that rich prints as is (no markup)."""
    from rich.text import Text

    return Text(text)


def output_folder(path: Path, option: str = "--out") -> Path:
    """Create the output folder ``path`` (and its parents) or raise :class:`CliError`
    naming ``option`` and what is in the way (a file where a folder must be)."""
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        where = "exists" if blocker == path else f"{blocker} exists"
        raise CliError(f"{option} {path}: {where} and is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"{option} {path}: cannot create the folder ({exc.strerror})") from None
    return path


def write_text(path: Path, text: str, option: str = "--out") -> None:
    """Write ``text`` to ``path`` atomically (:func:`fedinv.files.atomic_write`), its
    folder created first (:func:`output_folder`, errors naming ``option``)."""
    from fedinv.files import atomic_write

    output_folder(path.parent, option)
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def load(name_or_path: str, seed: int | None = None) -> Scenario:
    """A built-in scenario or a scenario file, with its seed overridden if ``seed``."""
    from fedinv.model.scenario import load_scenario
    from fedinv.policies.tuning import with_seed

    return with_seed(load_scenario(name_or_path), seed)


def param_text(value: Any) -> str:
    """A node's parameter: a number, or ``item value, ...`` for a component table."""
    if isinstance(value, Mapping):
        return ", ".join(f"{item} {param_text(v)}" for item, v in value.items())
    return fmt(num(value))


def params_table(params: Mapping[str, Mapping[str, float]], title: str) -> Any:
    """A table of per-node parameters (one column per parameter)."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("node")
    for key in params:
        table.add_column(key, justify="right")
    nodes = next(iter(params.values()), {})
    for node in nodes:
        table.add_row(plain(node), *(plain(param_text(params[k][node])) for k in params))
    return table


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("fedinv")
    except PackageNotFoundError:
        return "(not installed)"
