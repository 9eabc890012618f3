"""``fedinv data export``: the organizations' private data folders (docs/federation.md)."""

from __future__ import annotations

import argparse
from typing import Any

from fedinv.cli.common import DAYS, SEED


def add_parser(commands: Any) -> None:
    """``fedinv data`` and its actions."""
    from fedinv.policies.classical import POLICY_NAMES

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
        "per organization, DIR/ORG/{scenario.toml,demand.csv,leadtimes.csv,inventory.csv,"
        "confirmations.csv}.",
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
    p.add_argument("--days", type=DAYS, metavar="N", help="days of history (default: horizon)")
    p.add_argument("--seed", type=SEED, metavar="S", help="override the scenario seed")
    p.set_defaults(func=cmd_data_export)


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
