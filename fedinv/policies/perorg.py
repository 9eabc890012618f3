"""The per-organization information mode (docs/service.md): each organization decides
its own lanes from what it knows, and its safety layer sees only its own rows.

What an organization ``o`` knows on a day (:func:`org_view`, the state its decision
service receives over HTTP):

  * its nodes: on hand, backorders, today's demand, component stock;
  * the lanes it buys on (destination in ``o``, external ones included): everything
    (in transit by arrival day, orders on their way to the source, owed, ordered this
    month, released and received yesterday, arrived this morning, announced outages and
    delay notices);
  * the lanes it supplies to other organizations: what it owes on them, what reached it
    yesterday and this morning, the announced outages of its own nodes, and the orders
    those buyers released today (:attr:`fedinv.sim.simulator.State.given_orders`);
  * its own budget spent this month; the calendar.

Everything else is 0 in the view. Organizations decide downstream-first
(:func:`decision_order`), so a supplier's installation position includes the orders its
customers released today, as in the network-wide mode -- but the *released* orders, after
the customer's own safety layer. The layer's program is restricted to the organization
(:func:`org_layout`): other organizations' lanes are pinned at 0 and their capacities,
storage and budgets are no rows of it (another organization's supplier capacity is not
a row of the buyer's program).

:class:`PerOrgPolicy` runs every organization in order on the full state (the simulator's
``--projection per-org``); one :class:`OrgDecider` is what one organization's service
runs, on a batch of 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from fedinv.model.layout import Layout
from fedinv.model.network import Outage
from fedinv.sim.simulator import Decision, State

PROJECTIONS = ("network", "per-org")
"""``network``: one program for the whole network (coupling rows across organizations);
``per-org``: one program per organization, each deciding from its own view."""

_NODE_FIELDS = ("on_hand", "backlog", "demand")


@dataclass(frozen=True)
class OrgScope:
    """Which nodes and lanes an organization sees, as index arrays of a layout."""

    org: int
    org_id: str
    nodes: np.ndarray  # [N] bool: the organization's nodes
    components: np.ndarray  # [C] bool: component slots of its nodes
    own: np.ndarray  # [M] bool: lanes it buys on (destination in the org)
    outbound: np.ndarray  # [M] bool: lanes from its nodes to other organizations

    @property
    def lanes(self) -> np.ndarray:
        """``[M]`` bool: every lane the organization sees."""
        return self.own | self.outbound


def org_scope(layout: Layout, org: str | int) -> OrgScope:
    """The scope of organization ``org`` (id or index; ValueError naming the known ids)."""
    if isinstance(org, str):
        if org not in layout.org_ids:
            raise ValueError(f"unknown organization {org!r}; known: {', '.join(layout.org_ids)}")
        o = layout.org_ids.index(org)
    else:
        o = int(org)
    nodes = layout.node_org == o
    src_in = np.where(layout.lane_src >= 0, nodes[np.maximum(layout.lane_src, 0)], False)
    own = nodes[layout.lane_dst]
    comps = nodes[layout.comp_node] if layout.num_components else np.zeros(0, bool)
    return OrgScope(o, layout.org_ids[o], nodes, comps, own, src_in & ~own)


def decision_order(layout: Layout) -> tuple[int, ...]:
    """Organizations downstream-first: every buyer before the organizations supplying
    it. ValueError when two organizations supply each other (no such order)."""
    n = len(layout.org_ids)
    supplies: dict[int, set[int]] = {o: set() for o in range(n)}  # o -> its buyers
    for m in np.flatnonzero(layout.lane_src >= 0):
        a, b = int(layout.node_org[layout.lane_src[m]]), int(layout.node_org[layout.lane_dst[m]])
        if a != b:
            supplies[a].add(b)
    order: list[int] = []
    left = set(range(n))
    while left:
        ready = sorted(o for o in left if not (supplies[o] & left))
        if not ready:
            names = ", ".join(layout.org_ids[o] for o in sorted(left))
            raise ValueError(
                f"organizations {names} supply each other: per-org mode needs an order in "
                "which every buyer decides before its suppliers"
            )
        order.extend(ready)
        left -= set(ready)
    return tuple(order)


def org_view(state: State, scope: OrgScope, given: np.ndarray | None = None) -> State:
    """What ``scope``'s organization knows of ``state`` (module doc): its rows kept,
    everything else 0. ``given [B, M]``: today's released orders of the other
    organizations (read on the lanes it supplies them)."""
    z = np.zeros_like
    out = replace(state)
    for f in _NODE_FIELDS:
        setattr(out, f, np.where(scope.nodes, getattr(state, f), 0.0))
    out.filled, out.sold, out.lost = z(state.filled), z(state.sold), z(state.lost)
    out.components = np.where(scope.components, state.components, 0.0)
    for f in ("owed", "last_received", "arrived_orders", "alert"):
        setattr(out, f, np.where(scope.lanes, getattr(state, f), 0.0))
    for f in ("month_ordered", "last_orders", "delay_notice"):
        setattr(out, f, np.where(scope.own, getattr(state, f), 0.0))
    out.shipped = z(state.shipped)
    out.pipeline = np.where(scope.own[None, :, None], state.pipeline, 0.0)
    for f in ("sent", "eta_pipeline"):  # what its nodes know of their inbound shipments
        if getattr(state, f) is not None:
            setattr(out, f, np.where(scope.own[None, :, None], getattr(state, f), 0.0))
    for f in ("confirmed", "confirm_days", "promised", "promise_days"):
        if getattr(state, f) is not None:  # its buyers' confirmations and its own
            setattr(out, f, np.where(scope.lanes, getattr(state, f), 0.0))
    out.order_pipeline = np.where(scope.own[None, :, None], state.order_pipeline, 0.0)
    out.transfer_pipeline = z(state.transfer_pipeline)
    spend = z(state.month_spend)
    spend[:, scope.org] = state.month_spend[:, scope.org]
    out.month_spend = spend
    b, m = state.owed.shape
    fixed = np.full((b, m), np.nan)
    if given is not None:
        fixed[:, scope.outbound] = np.asarray(given)[:, scope.outbound]
    else:
        fixed[:, scope.outbound] = 0.0
    out.given_orders = fixed
    return out


def org_layout(layout: Layout, scope: OrgScope) -> Layout:
    """The layout whose projection program is ``scope``'s restriction of the network's:
    lanes it does not buy on get transport capacity 0 (pinned at 0, no lot, no
    commitment), nodes of other organizations unlimited capacity and storage (no rows),
    other organizations' budgets unlimited (no rows). The lanes it buys on keep every
    row of its own nodes and budget."""
    own, nodes = scope.own, scope.nodes
    budget = np.full_like(layout.budget, np.inf)
    budget[scope.org] = layout.budget[scope.org]
    return replace(
        layout,
        transport_cap=np.where(own, layout.transport_cap, 0.0),
        lot_size=np.where(own, layout.lot_size, 0.0),
        commitment=np.where(own, layout.commitment, 0.0),
        capacity=np.where(nodes, layout.capacity, np.inf),
        storage=np.where(nodes, layout.storage, np.inf),
        budget=budget,
    )


def org_outages(layout: Layout, scope: OrgScope, outages: Sequence[Outage]) -> tuple[Outage, ...]:
    """The outages of ``scope``'s own nodes and of the lanes it buys on."""
    nodes = {layout.node_ids[i] for i in np.flatnonzero(scope.nodes)}
    lanes = {layout.lane_ids[m] for m in np.flatnonzero(scope.own)}
    return tuple(o for o in outages if o.target in nodes or o.target in lanes)


class OwnLanes:
    """A policy restricted to the lanes ``own [M]`` of one organization: the inner
    policy's orders elsewhere are 0 (they are other organizations' to decide)."""

    def __init__(self, policy: Any, own: np.ndarray):
        self.policy, self.own = policy, own
        self.name = str(getattr(policy, "name", type(policy).__name__))

    def act(self, state: State) -> Decision:
        d = self.policy.act(state)
        if not isinstance(d, Decision):
            d = Decision(np.asarray(d, float))
        orders = np.where(self.own, d.orders, 0.0)
        return Decision(orders, None, {**(d.info or {}), "proposed": orders})


class OrgDecider:
    """One organization's decision: ``act(view)`` runs its policy (restricted to its
    lanes) behind ``wrap`` (the mode: ``Projected`` with its restricted projector, or
    the policy itself in pure mode). What a decision service runs, on a batch of 1."""

    def __init__(self, scope: OrgScope, policy: Any, wrap: Callable[[Any], Any]):
        self.scope, self.policy = scope, policy
        self.decider = wrap(OwnLanes(policy, scope.own))
        self.name = str(getattr(policy, "name", type(policy).__name__))

    def act(self, view: State) -> Decision:
        d = self.decider.act(view)
        if not isinstance(d, Decision):
            d = Decision(np.asarray(d, float))
        return d


_SUM = ("projection_l1", "solve_ms", "relaxations")
_MAX = ("solved", "solver_used")


class PerOrgPolicy:
    """Every organization decides its lanes from its own view, downstream-first
    (:func:`decision_order`); the released orders of all of them are the day's orders.
    ``deciders``: one :class:`OrgDecider` per organization. ``on_decision(scope, view,
    decision)`` is called after each organization's decision (e.g. to log it)."""

    def __init__(
        self,
        layout: Layout,
        deciders: Sequence[OrgDecider],
        on_decision: Callable[[OrgScope, State, Decision], None] | None = None,
    ):
        self.layout = layout
        by_org = {d.scope.org: d for d in deciders}
        self.deciders = [by_org[o] for o in decision_order(layout)]
        self.on_decision = on_decision
        self.name = self.deciders[0].name if self.deciders else "per-org"

    def act(self, state: State) -> Decision:
        b, m = state.owed.shape
        released = np.zeros((b, m))
        info: dict[str, Any] = {}
        for dec in self.deciders:
            view = org_view(state, dec.scope, released)
            d = dec.act(view)
            own = dec.scope.own
            released[:, own] = np.asarray(d.orders)[:, own]
            for key, value in (d.info or {}).items():
                if key in _SUM:
                    info[key] = info.get(key, 0.0) + value
                elif key in _MAX:
                    info[key] = np.maximum(info.get(key, 0.0), value)
                elif key in ("relaxation_log", "solver_event_log"):
                    info[key] = tuple(info.get(key, ())) + tuple(value)
            if self.on_decision is not None:
                self.on_decision(dec.scope, view, d)
        return Decision(released, None, info or None)
