"""Exact fast path of the projection: a separable relaxation solved in closed form.

The daily program (``solvers/program.py``) minimizes ``sum_l w_l |x_l - p_l|`` over
box bounds ``lo <= x <= hi`` (commitments, transport), lot lattices ``x_l in lot_l Z``
and rows ``a_r @ x <= rhs_r`` with nonnegative coefficients. Keep only rows whose lanes
are *disjoint* (each lane in at most one kept row) and replace each lot lane's cost by
its convex envelope over the lattice (equal to ``w |x - p|`` at every lot multiple,
linear in between). Both steps give a *relaxation*, and it falls apart into one small
problem per kept row, each a fractional knapsack solved exactly in numpy for every
replication of the batch at once:

* every lane starts at its own optimum: ``clip(p, lo, hi)``, or the nearest lot multiple
  in ``[lo, hi]`` for a lot lane;
* a row over its right-hand side by ``E`` gives up activity in *pieces*: a lane without
  a lot size down to ``lo`` at ``w_l`` per unit; a lot lane rounded up first back to the
  multiple below (at ``w_l (2p - 2x + lot) / lot`` per unit, the envelope's middle
  slope), then down to ``lo`` at ``w_l`` per unit; pieces are cut in ascending cost per
  unit of activity (``cost / a_l``) until ``E`` is gone.

Only the last piece cut in a row is cut partly. If it belongs to a lot lane, that lane is
off the lattice: the row's optimal cost as a function of that lane's value is convex,
so the best lot multiple is the one just below or just above, and both are evaluated
(the row's other lanes cut again); the cheaper counts if the row's other lot lanes stay
on the lattice. Every lot lane then sits on its lattice, where the envelope *is* the
cost, so the point is optimal for the relaxation with the true objective.

When that point also satisfies *every* constraint of the full program (rows left out,
lots, commitments; :meth:`ProjectionProgram.feasible`, the simulator's tolerances), it
is optimal for the full program: a relaxation's optimum that is feasible for the
original is the original's optimum. Otherwise the caller solves the program with HiGHS.
No approximation is involved; tests compare the objective with both solvers'.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from solvers.program import DayData, ProjectionProgram

ROW_KINDS = ("production", "shipping", "assembly", "budget", "storage")
"""Kinds of rows tried for the relaxation, in this order (a row is kept when none of its
lanes is already in a kept row): capacities first, they bind most often."""
LATTICE_TOL = 1e-9
"""Relative distance to a lot multiple still read as on the lattice (then snapped)."""


class SeparableRelaxation:
    """The relaxation of one :class:`ProjectionProgram`: kept rows, their lanes, lots.

    :meth:`solve` returns ``[K, M]`` orders and ``[K]`` whether they are the relaxation's
    exact optimum on the lot lattice; the caller checks them against every constraint."""

    def __init__(self, prog: ProjectionProgram, kinds: tuple[str, ...] = ROW_KINDS):
        self.prog = prog
        m = prog.num_cols
        row_of = np.full(m, -1)
        coef = np.ones(m)
        kept: list[tuple[str, int]] = []
        for kind in kinds:
            g = prog.group.get(kind)
            if g is None:
                continue
            for r in range(g.a.shape[0]):
                lanes = np.flatnonzero(g.a[r] > 0)
                if len(lanes) == 0 or (row_of[lanes] >= 0).any():
                    continue
                row_of[lanes] = len(kept)
                coef[lanes] = g.a[r, lanes]
                kept.append((g.kind, r))
        self.kept = tuple(kept)
        self.row_of = row_of
        self.coef = coef
        nr = len(kept)
        self.num_rows = nr
        members = [np.flatnonzero(row_of == r) for r in range(nr)]
        width = max((len(x) for x in members), default=0)
        lanes = np.full((nr, width), m)  # padded with lane m (a zero column)
        for r, mem in enumerate(members):
            lanes[r, : len(mem)] = mem
        # lanes of each row by cost per unit of activity (w / a), and two pieces per lane
        # slot (lot lanes rounded up: [first pieces of every slot, then second pieces])
        ratio = np.append(prog.w_eff / coef, np.inf)
        self.static_order = np.take_along_axis(
            lanes, np.argsort(ratio[lanes], axis=1, kind="stable"), axis=1
        )
        self.piece_lane = np.concatenate([lanes, lanes], axis=1)  # [R, 2W]
        self.piece_index = self.piece_lane + np.repeat([0, m + 1], width)
        self.member = np.zeros((m, nr))  # [M, R] lane in kept row
        inrow = np.flatnonzero(row_of >= 0)
        self.member[inrow, row_of[inrow]] = 1.0
        self.kept_cols = np.array([prog.row_offset[k] + r for k, r in kept], int)
        """Columns of the kept rows in ``DayData.rhs_all``."""
        self.lot = np.where(prog.has_lot, prog.lot, 1.0)
        self.lot_lanes = prog.lot_lanes
        self.lot_sizes = prog.lot[prog.lot_lanes]

    def rhs(self, day: DayData) -> np.ndarray:
        """``[K, R]`` right-hand sides of the kept rows."""
        return day.rhs_all[:, self.kept_cols]

    def _cut(
        self,
        x0: np.ndarray,
        lo: np.ndarray,
        p: np.ndarray,
        rhs: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Cut every kept row of ``x0 [K, M]`` down to ``rhs [K, R]`` piece by piece
        (cheapest per unit of activity first). Returns the orders and ``[K, M]`` True
        where a lane's last piece was cut only partly."""
        k, m = x0.shape
        if self.num_rows == 0:
            return x0, np.zeros((k, m), bool)
        a = self.coef
        act = (x0 * a) @ self.member  # [K, R]
        excess = np.maximum(act - rhs, 0.0)
        if not (excess > 0).any():
            return x0, np.zeros((k, m), bool)
        pad = np.zeros((k, 1))
        rounded_up = self.prog.has_lot & (x0 > p) & (x0 > lo)
        if not rounded_up.any():  # one piece per lane, in the static order
            order = self.static_order
            room = np.concatenate([(x0 - lo) * a, pad], axis=1)[:, order]  # [K, R, W]
            cut = np.clip(excess[:, :, None] - (np.cumsum(room, axis=2) - room), 0.0, room)
            total = np.zeros((k, m + 1))
            partial = np.zeros((k, m + 1), bool)
            total[:, order] = cut
            partial[:, order] = (cut > 0) & (cut < room)
            return x0 - total[:, :m] / a, partial[:, :m]
        w, lot = self.prog.w_eff, self.lot
        len1 = np.where(rounded_up, np.minimum(lot, x0 - lo), 0.0)
        len2 = x0 - lo - len1
        cost1 = w * np.where(rounded_up, (2 * p - 2 * x0 + lot) / lot, 0.0) / a
        room = np.concatenate(
            [np.concatenate([len1 * a, pad], 1), np.concatenate([len2 * a, pad], 1)], 1
        )  # [K, 2(M+1)]
        ratio = np.concatenate(
            [np.concatenate([cost1, pad], 1), np.broadcast_to(np.append(w / a, 0.0), (k, m + 1))], 1
        )
        idx = self.piece_index
        room_p = room[:, idx]  # [K, R, 2W]
        order = np.argsort(ratio[:, idx], axis=2, kind="stable")
        room_s = np.take_along_axis(room_p, order, axis=2)
        cut_s = np.clip(excess[:, :, None] - (np.cumsum(room_s, axis=2) - room_s), 0.0, room_s)
        cut = np.empty_like(cut_s)
        np.put_along_axis(cut, order, cut_s, axis=2)
        partial_p = (cut > 0) & (cut < room_p)
        wd = cut.shape[2] // 2  # a lane is in one row: add its two pieces' cuts
        total = np.zeros((k, m + 1))
        partial = np.zeros((k, m + 1), bool)
        total[:, self.piece_lane[:, :wd]] = cut[:, :, :wd] + cut[:, :, wd:]
        partial[:, self.piece_lane[:, :wd]] = partial_p[:, :, :wd] | partial_p[:, :, wd:]
        return x0 - total[:, :m] / a, partial[:, :m]

    def solve(self, day: DayData) -> tuple[np.ndarray, np.ndarray]:
        """The relaxation's optimum ``[K, M]`` and ``[K]`` True where it is exact (every
        lot lane on its lattice). ``lo > hi`` somewhere (no lot multiple within the
        bounds) makes the point fail the caller's check."""
        prog = self.prog
        lot, has = self.lot, prog.has_lot
        p = day.p
        rhs = self.rhs(day)
        lo, hi = day.lb, day.ub
        if prog.lot_lanes.size:
            # lot lanes: bounds on the lattice, within every row that holds them
            # (ProjectionProgram.lot_ub: implied by the program once no row is relaxed,
            # and the answer is used only when it meets every row)
            lo = np.where(has, np.ceil(lo / lot - LATTICE_TOL) * lot, lo)
            hi = hi.copy()
            hi[:, prog.lot_lanes] = prog.lot_ub(day)
            x0 = np.minimum(np.maximum(np.where(has, np.round(p / lot) * lot, p), lo), hi)
        else:
            x0 = np.minimum(np.maximum(p, lo), hi)
        x, partial = self._cut(x0, lo, p, rhs)
        if not prog.lot_lanes.size:
            return x, np.ones(x.shape[0], bool)
        ll, sizes = self.lot_lanes, self.lot_sizes
        if partial[:, ll].any():
            off = np.zeros_like(partial)
            off[:, ll] = partial[:, ll] & ~self._on_lattice(x[:, ll])
            if off.any():
                x = self._enumerate(x, off, x0, lo, hi, p, rhs)
        q = x[:, ll]
        on = self._on_lattice(q)
        x[:, ll] = np.where(on, np.round(q / sizes) * sizes, q)  # snap to exact multiples
        return x, on.all(axis=1)

    def _on_lattice(self, q: np.ndarray) -> np.ndarray:
        """``[K, n_lot]`` True where the lot lanes' values ``q`` are lot multiples."""
        sizes = self.lot_sizes
        return np.abs(q - np.round(q / sizes) * sizes) <= LATTICE_TOL * np.maximum(1.0, sizes)

    def _enumerate(
        self,
        x: np.ndarray,
        off: np.ndarray,
        x0: np.ndarray,
        lo: np.ndarray,
        hi: np.ndarray,
        p: np.ndarray,
        rhs: np.ndarray,
    ) -> np.ndarray:
        """Rows whose partly cut piece is a lot lane's: that lane at the lot multiple
        below and above (each row cut again), the cheaper per row."""
        lot = self.lot
        down = np.maximum(np.floor(x / lot) * lot, lo)
        up = np.minimum(down + lot, hi)
        cands = []
        for fixed in (down, up):
            cx, _ = self._cut(np.where(off, fixed, x0), np.where(off, fixed, lo), p, rhs)
            cands.append(cx)
        both = np.stack(cands)  # [2, K, M]
        act = (both * self.coef) @ self.member
        over = act > rhs + 1e-9 * np.maximum(1.0, np.abs(rhs))
        # the envelope's cost of each row (true cost wherever the lots are on the lattice)
        env = self._envelope(both, p)
        row_cost = np.where(over, np.inf, env @ self.member)  # [2, K, R]
        take_up = row_cost[1] < row_cost[0]  # [K, R]
        pick = take_up[:, np.maximum(self.row_of, 0)] & (self.row_of >= 0)
        return np.where(pick, both[1], both[0])

    def _envelope(self, x: np.ndarray, p: np.ndarray) -> np.ndarray:
        """Per lane, the convex envelope over the lot lattice of ``w |x - p|``."""
        prog = self.prog
        lot, w = self.lot, prog.w_eff
        f = np.floor(p / lot) * lot
        mid = w * ((p - f) + (2 * (f - p) + lot) * (x - f) / lot)
        env = np.where((x >= f) & (x <= f + lot), mid, w * np.abs(x - p))
        return np.where(prog.has_lot, env, w * np.abs(x - p))
