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

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

EXTERNAL = "external"
"""Source id of a lane fed by an outside vendor with unlimited stock (raw material)."""


class Tier(StrEnum):
    """Tier of a node in the network."""

    SUPPLIER = "supplier"
    MANUFACTURER = "manufacturer"
    DISTRIBUTOR = "distributor"


LEAD_TIME_DISTRIBUTIONS = ("deterministic", "uniform", "poisson", "gamma", "lognormal", "empirical")
DEMAND_DISTRIBUTIONS = ("poisson", "negative_binomial", "normal", "uniform", "deterministic")


@dataclass(frozen=True)
class LeadTime:
    """Distribution of a lane's lead time in whole days (>= 1, see the module docstring).

    ``deterministic``: ``mean`` days. ``uniform``: integers ``low..high`` inclusive.
    ``poisson``: ``max(1, Poisson(mean))``. ``gamma`` / ``lognormal`` with ``mean`` and
    ``std``, rounded up. ``empirical``: ``values`` with ``weights`` (normalized).
    Every draw is clipped to ``[1, max_days]``.
    """

    distribution: str = "deterministic"
    mean: float = 1.0
    std: float = 0.0
    low: int = 1
    high: int = 1
    values: tuple[int, ...] = ()
    weights: tuple[float, ...] = ()
    max_days: int = 0  # 0: derived from the distribution (see ``support_max``)

    @property
    def support_max(self) -> int:
        """Largest lead time this distribution can produce, in days."""
        if self.max_days:
            return int(self.max_days)
        match self.distribution:
            case "deterministic":
                return max(1, int(round(self.mean)))
            case "uniform":
                return max(1, int(self.high))
            case "empirical":
                return max(1, int(max(self.values)))
            case "poisson":
                return max(1, int(math.ceil(self.mean + 6 * math.sqrt(max(self.mean, 1e-9)) + 1)))
            case _:
                return max(1, int(math.ceil(self.mean + 6 * self.std + 1)))

    @property
    def expected_days(self) -> float:
        """Mean lead time in days, before clipping (exact for deterministic/uniform/empirical)."""
        match self.distribution:
            case "uniform":
                return (self.low + self.high) / 2
            case "empirical":
                w = np.asarray(self.weights, float)
                return float(np.dot(self.values, w / w.sum()))
            case _:
                return float(self.mean)

    def sample(self, rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
        """Draw lead times (int days, in ``[1, support_max]``) of the given shape."""
        match self.distribution:
            case "deterministic":
                out = np.full(size, round(self.mean), dtype=np.int64)
            case "uniform":
                out = rng.integers(self.low, self.high + 1, size=size)
            case "poisson":
                out = rng.poisson(self.mean, size=size)
            case "gamma":
                k = (self.mean / self.std) ** 2
                out = np.ceil(rng.gamma(k, self.mean / k, size=size))
            case "lognormal":
                sigma2 = math.log(1 + (self.std / self.mean) ** 2)
                mu = math.log(self.mean) - sigma2 / 2
                out = np.ceil(rng.lognormal(mu, math.sqrt(sigma2), size=size))
            case "empirical":
                w = np.asarray(self.weights, float)
                out = rng.choice(np.asarray(self.values), p=w / w.sum(), size=size)
            case other:  # pragma: no cover - validated at load time
                raise ValueError(f"unknown lead-time distribution {other!r}")
        return np.clip(out, 1, self.support_max).astype(np.int64)


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
    warmup_days: int = 0
    """Days excluded from metrics (the simulation still runs them)."""
    source: str = ""
    """File the scenario was loaded from, or ``builtin:NAME``."""
