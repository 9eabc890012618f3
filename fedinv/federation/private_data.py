"""Each organization's private data: what it would export from its own ERP, and the
local training scenario built from it.

``export_private_data`` runs the whole network once under a reference policy (the
"history") and writes, for every organization ``ORG``, only what that organization
sees, under ``DIR/ORG/``:

  scenario.toml   its own nodes, its internal lanes and lateral links, its budget, and
                  one ``external`` lane per (node, item) it buys from outside, with the
                  empirical lead time it observed (order placed -> units received, so a
                  supplier's slow fill shows as a longer lead time);
  demand.csv      ``date,node,quantity,kind``: customer demand at its nodes
                  (``kind = customer``) and orders received from other organizations'
                  nodes (``kind = order``): the demand its nodes face;
  leadtimes.csv   ``order_date,lane,quantity,receipt_date,lead_days``: its inbound
                  lanes from outside, first-in-first-out from orders to shipments;
  inventory.csv   ``date,node,on_hand,backlog,on_order``: its inventory records;
  confirmations.csv ``date,lane,quantity,confirmed,ship_date``: the confirmations its
                  suppliers outside it (other organizations' nodes, outside vendors)
                  sent for the orders they received on its inbound lanes (the
                  Supplier Interface, docs/model.md).

A user with real data fills the same files (see docs/federation.md);
:func:`load_org_scenario` turns a folder into a :class:`~fedinv.model.network.Scenario` that
drives the organization's local training: its own nodes, its own demand history
(bootstrapped), the supplier behaviour it observed. Nothing in a folder describes
another organization's nodes.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedinv.files import atomic_write
from fedinv.model.network import EXTERNAL, Lane, Node, Scenario
from fedinv.model.scenario import load_scenario
from fedinv.policies.classical import make_policy
from fedinv.sim.simulator import Simulator

FILES = (
    "scenario.toml",
    "demand.csv",
    "leadtimes.csv",
    "inventory.csv",
    "confirmations.csv",
)


def export_private_data(
    scenario: Scenario,
    out_dir: str | Path,
    policy: str = "base-stock",
    params: Mapping[str, Any] | None = None,
    days: int | None = None,
    seed: int | None = None,
    replication: int = 0,
) -> dict[str, Path]:
    """Simulate one history of ``scenario`` under ``policy`` and write every
    organization's folder; returns ``{org: folder}``."""
    if seed is not None:
        scenario = replace(scenario, seed=int(seed))
    sim = Simulator(scenario, days=days, confirmations=True)
    lay = sim.layout
    pol = make_policy(policy, lay, params)
    state, exo = sim.reset([replication])
    n_days, n_lanes = sim.days, lay.num_lanes
    orders = np.zeros((n_days, n_lanes))
    shipped = np.zeros((n_days, n_lanes))
    inventory = np.zeros((n_days, 3, lay.num_nodes))
    confirms = np.zeros((n_days, 3, n_lanes))  # received, confirmed, days to ship
    for t in range(n_days):
        on_order = state.on_order[0] @ lay.dst_mat
        inventory[t] = state.on_hand[0], state.backlog[0], on_order
        decision = pol.act(state)
        state, _ = sim.step(state, exo, decision)
        orders[t] = decision.orders[0]
        shipped[t] = state.shipped[0]
        confirms[t] = state.last_received[0], state.confirmed[0], state.confirm_days[0]
    written = {}
    for org in scenario.network.organizations:
        written[org.id] = write_org_folder(
            scenario,
            lay,
            org.id,
            Path(out_dir) / org.id,
            exo.demand[0],
            orders,
            shipped,
            exo.lead[0],
            inventory,
            confirms,
        )
    return written


def write_org_folder(
    scenario: Scenario,
    layout: Any,
    org: str,
    folder: str | Path,
    demand: np.ndarray,
    orders: np.ndarray,
    shipped: np.ndarray,
    lead: np.ndarray,
    inventory: np.ndarray,
    confirms: np.ndarray | None = None,
) -> Path:
    """Write organization ``org``'s folder from a history of ``T`` days (network-sized
    arrays; only ``org``'s rows are read): ``demand [T, N]`` customer demand, ``orders
    [T, M]`` released orders, ``shipped [T, M]`` units shipped, ``lead [T, M]`` the lead
    time (days) of each day's shipment, ``inventory [T, 3, N]`` on hand, backlog and on
    order each morning, ``confirms [T, 3, M]`` received, confirmed, days to ship (None:
    no confirmations seen, an empty file). Used by :func:`export_private_data` and by a
    decision service recording what it saw (``fedinv serve --data``)."""
    lay = layout
    n_days = len(orders)
    dates = pd.date_range(scenario.start_date, periods=n_days, freq="D")
    nodes = scenario.network.nodes
    own = {n.id for n in nodes if n.organization == org}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # demand faced: customers, and orders from other organizations' nodes
    faced = [
        (node.id, demand[:, i], "customer")
        for i, node in enumerate(nodes)
        if node.id in own and node.demand is not None
    ]
    faced += [
        (lane.source, orders[:, m], "order")
        for m, lane in enumerate(scenario.network.lanes)
        if lane.source in own and lane.destination not in own
    ]
    day_text = dates.strftime("%Y-%m-%d")
    demand = pd.concat(
        [
            pd.DataFrame({"date": day_text, "node": node, "quantity": qty, "kind": kind})
            for node, qty, kind in faced
        ]
        or [pd.DataFrame(columns=["date", "node", "quantity", "kind"])],
        ignore_index=True,
    )
    _write_csv(demand, folder / "demand.csv")
    # lead times observed on lanes from outside
    log = []
    outside = [
        m
        for m, lane in enumerate(scenario.network.lanes)
        if lane.destination in own and lane.source not in own
    ]
    for m in outside:
        for order_day, qty, receipt in _fifo(orders[:, m], shipped[:, m], lead[:, m]):
            log.append(
                {
                    "order_date": dates[order_day],
                    "lane": lay.lane_ids[m],
                    "quantity": qty,
                    "receipt_date": dates[0] + pd.Timedelta(days=int(receipt)),
                    "lead_days": int(receipt - order_day),
                }
            )
    leadlog = pd.DataFrame(
        log, columns=["order_date", "lane", "quantity", "receipt_date", "lead_days"]
    )
    for col in ("order_date", "receipt_date"):
        leadlog[col] = pd.to_datetime(leadlog[col]).dt.strftime("%Y-%m-%d")
    _write_csv(leadlog, folder / "leadtimes.csv")
    idx = [i for i, n in enumerate(nodes) if n.id in own]
    inv = pd.DataFrame(
        {
            "date": np.repeat(day_text, len(idx)),
            "node": np.tile([nodes[i].id for i in idx], n_days),
            "on_hand": inventory[:, 0, idx].reshape(-1),
            "backlog": inventory[:, 1, idx].reshape(-1),
            "on_order": inventory[:, 2, idx].reshape(-1),
        }
    )
    _write_csv(inv, folder / "inventory.csv")
    rows = []
    for m in outside if confirms is not None else ():
        for t in np.flatnonzero(confirms[:, 0, m] > 0):
            ship = dates[t] + pd.Timedelta(days=int(confirms[t, 2, m]))
            rows.append(
                {
                    "date": dates[t].strftime("%Y-%m-%d"),
                    "lane": lay.lane_ids[m],
                    "quantity": confirms[t, 0, m],
                    "confirmed": confirms[t, 1, m],
                    "ship_date": ship.strftime("%Y-%m-%d"),
                }
            )
    columns = ["date", "lane", "quantity", "confirmed", "ship_date"]
    _write_csv(pd.DataFrame(rows, columns=columns), folder / "confirmations.csv")
    text = _org_toml(scenario, org, own, leadlog, lay)
    atomic_write(folder / "scenario.toml", lambda tmp, text=text: tmp.write_text(text))
    load_org_scenario(folder)  # the folder must load: fail here, not in a client
    return folder


def load_org_scenario(folder: str | Path) -> Scenario:
    """The local training scenario of an organization's data folder."""
    return load_scenario(Path(folder) / "scenario.toml")


def _fifo(orders: np.ndarray, shipped: np.ndarray, lead: np.ndarray):
    """Match shipments to orders first-in-first-out: yields ``(order_day, units,
    receipt_day)`` chunks."""
    queue: deque[list[float]] = deque()
    for t in range(len(orders)):
        if orders[t] > 1e-9:
            queue.append([t, float(orders[t])])
        left = float(shipped[t])
        while left > 1e-9 and queue:
            day, qty = queue[0]
            take = min(qty, left)
            yield day, take, t + int(lead[t])
            left -= take
            queue[0][1] -= take
            if queue[0][1] <= 1e-9:
                queue.popleft()


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def _org_toml(scenario: Scenario, org: str, own: set[str], leadlog: pd.DataFrame, layout) -> str:
    """The organization's local scenario, in fedinv's TOML format."""
    net = scenario.network
    nodes = {n.id: n for n in net.nodes}
    budget = next(o.monthly_budget for o in net.organizations if o.id == org)
    lines = [
        f"# Local training scenario of organization {org!r}, exported from {scenario.name!r}.",
        "# Its own nodes; every supply from outside is one external lane per (node, item)",
        "# with the lead time observed in leadtimes.csv; demand and orders from outside",
        "# customers come from demand.csv.",
        f'name = "{scenario.name}/{org}"',
        f'description = "Private data of {org} in {scenario.name}"',
        f"horizon_days = {scenario.horizon_days}",
        f'start_date = "{scenario.start_date}"',
        f"lost_sales = {'true' if scenario.lost_sales else 'false'}",
        f"seed = {scenario.seed}",
        "",
        "[demand_history]",
        'file = "demand.csv"',
        'mode = "bootstrap"',
        "",
        "[[organizations]]",
        f'id = "{org}"',
    ]
    if math.isfinite(budget):
        lines.append(f"monthly_budget = {budget!r}")
    for node in net.nodes:
        if node.id in own:
            lines += ["", *_node_toml(node)]
    internal = [ln for ln in net.lanes if ln.destination in own and ln.source in own]
    lane_pos = {ln.id: m for m, ln in enumerate(net.lanes)}
    for lane in internal:  # shares as the simulator normalizes them
        lines += [
            "",
            *_lane_toml(lane, _lead_time_toml(lane), float(layout.lane_share[lane_pos[lane.id]])),
        ]
    # outside supply: merge lanes per (destination, item)
    groups: dict[tuple[str, str], list[int]] = {}
    for m, lane in enumerate(net.lanes):
        if lane.destination in own and lane.source not in own:
            dst = nodes[lane.destination]
            item = ""
            if dst.bill_of_materials:
                item = lane.item if lane.source == EXTERNAL else nodes[lane.source].item_name
            groups.setdefault((lane.destination, item), []).append(m)
    for (dst, item), members in groups.items():
        share = layout.lane_share[members] / layout.lane_share[members].sum()
        ids = [layout.lane_ids[m] for m in members]
        obs = leadlog[leadlog["lane"].isin(ids)]
        if len(obs):
            days = obs.groupby("lead_days")["quantity"].sum()
            lead = (
                f'{{ distribution = "empirical", values = {[int(v) for v in days.index]}, '
                f"weights = {[round(float(w), 6) for w in days / days.sum()]} }}"
            )
        else:
            mean = float(np.dot(share, [net.lanes[m].lead_time.expected_days for m in members]))
            lead = f'{{ distribution = "deterministic", mean = {max(1, round(mean))} }}'
        caps = [net.lanes[m].transport_capacity for m in members]
        lots = {net.lanes[m].lot_size for m in members}
        lines += ["", "[[lanes]]", f'source = "{EXTERNAL}"', f'destination = "{dst}"']
        if item:
            lines.append(f'item = "{item}"')
        lines += [
            f"lead_time = {lead}",
            f"price = {float(np.dot(share, layout.price[members]))!r}",
            f"shipping_cost = {float(np.dot(share, layout.shipping_cost[members]))!r}",
            f"transit_holding_cost = {float(np.dot(share, layout.transit_holding[members]))!r}",
            f"fixed_order_cost = {float(max(layout.fixed_cost[members]))!r}",
            f"min_monthly_commitment = {float(sum(layout.commitment[members]))!r}",
            f"order_share = {float(layout.lane_share[members].sum())!r}",
        ]
        if all(math.isfinite(c) for c in caps):
            lines.append(f"transport_capacity = {float(sum(caps))!r}")
        if len(lots) == 1 and next(iter(lots)) > 0:
            lines.append(f"lot_size = {next(iter(lots))!r}")
    for link in net.transfers:
        if link.source in own and link.destination in own:
            lines += [
                "",
                "[[transfers]]",
                f'source = "{link.source}"',
                f'destination = "{link.destination}"',
                f"unit_cost = {link.unit_cost!r}",
                f"lead_time_days = {link.lead_time_days}",
            ]
            if math.isfinite(link.capacity):
                lines.append(f"capacity = {link.capacity!r}")
    lane_ids = {ln.id for ln in internal}
    for o in scenario.outages:
        if o.target in own or o.target in lane_ids:
            lines += [
                "",
                "[[outages]]",
                f'target = "{o.target}"',
                f"start_probability = {o.start_probability!r}",
                f"mean_duration_days = {o.mean_duration_days!r}",
                f"capacity_fraction = {o.capacity_fraction!r}",
                f"notice_lag_days = {o.notice_lag_days}",
            ]
    return "\n".join(lines) + "\n"


def _node_toml(node: Node) -> list[str]:
    out = [
        "[[nodes]]",
        f'id = "{node.id}"',
        f'tier = "{node.tier.value}"',
        f'region = "{node.region}"',
        f'organization = "{node.organization}"',
        f"unit_value = {node.unit_value!r}",
        f"holding_cost = {node.holding_cost!r}",
        f"stockout_penalty = {node.stockout_penalty!r}",
        f"initial_inventory = {node.initial_inventory!r}",
    ]
    if node.item:
        out.append(f'item = "{node.item}"')
    if math.isfinite(node.capacity):
        out.append(f"capacity = {node.capacity!r}")
    if math.isfinite(node.storage_capacity):
        out.append(f"storage_capacity = {node.storage_capacity!r}")
    if node.bill_of_materials:
        bom = ", ".join(f"{k} = {float(v)!r}" for k, v in node.bill_of_materials.items())
        out.append(f"bill_of_materials = {{ {bom} }}")
    return out


def _lead_time_toml(lane: Lane) -> str:
    def text(value: object) -> str:
        if isinstance(value, str):
            return f'"{value}"'
        return repr(list(value)) if isinstance(value, tuple) else repr(value)

    body = ", ".join(f"{k} = {text(v)}" for k, v in lane.lead_time.parameters().items())
    return f"{{ {body} }}"


def _lane_toml(lane: Lane, lead: str, share: float) -> list[str]:
    out = [
        "[[lanes]]",
        f'source = "{lane.source}"',
        f'destination = "{lane.destination}"',
        f"lead_time = {lead}",
        f"shipping_cost = {lane.shipping_cost!r}",
        f"fixed_order_cost = {lane.fixed_order_cost!r}",
        f"min_monthly_commitment = {lane.min_monthly_commitment!r}",
        f"order_share = {share!r}",
    ]
    if lane.price is not None:
        out.append(f"price = {lane.price!r}")
    if lane.transit_holding_cost is not None:
        out.append(f"transit_holding_cost = {lane.transit_holding_cost!r}")
    if math.isfinite(lane.transport_capacity):
        out.append(f"transport_capacity = {lane.transport_capacity!r}")
    if lane.lot_size:
        out.append(f"lot_size = {lane.lot_size!r}")
    if lane.order_lead_time:
        out.append(f"order_lead_time = {lane.order_lead_time}")
    if lane.initial_pipeline:
        entries = ", ".join(
            f"{{ arrival_day = {e.arrival_day}, quantity = {e.quantity!r} }}"
            for e in lane.initial_pipeline
        )
        out.append(f"initial_pipeline = [{entries}]")
    return out
