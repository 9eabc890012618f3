"""The block program as a Pyomo model solved by the persistent HiGHS interface of
``pyomo.contrib.solver`` (the default backend; docs/hybrid.md). Pyomo is imported when
a model is built; the private attributes the lean solve uses go through
:mod:`solvers.pyomo_private`."""

from __future__ import annotations

from typing import Any

import numpy as np

from fedinv.policies.projector import SolverError
from solvers import pyomo_private as private
from solvers.highs import NotOptimal, highs_options, tolerance_options
from solvers.program import DayData, ProjectionProgram


class PyomoModel:
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
        m = prog.num_cols
        mdl = pyo.ConcreteModel(name="projection")
        mdl.B = pyo.RangeSet(0, k - 1)
        mdl.L = pyo.RangeSet(0, m - 1)
        mdl.p = pyo.Param(mdl.B, mdl.L, mutable=True, initialize=0.0)
        ub_lanes = [int(i) for i in np.flatnonzero(prog.ub_mutable | prog.has_lot)]
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
            h = private.highs_model(opt)
            for key, val in cfg.solver_options.items():
                h.setOptionValue(key, val)
            col = private.column_of(opt)
            self.x_cols = np.array([col[id(v)] for v in self.x_vars]).reshape(k, m)
            # the interface's helpers that push each Param entry: row bounds of the
            # constraint holding it, or the bound of x it caps
            helpers = private.row_helpers(opt)

            def rows(con: Any, keys: list[Any]) -> list[tuple[Any, ...]]:
                return [tuple(helpers.get(con[key], ())) for key in keys]

            self._helpers: dict[str, list[tuple[Any, ...]]] = {
                "p": rows(mdl.distance, self.keys["p"]),
                "ub": [(private.bound_helper(opt, mdl.x[key]),) for key in self.keys["ub"]],
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
        """Today's data into the Params (see :meth:`solvers.highs.HighsModel.set_day`)."""
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

    def cold(self) -> None:
        """Forget the last solve: the next one starts from scratch. Lean: HiGHS's own
        model is cleared; public: the interface loads the model again (``set_instance``,
        public API), with the objective it had."""
        if self.lean:
            private.highs_model(self.opt).clearSolver()
            return
        self.opt.set_instance(self.mdl)
        self._phase = None  # set_instance takes the model's active objective, the L1

    def set_tolerance(self, tol: float | None) -> None:
        """Feasibility tolerances ``tol`` (None: back to the defaults)."""
        options = tolerance_options(tol)
        self.opt.config.solver_options.update(options)  # the public solve applies these
        if self.lean:
            h = private.highs_model(self.opt)
            for key, val in options.items():
                h.setOptionValue(key, val)

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
            raise NotOptimal(
                res.termination_condition.name,
                res.termination_condition == self.tc.maxTimeLimit,
                "termination condition",
            )
        k, m = self.k, self.prog.num_cols
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
                private.objective_helper(opt).update()
        self._pending.clear()
        self._push_all = self._push_objective = False
        h = private.highs_model(opt)
        if time_limit != self._time_limit:
            h.setOptionValue("time_limit", time_limit)
            self._time_limit = time_limit
        h.run()
        status = h.getModelStatus()
        if status != self.hs.HighsModelStatus.kOptimal:
            raise NotOptimal(
                h.modelStatusToString(status), status == self.hs.HighsModelStatus.kTimeLimit
            )
        col = np.asarray(h.getSolution().col_value)
        x = col[self.x_cols]
        slack = col[self.slack_cols[phase]].sum(axis=1) if phase is not None else None
        return x, slack, float(h.getInfo().objective_function_value)
