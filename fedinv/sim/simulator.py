"""The day of docs/model.md, vectorized over nodes and a batch of replications, written
once for numpy and torch.

The day is a pure transition on explicit state, in the shape of Gymnasium's functional
env: :meth:`Simulator.initial` (steps 1-4 of day 0), :meth:`Simulator.step` = evening
(steps 5-7 of today: release, ship, costs) + morning (steps 1-4 of tomorrow), costs in the
day's record. Every random number was drawn up front (:mod:`fedinv.sim.exogenous`), so a
step is a deterministic function of state and orders. The code is written against the
array namespace of :mod:`fedinv.sim.ops`: on :data:`~fedinv.sim.ops.NUMPY` it is the
simulator; on :func:`~fedinv.sim.ops.torch_ops` the same lines run on float64 tensors and
autograd differentiates a replication's cost with respect to the orders (the HDPO
learner). A step never modifies the state it is given: it returns a new one.

One day, in order:
  1. shipments due today arrive (pipeline) and lateral transfers land; orders whose
     order lead time ends today reach their source and are owed from now on;
  2. manufacturers with a bill of materials assemble, up to capacity (an outage cuts it);
  3. customer demand is filled from on hand, backorders first; unmet demand is
     backordered (or lost, under ``lost_sales``);
  4. (see 6) every node fills the orders it owes downstream;
  5. the policy observes the state and proposes orders (and lateral transfers);
  6. released orders are received by the upstream node (an external vendor for
     ``external`` lanes) at once -- or, on a lane with an order lead time ``d``, on the
     morning of day ``t + d`` (step 1) --, and each node then fills everything it owes, from its
     on hand, within its output capacity and each lane's transport capacity, rationing a
     short supply in proportion to what each lane is owed; what it cannot ship stays
     owed (an internal backorder, filled first later). A shipment with lead time ``L``
     arrives at the start of day ``t + L``. Violations of capacity, transport, lot size,
     storage, budget and contract by released orders are counted, never dropped.
     Lateral transfers leave the sender's on hand at once;
  7. costs accrue on end-of-day state.

Orders are filled in the same end-of-day moment they are released (step 4 of docs/design.md
run right after step 6): the textbook timing (Snyder & Shen; Zipkin), under which an
order placed at the end of day ``t`` on a lane of lead time ``L`` arrives at the start
of day ``t + L``, and a serial system under echelon base-stock reproduces the
Clark-Scarf cost exactly. Filling yesterday's orders before today's demand instead
would add one day to every link's lead time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from fedinv.model.layout import (
    OUTPUT_PRODUCTION,
    OUTPUT_SHIPPING,
    Layout,
    capacity_times,
    compile_layout,
)
from fedinv.model.network import Scenario
from fedinv.sim.exogenous import (
    Exogenous,
    check_memory,
    draw_exogenous,
    exogenous_bytes_per_day,
)
from fedinv.sim.ops import NUMPY, NumpyOps, Smoothing

_EPS = 1e-9
CONFIRM_DAYS = 28
"""Days ahead a source projects its shipping when it confirms an order (the Supplier
Interface)."""


@dataclass
class State:
    """Everything that changes, for a batch of ``B`` replications (units unless said)."""

    day: int
    on_hand: np.ndarray  # [B, N] finished items
    components: np.ndarray  # [B, C] component stock of BOM nodes
    backlog: np.ndarray  # [B, N] customer backorders
    owed: np.ndarray  # [B, M] ordered on a lane, not yet shipped
    pipeline: np.ndarray  # [B, M, P] in transit, slot = arrival day % P
    order_pipeline: np.ndarray  # [B, M, Q] released, not yet at the source, slot = day % Q
    transfer_pipeline: np.ndarray  # [B, T, P]
    month_spend: np.ndarray  # [B, O] $ spent this calendar month
    month_ordered: np.ndarray  # [B, M] units ordered this calendar month
    # What happened at steps 1-4 of ``day`` (for observation and records):
    demand: np.ndarray  # [B, N]
    filled: np.ndarray  # [B, N] of today's demand, filled today
    sold: np.ndarray  # [B, N] units delivered to customers (backorders included)
    lost: np.ndarray  # [B, N] demand lost today (lost sales)
    shipped: np.ndarray  # [B, M] units shipped on each lane today
    last_orders: np.ndarray  # [B, M] orders released yesterday
    last_received: np.ndarray  # [B, M] orders that reached the lane's source yesterday
    arrived_orders: np.ndarray  # [B, M] orders that reached the source this morning
    # What nodes know today about disruptions and the calendar:
    alert: np.ndarray  # [B, M] 1 where the lane's supply is in an announced outage
    delay_notice: np.ndarray  # [B, M] extra transit days announced today on the lane
    month_end: bool = False  # today is the last day of a calendar month
    weekday: int = 0  # 0 = Monday
    day_of_year: int = 1
    # What the destinations know of their shipments in transit (docs/model.md, "What a
    # node knows of its shipments"); ``None`` where it is the truth (no delay is ever
    # announced later than the first morning after shipping):
    # The Supplier Interface: each source's confirmation, at the end of the day, of the
    # order it received that day on each lane (docs/model.md, "Confirmations"); seen by
    # the ordering node the next day (``None`` unless ``Simulator.confirmations``):
    confirmed: np.ndarray | None = None  # [B, M] units of that order confirmed
    confirm_days: np.ndarray | None = None  # [B, M] days after that day they ship by
    promised: np.ndarray | None = None  # [B, M] units of all the lane owes it confirms
    promise_days: np.ndarray | None = None  # [B, M] days until the lane's open amount ships
    sent: np.ndarray | None = None  # [B, M, P] shipped, slot = ship day % P (late-notice lanes)
    eta_pipeline: np.ndarray | None = None  # [B, M, P] in transit, slot = known arrival day % P
    given_orders: np.ndarray | None = None
    """``[B, M]`` orders other organizations released today on lanes this view's nodes
    supply (per-organization information mode, :mod:`fedinv.policies.perorg`), NaN on
    the lanes the policy decides; None (the network-wide mode): the policy decides all."""

    def copy(self) -> State:
        """A deep copy (numpy arrays copied, tensors cloned)."""
        return State(**{f.name: _copy(getattr(self, f.name)) for f in fields(self)})

    def to(self, ops: NumpyOps) -> State:
        """The same state in the namespace ``ops`` (numpy -> torch tensors, or a torch
        state -> a detached numpy copy)."""
        return State(
            **{
                f.name: (ops.asarray(v) if _is_array(v := getattr(self, f.name)) else v)
                for f in fields(self)
            }
        )

    @property
    def known_pipeline(self) -> np.ndarray:
        """In transit per lane by the arrival day its destination knows, ``[B, M, P]``,
        slot = known arrival day % P: the carrier's ETA (ship day + the lane's lead time
        without the extra delays not yet announced), the true arrival day once the delay
        notice came, and tomorrow for a shipment past its known ETA that has not arrived.
        Every policy reads arrival days from here, never from :attr:`pipeline` (the true
        arrival days); per lane the totals are the same (:attr:`in_transit`)."""
        return self.pipeline if self.eta_pipeline is None else self.eta_pipeline

    @property
    def in_transit(self) -> np.ndarray:
        """Units in transit per lane, ``[B, M]``."""
        return self.pipeline.sum(axis=2)

    @property
    def on_order(self) -> np.ndarray:
        """Units ordered and not yet received per lane (on their way to the source,
        owed, in transit), ``[B, M]``."""
        if self.order_pipeline.shape[2] > 1:
            return self.owed + self.in_transit + self.order_pipeline.sum(axis=2)
        return self.owed + self.in_transit


def _is_array(v: Any) -> bool:
    return isinstance(v, np.ndarray) or hasattr(v, "detach")


def _copy(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.copy()
    return v.clone() if hasattr(v, "detach") else v


@dataclass
class Decision:
    """What a policy proposes for one day: ``orders [B, M]`` units per lane, and
    optionally ``transfers [B, T]`` units per lateral link."""

    orders: np.ndarray
    transfers: np.ndarray | None = None
    info: dict[str, Any] | None = None
    """Diagnostics of the decision: ``[B]`` arrays per replication (e.g. projection
    distance, solve ms; ``fedinv.sim.run.run_records`` records them) and other objects (e.g.
    the safety layer's ``relaxation_log``)."""


RECORD_FIELDS = (
    "on_hand",
    "backlog",
    "demand",
    "filled",
    "sold",
    "lost",
    "ordered",
    "orders_received",
    "shipped",
    "internal_shortfall",
    "in_transit",
    "inventory_value",
    "holding_cost",
    "penalty_cost",
    "purchase_cost",
    "external_purchase_cost",
    "shipping_cost",
    "ordering_cost",
    "transfer_cost",
    "transferred",
    "total_cost",
    "capacity_violation",
    "transport_violation",
    "lot_violation",
    "storage_violation",
    "contract_violation",
    "budget_violation",
    "violations",
)
"""Per node and day, in units or $; ``transferred`` (units the node sent on lateral
links), ``budget_violation`` ($ over the organization's
monthly budget, charged to the ordering node), ``violations`` (count of violated
constraints by released orders that day)."""


class Simulator:
    """A compiled scenario that steps batches of replications, on numpy or (for gradients)
    torch: the day is written once against :mod:`fedinv.sim.ops`."""

    def __init__(self, scenario: Scenario, days: int | None = None, confirmations: bool = False):
        """``confirmations``: run the Supplier Interface's step (docs/model.md,
        "Confirmations"; off by default: nothing in a default run reads it, and it more
        than doubles the day's time at batch 256). A policy that reads it has
        ``needs_confirmations`` true, and :func:`fedinv.sim.run.run_records` and
        :func:`~fedinv.sim.run.mean_cost_per_day` switch it on for it."""
        self.scenario = scenario
        self.confirmations = bool(confirmations)
        self.days = int(days or scenario.horizon_days)
        if days:
            self._days_field = "days"
        else:
            where = scenario.source.removeprefix("builtin:") or scenario.name
            self._days_field = f"horizon_days (scenario {where})"
        extra = max([d.max_days for d in scenario.delays] + [0])
        if scenario.lead_shifts:  # room for a drifted lane's longest lead time
            lanes = scenario.network.lane_index
            longest = max([ln.lead_time.support_max for ln in scenario.network.lanes] + [1])
            delays = extra
            for shift in scenario.lead_shifts:
                law = scenario.network.lanes[lanes[shift.lane]].lead_time
                stretched = math.ceil(shift.factor * law.support_max - 1e-9)
                extra = max(extra, stretched + delays - longest)
        self.layout: Layout = compile_layout(scenario.network, extra)
        lay = self.layout
        self.pipeline_len = lay.max_lead + 1
        self.order_len = int(lay.order_lead.max(initial=0)) + 1
        self.transfer_len = int(max(lay.transfer_lead.max(initial=1), 1)) + 1
        self.confirm_len = CONFIRM_DAYS
        # lanes into a node that ships on some lane: what its confirmations project
        self._feed = np.flatnonzero(lay.src_mat.sum(axis=0)[lay.lane_dst] > 0)
        self._lead_mean = np.array(  # [M] whole days, for the promised replenishments
            [max(1, int(round(ln.lead_time.mean_days))) for ln in scenario.network.lanes]
        )
        self._comp_starts = lay.comp_starts
        self._order_lead = lay.order_lead
        self._transfer_lead = lay.transfer_lead
        # lanes with a delay announced after the first morning following the shipment:
        # there the known arrival days differ from the true ones for a while
        lane_idx = scenario.network.lane_index
        self._late_notice = np.zeros(lay.num_lanes, bool)
        for d in scenario.delays:
            if d.notice_lag_days >= 2 and d.probability > 0:
                self._late_notice[lane_idx[d.lane]] = True
        self.check_memory(1)
        self._const_numpy = _constants(lay)
        self._const: dict[str, dict[str, Any]] = {NUMPY.name: self._const_numpy}

    def constants(self, ops: NumpyOps = NUMPY) -> dict[str, Any]:
        """The layout's arrays the day reads, in the namespace ``ops`` (converted once)."""
        if ops.name not in self._const:
            self._const[ops.name] = {
                k: (ops.mask(v) if v.dtype == bool else ops.asarray(v))
                for k, v in self._const_numpy.items()
            }
        return self._const[ops.name]

    def memory_bytes(self, replications: int) -> tuple[int, int]:
        """Estimated bytes to simulate ``replications`` over :attr:`days` and keep each
        day's record (as :func:`fedinv.sim.run.simulate` does): ``(total, per
        replication-day)``."""
        lay = self.layout
        per_day = exogenous_bytes_per_day(self.scenario, lay) + 8 * len(RECORD_FIELDS) * (
            lay.num_nodes
        )
        rings = 3 if self._late_notice.any() else 1  # + the ship-day and known rings
        per_rep = 8 * (
            lay.num_lanes * (rings * self.pipeline_len + self.order_len + 12)
            + lay.num_transfers * self.transfer_len
            + 12 * lay.num_nodes
        )
        return replications * (self.days * per_day + per_rep), per_day

    def check_memory(self, replications: int) -> None:
        """Refuse (``ValueError`` naming the field that set the days, the estimate and
        the limit) a batch that would not fit in this machine's memory."""
        need, per_day = self.memory_bytes(replications)
        check_memory(need, per_day, replications, self.days, self._days_field)

    # -- episode -------------------------------------------------------------------------

    def reset(
        self, replications: Sequence[int] | int = 1, exogenous: Exogenous | None = None
    ) -> tuple[State, Exogenous]:
        """Start ``replications`` (a count ``R`` means indices ``0..R-1``) and run steps
        1-4 of day 0. Returns the (numpy) state and the batch's pre-drawn random streams;
        ``state.to(ops)`` converts the state to another namespace."""
        if isinstance(replications, int):
            replications = range(replications)
        if exogenous is None:
            self.check_memory(len(replications))
        exo = exogenous or draw_exogenous(self.scenario, self.layout, replications, self.days)
        return self.initial(exo), exo

    def initial(self, exo: Exogenous, ops: NumpyOps = NUMPY) -> State:
        """The state of day 0 after its steps 1-4 (``initial`` of the functional env)."""
        lay, b = self.layout, exo.batch
        n, m, c, t, o = (
            lay.num_nodes,
            lay.num_lanes,
            lay.num_components,
            lay.num_transfers,
            len(lay.org_ids),
        )
        zeros = ops.zeros
        state = State(
            day=0,
            on_hand=ops.asarray(np.broadcast_to(lay.initial, (b, n)).copy()),
            components=zeros((b, c)),
            backlog=zeros((b, n)),
            owed=zeros((b, m)),
            pipeline=ops.asarray(
                np.broadcast_to(lay.initial_transit, (b, m, self.pipeline_len)).copy()
            ),
            order_pipeline=zeros((b, m, self.order_len)),
            transfer_pipeline=zeros((b, t, self.transfer_len)),
            month_spend=zeros((b, o)),
            month_ordered=zeros((b, m)),
            demand=zeros((b, n)),
            filled=zeros((b, n)),
            sold=zeros((b, n)),
            lost=zeros((b, n)),
            shipped=zeros((b, m)),
            last_orders=zeros((b, m)),
            last_received=zeros((b, m)),
            arrived_orders=zeros((b, m)),
            alert=zeros((b, m)),
            delay_notice=zeros((b, m)),
        )
        if self.confirmations:
            state.confirmed, state.confirm_days = zeros((b, m)), zeros((b, m))
            state.promised, state.promise_days = zeros((b, m)), zeros((b, m))
        if self._late_notice.any():
            state.sent = zeros((b, m, self.pipeline_len))
        return self.morning(state, exo, ops)

    def step(
        self,
        state: State,
        exo: Exogenous,
        decision: Decision | np.ndarray,
        ops: NumpyOps = NUMPY,
        smoothing: Smoothing | None = None,
        violations: bool = True,
    ) -> tuple[State, dict[str, Any]]:
        """Release today's orders, accrue today's costs, then run steps 1-4 of tomorrow
        (``transition`` of the functional env; ``state`` is left as it was).

        Returns the new state (``day`` advanced; past the horizon only the day moves) and
        today's record: ``[B, N]`` arrays keyed by :data:`RECORD_FIELDS` (without the
        violation fields when ``violations`` is false). ``ops`` is the namespace of
        ``state`` and the decision's arrays; ``smoothing`` relaxes kinks on torch only."""
        if not isinstance(decision, Decision):
            decision = Decision(np.asarray(decision, float))
        state, record = self.evening(state, exo, decision, ops, smoothing, violations)
        state.day += 1
        if state.day < exo.days:
            state = self.morning(state, exo, ops, _owned=True)
        return state, record

    # -- steps 1-4 -----------------------------------------------------------------------

    def morning(
        self, s: State, exo: Exogenous, ops: NumpyOps = NUMPY, _owned: bool = False
    ) -> State:
        """Steps 1-4 of day ``s.day``: arrivals, assembly, customer demand. A new state
        (``_owned``: :meth:`step` made the ring buffers of ``s`` this step, so numpy may
        empty their slots in place)."""
        lay, t, c = self.layout, s.day, self.constants(ops)
        s = replace(s)
        node_f = ops.asarray(exo.node_factor[:, t])
        cal = exo.calendar
        s.alert = ops.asarray(exo.alert[:, t])
        s.delay_notice = ops.asarray(exo.delay_notice[:, t])
        s.month_end = bool(cal.month_end[t])
        s.weekday, s.day_of_year = int(cal.weekday[t]), int(cal.day_of_year[t])
        # 1. arrivals
        landing, s.pipeline = ops.take_slot(s.pipeline, t % self.pipeline_len, _owned)
        s.on_hand = s.on_hand + landing @ c["onhand_dst"]
        if lay.num_components:
            s.components = s.components + landing @ c["comp_lane"]
        if self.order_len > 1:  # orders whose order lead time ends today reach their source
            s.arrived_orders, s.order_pipeline = ops.take_slot(s.order_pipeline, t % self.order_len)
            s.owed = s.owed + s.arrived_orders
        if lay.num_transfers:
            landed, s.transfer_pipeline = ops.take_slot(s.transfer_pipeline, t % self.transfer_len)
            s.on_hand = s.on_hand + landed @ c["transfer_dst"]
        if s.sent is not None:  # what the destinations know of what is still in transit
            s.eta_pipeline = self._known_transit(s, exo, ops)
        # 2. assembly
        if lay.num_components:
            ratio = s.components / c["comp_bom"]
            possible = ops.segment_min(ratio, self._comp_starts)  # [B, K]
            cap = capacity_times(c["bom_capacity"], node_f @ c["bom_pick"], ops)
            made = ops.minimum(possible, cap)
            s.components = s.components - made @ c["made_to_comp"]
            s.on_hand = s.on_hand + made @ c["made_to_node"]
        # 3. customer demand
        demand = ops.asarray(exo.demand[:, t])
        from_backlog = ops.minimum(s.backlog, s.on_hand)
        left = s.on_hand - from_backlog
        filled = ops.minimum(demand, left)
        s.on_hand = left - filled
        unmet = demand - filled
        if self.scenario.lost_sales:
            s.lost = unmet
            s.backlog = s.backlog - from_backlog
        else:
            s.lost = unmet * 0.0
            s.backlog = s.backlog - from_backlog + unmet
        s.demand, s.filled, s.sold = demand, filled, from_backlog + filled
        return s

    def _known_transit(self, s: State, exo: Exogenous, ops: NumpyOps):
        """The ring of :attr:`State.known_pipeline` on the morning of ``s.day``, after the
        arrivals: on the lanes with late delay notices, each of the last ``P - 1`` days'
        shipments not yet arrived sits at its known arrival day (ship day + lead time -
        the extra days whose notice has not come yet), at tomorrow if that day has
        passed; the initial pipeline at its given days; other lanes as :attr:`pipeline`."""
        t, p = s.day, self.pipeline_len
        late = self._late_notice
        k = np.arange(1, p)
        k = k[k <= t]  # days since shipping
        ring = s.pipeline * ops.asarray(np.where(late, 0.0, 1.0)[None, :, None])
        if t < p:  # the initial pipeline (announced, never late) not yet arrived
            init = self.layout.initial_transit * late[:, None] * (np.arange(p) > t)[None, :]
            ring = ring + ops.asarray(init[None])
        if not len(k):
            return ring
        ship_day = t - k  # [K]
        lead = exo.lead[:, ship_day, :]  # [B, K, M]
        hidden = np.zeros(lead.shape, np.int64)
        for m, lag, extra in exo.delay_parts:
            hidden[:, :, m] += extra[:, ship_day] * (k < lag)[None, :]
        arrival = ship_day[None, :, None] + lead
        eta = np.maximum(arrival - hidden, t + 1)
        still = (arrival > t) & late[None, None, :]  # [B, K, M]
        slots = np.moveaxis(eta % p, 1, 2)  # [B, M, K]
        values = s.sent[:, :, ship_day % p] * ops.asarray(np.moveaxis(still, 1, 2))
        return ring + ops.scatter_slots(values, slots, p)

    def _confirm(self, s: State, exo: Exogenous, ops: NumpyOps, received) -> None:
        """The Supplier Interface (docs/model.md, "Confirmations"): after today's shipping
        and transfers, each source projects what it can ship over the next ``H`` days
        (:data:`CONFIRM_DAYS`) from its stock, its known inbound arrivals and its
        suppliers' promises of yesterday (at the promised day + the lane's mean lead time;
        components assembled within capacity at a plant) and its output capacity, cut
        by an announced outage's fraction, and confirms on every lane the order received
        today: the part it expects to ship within ``H`` days and the day its lane's open
        amount will have shipped (proportional rationing: the lane's last unit)."""
        lay, t, c = self.layout, s.day, self.constants(ops)
        h = self.confirm_len
        b, m = received.shape
        node_f = ops.asarray(exo.node_factor[:, t])
        alert = ops.asarray(exo.alert[:, t])
        announced = (alert @ c["src"] + alert @ c["ext_dst"]) > 0
        f_known = ops.where(announced, node_f, 1.0)
        cap_f = capacity_times(c["capacity"], f_known, ops)  # [B, N] units/day
        # cumulative known arrivals by day t+1 .. t+h on the lanes into sources [B, F, H]
        feed = self._feed
        ring = self._known_tonight(s, exo, ops)[:, feed]
        p, j = self.pipeline_len, np.arange(1, h + 1)
        ahead = (np.arange(p) - t) % p  # days from today to each slot's arrival
        upto = ops.asarray(((ahead[:, None] >= 1) & (ahead[:, None] <= j[None, :])) * 1.0)
        f = len(feed)
        cum = (ring.reshape(b * f, p) @ upto).reshape(b, f, h)
        # its own open orders upstream: what its suppliers promised yesterday and have not
        # shipped today, at their promised day (one day nearer) + the lane's mean lead time
        left = ops.maximum(s.promised[:, feed] - s.shipped[:, feed], 0.0)
        land = ops.maximum(s.promise_days[:, feed] - 1.0, 0.0) + ops.asarray(self._lead_mean[feed])
        cum = cum + left[:, :, None] * ops.as_float(land[:, :, None] <= ops.asarray(j * 1.0))
        flat = cum.swapaxes(1, 2).reshape(b * h, f)  # [B * H, F]: one matrix product each
        # what each node could ship by day j, from its stock [B, H, N]
        supply = s.on_hand[:, None, :] + (flat @ c["feed_onhand"]).reshape(b, h, -1)
        if lay.num_components:  # a plant: what it can assemble by day j
            comp = ((flat @ c["feed_comp"]).reshape(b, h, -1) + s.components[:, None, :]) / c[
                "comp_bom"
            ]  # [B, H, C] component stock by day, in units of product
            possible = ops.segment_min(comp, self._comp_starts, axis=2)  # [B, H, K]
            days = ops.asarray(j.astype(float))[None, :, None]
            cap_asm = capacity_times(c["bom_capacity"], f_known @ c["bom_pick"], ops)
            made = ops.minimum(possible, days * cap_asm[:, None, :])
            k = made.shape[2]
            supply = supply + (made.reshape(b * h, k) @ c["made_to_node"]).reshape(b, h, -1)
        limited = c["ship_nodes"] | (f_known < 1.0)
        finite = limited & ~ops.isinf(cap_f)
        rate = ops.where(finite, cap_f, 1.0)  # [B, N] units/day where output is limited
        owed = s.owed @ c["src"]  # [B, N] still owed after today's shipping
        open_ = owed > _EPS
        # it has shipped all it owes on the first day both its supply and its output
        # capacity cover it (both grow with the day)
        by_supply = 1.0 + ops.sum(ops.as_float(supply < owed[:, None, :] - _EPS), 1)
        by_rate = ops.where(finite, ops.ceil(owed / ops.maximum(rate, _EPS) - 1e-9), 0.0)
        k_node = ops.where(open_, ops.minimum(ops.maximum(by_supply, by_rate), float(h)), 0.0)
        shippable = ops.where(finite, ops.minimum(supply[:, -1], h * rate), supply[:, -1])
        frac = ops.where(open_, ops.minimum(1.0, shippable / ops.maximum(owed, _EPS)), 1.0)
        k_lane, frac_lane = k_node @ c["src"].T, frac @ c["src"].T
        if lay.external.any():  # a vendor fills a production node's lanes at its capacity
            prod_cap = capacity_times(c["capacity"], f_known, ops)
            ext_owed = s.owed @ c["ext_dst"]
            finite = c["prod_nodes"] & ~ops.isinf(prod_cap) & (ext_owed > _EPS)
            safe = ops.where(finite, prod_cap, 1.0)
            k_ext = ops.where(
                finite, ops.minimum(ops.ceil(ext_owed / ops.maximum(safe, _EPS)), float(h)), 0.0
            )
            f_ext = ops.where(finite, ops.minimum(1.0, h * safe / ops.maximum(ext_owed, _EPS)), 1.0)
            k_lane = ops.where(c["external"], k_ext @ c["ext_dst"].T, k_lane)
            frac_lane = ops.where(c["external"], f_ext @ c["ext_dst"].T, frac_lane)
        lane_open = s.owed > _EPS
        s.confirmed = received * frac_lane
        s.confirm_days = ops.where(lane_open, k_lane, 0.0) * ops.as_float(received > _EPS)
        s.promised = s.owed * frac_lane
        s.promise_days = ops.where(lane_open, k_lane, 0.0)

    def _known_tonight(self, s: State, exo: Exogenous, ops: NumpyOps):
        """What the destinations know of the pipeline after today's shipping: the true
        ring where no notice comes late, else this morning's known ring plus today's
        shipments at their carrier ETA."""
        if s.eta_pipeline is None:
            return s.pipeline
        t, p, late = s.day, self.pipeline_len, self._late_notice
        lead = exo.lead[:, t].copy()
        for m, lag, extra in exo.delay_parts:
            if lag >= 1:
                lead[:, m] -= extra[:, t]
        keep = ops.asarray(np.where(late, 0.0, 1.0)[None, :, None])
        ring = s.pipeline * keep + s.eta_pipeline * (1.0 - keep)
        return ops.add_at_slots(ring, (t + lead) % p, s.shipped * ops.asarray(late.astype(float)))

    def _ship(self, s: State, exo: Exogenous, ops: NumpyOps) -> None:
        """Fill what is owed on every lane from the source's on hand, within capacities;
        short supply is rationed in proportion to what each lane is owed. Updates the
        fields of ``s`` (a fresh copy) with new arrays."""
        t, c = s.day, self.constants(ops)
        node_f = ops.asarray(exo.node_factor[:, t])
        owed = s.owed
        cap_f = capacity_times(c["capacity"], node_f, ops)
        limited = c["ship_nodes"] | (node_f < 1.0)
        avail = ops.where(limited, ops.minimum(s.on_hand, cap_f), s.on_hand)
        total_owed = owed @ c["src"]
        frac = ops.where(
            total_owed > _EPS, ops.minimum(1.0, avail / ops.maximum(total_owed, _EPS)), 0.0
        )
        lane_frac = frac @ c["src"].T  # internal lanes: the source's fill fraction
        if self.layout.external.any():
            ext_owed = owed @ c["ext_dst"]
            # production nodes: the capacity caps what their external lanes deliver; an
            # unlimited one delivers all (kept out of the division, for finite gradients)
            prod_cap = ops.where(c["prod_nodes"], cap_f, np.inf)
            unlimited = ops.isinf(prod_cap) | (ext_owed <= _EPS)
            finite_cap = ops.where(unlimited, 0.0, prod_cap)
            pfrac = ops.where(
                unlimited, 1.0, ops.minimum(1.0, finite_cap / ops.maximum(ext_owed, _EPS))
            )
            lane_frac = ops.where(c["external"], pfrac @ c["ext_dst"].T, lane_frac)
        tcap = capacity_times(c["transport_cap"], ops.asarray(exo.lane_factor[:, t]), ops)
        ship = ops.minimum(owed * lane_frac, tcap)
        ship = ops.where(ship > _EPS, ship, 0.0)
        s.on_hand = ops.maximum(s.on_hand - ship @ c["src"], 0.0)
        s.owed = owed - ship
        s.shipped = ship
        slots = (t + exo.lead[:, t]) % self.pipeline_len
        s.pipeline = ops.add_at_slots(s.pipeline, slots, ship)
        if s.sent is not None:  # today's slot of the ship-day ring: today's shipments
            today = np.full(ship.shape, t % self.pipeline_len)
            _, sent = ops.take_slot(s.sent, t % self.pipeline_len)
            s.sent = ops.add_at_slots(sent, today, ship * ops.asarray(self._late_notice))

    # -- steps 6-7 -----------------------------------------------------------------------

    def evening(
        self,
        s: State,
        exo: Exogenous,
        d: Decision,
        ops: NumpyOps = NUMPY,
        smoothing: Smoothing | None = None,
        violations: bool = True,
    ) -> tuple[State, dict[str, Any]]:
        """Steps 6-7 of day ``s.day``: release ``d``, ship, accrue costs. A new state
        (same day) and the day's record."""
        lay, t, c = self.layout, s.day, self.constants(ops)
        s = replace(s)
        orders = ops.maximum(ops.nan_to_zero(ops.asarray(d.orders)), 0.0)
        b = orders.shape[0]
        # 6. release; upstream nodes fill what they owe at once (step 4, see the module doc)
        if self.order_len > 1:  # orders on lanes with an order lead time travel first
            travelling = ops.where(c["delayed"], orders, 0.0)
            slots = (t + self._order_lead) % self.order_len
            s.order_pipeline = ops.add_at_slots(s.order_pipeline, slots, travelling)
            received = orders - travelling + s.arrived_orders
            s.owed = s.owed + orders - travelling
        else:
            received = orders
            s.owed = s.owed + orders
        self._ship(s, exo, ops)
        # lateral transfers leave the sender now, land at the start of day t + lead
        transfer_cost = ops.zeros((b, lay.num_nodes))
        transferred = transfer_cost
        if lay.num_transfers and d.transfers is not None:
            req = ops.minimum(
                ops.maximum(ops.nan_to_zero(ops.asarray(d.transfers)), 0.0), c["transfer_cap"]
            )
            out = req @ c["transfer_src"]
            scale = ops.where(out > s.on_hand, s.on_hand / ops.maximum(out, _EPS), 1.0)
            moved = req * (scale @ c["transfer_src"].T)
            s.on_hand = ops.maximum(s.on_hand - moved @ c["transfer_src"], 0.0)
            slots = (t + self._transfer_lead) % self.transfer_len
            s.transfer_pipeline = ops.add_at_slots(s.transfer_pipeline, slots, moved)
            transfer_cost = (moved * c["transfer_cost"]) @ c["transfer_src"]
            transferred = moved @ c["transfer_src"]
        if s.confirmed is not None:  # the Supplier Interface (Simulator.confirmations)
            self._confirm(s, exo, ops, received)
        # monthly budget and contract bookkeeping
        spend = orders * c["unit_cost"]
        org_spend = spend @ c["org"]  # [B, O]
        before = ops.maximum(s.month_spend - c["budget"], 0.0)
        s.month_spend = s.month_spend + org_spend
        over = ops.maximum(s.month_spend - c["budget"], 0.0) - before  # $ newly over budget
        s.month_ordered = s.month_ordered + orders
        in_transit_lane = ops.sum(s.pipeline, 2)
        record: dict[str, Any] = {}
        if violations:
            on_order = s.owed + in_transit_lane
            if self.order_len > 1:
                on_order = on_order + ops.sum(s.order_pipeline, 2)
            record.update(self._violations(s, exo, ops, orders, spend, org_spend, over, on_order))
        if exo.calendar.month_end[t]:
            s.month_spend = s.month_spend * 0.0
            s.month_ordered = s.month_ordered * 0.0
        # 7. costs on end-of-day state
        holding = s.on_hand * c["holding"] + (in_transit_lane * c["transit_holding"]) @ c["dst"]
        if lay.num_components:
            holding = holding + (s.components * c["comp_holding"]) @ c["comp_node"]
        if lay.num_transfers:
            tin = ops.sum(s.transfer_pipeline, 2)
            holding = holding + (tin * c["transfer_src_holding"]) @ c["transfer_dst"]
        # customer backorders (or lost sales) and orders owed downstream past today
        owed_out = s.owed @ c["src"]
        short = s.lost if self.scenario.lost_sales else s.backlog
        penalty = (short + owed_out) * c["penalty"]
        purchase = (orders * c["price"]) @ c["dst"]
        ext_purchase = (orders * c["ext_price"]) @ c["dst"]
        shipping = (orders * c["shipping_cost"]) @ c["dst"]
        ordering = (ops.smooth_indicator(orders, _EPS, smoothing) * c["fixed_cost"]) @ c["dst"]
        total = holding + penalty + ext_purchase + shipping + ordering + transfer_cost
        value = s.on_hand * c["unit_value"]
        if lay.num_components:
            value = value + (s.components * c["comp_value"]) @ c["comp_node"]
        record.update(
            {
                "on_hand": s.on_hand,
                "backlog": s.backlog,
                "demand": s.demand,
                "filled": s.filled,
                "sold": s.sold,
                "lost": s.lost,
                "ordered": orders @ c["dst"],
                "orders_received": received @ c["src"],
                "shipped": s.shipped @ c["src"],
                "internal_shortfall": owed_out,
                "in_transit": in_transit_lane @ c["dst"],
                "inventory_value": value,
                "holding_cost": holding,
                "penalty_cost": penalty,
                "purchase_cost": purchase,
                "external_purchase_cost": ext_purchase,
                "shipping_cost": shipping,
                "ordering_cost": ordering,
                "transfer_cost": transfer_cost,
                "transferred": transferred,
                "total_cost": total,
            }
        )
        s.last_orders = orders
        s.last_received = received
        return s, record

    def _violations(
        self, s: State, exo: Exogenous, ops: NumpyOps, orders, spend, org_spend, over, on_order
    ) -> dict[str, Any]:
        """Violations of today's released orders (magnitudes and count per node); ``s``
        is the state after release and shipping, month totals not yet reset."""
        lay, t, c = self.layout, s.day, self.constants(ops)
        cap_f = capacity_times(c["capacity"], ops.asarray(exo.node_factor[:, t]), ops)
        # production nodes: their own production orders; shipping nodes: orders placed on them
        load = ops.where(
            c["prod_nodes"],
            orders @ c["ext_dst"],
            ops.where(c["ship_nodes"], orders @ c["src"], 0.0),
        )
        cap_v = ops.where(load > cap_f + _EPS, load - cap_f, 0.0)
        tcap = capacity_times(c["transport_cap"], ops.asarray(exo.lane_factor[:, t]), ops)
        trans_v = ops.where(orders > tcap + _EPS, orders - tcap, 0.0)
        rem = orders - ops.round(orders / c["lot"]) * c["lot"]
        lot_v = ops.where(c["has_lot"] & (ops.abs(rem) > 1e-6), ops.abs(rem), 0.0)
        node_spend = spend @ c["dst"]
        budget_v = node_spend * ((over / ops.maximum(org_spend, _EPS)) @ c["node_org"].T)
        inbound = on_order @ c["dst"]
        stock = s.on_hand + (s.components @ c["comp_node"] if lay.num_components else 0.0)
        storage_v = ops.where(
            c["finite_storage"], ops.maximum(stock + inbound - c["storage_finite"], 0.0), 0.0
        )
        contract_v = ops.zeros(s.on_hand.shape)
        if exo.calendar.month_end[t] and (self.layout.commitment > 0).any():
            short = ops.maximum(c["commitment"] - s.month_ordered, 0.0) * c["commit"]
            contract_v = short @ c["dst"]
        f = ops.as_float
        count = (
            f(cap_v > _EPS)
            + f((trans_v > _EPS) | (lot_v > _EPS)) @ c["dst"]
            + f(storage_v > _EPS)
            + f(contract_v > _EPS)
            + f(budget_v > _EPS)
        )
        return {
            "capacity_violation": cap_v,
            "transport_violation": trans_v @ c["dst"],
            "lot_violation": lot_v @ c["dst"],
            "storage_violation": storage_v,
            "contract_violation": contract_v,
            "budget_violation": budget_v,
            "violations": count,
        }


def _constants(lay: Layout) -> dict[str, np.ndarray]:
    """The layout's arrays the day reads (numpy; see :meth:`Simulator.constants`)."""
    feed = np.flatnonzero(lay.src_mat.sum(axis=0)[lay.lane_dst] > 0)  # Simulator._feed
    n, m, c, t = lay.num_nodes, lay.num_lanes, lay.num_components, lay.num_transfers
    orgs = len(lay.org_ids)
    comp_lanes = lay.lane_comp >= 0
    comp_lane = np.zeros((m, c))
    for j in np.flatnonzero(comp_lanes):
        comp_lane[j, lay.lane_comp[j]] = 1.0
    comp_of_slot = np.searchsorted(lay.comp_starts, np.arange(c), side="right") - 1
    k = len(lay.bom_nodes)
    made_to_comp = np.zeros((k, c))  # units assembled -> components used
    made_to_comp[comp_of_slot, np.arange(c)] = lay.comp_bom
    made_to_node = np.zeros((k, n))
    made_to_node[np.arange(k), lay.bom_nodes] = 1.0
    has_lot = lay.lot_size > 0
    eye_n = np.eye(n)
    return {
        "src": lay.src_mat,
        "dst": lay.dst_mat,
        "external": lay.external.astype(bool),
        "ext_dst": lay.dst_mat * lay.external[:, None],
        "onhand_dst": lay.dst_mat * (~comp_lanes)[:, None],
        "comp_lane": comp_lane,
        "feed_onhand": (lay.dst_mat * (~comp_lanes)[:, None])[feed],
        "feed_comp": comp_lane[feed],
        "comp_bom": lay.comp_bom,
        "comp_node": eye_n[lay.comp_node].reshape(c, n),
        "bom_capacity": lay.capacity[lay.bom_nodes],
        "bom_pick": eye_n[:, lay.bom_nodes].reshape(n, k),
        "made_to_comp": made_to_comp,
        "made_to_node": made_to_node,
        "capacity": lay.capacity,
        "transport_cap": lay.transport_cap,
        "prod_nodes": lay.output_kind == OUTPUT_PRODUCTION,
        "ship_nodes": lay.output_kind == OUTPUT_SHIPPING,
        "delayed": lay.order_lead > 0,
        "transfer_cap": lay.transfer_cap,
        "transfer_cost": lay.transfer_cost,
        "transfer_src": eye_n[lay.transfer_src].reshape(t, n),
        "transfer_dst": eye_n[lay.transfer_dst].reshape(t, n),
        "transfer_src_holding": lay.holding[lay.transfer_src].reshape(t),
        "org": np.eye(orgs)[lay.lane_org].reshape(m, orgs),
        "node_org": np.eye(orgs)[lay.node_org].reshape(n, orgs),
        "unit_cost": lay.price + lay.shipping_cost,
        "budget": lay.budget,
        "has_lot": has_lot,
        "lot": np.where(has_lot, lay.lot_size, 1.0),
        "finite_storage": np.isfinite(lay.storage),
        "storage_finite": np.where(np.isfinite(lay.storage), lay.storage, 0.0),
        "commit": lay.commitment > 0,
        "commitment": lay.commitment,
        "holding": lay.holding,
        "transit_holding": lay.transit_holding,
        "comp_holding": lay.comp_holding,
        "penalty": lay.penalty,
        "price": lay.price,
        "ext_price": lay.price * lay.external,
        "shipping_cost": lay.shipping_cost,
        "fixed_cost": lay.fixed_cost,
        "unit_value": lay.unit_value,
        "comp_value": lay.comp_value,
    }
