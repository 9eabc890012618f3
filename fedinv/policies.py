"""Classical ordering policies behind one interface: state of a day -> proposed orders.

Every policy is built for one compiled network (:class:`fedinv.layout.Layout`) and
reads only the state a node can see at decision time (no future demand). Levels are
in units of the node's own item; a node with a bill of materials orders each
component as ``bom x (level - position)``; a node with several lanes for one item splits
its order by the lanes' ``order_share``. Orders on a lane with a lot size are rounded
up to whole lots.

Policies:
  * ``base-stock`` (installation): order up to ``S`` on the node's inventory position
    (on hand + on order - backorders - owed downstream).
  * ``echelon-base-stock``: order up to ``S`` on the echelon position (stock at the node
    and everything downstream of it, incl. in transit, + on order - customer backorders).
  * ``sS``: when the position is at or below ``s``, order up to ``S``.
  * ``sQ``: when the position is at or below ``s``, order the smallest multiple of ``Q``
    that lifts it above ``s``.
  * ``min-stock``: when net on-hand stock falls below ``min`` and nothing is on order,
    order ``quantity`` (the naive trigger rule).

Parameters are per node (``{"levels": {"NODE": S, ...}}``); nodes left out get the
textbook level of :func:`formula_levels`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from fedinv.layout import Layout
from fedinv.network import Scenario
from fedinv.simulator import Decision, State

POLICY_NAMES = ("base-stock", "echelon-base-stock", "sS", "sQ", "min-stock")


class Policy(Protocol):
    """One day's observation to proposed orders."""

    name: str

    def act(self, state: State) -> Decision: ...


# -- demand statistics used by formulas --------------------------------------------------


@dataclass(frozen=True)
class FlowStats:
    """Per node: mean and variance of daily demand flowing through it (units/day), and
    the expected inbound lead time and echelon lead time (days)."""

    mean: np.ndarray
    var: np.ndarray
    lead: np.ndarray
    lead_var: np.ndarray
    echelon_lead: np.ndarray


def flow_stats(layout: Layout) -> FlowStats:
    """Demand flowing through each node (independent customer demands, BOM-scaled)."""
    mean_c = np.zeros(layout.num_nodes)
    var_c = np.zeros(layout.num_nodes)
    for i, node in enumerate(layout.network.nodes):
        d = node.demand
        if d is None:
            continue
        mu = d.base_mean * float(np.mean(d.weekly))
        if d.history:
            v = float(np.var(d.history))
        elif d.distribution == "poisson":
            v = mu
        elif d.distribution == "negative_binomial":
            v = mu + mu * mu / d.dispersion
        elif d.distribution == "normal":
            v = d.std**2
        elif d.distribution == "uniform":
            v = ((d.high - d.low + 1) ** 2 - 1) / 12.0
        else:
            v = 0.0
        mean_c[i], var_c[i] = mu, v
    mean = layout.content @ mean_c
    var = (layout.content**2) @ var_c
    lead = np.zeros(layout.num_nodes)
    lead_var = np.zeros(layout.num_nodes)
    for m, lane in enumerate(layout.network.lanes):
        k = layout.lane_dst[m]
        samples = lane.lead_time.sample(np.random.default_rng(0), (4000,))
        lead[k] += layout.lane_share[m] * samples.mean()
        lead_var[k] += layout.lane_share[m] * samples.var()
    n_items = np.maximum(np.bincount(layout.lane_dst, weights=layout.lane_share,
                                     minlength=layout.num_nodes), 1.0)
    lead, lead_var = lead / n_items, lead_var / n_items
    echelon = lead.copy()
    for k in layout.topo_order[::-1]:  # downstream first
        children = layout.lane_dst[(layout.lane_src == k)]
        if len(children):
            echelon[k] = lead[k] + float(np.mean(echelon[children]))
    return FlowStats(mean, var, lead, lead_var, echelon)


def formula_levels(layout: Layout, z: float | Mapping[str, float] = 1.645,
                   echelon: bool = False) -> np.ndarray:
    """Textbook base-stock levels: mean lead-time demand + ``z`` x its standard deviation,
    with demand and lead-time variability (``z`` per tier or one for all)."""
    st = flow_stats(layout)
    lead = st.echelon_lead if echelon else st.lead
    zs = _per_tier(layout, z)
    sd = np.sqrt(lead * st.var + st.mean**2 * st.lead_var)
    return st.mean * lead + zs * sd


def _per_tier(layout: Layout, value: float | Mapping[str, float]) -> np.ndarray:
    if isinstance(value, Mapping):
        return np.array([float(value.get(t, value.get("default", 1.645))) for t in layout.tier])
    return np.full(layout.num_nodes, float(value))


def node_vector(layout: Layout, values: Mapping[str, float] | None,
                default: np.ndarray) -> np.ndarray:
    """Per-node parameter vector from ``{node_id: value}``; others from ``default``."""
    out = np.array(default, float).copy()
    for key, val in (values or {}).items():
        if key not in layout.node_ids:
            raise ValueError(f"unknown node {key!r} in policy parameters "
                             f"(known: {', '.join(layout.node_ids)})")
        out[layout.node_ids.index(key)] = float(val)
    return out


# -- positions ---------------------------------------------------------------------------


class _OrderUpTo:
    """Shared machinery: positions, need -> lane orders, lot rounding."""

    name = "order-up-to"

    def __init__(self, layout: Layout, echelon: bool = False):
        self.layout = layout
        self.echelon = echelon
        lay = layout
        self._bom_lane = lay.lane_comp >= 0
        self._bom = np.where(self._bom_lane, lay.comp_bom[np.maximum(lay.lane_comp, 0)]
                             if lay.num_components else 1.0, 1.0)
        self._comp_lane_mat = np.zeros((lay.num_lanes, lay.num_components))
        for m in np.flatnonzero(self._bom_lane):
            self._comp_lane_mat[m, lay.lane_comp[m]] = 1.0
        internal = ~lay.external
        # echelon: in-transit units on internal lane l count content[j, src_l] toward j
        self._transit_content = np.where(
            internal[None, :], lay.content[:, np.maximum(lay.lane_src, 0)], 0.0).T  # [M, N]
        # ... and component units at a BOM node count toward their suppliers' echelons
        self._comp_content = self._comp_lane_mat.T @ (
            self._transit_content * lay.lane_share[:, None])  # [C, N]

        # installation policies see the orders their downstream nodes place today
        # (downstream nodes decide first), as in the textbook's sequence of events
        depth = np.zeros(lay.num_nodes, int)
        for k in lay.topo_order[::-1]:
            kids = lay.lane_dst[lay.lane_src == k]
            depth[k] = 1 + depth[kids].max() if len(kids) else 0
        self._groups = [depth[lay.lane_dst] == d for d in range(depth.max() + 1)]

    def cascade(self, s: State, rule) -> np.ndarray:
        """Lane orders ``[B, M]`` from ``rule(net) -> [B, M]``, where ``net`` is each node's
        position less the orders its downstream nodes place today (echelon: one pass)."""
        net = self.position(s)
        if self.echelon:
            return rule(net)
        orders = np.zeros_like(s.owed)
        for lanes in self._groups:
            orders = np.where(lanes, rule(net - orders @ self.layout.src_mat), orders)
        return orders

    def position(self, s: State) -> np.ndarray:
        """Net stock per node excluding its own inbound on-order, ``[B, N]`` units."""
        lay = self.layout
        if self.echelon:
            return ((s.on_hand - s.backlog) @ lay.content.T + s.in_transit @ self._transit_content
                    + s.components @ self._comp_content)
        return s.on_hand - s.backlog - s.owed @ lay.src_mat

    def lane_need(self, s: State, target: np.ndarray, net: np.ndarray) -> np.ndarray:
        """Units to order per lane to lift each node's position to ``target`` ``[N]``."""
        lay = self.layout
        on_order = s.on_order
        gap = target - net  # [B, N]
        node_gap = gap - on_order @ self._onhand_dst()
        need = node_gap @ lay.dst_mat.T  # per lane, non-BOM
        if lay.num_components:
            comp_pos = s.components + on_order @ self._comp_lane_mat  # [B, C]
            comp_gap = gap[:, lay.comp_node] * lay.comp_bom - comp_pos
            need = np.where(self._bom_lane, comp_gap @ self._comp_lane_mat.T, need)
        return np.maximum(need, 0.0) * lay.lane_share

    def _onhand_dst(self) -> np.ndarray:
        if not hasattr(self, "_odm"):
            self._odm = self.layout.dst_mat * (~self._bom_lane)[:, None]
        return self._odm

    def finish(self, orders: np.ndarray) -> Decision:
        lot = self.layout.lot_size
        orders = np.where(lot > 0, np.ceil(orders / np.where(lot > 0, lot, 1) - 1e-9) * lot,
                          orders)
        return Decision(orders)


class BaseStock(_OrderUpTo):
    """Installation or echelon base-stock with levels ``[N]`` (units)."""

    def __init__(self, layout: Layout, levels: np.ndarray, echelon: bool = False):
        super().__init__(layout, echelon)
        self.levels = np.asarray(levels, float)
        self.name = "echelon-base-stock" if echelon else "base-stock"

    def act(self, state: State) -> Decision:
        return self.finish(self.cascade(
            state, lambda net: self.lane_need(state, self.levels, net)))


class SS(_OrderUpTo):
    """(s, S): order up to ``S`` when the position is at or below ``s``."""

    name = "sS"

    def __init__(self, layout: Layout, s: np.ndarray, big_s: np.ndarray):
        super().__init__(layout)
        self.s, self.big_s = np.asarray(s, float), np.maximum(big_s, s)

    def act(self, state: State) -> Decision:
        def rule(net: np.ndarray) -> np.ndarray:
            ip = net + state.on_order @ self._onhand_dst()
            trigger = (ip <= self.s).astype(float) @ self.layout.dst_mat.T > 0
            need = self.lane_need(state, self.big_s, net)
            return np.where(trigger | self._bom_lane, need, 0.0)

        return self.finish(self.cascade(state, rule))


class SQ(_OrderUpTo):
    """(s, Q): when the position is at or below ``s``, order ``n x Q`` to lift it above."""

    name = "sQ"

    def __init__(self, layout: Layout, s: np.ndarray, q: np.ndarray):
        super().__init__(layout)
        self.s, self.q = np.asarray(s, float), np.maximum(np.asarray(q, float), 1e-9)

    def act(self, state: State) -> Decision:
        def rule(net: np.ndarray) -> np.ndarray:
            ip = net + state.on_order @ self._onhand_dst()
            batches = np.where(ip <= self.s, np.floor((self.s - ip) / self.q) + 1, 0.0)
            target = ip + batches * self.q  # the position after ordering, per node
            return self.lane_need(state, target, net) * (batches @ self.layout.dst_mat.T > 0)

        return self.finish(self.cascade(state, rule))


class MinStock(_OrderUpTo):
    """Naive trigger: below ``min`` net on hand and nothing on order -> order ``quantity``."""

    name = "min-stock"

    def __init__(self, layout: Layout, minimum: np.ndarray, quantity: np.ndarray):
        super().__init__(layout)
        self.minimum, self.quantity = np.asarray(minimum, float), np.asarray(quantity, float)

    def act(self, state: State) -> Decision:
        lay = self.layout
        net = state.on_hand - state.backlog
        nothing_on_order = (state.on_order @ lay.dst_mat) <= 1e-9
        fire = (net < self.minimum) & nothing_on_order
        per_node = np.where(fire, self.quantity, 0.0)
        orders = (per_node @ lay.dst_mat.T) * lay.lane_share * self._bom
        return self.finish(orders)


# -- construction from parameters --------------------------------------------------------


def default_params(name: str, layout: Layout) -> dict[str, dict[str, float]]:
    """Textbook parameters: base-stock at a 95% service z; (s,S)/(s,Q) with ``s`` the
    base-stock level and ``Q`` the EOQ; min-stock with ``min`` = the base-stock level."""
    echelon = name == "echelon-base-stock"
    levels = formula_levels(layout, 1.645, echelon=echelon)
    ids = layout.node_ids
    as_map = lambda v: {k: float(x) for k, x in zip(ids, v, strict=True)}  # noqa: E731
    q = eoq(layout)
    match name:
        case "base-stock" | "echelon-base-stock":
            return {"levels": as_map(levels)}
        case "sS":
            return {"s": as_map(levels), "S": as_map(levels + q)}
        case "sQ":
            return {"s": as_map(levels), "Q": as_map(q)}
        case "min-stock":
            return {"min": as_map(levels), "quantity": as_map(q)}
    raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICY_NAMES)}")


def eoq(layout: Layout) -> np.ndarray:
    """Economic order quantity per node, ``sqrt(2 K mean / h)`` (units); nodes without a
    fixed ordering cost get one day of mean demand."""
    st = flow_stats(layout)
    fixed = layout.fixed_cost @ layout.dst_mat
    h = np.maximum(layout.holding, 1e-9)
    q = np.where(fixed > 0, np.sqrt(2 * fixed * st.mean / h), st.mean)
    return np.maximum(q, 1e-6)


def make_policy(name: str, layout: Layout, params: Mapping[str, Any] | None = None) -> Policy:
    """Build a classical policy by name from per-node parameters (see module doc)."""
    defaults = default_params(name, layout)
    params = dict(params or {})
    unknown = set(params) - set(defaults)
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)} for policy {name!r}; "
                         f"expected {sorted(defaults)}")
    vec = {k: node_vector(layout, params.get(k), node_vector(layout, v, np.zeros(
        layout.num_nodes))) for k, v in defaults.items()}
    for k, v in vec.items():
        if not np.all(np.isfinite(v)):
            raise ValueError(f"parameter {k!r} of policy {name!r} must be finite numbers")
    match name:
        case "base-stock":
            return BaseStock(layout, vec["levels"])
        case "echelon-base-stock":
            return BaseStock(layout, vec["levels"], echelon=True)
        case "sS":
            return SS(layout, vec["s"], vec["S"])
        case "sQ":
            return SQ(layout, vec["s"], vec["Q"])
        case "min-stock":
            return MinStock(layout, vec["min"], vec["quantity"])
    raise AssertionError(name)


def scenario_layout(scenario: Scenario) -> Layout:
    """The layout a :class:`~fedinv.simulator.Simulator` would compile for ``scenario``."""
    from fedinv.simulator import Simulator

    return Simulator(scenario, days=1).layout

