"""clients: the Flower ClientApp (``clients.client_app:app``) -- one client per
organization, training on its own private data folder; a thin adapter over
:mod:`fedinv.federation` that sends back only model arrays and scalar metrics
(docs/federation.md)."""
