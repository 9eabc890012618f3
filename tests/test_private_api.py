"""The private third-party names the project uses, each behind one adapter: if a new
Pyomo or Flower renames one, these tests fail with the library's version in the message."""

import numpy as np
import pytest

from fedinv.policies.projector import SolverError


def _persistent_model():
    """min 2 x + c y  s.t.  x + y >= d (d, c Params), 0 <= x <= u (u a Param), y >= 0, in
    the persistent HiGHS interface with only Param updates on, as solvers/pyomo_model.py
    sets it up."""
    import pyomo.environ as pyo
    from pyomo.contrib.solver.solvers.highs import Highs

    m = pyo.ConcreteModel()
    m.d = pyo.Param(mutable=True, initialize=4.0)
    m.c = pyo.Param(mutable=True, initialize=3.0)
    m.u = pyo.Param(mutable=True, initialize=10.0)
    m.x = pyo.Var(bounds=(0.0, m.u))
    m.y = pyo.Var(within=pyo.NonNegativeReals)
    m.need = pyo.Constraint(expr=m.x + m.y >= m.d)
    m.obj = pyo.Objective(expr=2 * m.x + m.c * m.y)
    opt = Highs()
    au = opt.config.auto_updates
    for name in (
        "check_for_new_or_removed_constraints",
        "check_for_new_or_removed_vars",
        "check_for_new_or_removed_params",
        "check_for_new_objective",
        "update_constraints",
        "update_vars",
        "update_named_expressions",
        "update_objective",
    ):
        setattr(au, name, False)
    opt.config.load_solutions = False
    opt.set_instance(m)
    return m, opt


def test_pyomo_private_names_of_the_lean_solve():
    """Every accessor of solvers/pyomo_private.py on a real persistent model: the Params
    changed, pushed by the interface's own helpers, HiGHS run on its model, primals read
    by column: the known optimum of the changed model."""
    from solvers import pyomo_private as private

    m, opt = _persistent_model()
    h = private.highs_model(opt)
    h.setOptionValue("output_flag", False)
    col = private.column_of(opt)
    helpers = private.row_helpers(opt)
    # d = 6, u = 5, c = 1.5: y is cheaper, so x = 0, y = 6, cost 9
    m.d.store_values(6.0)
    m.c.store_values(1.5)
    m.u.store_values(5.0)
    for helper in helpers.get(m.need, ()):
        helper.update()
    private.bound_helper(opt, m.x).update()
    private.objective_helper(opt).update()
    h.run()
    assert h.modelStatusToString(h.getModelStatus()) == "Optimal"
    x = np.asarray(h.getSolution().col_value)
    assert x[col[id(m.x)]] == pytest.approx(0.0, abs=1e-9)
    assert x[col[id(m.y)]] == pytest.approx(6.0, abs=1e-9)
    assert h.getInfo().objective_function_value == pytest.approx(9.0, abs=1e-9)
    # c = 5: now x is cheaper up to its bound u = 5, and y takes the rest
    m.c.store_values(5.0)
    private.objective_helper(opt).update()
    h.run()
    x = np.asarray(h.getSolution().col_value)
    assert (x[col[id(m.x)]], x[col[id(m.y)]]) == pytest.approx((5.0, 1.0), abs=1e-9)


def test_pyomo_private_name_missing_names_the_version():
    import pyomo.version

    from solvers import pyomo_private as private

    with pytest.raises(SolverError, match=rf"pyomo {pyomo.version.version}: .*'_solver_model'"):
        private.highs_model(object())
    m, opt = _persistent_model()
    with pytest.raises(SolverError, match=rf"pyomo {pyomo.version.version}: .*no \(var, helper\)"):
        private.bound_helper(opt, m.y)  # y has no Param bound: no helper


def test_flower_private_reply_check():
    """Flower's ``_check_and_log_replies`` through server/flower_private.py: a valid and
    an error reply of a training round, split as Flower's own strategies split them."""
    from flwr.app import Array, ArrayRecord, Error, Message, MetricRecord, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from server.flower_private import check_and_log_replies
    from server.strategy import make_strategy

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    ask = Message(
        content=RecordDict({"arrays": ArrayRecord({"w": Array(np.zeros(2))})}),
        dst_node_id=7,
        message_type="train",
    )
    ok = Message(
        RecordDict(
            {
                "arrays": ArrayRecord({"w": Array(np.ones(2))}),
                "metrics": MetricRecord({"num-examples": 3}),
            }
        ),
        reply_to=ask,
    )
    bad = Message(Error(code=3, reason="boom"), reply_to=ask)
    valid, errors = check_and_log_replies(make_strategy("fedavg"), [ok, bad], is_train=True)
    assert valid == [ok] and errors == [bad]


def test_flower_private_name_missing_names_the_version():
    import flwr

    from server.flower_private import check_and_log_replies

    with pytest.raises(RuntimeError, match=rf"flwr {flwr.__version__}: object has no"):
        check_and_log_replies(object(), [], is_train=True)
