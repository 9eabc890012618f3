"""Classical ordering policies behind one interface: state of a day -> proposed orders.

Every policy is built for one compiled network (:class:`fedinv.model.layout.Layout`) and
reads only what a node knows at decision time (its stock, its pipeline, what it owes,
and the orders its downstream nodes place today); nothing reads future demand.

A node replenishes one *stream* per item it buys: a node without a bill of materials
has one stream (its item, in its own units); an assembling node has one stream per
component, in component units. A stream's position is

    installation: bom x (on hand - backorders - owed downstream - ordered from it today)
                  + component stock + on order
    echelon:      bom x (stock at the node and everywhere downstream of it, incl. in
                  transit, - customer backorders) + component stock + on order

(``bom = 1`` and no component stock for a plain node). On order counts orders still
on their way to the source (lanes with an ``order_lead_time``), and "ordered from it
today" only orders that reach it today: those released today on lanes without an order
lead time (the others are owed once they arrive). Parameters are per node in the
node's units (for an assembling node a number means ``bom x number`` for each
component) or, for an assembling node, a table ``{item: value}`` in component units.
An order for a stream is split over its lanes by their ``order_share`` and rounded up
to whole lots on lanes with a lot size.

  * ``base-stock`` / ``echelon-base-stock``: order up to ``levels``;
  * ``sS``: when the position is at or below ``s``, order up to ``S``;
  * ``sQ``: when the position is at or below ``s``, order the smallest multiple of ``Q``
    that lifts it above ``s``;
  * ``min-stock``: when net on-hand stock (on hand - backorders) falls below ``min`` and
    nothing is on order for the stream, order ``quantity`` (the naive trigger rule).

Every policy takes the option ``position = "confirmed"`` (default ``"ordered"``): on order
then counts, of what its suppliers owe it, only what they confirmed they will ship within
the confirmation horizon (``State.promised``, the Supplier Interface of docs/model.md),
plus what is in transit and orders not yet confirmed (still travelling to the source, or
reached it this morning).

Installation policies let downstream nodes decide first, so a node's position includes
the orders it receives today (the textbook's sequence of events; with it, installation
levels equal to differences of echelon levels give the same orders as the echelon policy
in a serial system).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from fedinv.model.layout import Layout
from fedinv.sim.ops import NUMPY, NumpyOps
from fedinv.sim.simulator import Decision, State

POLICY_NAMES = ("base-stock", "echelon-base-stock", "sS", "sQ", "min-stock")
PARAMETER_NAMES = {
    "base-stock": ("levels",),
    "echelon-base-stock": ("levels",),
    "sS": ("s", "S"),
    "sQ": ("s", "Q"),
    "min-stock": ("min", "quantity"),
}
POSITIONS = ("ordered", "confirmed")
"""What on order counts of what the suppliers owe: all of it, or what they confirmed."""


class Policy(Protocol):
    """One day's state to proposed orders."""

    name: str

    def act(self, state: State) -> Decision: ...


@dataclass(frozen=True)
class Streams:
    """Replenishment streams of a layout: ``K`` = nodes without BOM + component slots."""

    node: np.ndarray  # [K] node index
    slot: np.ndarray  # [K] component slot, -1 for a plain node
    bom: np.ndarray  # [K] component units per unit of the node's item (1 for plain)
    item: tuple[str, ...]  # [K] item name ("" for plain)
    lane_stream: np.ndarray  # [M] stream of each lane
    lane_mat: np.ndarray  # [M, K] 1 where the lane feeds the stream

    @property
    def size(self) -> int:
        return len(self.node)


def streams_of(layout: Layout) -> Streams:
    """The replenishment streams of ``layout`` (plain nodes first, then components)."""
    nodes, slots, bom, items = [], [], [], []
    bom_nodes = set(layout.comp_node.tolist())
    for i in range(layout.num_nodes):
        if i not in bom_nodes:
            nodes.append(i), slots.append(-1), bom.append(1.0), items.append("")
    comp_items = [item for n in layout.network.nodes for item in n.bill_of_materials]
    for c in range(layout.num_components):
        nodes.append(int(layout.comp_node[c])), slots.append(c)
        bom.append(float(layout.comp_bom[c])), items.append(comp_items[c])
    node, slot = np.array(nodes, int), np.array(slots, int)
    lane_stream = np.empty(layout.num_lanes, int)
    for m in range(layout.num_lanes):
        c = layout.lane_comp[m]
        if c >= 0:
            lane_stream[m] = int(np.flatnonzero(slot == c)[0])
        else:
            lane_stream[m] = int(np.flatnonzero((node == layout.lane_dst[m]) & (slot < 0))[0])
    lane_mat = np.zeros((layout.num_lanes, len(node)))
    lane_mat[np.arange(layout.num_lanes), lane_stream] = 1.0
    return Streams(node, slot, np.array(bom), tuple(items), lane_stream, lane_mat)


# -- demand statistics used by formulas --------------------------------------------------


@dataclass(frozen=True)
class FlowStats:
    """Per stream: mean and variance of daily demand on it (stream units/day), and the
    expected lead time (a lane's order lead time plus its shipping lead time), its
    variance, and the echelon lead time (days). Lead-time moments are the exact ones of
    a lane's draws (rounded up and clipped, see
    :attr:`fedinv.model.network.LeadTime.mean_days`), averaged over the stream's lanes
    with their ``order_share``."""

    mean: np.ndarray
    var: np.ndarray
    lead: np.ndarray
    lead_var: np.ndarray
    echelon_lead: np.ndarray


def node_demand(layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of daily demand flowing through each node (its item's units),
    from independent customer demands scaled along bills of materials and shares."""
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
    return layout.content @ mean_c, (layout.content**2) @ var_c


def flow_stats(layout: Layout, streams: Streams | None = None) -> FlowStats:
    """Demand and lead-time statistics per stream (see :class:`FlowStats`)."""
    st = streams or streams_of(layout)
    mean_n, var_n = node_demand(layout)
    lead = np.zeros(st.size)
    lead_var = np.zeros(st.size)
    for m, lane in enumerate(layout.network.lanes):  # exact moments of the drawn lead time
        k = st.lane_stream[m]
        lead[k] += layout.lane_share[m] * (lane.order_lead_time + lane.lead_time.mean_days)
        lead_var[k] += layout.lane_share[m] * lane.lead_time.variance_days
    # echelon: add the longest-mean path of lead times below the node
    below = np.zeros(layout.num_nodes)
    for n in layout.topo_order[::-1]:  # downstream first
        out = np.flatnonzero(layout.lane_src == n)
        if len(out):
            below[n] = max(lead[st.lane_stream[m]] + below[layout.lane_dst[m]] for m in out)
    return FlowStats(
        mean=st.bom * mean_n[st.node],
        var=st.bom**2 * var_n[st.node],
        lead=lead,
        lead_var=lead_var,
        echelon_lead=lead + below[st.node],
    )


def formula_levels(
    layout: Layout, z: float | Mapping[str, float] = 1.645, echelon: bool = False
) -> np.ndarray:
    """Textbook levels per stream: mean lead-time demand + ``z`` x its standard deviation
    (demand and lead-time variability; ``z`` one number or per tier)."""
    st = streams_of(layout)
    fs = flow_stats(layout, st)
    lead = fs.echelon_lead if echelon else fs.lead
    zs = np.array([_tier_value(z, t) for t in layout.tier[st.node]])
    return fs.mean * lead + zs * np.sqrt(lead * fs.var + fs.mean**2 * fs.lead_var)


def eoq(layout: Layout) -> np.ndarray:
    """Economic order quantity per stream, ``sqrt(2 K mean / h)`` with ``K`` the lanes'
    fixed order cost; one day of mean demand where ordering has no fixed cost."""
    st = streams_of(layout)
    fs = flow_stats(layout, st)
    fixed = (layout.fixed_cost * layout.lane_share) @ st.lane_mat
    hold = np.where(
        st.slot >= 0,
        layout.comp_holding[np.maximum(st.slot, 0)] if layout.num_components else 0.0,
        layout.holding[st.node],
    )
    q = np.where(fixed > 0, np.sqrt(2 * fixed * fs.mean / np.maximum(hold, 1e-9)), fs.mean)
    return np.maximum(q, 1e-6)


def _tier_value(value: float | Mapping[str, float], tier: str) -> float:
    if isinstance(value, Mapping):
        return float(value.get(tier, value.get("default", 1.645)))
    return float(value)


# -- the policies ------------------------------------------------------------------------


def link_matrices(layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """``(src, dst)`` ``[T, N]``: 1 at each lateral link's sender and receiver node."""
    eye = np.eye(layout.num_nodes)
    n = layout.num_nodes
    return eye[layout.transfer_src].reshape(-1, n), eye[layout.transfer_dst].reshape(-1, n)


def transfers_landed(layout: Layout, s: State, moves: Any, ops: NumpyOps = NUMPY) -> State:
    """The state an ordering rule sees when today's lateral transfers ``moves`` ``[B, T]``
    (units) and those still in flight have landed: the donor's on hand lower, the
    receiver's higher, so the donor reorders what it gives and the receiver does not
    reorder what it gets (the Coordination Node's view, docs/roles.md; HDPO's transfer
    outputs). ``s`` itself where the layout has no lateral links. In ``ops``'s namespace."""
    if not layout.num_transfers:
        return s
    src, dst = (ops.asarray(m) for m in link_matrices(layout))
    in_flight = ops.sum(s.transfer_pipeline, 2) @ dst
    return replace(s, on_hand=s.on_hand - moves @ src + moves @ dst + in_flight)


class StreamPolicy:
    """Shared machinery: stream positions, stream orders -> lane orders, lot rounding."""

    name = "stream-policy"

    def __init__(self, layout: Layout, echelon: bool = False, position: str = "ordered"):
        if position not in POSITIONS:
            raise ValueError(f"position must be one of {', '.join(POSITIONS)}, got {position!r}")
        self.layout = layout
        self.echelon = echelon
        self.position_mode = position
        self.needs_confirmations = position == "confirmed"
        self.streams = st = streams_of(layout)
        lay = layout
        # component stock and on-order per stream
        self._slot_mat = np.zeros((lay.num_components, st.size))
        for k in np.flatnonzero(st.slot >= 0):
            self._slot_mat[st.slot[k], k] = 1.0
        self._node_mat = np.zeros((lay.num_nodes, st.size))
        self._node_mat[st.node, np.arange(st.size)] = st.bom
        self._share = lay.lane_share
        # echelon: units in transit on internal lane l count content[j, src_l] toward j,
        # and component stock at an assembling node counts toward its suppliers
        internal = ~lay.external
        self._transit_content = np.where(
            internal[None, :], lay.content[:, np.maximum(lay.lane_src, 0)], 0.0
        ).T  # [M, N]
        comp_lane = np.zeros((lay.num_lanes, lay.num_components))
        for m in np.flatnonzero(lay.lane_comp >= 0):
            comp_lane[m, lay.lane_comp[m]] = lay.lane_share[m]
        self._comp_content = comp_lane.T @ self._transit_content  # [C, N]
        depth = np.zeros(lay.num_nodes, int)
        for k in lay.topo_order[::-1]:
            kids = lay.lane_dst[lay.lane_src == k]
            depth[k] = 1 + depth[kids].max() if len(kids) else 0
        self._groups = [depth[lay.lane_dst] == d for d in range(depth.max() + 1)]
        # today's orders reach their source today only on lanes without an order lead time
        self._at_once = (lay.order_lead == 0).astype(float)
        self._has_lot = lay.lot_size > 0
        self._converted: dict[str, dict[str, Any]] = {}

    def _arrays(self, ops: NumpyOps) -> dict[str, Any]:
        """The matrices positions and orders use, in the namespace ``ops`` (cached)."""
        if ops.name not in self._converted:
            lay = self.layout
            arrays = {
                "content": lay.content.T,
                "transit_content": self._transit_content,
                "comp_content": self._comp_content,
                "src": lay.src_mat,
                "node": self._node_mat,
                "slot": self._slot_mat,
                "lane": self.streams.lane_mat,
                "to_lanes": self.streams.lane_mat.T,
                "share": self._share,
                "at_once": self._at_once,
                "lot": np.where(lay.lot_size > 0, lay.lot_size, 1.0),
            }
            self._converted[ops.name] = {k: ops.asarray(v) for k, v in arrays.items()}
        return self._converted[ops.name]

    def net(self, s: State, ops: NumpyOps = NUMPY) -> Any:
        """Net stock per node before today's downstream orders, ``[B, N]`` units."""
        a = self._arrays(ops)
        if self.echelon:
            return (
                (s.on_hand - s.backlog) @ a["content"]
                + s.in_transit @ a["transit_content"]
                + s.components @ a["comp_content"]
            )
        return s.on_hand - s.backlog - s.owed @ a["src"]

    def position(self, s: State, net: Any, ops: NumpyOps = NUMPY) -> Any:
        """Stream positions ``[B, K]`` (stream units) given node net stock ``[B, N]``."""
        a = self._arrays(ops)
        on_order = s.on_order
        if self.position_mode == "confirmed":
            if s.promised is None:
                raise ValueError(
                    'position = "confirmed" reads the suppliers\' confirmations: simulate '
                    "with Simulator(..., confirmations=True)"
                )
            on_order = on_order - s.owed + s.promised + s.arrived_orders
        pos = net @ a["node"] + on_order @ a["lane"]
        if self.layout.num_components:
            pos = pos + s.components @ a["slot"]
        return pos

    def decide(self, s: State, rule: Callable[[Any], Any], ops: NumpyOps = NUMPY) -> Any:
        """Lane orders ``[B, M]`` from ``rule(position [B, K]) -> stream orders [B, K]``;
        installation policies run downstream nodes first (see module doc). ``s`` and the
        rule's arrays live in the namespace ``ops`` (numpy, or torch for gradients)."""
        a = self._arrays(ops)
        net = self.net(s, ops)
        if self.echelon:
            return (rule(self.position(s, net, ops)) @ a["to_lanes"]) * a["share"]
        given = getattr(s, "given_orders", None)
        if given is None:
            orders = ops.zeros(tuple(s.owed.shape))
        else:  # per-organization mode: other organizations' released orders are inputs
            fixed = ~np.isnan(np.asarray(given))
            orders = ops.asarray(np.where(fixed, given, 0.0))
        for lanes in self._groups:
            today = net - (orders * a["at_once"]) @ a["src"]
            stream_orders = rule(self.position(s, today, ops))
            decided = lanes if given is None else lanes & ~fixed
            orders = ops.where(decided, (stream_orders @ a["to_lanes"]) * a["share"], orders)
        return orders

    def round_lots(self, orders: Any, ops: NumpyOps = NUMPY) -> Any:
        """Orders rounded up to whole lots on lanes with a lot size, and at least 0; on
        torch the rounding is straight-through (exact forward, identity backward)."""
        a = self._arrays(ops)
        has = self._has_lot
        rounded = ops.where(has, ops.ceil(orders / a["lot"] - 1e-9) * a["lot"], orders)
        return ops.maximum(ops.straight_through(rounded, orders), 0.0)

    def finish(self, orders: np.ndarray) -> Decision:
        return Decision(self.round_lots(orders))


class BaseStock(StreamPolicy):
    """Installation or echelon base-stock with ``levels [K]`` per stream."""

    def __init__(
        self,
        layout: Layout,
        levels: np.ndarray,
        echelon: bool = False,
        position: str = "ordered",
    ):
        super().__init__(layout, echelon, position)
        self.levels = stream_vector(layout, levels, self.streams)
        self.name = "echelon-base-stock" if echelon else "base-stock"

    def act(self, state: State) -> Decision:
        return self.finish(self.decide(state, lambda pos: np.maximum(self.levels - pos, 0.0)))


class SS(StreamPolicy):
    """(s, S): order up to ``S`` when the position is at or below ``s``."""

    name = "sS"

    def __init__(self, layout: Layout, s: np.ndarray, big_s: np.ndarray, position: str = "ordered"):
        super().__init__(layout, position=position)
        self.s = stream_vector(layout, s, self.streams)
        self.big_s = np.maximum(stream_vector(layout, big_s, self.streams), self.s)

    def act(self, state: State) -> Decision:
        return self.finish(
            self.decide(state, lambda pos: np.where(pos <= self.s, self.big_s - pos, 0.0))
        )


class SQ(StreamPolicy):
    """(s, Q): when the position is at or below ``s``, order ``n x Q`` to lift it above."""

    name = "sQ"

    def __init__(self, layout: Layout, s: np.ndarray, q: np.ndarray, position: str = "ordered"):
        super().__init__(layout, position=position)
        self.s = stream_vector(layout, s, self.streams)
        self.q = np.maximum(stream_vector(layout, q, self.streams), 1e-9)

    def act(self, state: State) -> Decision:
        def rule(pos: np.ndarray) -> np.ndarray:
            return np.where(pos <= self.s, (np.floor((self.s - pos) / self.q) + 1) * self.q, 0.0)

        return self.finish(self.decide(state, rule))


class MinStock(StreamPolicy):
    """Naive trigger: net on hand below ``min`` and nothing on order -> order ``quantity``."""

    name = "min-stock"

    def __init__(
        self,
        layout: Layout,
        minimum: np.ndarray,
        quantity: np.ndarray,
        position: str = "ordered",
    ):
        super().__init__(layout, position=position)
        self.minimum = stream_vector(layout, minimum, self.streams)
        self.quantity = stream_vector(layout, quantity, self.streams)

    def act(self, state: State) -> Decision:
        st = self.streams
        net_on_hand = (state.on_hand - state.backlog) @ self._node_mat
        if self.layout.num_components:
            net_on_hand = net_on_hand + state.components @ self._slot_mat
        nothing = state.on_order @ st.lane_mat <= 1e-9
        fire = (net_on_hand < self.minimum) & nothing
        orders = (np.where(fire, self.quantity, 0.0) @ st.lane_mat.T) * self._share
        return self.finish(orders)


# -- parameters --------------------------------------------------------------------------


def stream_vector(
    layout: Layout, values: np.ndarray | Mapping[str, Any], streams: Streams | None = None
) -> np.ndarray:
    """Per-stream vector from a ``[K]`` array, a ``[N]`` array (node units, scaled by
    the BOM for components) or a mapping ``{node: number | {item: number}}`` (missing
    nodes: 0)."""
    st = streams or streams_of(layout)
    if isinstance(values, Mapping):
        out = np.zeros(st.size)
        for key, val in values.items():
            if key not in layout.node_ids:
                raise ValueError(
                    f"unknown node {key!r} in policy parameters "
                    f"(known: {', '.join(layout.node_ids)})"
                )
            node = layout.node_ids.index(key)
            ks = np.flatnonzero(st.node == node)
            if isinstance(val, Mapping):
                for item, v in val.items():
                    match = [k for k in ks if st.item[k] == item]
                    if not match:
                        raise ValueError(
                            f"node {key!r} has no component {item!r}; its "
                            f"components: {[st.item[k] for k in ks] or 'none'}"
                        )
                    out[match[0]] = _number(v, f"{key}.{item}")
            else:
                out[ks] = st.bom[ks] * _number(val, key)
        return out
    arr = np.asarray(values, float)
    if arr.shape == (st.size,):
        return arr
    if arr.shape == (layout.num_nodes,):
        return arr[st.node] * st.bom
    raise ValueError(
        f"expected {st.size} stream values or {layout.num_nodes} node values, got shape {arr.shape}"
    )


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise ValueError(f"policy parameter {where!r} must be a finite number, got {value!r}")
    return float(value)


def params_from_streams(layout: Layout, **vectors: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per-node parameter tables (as ``--params`` takes them) from per-stream vectors."""
    st = streams_of(layout)
    out: dict[str, dict[str, Any]] = {}
    for name, vec in vectors.items():
        table: dict[str, Any] = {}
        for k in range(st.size):
            node = layout.node_ids[st.node[k]]
            if st.slot[k] < 0:
                table[node] = round(float(vec[k]), 4)
            else:
                table.setdefault(node, {})[st.item[k]] = round(float(vec[k]), 4)
        out[name] = table
    return out


def default_params(name: str, layout: Layout) -> dict[str, dict[str, Any]]:
    """Textbook parameters: levels at a 95% service factor (z = 1.645) on lead-time
    demand; (s,S): ``s`` that level and ``S = s + EOQ``; (s,Q): ``Q`` the EOQ; min-stock:
    ``min`` that level, ``quantity`` the EOQ."""
    if name not in POLICY_NAMES:
        raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICY_NAMES)}")
    level = formula_levels(layout, 1.645, echelon=name == "echelon-base-stock")
    return params_from_level_and_quantity(name, layout, level, eoq(layout))


def params_from_level_and_quantity(
    name: str, layout: Layout, level: np.ndarray, quantity: np.ndarray
) -> dict[str, dict[str, Any]]:
    """Per-node parameters of policy ``name`` from two stream vectors (units): a
    ``level`` (base-stock: the order-up-to level; (s,S), (s,Q): the reorder point ``s``;
    min-stock: ``min``) and an order ``quantity`` ((s,S): ``S = s + quantity``; (s,Q):
    ``Q``; min-stock: ``quantity``; unused by base-stock). The one place that knows each
    policy's parameter names."""
    match name:
        case "base-stock" | "echelon-base-stock":
            return params_from_streams(layout, levels=level)
        case "sS":
            return params_from_streams(layout, s=level, S=level + quantity)
        case "sQ":
            return params_from_streams(layout, s=level, Q=quantity)
        case "min-stock":
            return params_from_streams(layout, min=level, quantity=quantity)
    raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICY_NAMES)}")


def make_policy(name: str, layout: Layout, params: Mapping[str, Any] | None = None) -> Policy:
    """Build a classical policy by name; parameters missing from ``params`` (whole tables
    or single nodes) take their :func:`default_params` value."""
    defaults = default_params(name, layout)
    params = dict(params or {})
    position = params.pop("position", "ordered")
    unknown = set(params) - set(PARAMETER_NAMES[name])
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {sorted(unknown)} for policy {name!r}; "
            f"expected {list(PARAMETER_NAMES[name])} (and the option 'position')"
        )
    if position not in POSITIONS:
        raise ValueError(
            f"parameter 'position' must be one of {', '.join(map(repr, POSITIONS))}, "
            f"got {position!r}"
        )
    st = streams_of(layout)
    vec = {}
    for key in PARAMETER_NAMES[name]:
        given = params.get(key) or {}
        if not isinstance(given, Mapping):
            raise ValueError(f"parameter {key!r} must be a table {{node: value}}")
        vec[key] = stream_vector(layout, {**defaults[key], **given}, st)
    match name:
        case "base-stock":
            return BaseStock(layout, vec["levels"], position=position)
        case "echelon-base-stock":
            return BaseStock(layout, vec["levels"], echelon=True, position=position)
        case "sS":
            return SS(layout, vec["s"], vec["S"], position)
        case "sQ":
            return SQ(layout, vec["s"], vec["Q"], position)
    return MinStock(layout, vec["min"], vec["quantity"], position)
