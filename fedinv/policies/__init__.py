"""fedinv.policies: classical ordering policies behind one interface
(``act(state) -> Decision``), their simulation-based tuner, and the contract of a
safety layer (what a projector returns, and the ``Projected`` wrapper that runs any
policy through one). Depends on :mod:`fedinv.model` and :mod:`fedinv.sim`."""
