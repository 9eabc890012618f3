"""The server's step from the clients' averaged weights to the next global weights
(Flower-free; :mod:`server.strategy` applies it after the role-weighted average).

* **Server step size** ``eta`` (:attr:`fedinv.federation.config.FedConfig.server_step`):
  ``next = sent + eta (average - sent)``, where ``sent`` are the global weights the
  round's clients trained from; ``eta = 1`` is plain FedAvg.
* **Acceptance rule** (``FedConfig.acceptance = "local-cost"``): a backtracking line
  search along the FedAvg direction on a privacy-compatible signal. Each organization
  reports one scalar per round, the cost per day of the weights it received on its own
  validation replications (the fat round's ``local-cost-per-day``, sent before it
  trains); the server sums the reports. If the sum for the weights sent this round is
  no higher than for the last accepted weights, they become the accepted weights and
  the clients' average from them the new direction; otherwise the server keeps the
  accepted weights, halves ``eta``, discards the round's updates and sends
  ``accepted + eta * direction`` next. The first round's weights are always accepted
  (nothing to compare with), as are those of a round whose number of reports differs
  from the accepted weights' (sums over different organizations do not compare).

The state lives in the server process: a resumed run starts the rule afresh from the
checkpoint it resumes (whose weights are accepted then).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

ACCEPTANCE = ("off", "local-cost")
"""Server-side acceptance rules (:attr:`fedinv.federation.config.FedConfig.acceptance`)."""


def check_server_step(step: float, acceptance: str) -> None:
    """ValueError unless ``0 < step <= 1`` and ``acceptance`` is one of :data:`ACCEPTANCE`."""
    if not 0.0 < float(step) <= 1.0:
        raise ValueError(f"FedConfig.server_step must be in (0, 1], got {step!r}")
    if acceptance not in ACCEPTANCE:
        raise ValueError(
            f"FedConfig.acceptance must be one of {', '.join(ACCEPTANCE)}, got {acceptance!r}"
        )


def _along(
    start: Mapping[str, np.ndarray], step: float, direction: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """``start + step * direction``, array by array, in ``start``'s dtypes."""
    return {
        k: (np.asarray(v, dtype=np.float64) + step * direction[k]).astype(np.asarray(v).dtype)
        for k, v in start.items()
    }


@dataclass
class ServerStep:
    """The server step and acceptance rule of one run (see the module doc)."""

    step: float = 1.0
    """``eta``: the current step size (halved by every rejection)."""
    acceptance: str = "off"
    anchor: dict[str, np.ndarray] | None = field(default=None, repr=False)
    """The last accepted global weights."""
    anchor_cost: float | None = None
    """The organizations' summed local cost per day ($/day) of ``anchor``."""
    anchor_reports: int = 0
    """How many organizations reported it."""
    direction: dict[str, np.ndarray] | None = field(default=None, repr=False)
    """The clients' average trained from ``anchor``, minus ``anchor``."""

    def __post_init__(self) -> None:
        check_server_step(self.step, self.acceptance)

    def next_global(
        self,
        sent: Mapping[str, np.ndarray],
        average: Mapping[str, np.ndarray],
        reports: Sequence[float] = (),
    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """The next global weights from the weights ``sent`` this round, the clients'
        ``average`` trained from them and the organizations' ``reports`` (each its local
        cost per day of ``sent``; ignored without an acceptance rule), with what the
        server decided: ``server-step`` (the step taken), and with the rule
        ``server-accepted`` (1: ``sent`` accepted, 0: rejected) and
        ``server-reported-cost`` (the sum, $/day)."""
        delta = {
            k: np.asarray(average[k], dtype=np.float64) - np.asarray(v, dtype=np.float64)
            for k, v in sent.items()
        }
        if self.acceptance == "off":
            return _along(sent, self.step, delta), {"server-step": self.step}
        cost = float(sum(reports)) if len(reports) else None
        comparable = (
            self.anchor is not None
            and cost is not None
            and self.anchor_cost is not None
            and len(reports) == self.anchor_reports
        )
        accepted = not comparable or cost <= self.anchor_cost  # type: ignore[operator]
        if accepted:
            self.anchor = {k: np.array(v, copy=True) for k, v in sent.items()}
            self.anchor_cost, self.anchor_reports = cost, len(reports)
            self.direction = delta
        else:
            self.step /= 2.0
        assert self.anchor is not None and self.direction is not None
        log = {"server-step": self.step, "server-accepted": float(accepted)}
        if cost is not None:
            log["server-reported-cost"] = cost
        return _along(self.anchor, self.step, self.direction), log


def server_step_of(step: float, acceptance: str, reports_in_train: bool) -> ServerStep | None:
    """The run's :class:`ServerStep` from ``FedConfig.server_step`` and
    ``FedConfig.acceptance`` (None for plain FedAvg: step 1, no rule).
    ``reports_in_train``: whether the train replies carry the clients' local cost of the
    weights they received (fat rounds with client evaluation on); the acceptance rule
    needs them (ValueError otherwise)."""
    if acceptance != "off" and not reports_in_train:
        raise ValueError(
            f"acceptance = {acceptance} needs the clients' local evaluation in their "
            "train replies (eval-in-train = true and fraction-evaluate > 0)"
        )
    if step == 1.0 and acceptance == "off":
        return None
    return ServerStep(step, acceptance)
