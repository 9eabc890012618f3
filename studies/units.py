"""A study's units of work and their files (``OUT/units/KEY.json``).

A unit counts as finished only if its file is complete and valid: strict UTF-8 JSON, one
object, with the fields its kind writes (right types), naming the unit it is stored as
(variant, policy, replication), and, for a training, the checkpoint and curve files it
points to. :func:`read_unit` raises :class:`UnitFileError` naming the file otherwise;
:func:`scan` sorts a folder's units into finished and bad ones, so the runner recomputes
the bad ones and ``fedinv report`` names them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studies.spec import StudySpec


@dataclass(frozen=True)
class Unit:
    """One resumable piece of work; ``key`` is its path under ``OUT/units`` (no suffix)."""

    kind: str
    key: str
    variant: str | None = None
    policy: str | None = None
    replication: int | None = None
    needs: tuple[str, ...] = ()


def plan(spec: StudySpec) -> list[Unit]:
    """Every unit of ``spec``, preparations first (a Coordination Node's tuning after the
    preparation of the policy it wraps)."""
    units: list[Unit] = []
    for key in spec.preparations():
        kind, name = key.split("/")
        units.append(Unit(kind, key, policy=name, needs=_needs_of(spec, key)))
    for v in spec.variants:
        if spec.bound:
            units += [
                Unit("bound", f"bound/{v.name}/rep-{r:04d}", v.name, replication=r)
                for r in range(spec.replications)
            ]
        for p in spec.policies:
            needs = p.needs
            units += [
                Unit("eval", f"eval/{v.name}/{p.slug}/rep-{r:04d}", v.name, p.label, r, needs)
                for r in range(spec.replications)
            ]
    return units


def _needs_of(spec: StudySpec, key: str) -> tuple[str, ...]:
    """A Coordination Node's tuning reads its ordering policy's preparation."""
    pol = next((p for p in spec.policies if p.coordinated_by == key), None)
    return (pol.prepared_by,) if pol is not None and pol.prepared_by else ()


def unit_path(out: Path, unit: Unit) -> Path:
    """Where ``unit``'s file lives in the run folder ``out``."""
    return Path(out) / "units" / f"{unit.key}.json"


class UnitFileError(ValueError):
    """A unit file that is not a finished unit (truncated, garbage, empty, incomplete)."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


class BadUnitsError(ValueError):
    """Unit files of a run folder that are not finished units (named one per line)."""

    def __init__(self, out: Path, bad: Mapping[str, UnitFileError]):
        super().__init__(
            f"{len(bad)} unit file(s) in {Path(out) / 'units'} are not finished units "
            "(truncated, garbage, empty or incomplete):\n"
            + bad_units_text(bad)
            + "\nre-run the study into this folder (fedinv run STUDY --out "
            f"{out}) to recompute them"
        )
        self.bad = dict(bad)


_NUMBER = "a number"
_FIELDS: dict[str, dict[str, str]] = {
    "tune": {
        "policy": "text",
        "params": "a table",
        "coords": "a table",
        "train_cost_per_day": _NUMBER,
        "evaluations": "an integer",
        "simulated_days": "an integer",
        "train_replications": "an integer",
    },
    "train": {
        "kind": "text",
        "simulated_days": "an integer",
        "curve": "text",
        "config": "a table",
    },
    "bound": {"variant": "text", "replication": "an integer", "bound_cost_per_day": _NUMBER},
    "eval": {
        "variant": "text",
        "policy": "text",
        "replication": "an integer",
        "mode": "text",
        "metrics": "a table",
        "monthly": "a list",
        "events": "a table",
    },
}
"""The fields each kind of unit file must have, and what each holds."""


def _is(value: Any, what: str) -> bool:
    match what:
        case "text":
            return isinstance(value, str)
        case "a table":
            return isinstance(value, dict)
        case "a list":
            return isinstance(value, list)
        case "an integer":
            return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_payload(unit: Unit, payload: Any, path: Path) -> dict[str, Any]:
    """``payload`` if it is a valid record of ``unit`` (see the module doc), else
    :class:`UnitFileError` naming ``path`` and the first fault."""
    if not isinstance(payload, dict):
        raise UnitFileError(path, f"expected a JSON object, got {type(payload).__name__}")
    if not payload:
        raise UnitFileError(path, "an empty object ({})")
    for name, what in _FIELDS[unit.kind].items():
        if name not in payload:
            raise UnitFileError(path, f"field {name!r} missing")
        if not _is(payload[name], what):
            raise UnitFileError(path, f"field {name!r}: expected {what}, got {payload[name]!r}")
    identity = {
        "tune": {"policy": unit.policy},
        "train": {"kind": unit.policy},
        "bound": {"variant": unit.variant, "replication": unit.replication},
        "eval": {"variant": unit.variant, "policy": unit.policy, "replication": unit.replication},
    }[unit.kind]
    for name, expected in identity.items():
        if payload[name] != expected:
            raise UnitFileError(
                path, f"field {name!r}: expected {expected!r} (this unit), got {payload[name]!r}"
            )
    if unit.kind == "eval":
        cost = payload["metrics"].get("total_cost_per_day")
        if not _is(cost, _NUMBER) or not math.isfinite(cost):
            raise UnitFileError(path, "metrics: no finite total_cost_per_day")
    if unit.kind == "train":
        out = path.parents[2]  # OUT/units/train/KIND.json
        files = [payload["curve"]]
        if isinstance(payload.get("checkpoint"), str):
            files.append(payload["checkpoint"])
        elif isinstance(payload.get("checkpoints"), dict):
            files += [str(v) for v in payload["checkpoints"].values()]
        else:
            raise UnitFileError(path, "field 'checkpoint' (or 'checkpoints') missing")
        for name in files:
            if not (out / name).is_file():
                raise UnitFileError(path, f"names {name}, which does not exist")
    return payload


def read_json(path: Path) -> dict[str, Any]:
    """A unit file's JSON object (:class:`UnitFileError` naming ``path`` if the file is
    empty, not UTF-8, not JSON — truncated, or with anything after the object — or not
    an object)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UnitFileError(path, f"unreadable ({exc.strerror or exc})") from None
    if not raw.strip():
        raise UnitFileError(path, "empty")
    try:
        payload = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UnitFileError(path, f"not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise UnitFileError(
            path, f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    if not isinstance(payload, dict):
        raise UnitFileError(path, f"expected a JSON object, got {type(payload).__name__}")
    return payload


def read_unit(path: Path, unit: Unit) -> dict[str, Any]:
    """The record in ``unit``'s file ``path`` (:class:`UnitFileError` if not valid)."""
    return check_payload(unit, read_json(path), path)


@dataclass(frozen=True)
class Scan:
    """The units of a run folder by state."""

    finished: dict[str, dict[str, Any]]
    """Unit key -> its record."""
    bad: dict[str, UnitFileError]
    """Unit key -> why its file is not a finished unit."""
    missing: tuple[str, ...]


def scan(out: Path, units: Iterable[Unit]) -> Scan:
    """Read every unit file of ``units`` in ``out``."""
    finished: dict[str, dict[str, Any]] = {}
    bad: dict[str, UnitFileError] = {}
    missing = []
    for unit in units:
        path = unit_path(out, unit)
        if not path.exists():
            missing.append(unit.key)
            continue
        try:
            finished[unit.key] = read_unit(path, unit)
        except UnitFileError as exc:
            bad[unit.key] = exc
    return Scan(finished, bad, tuple(missing))


def bad_units_text(bad: Mapping[str, UnitFileError], limit: int = 10) -> str:
    """One line per bad unit file (path: reason), at most ``limit``."""
    lines = [f"  {exc}" for exc in list(bad.values())[:limit]]
    if len(bad) > limit:
        lines.append(f"  ... and {len(bad) - limit} more")
    return "\n".join(lines)
