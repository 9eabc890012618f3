"""The seed's agent roles beyond the Order Manager and the Demand Predictor (docs/roles.md):
the Coordination Node (``coordination``: lateral transfers between same-region peers),
the Analytics Monitor (``monitor``: rolling KPIs, drift detectors, alerts) and the
event-triggered signals between agents (``signals``)."""
