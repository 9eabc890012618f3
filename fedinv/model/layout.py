"""A network compiled once into index arrays: what the simulator and policies index by.

Nodes are numbered in file order, lanes likewise (external lanes included, with source
``-1``). Components of assembling (BOM) nodes get slots ``0..C-1``, contiguous per node.
Nothing here changes during a simulation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fedinv.model.network import EXTERNAL, Network, Tier

OUTPUT_PRODUCTION, OUTPUT_ASSEMBLY, OUTPUT_SHIPPING = 0, 1, 2


@dataclass(frozen=True, eq=False)
class Layout:
    """Index arrays of a network (``N`` nodes, ``M`` lanes, ``C`` component slots,
    ``T`` transfer links, ``O`` organizations)."""

    network: Network
    node_ids: tuple[str, ...]
    lane_ids: tuple[str, ...]
    org_ids: tuple[str, ...]
    tier: np.ndarray  # [N] str
    region: np.ndarray  # [N] str
    node_org: np.ndarray  # [N] int
    holding: np.ndarray  # [N] $/unit-day
    penalty: np.ndarray  # [N] $/unit-day or $/lost unit
    unit_value: np.ndarray  # [N] $
    capacity: np.ndarray  # [N] units/day (inf: unlimited)
    output_kind: np.ndarray  # [N] OUTPUT_*
    storage: np.ndarray  # [N] units
    initial: np.ndarray  # [N] units
    customer: np.ndarray  # [N] bool
    lane_src: np.ndarray  # [M] int, -1 for external
    lane_dst: np.ndarray  # [M] int
    external: np.ndarray  # [M] bool
    src_mat: np.ndarray  # [M, N] 1 where lane leaves node (internal lanes only)
    dst_mat: np.ndarray  # [M, N] 1 where lane enters node
    lane_comp: np.ndarray  # [M] component slot of the lane, -1 if it feeds on-hand stock
    price: np.ndarray  # [M] $/unit
    shipping_cost: np.ndarray  # [M] $/unit
    transit_holding: np.ndarray  # [M] $/unit-day
    transport_cap: np.ndarray  # [M] units/day
    lot_size: np.ndarray  # [M] units (0: none)
    commitment: np.ndarray  # [M] units/month
    fixed_cost: np.ndarray  # [M] $/order
    lane_share: np.ndarray  # [M] normalized share among lanes of the same item into a node
    lane_org: np.ndarray  # [M] int organization that pays (destination's)
    max_lead: int  # longest lane lead time incl. extra delays, days
    order_lead: np.ndarray  # [M] days an order takes to reach the lane's source
    initial_transit: np.ndarray  # [M, max_lead + 1] units in transit on day 0, by arrival day
    comp_node: np.ndarray  # [C] int
    comp_bom: np.ndarray  # [C] units per unit assembled
    comp_holding: np.ndarray  # [C] $/unit-day
    comp_value: np.ndarray  # [C] $
    comp_starts: np.ndarray  # [K] first slot of each BOM node (for reduceat)
    bom_nodes: np.ndarray  # [K] node index of each BOM node
    transfer_src: np.ndarray  # [T]
    transfer_dst: np.ndarray  # [T]
    transfer_cost: np.ndarray  # [T] $/unit
    transfer_lead: np.ndarray  # [T] days
    transfer_cap: np.ndarray  # [T] units/day
    budget: np.ndarray  # [O] $/month
    content: np.ndarray  # [N, N] units of node j's item embodied in one unit at node k
    topo_order: np.ndarray  # [N] upstream first

    @property
    def num_nodes(self) -> int:
        return len(self.node_ids)

    @property
    def num_lanes(self) -> int:
        return len(self.lane_ids)

    @property
    def num_transfers(self) -> int:
        return len(self.transfer_src)

    @property
    def num_components(self) -> int:
        return len(self.comp_node)

    def inbound_lanes(self, node: int) -> np.ndarray:
        return np.flatnonzero(self.lane_dst == node)


def compile_layout(network: Network, extra_delay_max: int = 0) -> Layout:
    """Compile ``network`` into a :class:`Layout` (``extra_delay_max``: longest extra
    delay a disruption can add, days, so pipelines are long enough)."""
    nodes, lanes = network.nodes, network.lanes
    nidx = {n.id: i for i, n in enumerate(nodes)}
    oidx = {o.id: i for i, o in enumerate(network.organizations)}
    n_nodes, n_lanes = len(nodes), len(lanes)
    f = np.float64

    lane_src = np.array([-1 if ln.source == EXTERNAL else nidx[ln.source] for ln in lanes], int)
    lane_dst = np.array([nidx[ln.destination] for ln in lanes], int)
    external = lane_src < 0
    src_mat = np.zeros((n_lanes, n_nodes))
    dst_mat = np.zeros((n_lanes, n_nodes))
    for m in range(n_lanes):
        if lane_src[m] >= 0:
            src_mat[m, lane_src[m]] = 1.0
        dst_mat[m, lane_dst[m]] = 1.0

    def lane_item(m: int) -> str:
        return lanes[m].item if external[m] else nodes[lane_src[m]].item_name

    # Component slots of BOM nodes, contiguous per node.
    comp_node, comp_bom, comp_items, comp_starts, bom_nodes = [], [], [], [], []
    slot_of: dict[tuple[int, str], int] = {}
    for i, node in enumerate(nodes):
        if node.bill_of_materials:
            comp_starts.append(len(comp_node))
            bom_nodes.append(i)
            for item, qty in node.bill_of_materials.items():
                slot_of[(i, item)] = len(comp_node)
                comp_node.append(i)
                comp_bom.append(float(qty))
                comp_items.append(item)
    lane_comp = np.array([slot_of.get((lane_dst[m], lane_item(m)), -1) for m in range(n_lanes)])

    def src_attr(m: int, name: str, default: float) -> float:
        return default if external[m] else float(getattr(nodes[lane_src[m]], name))

    price = np.array(
        [
            ln.price if ln.price is not None else src_attr(m, "unit_value", 0.0)
            for m, ln in enumerate(lanes)
        ],
        f,
    )
    transit_holding = np.array(
        [
            ln.transit_holding_cost
            if ln.transit_holding_cost is not None
            else src_attr(m, "holding_cost", 0.0)
            for m, ln in enumerate(lanes)
        ],
        f,
    )
    comp_holding = np.zeros(len(comp_node))
    comp_value = np.zeros(len(comp_node))
    for m in range(n_lanes):
        c = lane_comp[m]
        if c >= 0:
            comp_holding[c] = max(comp_holding[c], transit_holding[m])
            comp_value[c] = max(comp_value[c], price[m])

    # Shares among lanes that bring the same item into the same node.
    share = np.array([max(ln.order_share, 0.0) for ln in lanes], f)
    groups: dict[tuple[int, str], list[int]] = {}
    for m in range(n_lanes):  # without a BOM, every inbound lane brings the same product
        key = lane_item(m) if nodes[lane_dst[m]].bill_of_materials else ""
        groups.setdefault((lane_dst[m], key), []).append(m)
    for members in groups.values():
        total = share[members].sum()
        share[members] = share[members] / total if total > 0 else 1.0 / len(members)

    output_kind = np.full(n_nodes, OUTPUT_SHIPPING)
    for i, node in enumerate(nodes):
        if node.bill_of_materials:
            output_kind[i] = OUTPUT_ASSEMBLY
        elif any(external[m] for m in np.flatnonzero(lane_dst == i)):
            output_kind[i] = OUTPUT_PRODUCTION

    order = _topological_order(n_nodes, lane_src, lane_dst)
    content = np.zeros((n_nodes, n_nodes))
    for k in order:  # upstream first: content[:, k] from k's inbound lanes
        content[k, k] = 1.0
        for m in np.flatnonzero((lane_dst == k) & ~external):
            src = lane_src[m]
            factor = share[m] * (comp_bom[lane_comp[m]] if lane_comp[m] >= 0 else 1.0)
            content[:, k] += factor * content[:, src]
        content[k, k] = 1.0

    transfers = network.transfers
    max_lead = max([ln.lead_time.support_max for ln in lanes] + [1]) + extra_delay_max
    last_arrival = max([e.arrival_day for ln in lanes for e in ln.initial_pipeline] + [0])
    max_lead = max(max_lead, last_arrival)
    initial_transit = np.zeros((n_lanes, max_lead + 1))
    for m, ln in enumerate(lanes):
        for entry in ln.initial_pipeline:
            initial_transit[m, entry.arrival_day] += entry.quantity
    return Layout(
        network=network,
        node_ids=tuple(n.id for n in nodes),
        lane_ids=tuple(ln.id for ln in lanes),
        org_ids=tuple(o.id for o in network.organizations),
        tier=np.array([Tier(n.tier).value for n in nodes]),
        region=np.array([n.region for n in nodes]),
        node_org=np.array([oidx[n.organization] for n in nodes], int),
        holding=np.array([n.holding_cost for n in nodes], f),
        penalty=np.array([n.stockout_penalty for n in nodes], f),
        unit_value=np.array([n.unit_value for n in nodes], f),
        capacity=np.array([n.capacity for n in nodes], f),
        output_kind=output_kind,
        storage=np.array([n.storage_capacity for n in nodes], f),
        initial=np.array([n.initial_inventory for n in nodes], f),
        customer=np.array([n.demand is not None for n in nodes]),
        lane_src=lane_src,
        lane_dst=lane_dst,
        external=external,
        src_mat=src_mat,
        dst_mat=dst_mat,
        lane_comp=lane_comp,
        price=price,
        shipping_cost=np.array([ln.shipping_cost for ln in lanes], f),
        transit_holding=transit_holding,
        transport_cap=np.array([ln.transport_capacity for ln in lanes], f),
        lot_size=np.array([ln.lot_size for ln in lanes], f),
        commitment=np.array([ln.min_monthly_commitment for ln in lanes], f),
        fixed_cost=np.array([ln.fixed_order_cost for ln in lanes], f),
        lane_share=share,
        lane_org=np.array([oidx[nodes[d].organization] for d in lane_dst], int),
        max_lead=int(max_lead),
        order_lead=np.array([ln.order_lead_time for ln in lanes], int),
        initial_transit=initial_transit,
        comp_node=np.array(comp_node, int),
        comp_bom=np.array(comp_bom, f),
        comp_holding=comp_holding,
        comp_value=comp_value,
        comp_starts=np.array(comp_starts, int),
        bom_nodes=np.array(bom_nodes, int),
        transfer_src=np.array([nidx[t.source] for t in transfers], int),
        transfer_dst=np.array([nidx[t.destination] for t in transfers], int),
        transfer_cost=np.array([t.unit_cost for t in transfers], f),
        transfer_lead=np.array([t.lead_time_days for t in transfers], int),
        transfer_cap=np.array([t.capacity for t in transfers], f),
        budget=np.array([o.monthly_budget for o in network.organizations], f),
        content=content,
        topo_order=np.array(order, int),
    )


def _topological_order(n: int, src: np.ndarray, dst: np.ndarray) -> list[int]:
    """Nodes ordered upstream first (the lane graph is acyclic: validated at load)."""
    indeg = np.zeros(n, int)
    for s, d in zip(src, dst, strict=True):
        if s >= 0:
            indeg[d] += 1
    ready = [i for i in range(n) if indeg[i] == 0]
    order: list[int] = []
    while ready:
        i = ready.pop(0)
        order.append(i)
        for s, d in zip(src, dst, strict=True):
            if s == i:
                indeg[d] -= 1
                if indeg[d] == 0:
                    ready.append(d)
    if len(order) != n:
        raise ValueError("the lane graph has a cycle")
    return order


def capacity_times(capacity: Any, factor: Any, xp: Any = np) -> Any:
    """``capacity * factor`` (units/day) for an outage's capacity fraction, where a
    factor of 0 shuts even an unlimited capacity (``inf * 0`` would be NaN). ``xp`` is
    the array namespace (numpy, or :mod:`fedinv.sim.ops`'s for the day on torch)."""
    unlimited = xp.isinf(capacity)
    scaled = xp.where(unlimited, np.inf, xp.where(unlimited, 0.0, capacity) * factor)
    return xp.where(factor == 0.0, 0.0, scaled)
