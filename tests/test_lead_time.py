"""Lead-time laws: the very draws numpy gives, and exact moments of what is drawn."""

import math

import numpy as np
import pytest
from scipy import stats

from fedinv.model.network import (
    LEAD_TIME_LAWS,
    Deterministic,
    DiscreteUniform,
    Empirical,
    LeadTime,
    LeadTimeError,
)

LAWS = [
    LeadTime(mean=3),
    LeadTime("uniform", mean=3.0, low=2, high=4),
    LeadTime("poisson", mean=3.0),
    LeadTime("poisson", mean=1.2, max_days=3),
    LeadTime("gamma", mean=3.0, std=1.0),
    LeadTime("gamma", mean=2.0, std=2.5, max_days=6),
    LeadTime("lognormal", mean=4.0, std=1.5, max_days=9),
    LeadTime("lognormal", mean=1.5, std=0.4),
    LeadTime("empirical", mean=2.75, values=(2, 5), weights=(3.0, 1.0)),
]


def _reference_draws(lt: LeadTime, rng: np.random.Generator, n: int) -> np.ndarray:
    """The numpy calls the simulator made before lead times became a family."""
    match lt.distribution:
        case "deterministic":
            out = np.full(n, round(lt.mean), dtype=np.int64)
        case "uniform":
            out = rng.integers(lt.low, lt.high + 1, size=n)
        case "poisson":
            out = rng.poisson(lt.mean, size=n)
        case "gamma":
            k = (lt.mean / lt.std) ** 2
            out = np.ceil(rng.gamma(k, lt.mean / k, size=n))
        case "lognormal":
            sigma2 = math.log(1 + (lt.std / lt.mean) ** 2)
            out = np.ceil(rng.lognormal(math.log(lt.mean) - sigma2 / 2, math.sqrt(sigma2), n))
        case _:
            w = np.asarray(lt.weights, float)
            out = rng.choice(np.asarray(lt.values), p=w / w.sum(), size=n)
    return np.clip(out, 1, lt.support_max).astype(np.int64)


@pytest.mark.parametrize("lt", LAWS, ids=lambda lt: lt.describe())
def test_draws_are_the_same_numbers_as_before(lt: LeadTime) -> None:
    ours = lt.sample(np.random.default_rng(7), (5000,))
    theirs = _reference_draws(lt, np.random.default_rng(7), 5000)
    np.testing.assert_array_equal(ours, theirs)


def _tail_moments(survival, cap: int) -> tuple[float, float]:
    """Mean and variance of ``Y = min(max(ceil X, 1), cap)`` from ``P(X > x)``, by
    ``E[Y] = sum_{k < cap} P(Y > k)`` and ``E[Y^2] = sum_{k < cap} (2k + 1) P(Y > k)``."""
    k = np.arange(cap)
    above = np.where(k == 0, 1.0, survival(k))  # Y >= 1 always
    mean = float(above.sum())
    return mean, float(((2 * k + 1) * above).sum()) - mean**2


@pytest.mark.parametrize("lt", LAWS, ids=lambda lt: lt.describe())
def test_moments_are_exact(lt: LeadTime) -> None:
    cap = lt.support_max
    match lt.law:
        case Deterministic(mean=days):
            mean, var = min(days, cap), 0.0
        case DiscreteUniform(low=a, high=b):
            mean, var = (a + b) / 2, ((b - a + 1) ** 2 - 1) / 12
        case Empirical(values=values, weights=weights):
            p = np.asarray(weights) / sum(weights)
            mean = float(np.dot(values, p))
            var = float(np.dot(np.square(values), p)) - mean**2
        case _:
            dist = {
                "poisson": lambda: stats.poisson(lt.mean),
                "gamma": lambda: stats.gamma((lt.mean / lt.std) ** 2, scale=lt.std**2 / lt.mean),
                "lognormal": lambda: stats.lognorm(
                    math.sqrt(math.log(1 + (lt.std / lt.mean) ** 2)),
                    scale=lt.mean / math.sqrt(1 + (lt.std / lt.mean) ** 2),
                ),
            }[lt.distribution]()
            mean, var = _tail_moments(dist.sf, cap)
    assert lt.mean_days == pytest.approx(mean, rel=1e-9, abs=1e-12)
    assert lt.variance_days == pytest.approx(var, rel=1e-9, abs=1e-12)
    draws = lt.sample(np.random.default_rng(1), (200_000,))
    freq = np.bincount(draws, minlength=cap + 1) / draws.size
    np.testing.assert_allclose(freq, lt.pmf(), atol=0.005)


def test_poisson_mean_of_the_documented_rounding_rule() -> None:
    """max(1, Poisson(m)) has mean m + P(0) = m + exp(-m) (the cap is far out)."""
    lt = LeadTime("poisson", mean=2.0)
    assert lt.mean_days == pytest.approx(2.0 + math.exp(-2.0), rel=1e-6)


def test_laws_check_their_parameters() -> None:
    assert set(LEAD_TIME_LAWS) == {
        "deterministic",
        "uniform",
        "poisson",
        "gamma",
        "lognormal",
        "empirical",
    }
    with pytest.raises(LeadTimeError) as info:
        DiscreteUniform(low=4, high=2)
    assert info.value.param == "high" and ">= low (4)" in info.value.expected
    with pytest.raises(LeadTimeError):
        Empirical(values=(2, 3), weights=(0.0, 0.0))
    assert LeadTime.of(Empirical(values=(2, 4))).parameters() == {
        "distribution": "empirical",
        "values": (2, 4),
        "weights": (1.0, 1.0),
    }
