"""HiGHS for the safety layer: the solver options, and the block program in a kept
``highspy.Highs`` model (the speed reference backend; docs/hybrid.md)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedinv.policies.projector import SolverError
from solvers.program import DayData, ProjectionProgram, RowGroup

HIGHS_OPTIONS = {
    "output_flag": False,
    "primal_feasibility_tolerance": 1e-9,
    "dual_feasibility_tolerance": 1e-9,
    "mip_feasibility_tolerance": 1e-9,
    "mip_rel_gap": 0.0,
    "mip_abs_gap": 1e-9,
    "mip_heuristic_run_feasibility_jump": False,
}
"""Tight tolerances (1e-9 cost nothing measurable against the defaults), exact MIP
gaps so that both backends agree on the optimum, and no feasibility-jump heuristic
(it tripled the time of these small MILPs)."""

FEASIBILITY_OPTIONS = (
    "primal_feasibility_tolerance",
    "dual_feasibility_tolerance",
    "mip_feasibility_tolerance",
)
"""The tolerances a retry loosens (:meth:`HighsModel.set_tolerance`)."""


class NotOptimal(SolverError):
    """HiGHS ended without an optimum: ``status`` its name, ``time_limit`` whether the
    time limit stopped it (then no retry can help)."""

    def __init__(self, status: str, time_limit: bool = False, label: str = "HiGHS status"):
        super().__init__(f"{label} {status}")
        self.status = status
        self.time_limit = time_limit


def tolerance_options(tol: float | None) -> dict[str, float]:
    """The feasibility options at ``tol`` (None: the defaults of :data:`HIGHS_OPTIONS`)."""
    return {key: float(HIGHS_OPTIONS[key] if tol is None else tol) for key in FEASIBILITY_OPTIONS}


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
        with quiet_stdout():
            h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("threads", 1)
        h.addVars(1, np.zeros(1), np.ones(1))
        h.changeColsIntegrality(1, np.zeros(1, np.int32), np.ones(1, np.int32))
        h.run()
        _single_thread = h.getModelStatus() == highspy.HighsModelStatus.kOptimal
    return {**HIGHS_OPTIONS, **({"threads": 1} if _single_thread else {})}


@contextmanager
def quiet_stdout():
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


# -- the block matrix ------------------------------------------------------------------


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
    m = prog.num_cols
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


class HighsModel:
    """The block program in a kept ``highspy.Highs`` object."""

    def __init__(self, prog: ProjectionProgram, k: int):
        try:
            import highspy
        except ImportError as exc:
            raise SolverError(f"highspy is not installed: {exc}") from None
        self.hs = highspy
        self.prog = prog
        self.bl = bl = _layout_blocks(prog, k)
        m = prog.num_cols
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
        with quiet_stdout():
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
        self._mutable_ub = prog.ub_mutable.any()
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

    def cold(self) -> None:
        """Forget the last solve (basis and solution): the next one starts from scratch."""
        self.h.clearSolver()

    def set_tolerance(self, tol: float | None) -> None:
        """Feasibility tolerances ``tol`` (None: back to :data:`HIGHS_OPTIONS`)."""
        for key, val in tolerance_options(tol).items():
            self.h.setOptionValue(key, val)

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
            raise NotOptimal(
                h.modelStatusToString(status), status == self.hs.HighsModelStatus.kTimeLimit
            )
        sol = np.asarray(h.getSolution().col_value)
        x = sol[self.bl.x]
        slack = sol[self.bl.slack[phase]].sum(axis=1) if phase else None
        return x, slack, float(h.getInfo().objective_function_value)
