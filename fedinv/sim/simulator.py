"""The day of docs/model.md, vectorized over nodes and a batch of replications.

State is explicit (:class:`State`, arrays ``[B, ...]``); :meth:`Simulator.reset` runs
steps 1-4 of day 0 and returns the state a policy observes; :meth:`Simulator.step`
takes the released orders of today (steps 5-6), accrues today's costs (step 7), then
runs steps 1-4 of the next day. Arrays in the state are updated in place (call
:meth:`State.copy` to keep one). Every random number was drawn up front
(:mod:`fedinv.sim.exogenous`), so a step is a deterministic function of state and orders.

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

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from fedinv.model.layout import (
    OUTPUT_ASSEMBLY,
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

_EPS = 1e-9


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

    def copy(self) -> State:
        return State(
            **{
                f.name: (v.copy() if isinstance(v := getattr(self, f.name), np.ndarray) else v)
                for f in fields(self)
            }
        )

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
    "total_cost",
    "capacity_violation",
    "transport_violation",
    "lot_violation",
    "storage_violation",
    "contract_violation",
    "budget_violation",
    "violations",
)
"""Per node and day, in units or $; ``budget_violation`` ($ over the organization's
monthly budget, charged to the ordering node), ``violations`` (count of violated
constraints by released orders that day)."""


class Simulator:
    """A compiled scenario that steps batches of replications."""

    def __init__(self, scenario: Scenario, days: int | None = None):
        self.scenario = scenario
        self.days = int(days or scenario.horizon_days)
        if days:
            self._days_field = "days"
        else:
            where = scenario.source.removeprefix("builtin:") or scenario.name
            self._days_field = f"horizon_days (scenario {where})"
        extra = max([d.max_days for d in scenario.delays] + [0])
        self.layout: Layout = compile_layout(scenario.network, extra)
        lay = self.layout
        self.pipeline_len = lay.max_lead + 1
        self.order_len = int(lay.order_lead.max(initial=0)) + 1
        self._delayed = lay.order_lead > 0  # [M] lanes whose orders travel to the source
        self.transfer_len = int(max(lay.transfer_lead.max(initial=1), 1)) + 1
        self.check_memory(1)
        self._ext = lay.external
        self._ext_dst_mat = lay.dst_mat * lay.external[:, None]
        self._comp_lanes = lay.lane_comp >= 0
        self._onhand_dst_mat = lay.dst_mat * (~self._comp_lanes)[:, None]
        self._comp_mat = np.zeros((lay.num_lanes, lay.num_components))
        for m in np.flatnonzero(self._comp_lanes):
            self._comp_mat[m, lay.lane_comp[m]] = 1.0
        self._transfer_src_mat = np.eye(lay.num_nodes)[lay.transfer_src].reshape(
            lay.num_transfers, lay.num_nodes
        )
        self._transfer_dst_mat = np.eye(lay.num_nodes)[lay.transfer_dst].reshape(
            lay.num_transfers, lay.num_nodes
        )
        self._org_mat = np.eye(len(lay.org_ids))[lay.lane_org].reshape(
            lay.num_lanes, len(lay.org_ids)
        )
        self._node_org_mat = np.eye(len(lay.org_ids))[lay.node_org].reshape(
            lay.num_nodes, len(lay.org_ids)
        )
        self._prod_nodes = lay.output_kind == OUTPUT_PRODUCTION
        self._ship_nodes = lay.output_kind == OUTPUT_SHIPPING
        self._asm = lay.output_kind == OUTPUT_ASSEMBLY
        self._unit_cost = lay.price + lay.shipping_cost
        self._has_lot = lay.lot_size > 0
        self._lot = np.where(self._has_lot, lay.lot_size, 1.0)
        self._finite_storage = np.isfinite(lay.storage)
        self._commit = lay.commitment > 0
        self._comp_node = np.eye(lay.num_nodes)[lay.comp_node].reshape(
            lay.num_components, lay.num_nodes
        )
        self._comp_of_slot = (
            np.searchsorted(lay.comp_starts, np.arange(lay.num_components), side="right") - 1
        )

    def memory_bytes(self, replications: int) -> tuple[int, int]:
        """Estimated bytes to simulate ``replications`` over :attr:`days` and keep each
        day's record (as :func:`fedinv.sim.run.simulate` does): ``(total, per
        replication-day)``."""
        lay = self.layout
        per_day = exogenous_bytes_per_day(self.scenario, lay) + 8 * len(RECORD_FIELDS) * (
            lay.num_nodes
        )
        per_rep = 8 * (
            lay.num_lanes * (self.pipeline_len + self.order_len + 12)
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
        1-4 of day 0. Returns the state and the batch's pre-drawn random streams."""
        if isinstance(replications, int):
            replications = range(replications)
        if exogenous is None:
            self.check_memory(len(replications))
        exo = exogenous or draw_exogenous(self.scenario, self.layout, replications, self.days)
        lay, b = self.layout, exo.batch
        n, m, c, t, o = (
            lay.num_nodes,
            lay.num_lanes,
            lay.num_components,
            lay.num_transfers,
            len(lay.org_ids),
        )
        zeros = np.zeros
        state = State(
            day=0,
            on_hand=np.broadcast_to(lay.initial, (b, n)).copy(),
            components=zeros((b, c)),
            backlog=zeros((b, n)),
            owed=zeros((b, m)),
            pipeline=np.broadcast_to(lay.initial_transit, (b, m, self.pipeline_len)).copy(),
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
        self._advance(state, exo)
        return state, exo

    def step(
        self, state: State, exo: Exogenous, decision: Decision | np.ndarray
    ) -> tuple[State, dict[str, np.ndarray]]:
        """Release today's orders, accrue today's costs, then run steps 1-4 of tomorrow.

        Returns the state (``state.day`` advanced unless the horizon is over) and today's
        record: a dict of ``[B, N]`` arrays keyed by :data:`RECORD_FIELDS`."""
        if not isinstance(decision, Decision):
            decision = Decision(np.asarray(decision, float))
        record = self._release_and_cost(state, exo, decision)
        if state.day + 1 < exo.days:
            state.day += 1
            self._advance(state, exo)
        else:
            state.day += 1
        return state, record

    # -- steps 1-4 -----------------------------------------------------------------------

    def _advance(self, s: State, exo: Exogenous) -> None:
        lay, t = self.layout, s.day
        node_f = exo.node_factor[:, t]
        cal = exo.calendar
        s.alert, s.delay_notice = exo.alert[:, t], exo.delay_notice[:, t]
        s.month_end = bool(cal.month_end[t])
        s.weekday, s.day_of_year = int(cal.weekday[t]), int(cal.day_of_year[t])
        # 1. arrivals
        slot = t % self.pipeline_len
        landing = s.pipeline[:, :, slot].copy()
        s.pipeline[:, :, slot] = 0.0
        self._land(s, landing)
        if self.order_len > 1:  # orders whose order lead time ends today reach their source
            oslot = t % self.order_len
            s.arrived_orders = s.order_pipeline[:, :, oslot].copy()
            s.order_pipeline[:, :, oslot] = 0.0
            s.owed = s.owed + s.arrived_orders
        if lay.num_transfers:
            tslot = t % self.transfer_len
            s.on_hand += s.transfer_pipeline[:, :, tslot] @ self._transfer_dst_mat
            s.transfer_pipeline[:, :, tslot] = 0.0
        # 2. assembly
        if lay.num_components:
            ratio = s.components / lay.comp_bom
            possible = np.minimum.reduceat(ratio, lay.comp_starts, axis=1)  # [B, K]
            cap = capacity_times(lay.capacity[lay.bom_nodes], node_f[:, lay.bom_nodes])
            made = np.minimum(possible, cap)
            s.components -= made[:, self._comp_of_slot] * lay.comp_bom
            s.on_hand[:, lay.bom_nodes] += made
        # 3. customer demand
        demand = exo.demand[:, t]
        from_backlog = np.minimum(s.backlog, s.on_hand)
        left = s.on_hand - from_backlog
        filled = np.minimum(demand, left)
        s.on_hand = left - filled
        unmet = demand - filled
        if self.scenario.lost_sales:
            s.lost = unmet
            s.backlog = s.backlog - from_backlog
        else:
            s.lost = np.zeros_like(unmet)
            s.backlog = s.backlog - from_backlog + unmet
        s.demand, s.filled, s.sold = demand, filled, from_backlog + filled

    def _ship(self, s: State, exo: Exogenous) -> None:
        """Fill what is owed on every lane from the source's on hand, within capacities;
        short supply is rationed in proportion to what each lane is owed."""
        lay, t = self.layout, s.day
        node_f = exo.node_factor[:, t]
        owed = s.owed
        out_cap = np.where(
            self._ship_nodes | (node_f < 1.0), capacity_times(lay.capacity, node_f), np.inf
        )
        avail = np.minimum(s.on_hand, out_cap)
        total_owed = owed @ lay.src_mat
        frac = np.where(
            total_owed > _EPS, np.minimum(1.0, avail / np.maximum(total_owed, _EPS)), 0.0
        )
        lane_frac = frac @ lay.src_mat.T  # internal lanes: the source's fill fraction
        if self._ext.any():
            ext_owed = owed @ self._ext_dst_mat
            prod_cap = np.where(self._prod_nodes, capacity_times(lay.capacity, node_f), np.inf)
            pfrac = np.where(
                ext_owed > _EPS, np.minimum(1.0, prod_cap / np.maximum(ext_owed, _EPS)), 1.0
            )
            lane_frac = np.where(self._ext, pfrac @ self._ext_dst_mat.T, lane_frac)
        ship = np.minimum(
            owed * lane_frac, capacity_times(lay.transport_cap, exo.lane_factor[:, t])
        )
        ship = np.where(ship > _EPS, ship, 0.0)
        s.on_hand -= ship @ lay.src_mat
        np.maximum(s.on_hand, 0.0, out=s.on_hand)
        s.owed = owed - ship
        s.shipped = ship
        bi, mi = np.nonzero(ship)
        slots = (t + exo.lead[bi, t, mi]) % self.pipeline_len
        s.pipeline[bi, mi, slots] += ship[bi, mi]

    def _land(self, s: State, units: np.ndarray) -> None:
        """Add landed units ``[B, M]`` to on-hand or component stock."""
        s.on_hand += units @ self._onhand_dst_mat
        if self.layout.num_components:
            s.components += units @ self._comp_mat

    # -- steps 6-7 -----------------------------------------------------------------------

    def _release_and_cost(self, s: State, exo: Exogenous, d: Decision) -> dict[str, np.ndarray]:
        lay, t = self.layout, s.day
        node_f = exo.node_factor[:, t]
        orders = np.maximum(np.nan_to_num(d.orders, nan=0.0), 0.0)
        b = orders.shape[0]
        # 6. release; upstream nodes fill what they owe at once (step 4, see the module doc)
        if self.order_len > 1:  # orders on lanes with an order lead time travel first
            travelling = np.where(self._delayed, orders, 0.0)
            slots = (t + lay.order_lead) % self.order_len
            s.order_pipeline[:, np.arange(lay.num_lanes), slots] += travelling
            received = orders - travelling + s.arrived_orders
            s.owed = s.owed + orders - travelling
        else:
            received = orders
            s.owed = s.owed + orders
        self._ship(s, exo)
        # lateral transfers leave the sender now, land at the start of day t + lead
        transfer_cost = np.zeros((b, lay.num_nodes))
        if lay.num_transfers and d.transfers is not None:
            req = np.minimum(np.maximum(np.nan_to_num(d.transfers), 0.0), lay.transfer_cap)
            out = req @ self._transfer_src_mat
            scale = np.where(out > s.on_hand, s.on_hand / np.maximum(out, _EPS), 1.0)
            moved = req * (scale @ self._transfer_src_mat.T)
            s.on_hand -= moved @ self._transfer_src_mat
            np.maximum(s.on_hand, 0.0, out=s.on_hand)
            slots = (t + lay.transfer_lead) % self.transfer_len
            s.transfer_pipeline[:, np.arange(lay.num_transfers), slots] += moved
            transfer_cost = (moved * lay.transfer_cost) @ self._transfer_src_mat
        # violations of released orders
        cap_f = capacity_times(lay.capacity, node_f)
        # production nodes: their own production orders; shipping nodes: orders placed on them
        load = np.where(
            self._prod_nodes,
            orders @ self._ext_dst_mat,
            np.where(self._ship_nodes, orders @ lay.src_mat, 0.0),
        )
        cap_v = np.where(load > cap_f + _EPS, load - cap_f, 0.0)
        tcap = capacity_times(lay.transport_cap, exo.lane_factor[:, t])
        trans_v = np.where(orders > tcap + _EPS, orders - tcap, 0.0)
        rem = orders - np.round(orders / self._lot) * self._lot
        lot_v = np.where(self._has_lot & (np.abs(rem) > 1e-6), np.abs(rem), 0.0)
        spend = orders * self._unit_cost
        org_spend = spend @ self._org_mat  # [B, O]
        before = np.maximum(s.month_spend - lay.budget, 0.0)
        s.month_spend = s.month_spend + org_spend
        over = np.maximum(s.month_spend - lay.budget, 0.0) - before  # $ newly over budget
        node_spend = spend @ lay.dst_mat
        budget_v = node_spend * ((over / np.maximum(org_spend, _EPS)) @ self._node_org_mat.T)
        s.month_ordered = s.month_ordered + orders
        inbound = s.on_order @ lay.dst_mat
        stock = s.on_hand + (s.components @ self._comp_node if lay.num_components else 0)
        storage_v = np.where(
            self._finite_storage, np.maximum(stock + inbound - lay.storage, 0.0), 0.0
        )
        contract_v = np.zeros((b, lay.num_nodes))
        if exo.calendar.month_end[t]:
            if self._commit.any():
                short = np.maximum(lay.commitment - s.month_ordered, 0.0) * self._commit
                contract_v = short @ lay.dst_mat
            s.month_spend[:] = 0.0
            s.month_ordered[:] = 0.0
        count = (
            (cap_v > _EPS)
            + ((trans_v > _EPS) | (lot_v > _EPS)).astype(float) @ lay.dst_mat
            + (storage_v > _EPS)
            + (contract_v > _EPS)
            + (budget_v > _EPS)
        )
        # 7. costs on end-of-day state
        in_transit_lane = s.pipeline.sum(axis=2)
        holding = s.on_hand * lay.holding + (in_transit_lane * lay.transit_holding) @ lay.dst_mat
        if lay.num_components:
            holding += (s.components * lay.comp_holding) @ self._comp_node
        if lay.num_transfers:
            tin = s.transfer_pipeline.sum(axis=2)
            holding += (tin * (lay.holding[lay.transfer_src])) @ self._transfer_dst_mat
        # customer backorders (or lost sales) and orders owed downstream past today
        owed_out = s.owed @ lay.src_mat
        short = s.lost if self.scenario.lost_sales else s.backlog
        penalty = (short + owed_out) * lay.penalty
        purchase = (orders * lay.price) @ lay.dst_mat
        ext_purchase = (orders * lay.price * self._ext) @ lay.dst_mat
        shipping = (orders * lay.shipping_cost) @ lay.dst_mat
        ordering = ((orders > _EPS) * lay.fixed_cost) @ lay.dst_mat
        total = holding + penalty + ext_purchase + shipping + ordering + transfer_cost
        value = s.on_hand * lay.unit_value
        if lay.num_components:
            value = value + (s.components * lay.comp_value) @ self._comp_node
        record = {
            "on_hand": s.on_hand.copy(),
            "backlog": s.backlog.copy(),
            "demand": s.demand,
            "filled": s.filled,
            "sold": s.sold,
            "lost": s.lost,
            "ordered": orders @ lay.dst_mat,
            "orders_received": received @ lay.src_mat,
            "shipped": s.shipped @ lay.src_mat,
            "internal_shortfall": owed_out,
            "in_transit": in_transit_lane @ lay.dst_mat,
            "inventory_value": value,
            "holding_cost": holding,
            "penalty_cost": penalty,
            "purchase_cost": purchase,
            "external_purchase_cost": ext_purchase,
            "shipping_cost": shipping,
            "ordering_cost": ordering,
            "transfer_cost": transfer_cost,
            "total_cost": total,
            "capacity_violation": cap_v,
            "transport_violation": trans_v @ lay.dst_mat,
            "lot_violation": lot_v @ lay.dst_mat,
            "storage_violation": storage_v,
            "contract_violation": contract_v,
            "budget_violation": budget_v,
            "violations": count,
        }
        s.last_orders = orders
        s.last_received = received
        return record
