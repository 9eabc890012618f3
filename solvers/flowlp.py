"""A linear network-flow model of ``K`` simulated days, shared by the rolling-horizon LP
policy (:mod:`solvers.rolling`) and the perfect-information bound (:mod:`solvers.bound`).

Variables per day ``k`` (all >= 0, units): new orders ``o[k, l]``, shipments
``s[k, l]`` (within transport capacity), orders still owed ``w[k, l]``, end-of-day on
hand ``h[k, i]``, customer sales ``q[k, i]`` and backlog ``b[k, i]`` (or lost sales),
component stock ``c[k, j]``, assembly ``a[k, i]`` (within capacity) and lateral
transfers ``t[k, x]``. The day follows the simulator (docs/model.md): shipments placed
on day ``k`` with lead time ``L[k, l]`` arrive on day ``k + L``; arrivals and assembly
come before sales; everything not sold or shipped stays on hand.

    w[k]  = w[k-1] + o[k] - s[k]                       (what upstream still owes)
    h[k]  = h[k-1] + arrivals[k] + a[k] - q[k] - out-shipments[k] - transfers out[k]
            + transfers landing[k]
    b[k]  = b[k-1] + d[k] - q[k]       (lost sales: lost[k] = d[k] - q[k])
    c[k]  = c[k-1] + component arrivals[k] - bom x a[k]
    sum of external shipments into a supplier <= capacity x f     (production)
    sum of shipments out of a node <= capacity x f                (shipping nodes, and any
                                                                   node in an outage)

Cost (days with weight 1): holding on ``h``, ``c`` and units in transit, backorder or
lost-sale penalty, the owing node's penalty on internal owed orders, external purchase
and shipping cost on orders, transfer cost -- the simulator's ``total_cost`` without the
fixed ordering cost (a relaxation: it needs binaries). Budgets, storage, lot sizes and
contracts are not physics in the simulator (they are counted, not enforced) and are left
out. Quantities are continuous. Solved with HiGHS (highspy), matrix built in numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedinv.model.layout import OUTPUT_PRODUCTION, OUTPUT_SHIPPING, Layout, capacity_times
from fedinv.policies.projector import SolverError


@dataclass
class FlowInputs:
    """Data of one replication over ``K`` days (arrays ``[K, ...]``)."""

    demand: np.ndarray  # [K, N] units (0 at non-customer nodes)
    lead: np.ndarray  # [K, M] int days >= 1, lead time of a shipment placed that day
    node_factor: np.ndarray  # [K, N] capacity fraction
    lane_factor: np.ndarray  # [K, M] transport-capacity fraction
    weight: np.ndarray  # [K] 1 for days whose cost counts, 0 otherwise
    on_hand: np.ndarray  # [N] before day 0's events (or after, see day0_events)
    components: np.ndarray  # [C]
    backlog: np.ndarray  # [N]
    owed: np.ndarray  # [M]
    arrivals: np.ndarray  # [K, M] units already shipped that land on day k
    transfers_landing: np.ndarray  # [K, N] units of earlier transfers landing on day k
    day0_events: bool = True
    """True: day 0 has arrivals, assembly and demand (the bound, from the initial state);
    False: day 0's demand is past, only its orders and shipments are planned (rolling)."""
    floor: np.ndarray | None = None
    """[K, N] safety-stock targets (units): end-of-day on hand below them costs
    ``floor_penalty`` per unit-day (the rolling LP's buffer; None: none)."""
    floor_penalty: np.ndarray | None = None  # [N] $ per unit-day below the floor
    order_open: np.ndarray | None = None
    """[K, M] bool: False where no order may be placed (an order calendar; None: all
    days open)."""
    order_rows: np.ndarray | None = None
    """[R, M] coefficients of per-day limits on *orders* (the safety layer's production,
    shipping and assembly rows); None: none."""
    order_cap: np.ndarray | None = None  # [K, R] their right-hand sides (units/day)
    length: np.ndarray | None = None
    """[K] days each period stands for (None: every period one day; see
    :func:`aggregate`): holding, backlog and owed-order costs, transit days and every
    capacity (transport, production, shipping, assembly, transfers, order limits) are
    per day and scale by it; demand, arrivals and lead times (in periods) are the
    period's already."""


@dataclass
class FlowSolution:
    orders: np.ndarray  # [K, M]
    shipments: np.ndarray  # [K, M]
    transfers: np.ndarray  # [K, T]
    cost: float  # $ over the weighted days
    status: str


class _Vars:
    def __init__(self) -> None:
        self.n = 0
        self.lo: list[np.ndarray] = []
        self.hi: list[np.ndarray] = []
        self.cost: list[np.ndarray] = []

    def add(
        self,
        shape: tuple[int, ...],
        hi: np.ndarray | float = np.inf,
        cost: np.ndarray | float = 0.0,
    ) -> np.ndarray:
        size = int(np.prod(shape))
        idx = np.arange(self.n, self.n + size).reshape(shape)
        self.n += size
        self.lo.append(np.zeros(size))
        self.hi.append(np.broadcast_to(np.asarray(hi, float), shape).ravel().copy())
        self.cost.append(np.broadcast_to(np.asarray(cost, float), shape).ravel().copy())
        return idx


class _Rows:
    def __init__(self) -> None:
        self.n = 0
        self.ri: list[np.ndarray] = []
        self.ci: list[np.ndarray] = []
        self.v: list[np.ndarray] = []
        self.lo: list[np.ndarray] = []
        self.hi: list[np.ndarray] = []

    def add(
        self, shape: tuple[int, ...], lo: np.ndarray | float, hi: np.ndarray | float
    ) -> np.ndarray:
        size = int(np.prod(shape))
        idx = np.arange(self.n, self.n + size).reshape(shape)
        self.n += size
        self.lo.append(np.broadcast_to(np.asarray(lo, float), shape).ravel().copy())
        self.hi.append(np.broadcast_to(np.asarray(hi, float), shape).ravel().copy())
        return idx

    def coef(self, rows: np.ndarray, cols: np.ndarray, val: np.ndarray | float) -> None:
        rows, cols, val = np.broadcast_arrays(rows, cols, np.asarray(val, float))
        keep = val != 0
        self.ri.append(rows[keep].ravel())
        self.ci.append(cols[keep].ravel())
        self.v.append(val[keep].ravel())


@dataclass
class FlowModel:
    """The flow LP of one :class:`FlowInputs`, as arrays: columns (bounds, costs), rows
    (bounds, coordinate entries) and the column indices of each variable block ``[K, ...]``
    (``c``, ``a``, ``tr``: None where the layout has none)."""

    var: _Vars
    row: _Rows
    o: np.ndarray
    s: np.ndarray
    ow: np.ndarray
    h: np.ndarray
    q: np.ndarray
    b: np.ndarray
    c: np.ndarray | None
    a: np.ndarray | None
    tr: np.ndarray | None
    land: np.ndarray  # [K, M] plan day a shipment placed on day k lands (>= K: after)
    demand_rows: np.ndarray | None = None  # [K, customers] rows whose bounds are demand


def solve_flow(
    layout: Layout, data: FlowInputs, lost_sales: bool = False, time_limit: float = 600.0
) -> FlowSolution:
    """Build and solve the flow LP of ``data``; :class:`SolverError` unless optimal."""
    fm = build_flow(layout, data, lost_sales)
    return _solve(
        fm.var,
        fm.row,
        fm.o,
        fm.s,
        fm.tr,
        data.demand.shape[0],
        layout.num_lanes,
        layout.num_transfers,
        time_limit,
    )


def build_flow(
    layout: Layout,
    data: FlowInputs,
    lost_sales: bool = False,
    fixed_structure: bool = False,
) -> FlowModel:
    """The flow LP of ``data`` as arrays (nothing solved). ``fixed_structure``: the rows
    and nonzeros depend on the layout and ``data.lead`` only, not on capacity factors
    (a capacity row for every node that could bind, with an infinite bound where it does
    not), so that a model built once can be updated in place through its bounds."""
    lay = layout
    k_days = data.demand.shape[0]
    n, m, nc = lay.num_nodes, lay.num_lanes, lay.num_components
    t_links = lay.num_transfers
    w = np.asarray(data.weight, float)
    span = np.ones(k_days) if data.length is None else np.asarray(data.length, float)
    ws = w * span  # day-weights of the per-day costs of each period
    days = np.arange(k_days)
    cust = np.flatnonzero(lay.customer)
    bom_nodes = lay.bom_nodes
    internal = ~lay.external
    var, row = _Vars(), _Rows()

    # costs
    ext_cost = np.where(lay.external, lay.price, 0.0) + lay.shipping_cost
    lead = np.maximum(np.asarray(data.lead, int), 1)
    cum = np.concatenate([[0.0], np.cumsum(ws)])
    end = np.minimum(days[:, None] + lead, k_days)  # in transit at end of days k..k+L-1
    transit_days = cum[end] - cum[days][:, None]
    owed_pen = np.where(internal, lay.penalty[np.maximum(lay.lane_src, 0)], 0.0)

    o_hi = np.inf if data.order_open is None else np.where(data.order_open, np.inf, 0.0)
    o = var.add((k_days, m), hi=o_hi, cost=w[:, None] * ext_cost)
    s = var.add(
        (k_days, m),
        hi=capacity_times(lay.transport_cap, data.lane_factor) * span[:, None],
        cost=transit_days * lay.transit_holding,
    )
    ow = var.add((k_days, m), cost=ws[:, None] * owed_pen)
    h = var.add((k_days, n), cost=ws[:, None] * lay.holding)
    q_hi = np.full((k_days, len(cust)), np.inf)
    if not data.day0_events:
        q_hi[0] = 0.0
    q = var.add((k_days, len(cust)), hi=q_hi)
    b = var.add((k_days, len(cust)), cost=ws[:, None] * lay.penalty[cust])
    c = var.add((k_days, nc), cost=ws[:, None] * lay.comp_holding) if nc else None
    a = None
    if len(bom_nodes):
        a_hi = capacity_times(lay.capacity[bom_nodes], data.node_factor[:, bom_nodes])
        a_hi = a_hi * span[:, None]
        if not data.day0_events:
            a_hi[0] = 0.0
        a = var.add((k_days, len(bom_nodes)), hi=a_hi)
    tr = None
    if t_links:
        t_lead = _periods_ahead(span, lay.transfer_lead)  # [K, T] periods
        t_end = np.minimum(days[:, None] + t_lead, k_days)
        t_transit = cum[t_end] - cum[days][:, None]
        tr = var.add(
            (k_days, t_links),
            hi=lay.transfer_cap * span[:, None],
            cost=w[:, None] * lay.transfer_cost + t_transit * lay.holding[lay.transfer_src],
        )

    # per-day limits on orders (the safety layer's rows): sum_l a[r, l] o[k, l] <= cap[k, r]
    if data.order_rows is not None and len(data.order_rows):
        a_rows = np.asarray(data.order_rows, float)
        ro = row.add((k_days, a_rows.shape[0]), -np.inf, data.order_cap * span[:, None])
        rr, ll = np.nonzero(a_rows)
        row.coef(ro[:, rr], o[:, ll], a_rows[rr, ll][None, :])

    # safety-stock floors: h[k] + short[k] >= floor[k]
    if data.floor is not None:
        fl = np.asarray(data.floor, float)
        at = np.flatnonzero((fl > 0).any(axis=0))
        if len(at):
            short = var.add((k_days, len(at)), cost=ws[:, None] * data.floor_penalty[at])
            rf = row.add((k_days, len(at)), fl[:, at], np.inf)
            row.coef(rf, h[:, at], 1.0)
            row.coef(rf, short, 1.0)

    # owed: w[k] - w[k-1] - o[k] + s[k] = owed0 (k = 0)
    r = row.add(
        (k_days, m),
        np.where(days[:, None] == 0, data.owed, 0.0),
        np.where(days[:, None] == 0, data.owed, 0.0),
    )
    row.coef(r, ow, 1.0)
    row.coef(r[1:], ow[:-1], -1.0)
    row.coef(r, o, -1.0)
    row.coef(r, s, 1.0)

    # node balance: h[k] - h[k-1] - arrivals - assembly + sales + out + transfers out
    #               - transfers landing = pre-arrivals (+ h0 on day 0)
    feeds_stock = lay.lane_comp < 0
    pre = data.arrivals[:, feeds_stock] @ lay.dst_mat[feeds_stock]
    rhs = pre + data.transfers_landing
    rhs[0] += data.on_hand
    rn = row.add((k_days, n), rhs, rhs)
    row.coef(rn, h, 1.0)
    row.coef(rn[1:], h[:-1], -1.0)
    row.coef(rn[:, cust], q, 1.0)
    src = np.maximum(lay.lane_src, 0)
    row.coef(rn[:, src[internal]], s[:, internal], 1.0)
    kk, ll = np.meshgrid(days, np.arange(m), indexing="ij")
    land = kk + lead
    ok = land < k_days
    stock_lane = ok & feeds_stock[None, :]
    row.coef(
        rn[land[stock_lane], lay.lane_dst[ll[stock_lane]]], s[kk[stock_lane], ll[stock_lane]], -1.0
    )
    if a is not None:
        row.coef(rn[:, bom_nodes], a, -1.0)
    if tr is not None:
        row.coef(rn[:, lay.transfer_src], tr, 1.0)
        tk, tx = np.meshgrid(days, np.arange(t_links), indexing="ij")
        tland = tk + t_lead
        tok = tland < k_days
        row.coef(rn[tland[tok], lay.transfer_dst[tx[tok]]], tr[tk[tok], tx[tok]], -1.0)

    # customers: backlog (or lost) + sales = demand (+ backlog0 on day 0)
    d = data.demand[:, cust].copy()
    if not data.day0_events:
        d[0] = 0.0
    d[0] += data.backlog[cust]
    rb = row.add((k_days, len(cust)), d, d)
    row.coef(rb, b, 1.0)
    row.coef(rb, q, 1.0)
    if not lost_sales:
        row.coef(rb[1:], b[:-1], -1.0)

    # components: c[k] - c[k-1] - arrivals + bom a = pre-arrivals (+ c0 on day 0)
    if c is not None:
        comp_lane = ~feeds_stock
        comp_mat = np.zeros((m, nc))
        comp_mat[np.flatnonzero(comp_lane), lay.lane_comp[comp_lane]] = 1.0
        crhs = data.arrivals @ comp_mat
        crhs[0] += data.components
        rc = row.add((k_days, nc), crhs, crhs)
        row.coef(rc, c, 1.0)
        row.coef(rc[1:], c[:-1], -1.0)
        cl = ok & comp_lane[None, :]
        row.coef(rc[land[cl], lay.lane_comp[ll[cl]]], s[kk[cl], ll[cl]], -1.0)
        if a is not None:
            slot_of = np.searchsorted(bom_nodes, lay.comp_node)
            row.coef(rc, a[:, slot_of], lay.comp_bom)

    # production: external shipments into a supplier <= capacity x f
    prod = np.flatnonzero(
        (lay.output_kind == OUTPUT_PRODUCTION)
        & (np.isfinite(lay.capacity) | (data.node_factor == 0).any(axis=0) | fixed_structure)
    )
    if len(prod):
        cap = capacity_times(lay.capacity[prod], data.node_factor[:, prod]) * span[:, None]
        rp = row.add((k_days, len(prod)), -np.inf, cap)
        for j, i in enumerate(prod):
            lanes_i = np.flatnonzero(lay.external & (lay.lane_dst == i))
            row.coef(rp[:, j][:, None], s[:, lanes_i], 1.0)
    # output: shipments out of a node <= capacity x f (shipping nodes; any node in outage)
    f = data.node_factor
    out_cap = np.where(
        (lay.output_kind == OUTPUT_SHIPPING) | (f < 1.0),
        capacity_times(lay.capacity, f) * span[:, None],
        np.inf,
    )
    has_out = np.array([(internal & (lay.lane_src == i)).any() for i in range(n)])
    limited = np.flatnonzero((np.isfinite(out_cap).any(axis=0) | fixed_structure) & has_out)
    if len(limited):
        ro = row.add((k_days, len(limited)), -np.inf, out_cap[:, limited])
        for j, i in enumerate(limited):
            lanes_i = np.flatnonzero(internal & (lay.lane_src == i))
            row.coef(ro[:, j][:, None], s[:, lanes_i], 1.0)

    return FlowModel(var, row, o, s, ow, h, q, b, c, a, tr, land, rb)


def _periods_ahead(length: np.ndarray, lead_days: np.ndarray) -> np.ndarray:
    """``[K, X]`` periods from each period ``k`` to the one that holds day
    ``start[k] + lead_days`` (``lead_days`` ``[X]`` or ``[K, X]`` days; periods of
    ``length [K]`` days; a landing day after the plan counts in 1-day periods past its
    end); at least 1."""
    span = np.asarray(length, int)
    k_days = len(span)
    start = np.concatenate([[0], np.cumsum(span)[:-1]])
    total = int(span.sum())
    day = start[:, None] + np.asarray(lead_days, int)  # [K, X] landing days
    inside = np.searchsorted(start, np.minimum(day, total - 1), side="right") - 1
    period = np.where(day < total, inside, k_days + day - total)
    return np.maximum(period - np.arange(k_days)[:, None], 1)


def bucket_lengths(days: int, daily: int, bucket: int) -> np.ndarray:
    """``[K]`` period lengths (days) of a ``days``-day plan: ``daily`` periods of one day,
    then periods of ``bucket`` days (the last one shorter where ``days`` ends inside it)."""
    daily = min(int(daily), int(days))
    rest = int(days) - daily
    tail = [bucket] * (rest // bucket) + ([rest % bucket] if rest % bucket else [])
    return np.array([1] * daily + tail, int)


def aggregate(data: FlowInputs, length: np.ndarray) -> FlowInputs:
    """The daily ``data`` (``K = length.sum()`` days) in periods of ``length [P]`` days:
    demand, arrivals and transfers landing summed over each period; capacity factors,
    order-limit right-hand sides, safety floors and weights averaged (the model scales
    the per-day capacities and costs by the length); a period may order if any of its
    days may; a shipment placed in period ``p`` carries the lead time drawn for the
    period's first day and lands in the period holding its landing day (periods after
    the plan's end count one day each) -- within a period, a unit landing on its last
    day serves the period's demand from its first (the approximation of the later,
    bucketed days)."""
    length = np.asarray(length, int)
    k_days = int(length.sum())
    if data.demand.shape[0] != k_days or (length < 1).any():
        raise ValueError(f"period lengths must be >= 1 and sum to {data.demand.shape[0]} days")
    start = np.concatenate([[0], np.cumsum(length)[:-1]])

    def total(x):
        return None if x is None else np.add.reduceat(np.asarray(x, float), start, axis=0)

    def mean(x):
        if x is None:
            return None
        y = total(x)
        return y / length.reshape((-1,) + (1,) * (y.ndim - 1))

    lead = np.asarray(data.lead, int)[start]  # [P, M] days from each period's first day
    return FlowInputs(
        demand=total(data.demand),
        lead=_periods_ahead(length, lead),
        node_factor=mean(data.node_factor),
        lane_factor=mean(data.lane_factor),
        weight=mean(data.weight),
        on_hand=data.on_hand,
        components=data.components,
        backlog=data.backlog,
        owed=data.owed,
        arrivals=total(data.arrivals),
        transfers_landing=total(data.transfers_landing),
        day0_events=data.day0_events,
        floor=mean(data.floor),
        floor_penalty=data.floor_penalty,
        order_open=None if data.order_open is None else total(data.order_open) > 0,
        order_rows=data.order_rows,
        order_cap=mean(data.order_cap),
        length=length.astype(float),
    )


def _solve(var: _Vars, row: _Rows, o, s, tr, k_days, m, t_links, time_limit) -> FlowSolution:
    try:
        import highspy
    except ImportError as exc:
        raise SolverError(f"highspy is not installed: {exc}") from None
    from solvers.highs import quiet_stdout

    ncol = var.n
    lo, hi, cost = (np.concatenate(x) for x in (var.lo, var.hi, var.cost))
    rows = np.concatenate(row.ri)
    cols = np.concatenate(row.ci)
    vals = np.concatenate(row.v)
    order = np.lexsort((cols, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    starts = np.searchsorted(rows, np.arange(row.n)).astype(np.int32)
    with quiet_stdout():
        h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(time_limit))
    h.addVars(ncol, lo, hi)
    h.changeColsCost(ncol, np.arange(ncol, dtype=np.int32), cost)
    h.addRows(
        row.n,
        np.concatenate(row.lo),
        np.concatenate(row.hi),
        len(vals),
        starts,
        cols.astype(np.int32),
        vals,
    )
    h.run()
    status = h.getModelStatus()
    if status != highspy.HighsModelStatus.kOptimal:
        raise SolverError(f"flow LP: HiGHS status {h.modelStatusToString(status)}")
    x = np.asarray(h.getSolution().col_value)
    return FlowSolution(
        orders=x[o],
        shipments=x[s],
        transfers=x[tr] if tr is not None else np.zeros((k_days, 0)),
        cost=float(h.getInfo().objective_function_value),
        status="optimal",
    )
