"""Scenario files (TOML) -> validated :class:`fedinv.model.network.Scenario`.

A scenario file describes a network (organizations, nodes, lanes, lateral-transfer
links) and what is random or calendar-bound about running it (horizon, seed, outages,
extra delays, demand surges, an optional demand-history file). ``docs/scenarios.md`` is
the field reference. Every malformed file raises exactly one :class:`ScenarioError`
that names the file, the field and what was expected; no other exception escapes
:func:`load_scenario` for a bad file.

Field paths in errors: ``lanes[2].lead_time.mean`` (array entries counted from 0, in
file order) or ``nodes[id=D-EU-1].holding_cost`` (entries that have an ``id``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import io
import json
import math
import re
import tomllib
import unicodedata
from collections.abc import Collection, Iterable, Mapping
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedinv.model.network import (
    DEMAND_DISTRIBUTIONS,
    EXTERNAL,
    LEAD_TIME_DISTRIBUTIONS,
    LEAD_TIME_LAWS,
    MAX_LEAD_DAYS,
    DemandModel,
    Deterministic,
    ExtraDelay,
    InTransit,
    Lane,
    LeadShift,
    LeadTime,
    LeadTimeError,
    Network,
    Node,
    Organization,
    Outage,
    Promotion,
    Scenario,
    Surge,
    Tier,
    TransferLink,
    law_params,
)

__all__ = [
    "ScenarioError",
    "builtin_scenarios",
    "load_demand_history",
    "load_scenario",
    "parse_scenario",
]


class ScenarioError(ValueError):
    """A malformed scenario or demand-history file.

    ``str()`` is one line: ``FILE: field FIELD: expected EXPECTED, got GOT``.
    """

    def __init__(self, file: str, field: str, expected: str, got: str) -> None:
        self.file = str(file)
        self.field = field
        self.expected = expected
        self.got = got
        super().__init__(f"{self.file}: field {field}: expected {expected}, got {got}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes (Ray, multiprocessing)
        return (type(self), (self.file, self.field, self.expected, self.got))


# --------------------------------------------------------------------------- keys


def _field_names(cls: type, *, exclude: Iterable[str] = ()) -> tuple[str, ...]:
    skip = set(exclude)
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in skip)


TOP_LEVEL_KEYS = tuple(
    "name description horizon_days start_date lost_sales seed warmup_days organizations nodes "
    "lanes transfers outages delays surges lead_shifts demand_history".split()
)
ORGANIZATION_KEYS = _field_names(Organization)
NODE_KEYS = _field_names(Node)
DEMAND_KEYS = _field_names(DemandModel, exclude=("history", "history_mode"))
PROMOTION_KEYS = _field_names(Promotion)
LANE_KEYS = _field_names(Lane)
LEAD_TIME_KEYS = _field_names(LeadTime)
IN_TRANSIT_KEYS = _field_names(InTransit)
TRANSFER_KEYS = _field_names(TransferLink)
OUTAGE_KEYS = _field_names(Outage)
DELAY_KEYS = _field_names(ExtraDelay)
SURGE_KEYS = _field_names(Surge)
LEAD_SHIFT_KEYS = _field_names(LeadShift)
DEMAND_HISTORY_KEYS = ("file", "mode")
HISTORY_MODES = ("bootstrap", "replay")
TIERS = tuple(t.value for t in Tier)

LEAD_TIME_PARAMS: dict[str, tuple[str, ...]] = {
    name: law_params(law) for name, law in LEAD_TIME_LAWS.items()
}
"""Parameters each lead-time distribution uses (``max_days`` is allowed with all)."""
LEAD_TIME_PARAM_KEYS = tuple(k for k in LEAD_TIME_KEYS if k not in ("distribution", "max_days"))

DEMAND_PARAMS: dict[str, tuple[str, ...]] = {
    "poisson": ("mean",),
    "negative_binomial": ("mean", "dispersion"),
    "normal": ("mean", "std"),
    "uniform": ("low", "high"),
    "deterministic": ("mean",),
}
"""Parameters each demand distribution uses (calendar fields are allowed with all)."""

MAX_NUMBER = 1e15
"""Largest magnitude of a finite number in a scenario file: a quantity, a price or a cost
beyond it is a typo, and products of such numbers overflow (``inf`` means unlimited)."""
_EXACT_INT = 2**53  # floats beyond this are not exact integers

_REQUIRED: Any = object()
_INF_WORDS = ("inf", "+inf", "infinity")
_BUILTIN_PREFIX = "builtin:"


# --------------------------------------------------------------------------- reading


def _describe(value: object) -> str:
    """How a TOML value is shown after ``got`` in an error."""
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, str):
        return f"{_quote(value)} (a string)"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return f"an array of {len(value)} entr{'y' if len(value) == 1 else 'ies'}"
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return f"{value.isoformat()} (a TOML date/time)"
    return repr(value)


def _quote(text: str) -> str:
    """``text`` in double quotes, escaped so that an error message stays one line."""
    return json.dumps(text, ensure_ascii=False)


def _unknown(name: str, known: Iterable[str], note: str = "") -> str:
    """``"name"`` plus a did-you-mean hint drawn from ``known``; characters outside ASCII
    are named by code point, so that a look-alike (Cyrillic ``х`` for Latin ``x``) is
    visible."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}{_code_points(close[0])}?" if close else ""
    return f"{_quote(name)}{_code_points(name)}{note}{hint}"


def _code_points(text: str) -> str:
    """`` (U+0445 CYRILLIC SMALL LETTER HA at character 3)`` for the non-ASCII or
    unprintable characters of ``text`` (the first three), or ``""``."""
    odd = [(i, c) for i, c in enumerate(text) if not (c.isascii() and c.isprintable())]
    if not odd:
        return ""
    shown = ", ".join(
        f"U+{ord(c):04X} {unicodedata.name(c, 'UNNAMED')} at character {i + 1}" for i, c in odd[:3]
    )
    more = f" and {len(odd) - 3} more" if len(odd) > 3 else ""
    return f" ({shown}{more})"


def _entry_path(section: str, index: int, raw: object) -> str:
    """``nodes[id=X]`` when the entry has a string id, else ``nodes[3]``."""
    if isinstance(raw, dict) and isinstance(raw.get("id"), str) and raw["id"]:
        return f"{section}[id={raw['id']}]"
    return f"{section}[{index}]"


def _range_text(minimum: float | None, above: bool, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f"in [{minimum:g}, {maximum:g}]"
    if minimum is not None:
        return f"{'>' if above else '>='} {minimum:g}"
    if maximum is not None:
        return f"<= {maximum:g}"
    return ""


class _Table:
    """One TOML table being read: checks its keys, names its fields in errors."""

    def __init__(self, source: str, data: object, path: str, allowed: Collection[str]) -> None:
        self.source = source
        self.path = path
        if not isinstance(data, dict):
            raise ScenarioError(source, path or "<top level>", "a table", _describe(data))
        self.data: dict[str, Any] = data
        for key in data:
            if key not in allowed:
                raise self.error(
                    key, f"one of the keys {', '.join(allowed)}", f"{_unknown(key, allowed)}"
                )

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, expected: str, got: str) -> ScenarioError:
        return ScenarioError(self.source, self.where(key), expected, got)

    def _missing(self, key: str, expected: str) -> ScenarioError:
        return self.error(key, f"{expected} (required)", "nothing")

    def has(self, key: str) -> bool:
        return key in self.data

    def number(
        self,
        key: str,
        default: Any = _REQUIRED,
        *,
        minimum: float | None = 0.0,
        above: bool = False,
        maximum: float | None = None,
        infinite: bool = False,
        expected: str | None = None,
    ) -> Any:
        """A finite number (never NaN) in range; ``infinite``: also ``inf`` / ``"inf"``."""
        if expected is None:
            expected = f"a number {_range_text(minimum, above, maximum)}".strip()
            if infinite:
                expected += ' (leave the field out, or write "inf", for unlimited)'
        if key not in self.data:
            if default is _REQUIRED:
                raise self._missing(key, expected)
            return default
        value = self.data[key]
        if infinite and isinstance(value, str) and value.strip().lower() in _INF_WORDS:
            return math.inf
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, expected, _describe(value))
        number = float(value)
        bad = (
            math.isnan(number)
            or (math.isinf(number) and not (infinite and number > 0))
            or (minimum is not None and (number < minimum or (above and number == minimum)))
            or (maximum is not None and number > maximum)
        )
        if bad:
            raise self.error(key, expected, _describe(value))
        if abs(number) > MAX_NUMBER and math.isfinite(number):
            raise self.error(key, f"{expected}, at most {MAX_NUMBER:g}", repr(value))
        return number

    def integer(
        self,
        key: str,
        default: Any = _REQUIRED,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        expected: str | None = None,
    ) -> Any:
        """An integer in range (an integral float such as ``2.0`` is accepted)."""
        if expected is None:
            expected = f"an integer {_range_text(minimum, False, maximum)}".strip()
        if key not in self.data:
            if default is _REQUIRED:
                raise self._missing(key, expected)
            return default
        return self._integer_value(key, self.data[key], minimum, maximum, expected)

    def _integer_value(
        self, where: str, value: object, minimum: int | None, maximum: int | None, expected: str
    ) -> int:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(where, expected, _describe(value))
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            raise self.error(where, expected, _describe(value))
        if isinstance(value, float) and abs(value) > _EXACT_INT:
            raise self.error(
                where,
                f"{expected}, written as an integer (a float above 2^53 is not an exact integer)",
                _describe(value),
            )
        number = int(value)
        if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
            raise self.error(where, expected, _describe(value))
        return number

    def string(
        self,
        key: str,
        default: Any = _REQUIRED,
        *,
        expected: str = "a non-empty string",
        choices: Collection[str] | None = None,
    ) -> Any:
        """A non-empty string; with ``choices``, one of them."""
        if choices is not None:
            expected = "one of " + ", ".join(f'"{c}"' for c in choices)
        if key not in self.data:
            if default is _REQUIRED:
                raise self._missing(key, expected)
            return default
        value = self.data[key]
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, expected, _describe(value))
        if choices is not None and value not in choices:
            raise self.error(key, expected, _unknown(value, choices))
        return value

    def text(self, key: str, default: str) -> str:
        """Any string (may be empty)."""
        value = self.data.get(key, default)
        if not isinstance(value, str):
            raise self.error(key, "a string", _describe(value))
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, "true or false", _describe(value))
        return value

    def sub(self, key: str, allowed: Collection[str]) -> _Table:
        """The sub-table ``key`` (which must be present)."""
        return _Table(self.source, self.data[key], self.where(key), allowed)

    def array(self, key: str, what: str) -> list[Any]:
        """The array ``key`` (empty when absent)."""
        value = self.data.get(key, [])
        if not isinstance(value, list):
            raise self.error(key, f"an array of {what}", _describe(value))
        return value

    def numbers(
        self,
        key: str,
        *,
        minimum: float = 0.0,
        length: int | None = None,
        expected: str,
    ) -> tuple[float, ...]:
        """An array of finite numbers >= ``minimum`` (exactly ``length`` if given)."""
        values = self.array(key, "numbers")
        if length is not None and len(values) != length:
            raise self.error(key, expected, _describe(values))
        out = []
        for i, value in enumerate(values):
            bad = isinstance(value, bool) or not isinstance(value, int | float)
            if bad or not math.isfinite(value) or value < minimum or abs(value) > MAX_NUMBER:
                raise self.error(f"{key}[{i}]", expected, _describe(value))
            out.append(float(value))
        return tuple(out)

    def integers(self, key: str, *, minimum: int, expected: str) -> tuple[int, ...]:
        values = self.array(key, "integers")
        return tuple(
            self._integer_value(f"{key}[{i}]", v, minimum, None, expected)
            for i, v in enumerate(values)
        )

    def only_params(self, distribution: str, used: Collection[str], params: Iterable[str]) -> None:
        """Reject distribution parameters that ``distribution`` does not use."""
        for key in params:
            if key in self.data and key not in used:
                uses = ", ".join(used)
                raise self.error(
                    key,
                    f"only the parameters a {distribution} distribution uses ({uses})",
                    f"{key} = {_describe(self.data[key])}",
                )


# --------------------------------------------------------------------------- sections


def _parse_organization(source: str, raw: object, index: int) -> Organization:
    t = _Table(source, raw, _entry_path("organizations", index, raw), ORGANIZATION_KEYS)
    return Organization(
        id=t.string("id", expected="an organization id (a non-empty string)"),
        monthly_budget=t.number("monthly_budget", math.inf, infinite=True),
    )


def _parse_promotion(source: str, raw: object, path: str) -> Promotion:
    t = _Table(source, raw, path, PROMOTION_KEYS)
    start = t.integer("start_day", minimum=0)
    end = t.integer("end_day", expected=f"an integer >= start_day ({start})", minimum=start)
    return Promotion(start_day=start, end_day=end, multiplier=t.number("multiplier"))


def _parse_demand(t: _Table) -> DemandModel:
    distribution = t.string("distribution", "poisson", choices=DEMAND_DISTRIBUTIONS)
    used = DEMAND_PARAMS[distribution]
    t.only_params(distribution, used, ("mean", "std", "dispersion", "low", "high"))
    kwargs: dict[str, Any] = {"distribution": distribution}
    if "mean" in used:
        kwargs["mean"] = t.number("mean", expected="a number >= 0 (units/day)")
    if "std" in used:
        kwargs["std"] = t.number("std", expected="a number >= 0 (units/day)")
    if "dispersion" in used:
        kwargs["dispersion"] = t.number("dispersion", minimum=0.0, above=True)
    if "low" in used:
        low = t.integer("low", minimum=0)
        kwargs["low"] = low
        kwargs["high"] = t.integer("high", minimum=low, expected=f"an integer >= low ({low})")
    if t.has("weekly"):
        kwargs["weekly"] = t.numbers(
            "weekly", length=7, expected="7 weekday factors >= 0, Monday first"
        )
    kwargs["annual_amplitude"] = t.number("annual_amplitude", 0.0, maximum=1.0)
    kwargs["annual_peak_day"] = t.integer("annual_peak_day", 0, minimum=0, maximum=366)
    kwargs["promotions"] = tuple(
        _parse_promotion(t.source, raw, f"{t.where('promotions')}[{i}]")
        for i, raw in enumerate(t.array("promotions", "tables"))
    )
    return DemandModel(**kwargs)


def _parse_node(source: str, raw: object, index: int) -> Node:
    t = _Table(source, raw, _entry_path("nodes", index, raw), NODE_KEYS)
    node_id = t.string("id", expected="a node id (a non-empty string)")
    if node_id == EXTERNAL or "->" in node_id:
        raise t.error("id", f'a node id other than "{EXTERNAL}" and without "->"', _quote(node_id))
    tier = Tier(t.string("tier", choices=TIERS))
    bom: dict[str, float] = {}
    if t.has("bill_of_materials"):
        raw_bom = t.data["bill_of_materials"]
        bom_table = t.sub("bill_of_materials", list(raw_bom) if isinstance(raw_bom, dict) else ())
        if bom_table.data and tier is not Tier.MANUFACTURER:
            raise t.error(
                "bill_of_materials",
                "a bill_of_materials only on manufacturer nodes (they assemble)",
                f"one on a {tier.value}",
            )
        for item in bom_table.data:
            bom[item] = bom_table.number(
                item, minimum=0.0, above=True, expected="units per assembled unit, > 0"
            )
    demand = _parse_demand(t.sub("demand", DEMAND_KEYS)) if t.has("demand") else None
    return Node(
        id=node_id,
        tier=tier,
        region=t.string("region", expected="a region name (a non-empty string)"),
        organization=t.string("organization", expected="an organization id (a non-empty string)"),
        unit_value=t.number("unit_value", 0.0),
        holding_cost=t.number("holding_cost", 0.0),
        stockout_penalty=t.number("stockout_penalty", 0.0),
        capacity=t.number("capacity", math.inf, infinite=True),
        storage_capacity=t.number("storage_capacity", math.inf, infinite=True),
        initial_inventory=t.number("initial_inventory", 0.0),
        item=t.text("item", ""),
        bill_of_materials=bom,
        demand=demand,
    )


def _parse_lead_time(lane: _Table) -> LeadTime:
    """A lane's ``lead_time``: the law named by ``distribution`` (see
    :data:`fedinv.model.network.LEAD_TIME_LAWS`), its parameters checked by the law."""
    if not lane.has("lead_time"):
        return LeadTime()
    raw = lane.data["lead_time"]
    if isinstance(raw, int | float) and not isinstance(raw, bool):  # shorthand: lead_time = 2
        try:
            return LeadTime.of(Deterministic(mean=raw))
        except LeadTimeError as exc:
            raise lane.error("lead_time", exc.expected, _describe(raw)) from None
    t = lane.sub("lead_time", LEAD_TIME_KEYS)
    distribution = t.string("distribution", "deterministic", choices=LEAD_TIME_DISTRIBUTIONS)
    law_type = LEAD_TIME_LAWS[distribution]
    t.only_params(distribution, law_params(law_type), LEAD_TIME_PARAM_KEYS)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(law_type):
        expected = law_type.expects[f.name]
        if f.name not in t.data:
            if f.default is dataclasses.MISSING:
                raise t._missing(f.name, expected)
            continue
        value = t.data[f.name]
        if str(f.type).startswith("tuple"):
            if not isinstance(value, list):
                raise t.error(f.name, expected, _describe(value))
            for i, v in enumerate(value):
                if isinstance(v, bool) or not isinstance(v, int | float) or abs(v) > MAX_NUMBER:
                    raise t.error(f"{f.name}[{i}]", expected, _describe(v))
            kwargs[f.name] = tuple(value)
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise t.error(f.name, expected, _describe(value))
        else:
            kwargs[f.name] = value
    try:
        law = law_type(**kwargs)
    except LeadTimeError as exc:
        key, _, index = exc.param.partition("[")
        value = t.data[key]
        if index and isinstance(value, list):
            value = value[int(index.rstrip("]"))]
        raise t.error(exc.param, exc.expected, exc.got or _describe(value)) from None
    max_days = t.integer("max_days", 0, minimum=0)
    if 0 < max_days < law.shortest:
        raise t.error(
            "max_days",
            f"0 (no cap) or at least the shortest lead time ({law.shortest} days)",
            _describe(t.data["max_days"]),
        )
    return LeadTime.of(law, max_days=max_days)


def _parse_lane(source: str, raw: object, index: int, nodes: Mapping[str, Node]) -> Lane:
    t = _Table(source, raw, f"lanes[{index}]", LANE_KEYS)
    src = t.string("source", expected=f'a node id or "{EXTERNAL}"')
    if src != EXTERNAL and src not in nodes:
        raise t.error("source", f'a declared node id or "{EXTERNAL}"', _unknown(src, nodes))
    dst = t.string("destination", expected="a node id")
    if dst not in nodes:
        raise t.error("destination", "a declared node id", _unknown(dst, nodes))
    if dst == src:
        raise t.error("destination", "a node other than the source", f'"{dst}"')
    item = t.string("item", expected="an item name") if t.has("item") else ""
    if item and src != EXTERNAL:
        raise t.error(
            "item",
            f'no item on a lane from a node (it carries "{src}"\'s item); '
            f'item names what a lane from "{EXTERNAL}" brings',
            f'"{item}"',
        )
    return Lane(
        source=src,
        destination=dst,
        lead_time=_parse_lead_time(t),
        price=t.number("price", None),
        shipping_cost=t.number("shipping_cost", 0.0),
        transit_holding_cost=t.number("transit_holding_cost", None),
        transport_capacity=t.number("transport_capacity", math.inf, infinite=True),
        lot_size=t.number("lot_size", 0.0),
        min_monthly_commitment=t.number("min_monthly_commitment", 0.0),
        fixed_order_cost=t.number("fixed_order_cost", 0.0),
        order_share=t.number("order_share", 1.0, maximum=1.0),
        item=item,
        order_lead_time=t.integer(
            "order_lead_time",
            0,
            minimum=0,
            maximum=MAX_LEAD_DAYS,
            expected=f"an integer number of days, 0 to {MAX_LEAD_DAYS} (0: the source "
            "receives an order the moment it is released)",
        ),
        initial_pipeline=_parse_initial_pipeline(t),
    )


def _parse_initial_pipeline(lane: _Table) -> tuple[InTransit, ...]:
    """``initial_pipeline = [{ arrival_day = 1, quantity = 4.0 }, ...]`` (arrival days
    checked against the lane's lead time in :func:`_check_initial_pipeline`)."""
    out: list[InTransit] = []
    seen: set[int] = set()
    for i, raw in enumerate(lane.array("initial_pipeline", "tables {arrival_day, quantity}")):
        t = _Table(lane.source, raw, f"{lane.where('initial_pipeline')}[{i}]", IN_TRANSIT_KEYS)
        day = t.integer(
            "arrival_day",
            minimum=1,
            expected="an arrival day >= 1 (a shipment that arrives on day 0 is on hand: "
            "count it in the destination's initial_inventory)",
        )
        if day in seen:
            raise t.error("arrival_day", "one entry per arrival day", f"{day} again")
        seen.add(day)
        out.append(InTransit(arrival_day=day, quantity=t.number("quantity")))
    return tuple(sorted(out, key=lambda x: x.arrival_day))


def _check_initial_pipeline(source: str, lanes: list[Lane], delays: Iterable[ExtraDelay]) -> None:
    """A unit in transit on day 0 left on day -1 or earlier, so it arrives by day
    ``longest lead time - 1`` (plus the lane's longest extra delay)."""
    extra: dict[str, int] = {}
    for d in delays:
        extra[d.lane] = max(extra.get(d.lane, 0), d.max_days)
    for i, lane in enumerate(lanes):
        if not lane.initial_pipeline:
            continue
        longest = lane.lead_time.support_max
        last = longest - 1 + extra.get(lane.id, 0)
        for entry in lane.initial_pipeline:
            if entry.arrival_day > last:
                why = f"longest lead time {longest} days"
                if extra.get(lane.id):
                    why += f" plus an extra delay of up to {extra[lane.id]} days"
                raise ScenarioError(
                    source,
                    f"lanes[{i}].initial_pipeline",
                    f"arrival days from 1 to {last} (a shipment that left on day -1 or "
                    f"earlier on this lane, {why}, arrives by day {last})",
                    f"arrival_day = {entry.arrival_day}",
                )


def _parse_transfer(
    source: str, raw: object, index: int, nodes: Mapping[str, Node]
) -> TransferLink:
    t = _Table(source, raw, f"transfers[{index}]", TRANSFER_KEYS)
    ends = []
    for key in ("source", "destination"):
        node_id = t.string(key, expected="a node id")
        if node_id not in nodes:
            raise t.error(key, "a declared node id", _unknown(node_id, nodes))
        ends.append(node_id)
    src, dst = ends
    if src == dst:
        raise t.error("destination", "a node other than the source", f'"{dst}"')
    if nodes[src].region != nodes[dst].region:
        raise t.error(
            "destination",
            f'a node in the source\'s region "{nodes[src].region}" (transfers are lateral, '
            "between same-region peers)",
            f'"{dst}" in region "{nodes[dst].region}"',
        )
    return TransferLink(
        source=src,
        destination=dst,
        unit_cost=t.number("unit_cost", 0.0),
        lead_time_days=t.integer("lead_time_days", 1, minimum=1, maximum=MAX_LEAD_DAYS),
        capacity=t.number("capacity", math.inf, infinite=True),
    )


def _parse_outage(
    source: str, raw: object, index: int, nodes: Mapping[str, Node], lanes: Mapping[str, Lane]
) -> Outage:
    t = _Table(source, raw, f"outages[{index}]", OUTAGE_KEYS)
    target = t.string("target", expected='a node id or a lane id "SOURCE->DESTINATION"')
    if target in nodes:
        capacity = nodes[target].capacity
        what = f'node "{target}" has no capacity'
    elif target in lanes:
        capacity = lanes[target].transport_capacity
        what = f'lane "{target}" has no transport_capacity'
    else:
        raise t.error(
            "target",
            'a declared node id or lane id "SOURCE->DESTINATION"',
            _unknown(target, [*nodes, *lanes]),
        )
    start_day = t.integer("start_day", None, minimum=0)
    if start_day is None:  # random outages
        if "duration_days" in t.data:
            raise t.error(
                "start_day",
                "a start_day for an outage with duration_days (a "
                "random outage takes mean_duration_days)",
                "none",
            )
        outage = Outage(
            target=target,
            start_probability=t.number("start_probability", maximum=1.0),
            mean_duration_days=t.number(
                "mean_duration_days", minimum=1.0, expected="a mean duration >= 1 (days)"
            ),
            capacity_fraction=t.number("capacity_fraction", 0.0, maximum=1.0),
            notice_lag_days=t.integer("notice_lag_days", 0, minimum=0),
        )
    else:  # a fixed window
        for key in ("start_probability", "mean_duration_days"):
            if key in t.data:
                raise t.error(
                    key,
                    "no start_probability or mean_duration_days for a fixed "
                    "outage (start_day given: give duration_days)",
                    "both",
                )
        outage = Outage(
            target=target,
            start_day=start_day,
            duration_days=t.integer("duration_days", minimum=1, expected="a duration >= 1 (days)"),
            capacity_fraction=t.number("capacity_fraction", 0.0, maximum=1.0),
            notice_lag_days=t.integer("notice_lag_days", 0, minimum=0),
        )
    if outage.capacity_fraction > 0 and math.isinf(capacity):
        raise t.error(
            "capacity_fraction",
            f"0 for a target with unlimited capacity ({what}; a fraction of it would "
            "still be unlimited)",
            _describe(t.data["capacity_fraction"]),
        )
    return outage


def _parse_delay(source: str, raw: object, index: int, lanes: Mapping[str, Lane]) -> ExtraDelay:
    t = _Table(source, raw, f"delays[{index}]", DELAY_KEYS)
    lane = t.string("lane", expected='a lane id "SOURCE->DESTINATION"')
    if lane not in lanes:
        raise t.error("lane", 'a declared lane id "SOURCE->DESTINATION"', _unknown(lane, lanes))
    min_days = t.integer("min_days", 1, minimum=1, maximum=MAX_LEAD_DAYS)
    return ExtraDelay(
        lane=lane,
        probability=t.number("probability", maximum=1.0),
        min_days=min_days,
        max_days=t.integer(
            "max_days",
            min_days,
            minimum=min_days,
            maximum=MAX_LEAD_DAYS,
            expected=f"an integer >= min_days ({min_days}) and <= {MAX_LEAD_DAYS}",
        ),
        notice_lag_days=t.integer("notice_lag_days", 0, minimum=0),
    )


def _parse_lead_shift(source: str, raw: object, index: int, lanes: Mapping[str, Lane]) -> LeadShift:
    t = _Table(source, raw, f"lead_shifts[{index}]", LEAD_SHIFT_KEYS)
    lane = t.string("lane", expected='a lane id "SOURCE->DESTINATION"')
    if lane not in lanes:
        raise t.error("lane", 'a declared lane id "SOURCE->DESTINATION"', _unknown(lane, lanes))
    factor = t.number("factor", minimum=1.0, expected="a factor >= 1 on the lead time")
    longest = math.ceil(factor * lanes[lane].lead_time.support_max - 1e-9)
    if longest > MAX_LEAD_DAYS:
        raise t.error(
            "factor",
            f"a factor that keeps the lane's longest lead time within {MAX_LEAD_DAYS} days",
            f"{factor} ({longest} days)",
        )
    return LeadShift(lane=lane, factor=float(factor), start_day=t.integer("start_day", minimum=0))


def _parse_surge(source: str, raw: object, index: int, regions: Collection[str]) -> Surge:
    t = _Table(source, raw, f"surges[{index}]", SURGE_KEYS)
    region = t.string("region", expected="a region name")
    if region not in regions:
        raise t.error(
            "region",
            f"a region with customer-facing nodes ({', '.join(sorted(regions))})",
            _unknown(region, regions),
        )
    start_day = t.integer("start_day", None, minimum=0)
    start_probability = t.number("start_probability", 0.0, maximum=1.0)
    if (start_day is None) == (start_probability == 0.0):
        raise t.error(
            "start_day",
            "either a start_day (a fixed surge) or a start_probability > 0 (random surges)",
            "both" if start_day is not None else "neither",
        )
    return Surge(
        region=region,
        multiplier=t.number("multiplier"),
        duration_days=t.number("duration_days", minimum=1.0, expected="a duration >= 1 (days)"),
        start_day=start_day,
        start_probability=start_probability,
    )


# --------------------------------------------------------------------------- network checks


def _check_unique(source: str, section: str, paths: list[str], ids: list[str]) -> None:
    seen: set[str] = set()
    for path, entry_id in zip(paths, ids, strict=True):
        if entry_id in seen:
            raise ScenarioError(
                source, path, f"a unique id within [[{section}]]", f'duplicate "{entry_id}"'
            )
        seen.add(entry_id)


def _inbound(nodes: Mapping[str, Node], lanes: list[Lane]) -> dict[str, list[int]]:
    """Node id -> indices of its inbound lanes."""
    inbound: dict[str, list[int]] = {node_id: [] for node_id in nodes}
    for i, lane in enumerate(lanes):
        inbound[lane.destination].append(i)
    return inbound


def _check_inbound(source: str, nodes: Mapping[str, Node], lanes: list[Lane]) -> None:
    for node_id, members in _inbound(nodes, lanes).items():
        if not members:
            raise ScenarioError(
                source,
                f"nodes[id={node_id}]",
                f'at least one inbound lane (raw material comes in on a lane from "{EXTERNAL}")',
                "none",
            )


def _check_items(source: str, nodes: Mapping[str, Node], lanes: list[Lane]) -> None:
    """Bills of materials against inbound lanes, and split-sourcing shares.

    The lanes that bring one item (the source's ``item_name``) into one node form one
    ordering stream; their ``order_share`` values must sum to 1.
    """
    inbound = _inbound(nodes, lanes)
    for node_id, node in nodes.items():
        where = f"nodes[id={node_id}]"
        groups: dict[str, list[int]] = {}
        if node.bill_of_materials:
            for i in inbound[node_id]:
                lane = lanes[i]
                if lane.source == EXTERNAL and lane.item not in node.bill_of_materials:
                    raise ScenarioError(
                        source,
                        f"lanes[{i}].item",
                        f'the bill_of_materials item of "{node_id}" that this lane from '
                        f'"{EXTERNAL}" brings ({", ".join(node.bill_of_materials)})',
                        f'"{lane.item}"' if lane.item else "no item",
                    )
                item = lane.item if lane.source == EXTERNAL else nodes[lane.source].item_name
                if item not in node.bill_of_materials:
                    raise ScenarioError(
                        source,
                        f"lanes[{i}].source",
                        f'a node whose item is in the bill_of_materials of "{node_id}" '
                        f"({', '.join(node.bill_of_materials)})",
                        f'"{lane.source}" supplying item "{item}"',
                    )
                groups.setdefault(item, []).append(i)
            for item in node.bill_of_materials:
                if item not in groups:
                    raise ScenarioError(
                        source,
                        f"{where}.bill_of_materials.{item}",
                        f'an inbound lane from a node whose item is "{item}"',
                        "no such lane",
                    )
        else:  # without a bill of materials every inbound lane brings the same product
            groups[""] = list(inbound[node_id])
        for item, members in groups.items():
            total = sum(lanes[i].order_share for i in members)
            if abs(total - 1.0) > 1e-6:
                shares = " + ".join(f"{lanes[i].order_share:g}" for i in members)
                which = f'supplying "{item}" to' if item else "into"
                raise ScenarioError(
                    source,
                    f"lanes[{members[-1]}].order_share",
                    f'order_share values of the lanes {which} "{node_id}" that sum to 1 '
                    "(split sourcing)",
                    f"{shares} = {total:g}",
                )


def _check_acyclic(source: str, nodes: Mapping[str, Node], lanes: list[Lane]) -> None:
    """Depth-first search for a back edge; name a node on the cycle."""
    out: dict[str, list[int]] = {node_id: [] for node_id in nodes}
    for i, lane in enumerate(lanes):
        if lane.source != EXTERNAL:
            out[lane.source].append(i)
    state = dict.fromkeys(nodes, 0)  # 0 new, 1 on the stack, 2 done
    for root in nodes:
        if state[root]:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path = [root]
        state[root] = 1
        while stack:
            node_id, k = stack[-1]
            if k == len(out[node_id]):
                stack.pop()
                path.pop()
                state[node_id] = 2
                continue
            stack[-1] = (node_id, k + 1)
            lane_index = out[node_id][k]
            nxt = lanes[lane_index].destination
            if state[nxt] == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                raise ScenarioError(
                    source,
                    f"lanes[{lane_index}]",
                    "an acyclic lane graph (goods flow one way, from suppliers to customers)",
                    f'a cycle through node "{nxt}": {" -> ".join(cycle)}',
                )
            if state[nxt] == 0:
                state[nxt] = 1
                stack.append((nxt, 0))
                path.append(nxt)


def _check_reaches_demand(source: str, nodes: Mapping[str, Node], lanes: list[Lane]) -> None:
    customers = [node_id for node_id, node in nodes.items() if node.demand is not None]
    if not customers:
        raise ScenarioError(
            source,
            "nodes",
            "at least one node with customer demand (a demand table or demand-history rows)",
            "none",
        )
    upstream: dict[str, list[str]] = {node_id: [] for node_id in nodes}
    for lane in lanes:
        if lane.source != EXTERNAL:
            upstream[lane.destination].append(lane.source)
    reached = set(customers)
    frontier = list(customers)
    while frontier:
        for src in upstream[frontier.pop()]:
            if src not in reached:
                reached.add(src)
                frontier.append(src)
    for node_id in nodes:
        if node_id not in reached:
            raise ScenarioError(
                source,
                f"nodes[id={node_id}]",
                "a path through lanes to a node with customer demand (a demand table or "
                "demand-history rows)",
                f'no lane path from "{node_id}" to any of {", ".join(customers)}',
            )


# --------------------------------------------------------------------------- demand history


def load_demand_history(
    path: Path, node_ids: Collection[str], source: str
) -> dict[str, np.ndarray]:
    """Read a demand-history file (``date,node,quantity``; CSV or Parquet).

    Returns, per node that has rows, its daily demand in units (float array) from its
    first to its last date: rows of one (node, date) are summed and missing dates in
    that range count as 0. ``source`` names the file that refers to ``path`` (the
    scenario) in the error raised when ``path`` does not exist; errors about the
    content name ``path`` itself and the row. Extra columns are ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise ScenarioError(
            source,
            "demand_history.file",
            "an existing CSV or Parquet file (a path relative to the scenario file)",
            f'"{path}" (no such file)',
        )
    label = str(path)
    suffix = path.suffix.lower()
    csv = suffix == ".csv"
    if not csv and suffix not in (".parquet", ".pq"):
        raise ScenarioError(
            source, "demand_history.file", "a .csv or .parquet file", f'"{path.name}"'
        )
    if path.stat().st_size == 0:
        raise ScenarioError(
            label, "<file>", "a header line date,node,quantity and data rows", "an empty file"
        )
    if csv:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ScenarioError(label, "<file>", "a readable file", str(exc)) from None
        text = _utf8(raw, label, "<file>")
        if not text.strip():
            raise ScenarioError(
                label, "<file>", "a header line date,node,quantity and data rows", "an empty file"
            )
    try:
        if csv:
            frame = pd.read_csv(
                io.StringIO(text),
                dtype=str,
                keep_default_na=False,
                skip_blank_lines=False,
                skipinitialspace=True,
            )
        else:
            frame = pd.read_parquet(path)
    except Exception as exc:  # pandas/pyarrow raise many types on unreadable input
        kind = "CSV" if csv else "Parquet"
        detail = " ".join(str(exc).split())[:200]
        raise ScenarioError(
            label,
            "<file>",
            f"a readable {kind} file with columns date,node,quantity",
            f"{type(exc).__name__}: {detail}",
        ) from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in ("date", "node", "quantity") if c not in frame.columns]
    if missing:
        found = ", ".join(frame.columns) or "none"
        raise ScenarioError(
            label,
            "<columns>",
            "columns date, node, quantity",
            f"missing {', '.join(missing)} (found: {found})",
        )
    frame = frame.reset_index(drop=True)
    if csv:  # drop blank lines; keep line numbers (header is line 1)
        rows = [f"line {i + 2}" for i in range(len(frame))]
        blank = (frame[["date", "node", "quantity"]].apply(lambda c: c.str.strip()) == "").all(
            axis=1
        )
        keep = ~blank.to_numpy()
        frame = frame.loc[keep].reset_index(drop=True)
        rows = [r for r, k in zip(rows, keep, strict=True) if k]
    else:
        rows = [f"row {i + 1}" for i in range(len(frame))]
    if frame.empty:
        raise ScenarioError(label, "<rows>", "at least one data row", "none")

    nodes = frame["node"].map(_cell_text)
    known = set(node_ids)
    for i, node_id in enumerate(nodes):
        if node_id not in known:
            raise ScenarioError(
                label,
                f"node ({rows[i]})",
                "a node id declared in the scenario",
                _unknown(node_id, known),
            )

    dates = _parse_dates(frame["date"])
    bad = np.flatnonzero(dates.isna().to_numpy())
    if bad.size:
        i = int(bad[0])
        raise ScenarioError(
            label, f"date ({rows[i]})", "an ISO date YYYY-MM-DD", _describe(frame["date"].iloc[i])
        )

    raw_quantity = frame["quantity"]
    if pd.api.types.is_numeric_dtype(raw_quantity) and not pd.api.types.is_bool_dtype(raw_quantity):
        quantity = pd.to_numeric(raw_quantity, errors="coerce")
    else:  # text (CSV) or mixed objects: anything that is not a number becomes NaN
        quantity = pd.to_numeric(raw_quantity.map(_number_or_text), errors="coerce")
    values = quantity.to_numpy(dtype=float, na_value=np.nan)
    bad = np.flatnonzero(~np.isfinite(values) | (values < 0))
    if bad.size:
        i = int(bad[0])
        raise ScenarioError(
            label,
            f"quantity ({rows[i]})",
            "a finite number >= 0 (units)",
            _describe(raw_quantity.iloc[i]),
        )

    table = pd.DataFrame({"node": nodes.to_numpy(), "date": dates.to_numpy(), "quantity": values})
    out: dict[str, np.ndarray] = {}
    for node_id, group in table.groupby("node", sort=False):
        daily = group.groupby("date")["quantity"].sum().sort_index()
        days = pd.date_range(daily.index.min(), daily.index.max(), freq="D")
        out[str(node_id)] = daily.reindex(days, fill_value=0.0).to_numpy(dtype=float)
    return out


def _number_or_text(value: object) -> object:
    """A cell as ``pd.to_numeric`` may read it: numbers stay, text is stripped, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _cell_text(value: object) -> str:
    """A node-id cell as text ('' for an empty or missing cell)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _parse_dates(column: pd.Series) -> pd.Series:
    """Dates (midnight timestamps, no time zone); NaT where a value is not a date."""
    if pd.api.types.is_datetime64_any_dtype(column):
        parsed = column
    else:

        def one(value: object) -> pd.Timestamp | None:
            if isinstance(value, dt.date):
                return pd.Timestamp(value).tz_localize(None).normalize()
            if isinstance(value, str):
                text = value.strip()
                for parse in (dt.date.fromisoformat, dt.datetime.fromisoformat):
                    try:
                        return pd.Timestamp(parse(text)).tz_localize(None).normalize()
                    except ValueError:
                        continue
            return None

        parsed = pd.to_datetime(column.map(one))
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_localize(None)
    return parsed.dt.normalize()


def _parse_history_section(
    top: _Table, base_dir: Path, nodes: Mapping[str, Node]
) -> dict[str, Node]:
    t = top.sub("demand_history", DEMAND_HISTORY_KEYS)
    file = t.string("file", expected="a CSV or Parquet path relative to the scenario file")
    mode = t.string("mode", "bootstrap", choices=HISTORY_MODES)
    path = Path(file) if Path(file).is_absolute() else base_dir / file
    history = load_demand_history(path, list(nodes), top.source)
    out = dict(nodes)
    for node_id, series in history.items():
        node = nodes[node_id]
        model = node.demand or DemandModel()
        model = dataclasses.replace(
            model, history=tuple(float(x) for x in series), history_mode=mode
        )
        out[node_id] = dataclasses.replace(node, demand=model)
    return out


# --------------------------------------------------------------------------- scenario


def parse_scenario(data: Mapping[str, Any], source: str, base_dir: Path) -> Scenario:
    """Validate an already-parsed TOML document and build the :class:`Scenario`.

    ``source`` names the file in errors (and becomes ``Scenario.source``); relative
    paths in the file (the demand history) are resolved against ``base_dir``.
    Raises :class:`ScenarioError` on the first problem found.
    """
    top = _Table(source, dict(data), "", TOP_LEVEL_KEYS)
    default_name = Path(source.removeprefix(_BUILTIN_PREFIX)).stem or "scenario"
    name = top.string("name", default_name, expected="a scenario name (a non-empty string)")
    description = top.text("description", "")
    horizon = top.integer("horizon_days", 365, minimum=1, expected="an integer >= 1 (days)")
    start_date = _start_date(top)
    lost_sales = top.boolean("lost_sales", False)
    seed = top.integer("seed", 0, minimum=0)
    warmup = top.integer(
        "warmup_days",
        0,
        minimum=0,
        maximum=horizon - 1,
        expected=f"an integer >= 0 and below horizon_days ({horizon})",
    )

    organizations = [
        _parse_organization(source, raw, i)
        for i, raw in enumerate(top.array("organizations", "tables ([[organizations]])"))
    ]
    _check_unique(
        source,
        "organizations",
        [f"organizations[{i}].id" for i in range(len(organizations))],
        [o.id for o in organizations],
    )
    org_ids = {o.id for o in organizations}

    raw_nodes = top.array("nodes", "tables ([[nodes]])")
    if not raw_nodes:
        raise top.error("nodes", "at least one [[nodes]] table", "none")
    node_list = [_parse_node(source, raw, i) for i, raw in enumerate(raw_nodes)]
    _check_unique(
        source,
        "nodes",
        [f"nodes[{i}].id" for i in range(len(node_list))],
        [n.id for n in node_list],
    )
    for node in node_list:
        if node.organization not in org_ids:
            raise ScenarioError(
                source,
                f"nodes[id={node.id}].organization",
                "an organization declared in [[organizations]]",
                _unknown(node.organization, org_ids),
            )
    nodes = {n.id: n for n in node_list}
    if top.has("demand_history"):
        nodes = _parse_history_section(top, base_dir, nodes)

    lanes = [
        _parse_lane(source, raw, i, nodes)
        for i, raw in enumerate(top.array("lanes", "tables ([[lanes]])"))
    ]
    seen_lanes: dict[str, int] = {}
    for i, lane in enumerate(lanes):
        if lane.id in seen_lanes:
            raise ScenarioError(
                source,
                f"lanes[{i}]",
                f"one lane per source->destination pair, and item for external lanes "
                f"(lanes[{seen_lanes[lane.id]}] "
                "already links them)",
                f'duplicate "{lane.id}"',
            )
        seen_lanes[lane.id] = i
    _check_inbound(source, nodes, lanes)
    _check_acyclic(source, nodes, lanes)
    _check_items(source, nodes, lanes)
    _check_reaches_demand(source, nodes, lanes)

    transfers = [
        _parse_transfer(source, raw, i, nodes)
        for i, raw in enumerate(top.array("transfers", "tables ([[transfers]])"))
    ]
    seen_links: set[tuple[str, str]] = set()
    for i, link in enumerate(transfers):
        if (link.source, link.destination) in seen_links:
            raise ScenarioError(
                source,
                f"transfers[{i}]",
                "one transfer link per source->destination pair",
                f'duplicate "{link.source}->{link.destination}"',
            )
        seen_links.add((link.source, link.destination))

    lane_map = {lane.id: lane for lane in lanes}
    outages = tuple(
        _parse_outage(source, raw, i, nodes, lane_map)
        for i, raw in enumerate(top.array("outages", "tables ([[outages]])"))
    )
    delays = tuple(
        _parse_delay(source, raw, i, lane_map)
        for i, raw in enumerate(top.array("delays", "tables ([[delays]])"))
    )
    _check_initial_pipeline(source, lanes, delays)
    regions = {n.region for n in nodes.values() if n.demand is not None}
    surges = tuple(
        _parse_surge(source, raw, i, regions)
        for i, raw in enumerate(top.array("surges", "tables ([[surges]])"))
    )
    lead_shifts = tuple(
        _parse_lead_shift(source, raw, i, lane_map)
        for i, raw in enumerate(top.array("lead_shifts", "tables ([[lead_shifts]])"))
    )

    network = Network(
        nodes=tuple(nodes.values()),
        lanes=tuple(lanes),
        organizations=tuple(organizations),
        transfers=tuple(transfers),
    )
    return Scenario(
        name=name,
        network=network,
        horizon_days=horizon,
        start_date=start_date,
        lost_sales=lost_sales,
        seed=seed,
        description=description,
        outages=outages,
        delays=delays,
        surges=surges,
        lead_shifts=lead_shifts,
        warmup_days=warmup,
        source=source,
    )


def _start_date(top: _Table) -> str:
    value = top.data.get("start_date", "2025-01-01")
    expected = 'an ISO date "YYYY-MM-DD"'
    if isinstance(value, dt.datetime):
        raise top.error("start_date", expected, _describe(value))
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip()).isoformat()
        except ValueError:
            pass
    raise top.error("start_date", expected, _describe(value))


def _builtin_dir() -> Traversable:
    return resources.files("fedinv.model").joinpath("scenarios")


def builtin_scenario_text(name: str) -> str:
    """The TOML text of the built-in scenario ``name`` (``fedinv/model/scenarios/NAME.toml``).
    Raises :class:`ScenarioError` for an unknown name."""
    entry = _builtin_dir().joinpath(f"{name}.toml")
    if not entry.is_file():
        names = ", ".join(builtin_scenarios()) or "none"
        raise ScenarioError(name, "<file>", f"a built-in scenario name ({names})", "unknown")
    return entry.read_text(encoding="utf-8")


def builtin_scenarios() -> dict[str, str]:
    """Built-in scenario names -> one-line descriptions (from ``fedinv/model/scenarios/*.toml``)."""
    out: dict[str, str] = {}
    entries = sorted(_builtin_dir().iterdir(), key=lambda e: e.name)
    for entry in entries:
        if entry.name.endswith(".toml"):
            data = tomllib.loads(entry.read_text(encoding="utf-8"))
            description = str(data.get("description", ""))
            out[entry.name.removesuffix(".toml")] = " ".join(description.split())
    return out


def _load_file(path: Path, source: str) -> Scenario:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ScenarioError(source, "<file>", "a readable file", str(exc)) from None
    text = _utf8(raw, source, "<toml>")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(source, "<toml>", "valid TOML syntax", str(exc)) from None
    return parse_scenario(data, source, path.parent)


def _utf8(raw: bytes, source: str, field: str) -> str:
    """``raw`` decoded as UTF-8 (a leading byte-order mark dropped); an invalid byte is
    reported by its line and column (lines from 1), not its byte offset."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        byte = raw[exc.start : exc.start + 1].hex().upper()
        raise ScenarioError(
            source,
            f"{field} (line {line})",
            "UTF-8 text (save the file as UTF-8)",
            f"byte 0x{byte} at line {line}, column {column}, which is not UTF-8",
        ) from None


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load a built-in scenario by name (see :func:`builtin_scenarios`) or a ``.toml`` file.

    A string without a path separator and without a ``.toml`` suffix is always a built-in
    name (a file of that name is not looked for: write ``./NAME`` for it); anything else,
    and any :class:`~pathlib.Path`, is a file. Raises :class:`ScenarioError` for any
    problem with the file.
    """
    if (
        isinstance(name_or_path, str)
        and not any(c in name_or_path for c in "/\\")
        and not (name_or_path.endswith(".toml"))
    ):
        entry = _builtin_dir().joinpath(f"{name_or_path}.toml")
        if entry.is_file():
            with resources.as_file(entry) as path:
                return _load_file(path, f"{_BUILTIN_PREFIX}{name_or_path}")
        names = ", ".join(builtin_scenarios()) or "none"
        hint = f" (for the file, write ./{name_or_path})" if Path(name_or_path).exists() else ""
        raise ScenarioError(
            name_or_path,
            "<file>",
            f"a built-in scenario name ({names}) or a path to a .toml file",
            _unknown(name_or_path, builtin_scenarios(), f", not a built-in{hint}"),
        )
    path = Path(name_or_path)
    if path.is_dir():
        raise ScenarioError(str(path), "<file>", "a scenario file (.toml)", "a directory")
    if not path.is_file():
        what = "no such file" if not path.exists() else "not a regular file"
        raise ScenarioError(str(path), "<file>", "an existing scenario file (.toml)", what)
    return _load_file(path, str(path))


# ------------------------------------------------------------------- writing a document


def document_toml(document: Mapping[str, Any]) -> str:
    """A scenario document (the dict ``tomllib`` reads from a scenario file) as TOML text
    that reads back to the same dict: top-level values, then tables (``[name]``) and
    arrays of tables (``[[name]]``), whose nested tables are written inline. Used to
    write a changed scenario (a study's variant) as a file a federation can load."""
    head, tables = [], []
    for key, value in document.items():
        if isinstance(value, dict):
            tables += ["", f"[{_toml_key(key)}]"]
            tables += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for entry in value:
                tables += ["", f"[[{_toml_key(key)}]]"]
                tables += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in entry.items()]
        else:
            head.append(f"{_toml_key(key)} = {_toml_value(value)}")
    return "\n".join(head + tables) + "\n"


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as TOML")
