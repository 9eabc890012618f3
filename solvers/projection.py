"""The daily projection program of the safety layer (DESIGN section 7; docs/hybrid.md).

For one network and a batch of ``B`` replications, each day and each replication ``b``:

    minimize    sum_l w_l |x_l - p_l|                       (units; w_l default 1)
    subject to  0 <= x_l <= transport_l                     lane transport capacity
                x_l = lot_l n_l, n_l integer                lanes with a lot size (MILP)
                sum_{l ext. into i} x_l <= cap_i f_i        production (supplier) capacity
                sum_{l out of i} x_l <= cap_i f_i           shipping capacity (finite only)
                sum_{l brings item c to i} x_l <= bom_c cap_i f_i   assembly capacity
                sum_{l into i} x_l <= storage_i - (on hand + components + on order)_i
                sum_{l paid by o} (price_l + ship_l) x_l <= budget_o - spent_o
                x_l >= commitment_l - ordered this month_l  (on a month's last day)

``p`` are the proposals (NaN and negatives read as 0, as the simulator reads them),
``f`` the capacity fraction known today: 1, or the outage's ``capacity_fraction`` once
``state.alert`` announces an outage of that node or lane. Right-hand sides below zero
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
:class:`fedinv.hybrid.Relaxation` with its amount and the conflict that caused it.

**Fast paths, all exact.** (1) When a replication's proposals already satisfy every
constraint, they are the unique optimum (distance 0) and are released without a solve
(``skip_feasible``, default True). (2) Otherwise the separable relaxation of
``solvers/fastpath.py`` is solved in numpy; where its optimum satisfies every
constraint of the full program it is the full program's optimum and is released
(``fast_path``, default True). (3) The replications left go to HiGHS, which first solves
the LP relaxation in which each lot lane's cost ``w |x - p|`` is replaced by its convex
envelope over the lot lattice (equal at every lot multiple, below in between) and each
lot lane is bounded by the largest lot multiple its rows allow: an LP optimum with every
lot lane on its lattice is optimal for the MILP; otherwise the MILP is solved
(``lp_first``, default True; the envelope and the bounds stay in the MILP, where they
change nothing but its LP bound).

**Backends.** :class:`PyomoProjector`: one Pyomo model per block count (block-diagonal
over replications, built once, mutable Params, persistent HiGHS of
``pyomo.contrib.solver`` with automatic updates off, solved through a lean call by
default, see :meth:`_PyomoModel._solve_lean`); :class:`HighsProjector`: the same
program in highspy, columns and rows kept, bounds changed (the speed reference). Only
replications whose proposals are infeasible are solved, packed into a model of the next
power-of-two block count. Ties of the L1 objective are broken by a 1e-6 relative
perturbation of the weights (later lanes cost slightly more to move), so the optimum is
unique (up to a proposal exactly halfway between two lot multiples) and does not depend
on the solver's path or on the other replications.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedinv.hybrid import SOFT_KINDS, Projection, Relaxation, SolverError
from fedinv.model.layout import OUTPUT_ASSEMBLY, OUTPUT_PRODUCTION, OUTPUT_SHIPPING, Layout
from fedinv.model.network import Outage
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
TIE_BREAK = 1e-6
"""Relative weight perturbation that makes the optimum unique (see module doc)."""
DEFAULT_TIME_LIMIT = 30.0
"""Seconds per solve before :class:`SolverError`."""

UNITS = {"contract": "units", "storage": "units", "budget": "$"}
COUNTS = ("days", "infeasible", "fast_path", "solver", "lp_certified", "milp")
"""Counters of :attr:`_Projector.counts`: replication-days projected, with infeasible
proposals, answered by the fast path, sent to HiGHS; solver calls of the final phase
certified by the LP relaxation, and MILP solves (solver calls count a block model once)."""


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
        m = lay.num_lanes
        self.num_lanes = m
        self.weights = np.ones(m) if weights is None else np.asarray(weights, float).copy()
        if (
            self.weights.shape != (m,)
            or not np.all(np.isfinite(self.weights))
            or np.any(self.weights <= 0)
        ):
            raise ValueError(f"weights must be {m} positive finite numbers, one per lane")
        self.w_eff = self.weights * (1.0 + TIE_BREAK * (np.arange(m) + 1) / max(m, 1))
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
        self.lot = lay.lot_size.copy()
        self.has_lot = self.lot > 0
        self.lot_lanes = np.flatnonzero(self.has_lot)
        self.nominal_ub = lay.transport_cap.copy()
        self.unit_cost = lay.price + lay.shipping_cost
        self.commit = lay.commitment.copy()
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
        if st_rows:
            a = np.stack([(lay.lane_dst == i).astype(float) for i in st_rows])
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
            a = np.stack([np.where(lay.lane_org == o, self.unit_cost, 0.0) for o in orgs])
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
            np.concatenate([g.a for g in self.groups]).T if self.groups else np.zeros((m, 0))
        )
        # repair: coefficients of the lanes without a lot size [M, R], and [R, M] holds
        self._free_coef_t = self._a_all_t * ~self.has_lot[:, None]
        self._free_holds = self._free_coef_t.T > 0
        # rows holding lot lanes (indices into rhs_all), [R', n_lot] mask and coefficients
        a = self._a_all_t.T[:, self.lot_lanes]
        rows = np.flatnonzero((a > 0).any(axis=1))
        mask = a[rows] > 0
        self._lot_rows = (rows, mask, np.where(mask, a[rows], 1.0))
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
        a = np.stack([mk.astype(float) for mk in masks])
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

    def clean(self, proposals: np.ndarray) -> np.ndarray:
        """Proposals as the simulator reads them: NaN and negatives are 0. ``[B, M]``."""
        p = np.array(proposals, dtype=float)
        if p.ndim != 2 or p.shape[1] != self.num_lanes:
            raise ValueError(f"proposals must have shape [B, {self.num_lanes}], got {p.shape}")
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
        """The right-hand sides of day ``state.day`` for proposals ``p [B, M]``."""
        lay = self.layout
        b = p.shape[0]
        lane_f = np.where((state.alert > 0) & self.lane_outage, self.lane_frac, 1.0)
        ub = np.broadcast_to(self.nominal_ub, (b, self.num_lanes)) * lane_f
        node_f = self.known_node_factor(state)
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
            raw = lay.storage[n] - stock - inbound
            rhs["storage"] = np.maximum(raw, 0.0)
        if "budget" in self.group:
            o = self.budget_orgs
            rhs["budget"] = np.maximum(lay.budget[o] - state.month_spend[:, o], 0.0)
        lb = np.zeros((b, self.num_lanes))
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

    def lot_ub(self, day: DayData) -> np.ndarray:
        """``[K, n_lot]`` upper bounds of the lot lanes implied by the program: the
        largest lot multiple within the transport bound and within ``rhs / a`` of every
        row holding the lane (the other lanes of a row are >= 0). A valid cut: the MILP
        keeps its optimum, its LP relaxation gets tighter."""
        lanes = self.lot_lanes
        ub = day.ub[:, lanes]
        rows, mask, a = self._lot_rows
        if len(rows):
            lim = np.where(mask, day.rhs_all[:, rows, None] / a, np.inf).min(axis=1)
            ub = np.minimum(ub, lim)
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
        lanes = self.layout.lane_ids
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
        (by 1e-10 relative) through lanes without a lot size."""
        x = np.maximum(x, 0.0)
        lot = np.where(self.has_lot, self.lot, 1.0)
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
        noise = NOISE + NOISE_REL * (np.abs(rhs) + np.abs(act)) + 2 * margin
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

    def relaxations(
        self, day_no: int, x: np.ndarray, day: DayData, rows: np.ndarray, first: np.ndarray
    ) -> tuple[list[Relaxation], list[str]]:
        """Relaxation records of released ``x [K, M]`` (blocks ``rows`` of the batch),
        and the hard violations left (empty when all is well)."""
        if self.feasible(x, day).all():  # nothing over (simulator tolerances): no records
            return [], []
        ex = self.excess(x, day)
        scale = {g.kind: np.abs(day.rhs[g.kind]) + np.abs(x @ g.a.T) for g in self.groups}
        scale["contract"] = day.lb
        out: list[Relaxation] = []
        hard: list[str] = []
        lanes = self.layout.lane_ids
        tols, flagged = {}, np.zeros(x.shape[0], bool)
        for kind, e in ex.items():
            g = self.group.get(kind)
            soft = g.soft if g is not None else kind == "contract" and "contract" in self.phases
            tol = (
                np.full_like(e, LOT_TOL)
                if kind == "lot"
                else NOISE + NOISE_REL * scale[kind]
                if soft
                else np.full_like(e, TOL)
            )
            tols[kind] = (g, soft, tol)
            flagged |= (e > tol).any(axis=1)
        for b in np.flatnonzero(flagged):
            reason = None
            for kind, e in ex.items():
                g, soft, tol = tols[kind]
                for r in np.flatnonzero(e[b] > tol[b]):
                    target = g.targets[r] if g is not None else lanes[r]
                    if not soft:
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


# -- the driver shared by both backends ------------------------------------------------


class _Projector:
    """Fast paths, packing of infeasible replications into a block model, LP-first
    solves, lexicographic relaxation phases, repair and checks. Backends implement
    :meth:`_build`.

    Options: ``skip_feasible`` (feasible proposals are released without further work),
    ``fast_path`` (the exact separable relaxation of ``solvers/fastpath.py`` answers the
    replications whose relaxed optimum is feasible; the others go to HiGHS),
    ``lp_first`` (solve the LP relaxation with the lot lanes' convex envelope first, and
    the MILP only when a lot lane is off its lattice), ``pack`` (power-of-two block
    models). All are exact: every path returns an optimum of the same program."""

    backend = "?"

    def __init__(
        self,
        layout: Layout,
        outages: Sequence[Outage] = (),
        *,
        weights: np.ndarray | None = None,
        soft_order: Sequence[str] = SOFT_KINDS,
        time_limit: float = DEFAULT_TIME_LIMIT,
        skip_feasible: bool = True,
        fast_path: bool = True,
        lp_first: bool = True,
        pack: bool = True,
    ):
        from solvers.fastpath import SeparableRelaxation

        self.program = ProjectionProgram(layout, outages, weights, soft_order)
        self.time_limit = float(time_limit)
        self.skip_feasible = bool(skip_feasible)
        self.fast_path = bool(fast_path)
        self.lp_first = bool(lp_first)
        self.relaxation = SeparableRelaxation(self.program)
        self.counts = dict.fromkeys(COUNTS, 0)
        """Replication-days by path (:data:`COUNTS`), since construction."""
        self.pack = bool(pack)
        self._models: dict[int, Any] = {}
        self.build_seconds: dict[int, float] = {}
        self.last_objective: np.ndarray = np.zeros(0)
        """``[B]`` objective (tie-broken weights) of the last day's solve, before repair."""
        self.last_solver_objective = 0.0
        """The objective the solver reported for the last solve (all blocks)."""
        self.solves = 0

    def model(self, blocks: int) -> Any:
        """The backend model with ``blocks`` blocks (built on first use)."""
        if blocks not in self._models:
            t0 = time.perf_counter()
            self._models[blocks] = self._build(blocks)
            self.build_seconds[blocks] = time.perf_counter() - t0
        return self._models[blocks]

    def _build(self, blocks: int) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def project(self, state: State, proposals: np.ndarray) -> Projection:
        t0 = time.perf_counter()
        prog = self.program
        p = prog.clean(proposals)
        day = prog.day_data(state, p)
        b = p.shape[0]
        released = p.copy()
        relax = prog.clamp_records(state.day, day)
        need = ~prog.feasible(p, day) if self.skip_feasible else np.ones(b, bool)
        idx = np.flatnonzero(need)
        self.last_objective = np.zeros(b)
        self.counts["days"] += b
        self.counts["infeasible"] += len(idx)
        lp_first = self.lp_first
        if len(idx) and self.fast_path:
            sub = day.take(idx)
            x, exact = self.relaxation.solve(sub)
            ok = exact & prog.feasible(x, sub)
            if ok.any():
                done = idx[ok]
                released[done] = x[ok]
                self.last_objective[done] = (prog.w_eff * np.abs(x[ok] - sub.p[ok])).sum(axis=1)
                self.counts["fast_path"] += len(done)
                idx = idx[~ok]
            # lot lanes off their lattice in the separable relaxation: the LP relaxation
            # (tighter, but of the same kind) rarely lands on it either; go to the MILP
            lp_first = lp_first and bool(exact[~ok].all())
        solver_used = np.zeros(b, bool)
        solver_used[idx] = True
        if len(idx):
            self.counts["solver"] += len(idx)
            sub = day.take(idx)
            x, obj, first = self._solve(sub, state.day, b, lp_first)
            released[idx] = x
            self.last_objective[idx] = obj
            recs, hard = prog.relaxations(state.day, x, sub, idx, first)
            if hard:
                raise SolverError(
                    f"{self.backend}: day {state.day}: the solution violates "
                    f"hard constraints after repair: {'; '.join(hard[:5])}"
                )
            relax += recs
        distance = (prog.weights * np.abs(released - p)).sum(axis=1)
        ms = (time.perf_counter() - t0) * 1e3
        return Projection(released, distance, np.full(b, ms), need, relax, solver_used)

    def _solve(
        self, day: DayData, day_no: int, batch: int, lp_first: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Solve ``K`` blocks in the model of ``min(2^ceil(log2 K), batch)`` blocks."""
        prog = self.program
        k = day.p.shape[0]
        size = min(1 << (k - 1).bit_length(), batch) if self.pack else k
        model = self.model(size)
        padded = day.pad(size, prog.nominal_ub)
        first = np.concatenate([prog.first_relaxed(day), np.full(size - k, len(prog.phases))])
        phases = prog.phases
        caps = np.zeros((size, len(phases)))
        for j in range(len(phases)):
            caps[first <= j, j] = np.inf
        # no soft row relaxed today: every row bounds the lot lanes (ProjectionProgram.lot_ub)
        closed = not (first < len(phases)).any()
        env = prog.envelope(padded.p)
        model.set_day(padded, prog.lot_ub(padded) if closed and len(prog.lot_lanes) else None, env)
        lp = lp_first and len(prog.lot_lanes) > 0 and closed
        model.set_integer(not lp)  # the relaxation phases solve the MILP
        for j, kind in enumerate(phases):
            if not (first <= j).any():
                continue
            model.set_caps(caps)
            _, slack, _ = self._run(model, kind, day_no)
            fix = first <= j
            caps[fix, j] = slack[fix] * (1 + 1e-9) + 1e-7
        model.set_caps(caps)
        x, _, total = self._run(model, None, day_no)
        if lp:
            if prog.on_lattice(x).all():  # the LP relaxation's optimum is integral
                self.counts["lp_certified"] += 1
            else:
                self.counts["milp"] += 1
                model.set_integer(True)
                x, _, total = self._run(model, None, day_no)
        elif len(prog.lot_lanes):
            self.counts["milp"] += 1
        self.last_solver_objective = total + env[2].sum()
        x = x[:k]
        obj = (prog.w_eff * np.abs(x - day.p)).sum(axis=1)
        return prog.repair(x, day), obj, first[:k]

    def _run(self, model: Any, phase: str | None, day_no: int):
        self.solves += 1
        try:
            return model.solve(phase, self.time_limit)
        except SolverError as exc:
            what = f"phase minimizing {phase} slack" if phase else "projection"
            raise SolverError(
                f"{self.backend} backend, day {day_no}, {what}: {exc} (time "
                f"limit {self.time_limit:g} s per solve)"
            ) from None


def make_backend(layout: Layout, backend: str, **options: Any) -> _Projector:
    """Build the projector of ``backend`` (see :func:`fedinv.hybrid.make_projector`)."""
    if backend == "pyomo":
        return PyomoProjector(layout, **options)
    if backend == "highspy":
        return HighsProjector(layout, **options)
    raise SolverError(f"unknown projection backend {backend!r}; choose pyomo or highspy")


# -- HiGHS options ---------------------------------------------------------------------

HIGHS_OPTIONS = {
    "output_flag": False,
    "primal_feasibility_tolerance": 1e-9,
    "dual_feasibility_tolerance": 1e-9,
    "mip_feasibility_tolerance": 1e-9,
    "mip_rel_gap": 0.0,
    "mip_abs_gap": 1e-9,
    "mip_heuristic_run_feasibility_jump": False,
}
"""Tight tolerances (they cost nothing measurable here, see shared/notes), exact MIP
gaps so that both backends agree on the optimum, and no feasibility-jump heuristic
(it tripled the time of these small MILPs)."""

_single_thread: bool | None = None


def highs_options() -> dict[str, Any]:
    """:data:`HIGHS_OPTIONS`, plus ``threads = 1`` where HiGHS allows it: one thread is
    steadier on a busy machine, but HiGHS's thread pool is global and fixed by the first
    MIP solved in the process, so a probe checks once that one thread is accepted."""
    global _single_thread
    if _single_thread is None:
        try:
            import highspy
        except ImportError as exc:
            raise SolverError(f"highspy is not installed: {exc}") from None
        with _quiet_stdout():
            h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("threads", 1)
        h.addVars(1, np.zeros(1), np.ones(1))
        h.changeColsIntegrality(1, np.zeros(1, np.int32), np.ones(1, np.int32))
        h.run()
        _single_thread = h.getModelStatus() == highspy.HighsModelStatus.kOptimal
    return {**HIGHS_OPTIONS, **({"threads": 1} if _single_thread else {})}


@contextmanager
def _quiet_stdout():
    """Silence file descriptor 1 (HiGHS prints its banner on the first ``Highs()``)."""
    try:
        fd = os.dup(1)
    except OSError:  # pragma: no cover - no stdout descriptor
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        os.dup2(fd, 1)
        os.close(fd)


# -- the block matrix, shared by both backends ------------------------------------------


@dataclass
class _Blocks:
    """Column and row layout of the block-diagonal program (``K`` blocks)."""

    K: int
    ncol: int  # per block
    x: np.ndarray  # [K, M] column of x
    up: np.ndarray
    dn: np.ndarray
    n: np.ndarray  # [K, n_lot]
    env: np.ndarray  # [K, n_lot] envelope piece u of lot lanes (0 <= u <= lot)
    slack: dict[str, np.ndarray]  # kind -> [K, R] column (contract: [K, n_contract])
    rows: dict[str, np.ndarray]  # name -> [K, R] row index
    nrow: int


def _layout_blocks(prog: ProjectionProgram, k: int) -> _Blocks:
    m = prog.num_lanes
    nl = len(prog.lot_lanes)
    soft_sizes = {g.kind: g.a.shape[0] for g in prog.groups if g.soft}
    if "contract" in prog.phases:
        soft_sizes["contract"] = len(prog.contract_lanes)
    off = 0
    cols: dict[str, tuple[int, int]] = {}
    for name, size in [("x", m), ("up", m), ("dn", m), ("n", nl), ("env", nl), *soft_sizes.items()]:
        cols[name] = (off, size)
        off += size
    ncol = off
    base = (np.arange(k) * ncol)[:, None]

    def col(name: str) -> np.ndarray:
        o, s = cols[name]
        return base + o + np.arange(s)[None, :]

    row_sizes = [("distance", m), ("lot", nl)]
    row_sizes += [(g.kind, g.a.shape[0]) for g in prog.groups]
    row_sizes += [("contract", len(prog.contract_lanes)), ("caps", len(prog.phases))]
    roff = 0
    rows_at: dict[str, tuple[int, int]] = {}
    for name, size in row_sizes:
        rows_at[name] = (roff, size)
        roff += size
    rbase = (np.arange(k) * roff)[:, None]
    rows = {name: rbase + o + np.arange(s)[None, :] for name, (o, s) in rows_at.items()}
    return _Blocks(
        k,
        ncol,
        col("x"),
        col("up"),
        col("dn"),
        col("n"),
        col("env"),
        {kind: col(kind) for kind in soft_sizes},
        rows,
        roff * k,
    )


# -- highspy backend ---------------------------------------------------------------------


class _HighsModel:
    """The block program in a kept ``highspy.Highs`` object."""

    def __init__(self, prog: ProjectionProgram, k: int):
        try:
            import highspy
        except ImportError as exc:
            raise SolverError(f"highspy is not installed: {exc}") from None
        self.hs = highspy
        self.prog = prog
        self.bl = bl = _layout_blocks(prog, k)
        m = prog.num_lanes
        ncols = bl.ncol * k
        lo = np.zeros(ncols)
        hi = np.full(ncols, np.inf)
        hi[bl.x] = prog.nominal_ub
        hi[bl.env] = prog.lot[prog.lot_lanes]
        integ = np.zeros(ncols, dtype=np.int32)
        if len(prog.lot_lanes):
            integ[bl.n.ravel()] = 1
        cost = np.zeros(ncols)
        cost[bl.up] = prog.w_eff
        cost[bl.dn] = prog.w_eff
        self.l1_cost = cost
        # rows as COO triplets
        ri, ci, vv = [], [], []

        def add(r: np.ndarray, c: np.ndarray, v: Any) -> None:
            r, c = np.broadcast_arrays(r, c)
            ri.append(r.ravel())
            ci.append(c.ravel())
            vv.append(np.broadcast_to(np.asarray(v, float), r.shape).ravel())

        nrow = bl.nrow
        rlo = np.full(nrow, -np.inf)
        rhi = np.full(nrow, np.inf)
        r = bl.rows["distance"]
        add(r, bl.x, 1.0)
        add(r, bl.up, -1.0)
        add(r, bl.dn, 1.0)
        add(r[:, prog.lot_lanes], bl.env, -1.0)
        rlo[r] = rhi[r] = 0.0
        if len(prog.lot_lanes):
            r = bl.rows["lot"]
            add(r, bl.x[:, prog.lot_lanes], 1.0)
            add(r, bl.n, -prog.lot[prog.lot_lanes])
            rlo[r] = rhi[r] = 0.0
        for g in prog.groups:
            r = bl.rows[g.kind]
            rr, ll = np.nonzero(g.a)
            add(r[:, rr], bl.x[:, ll], g.a[rr, ll])
            if g.soft:
                add(r, bl.slack[g.kind], -1.0)
            if not g.daily:
                rhi[r] = self._static_rhs(g)
        if len(prog.contract_lanes):
            r = bl.rows["contract"]
            add(r, bl.x[:, prog.contract_lanes], 1.0)
            if "contract" in bl.slack:
                add(r, bl.slack["contract"], 1.0)
            rlo[r] = 0.0
        for j, kind in enumerate(prog.phases):
            r = bl.rows["caps"][:, j]
            add(r[:, None], bl.slack[kind], 1.0)
            rhi[r] = 0.0
        rows = np.concatenate(ri)
        cols = np.concatenate(ci)
        vals = np.concatenate(vv)
        order = np.lexsort((cols, rows))
        rows, cols, vals = rows[order], cols[order], vals[order]
        starts = np.searchsorted(rows, np.arange(nrow)).astype(np.int32)
        with _quiet_stdout():
            h = highspy.Highs()
        for key, val in highs_options().items():
            h.setOptionValue(key, val)
        h.addVars(ncols, lo, hi)
        if integ.any():
            h.changeColsIntegrality(ncols, np.arange(ncols, dtype=np.int32), integ)
        h.addRows(nrow, rlo, rhi, len(vals), starts, cols.astype(np.int32), vals)
        h.changeColsCost(ncols, np.arange(ncols, dtype=np.int32), cost)
        self.h = h
        self.rlo, self.rhi = rlo, rhi
        self.col_hi = hi
        self.ncols = ncols
        self._all_cols = np.arange(ncols, dtype=np.int32)
        self._all_rows = np.arange(nrow, dtype=np.int32)
        self._phase_costs = {}
        for kind in prog.phases:
            c = np.zeros(ncols)
            c[bl.slack[kind]] = 1.0
            self._phase_costs[kind] = c
        self._cost_phase: str | None = None
        self._mutable_ub = prog.lane_outage.any()
        self._env_cols = bl.env.ravel().astype(np.int32)
        self._n_cols = bl.n.ravel().astype(np.int32)
        self._ub_cols = (
            (bl.x if self._mutable_ub else bl.x[:, prog.lot_lanes]).ravel().astype(np.int32)
        )
        self.integer = True
        del m

    def _static_rhs(self, g: RowGroup) -> np.ndarray:
        prog = self.prog
        nodes = prog._cap_node[g.kind]
        return prog.layout.capacity[nodes] * prog._cap_scale[g.kind]

    def set_integer(self, integer: bool) -> None:
        """Lot counts integer (the MILP) or continuous (its LP relaxation)."""
        if integer != self.integer and len(self._n_cols):
            n = len(self._n_cols)
            self.h.changeColsIntegrality(n, self._n_cols, np.full(n, int(integer), np.int32))
        self.integer = integer

    def set_day(
        self,
        day: DayData,
        lot_ub: np.ndarray | None = None,
        env: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """Today's data; ``lot_ub``: the lot lanes' implied bounds (None: transport
        only); ``env``: :meth:`ProjectionProgram.envelope` of ``day.p`` if computed."""
        bl = self.bl
        r = bl.rows["distance"]
        rhs = day.p.copy()
        if len(self._env_cols):
            f, slope, _ = env if env is not None else self.prog.envelope(day.p)
            rhs[:, self.prog.lot_lanes] = f
            self.l1_cost[bl.env] = slope
        self.rlo[r] = rhs
        self.rhi[r] = rhs
        for g in self.prog.groups:
            if g.daily:
                self.rhi[bl.rows[g.kind]] = day.rhs[g.kind]
        if len(self.prog.contract_lanes):
            self.rlo[bl.rows["contract"]] = day.lb[:, self.prog.contract_lanes]
        if self._mutable_ub or len(self._n_cols):
            ub = day.ub.copy()
            if lot_ub is not None:
                ub[:, self.prog.lot_lanes] = lot_ub
            self.col_hi[bl.x] = ub
            cols = self._ub_cols
            self.h.changeColsBounds(len(cols), cols, np.zeros(len(cols)), self.col_hi[cols])

    def set_caps(self, caps: np.ndarray) -> None:
        if len(self.prog.phases):
            self.rhi[self.bl.rows["caps"]] = caps

    def solve(self, phase: str | None, time_limit: float):
        h = self.h
        h.changeRowsBounds(len(self.rlo), self._all_rows, self.rlo, self.rhi)
        if phase != self._cost_phase:
            cost = self.l1_cost if phase is None else self._phase_costs[phase]
            h.changeColsCost(self.ncols, self._all_cols, cost)
            self._cost_phase = phase
        elif phase is None and len(self._env_cols):
            h.changeColsCost(len(self._env_cols), self._env_cols, self.l1_cost[self._env_cols])
        h.setOptionValue("time_limit", time_limit)
        h.run()
        status = h.getModelStatus()
        if status != self.hs.HighsModelStatus.kOptimal:
            raise SolverError(f"HiGHS status {h.modelStatusToString(status)}")
        sol = np.asarray(h.getSolution().col_value)
        x = sol[self.bl.x]
        slack = sol[self.bl.slack[phase]].sum(axis=1) if phase else None
        return x, slack, float(h.getInfo().objective_function_value)


class HighsProjector(_Projector):
    """The projection solved with highspy directly (the speed reference)."""

    backend = "highspy"

    def _build(self, blocks: int) -> _HighsModel:
        return _HighsModel(self.program, blocks)


# -- Pyomo backend -----------------------------------------------------------------------


class _PyomoModel:
    """The block program as a Pyomo model with mutable Params, solved by the persistent
    HiGHS interface of ``pyomo.contrib.solver`` (automatic updates off except Params)."""

    def __init__(self, prog: ProjectionProgram, k: int, lean: bool = True):
        try:
            import pyomo.environ as pyo
            from pyomo.contrib.solver.common.results import TerminationCondition
            from pyomo.contrib.solver.solvers.highs import Highs
        except ImportError as exc:
            raise SolverError(f"Pyomo's HiGHS interface cannot be imported: {exc}") from None
        self.prog = prog
        self.k = k
        self.tc = TerminationCondition
        m = prog.num_lanes
        mdl = pyo.ConcreteModel(name="projection")
        mdl.B = pyo.RangeSet(0, k - 1)
        mdl.L = pyo.RangeSet(0, m - 1)
        mdl.p = pyo.Param(mdl.B, mdl.L, mutable=True, initialize=0.0)
        ub_lanes = [int(i) for i in np.flatnonzero(prog.lane_outage | prog.has_lot)]
        mdl.UB = pyo.Set(initialize=ub_lanes)
        mdl.ub = pyo.Param(
            mdl.B, mdl.UB, mutable=True, initialize=lambda _m, b, lane: float(prog.nominal_ub[lane])
        )
        nominal = prog.nominal_ub

        def x_bounds(_m, b, lane):
            if lane in ub_lanes:
                return (0.0, mdl.ub[b, lane])
            return (0.0, float(nominal[lane]) if np.isfinite(nominal[lane]) else None)

        mdl.x = pyo.Var(mdl.B, mdl.L, bounds=x_bounds)
        mdl.up = pyo.Var(mdl.B, mdl.L, within=pyo.NonNegativeReals)
        mdl.dn = pyo.Var(mdl.B, mdl.L, within=pyo.NonNegativeReals)
        lots = [int(i) for i in prog.lot_lanes]
        self.lots = lots
        if lots:
            mdl.LOT = pyo.Set(initialize=lots)
            mdl.n = pyo.Var(mdl.B, mdl.LOT, within=pyo.NonNegativeIntegers)
            mdl.lot = pyo.Constraint(
                mdl.B,
                mdl.LOT,
                rule=lambda _m, b, lane: _m.x[b, lane] == float(prog.lot[lane]) * _m.n[b, lane],
            )
            # the envelope piece of a lot lane (ProjectionProgram.envelope); there, p
            # holds the lot multiple F at or below the proposal
            mdl.env = pyo.Var(
                mdl.B, mdl.LOT, bounds=lambda _m, b, lane: (0.0, float(prog.lot[lane]))
            )
            mdl.s = pyo.Param(mdl.B, mdl.LOT, mutable=True, initialize=0.0)
        lot_set = set(lots)

        def distance(_m, b, lane):
            body = _m.x[b, lane] - _m.up[b, lane] + _m.dn[b, lane]
            if lane in lot_set:
                body = body - _m.env[b, lane]
            return body == _m.p[b, lane]

        mdl.distance = pyo.Constraint(mdl.B, mdl.L, rule=distance)
        self.rhs_params = {}
        slack_of: dict[str, Any] = {}
        for g in prog.groups:
            rows = pyo.RangeSet(0, g.a.shape[0] - 1)
            mdl.add_component(f"R_{g.kind}", rows)
            nz = [np.flatnonzero(g.a[r]) for r in range(g.a.shape[0])]
            if g.daily:
                par = pyo.Param(mdl.B, rows, mutable=True, initialize=0.0)
                mdl.add_component(f"rhs_{g.kind}", par)
                self.rhs_params[g.kind] = par
            else:
                static = prog.layout.capacity[prog._cap_node[g.kind]] * prog._cap_scale[g.kind]
                par = {(b, r): float(static[r]) for b in range(k) for r in range(len(static))}
            slack = None
            if g.soft:
                slack = pyo.Var(mdl.B, rows, within=pyo.NonNegativeReals)
                mdl.add_component(f"slack_{g.kind}", slack)
                slack_of[g.kind] = (slack, rows)

            def rule(_m, b, r, g=g, nz=nz, par=par, slack=slack):
                body = sum(float(g.a[r, lane]) * _m.x[b, int(lane)] for lane in nz[r])
                if slack is not None:
                    body = body - slack[b, r]
                return body <= par[b, r]

            mdl.add_component(g.kind, pyo.Constraint(mdl.B, rows, rule=rule))
        cl = [int(i) for i in prog.contract_lanes]
        if cl:
            mdl.C = pyo.Set(initialize=cl)
            mdl.lb = pyo.Param(mdl.B, mdl.C, mutable=True, initialize=0.0)
            if "contract" in prog.phases:
                mdl.slack_contract = pyo.Var(mdl.B, mdl.C, within=pyo.NonNegativeReals)
                slack_of["contract"] = (mdl.slack_contract, mdl.C)
                mdl.contract = pyo.Constraint(
                    mdl.B,
                    mdl.C,
                    rule=lambda _m, b, lane: (
                        _m.x[b, lane] + _m.slack_contract[b, lane] >= _m.lb[b, lane]
                    ),
                )
            else:
                mdl.contract = pyo.Constraint(
                    mdl.B, mdl.C, rule=lambda _m, b, lane: _m.x[b, lane] >= _m.lb[b, lane]
                )
        if prog.phases:
            mdl.P = pyo.Set(initialize=list(prog.phases))
            mdl.cap = pyo.Param(mdl.B, mdl.P, mutable=True, initialize=0.0)

            def cap_rule(_m, b, kind):
                var, rows = slack_of[kind]
                return sum(var[b, r] for r in rows) <= _m.cap[b, kind]

            mdl.caps = pyo.Constraint(mdl.B, mdl.P, rule=cap_rule)
        w = prog.w_eff
        l1 = sum(
            float(w[lane]) * (mdl.up[b, lane] + mdl.dn[b, lane])
            for b in range(k)
            for lane in range(m)
        )
        if lots:
            l1 = l1 + sum(mdl.s[b, lane] * mdl.env[b, lane] for b in range(k) for lane in lots)
        mdl.obj = pyo.Objective(expr=l1)
        self.phase_obj = {}
        for kind in prog.phases:
            var, rows = slack_of[kind]
            ob = pyo.Objective(expr=sum(var[b, r] for b in range(k) for r in rows))
            ob.deactivate()
            mdl.add_component(f"obj_{kind}", ob)
            self.phase_obj[kind] = ob
        self.slack_vars = {
            kind: [[var[b, r] for r in rows] for b in range(k)]
            for kind, (var, rows) in slack_of.items()
        }
        self.x_vars = [mdl.x[b, lane] for b in range(k) for lane in range(m)]
        self.d_vars = [(mdl.up[b, lane], mdl.dn[b, lane]) for b in range(k) for lane in range(m)]
        self.mdl = mdl
        self.ub_lanes = ub_lanes
        self.cl = cl
        lot_keys = [(b, lane) for b in range(k) for lane in lots]
        self.keys: dict[str, list[tuple[Any, Any]]] = {
            "p": [(b, lane) for b in range(k) for lane in range(m)],
            "ub": [(b, lane) for b in range(k) for lane in ub_lanes],
            "s": lot_keys,
            "lb": [(b, lane) for b in range(k) for lane in cl],
            "cap": [(b, kind) for b in range(k) for kind in prog.phases],
        }
        for kind in self.rhs_params:
            rows = prog.group[kind].a.shape[0]
            self.keys[f"rhs_{kind}"] = [(b, r) for b in range(k) for r in range(rows)]
        self.n_vars = [mdl.n[key] for key in lot_keys] if lots else []
        self._last: dict[str, np.ndarray] = {}
        self.integer = True
        opt = Highs()
        if not opt.available():
            raise SolverError("HiGHS is not available to Pyomo (highspy missing)")
        cfg = opt.config
        au = cfg.auto_updates
        au.check_for_new_or_removed_constraints = False
        au.check_for_new_or_removed_vars = False
        au.check_for_new_or_removed_params = False
        au.check_for_new_objective = False
        au.update_constraints = False
        au.update_vars = False
        au.update_named_expressions = False
        au.update_objective = False
        au.update_parameters = True
        cfg.load_solutions = False
        cfg.raise_exception_on_nonoptimal_result = False
        cfg.solver_options = highs_options()
        self.opt = opt
        opt.set_instance(mdl)
        self._phase: str | None = None
        self.lean = lean
        if lean:
            import highspy

            self.hs = highspy
            h = opt._solver_model  # the interface's highspy.Highs (pyomo 6.10.x)
            for key, val in cfg.solver_options.items():
                h.setOptionValue(key, val)
            col = opt._pyomo_var_to_solver_var_map
            self.x_cols = np.array([col[id(v)] for v in self.x_vars]).reshape(k, m)
            # the interface's helpers that push each Param entry (pyomo 6.10.x internals):
            # row bounds of the constraint holding it, or the bound of x it caps
            helpers = opt._mutable_helpers

            def rows(con: Any, keys: list[Any]) -> list[tuple[Any, ...]]:
                return [tuple(helpers.get(con[key], ())) for key in keys]

            self._helpers: dict[str, list[tuple[Any, ...]]] = {
                "p": rows(mdl.distance, self.keys["p"]),
                "ub": [(opt._mutable_bounds[id(mdl.x[key])][1],) for key in self.keys["ub"]],
            }
            if cl:
                self._helpers["lb"] = rows(mdl.contract, self.keys["lb"])
            if prog.phases:
                self._helpers["cap"] = rows(mdl.caps, self.keys["cap"])
            for kind in self.rhs_params:
                self._helpers[f"rhs_{kind}"] = rows(getattr(mdl, kind), self.keys[f"rhs_{kind}"])
            self._pending: set[Any] = set()
            self._push_all = True
            self._push_objective = False
            self.slack_cols = {
                kind: np.array([[col[id(v)] for v in row] for row in rows])
                for kind, rows in self.slack_vars.items()
            }
            self._time_limit: float | None = None

    def set_integer(self, integer: bool) -> None:
        """Lot counts integer (the MILP) or continuous (its LP relaxation): the domain
        of ``n`` changes and the persistent interface is told (``update_variables``)."""
        if integer != self.integer and self.lots:
            import pyomo.environ as pyo

            dom = pyo.NonNegativeIntegers if integer else pyo.NonNegativeReals
            for v in self.n_vars:
                v.domain = dom
            self.opt.update_variables(self.n_vars)
        self.integer = integer

    def set_day(
        self,
        day: DayData,
        lot_ub: np.ndarray | None = None,
        env: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """Today's data into the Params (see :meth:`_HighsModel.set_day`)."""
        mdl = self.mdl
        p = day.p
        if self.lots:
            f, slope, _ = env if env is not None else self.prog.envelope(p)
            p = p.copy()
            p[:, self.lots] = f
            self._store(mdl.s, slope)
        self._store(mdl.p, p)
        if self.ub_lanes:
            ub = day.ub
            if lot_ub is not None:
                ub = ub.copy()
                ub[:, self.lots] = lot_ub
            self._store(mdl.ub, ub[:, self.ub_lanes])
        for kind, par in self.rhs_params.items():
            self._store(par, day.rhs[kind])
        if self.cl:
            self._store(mdl.lb, day.lb[:, self.cl])

    def set_caps(self, caps: np.ndarray) -> None:
        if self.prog.phases:
            self._store(self.mdl.cap, caps)

    def _store(self, par: Any, values: np.ndarray) -> None:
        """``values`` (in the order of :attr:`keys` of ``par``) into the Param. Lean mode
        stores only the entries that changed since the last call and queues the
        interface's helpers that depend on them (:meth:`_solve_lean` runs them)."""
        name = par.local_name
        keys = self.keys[name]
        vals = np.array(values, float).ravel()  # a copy: callers change their arrays
        last = self._last.get(name)
        if not self.lean or last is None:
            par.store_values(dict(zip(keys, vals.tolist(), strict=True)), check=False)
            self._push_all = True
        else:
            changed = np.flatnonzero(vals != last)
            if not len(changed):
                return
            par.store_values({keys[i]: float(vals[i]) for i in changed}, check=False)
            helpers = self._helpers.get(name)
            if helpers is None:  # the objective's coefficients
                self._push_objective = True
            else:
                for i in changed:
                    self._pending.update(helpers[i])
        self._last[name] = vals

    def solve(self, phase: str | None, time_limit: float):
        opt = self.opt
        if phase != self._phase:
            opt.set_objective(self.mdl.obj if phase is None else self.phase_obj[phase])
            self._phase = phase
        if self.lean:
            return self._solve_lean(phase, time_limit)
        if opt.config.time_limit != time_limit:
            opt.config.time_limit = time_limit
        res = opt.solve(self.mdl)
        if res.termination_condition != self.tc.convergenceCriteriaSatisfied:
            raise SolverError(f"termination condition {res.termination_condition.name}")
        k, m = self.k, self.prog.num_lanes
        prim = res.solution_loader.get_vars(self.x_vars)
        x = np.fromiter((prim[v] for v in self.x_vars), float, k * m).reshape(k, m)
        slack = None
        if phase is not None:
            sv = self.slack_vars[phase]
            flat = [v for row in sv for v in row]
            vals = res.solution_loader.get_vars(flat)
            slack = np.array([sum(vals[v] for v in row) for row in sv])
        return x, slack, float(res.incumbent_objective)

    def _solve_lean(self, phase: str | None, time_limit: float):
        """The persistent interface's solve without its per-call wrapper: the Params
        that changed are pushed by the interface's own helpers (each re-evaluates the row
        bound, variable bound or objective that depends on a Param; :meth:`_store` queued
        those of the changed entries; the first time, ``update_parameters`` runs them
        all), then HiGHS runs on the interface's model and the status is checked before
        the primals are read by column index. Skipped: the per-call copy of the config,
        the stdout capture (HiGHS output is off), the ``Results`` object and
        ``update()``'s scans for added or removed components (none ever are)."""
        opt = self.opt
        if self._push_all:
            opt.update_parameters()
        else:
            for helper in self._pending:
                helper.update()
            if self._push_objective:
                opt._mutable_objective.update()
        self._pending.clear()
        self._push_all = self._push_objective = False
        h = opt._solver_model
        if time_limit != self._time_limit:
            h.setOptionValue("time_limit", time_limit)
            self._time_limit = time_limit
        h.run()
        status = h.getModelStatus()
        if status != self.hs.HighsModelStatus.kOptimal:
            raise SolverError(f"HiGHS status {h.modelStatusToString(status)}")
        col = np.asarray(h.getSolution().col_value)
        x = col[self.x_cols]
        slack = col[self.slack_cols[phase]].sum(axis=1) if phase is not None else None
        return x, slack, float(h.getInfo().objective_function_value)


class PyomoProjector(_Projector):
    """The projection as a Pyomo model solved by persistent HiGHS (the default).

    ``lean`` (default True): solve through :meth:`_PyomoModel._solve_lean` (Params
    pushed by the persistent interface, HiGHS run on its model, no per-call wrapper);
    False: the interface's public ``solve()``."""

    backend = "pyomo"

    def __init__(
        self, layout: Layout, outages: Sequence[Outage] = (), *, lean: bool = True, **options: Any
    ):
        super().__init__(layout, outages, **options)
        self.lean = bool(lean)

    def _build(self, blocks: int) -> _PyomoModel:
        return _PyomoModel(self.program, blocks, self.lean)


__all__ = [
    "DayData",
    "HighsProjector",
    "ProjectionProgram",
    "PyomoProjector",
    "RowGroup",
    "make_backend",
]
