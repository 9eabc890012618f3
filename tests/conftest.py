"""Shared test settings.

Property tests (hypothesis) run derandomized by default, so a test run is reproducible
and CI does not fail on a fresh random draw; run
``pytest --hypothesis-profile=explore`` to search new random examples.
"""

from hypothesis import settings

settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("ci")
