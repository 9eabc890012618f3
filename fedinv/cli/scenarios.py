"""``fedinv scenarios list | show | validate``: the built-in scenarios and scenario files
(docs/cli.md, docs/scenarios.md)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedinv.cli.common import dump, load, plain, stdout_console

if TYPE_CHECKING:
    from fedinv.model.network import Scenario


def add_parser(commands: Any) -> None:
    """``fedinv scenarios`` and its actions."""
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


def _counts(values: Sequence[str]) -> str:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return ", ".join(f"{k} {n}" for k, n in out.items())


def _disruptions(s: Scenario) -> int:
    return len(s.outages) + len(s.delays) + len(s.surges) + len(s.lead_shifts)


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
        print(dump(rows))
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
        table.add_row(r["name"], plain(desc), _opt(r["nodes"]), _opt(r["horizon_days"]))
    stdout_console().print(table)
    return 0


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
    s = load(args.scenario)
    text = _builtin_toml(s)
    if args.toml:
        sys.stdout.write(text if text is not None else Path(args.scenario).read_text("utf-8"))
        return 0
    from rich.rule import Rule
    from rich.table import Table

    net, con = s.network, stdout_console()
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
        f"{len(s.surges)} surges, {_plural(len(s.lead_shifts), 'lead-time shift')}",
    ]
    for line in out:
        con.print(line, markup=False)

    nodes = Table(title="Nodes")
    for col in ("id", "tier", "region", "organization", "holding $/u/d", "penalty $", "demand/day"):
        nodes.add_column(col, justify="right" if "$" in col or "/" in col else "left")
    for n in net.nodes:
        nodes.add_row(
            plain(n.id),
            n.tier.value,
            plain(n.region),
            plain(n.organization),
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
            plain(lane.id),
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
                plain(f"{t.source}->{t.destination}"),
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
                plain(o.target),
                plain(
                    f"p(start)/day {o.start_probability:g}, mean {o.mean_duration_days:g} d, "
                    f"capacity x{o.capacity_fraction:g}, notice {o.notice_lag_days} d"
                ),
            )
        for d in s.delays:
            dis.add_row(
                "extra delay",
                plain(d.lane),
                plain(
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
                plain(u.region),
                plain(f"demand x{u.multiplier:g} for {u.duration_days:g} d, {when}"),
            )
        for ls in s.lead_shifts:
            dis.add_row(
                "lead-time shift",
                plain(ls.lane),
                plain(f"lead time x{ls.factor:g} from day {ls.start_day}"),
            )
        con.print(dis)
    if text is not None:
        con.print(Rule(f"{s.source} (TOML)"))
        sys.stdout.flush()
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def cmd_scenarios_validate(args: argparse.Namespace) -> int:
    """``fedinv scenarios validate FILE``: ``OK: ...`` or the ScenarioError (exit 2)."""
    from fedinv.registry import scenario_layout

    s = load(args.file)
    scenario_layout(s)  # the simulator compiles it too
    print(f"OK: {args.file}: {_one_line_summary(s)}")
    return 0
