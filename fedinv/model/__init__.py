"""fedinv.model: the supply network as frozen, validated data.

``network`` (nodes, lanes, organizations, demand, lead-time distributions, outages and
surges: :class:`~fedinv.model.network.Scenario`), ``scenario`` (TOML scenario files and
demand-history files -> a validated Scenario; every malformed file gives one
:class:`~fedinv.model.scenario.ScenarioError` naming file and field), ``layout`` (a
network compiled once into index arrays), ``synthetic`` (random valid networks for
benchmarks and property tests) and ``scenarios/*.toml`` (the built-in scenarios).
Imports nothing else of fedinv."""
