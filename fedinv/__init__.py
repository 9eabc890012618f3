"""fedinv: inventory control in decentralized, multi-tier supply networks.

The rooms of the core package, lower ones first (an arrow only points down; the
rules are in docs/architecture.md and checked by tests/test_architecture.py):

* :mod:`fedinv.model` -- the supply network as frozen data (nodes, lanes,
  organizations, events), scenario files and their validation, the compiled index
  layout, synthetic networks;
* :mod:`fedinv.sim` -- every random draw up front (exogenous), the simulated day,
  running a policy over a horizon, and the metrics;
* :mod:`fedinv.policies` -- classical policies, their tuner, and the contract a
  safety layer fulfils (the projector types);
* :mod:`fedinv.hybrid` -- the one gateway to ``solvers/`` (the Pyomo/HiGHS safety layer
  and the optimization baselines);
* :mod:`fedinv.agents` -- learned ordering agents: environments, the Demand Predictor,
  double DQN, checkpoints, train-and-compare;
* :mod:`fedinv.federation` -- the Flower-free federated task, each organization's
  private data, the local simulated federation and process handling;
* :mod:`fedinv.deploy` -- the federation across organizations on Flower's deployment
  engine (certificates, node keys, SuperLink and SuperNodes);
* :mod:`fedinv.bench` -- benchmarks behind ``fedinv bench``;
* :mod:`fedinv.cli` -- the ``fedinv`` command line, one module per command group;
* :mod:`fedinv.errors` and :mod:`fedinv.files` -- error types and atomic file writes.

Outside this package: ``solvers/`` (optimization programs), ``clients/`` and
``server/`` (the thin Flower apps) and ``studies/`` (study definitions, runner, report).
"""
