"""studies: study definitions (``studies/definitions/*.toml``), the resumable study
runner, collation of results and the report (docs/studies.md). The outermost room: it
composes ``fedinv``, ``solvers`` and the Flower apps, and nothing imports it."""
