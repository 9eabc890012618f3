"""The Demand Predictor (docs/design.md section 8): a simple forecaster of each node's daily demand.

What a node forecasts is the demand it sees: customer demand at a customer-facing node,
orders received from its downstream nodes elsewhere (in the node's own units). Method:
simple exponential smoothing of the daily observation ``x_t`` with smoothing constant
``alpha``, and exponential smoothing (constant ``beta``) of the squared one-step
residual ``e_t = x_t - level_{t-1}``:

    level_t    = level_{t-1} + alpha * e_t
    variance_t = (1 - beta) * variance_{t-1} + beta * e_t**2

The point forecast of any future day is ``level_t`` (units/day); the forecast of the
total over ``h`` days is ``h * level_t`` with standard deviation ``sqrt(h * variance_t)``
(days treated as independent), and the ``coverage`` interval is the normal one,
``mean +- z * sd``, clipped at 0. Before the first observation the level and variance
are a prior (e.g. the scenario's long-run mean and variance of the node's flow, what a
node knows from its history). Everything is vectorized over ``[B, N]`` (replications x
nodes) and updated only from what has been observed, never from future data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Forecast:
    """A forecast of the total demand over ``horizon_days``: ``mean``, ``lower`` and
    ``upper`` (units, arrays ``[B, N]``) of the ``coverage`` interval."""

    horizon_days: float
    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    coverage: float


class DemandForecaster:
    """Exponential smoothing with a residual-based interval, for ``[B, N]`` series.

    ``prior_mean`` and ``prior_var`` (``[N]``, units/day and units^2/day) start every
    replication; ``alpha`` smooths the level, ``beta`` the squared residuals;
    ``min_std`` (units/day, a number or ``[N]``) floors the standard deviation.
    """

    def __init__(
        self,
        prior_mean: np.ndarray,
        prior_var: np.ndarray,
        alpha: float = 0.1,
        beta: float = 0.05,
        min_std: float | np.ndarray = 1e-6,
    ):
        if not (0.0 < alpha <= 1.0 and 0.0 < beta <= 1.0):
            raise ValueError(
                f"smoothing constants must be in (0, 1], got alpha={alpha}, beta={beta}"
            )
        self.prior_mean = np.asarray(prior_mean, float)
        self.prior_var = np.asarray(prior_var, float)
        self.alpha, self.beta = float(alpha), float(beta)
        self.min_std = np.asarray(min_std, float)
        self.level = self.prior_mean[None, :].copy()
        self.variance = self.prior_var[None, :].copy()
        self.observations = 0

    def reset(self, batch: int) -> None:
        """Start ``batch`` replications from the prior."""
        self.level = np.tile(self.prior_mean, (batch, 1))
        self.variance = np.tile(self.prior_var, (batch, 1))
        self.observations = 0

    def update(self, observed: np.ndarray) -> None:
        """Take in one day's observed demand ``[B, N]`` (units)."""
        error = observed - self.level
        self.level = self.level + self.alpha * error
        self.variance = (1.0 - self.beta) * self.variance + self.beta * error * error
        self.observations += 1

    @property
    def mean(self) -> np.ndarray:
        """Point forecast of one day's demand, ``[B, N]`` units/day."""
        return self.level

    @property
    def std(self) -> np.ndarray:
        """Standard deviation of one day's forecast error, ``[B, N]`` units/day."""
        return np.maximum(np.sqrt(self.variance), self.min_std)

    def forecast(self, horizon_days: float = 1.0, coverage: float = 0.9) -> Forecast:
        """Total demand over the next ``horizon_days`` days with a ``coverage`` interval."""
        z = float(stats.norm.ppf(0.5 + coverage / 2.0))
        mean = horizon_days * self.level
        half = z * self.std * np.sqrt(horizon_days)
        return Forecast(horizon_days, mean, np.maximum(mean - half, 0.0), mean + half, coverage)
