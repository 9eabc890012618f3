"""The private attributes of Pyomo's persistent HiGHS interface that the lean solve uses.

``solvers/pyomo_model.py`` solves through the interface's own highspy model and its own
Param helpers, skipping the per-call wrapper of the public ``solve()`` (~1.5 ms per call,
docs/hybrid.md). Those are private names of ``pyomo.contrib.solver.solvers.highs.Highs``
in Pyomo 6.10 (the pin ``pyomo>=6.10,<6.11``); every use goes through this module, so a
Pyomo that renames one fails here, with the Pyomo version and the name in the message
(tests/test_private_api.py checks every accessor on a real model). The public
``solve()`` (``lean=False``) needs none of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedinv.policies.projector import SolverError

TESTED = "6.10"
"""The Pyomo minor version these names were read from."""


def pyomo_version() -> str:
    """The installed Pyomo's version string."""
    import pyomo.version

    return str(pyomo.version.version)


def _private(opt: Any, name: str) -> Any:
    try:
        return getattr(opt, name)
    except AttributeError:
        raise SolverError(
            f"pyomo {pyomo_version()}: the persistent HiGHS interface "
            f"({type(opt).__module__}.{type(opt).__name__}) has no attribute {name!r}, "
            f"which the lean solve uses (read from pyomo {TESTED}); solve with lean=False "
            f"or install pyomo {TESTED}.x"
        ) from None


def highs_model(opt: Any) -> Any:
    """The ``highspy.Highs`` object the interface keeps (after ``set_instance``)."""
    return _private(opt, "_solver_model")


def column_of(opt: Any) -> Mapping[int, int]:
    """``id(pyomo var) -> column index`` in :func:`highs_model`."""
    return _private(opt, "_pyomo_var_to_solver_var_map")


def row_helpers(opt: Any) -> Mapping[Any, Any]:
    """``constraint data -> helpers`` that push the row's Param-dependent bounds and
    coefficients to HiGHS (each has ``update()``)."""
    return _private(opt, "_mutable_helpers")


def bound_helper(opt: Any, var: Any) -> Any:
    """The helper that pushes the Param-dependent bounds of ``var`` (has ``update()``)."""
    bounds = _private(opt, "_mutable_bounds")
    try:
        return bounds[id(var)][1]
    except (KeyError, IndexError, TypeError):
        raise SolverError(
            f"pyomo {pyomo_version()}: _mutable_bounds of the persistent HiGHS interface "
            f"holds no (var, helper) pair for {var.name} (read from pyomo {TESTED}); solve "
            f"with lean=False or install pyomo {TESTED}.x"
        ) from None


def objective_helper(opt: Any) -> Any:
    """The helper that pushes the objective's Param-dependent coefficients."""
    return _private(opt, "_mutable_objective")
