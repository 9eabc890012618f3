"""The error types that cross room boundaries (the command line turns them into exit codes).

* :class:`InputError` -- a bad argument or input (unknown node, malformed params, a bad
  option combination). ``fedinv`` prints ``fedinv: error: MESSAGE`` and exits with
  status 2. It is a :class:`ValueError`, so library callers can catch it as one.
* :class:`DeployError` -- a deployment step (certificates, keys, the SuperLink or a
  SuperNode, the ``flwr`` command line) failed; the message says which and where its log
  is. Reported by ``fedinv deploy`` as a usage error (status 2).
* :class:`FederationError` -- a local simulated federation could not run; the message
  says why and where the logs are.

Scenario files have their own :class:`fedinv.model.scenario.ScenarioError` (also a
``ValueError``), and the safety layer its ``fedinv.hybrid.SolverError``.
"""

from __future__ import annotations


class InputError(ValueError):
    """A bad argument or input: reported as ``fedinv: error: MESSAGE``, exit status 2."""


CliError = InputError
"""The command line's name for :class:`InputError` (the same class)."""


class DeployError(RuntimeError):
    """A deployment step failed; the message says which and where its log is."""


class FederationError(RuntimeError):
    """The federation could not run; the message says why and where the logs are."""
