"""solvers: the Pyomo/HiGHS programs of the safety layer and the optimization baselines
(docs/hybrid.md).

  * :mod:`solvers.program` -- the daily projection program: its rows, a day's data from
    a state, feasibility checks, repair and relaxation records (numpy);
  * :mod:`solvers.fastpath` -- its exact separable relaxation, solved in numpy;
  * :mod:`solvers.projection` -- the projector: fast paths, HiGHS solves, relaxation
    phases (both backends), :func:`solvers.projection.make_backend`;
  * :mod:`solvers.highs` -- HiGHS options and the highspy model of the program;
  * :mod:`solvers.pyomo_model` -- the Pyomo model of the program (persistent HiGHS),
    with :mod:`solvers.pyomo_private`, the one adapter to Pyomo's private names;
  * :mod:`solvers.flowlp` -- the network-flow LP over a span of days;
  * :mod:`solvers.rolling` -- the rolling-horizon LP policy (``--policy rolling-lp``);
  * :mod:`solvers.stochastic` -- the rolling-horizon stochastic program
    (``--policy rolling-sp``);
  * :mod:`solvers.bound` -- the perfect-information lower bound.

``solvers`` sees ``fedinv``'s types (the projector contract is
:mod:`fedinv.policies.projector`); ``fedinv`` reaches ``solvers`` only through
:mod:`fedinv.hybrid`, which imports them lazily.
"""
