"""solvers: the Pyomo/HiGHS programs of DESIGN section 7 (docs/hybrid.md).

  * :mod:`solvers.projection` -- the daily projection of proposals onto the feasible
    orders (the hybrid-mode safety layer), Pyomo-persistent and highspy backends;
  * :mod:`solvers.flowlp` -- the network-flow LP over a span of days;
  * :mod:`solvers.rolling` -- the rolling-horizon LP policy (``--policy rolling-lp``);
  * :mod:`solvers.bound` -- the perfect-information lower bound.

``fedinv`` reaches these only through :mod:`fedinv.hybrid`, which imports them lazily.
"""
