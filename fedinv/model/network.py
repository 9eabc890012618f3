"""The supply network as frozen, validated data: nodes, lanes, organizations, events.

Units everywhere: quantities in units of the item, money in $, time in days.
A network is built by :mod:`fedinv.model.scenario` from a TOML file or by a factory; the
simulator compiles it once into index arrays (:class:`fedinv.sim.simulator.Simulator`).

Timing convention of a lane's lead time ``L`` (days, integer >= 1): an order placed at
the end of day ``t`` (after that day's demand) is filled by the upstream node at once,
as far as its stock allows, and arrives at the start of day ``t + L``, in time for that
day's demand. This is the convention of Snyder & Shen's serial model: an order placed
after a period's demand covers the demand of the next ``L`` periods. (In Zipkin's
lost-sales papers an order is placed at the start of a period, before its demand: their
lead time ``l`` is ``l + 1`` here.)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

import numpy as np

EXTERNAL = "external"
"""Source id of a lane fed by an outside vendor with unlimited stock (raw material)."""


class Tier(StrEnum):
    """Tier of a node in the network."""

    SUPPLIER = "supplier"
    MANUFACTURER = "manufacturer"
    DISTRIBUTOR = "distributor"


LEAD_TIME_RULE = (
    "lead times are whole days >= 1, because an order placed at the end of a day "
    "arrives at the earliest the next morning"
)
"""Why a lead time is a whole number of days >= 1 (quoted in validation errors)."""

DEMAND_DISTRIBUTIONS = ("poisson", "negative_binomial", "normal", "uniform", "deterministic")


# -- lead-time distributions: one small typed family ----------------------------------------


class LeadTimeError(ValueError):
    """A lead-time parameter out of its range: ``param`` (``values[1]`` for an array
    entry), what was ``expected``, and optionally how to show what was ``got``."""

    def __init__(self, param: str, expected: str, got: str | None = None) -> None:
        self.param, self.expected, self.got = param, expected, got
        tail = f", got {got}" if got else ""
        super().__init__(f"lead time {param}: expected {expected}{tail}")


_DAYS = f"a lead time in days ({LEAD_TIME_RULE}; at most 100000)"
_MEAN_DAYS = f"a mean lead time >= 1 day ({LEAD_TIME_RULE})"


MAX_LEAD_DAYS = 100_000
"""Longest lead time a scenario may give, days (about 270 years: beyond it a number is a
typo, and the simulator's pipeline of that many days would not fit in memory)."""


def _whole_days(param: str, value: float, expected: str = _DAYS) -> None:
    if not (float(value).is_integer() and 1 <= value <= MAX_LEAD_DAYS):
        raise LeadTimeError(param, expected)


@dataclass(frozen=True)
class Deterministic:
    """Always ``mean`` days."""

    name: ClassVar[str] = "deterministic"
    expects: ClassVar[dict[str, str]] = {"mean": _DAYS}
    mean: int
    """The lead time, whole days >= 1."""

    def __post_init__(self) -> None:
        _whole_days("mean", self.mean)
        object.__setattr__(self, "mean", int(self.mean))

    @property
    def shortest(self) -> int:
        return int(self.mean)

    @property
    def natural_max(self) -> int:
        return max(1, int(round(self.mean)))

    def draw(self, rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
        return np.full(size, round(self.mean), dtype=np.int64)

    def pmf(self, cap: int) -> np.ndarray:
        return _point(min(max(int(round(self.mean)), 1), cap), cap)

    def describe(self) -> str:
        return f"{round(self.mean)} d"


@dataclass(frozen=True)
class DiscreteUniform:
    """Integers ``low..high`` inclusive, equally likely."""

    name: ClassVar[str] = "uniform"
    expects: ClassVar[dict[str, str]] = {"low": _DAYS, "high": "an integer >= low"}
    low: int
    """Shortest lead time, whole days >= 1."""
    high: int
    """Longest lead time, whole days >= ``low``."""

    def __post_init__(self) -> None:
        _whole_days("low", self.low)
        _whole_days("high", self.high, f"an integer >= low ({self.low})")
        if self.high < self.low:
            raise LeadTimeError("high", f"an integer >= low ({self.low})")
        object.__setattr__(self, "low", int(self.low))
        object.__setattr__(self, "high", int(self.high))

    @property
    def shortest(self) -> int:
        return int(self.low)

    @property
    def natural_max(self) -> int:
        return max(1, int(self.high))

    def draw(self, rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
        return rng.integers(self.low, self.high + 1, size=size)

    def pmf(self, cap: int) -> np.ndarray:
        days = np.arange(self.low, self.high + 1)
        return _clipped(days, np.full(len(days), 1.0 / len(days)), cap)

    def describe(self) -> str:
        return f"U{{{self.low}..{self.high}}} d"


@dataclass(frozen=True)
class Poisson:
    """``max(1, Poisson(mean))``: a Poisson count of days, a draw of 0 read as 1."""

    name: ClassVar[str] = "poisson"
    expects: ClassVar[dict[str, str]] = {"mean": _MEAN_DAYS}
    mean: float
    """Mean of the Poisson count, >= 1 day."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean) and 1 <= self.mean <= MAX_LEAD_DAYS):
            raise LeadTimeError("mean", _MEAN_DAYS)
        object.__setattr__(self, "mean", float(self.mean))

    shortest: ClassVar[int] = 1

    @property
    def natural_max(self) -> int:
        return max(1, int(math.ceil(self.mean + 6 * math.sqrt(max(self.mean, 1e-9)) + 1)))

    def draw(self, rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
        return rng.poisson(self.mean, size=size)

    def pmf(self, cap: int) -> np.ndarray:
        k = np.arange(cap + 1)
        log_p = k * math.log(self.mean) - self.mean - np.array([math.lgamma(i + 1) for i in k])
        probs = np.exp(log_p)
        probs[-1] += max(1.0 - probs.sum(), 0.0)  # everything above cap is drawn as cap
        return _clipped(k, probs, cap)

    def describe(self) -> str:
        return f"poisson({self.mean:g}) d"


@dataclass(frozen=True)
class _Continuous:
    """A continuous law with ``mean`` and ``std`` (days), rounded up to whole days."""

    name: ClassVar[str] = ""
    mean: float
    """Mean before rounding up, >= 1 day."""
    std: float
    """Standard deviation before rounding up, > 0 days."""

    def __post_init__(self) -> None:
        positive = self.expects["mean"]
        for param in ("mean", "std"):
            value = getattr(self, param)
            if not (math.isfinite(value) and 0 < value <= MAX_LEAD_DAYS):
                raise LeadTimeError(param, positive)
            object.__setattr__(self, param, float(value))
        if self.mean < 1:
            raise LeadTimeError("mean", _MEAN_DAYS)

    shortest: ClassVar[int] = 1

    @property
    def natural_max(self) -> int:
        return max(1, int(math.ceil(self.mean + 6 * self.std + 1)))

    def cdf(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def pmf(self, cap: int) -> np.ndarray:
        """``P(ceil(X) = k) = F(k) - F(k - 1)``, clipped to ``[1, cap]``."""
        k = np.arange(cap + 1, dtype=float)
        cdf = self.cdf(k)
        probs = np.diff(cdf, prepend=0.0)
        probs[-1] += 1.0 - cdf[-1]  # everything above cap is drawn as cap
        return _clipped(k.astype(int), probs, cap)

    def describe(self) -> str:
        return f"{self.name}({self.mean:g}, sd {self.std:g}) d"


@dataclass(frozen=True)
class Gamma(_Continuous):
    """Gamma with that mean and std, rounded up."""

    name: ClassVar[str] = "gamma"
    expects: ClassVar[dict[str, str]] = dict.fromkeys(
        ("mean", "std"), "a positive mean and std for a gamma lead time"
    )

    def draw(self, rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
        k = (self.mean / self.std) ** 2
        return np.ceil(rng.gamma(k, self.mean / k, size=size))

    def cdf(self, x: np.ndarray) -> np.ndarray:
        from scipy.special import gammainc

        k = (self.mean / self.std) ** 2
        return gammainc(k, np.maximum(x, 0.0) / (self.mean / k))


@dataclass(frozen=True)
class Lognormal(_Continuous):
    """Lognormal with that mean and std, rounded up."""

    name: ClassVar[str] = "lognormal"
    expects: ClassVar[dict[str, str]] = dict.fromkeys(
        ("mean", "std"), "a positive mean and std for a lognormal lead time"
    )

    def _mu_sigma(self) -> tuple[float, float]:
        sigma2 = math.log(1 + (self.std / self.mean) ** 2)
        return math.log(self.mean) - sigma2 / 2, math.sqrt(sigma2)

    def draw(self, rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
        mu, sigma = self._mu_sigma()
        return np.ceil(rng.lognormal(mu, sigma, size=size))

    def cdf(self, x: np.ndarray) -> np.ndarray:
        mu, sigma = self._mu_sigma()
        with np.errstate(divide="ignore"):
            z = (np.log(np.maximum(x, 0.0)) - mu) / (sigma * math.sqrt(2.0))
        return 0.5 * (1.0 + np.array([math.erf(v) for v in z]))


@dataclass(frozen=True)
class Empirical:
    """``values[i]`` with probability ``weights[i] / sum(weights)``."""

    name: ClassVar[str] = "empirical"
    expects: ClassVar[dict[str, str]] = {
        "values": f"an array of lead times in days ({LEAD_TIME_RULE})",
        "weights": "weights >= 0, one per value",
    }
    values: tuple[int, ...]
    """Lead times, whole days >= 1 (at least one)."""
    weights: tuple[float, ...] = ()
    """One weight >= 0 per value, positive sum (default: equal)."""

    def __post_init__(self) -> None:
        if not self.values:
            raise LeadTimeError("values", "at least one lead time", "an empty array")
        for i, value in enumerate(self.values):
            _whole_days(f"values[{i}]", value, f"lead times in days ({LEAD_TIME_RULE})")
        if not self.weights:
            object.__setattr__(self, "weights", (1.0,) * len(self.values))
        if len(self.weights) != len(self.values):
            raise LeadTimeError("weights", f"one weight per value ({len(self.values)} values)")
        for i, weight in enumerate(self.weights):
            if not (math.isfinite(weight) and weight >= 0):
                raise LeadTimeError(f"weights[{i}]", "weights >= 0, one per value")
        if sum(self.weights) <= 0:
            raise LeadTimeError("weights", "weights with a positive sum", "all zero")
        object.__setattr__(self, "values", tuple(int(v) for v in self.values))
        object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))

    @property
    def shortest(self) -> int:
        return int(min(self.values))

    @property
    def natural_max(self) -> int:
        return max(1, int(max(self.values)))

    def _p(self) -> np.ndarray:
        w = np.asarray(self.weights, float)
        return w / w.sum()

    def draw(self, rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
        return rng.choice(np.asarray(self.values), p=self._p(), size=size)

    def pmf(self, cap: int) -> np.ndarray:
        return _clipped(np.asarray(self.values, int), self._p(), cap)

    def describe(self) -> str:
        return f"empirical {list(self.values)} d"


LeadTimeLaw = Deterministic | DiscreteUniform | Poisson | Gamma | Lognormal | Empirical
"""One lead-time distribution, with its own parameters (see :data:`LEAD_TIME_LAWS`)."""

LEAD_TIME_LAWS: dict[str, type[LeadTimeLaw]] = {
    law.name: law for law in (Deterministic, DiscreteUniform, Poisson, Gamma, Lognormal, Empirical)
}
"""``distribution`` name (as written in a scenario file) -> its law."""
LEAD_TIME_DISTRIBUTIONS = tuple(LEAD_TIME_LAWS)


def law_params(law: type[LeadTimeLaw]) -> tuple[str, ...]:
    """The parameters a law takes (its fields; as written in a scenario file)."""
    return tuple(f.name for f in dataclasses.fields(law))


def _point(day: int, cap: int) -> np.ndarray:
    out = np.zeros(cap + 1)
    out[day] = 1.0
    return out


def _clipped(days: np.ndarray, probs: np.ndarray, cap: int) -> np.ndarray:
    """Probabilities ``[cap + 1]`` (index = days) of ``clip(days, 1, cap)``."""
    out = np.zeros(cap + 1)
    np.add.at(out, np.clip(days, 1, cap), probs)
    return out


@dataclass(frozen=True)
class LeadTime:
    """Distribution of a lane's lead time in whole days (>= 1, see the module docstring).

    The fields are the scenario file's ``lead_time`` table; :attr:`law` is the typed
    distribution they describe (:data:`LEAD_TIME_LAWS`): ``deterministic``: ``mean``
    days. ``uniform``: integers ``low..high`` inclusive. ``poisson``:
    ``max(1, Poisson(mean))``. ``gamma`` / ``lognormal`` with ``mean`` and ``std``,
    rounded up. ``empirical``: ``values`` with ``weights`` (normalized). Every draw is
    clipped to ``[1, support_max]``.
    """

    distribution: str = "deterministic"
    mean: float = 1.0
    std: float = 0.0
    low: int = 1
    high: int = 1
    values: tuple[int, ...] = ()
    weights: tuple[float, ...] = ()
    max_days: int = 0  # 0: derived from the distribution (see ``support_max``)

    @classmethod
    def of(cls, law: LeadTimeLaw, max_days: int = 0) -> LeadTime:
        """The lead time of ``law``, capped at ``max_days`` (0: no cap)."""
        kwargs: dict[str, Any] = {f.name: getattr(law, f.name) for f in dataclasses.fields(law)}
        match law:  # the nominal mean the flat record carries
            case DiscreteUniform():
                kwargs["mean"] = (law.low + law.high) / 2
            case Empirical():
                kwargs["mean"] = float(np.dot(law.values, law.weights) / sum(law.weights))
        if "mean" in kwargs:
            kwargs["mean"] = float(kwargs["mean"])
        return cls(distribution=law.name, **kwargs, max_days=max_days)

    @functools.cached_property
    def law(self) -> LeadTimeLaw:
        """The typed distribution of this lead time."""
        law = LEAD_TIME_LAWS.get(self.distribution)
        if law is None:
            raise ValueError(f"unknown lead-time distribution {self.distribution!r}")
        return law(**{name: getattr(self, name) for name in law_params(law)})

    @property
    def support_max(self) -> int:
        """Largest lead time this distribution can produce, in days."""
        if self.max_days:
            return int(self.max_days)
        return self.law.natural_max

    @property
    def expected_days(self) -> float:
        """Nominal mean lead time in days, before rounding and clipping (exact for
        deterministic/uniform/empirical); :attr:`mean_days` is the exact mean of a draw."""
        match self.law:
            case DiscreteUniform(low=low, high=high):
                return (low + high) / 2
            case Empirical(values=values, weights=weights):
                w = np.asarray(weights, float)
                return float(np.dot(values, w / w.sum()))
        return float(self.mean)

    def pmf(self) -> np.ndarray:
        """Exact probabilities of a draw, ``[support_max + 1]`` indexed by days (0 at 0)."""
        return self.law.pmf(self.support_max)

    @property
    def mean_days(self) -> float:
        """Exact mean of a draw (rounded up and clipped as :meth:`sample` draws), days."""
        p = self.pmf()
        return float(np.dot(np.arange(len(p)), p))

    @property
    def variance_days(self) -> float:
        """Exact variance of a draw (rounded up and clipped), days²."""
        p = self.pmf()
        days = np.arange(len(p))
        mean = float(np.dot(days, p))
        return max(float(np.dot((days - mean) ** 2, p)), 0.0)

    def describe(self) -> str:
        """Short text, e.g. ``U{2..4} d`` or ``gamma(3, sd 1) d``."""
        return self.law.describe()

    def parameters(self) -> dict[str, Any]:
        """The file's ``lead_time`` table: ``distribution``, the law's parameters, and
        ``max_days`` when it caps the draws."""
        law = self.law
        out: dict[str, Any] = {"distribution": law.name}
        out |= {name: getattr(law, name) for name in law_params(type(law))}
        if self.max_days:
            out["max_days"] = int(self.max_days)
        return out

    def sample(self, rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
        """Draw lead times (int days, in ``[1, support_max]``) of the given shape."""
        return np.clip(self.law.draw(rng, size), 1, self.support_max).astype(np.int64)


@dataclass(frozen=True)
class Promotion:
    """A promotion window: demand mean multiplied by ``multiplier`` on days ``start..end``."""

    start_day: int
    end_day: int
    multiplier: float


@dataclass(frozen=True)
class DemandModel:
    """Daily customer demand at one node, in units/day.

    The mean on day ``t`` is ``mean x weekly[weekday] x annual(t) x promotions x surges``,
    with ``annual(t) = 1 + annual_amplitude * cos(2 pi (day_of_year - annual_peak_day) / 365)``.
    ``normal`` draws are clipped at 0 (``std`` scales with the mean: ``std * m/mean``);
    ``negative_binomial`` has variance ``m + m^2 / dispersion``; ``uniform`` draws
    integers ``low..high`` (then scaled by the multipliers); ``deterministic`` is ``m``.
    ``history``, when set, replaces the model: days are bootstrapped (or replayed in
    order, see ``history_mode``) from that node's rows of a demand-history file.
    """

    distribution: str = "poisson"
    mean: float = 0.0
    std: float = 0.0
    dispersion: float = 1.0
    low: int = 0
    high: int = 0
    weekly: tuple[float, ...] = (1.0,) * 7
    annual_amplitude: float = 0.0
    annual_peak_day: int = 0
    promotions: tuple[Promotion, ...] = ()
    history: tuple[float, ...] = ()
    history_mode: str = "bootstrap"

    @property
    def base_mean(self) -> float:
        """Mean demand per day before calendar multipliers, in units."""
        if self.history:
            return float(np.mean(self.history))
        if self.distribution == "uniform":
            return (self.low + self.high) / 2
        return float(self.mean)


@dataclass(frozen=True)
class Node:
    """A facility. Costs in $ per unit-day (holding, backorder) or $ per unit (lost sale)."""

    id: str
    tier: Tier
    region: str
    organization: str
    unit_value: float = 0.0
    """Value of one unit held here, $ (inventory valuation, default transfer price)."""
    holding_cost: float = 0.0
    """$ per unit per day on end-of-day on-hand stock."""
    stockout_penalty: float = 0.0
    """$ per unit-day backordered: customer backorders and orders owed to downstream nodes
    at the end of a day; under lost sales, $ per lost customer unit (orders owed downstream
    are always backordered and charged per unit-day)."""
    capacity: float = math.inf
    """Units/day of output: production (supplier), assembly (BOM manufacturer), else shipping."""
    storage_capacity: float = math.inf
    """Most units on hand plus inbound in transit and on order (units)."""
    initial_inventory: float = 0.0
    """On hand at the start of day 0, units (finished items)."""
    item: str = ""
    """Name of the item this node makes or stocks (default: the node id)."""
    bill_of_materials: Mapping[str, float] = field(default_factory=dict)
    """Units of each inbound item consumed per unit assembled (manufacturers)."""
    demand: DemandModel | None = None
    """Customer demand at this node, if it faces customers."""

    @property
    def item_name(self) -> str:
        return self.item or self.id


@dataclass(frozen=True)
class InTransit:
    """Units in transit at the start of the horizon: ``quantity`` units arrive at the start
    of day ``arrival_day`` (>= 1: what arrives on day 0 is ``initial_inventory``)."""

    arrival_day: int
    quantity: float


@dataclass(frozen=True)
class Lane:
    """A replenishment lane ``source -> destination`` (``source`` may be ``external``)."""

    source: str
    destination: str
    lead_time: LeadTime = field(default_factory=LeadTime)
    price: float | None = None
    """$ per unit paid by the destination; default the source's unit value (external: 0)."""
    shipping_cost: float = 0.0
    """$ per unit ordered on this lane."""
    transit_holding_cost: float | None = None
    """$ per unit-day in transit; default the source's holding cost (external: 0)."""
    transport_capacity: float = math.inf
    """Most units shipped on this lane per day."""
    lot_size: float = 0.0
    """Orders must be whole multiples of this many units (0: no lot size)."""
    min_monthly_commitment: float = 0.0
    """Contract: at least this many units ordered per calendar month."""
    fixed_order_cost: float = 0.0
    """$ per day with a positive order on this lane."""
    order_share: float = 1.0
    """Share of a node's need for this lane's item ordered on this lane (split sourcing)."""
    item: str = ""
    """Item a lane from ``external`` brings (needed into an assembling node); a lane from a
    node carries that node's item."""
    order_lead_time: int = 0
    """Days an order takes to reach the source (information lead time): an order released
    at the end of day ``t`` is received by the source on the morning of day
    ``t + order_lead_time`` and filled that day; 0: at once."""
    initial_pipeline: tuple[InTransit, ...] = ()
    """Units already in transit on this lane on day 0, by arrival day."""

    @property
    def id(self) -> str:
        """``SOURCE->DESTINATION``; ``external:ITEM->DESTINATION`` for a named external item."""
        if self.item:
            return f"{self.source}:{self.item}->{self.destination}"
        return f"{self.source}->{self.destination}"


@dataclass(frozen=True)
class TransferLink:
    """A lateral-transfer link between two same-region peers (one direction)."""

    source: str
    destination: str
    unit_cost: float = 0.0
    """$ per unit transferred."""
    lead_time_days: int = 1
    """Days until a transfer released at the end of day t lands (start of day t + lead)."""
    capacity: float = math.inf
    """Most units per day."""


@dataclass(frozen=True)
class Organization:
    """A company owning nodes; ``monthly_budget`` caps its purchase spend ($/month)."""

    id: str
    monthly_budget: float = math.inf


@dataclass(frozen=True)
class Outage:
    """On/off outage of a node's capacity or a lane's transport capacity.

    Random: each day without an outage, one starts with ``start_probability``; it lasts
    a geometric number of days with mean ``mean_duration_days``. Fixed: ``start_day``
    given, it lasts exactly ``duration_days`` days (days ``start_day .. start_day +
    duration_days - 1``), in every replication. Meanwhile capacity is
    ``capacity_fraction`` of normal. Downstream nodes are notified ``notice_lag_days``
    after it starts.
    """

    target: str
    """A node id, or a lane id ``source->destination``."""
    start_probability: float = 0.0
    mean_duration_days: float = 1.0
    capacity_fraction: float = 0.0
    notice_lag_days: int = 0
    start_day: int | None = None
    """Fixed outage: its first day (0-based); ``None`` for a random outage."""
    duration_days: int = 1
    """Fixed outage: its length, days."""


@dataclass(frozen=True)
class ExtraDelay:
    """Random extra transit delay: each day's shipment on ``lane`` is late with
    ``probability`` by a uniform ``min_days..max_days`` days; the destination is notified
    ``notice_lag_days`` after shipping (or at arrival, if that comes first)."""

    lane: str
    probability: float
    min_days: int = 1
    max_days: int = 1
    notice_lag_days: int = 0


@dataclass(frozen=True)
class Surge:
    """A regional demand surge: demand means of the region's customer nodes times
    ``multiplier``. Fixed (``start_day`` given) or random (``start_probability`` per day,
    geometric duration with mean ``duration_days``)."""

    region: str
    multiplier: float
    duration_days: float
    start_day: int | None = None
    start_probability: float = 0.0


@dataclass(frozen=True)
class LeadShift:
    """A lasting lead-time drift on a lane: from ``start_day`` on, every shipment's drawn
    lead time (before extra delays) is ``factor`` times longer, rounded up to whole days
    (a supplier whose lead time doubles mid-year: ``factor = 2``)."""

    lane: str
    factor: float
    start_day: int


@dataclass(frozen=True)
class Network:
    """The whole network: nodes, lanes, lateral links and organizations."""

    nodes: tuple[Node, ...]
    lanes: tuple[Lane, ...]
    organizations: tuple[Organization, ...]
    transfers: tuple[TransferLink, ...] = ()

    def node(self, node_id: str) -> Node:
        return self.nodes[self.node_index[node_id]]

    @property
    def node_index(self) -> dict[str, int]:
        return {n.id: i for i, n in enumerate(self.nodes)}

    @property
    def lane_index(self) -> dict[str, int]:
        return {lane.id: i for i, lane in enumerate(self.lanes)}

    @property
    def customer_nodes(self) -> tuple[str, ...]:
        return tuple(n.id for n in self.nodes if n.demand is not None)


@dataclass(frozen=True)
class Scenario:
    """A network plus everything random or calendar-bound about running it."""

    name: str
    network: Network
    horizon_days: int = 365
    start_date: str = "2025-01-01"
    """ISO date of day 0 (for weekdays, seasonality and calendar months)."""
    lost_sales: bool = False
    """True: unmet customer demand is lost; False: backordered (filled first later)."""
    seed: int = 0
    description: str = ""
    outages: tuple[Outage, ...] = ()
    delays: tuple[ExtraDelay, ...] = ()
    surges: tuple[Surge, ...] = ()
    lead_shifts: tuple[LeadShift, ...] = ()
    """Lasting lead-time drifts on lanes (:class:`LeadShift`)."""
    warmup_days: int = 0
    """Days excluded from metrics (the simulation still runs them)."""
    source: str = ""
    """File the scenario was loaded from, or ``builtin:NAME``."""
