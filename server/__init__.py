"""server: the Flower ServerApp (``server.server_app:app``) -- strategy, role-weighted
aggregation, a checkpoint after every round, resume and server-side evaluation; a thin
adapter over :mod:`fedinv.federation` (docs/federation.md)."""
