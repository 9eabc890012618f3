"""Study definition files: what a study compares, on which scenario variants, with which
budgets (format: docs/studies.md). Loaded from TOML and validated here, at the edge:
every error names the file, the field, what was expected and what was found.

A study is a list of policies evaluated on common random numbers: held-out replications
``0..R-1`` of every variant of one base scenario. Classical policies are tuned and
learned policies trained once, on the *base* scenario's training replications (from
:data:`fedinv.policies.tuning.TRAIN_BASE` upward, disjoint from the held-out ones); variants
(tighter capacity, a supplier outage window, ...) are evaluation conditions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fedinv.hybrid import BACKENDS as SOLVERS
from fedinv.registry import CLASSICAL, OPTIMIZATION
from fedinv.registry import LEARNED_POLICIES as LEARNED
from fedinv.roles.signals import NODE_RULES
from fedinv.sim.run import MODES

PARAMS = ("tuned", "textbook")
"""Classical policies: tuned by simulation, or set by the textbook formulas (EOQ, safety
stock z = 1.645 from demand and lead-time variability:
:func:`fedinv.policies.classical.default_params`)."""
TRAININGS = ("federated", "isolated", "central")
"""How a learned policy is trained: a Flower federation of the organizations
(role-weighted FedAvg), each organization alone on its own data (the DQN only), or one
learner on the pooled network."""
TUNE_PER = ("tier", "node")
"""Classical policies: one tuning coordinate per tier or per node
(:data:`fedinv.policies.tuning.PER`)."""
SCALES = ("capacity", "storage_capacity", "transport_capacity", "monthly_budget")
"""What a variant may scale: node production/assembly capacity, node storage, lane
transport capacity, organization monthly budgets."""
FEDERATION_KEYS = (
    "rounds",
    "local-steps",
    "replications",
    "eval-replications",
    "eval-days",
    "seed",
    "strategy",
    "proximal-mu",
    "hidden",
    "exploration-steps",
    "learning-rate",
    "batch-size",
    "local-iterations",
    "window",
    "hdpo-learning-rate",
    "layer-gradient",
    "transfers",
    "client-base",
    "server-step",
    "acceptance",
)
"""(HDPO's base tunings take the study's ``train_replications`` and ``tune_sweeps``.)"""
"""Keys of a study's ``[training]`` table (the federated run config's names); the
isolated and centralized learners get the same budget (DQN: rounds x local-steps days;
HDPO: rounds x local-iterations gradient batches)."""


class StudyError(ValueError):
    """A study definition that cannot be run, with the file and field at fault."""


@dataclass(frozen=True)
class PolicySpec:
    """One row of the comparison."""

    label: str
    policy: str
    params: str = "tuned"
    """Classical policies: ``tuned`` or ``textbook``."""
    values: Mapping[str, Any] | None = None
    """Explicit params (classical: as ``fedinv simulate --params``; rolling-lp: options)."""
    training: str = "federated"
    """Learned policies: ``federated``, ``isolated`` (DQN only) or ``central``."""
    mode: str = "pure"
    """How the policy runs: ``pure`` (its proposals released) or ``hybrid`` (through the
    safety layer)."""
    solver: str = "highspy"
    """Hybrid mode: the safety layer's backend."""
    train_mode: str | None = None
    """How it is tuned or trained: ``pure`` or ``hybrid`` (None: its ``mode``)."""
    tune_per: str = "tier"
    """Tuned classical policies: one search coordinate per ``tier`` or per ``node``."""
    coordination: str = "none"
    """The Coordination Node around the ordering policy (docs/roles.md): ``none``,
    ``balance`` (sharing every day) or ``signalled`` (event-triggered signals;
    scenarios with lateral links only)."""
    coordination_params: Mapping[str, float] | None = None
    """A node's ``threshold`` and ``reserve``, days of mean demand (None: tuned by the
    preparation unit :attr:`coordinated_by`)."""
    coordination_tuned_with: str = ""
    """The label of another row whose node's tuned ``threshold`` and ``reserve`` this
    row's node takes (the same ordering policy; "": its own, or its params)."""

    @property
    def slug(self) -> str:
        """A file-system name for the label."""
        return slugify(self.label)

    @property
    def trained_in(self) -> str:
        """The mode it is tuned or trained in (``train_mode``, else ``mode``)."""
        return self.train_mode or self.mode

    @property
    def prepared_by(self) -> str | None:
        """The preparation unit this policy needs, or ``None`` (textbook params, explicit
        values, an optimization policy): ``tune/POLICY[.hybrid][.node]`` or
        ``train/[hdpo-]TRAINING[.hybrid]`` (the suffixes: tuned or trained through the
        safety layer, one coordinate per node)."""
        layer = ".hybrid" if self.trained_in == "hybrid" else ""
        if self.policy in LEARNED:
            algo = "" if self.policy == "dqn" else f"{self.policy}-"
            return f"train/{algo}{self.training}{layer}"
        if self.policy in CLASSICAL and self.values is None and self.params == "tuned":
            per = ".node" if self.tune_per == "node" else ""
            return f"tune/{self.policy}{layer}{per}"
        return None

    @property
    def coordinated_by(self) -> str | None:
        """The unit tuning this row's Coordination Node, ``tune/coordination-LABEL-SLUG``
        (it runs after :attr:`prepared_by`, with its result), or ``None`` (no node, or
        its ``coordination_params`` given)."""
        if self.coordination == "none" or self.coordination_params is not None:
            return None
        if self.coordination_tuned_with:
            return f"tune/coordination-{slugify(self.coordination_tuned_with)}"
        return f"tune/coordination-{self.slug}"

    @property
    def needs(self) -> tuple[str, ...]:
        """The preparation units an evaluation of this row reads."""
        return tuple(k for k in (self.prepared_by, self.coordinated_by) if k)


@dataclass(frozen=True)
class VariantSpec:
    """An evaluation condition: the base scenario scaled and with added fixed events."""

    name: str
    description: str = ""
    scale: Mapping[str, float] = field(default_factory=dict)
    outages: tuple[Mapping[str, Any], ...] = ()
    surges: tuple[Mapping[str, Any], ...] = ()
    without_surges: bool = False
    """True: the scenario's own surges (fixed and random) are removed before ``surges``
    are added (a stationary network for the Analytics Monitor's false alerts)."""
    lead_shifts: tuple[Mapping[str, Any], ...] = ()
    """Lasting lead-time drifts (the scenario format's ``[[lead_shifts]]``)."""
    monitor: Mapping[str, Any] | None = None
    """Run the Analytics Monitor on this variant's evaluations: ``{drift = "none"}`` (the
    no-drift control: every retrain alert is false) or ``{drift = "demand" |
    "lead_time", day = D}`` (the drift starts on day ``D``; detection delays are
    counted from it). None: no monitor."""


@dataclass(frozen=True)
class EventSpec:
    """A window of days (inclusive, 0-based) whose disruption metrics the study reports."""

    name: str
    first_day: int
    last_day: int


@dataclass(frozen=True)
class StudySpec:
    """A whole study definition."""

    name: str
    title: str
    scenario: str
    policies: tuple[PolicySpec, ...]
    description: str = ""
    replications: int = 10
    """Held-out replications 0..R-1, the same for every policy (common random numbers)."""
    days: int | None = None
    """Horizon; default the scenario's."""
    train_replications: int = 16
    """Training replications of the tuner (and of the learner's evaluation)."""
    tune_sweeps: int = 2
    train_on: str = ""
    """The variant policies are tuned and trained on ("": the base scenario)."""
    budget_days: int | None = None
    """Most simulated replication-days of the whole network any one tuning or training
    may use (training, validation and a residual's base tuning counted; a federation
    sums its organizations' local days); a unit planned to use more is refused before
    the study starts. None: no limit."""
    bound: bool = True
    """Compute the perfect-information bound per held-out replication."""
    reference: str = ""
    """Label of the policy every other is compared to (paired differences)."""
    variants: tuple[VariantSpec, ...] = (VariantSpec("base"),)
    events: tuple[EventSpec, ...] = ()
    training: Mapping[str, Any] = field(default_factory=dict)
    paper: tuple[Mapping[str, Any], ...] = ()
    """Figures reported by a paper, shown beside ours and labelled as the paper's:
    rows with ``label`` and metric columns."""
    source: str = ""

    def policy(self, label: str) -> PolicySpec:
        return next(p for p in self.policies if p.label == label)

    def preparations(self) -> list[str]:
        """Every preparation unit's key: the policies' tunings and trainings (sorted),
        then the Coordination Nodes' tunings, which read them (sorted)."""
        first = sorted({p.prepared_by for p in self.policies if p.prepared_by})
        return first + sorted({p.coordinated_by for p in self.policies if p.coordinated_by})

    def digest(self) -> str:
        """A hash of everything that determines the results (not the title/description)."""
        data = asdict(self)
        for key in ("title", "description", "source", "paper"):
            data.pop(key)
        for pol in data["policies"]:  # a row without a node hashes as before the field existed
            for key, default in _UNHASHED_DEFAULTS.items():
                if pol.get(key, default) == default:
                    pol.pop(key, None)
        for var in data["variants"]:  # so does a variant without the monitor's fields
            for key, default in _UNHASHED_VARIANT_DEFAULTS.items():
                if var.get(key, default) == default:
                    var.pop(key, None)
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[
            :16
        ]


_UNHASHED_DEFAULTS: dict[str, Any] = {
    "coordination": "none",
    "coordination_params": None,
    "coordination_tuned_with": "",
}
_UNHASHED_VARIANT_DEFAULTS: dict[str, Any] = {
    "without_surges": False,
    "lead_shifts": (),
    "monitor": None,
}
"""Policy fields left out of :meth:`StudySpec.digest` at their default, so the run
folders of studies written before the fields existed still resume."""


def spec_from_dict(data: Mapping[str, Any]) -> StudySpec:
    """The inverse of ``dataclasses.asdict`` (a run folder's ``study.json``); unknown
    keys are ignored, so an older folder still reads."""

    def build(cls: type, raw: Mapping[str, Any]) -> Any:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})

    d = dict(data)
    d["policies"] = tuple(build(PolicySpec, p) for p in d.get("policies", ()))
    d["variants"] = tuple(
        build(
            VariantSpec,
            {
                **v,
                "outages": tuple(v.get("outages", ())),
                "surges": tuple(v.get("surges", ())),
                "lead_shifts": tuple(v.get("lead_shifts", ())),
            },
        )
        for v in d.get("variants", ())
    ) or (VariantSpec("base"),)
    d["events"] = tuple(build(EventSpec, e) for e in d.get("events", ()))
    d["paper"] = tuple(dict(p) for p in d.get("paper", ()))
    d["training"] = dict(d.get("training") or {})
    return build(StudySpec, d)


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "policy"


# ---------------------------------------------------------------------------- loading


def builtin_studies() -> dict[str, str]:
    """Built-in study names -> titles (``studies/definitions/*.toml``)."""
    out = {}
    for entry in sorted(_builtin_dir().iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            data = tomllib.loads(entry.read_text(encoding="utf-8"))
            out[entry.name.removesuffix(".toml")] = str(data.get("study", {}).get("title", ""))
    return out


def _builtin_dir():
    return resources.files("studies") / "definitions"


def _is_builtin(name_or_path: str | Path) -> bool:
    text = str(name_or_path)
    return "/" not in text and not text.endswith(".toml")


def load_study(name_or_path: str | Path) -> StudySpec:
    """A built-in study by name or a study ``.toml`` file (:class:`StudyError` if bad)."""
    text = study_text(name_or_path)
    source = f"builtin:{name_or_path}" if _is_builtin(name_or_path) else str(name_or_path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StudyError(f"{source}: not valid TOML ({exc})") from None
    return parse_study(data, source)


def study_text(name_or_path: str | Path) -> str:
    """The TOML text of a built-in study or a study file (:class:`StudyError` if none)."""
    if _is_builtin(name_or_path):
        entry = _builtin_dir() / f"{name_or_path}.toml"
        if not entry.is_file():
            raise StudyError(
                f"unknown study {str(name_or_path)!r}; built-in studies: "
                f"{', '.join(builtin_studies())} (or give a .toml file)"
            )
        return entry.read_text(encoding="utf-8")
    path = Path(name_or_path)
    if not path.is_file():
        raise StudyError(f"{path}: no such study file")
    return path.read_text(encoding="utf-8")


def parse_study(data: Mapping[str, Any], source: str) -> StudySpec:
    """Validate a parsed study document (see docs/studies.md)."""
    top = _Table(source, data, "", {"study", "policies", "variants", "events", "training", "paper"})
    study = _Table(
        source,
        top.get("study", _REQUIRED, dict, "a [study] table"),
        "study",
        {
            "name",
            "title",
            "description",
            "scenario",
            "replications",
            "days",
            "train_replications",
            "tune_sweeps",
            "budget_days",
            "train_on",
            "bound",
            "reference",
        },
    )
    scenario = study.get("scenario", _REQUIRED, str, "a scenario name or .toml path")
    if ("/" in scenario or scenario.endswith(".toml")) and not source.startswith("builtin:"):
        scenario = str((Path(source).resolve().parent / scenario).resolve())
        if not Path(scenario).is_file():
            raise StudyError(
                f"{source}: field study.scenario: expected a built-in scenario "
                f"or an existing .toml file, got {scenario!r} (no such file)"
            )
    name = study.get("name", slugify(Path(source).stem.removeprefix("builtin:")), str, "a name")
    raw_policies = top.get("policies", _REQUIRED, list, "an array of [[policies]] tables")
    if not raw_policies:
        raise StudyError(
            f"{source}: field policies: expected at least one [[policies]] table, got none"
        )
    policies = tuple(_policy(source, raw, i) for i, raw in enumerate(raw_policies))
    labels = [p.label for p in policies]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise StudyError(
            f"{source}: field policies: expected distinct labels, got "
            f"{', '.join(map(repr, dup))} twice"
        )
    for i, p in enumerate(policies):
        if p.coordination_tuned_with:
            _check_tuned_with(source, policies, i)
    slugs = [p.slug for p in policies]
    if len(set(slugs)) != len(slugs):
        raise StudyError(
            f"{source}: field policies: expected labels that differ in letters "
            f"or digits (they name files), got {labels}"
        )
    reference = study.get("reference", policies[0].label, str, "a policy label")
    if reference not in labels:
        raise StudyError(
            f"{source}: field study.reference: expected one of the policy "
            f"labels ({', '.join(map(repr, labels))}), got {reference!r}"
        )
    variants = tuple(
        _variant(source, raw, i)
        for i, raw in enumerate(top.get("variants", [], list, "an array of [[variants]]"))
    )
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise StudyError(f"{source}: field variants: expected distinct names, got {names}")
    events = tuple(
        _event(source, raw, i)
        for i, raw in enumerate(top.get("events", [], list, "an array of [[events]]"))
    )
    training = _training(source, top.get("training", {}, dict, "a [training] table"))
    paper = tuple(
        _paper(source, raw, i)
        for i, raw in enumerate(top.get("paper", [], list, "an array of [[paper]] rows"))
    )
    spec = StudySpec(
        name=name,
        title=study.get("title", name, str, "a title"),
        description=study.get("description", "", str, "a description"),
        scenario=scenario,
        policies=policies,
        replications=study.integer("replications", 10, 2),
        days=study.integer("days", None, 2),
        train_replications=study.integer("train_replications", 16, 1),
        tune_sweeps=study.integer("tune_sweeps", 2, 1),
        budget_days=study.integer("budget_days", None, 1),
        train_on=study.get("train_on", "", str, "a variant name"),
        bound=study.get("bound", True, bool, "true or false"),
        reference=reference,
        variants=variants or (VariantSpec("base"),),
        events=events,
        training=training,
        paper=paper,
        source=source,
    )
    if spec.train_on and spec.train_on not in [v.name for v in spec.variants]:
        raise StudyError(
            f"{source}: field study.train_on: expected one of the variant names "
            f"({', '.join(repr(v.name) for v in spec.variants)}), got {spec.train_on!r}"
        )
    for e in spec.events:
        if spec.days is not None and e.last_day >= spec.days:
            raise StudyError(
                f"{source}: field events: expected windows inside the "
                f"{spec.days}-day horizon, got {e.name!r} ending on day "
                f"{e.last_day}"
            )
    return spec


def _policy(source: str, raw: Any, i: int) -> PolicySpec:
    t = _Table(
        source,
        raw,
        f"policies[{i}]",
        {
            "label",
            "policy",
            "params",
            "values",
            "training",
            "mode",
            "train_mode",
            "tune_per",
            "solver",
            "coordination",
            "coordination_params",
            "coordination_tuned_with",
        },
    )
    policy = t.choice("policy", _REQUIRED, CLASSICAL + OPTIMIZATION + LEARNED)
    values = t.get("values", None, dict, "a table of params")
    spec = PolicySpec(
        label=t.get("label", policy, str, "a label"),
        policy=policy,
        params=t.choice("params", "tuned", PARAMS),
        values=values,
        training=t.choice("training", "federated", TRAININGS),
        mode=t.choice("mode", "pure", MODES),
        solver=t.choice("solver", "highspy", SOLVERS),
        train_mode=t.choice("train_mode", None, MODES) if "train_mode" in t.data else None,
        tune_per=t.choice("tune_per", "tier", TUNE_PER),
        coordination=t.choice("coordination", "none", NODE_RULES),
        coordination_params=_coordination_params(source, t, i),
        coordination_tuned_with=t.get("coordination_tuned_with", "", str, "a row label"),
    )
    if spec.coordination_tuned_with and (
        spec.coordination == "none" or spec.coordination_params is not None
    ):
        raise StudyError(
            f"{source}: field policies[{i}].coordination_tuned_with: expected it only on a "
            "row with a Coordination Node and without coordination_params, got "
            + (
                "coordination 'none'"
                if spec.coordination == "none"
                else "coordination_params as well"
            )
        )
    if policy == "hdpo" and spec.training == "isolated":
        raise StudyError(
            f"{source}: field policies[{i}].training: expected federated or central for "
            "hdpo (isolated training is the DQN's), got 'isolated'"
        )
    tuned = policy in CLASSICAL and values is None and spec.params == "tuned"
    if ("train_mode" in t.data or "tune_per" in t.data) and not (tuned or policy in LEARNED):
        key = "train_mode" if "train_mode" in t.data else "tune_per"
        raise StudyError(
            f"{source}: field policies[{i}].{key}: expected it only for a tuned classical "
            f"or a learned policy, got policy {policy!r}"
            + (" with explicit values" if values is not None else "")
            + (" with textbook params" if spec.params == "textbook" else "")
        )
    if "tune_per" in t.data and policy in LEARNED:
        raise StudyError(
            f"{source}: field policies[{i}].tune_per: expected it only for a tuned "
            f"classical policy, got the learned policy {policy!r}"
        )
    if policy in LEARNED and ("params" in t.data or values is not None):
        raise StudyError(
            f"{source}: field policies[{i}].params: expected none for a learned "
            f"policy (it is trained: give training = ...), got one"
        )
    if policy not in LEARNED and "training" in t.data:
        raise StudyError(
            f"{source}: field policies[{i}].training: expected it only for a "
            f"learned policy ({', '.join(LEARNED)}), got policy {policy!r}"
        )
    if policy in OPTIMIZATION and "params" in t.data:
        raise StudyError(
            f"{source}: field policies[{i}].params: expected none for "
            f"{policy} (its options go in values), got {t.data['params']!r}"
        )
    return spec


SAME_ORDERING_POLICY = ("policy", "params", "values", "training", "mode", "train_mode", "tune_per")
"""Fields two rows must share for one to take the other's tuned Coordination Node."""


def _check_tuned_with(source: str, policies: tuple[PolicySpec, ...], i: int) -> None:
    """``policies[i].coordination_tuned_with`` names another row with a node tuned by its
    own unit around the same ordering policy (:data:`SAME_ORDERING_POLICY`)."""
    pol = policies[i]
    where = f"{source}: field policies[{i}].coordination_tuned_with"
    other = next((p for p in policies if p.label == pol.coordination_tuned_with), None)
    if other is None or other is pol:
        labels = [p.label for p in policies if p is not pol]
        raise StudyError(
            f"{where}: expected the label of another row ({', '.join(map(repr, labels))}), "
            f"got {pol.coordination_tuned_with!r}"
        )
    if other.coordination == "none" or other.coordination_params or other.coordination_tuned_with:
        raise StudyError(
            f"{where}: expected a row whose Coordination Node is tuned by its own unit, got "
            f"{other.label!r}, which "
            + (
                "has no node"
                if other.coordination == "none"
                else "has coordination_params"
                if other.coordination_params
                else "takes another row's"
            )
        )
    for key in SAME_ORDERING_POLICY:
        if getattr(other, key) != getattr(pol, key):
            raise StudyError(
                f"{where}: expected a row with the same ordering policy, got {other.label!r} "
                f"with {key} {getattr(other, key)!r} (this row: {getattr(pol, key)!r})"
            )


MONITOR_DRIFTS = ("none", "demand", "lead_time")
"""A monitored variant's drift: none (the false-alert control), the demand mean, or a
lane's lead time."""


def _monitor(source: str, t: _Table, i: int) -> dict[str, Any] | None:
    """A variant's ``monitor`` table (:attr:`VariantSpec.monitor`)."""
    raw = t.get("monitor", None, dict, 'a table {drift = "none"} or {drift = .., day = ..}')
    if raw is None:
        return None
    m = _Table(source, raw, f"variants[{i}].monitor", {"drift", "day"})
    drift = m.choice("drift", _REQUIRED, MONITOR_DRIFTS)
    if drift == "none":
        if "day" in raw:
            raise StudyError(
                f'{source}: field variants[{i}].monitor.day: expected none with drift = "none", '
                f"got {raw['day']!r}"
            )
        return {"drift": drift}
    day = m.integer("day", _REQUIRED, 0)
    needed = "lead_shifts" if drift == "lead_time" else "surges"
    if not t.data.get(needed):
        raise StudyError(
            f"{source}: field variants[{i}].monitor.drift: expected {needed} on the variant "
            f"for a {drift} drift, got none"
        )
    return {"drift": drift, "day": day}


def _coordination_params(source: str, t: _Table, i: int) -> dict[str, float] | None:
    """A policy's ``coordination_params`` table (only with ``coordination = "balance"``):
    ``threshold`` and ``reserve``, finite numbers (days of mean demand), both given."""
    raw = t.get("coordination_params", None, dict, "a table {threshold = .., reserve = ..}")
    if raw is None:
        return None
    where = f"{source}: field policies[{i}].coordination_params"
    if t.data.get("coordination", "none") == "none":
        raise StudyError(
            f"{where}: expected it only with a Coordination Node (coordination = balance or "
            f"signalled), got coordination {t.data.get('coordination', 'none')!r}"
        )
    keys = ("threshold", "reserve")
    unknown = sorted(set(raw) - set(keys))
    if unknown:
        raise StudyError(f"{where}.{unknown[0]}: expected threshold or reserve, got {unknown[0]!r}")
    out = {}
    for key in keys:
        value = raw.get(key)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise StudyError(
                f"{where}.{key}: expected a finite number (days of mean demand), got "
                + ("nothing (give both threshold and reserve)" if value is None else repr(value))
            )
        out[key] = float(value)
    return out


def _variant(source: str, raw: Any, i: int) -> VariantSpec:
    t = _Table(
        source,
        raw,
        f"variants[{i}]",
        {
            "name",
            "description",
            "scale",
            "outages",
            "surges",
            "without_surges",
            "lead_shifts",
            "monitor",
        },
    )
    scale = t.get("scale", {}, dict, "a table of scale factors")
    for key, value in scale.items():
        if key not in SCALES:
            raise StudyError(
                f"{source}: field variants[{i}].scale.{key}: expected one of "
                f"{', '.join(SCALES)}, got {key!r}"
            )
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise StudyError(
                f"{source}: field variants[{i}].scale.{key}: expected a number > 0, got {value!r}"
            )
    return VariantSpec(
        name=t.get("name", _REQUIRED, str, "a name"),
        description=t.get("description", "", str, "a description"),
        scale={k: float(v) for k, v in scale.items()},
        outages=tuple(t.get("outages", [], list, "an array of outage tables")),
        surges=tuple(t.get("surges", [], list, "an array of surge tables")),
        without_surges=t.get("without_surges", False, bool, "true or false"),
        lead_shifts=tuple(t.get("lead_shifts", [], list, "an array of lead-shift tables")),
        monitor=_monitor(source, t, i),
    )


def _event(source: str, raw: Any, i: int) -> EventSpec:
    t = _Table(source, raw, f"events[{i}]", {"name", "first_day", "last_day"})
    first = t.integer("first_day", _REQUIRED, 0)
    last = t.integer("last_day", _REQUIRED, first)
    return EventSpec(t.get("name", _REQUIRED, str, "a name"), first, last)


def _training(source: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    from fedinv.federation.task import FedConfig

    unknown = sorted(set(raw) - set(FEDERATION_KEYS))
    if unknown:
        raise StudyError(
            f"{source}: field training.{unknown[0]}: expected one of "
            f"{', '.join(FEDERATION_KEYS)}, got {unknown[0]!r}"
        )
    try:
        FedConfig.from_flat(raw)
    except (TypeError, ValueError) as exc:
        raise StudyError(f"{source}: field training: {exc}") from None
    return dict(raw)


def _paper(source: str, raw: Any, i: int) -> dict[str, Any]:
    if not isinstance(raw, dict) or not isinstance(raw.get("label"), str):
        raise StudyError(
            f"{source}: field paper[{i}]: expected a table with a label and "
            f"metric values, got {raw!r}"
        )
    for key, value in raw.items():
        if key not in ("label", "source") and (
            isinstance(value, bool) or not isinstance(value, int | float)
        ):
            raise StudyError(f"{source}: field paper[{i}].{key}: expected a number, got {value!r}")
    return dict(raw)


_REQUIRED: Any = object()


class _Table:
    """A TOML table with typed getters that raise :class:`StudyError`."""

    def __init__(self, source: str, data: Any, path: str, keys: set[str]):
        if not isinstance(data, dict):
            raise StudyError(
                f"{source}: field {path or 'document'}: expected a table, got {type(data).__name__}"
            )
        self.source, self.data, self.path = source, data, path
        unknown = sorted(set(data) - keys)
        if unknown:
            raise StudyError(
                f"{source}: field {self._name(unknown[0])}: expected one of "
                f"{', '.join(sorted(keys))}, got unknown key {unknown[0]!r}"
            )

    def _name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, default: Any, kind: type, expected: str) -> Any:
        if key not in self.data:
            if default is _REQUIRED:
                raise StudyError(
                    f"{self.source}: field {self._name(key)}: expected "
                    f"{expected}, got nothing (it is required)"
                )
            return default
        value = self.data[key]
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise StudyError(
                f"{self.source}: field {self._name(key)}: expected {expected}, got {value!r}"
            )
        return value

    def integer(self, key: str, default: Any, minimum: int) -> Any:
        if key not in self.data:
            if default is _REQUIRED:
                raise StudyError(
                    f"{self.source}: field {self._name(key)}: expected an "
                    "integer, got nothing (it is required)"
                )
            return default
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise StudyError(
                f"{self.source}: field {self._name(key)}: expected an integer "
                f">= {minimum}, got {value!r}"
            )
        return value

    def choice(self, key: str, default: Any, options: tuple[str, ...]) -> str:
        value = self.get(key, default, str, f"one of {', '.join(options)}")
        if value not in options:
            raise StudyError(
                f"{self.source}: field {self._name(key)}: expected one of "
                f"{', '.join(options)}, got {value!r}"
            )
        return value


# ------------------------------------------------------------ checks against the scenario


def check_study(spec: StudySpec) -> None:
    """Check the whole definition against its scenario before any unit runs
    (:class:`StudyError` naming the study file and the field): the base scenario loads,
    every variant is a valid scenario (its outages and surges name existing nodes and
    regions), a policy with a Coordination Node has lateral links to move stock on,
    every policy's explicit values fit the network (known parameters and
    nodes; an optimization policy's options), and every event window lies inside the
    horizon."""
    from fedinv.model.scenario import ScenarioError, load_scenario
    from fedinv.registry import prepare, scenario_layout

    source = spec.source or "study"
    try:
        base = load_scenario(spec.scenario)
    except ScenarioError as exc:
        raise StudyError(f"{source}: field study.scenario: {exc}") from None
    for i, variant in enumerate(spec.variants):
        try:
            variant_scenario(spec, variant)
        except ScenarioError as exc:
            raise StudyError(f"{source}: field variants[{i}] ({variant.name!r}): {exc}") from None
    layout = scenario_layout(base)
    for i, pol in enumerate(spec.policies):
        if pol.coordination != "none" and not base.network.transfers:
            raise StudyError(
                f"{source}: field policies[{i}].coordination: expected it only on a scenario "
                f"with lateral links ([[transfers]]), got {pol.coordination!r} on "
                f"{base.name}, which has none"
            )
        if pol.values is None:
            continue
        where = f"{source}: field policies[{i}].values"
        try:
            prepare(pol.policy, base, layout, params=dict(pol.values), where=where)
        except ValueError as exc:  # InputError, and the policies' own checks
            text = str(exc)
            raise StudyError(text if text.startswith(where) else f"{where}: {text}") from None
    days = spec.days or base.horizon_days
    for e in spec.events:
        if e.last_day >= days:
            raise StudyError(
                f"{source}: field events: expected windows inside the {days}-day horizon, "
                f"got {e.name!r} ending on day {e.last_day}"
            )


# --------------------------------------------------------------------------- variants


def variant_scenario(spec: StudySpec, variant: VariantSpec):
    """The base scenario with ``variant`` applied (validated like any scenario file)."""
    from fedinv.model.scenario import load_scenario, parse_scenario

    base = load_scenario(spec.scenario)
    if not (
        variant.scale
        or variant.outages
        or variant.surges
        or variant.without_surges
        or variant.lead_shifts
    ):
        return base
    doc, base_dir = variant_document(spec, variant)
    source = f"{base.source} + variant {variant.name} of {spec.source}"
    return parse_scenario(doc, source, base_dir)


def variant_document(spec: StudySpec, variant: VariantSpec) -> tuple[dict[str, Any], Path]:
    """The base scenario's TOML document with ``variant``'s scale factors, outages and
    surges applied, and the folder its relative paths are relative to."""
    import copy

    document, base_dir = scenario_document(spec.scenario)
    doc = copy.deepcopy(document)
    for node in doc.get("nodes", []):
        for key in ("capacity", "storage_capacity"):
            if key in variant.scale and key in node:
                node[key] = float(node[key]) * variant.scale[key]
    for lane in doc.get("lanes", []):
        if "transport_capacity" in variant.scale and "transport_capacity" in lane:
            lane["transport_capacity"] = (
                float(lane["transport_capacity"]) * variant.scale["transport_capacity"]
            )
    for org in doc.get("organizations", []):
        if "monthly_budget" in variant.scale and "monthly_budget" in org:
            org["monthly_budget"] = float(org["monthly_budget"]) * variant.scale["monthly_budget"]
    doc.setdefault("outages", []).extend(dict(o) for o in variant.outages)
    if variant.without_surges:
        doc["surges"] = []
    doc.setdefault("surges", []).extend(dict(s) for s in variant.surges)
    doc.setdefault("lead_shifts", []).extend(dict(x) for x in variant.lead_shifts)
    return doc, base_dir


def _base_scenario_name(spec: StudySpec) -> str:
    """The base scenario as a federation loads it: a built-in name, or an absolute path."""
    return spec.scenario if _is_builtin(spec.scenario) else str(Path(spec.scenario).resolve())


def training_scenario(spec: StudySpec):
    """The scenario policies are tuned and trained on: the base scenario, or the variant
    ``[study] train_on`` names."""
    from fedinv.model.scenario import load_scenario

    if not spec.train_on:
        return load_scenario(spec.scenario)
    return variant_scenario(spec, next(v for v in spec.variants if v.name == spec.train_on))


def training_scenario_path(spec: StudySpec, folder: Path) -> str:
    """A name or file a federation loads :func:`training_scenario` from: the base
    scenario's name or absolute path, or, with ``train_on``, the variant written as
    ``folder/training-scenario.toml`` (its demand-history path made absolute)."""
    from fedinv.files import atomic_write
    from fedinv.model.scenario import document_toml

    if not spec.train_on:
        return _base_scenario_name(spec)
    variant = next(v for v in spec.variants if v.name == spec.train_on)
    doc, base_dir = variant_document(spec, variant)
    history = doc.get("demand_history")
    if isinstance(history, dict) and isinstance(history.get("file"), str):
        history["file"] = str((base_dir / history["file"]).resolve())
    path = Path(folder) / "training-scenario.toml"
    text = f"# {spec.scenario} + variant {variant.name} of {spec.source}\n" + document_toml(doc)
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return str(path.resolve())


def scenario_document(name_or_path: str) -> tuple[dict[str, Any], Path]:
    """The raw TOML document of a built-in scenario or a file, and its folder."""
    if "/" not in name_or_path and not name_or_path.endswith(".toml"):
        from fedinv.model.scenario import builtin_scenario_text

        text = builtin_scenario_text(name_or_path)
        return tomllib.loads(text), Path(str(resources.files("fedinv.model"))) / "scenarios"
    path = Path(name_or_path)
    return tomllib.loads(path.read_text(encoding="utf-8")), path.resolve().parent


def training_config(
    spec: StudySpec, algo: str = "dqn", train_mode: str = "pure", scenario: str | None = None
):
    """The FedConfig of the study's ``[training]`` table for the learner ``algo`` trained
    in ``train_mode`` (HDPO's base tunings take the study's ``train_replications`` and
    ``tune_sweeps``), on ``scenario`` (a name or file, :func:`training_scenario_path`;
    default the base scenario)."""
    from fedinv.federation.task import FedConfig

    cfg = FedConfig.from_flat({**spec.training, "algo": algo, "train-mode": train_mode})
    if algo == "hdpo":
        cfg = dataclasses.replace(
            cfg, tune_replications=spec.train_replications, tune_sweeps=spec.tune_sweeps
        )
    cfg = dataclasses.replace(cfg, scenario=scenario or _base_scenario_name(spec))
    if "exploration-steps" not in spec.training:
        cfg = dataclasses.replace(cfg, exploration_steps=cfg.rounds * cfg.local_steps // 2)
    return cfg
