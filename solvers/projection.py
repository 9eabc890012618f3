"""The projector of the safety layer: the daily driver shared by both backends
(docs/hybrid.md; the program is in ``solvers/program.py``).

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
default, see :meth:`PyomoModel._solve_lean`); :class:`HighsProjector`: the same
program in highspy, columns and rows kept, bounds changed (the speed reference). Only
replications whose proposals are infeasible are solved, packed into a model of the next
power-of-two block count. Ties of the L1 objective are broken by a 1e-4 relative
perturbation of the weights (later lanes cost slightly more to move), so the optimum is
unique (up to a proposal exactly halfway between two lot multiples) and does not depend
on the solver's path or on the other replications.

**Wild proposals and solver trouble** (docs/hybrid.md). Proposals above ``BIG`` are tamed
(:meth:`ProjectionProgram.tame`) and, before HiGHS sees a day, cut to each lane's implied
bound (the optimum is unchanged); a solve without an optimum is retried from scratch,
then with looser tolerances; orders that still break a row that must hold today are
solved again from scratch and, as a last resort, cut to fit. Each such step is a
:class:`fedinv.policies.projector.SolverEvent`; solver noise never becomes a relaxation.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from fedinv.model.layout import Layout
from fedinv.model.network import Outage
from fedinv.policies.projector import SOFT_KINDS, Projection, SolverError, SolverEvent
from fedinv.sim.simulator import State
from solvers.fastpath import SeparableRelaxation
from solvers.highs import HIGHS_OPTIONS, HighsModel, NotOptimal
from solvers.program import BIG, DayData, ProjectionProgram
from solvers.pyomo_model import PyomoModel

DEFAULT_TIME_LIMIT = 30.0
"""Seconds per solve before :class:`SolverError`."""
HIGHS_TOLERANCE = HIGHS_OPTIONS["primal_feasibility_tolerance"]
RETRY_TOLERANCE = 1e-7
"""HiGHS's feasibility tolerances of the last retry of a solve that found no optimum
warm or cold (HiGHS's default; the layer's own are :data:`HIGHS_TOLERANCE`)."""

COUNTS = ("days", "infeasible", "fast_path", "solver", "lp_certified", "milp")
"""Counters of :attr:`_Projector.counts`: replication-days projected, with infeasible
proposals, answered by the fast path, sent to HiGHS; solver calls of the final phase
certified by the LP relaxation, and MILP solves (solver calls count a block model once)."""


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
        self._events: list[SolverEvent] = []
        self._rows: tuple[int, ...] = ()

    def model(self, blocks: int) -> Any:
        """The backend model with ``blocks`` blocks (built on first use)."""
        if blocks not in self._models:
            t0 = time.perf_counter()
            self._models[blocks] = self._build(blocks)
            self.build_seconds[blocks] = time.perf_counter() - t0
        return self._models[blocks]

    def _build(self, blocks: int) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def project(
        self, state: State, proposals: np.ndarray, transfers: np.ndarray | None = None
    ) -> Projection:
        """Released orders ``[B, M]`` (and lateral transfers ``[B, T]`` when proposed)
        for proposals ``[B, M]`` and ``transfers [B, T]`` (units)."""
        t0 = time.perf_counter()
        prog = self.program
        p = prog.clean(proposals, transfers)
        day = prog.day_data(state, p)
        b = p.shape[0]
        released = p.copy()
        relax = prog.clamp_records(state.day, day)
        need = ~prog.feasible(p, day) if self.skip_feasible else np.ones(b, bool)
        alone = None
        if (p > BIG).any():  # the paths below see proposals of the day's scale
            day, alone, own, offset = prog.tame(day)
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
        events: list[SolverEvent] = []
        if len(idx):
            self.counts["solver"] += len(idx)
            sub = day.take(idx)
            self._events, self._rows = events, tuple(int(i) for i in idx)
            x, obj, first = self._solve(sub, state.day, b, lp_first)
            recs, hard = prog.relaxations(state.day, x, sub, idx, first)
            if hard:  # solver noise: the day again from scratch, the MILP directly
                self._cold()
                x, obj, first = self._solve(sub, state.day, b, lp_first=False)
                recs, again = prog.relaxations(state.day, x, sub, idx, first)
                if not again:
                    self._event(
                        state.day,
                        "cold_restart",
                        f"the warm-started solution broke {hard[0]} after repair; solved "
                        "again from scratch",
                    )
                else:  # the last resort: cut the broken rows' lanes until they hold
                    x = prog.cut_to_fit(x, sub, first)
                    obj = (prog.w_eff * np.abs(x - sub.p)).sum(axis=1)
                    recs, left = prog.relaxations(state.day, x, sub, idx, first)
                    if left:
                        raise SolverError(
                            f"{self.backend} backend, day {state.day}: the solution "
                            f"violates constraints after repair: {'; '.join(left[:5])}"
                        )
                    self._event(
                        state.day,
                        "cut_to_fit",
                        f"the solution broke {hard[0]} after repair, warm and cold "
                        f"({again[0]}); the lanes of the broken rows were cut until they "
                        "held (feasible, not necessarily optimal)",
                    )
            released[idx] = x
            self.last_objective[idx] = obj
            relax += recs
        if alone is not None:
            released = np.where(alone, own, released)
            self.last_objective += offset
        np.maximum(released, 0.0, out=released)  # rounding of the cuts: -1e-15 is 0
        distance = (prog.weights * np.abs(released - p)).sum(axis=1)
        ms = (time.perf_counter() - t0) * 1e3
        m = prog.num_lanes
        moved = released[:, m:] if transfers is not None and prog.num_transfers else None
        return Projection(
            released[:, :m], distance, np.full(b, ms), need, relax, solver_used, events, moved
        )

    def _event(self, day_no: int, kind: str, detail: str) -> None:
        self._events.append(SolverEvent(day_no, self._rows, kind, detail))

    def _cold(self) -> None:
        """Every model forgets its warm start."""
        for model in self._models.values():
            model.cold()

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
        # proposals above what a lane can take (its implied bound U, from the rows that
        # hold today) are cut to U: for x <= U, w |x - p| = w |x - U| + w (p - U), so the
        # optimum is the same and the model keeps numbers of the day's scale
        cut = np.minimum(padded.p, prog.implied_ub(padded, hard_only=not closed))
        offset = float((prog.w_eff * (padded.p - cut)).sum())
        if offset > 0:
            padded = replace(padded, p=cut)
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
        self.last_solver_objective = total + env[2].sum() + offset
        x = x[:k]
        obj = (prog.w_eff * np.abs(x - day.p)).sum(axis=1)
        return prog.repair(x, day), obj, first[:k]

    def _run(self, model: Any, phase: str | None, day_no: int):
        """One solve of ``model``; a solve that ends without an optimum (other than at the
        time limit) is retried from scratch, then from scratch with feasibility
        tolerances :data:`RETRY_TOLERANCE`, each retry recorded as a solver event."""
        self.solves += 1
        what = f"phase minimizing {phase} slack" if phase else "projection"
        statuses = []
        for attempt in ("warm", "cold", "loose"):
            if attempt == "cold":
                model.cold()
            elif attempt == "loose":
                model.cold()
                model.set_tolerance(RETRY_TOLERANCE)
            try:
                out = model.solve(phase, self.time_limit)
            except NotOptimal as exc:
                if exc.time_limit:
                    raise self._error(day_no, what, str(exc)) from None
                statuses.append(f"{exc} ({attempt})")
                continue
            finally:
                if attempt == "loose":
                    model.set_tolerance(None)
            if attempt == "cold":
                self._event(
                    day_no,
                    "cold_restart",
                    f"{what}: the warm-started solve ended with {statuses[0]}; "
                    "solved again from scratch",
                )
            elif attempt == "loose":
                self._event(
                    day_no,
                    "tolerance",
                    f"{what}: {', '.join(statuses)}; solved from scratch with feasibility "
                    f"tolerances {RETRY_TOLERANCE:g} instead of {HIGHS_TOLERANCE:g}, the orders "
                    "repaired and checked at the simulator's tolerances",
                )
            return out
        raise self._error(day_no, what, ", ".join(statuses))

    def _error(self, day_no: int, what: str, why: str) -> SolverError:
        return SolverError(
            f"{self.backend} backend, day {day_no}, {what}: {why} (time limit "
            f"{self.time_limit:g} s per solve)"
        )


class HighsProjector(_Projector):
    """The projection solved with highspy directly (the speed reference)."""

    backend = "highspy"

    def _build(self, blocks: int) -> HighsModel:
        return HighsModel(self.program, blocks)


class PyomoProjector(_Projector):
    """The projection as a Pyomo model solved by persistent HiGHS (the default).

    ``lean`` (default True): solve through :meth:`PyomoModel._solve_lean` (Params
    pushed by the persistent interface, HiGHS run on its model, no per-call wrapper);
    False: the interface's public ``solve()``."""

    backend = "pyomo"

    def __init__(
        self, layout: Layout, outages: Sequence[Outage] = (), *, lean: bool = True, **options: Any
    ):
        super().__init__(layout, outages, **options)
        self.lean = bool(lean)

    def _build(self, blocks: int) -> PyomoModel:
        return PyomoModel(self.program, blocks, self.lean)


BACKEND_CLASSES: dict[str, type[_Projector]] = {
    "pyomo": PyomoProjector,
    "highspy": HighsProjector,
}
"""Projector class per backend name (the names are ``fedinv.hybrid.BACKENDS``, which
checks them)."""


def make_backend(layout: Layout, backend: str, **options: Any) -> _Projector:
    """Build the projector of ``backend`` (see :func:`fedinv.hybrid.make_projector`)."""
    return BACKEND_CLASSES[backend](layout, **options)


__all__ = ["BACKEND_CLASSES", "HighsProjector", "PyomoProjector", "make_backend"]
