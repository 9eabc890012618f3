"""The daily projection program of the safety layer (docs/hybrid.md).

For one network and a batch of ``B`` replications, each day and each replication ``b``:

    minimize    sum_l w_l |x_l - p_l|                       (units; w_l default 1)
    subject to  0 <= x_l <= transport_l                     lane transport capacity
                x_l = lot_l n_l, n_l integer                lanes with a lot size (MILP)
                sum_{l ext. into i} x_l <= cap_i f_i        production (supplier) capacity
                sum_{l out of i} x_l <= cap_i f_i           shipping capacity (finite only)
                sum_{l brings item c to i} x_l <= bom_c cap_i f_i   assembly capacity
                sum_{l into i} x_l + sum_{k to i} y_k
                    <= storage_i - (on hand + components + on order + transfers coming)_i
                0 <= y_k <= transfer capacity_k             lateral transfer links
                sum_{l paid by o} (price_l + ship_l) x_l <= budget_o - spent_o
                x_l >= commitment_l - ordered this month_l  (on a month's last day)

``x`` are the orders per lane, ``y`` the lateral transfers per link (the program's
columns are the ``M`` lanes, then the ``T`` links: ``x`` in the code holds both; a link
sits in its receiver's storage row only -- the simulator rations a transfer to the
sender's stock and counts no other constraint on it). ``p`` are the proposals (NaN and
negatives read as 0, as the simulator reads them),
``f`` the capacity fraction known today: 1, or the outage's ``capacity_fraction`` once
``state.alert`` announces an outage of that node or lane (a fraction 0 shuts even an
unlimited capacity: the lanes it would bound get the bound 0). Right-hand sides below zero
are clamped at 0 (x = 0 stays feasible). Every constraint is the one
``Simulator._release_and_cost`` counts (plus assembly capacity), with the same
tolerances, so released orders are counted as violations only where the state did not
tell the truth (an outage before its notice) or where a constraint was relaxed.

Storage uses on hand *before* today's shipments leave (the simulator checks after):
conservative, exact at nodes that do not ship (e.g. distributors).

**Infeasible days.** With x = 0 every ``<=`` row holds, so only commitments can make a
day infeasible (a commitment beyond a transport or production capacity, the budget or
the storage headroom). Then the *soft* constraints -- ``contract``, ``storage``,
``budget`` -- get nonnegative slack variables and are relaxed lexicographically in
``soft_order`` (softest first; default contract, storage, budget): the hardest soft
kind's total slack is minimized first and fixed, then the next, then the L1 distance.
Capacities, lots and x >= 0 are physical and never relaxed. Every relaxed row becomes a
:class:`fedinv.policies.projector.Relaxation` with its amount and the conflict that caused it.

This module holds the program's structure and everything about it computed in numpy
(:class:`ProjectionProgram`: a day's data from a state, feasibility checks, repair and
relaxation records); ``solvers/projection.py`` drives the solves, ``solvers/highs.py``
and ``solvers/pyomo_model.py`` hold the two backends' models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from fedinv.model.layout import (
    OUTPUT_ASSEMBLY,
    OUTPUT_PRODUCTION,
    OUTPUT_SHIPPING,
    Layout,
    capacity_times,
)
from fedinv.model.network import Outage
from fedinv.policies.projector import SOFT_KINDS, Relaxation, SolverError
from fedinv.sim.simulator import State

TOL = 1e-9
"""Violation tolerance of rows and bounds (units or $), the simulator's."""
LOT_TOL = 1e-6
"""Tolerance of a lot-size remainder (units), the simulator's."""
NOISE = 1e-6
"""Absolute part of the solver-noise threshold (units or $)."""
NOISE_REL = 1e-7
"""Relative part: an excess below ``NOISE + NOISE_REL x (|rhs| + |activity|)`` is solver
noise (HiGHS's tolerances act on a scaled model) and is repaired; above, on a soft row,
it is a relaxation."""
BIG = 1e12
"""Units: proposals above this are tamed before any solve (:meth:`ProjectionProgram.tame`)
-- HiGHS reads 1e20 as infinite and its tolerances are absolute."""
TIE_BREAK = 1e-4
"""Relative weight perturbation that makes the optimum unique (see module doc)."""
UNITS = {"contract": "units", "storage": "units", "budget": "$"}


@dataclass(frozen=True)
class RowGroup:
    """Rows ``a @ x <= rhs`` of one kind, one per target (a node, node:item or org)."""

    kind: str
    targets: tuple[str, ...]
    a: np.ndarray  # [R, M] >= 0
    daily: bool  # rhs changes from day to day
    soft: bool


@dataclass
class DayData:
    """A day's data of ``K`` blocks (replications)."""

    p: np.ndarray  # [K, M] proposals, cleaned
    ub: np.ndarray  # [K, M] transport capacity known today (inf: none)
    lb: np.ndarray  # [K, M] month-end commitments still to order (0 elsewhere)
    rhs: dict[str, np.ndarray]  # kind -> [K, R], clamped at 0
    raw_storage: np.ndarray  # [K, R_storage] headroom before clamping
    rhs_all: np.ndarray  # [K, sum R] every group's rhs, in the program's group order

    def take(self, idx: np.ndarray) -> DayData:
        return DayData(
            self.p[idx],
            self.ub[idx],
            self.lb[idx],
            {k: v[idx] for k, v in self.rhs.items()},
            self.raw_storage[idx],
            self.rhs_all[idx],
        )

    def pad(self, size: int, nominal_ub: np.ndarray) -> DayData:
        """Append empty blocks (p = 0, rhs = 0) up to ``size`` blocks."""
        k = self.p.shape[0]
        if size == k:
            return self
        extra = size - k

        def z(a: np.ndarray) -> np.ndarray:
            return np.concatenate([a, np.zeros((extra,) + a.shape[1:])])

        return DayData(
            z(self.p),
            np.concatenate([self.ub, np.broadcast_to(nominal_ub, (extra, len(nominal_ub)))]),
            z(self.lb),
            {kk: z(v) for kk, v in self.rhs.items()},
            z(self.raw_storage),
            z(self.rhs_all),
        )


class ProjectionProgram:
    """The program's structure for one network, and everything computed in numpy:
    day data from a state, feasibility checks, repair and relaxation records.

    ``weights``: ``[M]`` L1 weights per lane (default 1: every unit moved counts the
    same). ``soft_order``: soft kinds, softest first (a subset of ``contract``,
    ``storage``, ``budget`` that contains ``contract``; kinds left out are hard).
    ``outages``: the scenario's outages (capacity fractions once announced)."""

    def __init__(
        self,
        layout: Layout,
        outages: Sequence[Outage] = (),
        weights: np.ndarray | None = None,
        soft_order: Sequence[str] = SOFT_KINDS,
    ):
        lay = layout
        self.layout = lay
        m, t = lay.num_lanes, lay.num_transfers
        self.num_lanes = m
        self.num_transfers = t
        self.num_cols = mc = m + t
        """Columns of ``x``: the ``M`` lanes, then the ``T`` lateral transfer links."""
        ids = lay.node_ids
        self.col_ids = tuple(lay.lane_ids) + tuple(
            f"{ids[a]}=>{ids[b]}" for a, b in zip(lay.transfer_src, lay.transfer_dst, strict=True)
        )
        """Column names: lanes ``SOURCE->DESTINATION``, transfer links ``SOURCE=>DESTINATION``."""
        weights = np.ones(m) if weights is None else np.asarray(weights, float).copy()
        if weights.shape != (m,) or not np.all(np.isfinite(weights)) or np.any(weights <= 0):
            raise ValueError(f"weights must be {m} positive finite numbers, one per lane")
        self.weights = np.concatenate([weights, np.ones(t)])
        """``[M + T]`` L1 weights: the lanes' (given), then 1 per transfer link."""
        self.w_eff = self.weights * (1.0 + TIE_BREAK * (np.arange(mc) + 1) / max(mc, 1))
        soft_order = tuple(soft_order)
        if (
            len(set(soft_order)) != len(soft_order)
            or not set(soft_order) <= set(SOFT_KINDS)
            or "contract" not in soft_order
        ):
            raise ValueError(
                f"soft_order must list distinct kinds of {SOFT_KINDS} and "
                f"include 'contract', got {soft_order!r}"
            )
        self.soft_order = soft_order
        zt = np.zeros(t)
        self.lot = np.concatenate([lay.lot_size, zt])
        self.has_lot = self.lot > 0
        self.lot_lanes = np.flatnonzero(self.has_lot)
        self.nominal_ub = np.concatenate([lay.transport_cap, lay.transfer_cap])
        self.unit_cost = lay.price + lay.shipping_cost  # [M]; transfers spend no budget
        self.commit = np.concatenate([lay.commitment, zt])
        self._into = np.concatenate(  # [N, M + T] the columns that bring stock into a node
            [lay.dst_mat.T, np.eye(lay.num_nodes)[lay.transfer_dst].reshape(t, lay.num_nodes).T],
            axis=1,
        )
        self.contract_lanes = np.flatnonzero(self.commit > 0)

        # Outage fractions: per node, per lane (1: never out), and which lanes announce
        # a node's outage (the simulator's ``alert`` marks them).
        nidx = {n: i for i, n in enumerate(lay.node_ids)}
        lidx = {ln: i for i, ln in enumerate(lay.lane_ids)}
        self.node_frac = np.ones(lay.num_nodes)
        self.lane_frac = np.ones(m)
        for o in outages:
            if o.target in nidx:
                i = nidx[o.target]
                self.node_frac[i] = min(self.node_frac[i], o.capacity_fraction)
            elif o.target in lidx:
                j = lidx[o.target]
                self.lane_frac[j] = min(self.lane_frac[j], o.capacity_fraction)
        self.node_outage = self.node_frac < 1.0
        self.lane_outage = self.lane_frac < 1.0
        self.alert_mat = np.zeros((m, lay.num_nodes))  # lane announces node's outage
        for i in np.flatnonzero(self.node_outage):
            self.alert_mat[(lay.lane_src == i) | (lay.external & (lay.lane_dst == i)), i] = 1.0
        # nodes of unlimited capacity that an outage shuts (capacity_fraction 0): no
        # capacity row holds their lanes, so while the outage is announced the lanes its
        # row would hold (external inbound for production, outbound for shipping, inbound
        # components for assembly) are bounded by 0, as a finite capacity's row would be
        shut = [
            i for i in np.flatnonzero(self.node_frac == 0.0) if not np.isfinite(lay.capacity[i])
        ]
        self.shut_nodes = np.array(shut, int)
        self.shut_mat = np.zeros((len(shut), mc))  # [shut node, column]: shut with it
        for r, i in enumerate(shut):
            kind = lay.output_kind[i]
            if kind == OUTPUT_PRODUCTION:
                held = lay.external & (lay.lane_dst == i)
            elif kind == OUTPUT_ASSEMBLY:
                held = np.isin(lay.lane_comp, np.flatnonzero(lay.comp_node == i))
            else:
                held = lay.lane_src == i
            self.shut_mat[r, :m][held] = 1.0
        self.ub_mutable = np.concatenate([self.lane_outage, np.zeros(t, bool)]) | (
            self.shut_mat > 0
        ).any(axis=0)
        """``[M + T]`` columns whose upper bound can change from day to day (outages)."""

        self.groups: list[RowGroup] = []
        self._cap_node: dict[str, np.ndarray] = {}  # kind -> [R] node of the row
        self._cap_scale: dict[str, np.ndarray] = {}  # kind -> [R] capacity multiplier
        cap = lay.capacity
        ids = lay.node_ids
        # production: a supplier's external orders
        rows = [
            i
            for i in range(lay.num_nodes)
            if lay.output_kind[i] == OUTPUT_PRODUCTION
            and np.isfinite(cap[i])
            and (lay.external & (lay.lane_dst == i)).any()
        ]
        self._add_cap_group(
            "production",
            rows,
            [lay.external & (lay.lane_dst == i) for i in rows],
            np.ones(len(rows)),
        )
        rows = [
            i
            for i in range(lay.num_nodes)
            if lay.output_kind[i] == OUTPUT_SHIPPING
            and np.isfinite(cap[i])
            and (lay.lane_src == i).any()
        ]
        self._add_cap_group("shipping", rows, [lay.lane_src == i for i in rows], np.ones(len(rows)))
        comp_items = [item for n in lay.network.nodes for item in n.bill_of_materials]
        slots = [
            c
            for c in range(lay.num_components)
            if lay.output_kind[lay.comp_node[c]] == OUTPUT_ASSEMBLY
            and np.isfinite(cap[lay.comp_node[c]])
            and (lay.lane_comp == c).any()
        ]
        self._add_cap_group(
            "assembly",
            [int(lay.comp_node[c]) for c in slots],
            [lay.lane_comp == c for c in slots],
            np.array([lay.comp_bom[c] for c in slots]),
            [f"{ids[lay.comp_node[c]]}:{comp_items[c]}" for c in slots],
        )
        # storage: nodes with finite storage and inbound lanes
        st_rows = [
            i
            for i in range(lay.num_nodes)
            if np.isfinite(lay.storage[i]) and (lay.lane_dst == i).any()
        ]
        self.storage_nodes = np.array(st_rows, int)
        if st_rows:  # orders on the node's inbound lanes and transfers to it
            a = self._into[st_rows]
            self.groups.append(
                RowGroup(
                    "storage", tuple(ids[i] for i in st_rows), a, True, "storage" in soft_order
                )
            )
        # budget: organizations with a finite budget paying for priced lanes
        orgs = [
            o
            for o in range(len(lay.org_ids))
            if np.isfinite(lay.budget[o]) and ((lay.lane_org == o) & (self.unit_cost > 0)).any()
        ]
        self.budget_orgs = np.array(orgs, int)
        if orgs:
            a = np.stack(
                [np.r_[np.where(lay.lane_org == o, self.unit_cost, 0.0), zt] for o in orgs]
            )
            self.groups.append(
                RowGroup(
                    "budget", tuple(lay.org_ids[o] for o in orgs), a, True, "budget" in soft_order
                )
            )
        self.group = {g.kind: g for g in self.groups}
        if lay.num_components:
            self._comp_node = np.eye(lay.num_nodes)[lay.comp_node].reshape(
                lay.num_components, lay.num_nodes
            )
        # soft kinds present, hardest first (the order of the lexicographic phases)
        present = {g.kind for g in self.groups if g.soft}
        if len(self.contract_lanes):
            present.add("contract")
        self.phases = tuple(k for k in reversed(soft_order) if k in present)
        self._a_all_t = (
            np.concatenate([g.a for g in self.groups]).T if self.groups else np.zeros((mc, 0))
        )
        # repair: coefficients of the lanes without a lot size [M, R], and [R, M] holds
        self._free_coef_t = self._a_all_t * ~self.has_lot[:, None]
        self._free_holds = self._free_coef_t.T > 0
        self._row_coef = np.maximum(self._a_all_t.max(axis=0), 1.0) if self.groups else np.zeros(0)
        """``[R]`` each row's largest coefficient, at least 1 (units of the row per unit)."""
        self._row_kind = np.array([g.kind for g in self.groups for _ in g.targets], object)
        # (lane, row) pairs of the rows, for the bounds they imply (implied_ub): of the
        # lot lanes in every row, of every lane in every row, and in the hard rows only
        soft_row = np.concatenate([np.full(g.a.shape[0], g.soft) for g in self.groups] or [[]])
        self._pairs = {
            "lot": self._limit_pairs(self.lot_lanes, np.ones(len(soft_row), bool)),
            "all": self._limit_pairs(np.arange(mc), np.ones(len(soft_row), bool)),
            "hard": self._limit_pairs(np.arange(mc), ~soft_row.astype(bool)),
        }
        offsets = np.cumsum([0] + [g.a.shape[0] for g in self.groups])
        self.row_offset = {g.kind: int(o) for g, o in zip(self.groups, offsets, strict=False)}
        """First column of each group's rows in ``DayData.rhs_all``."""

    def _add_cap_group(
        self,
        kind: str,
        nodes: list[int],
        masks: list[np.ndarray],
        scale: np.ndarray,
        targets: list[str] | None = None,
    ) -> None:
        if not nodes:
            return
        pad = np.zeros(self.num_transfers)  # capacities bound lanes only
        a = np.stack([np.r_[mk.astype(float), pad] for mk in masks])
        nodes_a = np.array(nodes, int)
        daily = bool(self.node_outage[nodes_a].any())
        self.groups.append(
            RowGroup(
                kind, tuple(targets or [self.layout.node_ids[i] for i in nodes]), a, daily, False
            )
        )
        self._cap_node[kind] = nodes_a
        self._cap_scale[kind] = np.asarray(scale, float)

    # -- day data --------------------------------------------------------------------

    def clean(self, proposals: np.ndarray, transfers: np.ndarray | None = None) -> np.ndarray:
        """Proposals as the simulator reads them (NaN and negatives are 0): orders
        ``[B, M]`` and lateral transfers ``[B, T]`` (None: none proposed) as one
        ``[B, M + T]`` array of columns."""
        p = np.array(proposals, dtype=float)
        if p.ndim != 2 or p.shape[1] != self.num_lanes:
            raise ValueError(f"proposals must have shape [B, {self.num_lanes}], got {p.shape}")
        if self.num_transfers:
            if transfers is None:
                tr = np.zeros((p.shape[0], self.num_transfers))
            else:
                tr = np.array(transfers, dtype=float)
                if tr.shape != (p.shape[0], self.num_transfers):
                    raise ValueError(
                        f"transfers must have shape [{p.shape[0]}, {self.num_transfers}], "
                        f"got {tr.shape}"
                    )
            p = np.concatenate([p, tr], axis=1)
        p[np.isnan(p)] = 0.0
        if np.isposinf(p).any():
            raise ValueError("proposals must be finite (got +inf)")
        return np.maximum(p, 0.0)

    def known_node_factor(self, state: State) -> np.ndarray:
        """``[B, N]`` capacity fraction known today (announced outages)."""
        b = state.alert.shape[0]
        if not self.node_outage.any():
            return np.ones((b, self.layout.num_nodes))
        alerted = (state.alert @ self.alert_mat) > 0
        return np.where(alerted & self.node_outage, self.node_frac, 1.0)

    def day_data(self, state: State, p: np.ndarray) -> DayData:
        """The right-hand sides of day ``state.day`` for proposals ``p [B, M + T]``."""
        lay = self.layout
        b = p.shape[0]
        lane_f = np.where((state.alert > 0) & self.lane_outage, self.lane_frac, 1.0)
        if self.num_transfers:
            lane_f = np.concatenate([lane_f, np.ones((b, self.num_transfers))], axis=1)
        ub = capacity_times(self.nominal_ub, lane_f)  # an announced fraction 0 shuts the lane
        node_f = self.known_node_factor(state)
        if len(self.shut_nodes):
            shut = (node_f[:, self.shut_nodes] == 0.0) @ self.shut_mat > 0
            ub = np.where(shut, 0.0, ub)
        rhs: dict[str, np.ndarray] = {}
        for kind, nodes in self._cap_node.items():
            rhs[kind] = lay.capacity[nodes] * self._cap_scale[kind] * node_f[:, nodes]
        raw = np.zeros((b, 0))
        if "storage" in self.group:
            n = self.storage_nodes
            stock = state.on_hand[:, n]
            if lay.num_components:
                stock = stock + (state.components @ self._comp_node)[:, n]
            inbound = (state.on_order @ lay.dst_mat)[:, n]
            if self.num_transfers:  # transfers on their way to the node
                landing = state.transfer_pipeline.sum(axis=2) @ self._into[:, self.num_lanes :].T
                inbound = inbound + landing[:, n]
            raw = lay.storage[n] - stock - inbound
            rhs["storage"] = np.maximum(raw, 0.0)
        if "budget" in self.group:
            o = self.budget_orgs
            rhs["budget"] = np.maximum(lay.budget[o] - state.month_spend[:, o], 0.0)
        lb = np.zeros((b, self.num_cols))
        if state.month_end and len(self.contract_lanes):
            c = self.contract_lanes
            lb[:, c] = np.maximum(self.commit[c] - state.month_ordered[:, c], 0.0)
        rhs_all = (
            np.concatenate([rhs[g.kind] for g in self.groups], axis=1)
            if self.groups
            else np.zeros((b, 0))
        )
        return DayData(p, np.array(ub), lb, rhs, raw, rhs_all)

    def envelope(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The lot lanes' convex envelope of ``w |x - p|`` over the lot lattice, as the
        models write it: ``x = F + u + up - dn`` with ``0 <= u <= lot`` costing ``s`` per
        unit, ``up`` and ``dn`` costing ``w``. Returns ``F [K, n_lot]`` (the lot multiple
        at or below ``p``, units), ``s [K, n_lot]`` ($-free cost per unit, in
        ``(-w, w]``) and ``offset [K]`` (``sum w (p - F)``, the cost at ``x = F``). The
        envelope equals ``w |x - p|`` at every lot multiple and lies below it elsewhere."""
        lanes = self.lot_lanes
        lot, w = self.lot[lanes], self.w_eff[lanes]
        q = p[:, lanes]
        f = np.floor(q / lot) * lot
        return f, w * (lot - 2.0 * (q - f)) / lot, (w * (q - f)).sum(axis=1)

    def _limit_pairs(
        self, lanes: np.ndarray, rows_used: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The nonzero coefficients of rows ``rows_used`` on ``lanes``, grouped by lane:
        ``(positions in lanes, group starts, rows, coefficients)``."""
        a = self._a_all_t[lanes] * rows_used[None, :]  # [L, R]
        li, ri = np.nonzero(a)  # row-major: grouped by lane
        starts = np.flatnonzero(np.r_[True, li[1:] != li[:-1]]) if len(li) else li
        return li[starts], starts, ri, a[li, ri]

    def _limit(self, day: DayData, ub: np.ndarray, pairs: str) -> np.ndarray:
        """``ub [K, L]`` lowered to ``rhs / a`` of every row of ``pairs`` holding a lane
        (the row's other lanes are >= 0, so no feasible point goes above)."""
        cols, starts, rows, coef = self._pairs[pairs]
        if len(rows):
            lim = np.minimum.reduceat(day.rhs_all[:, rows] / coef, starts, axis=1)
            ub[:, cols] = np.minimum(ub[:, cols], lim)
        return ub

    def implied_ub(self, day: DayData, hard_only: bool = False) -> np.ndarray:
        """``[K, M]`` units: the largest value each lane takes in any point of the program,
        its transport bound and ``rhs / a`` of every row holding it; ``hard_only``: of
        the capacity rows only (on a day when soft rows get slack)."""
        return self._limit(day, day.ub.copy(), "hard" if hard_only else "all")

    def tame(self, day: DayData) -> tuple[DayData, np.ndarray, np.ndarray, np.ndarray]:
        """The day with proposals above :data:`BIG` units made harmless: ``(day, alone,
        x, offset)``, ``alone [K, M]`` where ``x [K, M]`` is to be released, ``offset
        [K]`` what the objective at the original proposals adds to the tamed one.

        A lane that nothing bounds (no transport bound, in no row: :meth:`implied_ub` is
        infinite) is separable, its optimum its own: the proposal (a lot lane: the
        nearest lot multiple), at least the commitment; the paths below see it proposed
        at its commitment (``alone``: then ``x`` is released there). Elsewhere a proposal
        is cut to ``max(U, BIG)`` (``U`` the implied bound): for ``x <= U``,
        ``w |x - p| = w |x - max(U, BIG)| + w (p - max(U, BIG))``, so the optimum stays
        (on a day that relaxes soft rows, as long as no order beyond ``BIG`` is needed to
        meet a commitment)."""
        u = self.implied_ub(day)
        p = day.p
        lot = np.where(self.has_lot, self.lot, 1.0)
        least = np.where(self.has_lot, np.ceil(day.lb / lot - 1e-9) * lot, day.lb)
        own = np.where(
            self.has_lot, np.maximum(np.round(p / lot) * lot, least), np.maximum(p, least)
        )
        alone = np.isinf(u) & (p > BIG)
        cut = np.minimum(p, np.maximum(u, BIG))
        offset = np.where(alone, np.abs(own - p), p - cut) @ self.w_eff
        return replace(day, p=np.where(alone, least, cut)), alone, own, offset

    def lot_ub(self, day: DayData) -> np.ndarray:
        """``[K, n_lot]`` upper bounds of the lot lanes implied by the program: the
        largest lot multiple within :meth:`implied_ub`. A valid cut: the MILP keeps its
        optimum, its LP relaxation gets tighter."""
        lanes = self.lot_lanes
        ub = self._limit(day, day.ub[:, lanes], "lot")
        lot = self.lot[lanes]
        return np.floor(ub / lot + 1e-9) * lot

    def on_lattice(self, x: np.ndarray) -> np.ndarray:
        """``[K]`` True where every lot lane of ``x [K, M]`` is within 1e-7 units of a lot
        multiple (a vertex of the LP relaxation that is integral up to solver noise)."""
        lanes = self.lot_lanes
        q = x[:, lanes] / self.lot[lanes]
        return (np.abs(q - np.round(q)) * self.lot[lanes] <= 1e-7).all(axis=1)

    # -- checks ----------------------------------------------------------------------

    def excess(self, x: np.ndarray, day: DayData) -> dict[str, np.ndarray]:
        """Violations of ``x [K, M]``: per kind, the positive excess per row (``[K, R]``),
        plus ``transport``, ``lot``, ``contract`` (``[K, M]``) and ``negative``."""
        out = {g.kind: np.maximum(x @ g.a.T - day.rhs[g.kind], 0.0) for g in self.groups}
        out["transport"] = np.maximum(x - day.ub, 0.0)
        rem = np.abs(x - np.round(x / np.where(self.has_lot, self.lot, 1.0)) * self.lot)
        out["lot"] = np.where(self.has_lot, rem, 0.0)
        out["contract"] = np.maximum(day.lb - x, 0.0)
        out["negative"] = np.maximum(-x, 0.0)
        return out

    def feasible(self, x: np.ndarray, day: DayData) -> np.ndarray:
        """``[K]`` True where ``x`` satisfies every constraint (simulator tolerances):
        what :meth:`excess` reports, in fewer numpy calls."""
        ok = ((x <= day.ub + TOL) & (x >= day.lb - TOL) & (x >= -TOL)).all(axis=1)
        if self.groups:
            ok &= (x @ self._a_all_t <= day.rhs_all + TOL).all(axis=1)
        if len(self.lot_lanes):
            q = x[:, self.lot_lanes]
            lot = self.lot[self.lot_lanes]
            ok &= (np.abs(q - np.round(q / lot) * lot) <= LOT_TOL).all(axis=1)
        return ok

    def least_orders(self, day: DayData, contract_closed: bool) -> np.ndarray:
        """The componentwise least orders meeting the commitments (rounded up to lots)
        when ``contract_closed``, else 0: every ``<=`` row holds at x = 0 and all have
        nonnegative coefficients, so the day is feasible iff these orders are."""
        if not contract_closed:
            return np.zeros_like(day.p)
        lot = np.where(self.has_lot, self.lot, 1.0)
        up = np.ceil(day.lb / lot - 1e-9) * lot
        return np.where(self.has_lot, up, day.lb)

    def _violated(self, x: np.ndarray, day: DayData, closed: set[str]) -> np.ndarray:
        """``[K]`` True where ``x`` breaks a hard row, a transport bound (lots rounded
        down) or a row of a closed soft kind."""
        lot = np.where(self.has_lot, self.lot, 1.0)
        ub = np.where(self.has_lot, np.floor(day.ub / lot + 1e-9) * lot, day.ub)
        bad = (x > ub + TOL).any(axis=1)
        for g in self.groups:
            if not g.soft or g.kind in closed:
                bad |= (x @ g.a.T > day.rhs[g.kind] + TOL).any(axis=1)
        return bad

    def first_relaxed(self, day: DayData) -> np.ndarray:
        """``[K]`` index into :attr:`phases` of the hardest soft kind that must be
        relaxed (``len(phases)``: none): closing kinds hardest first, the first closure
        that makes the least orders infeasible."""
        k = day.p.shape[0]
        first = np.full(k, len(self.phases))
        if not (day.lb > 0).any():  # no commitment due: x = 0 is feasible
            return first
        hard_contract = "contract" not in self.phases
        for j in range(len(self.phases)):
            closed = set(self.phases[: j + 1])
            x = self.least_orders(day, hard_contract or "contract" in closed)
            bad = self._violated(x, day, closed) & (first == len(self.phases))
            first[bad] = j
        if hard_contract or not self.phases:
            x = self.least_orders(day, True)
            if self._violated(x, day, set(self.phases)).any():
                raise SolverError(
                    "infeasible day: month-end commitments conflict with hard "
                    "constraints and 'contract' is not a soft kind"
                )
        return first

    def conflicts(self, day: DayData, b: int, j: int) -> str:
        """Why block ``b`` is infeasible once the kinds ``phases[:j+1]`` are closed."""
        closed = set(self.phases[: j + 1]) | (
            {"contract"} if "contract" not in self.phases else set()
        )
        x = self.least_orders(day, "contract" in closed)[b]
        lanes = self.col_ids
        need = [
            f"{lanes[c]} {day.lb[b, c]:,.6g} units" for c in self.contract_lanes if day.lb[b, c] > 0
        ]
        parts = []
        lot = np.where(self.has_lot, self.lot, 1.0)
        ub = np.where(self.has_lot, np.floor(day.ub[b] / lot + 1e-9) * lot, day.ub[b])
        for c in np.flatnonzero(x > ub + TOL):
            parts.append(f"transport capacity of {lanes[c]} is {ub[c]:,.6g} units")
        for g in self.groups:
            if g.soft and g.kind not in closed:
                continue
            act = g.a @ x
            for r in np.flatnonzero(act > day.rhs[g.kind][b] + TOL):
                unit = "$" if g.kind == "budget" else "units"
                left = "left" if g.kind in ("budget", "storage") else "today"
                parts.append(
                    f"{g.kind} of {g.targets[r]}: they need {act[r]:,.6g} {unit}, "
                    f"{day.rhs[g.kind][b, r]:,.6g} {unit} {left}"
                )
        what = ("month-end commitments (" + ", ".join(need) + ")") if need else "orders"
        return f"{what} conflict with " + "; ".join(parts or ["the other constraints"])

    # -- repair and records ------------------------------------------------------------

    def repair(self, x: np.ndarray, day: DayData) -> np.ndarray:
        """Remove solver noise: x >= 0, exact lot multiples, transport bounds, commitments
        met where within noise, and rows within noise of their bound pulled just inside
        (by 1e-10 relative) through lanes without a lot size. A row's noise is
        ``NOISE`` units times its largest coefficient (a budget row's $ per unit), plus
        ``NOISE_REL`` relative, plus what rounding its lot lanes to exact multiples added
        to it (HiGHS accepts lot counts within 1e-9 of an integer)."""
        x = np.maximum(x, 0.0)
        lot = np.where(self.has_lot, self.lot, 1.0)
        raw = x
        x = np.where(self.has_lot, np.round(x / lot) * lot, np.minimum(x, day.ub))
        short = day.lb - x
        x = np.where(~self.has_lot & (short > 0) & (short <= NOISE + NOISE_REL * day.lb), day.lb, x)
        if not self.groups:
            return x
        floor = np.where(self.has_lot, x, np.minimum(day.lb, x))
        rhs = day.rhs_all
        act = x @ self._a_all_t
        margin = 1e-10 * np.maximum(1.0, np.abs(rhs))
        over = act - (rhs - margin)
        noise = NOISE * self._row_coef + NOISE_REL * (np.abs(rhs) + np.abs(act)) + 2 * margin
        if len(self.lot_lanes):
            noise = noise + np.maximum((x - raw) * self.has_lot, 0.0) @ self._a_all_t
        need = (over > 0) & (over <= noise)
        if not need.any():
            return x
        coef_t, holds = self._free_coef_t, self._free_holds
        room = (x - floor) @ coef_t  # [K, R] $ or units that can be cut per row
        frac = np.where(
            need & (room > 0), np.minimum(over / np.where(room > 0, room, 1.0), 1.0), 0.0
        )
        # cut every free lane of a row by the row's fraction (the largest over its rows):
        # rows only lose activity, so each reaches rhs - margin or below
        cut = np.max(frac[:, :, None] * holds, axis=1)  # [K, M]
        return x - cut * (x - floor)

    def relaxed(self, kind: str, first: np.ndarray) -> np.ndarray:
        """``[K]`` True where ``kind`` is relaxed today for the block (``first``:
        :meth:`first_relaxed`; the kinds ``phases[first:]`` get slack)."""
        if kind not in self.phases:
            return np.zeros(len(first), bool)
        return first <= self.phases.index(kind)

    def relaxed_rows(self, first: np.ndarray) -> np.ndarray:
        """``[K, R]`` :meth:`relaxed` for every row of the program."""
        out = np.zeros((len(first), len(self._row_kind)), bool)
        for g in self.groups:
            out[:, self._row_kind == g.kind] = self.relaxed(g.kind, first)[:, None]
        return out

    def cut_to_fit(self, x: np.ndarray, day: DayData, first: np.ndarray) -> np.ndarray:
        """The last resort when a solve's orders, repaired, still break rows that must
        hold today (warm and cold): in each such row, lanes without a lot size are cut
        toward their commitment, then lot lanes one lot at a time, cheapest ``w / a``
        first. Rows only lose activity, so none breaks; the least orders (commitments in
        whole lots) hold every such row, so the loop ends. Feasible, not necessarily the
        optimum."""
        x = x.copy()
        lot = np.where(self.has_lot, self.lot, 1.0)
        floor = np.where(self.has_lot, np.ceil(day.lb / lot - 1e-9) * lot, day.lb)
        a_t, free = self._a_all_t, ~self.has_lot
        must = ~self.relaxed_rows(first)
        for b in range(x.shape[0]):
            for _ in range(10 * self.num_cols + 10):
                rhs = day.rhs_all[b]
                over = x[b] @ a_t - rhs
                bad = np.flatnonzero(must[b] & (over > TOL))
                if not len(bad):
                    break
                r = bad[0]
                coef = a_t[:, r]
                need = over[r] + 1e-10 * max(1.0, abs(rhs[r]))
                room = np.where(free & (coef > 0), x[b] - floor[b], 0.0)
                if (room * coef).sum() > 0:
                    frac = min(need / (room * coef).sum(), 1.0)
                    x[b] -= frac * room
                    if frac < 1.0:
                        continue
                lots = np.flatnonzero(self.has_lot & (coef > 0) & (x[b] - lot >= floor[b] - 1e-9))
                if not len(lots):
                    break
                lane = lots[np.argmin(self.w_eff[lots] / coef[lots])]
                x[b, lane] -= lot[lane]
        return x

    def relaxations(
        self, day_no: int, x: np.ndarray, day: DayData, rows: np.ndarray, first: np.ndarray
    ) -> tuple[list[Relaxation], list[str]]:
        """Relaxation records of released ``x [K, M]`` (blocks ``rows`` of the batch),
        and the violations left that no relaxation explains (empty when all is well).

        A soft row may be over only on a day and for a kind the relaxation order relaxed
        (``first``: :meth:`first_relaxed`; the kinds ``phases[first:]``); its excess above
        solver noise is then recorded. Anywhere else an excess above the simulator's
        tolerance is a violation left, as on a hard row: solver noise never becomes a
        record."""
        if self.feasible(x, day).all():  # nothing over (simulator tolerances): no records
            return [], []
        ex = self.excess(x, day)
        scale = {g.kind: np.abs(day.rhs[g.kind]) + np.abs(x @ g.a.T) for g in self.groups}
        scale["contract"] = day.lb
        out: list[Relaxation] = []
        hard: list[str] = []
        lanes = self.col_ids
        tols, flagged = {}, np.zeros(x.shape[0], bool)
        for kind, e in ex.items():
            g = self.group.get(kind)
            relaxed = self.relaxed(kind, first)
            if kind == "lot":
                tol = np.full_like(e, LOT_TOL)
            else:
                tol = np.where(relaxed[:, None], NOISE + NOISE_REL * scale.get(kind, 0.0), TOL)
            tols[kind] = (g, relaxed, tol)
            flagged |= (e > tol).any(axis=1)
        for b in np.flatnonzero(flagged):
            reason = None
            for kind, e in ex.items():
                g, relaxed, tol = tols[kind]
                for r in np.flatnonzero(e[b] > tol[b]):
                    target = g.targets[r] if g is not None else lanes[r]
                    if not relaxed[b]:
                        hard.append(f"{kind} {target}: {e[b, r]:.3g} over")
                        continue
                    if reason is None:
                        j = int(first[b]) if first[b] < len(self.phases) else 0
                        reason = (
                            f"infeasible day: {self.conflicts(day, b, j)}; relaxed in "
                            f"the order {', '.join(self.soft_order)} (softest first)"
                        )
                    out.append(
                        Relaxation(
                            day_no,
                            int(rows[b]),
                            kind,
                            target,
                            round(float(e[b, r]), 6),
                            UNITS[kind],
                            reason,
                        )
                    )
        return out, hard

    def clamp_records(self, day_no: int, day: DayData) -> list[Relaxation]:
        """Storage already over capacity before today's orders (headroom clamped at 0)."""
        out = []
        if "storage" not in self.group:
            return out
        targets = self.group["storage"].targets
        for b, r in zip(*np.nonzero(day.raw_storage < -TOL), strict=True):
            out.append(
                Relaxation(
                    day_no,
                    int(b),
                    "storage",
                    targets[r],
                    float(-day.raw_storage[b, r]),
                    "units",
                    "stock and inbound already exceed the storage capacity before today's orders "
                    "(e.g. lateral transfers landed); no order into the node is allowed",
                )
            )
        return out
