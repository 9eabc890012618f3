"""The decision request and reply of one organization's service, and their mapping to
and from the simulator's :class:`~fedinv.sim.simulator.State` (docs/service.md).

A request carries what the organization knows today (:mod:`fedinv.policies.perorg`):
its nodes, the lanes it buys on, the lanes it supplies to other organizations, its
budget spent this month and the day. :func:`state_from_request` builds the batch-of-1
``State`` the simulator would give the organization's policy (everything it does not
know is 0); :func:`request_from_state` is the inverse, used by ``fedinv replay`` and by
``fedinv simulate --log``: ``state_from_request(request_from_state(s))`` is
``org_view(s)`` on every field a policy or the safety layer reads (a test).

Units: units of the node's item (component units for component stock and for lanes
into an assembling node), $ for the budget, days for delays.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat

from fedinv.model.layout import Layout
from fedinv.policies.perorg import OrgScope, org_scope
from fedinv.sim.simulator import State


class NodeState(BaseModel):
    """One node of the organization this morning (units)."""

    model_config = ConfigDict(extra="forbid")
    on_hand: NonNegativeFloat = Field(description="finished units on hand after today's demand")
    backorders: NonNegativeFloat = Field(0.0, description="customer backorders")
    demand: NonNegativeFloat = Field(0.0, description="today's customer demand")
    components: dict[str, NonNegativeFloat] = Field(
        default_factory=dict, description="an assembling node's component stock by item"
    )


class LaneState(BaseModel):
    """One lane the organization sees. On a lane it buys on every field applies; on a
    lane it supplies to another organization only ``owed``, ``received_yesterday``,
    ``arrived_today``, ``announced_outage`` and ``orders_today``."""

    model_config = ConfigDict(extra="forbid")
    in_transit: list[NonNegativeFloat] = Field(
        default_factory=list, description="units arriving in 1, 2, ... days"
    )
    to_source: list[NonNegativeFloat] = Field(
        default_factory=list,
        description="orders released, reaching the source in 1, 2, ... days (order lead time)",
    )
    owed: NonNegativeFloat = Field(0.0, description="ordered, not yet shipped by the source")
    ordered_this_month: NonNegativeFloat = 0.0
    released_yesterday: NonNegativeFloat = 0.0
    received_yesterday: NonNegativeFloat = Field(
        0.0, description="orders that reached the lane's source yesterday"
    )
    arrived_today: NonNegativeFloat = Field(
        0.0, description="orders that reached the source this morning"
    )
    announced_outage: bool = Field(False, description="the lane's supply is in an announced outage")
    delay_notice_days: NonNegativeFloat = Field(0.0, description="extra transit days announced")
    orders_today: NonNegativeFloat | None = Field(
        None, description="a lane supplied to another organization: its released orders today"
    )


class DecisionRequest(BaseModel):
    """The organization's state today."""

    model_config = ConfigDict(extra="forbid")
    day: int = Field(ge=0, description="day index from the scenario's start date")
    date: dt.date | None = Field(None, description="optional: must be start date + day")
    nodes: dict[str, NodeState]
    lanes: dict[str, LaneState] = Field(default_factory=dict)
    budget_spent: NonNegativeFloat = Field(0.0, description="$ spent this calendar month")


_OUTBOUND_ALLOWED = {"owed", "received_yesterday", "arrived_today", "announced_outage"}


class RequestError(ValueError):
    """A request that passed the schema but not the organization: ``errors`` are
    FastAPI-style ``{"loc": [...], "msg": ..., "type": ...}`` entries."""

    def __init__(self, errors: list[dict[str, Any]]):
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))
        self.errors = errors


@dataclass(frozen=True)
class Codec:
    """Request <-> State for one organization of one layout (``pipeline_len``,
    ``order_len``: the simulator's ring-buffer lengths, ``start_date`` ISO)."""

    layout: Layout
    scope: OrgScope
    pipeline_len: int
    order_len: int
    transfer_len: int
    start_date: str

    @classmethod
    def for_simulator(cls, sim: Any, org: str) -> Codec:
        return cls(
            sim.layout,
            org_scope(sim.layout, org),
            sim.pipeline_len,
            sim.order_len,
            sim.transfer_len,
            sim.scenario.start_date,
        )

    @cached_property
    def node_ids(self) -> list[str]:
        lay = self.layout
        return [lay.node_ids[i] for i in np.flatnonzero(self.scope.nodes)]

    @cached_property
    def own_lane_ids(self) -> list[str]:
        return [self.layout.lane_ids[m] for m in np.flatnonzero(self.scope.own)]

    @cached_property
    def outbound_lane_ids(self) -> list[str]:
        return [self.layout.lane_ids[m] for m in np.flatnonzero(self.scope.outbound)]

    @cached_property
    def _own_index(self) -> np.ndarray:
        return np.flatnonzero(self.scope.own)

    @cached_property
    def _nodes(self) -> dict[str, tuple[int, dict[str, int]]]:
        """``{node id: (node index, {component item: slot})}`` of the organization."""
        lay = self.layout
        items = [item for nd in lay.network.nodes for item in nd.bill_of_materials]
        slots = {i: np.flatnonzero(lay.comp_node == i) for i in np.flatnonzero(self.scope.nodes)}
        return {
            lay.node_ids[i]: (int(i), {items[k]: int(k) for k in ks}) for i, ks in slots.items()
        }

    @cached_property
    def _lanes(self) -> dict[str, tuple[int, bool]]:
        """``{lane id: (lane index, supplied to another organization)}`` it sees."""
        sc, ids = self.scope, self.layout.lane_ids
        return {ids[j]: (int(j), bool(sc.outbound[j])) for j in np.flatnonzero(sc.lanes)}

    def calendar(self, day: int) -> tuple[dt.date, bool, int, int]:
        """``(date, month_end, weekday, day_of_year)`` of ``day`` (the simulator's)."""
        date = dt.date.fromisoformat(str(self.start_date)) + dt.timedelta(days=day)
        tomorrow = date + dt.timedelta(days=1)
        return date, tomorrow.month != date.month, date.weekday(), date.timetuple().tm_yday

    # -- request -> State ------------------------------------------------------------

    def state(self, req: DecisionRequest) -> State:
        """The batch-of-1 view the policy acts on (RequestError naming bad fields)."""
        lay, sc = self.layout, self.scope
        errors: list[dict[str, Any]] = []

        def bad(loc: list[Any], msg: str, kind: str = "value_error") -> None:
            errors.append({"loc": ["body", *loc], "msg": msg, "type": kind})

        n, m, c = lay.num_nodes, lay.num_lanes, lay.num_components
        date, month_end, weekday, doy = self.calendar(req.day)
        if req.date is not None and req.date != date:
            bad(["date"], f"day {req.day} is {date.isoformat()}, not {req.date.isoformat()}")
        node_rows = np.zeros((3, 1, n))  # on hand, backlog, demand
        comps = np.zeros((1, c))
        known_nodes = self._nodes
        for name, node in req.nodes.items():
            found = known_nodes.get(name)
            if found is None:
                bad(
                    ["nodes", name],
                    f"unknown node {name!r} of organization {sc.org_id!r}; "
                    f"expected some of {', '.join(self.node_ids)}",
                )
                continue
            i, slots = found
            node_rows[:, 0, i] = (node.on_hand, node.backorders, node.demand)
            for item, qty in node.components.items():
                k = slots.get(item)
                if k is None:
                    bad(
                        ["nodes", name, "components", item],
                        f"node {name!r} assembles from {', '.join(slots) or 'nothing'}, "
                        f"not {item!r}",
                    )
                else:
                    comps[0, k] = qty
        if len(req.nodes) != len(known_nodes) or errors:
            for name in self.node_ids:
                if name not in req.nodes:
                    bad(["nodes", name], f"node {name!r} is missing", "missing")
        p, q = self.pipeline_len, self.order_len
        pipeline, order_pipeline = np.zeros((1, m, p)), np.zeros((1, m, q))
        given = np.full((1, m), np.nan)
        given[0, sc.outbound] = 0.0
        known_lanes = self._lanes
        index: list[int] = []
        values: list[tuple[float, ...]] = []
        for name, ln in req.lanes.items():
            found = known_lanes.get(name)
            if found is None:
                bad(
                    ["lanes", name],
                    f"unknown lane {name!r} for organization {sc.org_id!r}; expected some of "
                    f"{', '.join(self.own_lane_ids + self.outbound_lane_ids)}",
                )
                continue
            j, outbound = found
            if outbound:
                for f in sorted(ln.model_fields_set - _OUTBOUND_ALLOWED - {"orders_today"}):
                    bad(
                        ["lanes", name, f],
                        f"lane {name!r} is supplied to another organization: its {f} is "
                        "the buyer's, not known here",
                    )
                given[0, j] = ln.orders_today or 0.0
            elif ln.orders_today is not None:
                bad(
                    ["lanes", name, "orders_today"],
                    f"lane {name!r} is bought by {sc.org_id!r}: its orders are this decision",
                )
            k = len(ln.in_transit)
            if k > p - 1:
                bad(
                    ["lanes", name, "in_transit"],
                    f"at most {p - 1} arrival days (the longest lead time), got {k}",
                )
            else:  # slot (day + 1 + i) % p holds the units arriving in i + 1 days
                for i, qty in enumerate(ln.in_transit):
                    pipeline[0, j, (req.day + 1 + i) % p] = qty
            k = len(ln.to_source)
            if k > q - 1:
                bad(
                    ["lanes", name, "to_source"],
                    f"at most {q - 1} days (the longest order lead time), got {k}",
                )
            else:
                for i, qty in enumerate(ln.to_source):
                    order_pipeline[0, j, (req.day + 1 + i) % q] = qty
            index.append(j)
            values.append(
                (
                    ln.owed,
                    ln.ordered_this_month,
                    ln.released_yesterday,
                    ln.received_yesterday,
                    ln.arrived_today,
                    float(ln.announced_outage),
                    ln.delay_notice_days,
                )
            )
        if errors:
            raise RequestError(errors)
        table = np.zeros((len(_LANE_ARRAYS), 1, m))  # one row per field (_LANE_ARRAYS order)
        if index:
            table[:, 0, index] = np.array(values).T
        lane = dict(zip(_LANE_ARRAYS, table, strict=True))
        spend = np.zeros((1, len(lay.org_ids)))
        spend[0, sc.org] = req.budget_spent
        z = np.zeros((1, n))
        return State(
            day=req.day,
            on_hand=node_rows[0],
            components=comps,
            backlog=node_rows[1],
            owed=lane["owed"],
            pipeline=pipeline,
            order_pipeline=order_pipeline,
            transfer_pipeline=np.zeros((1, lay.num_transfers, self.transfer_len)),
            month_spend=spend,
            month_ordered=lane["month_ordered"],
            demand=node_rows[2],
            filled=z,
            sold=z.copy(),
            lost=z.copy(),
            shipped=np.zeros((1, m)),
            last_orders=lane["last_orders"],
            last_received=lane["last_received"],
            arrived_orders=lane["arrived_orders"],
            alert=lane["alert"],
            delay_notice=lane["delay_notice"],
            month_end=month_end,
            weekday=weekday,
            day_of_year=doy,
            given_orders=given,
        )

    # -- State -> request ------------------------------------------------------------

    def request(self, s: State, row: int = 0, given: np.ndarray | None = None) -> dict[str, Any]:
        """The JSON request of row ``row`` of the (full or viewed) state ``s``; ``given
        [M]``: the other organizations' released orders today."""
        lay, sc = self.layout, self.scope
        items = [item for nd in lay.network.nodes for item in nd.bill_of_materials]
        nodes = {}
        for i in np.flatnonzero(sc.nodes):
            entry: dict[str, Any] = {
                "on_hand": float(s.on_hand[row, i]),
                "backorders": float(s.backlog[row, i]),
                "demand": float(s.demand[row, i]),
            }
            slots = np.flatnonzero(lay.comp_node == i)
            if len(slots):
                entry["components"] = {items[k]: float(s.components[row, k]) for k in slots}
            nodes[lay.node_ids[i]] = entry
        known = s.known_pipeline  # arrival days as the destination knows them
        p, q = known.shape[2], s.order_pipeline.shape[2]
        lanes: dict[str, Any] = {}
        for j in np.flatnonzero(sc.lanes):
            out: dict[str, Any] = {
                "owed": float(s.owed[row, j]),
                "received_yesterday": float(s.last_received[row, j]),
                "arrived_today": float(s.arrived_orders[row, j]),
                "announced_outage": bool(s.alert[row, j] > 0),
            }
            if sc.outbound[j]:
                out["orders_today"] = float(given[j]) if given is not None else 0.0
            else:
                transit = [float(known[row, j, (s.day + k) % p]) for k in range(1, p)]
                to_src = [float(s.order_pipeline[row, j, (s.day + k) % q]) for k in range(1, q)]
                out.update(
                    in_transit=_trim(transit),
                    to_source=_trim(to_src),
                    ordered_this_month=float(s.month_ordered[row, j]),
                    released_yesterday=float(s.last_orders[row, j]),
                    delay_notice_days=float(s.delay_notice[row, j]),
                )
            lanes[lay.lane_ids[j]] = out
        return {
            "day": int(s.day),
            "date": self.calendar(int(s.day))[0].isoformat(),
            "nodes": nodes,
            "lanes": lanes,
            "budget_spent": float(s.month_spend[row, sc.org]),
        }

    def orders(self, orders: np.ndarray) -> dict[str, float]:
        """``{lane id: units}`` of the organization's lanes of ``orders [M]``."""
        return dict(zip(self.own_lane_ids, orders[self._own_index].tolist(), strict=True))


_LANE_ARRAYS = (
    "owed",
    "month_ordered",
    "last_orders",
    "last_received",
    "arrived_orders",
    "alert",
    "delay_notice",
)


def _trim(values: list[float]) -> list[float]:
    while values and values[-1] == 0.0:
        values.pop()
    return values


def canonical(obj: Any) -> bytes:
    """Canonical JSON (sorted keys, no spaces, no NaN) as UTF-8 bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def digest(obj: Any) -> str:
    """sha256 hex of :func:`canonical` ``obj``."""
    return hashlib.sha256(canonical(obj)).hexdigest()
