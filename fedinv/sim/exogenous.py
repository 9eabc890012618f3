"""Every random thing a scenario does, drawn up front per replication.

Demand, lead times (with their lasting drifts, ``Scenario.lead_shifts``), extra delays,
outages and demand surges do not depend on the orders
placed, so each replication's streams are drawn once, for the whole horizon, from a
generator seeded by ``(scenario seed, replication index)``; each stream has a child
generator of its own. Two policies run on the same replication therefore see the very
same demand and disruptions (common random numbers), and a replication's numbers do not
depend on which other replications share its batch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedinv.model.layout import Layout
from fedinv.model.network import Scenario

STREAMS = ("demand", "lead_time", "outage", "delay", "surge")


@dataclass(frozen=True)
class Calendar:
    """Calendar of the horizon: day ``t`` is ``start_date + t``."""

    weekday: np.ndarray  # [D] 0 = Monday
    day_of_year: np.ndarray  # [D] 1..366
    month: np.ndarray  # [D] month index from the start month, 0-based
    month_end: np.ndarray  # [D] True on the last day of a calendar month
    dates: np.ndarray  # [D] datetime64[D]

    @property
    def num_months(self) -> float:
        """Length of the horizon in months of 365/12 days."""
        return len(self.dates) / (365.0 / 12.0)


def make_calendar(start_date: str, days: int) -> Calendar:
    start = np.datetime64(start_date, "D")
    dates = start + np.arange(days + 1)
    epoch_days = dates.astype("datetime64[D]").astype(np.int64)
    months = dates.astype("datetime64[M]").astype(np.int64)
    years = dates.astype("datetime64[Y]")
    doy = (dates - years.astype("datetime64[D]")).astype(np.int64) + 1
    return Calendar(
        weekday=((epoch_days + 3) % 7)[:days],
        day_of_year=doy[:days],
        month=(months - months[0])[:days],
        month_end=(months[1:] != months[:-1])[:days],
        dates=dates[:days],
    )


@dataclass(frozen=True)
class Exogenous:
    """Pre-drawn streams of a batch of ``B`` replications over ``D`` days."""

    replications: tuple[int, ...]
    calendar: Calendar
    demand: np.ndarray  # [B, D, N] units
    demand_mean: np.ndarray  # [B, D, N] units, the mean the draw came from
    lead: np.ndarray  # [B, D, M] days, lead time of what ships that day (extra delay included)
    extra_delay: np.ndarray  # [B, D, M] days of extra delay in ``lead``
    node_factor: np.ndarray  # [B, D, N] capacity fraction (1: no outage)
    lane_factor: np.ndarray  # [B, D, M] transport-capacity fraction
    alert: np.ndarray  # [B, D, M] 1 where the lane's supply is in an announced outage
    delay_notice: np.ndarray  # [B, D, M] extra days announced that day for a shipment
    delay_parts: tuple[tuple[int, int, np.ndarray], ...] = ()
    """Per ``[[delays]]`` entry: ``(lane index, notice lag in days, extra days [B, D] of
    what ships that day)``; their sum per lane is ``extra_delay``. The day reads them to
    know which part of a shipment's delay its destination has been told of
    (:attr:`fedinv.sim.simulator.State.known_pipeline`)."""

    @property
    def batch(self) -> int:
        return self.demand.shape[0]

    @property
    def days(self) -> int:
        return self.demand.shape[1]


def exogenous_bytes_per_day(scenario: Scenario, layout: Layout) -> int:
    """Bytes :func:`draw_exogenous` holds per replication and day (its streams and the
    temporaries of drawing them), an estimate from the network's size."""
    n, m = layout.num_nodes, layout.num_lanes
    k = len(scenario.outages) + len(scenario.surges)
    return 8 * (4 * n + 5 * m) + 25 * k + 48


def memory_limit_bytes() -> int:
    """The most memory a simulation may plan to use: this machine's physical memory."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return 16 * 2**30


def check_memory(need: int, per_day: int, replications: int, days: int, field: str) -> None:
    """Refuse a run whose estimated memory ``need`` (bytes) exceeds
    :func:`memory_limit_bytes`, naming ``field`` (what set ``days``)."""
    limit = memory_limit_bytes()
    if need > limit:
        raise ValueError(
            f"{field} = {days}: {replications} replication(s) of {days} days need about "
            f"{_size(need)} of memory ({_size(per_day)} per replication-day), more than "
            f"the limit of {_size(limit)} (this machine's memory); simulate fewer days or "
            "fewer replications at a time"
        )


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if n < 1024 or unit == "EiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} EiB"  # pragma: no cover


def draw_exogenous(
    scenario: Scenario, layout: Layout, replications: Sequence[int], days: int
) -> Exogenous:
    """Draw the streams of ``replications`` (indices) for ``days`` days. Raises
    ``ValueError`` when they would not fit in memory (:func:`check_memory`)."""
    reps = tuple(int(r) for r in replications)
    per_day = exogenous_bytes_per_day(scenario, layout)
    check_memory(per_day * len(reps) * int(days), per_day, len(reps), int(days), "days")
    nodes = layout.network.nodes
    n_nodes, n_lanes, n_reps = layout.num_nodes, layout.num_lanes, len(reps)
    cal = make_calendar(scenario.start_date, days)
    gens = [
        dict(
            zip(
                STREAMS,
                (
                    np.random.default_rng(s)
                    for s in np.random.SeedSequence([scenario.seed, r]).spawn(len(STREAMS))
                ),
                strict=True,
            )
        )
        for r in reps
    ]

    # Surges: [B, D, N] multipliers on customer nodes of the region.
    surge = np.ones((n_reps, days, n_nodes))
    for s in scenario.surges:
        in_region = (layout.region == s.region) & layout.customer
        if s.start_day is not None:
            window = (np.arange(days) >= s.start_day) & (
                np.arange(days) < s.start_day + int(round(s.duration_days))
            )
            surge[:, window[:, None].repeat(n_nodes, 1) & in_region[None, :]] *= s.multiplier
    random_surges = [s for s in scenario.surges if s.start_day is None and s.start_probability > 0]
    if random_surges:
        p = np.array([s.start_probability for s in random_surges])
        mean = np.array([s.duration_days for s in random_surges])
        active, _ = _on_off([g["surge"] for g in gens], days, p, mean)
        for k, s in enumerate(random_surges):
            in_region = (layout.region == s.region) & layout.customer
            factor = np.where(active[:, :, k], s.multiplier, 1.0)
            surge[:, :, in_region] *= factor[:, :, None]

    # Demand.
    demand_mean = np.zeros((n_reps, days, n_nodes))
    demand = np.zeros((n_reps, days, n_nodes))
    for i, node in enumerate(nodes):
        model = node.demand
        if model is None:
            continue
        if model.history:
            hist = np.asarray(model.history, float)
            demand_mean[:, :, i] = hist.mean()
            for b, g in enumerate(gens):
                if model.history_mode == "replay":
                    demand[b, :, i] = np.resize(hist, days)
                else:
                    demand[b, :, i] = g["demand"].choice(hist, size=days)
            continue
        weekly = np.asarray(model.weekly, float)[cal.weekday]
        annual = 1 + model.annual_amplitude * np.cos(
            2 * np.pi * (cal.day_of_year - model.annual_peak_day) / 365.0
        )
        promo = np.ones(days)
        for pr in model.promotions:
            promo[(np.arange(days) >= pr.start_day) & (np.arange(days) <= pr.end_day)] *= (
                pr.multiplier
            )
        m = model.base_mean * weekly * annual * promo * surge[:, :, i]  # [B, D]
        demand_mean[:, :, i] = m
        for b, g in enumerate(gens):
            demand[b, :, i] = _draw_demand(model, m[b], g["demand"])

    # Lead times and extra delays.
    lead = np.empty((n_reps, days, n_lanes), np.int64)
    for b, g in enumerate(gens):
        for m, lane in enumerate(layout.network.lanes):
            lead[b, :, m] = lane.lead_time.sample(g["lead_time"], (days,))
    for shift in scenario.lead_shifts:  # lasting drifts: the same draws, stretched from a day
        m = layout.network.lane_index[shift.lane]
        after = lead[:, shift.start_day :, m]
        lead[:, shift.start_day :, m] = np.ceil(shift.factor * after - 1e-9).astype(np.int64)
    extra = np.zeros((n_reps, days, n_lanes), np.int64)
    delay_notice = np.zeros((n_reps, days, n_lanes))
    lane_idx = layout.network.lane_index
    parts = []
    for d in scenario.delays:
        m = lane_idx[d.lane]
        part = np.zeros((n_reps, days), np.int64)
        for b, g in enumerate(gens):
            rng = g["delay"]
            late = rng.random(days) < d.probability
            size = rng.integers(d.min_days, d.max_days + 1, size=days)
            part[b] = np.where(late, size, 0)
        extra[:, :, m] += part
        parts.append((m, int(min(d.notice_lag_days, 10**6)), part))
        announce = np.arange(days) + min(d.notice_lag_days, 10**6)
        ok = announce < days
        for b in range(n_reps):
            np.add.at(delay_notice[b, :, m], announce[ok], part[b, ok])
    lead += extra

    # Outages.
    node_factor = np.ones((n_reps, days, n_nodes))
    lane_factor = np.ones((n_reps, days, n_lanes))
    alert = np.zeros((n_reps, days, n_lanes))
    if scenario.outages:
        p = np.array([o.start_probability for o in scenario.outages])
        mean = np.array([o.mean_duration_days for o in scenario.outages])
        active, elapsed = _on_off([g["outage"] for g in gens], days, p, mean)
        for k, o in enumerate(scenario.outages):
            if o.start_day is not None:  # a fixed window, the same in every replication
                day = np.arange(days)
                on = (day >= o.start_day) & (day < o.start_day + o.duration_days)
                active[:, :, k] = on[None, :]
                elapsed[:, :, k] = np.where(on, day - o.start_day, 0)[None, :]
        nidx = layout.network.node_index
        for k, o in enumerate(scenario.outages):
            factor = np.where(active[:, :, k], o.capacity_fraction, 1.0)
            announced = active[:, :, k] & (elapsed[:, :, k] >= o.notice_lag_days)
            if o.target in nidx:
                i = nidx[o.target]
                node_factor[:, :, i] = np.minimum(node_factor[:, :, i], factor)
                affected = (layout.lane_src == i) | (layout.external & (layout.lane_dst == i))
            else:
                m = lane_idx[o.target]
                lane_factor[:, :, m] = np.minimum(lane_factor[:, :, m], factor)
                affected = np.arange(n_lanes) == m
            alert[:, :, affected] = np.maximum(alert[:, :, affected], announced[:, :, None])
    return Exogenous(
        reps,
        cal,
        demand,
        demand_mean,
        lead,
        extra,
        node_factor,
        lane_factor,
        alert,
        delay_notice,
        tuple(parts),
    )


def _draw_demand(model, mean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One replication's daily demand for one node (units, >= 0)."""
    base = model.base_mean if model.base_mean > 0 else 1.0
    match model.distribution:
        case "poisson":
            return rng.poisson(mean).astype(float)
        case "negative_binomial":
            r = model.dispersion
            return rng.negative_binomial(r, r / (r + np.maximum(mean, 1e-12))).astype(float)
        case "normal":
            return np.maximum(rng.normal(mean, model.std * mean / base), 0.0)
        case "uniform":
            draws = rng.integers(model.low, model.high + 1, size=mean.shape)
            return draws * (mean / base)
        case "deterministic":
            return mean.astype(float).copy()
    raise ValueError(f"unknown demand distribution {model.distribution!r}")


def _on_off(rngs, days: int, start_p: np.ndarray, mean_duration: np.ndarray):
    """On/off processes, K of them per replication: ``(active, elapsed)`` of ``[B, D, K]``.

    Each off day, a spell starts with probability ``start_p``; its length is geometric
    with mean ``mean_duration`` days (at least 1)."""
    n_proc = len(start_p)
    u = np.stack([g.random((days, n_proc)) for g in rngs])
    length = np.stack(
        [g.geometric(1.0 / np.maximum(mean_duration, 1.0), size=(days, n_proc)) for g in rngs]
    )
    remaining = np.zeros((len(rngs), n_proc), np.int64)
    since = np.zeros((len(rngs), n_proc), np.int64)
    active = np.zeros((len(rngs), days, n_proc), bool)
    elapsed = np.zeros((len(rngs), days, n_proc), np.int64)
    for t in range(days):
        start = (remaining == 0) & (u[:, t] < start_p)
        remaining = np.where(start, length[:, t], remaining)
        since = np.where(start, 0, since)
        on = remaining > 0
        active[:, t] = on
        elapsed[:, t] = since
        remaining = np.where(on, remaining - 1, 0)
        since = since + on
    return active, elapsed
