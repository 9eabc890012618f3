"""fedinv.sim: simulating a policy on a scenario.

``exogenous`` (every random draw of a replication, up front, from one seeded generator
per replication), ``simulator`` (the day of docs/model.md on explicit state, vectorized
over nodes and replications), ``run`` (a policy over a horizon -> daily records,
DataFrames and metrics) and ``metrics`` (the metrics of docs/model.md and their
statistics). Depends on :mod:`fedinv.model` only (``run`` reaches the safety layer
through :mod:`fedinv.hybrid`)."""
