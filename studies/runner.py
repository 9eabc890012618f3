"""Run a study into a folder, resumably: every unit of work writes one file atomically,
and a re-run skips the units whose file exists.

Units (``OUT/units/...``):
  * ``train/KIND``    a DQN training (federated through a real local Flower federation,
                      isolated, or centralized), run in this process one after another
                      (the federation has its own engine and uses every core);
  * ``tune/POLICY``   a classical policy tuned by simulation on training replications;
  * ``tune/coordination-LABEL``  a row's Coordination Node tuned around its policy;
  * ``bound/VARIANT/rep-NNNN``        the perfect-information bound of one replication;
  * ``eval/VARIANT/POLICY/rep-NNNN``  one policy on one held-out replication.
Tune, bound and eval units run in parallel as Ray tasks (``ray.init`` on this machine
with ``workers`` CPUs, or an existing cluster with ``address``): Ray is already
installed with Flower's simulation engine, schedules Python functions across cores and
machines unchanged, and the driver writes every result it gets back, so results land
in one folder wherever the work ran. ``workers=1`` runs everything in this process.

A killed run loses at most the units in flight: a unit's file appears only once it is
complete (written to a temporary name, then renamed). A federated training resumes from
its last round's checkpoint (its own ServerApp resume).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from studies.budget import COORDINATION_PREFIX
from studies.spec import (
    StudySpec,
    check_study,
    training_config,
    training_scenario,
    training_scenario_path,
    variant_scenario,
)
from studies.units import Unit, plan, read_unit, scan, unit_path

__all__ = ["Unit", "plan", "run_study", "execute_unit", "event_metrics", "StudyRunError"]

VERSIONS = (
    "fedinv",
    "numpy",
    "pandas",
    "torch",
    "flwr",
    "ray",
    "pyomo",
    "highspy",
    "scipy",
    "gymnasium",
    "pettingzoo",
)
RECOVERY_WINDOW = 7
"""Days of the trailing fill rate that define recovery after an event."""
RECOVERY_TOLERANCE = 0.02
"""Recovered: the 7-day trailing fill rate is back within 2 points of the pre-event level."""
PRE_EVENT_DAYS = 28


class StudyRunError(RuntimeError):
    """A study that cannot run in the given folder, or a unit that failed."""


class StudyDefinitionChanged(StudyRunError):
    """The run folder holds results of a different study definition."""


# ------------------------------------------------------------------------ the driver


def run_study(
    spec: StudySpec,
    out: str | Path,
    *,
    workers: int | None = None,
    address: str | None = None,
    command: str = "",
    echo: Callable[[str], None] | None = print,
    progress: bool = True,
    restart: bool = False,
) -> Path:
    """Run (or resume) ``spec`` into ``out``; returns the folder.

    The whole definition is checked against its scenario first
    (:func:`studies.spec.check_study`, :class:`studies.spec.StudyError`). Raises
    :class:`StudyDefinitionChanged` if ``out`` holds a different definition (``restart``:
    discard that folder's results and start over instead), :class:`StudyRunError` if a
    unit fails (the finished units stay). Unit files that are not valid are reported by
    path and recomputed; the old ``results/``, ``figures/`` and ``report.md`` are removed
    before any work, so they are only ever those of the units beside them."""
    check_study(spec)
    from studies.budget import check_budgets

    planned = check_budgets(spec)  # a unit over the study's budget is refused here
    out = Path(out).resolve()
    say = echo or (lambda _msg: None)
    if restart:
        removed = clear_run_folder(out)
        if removed:
            say(f"--restart: removed {', '.join(removed)} from {out}")
    (out / "units").mkdir(parents=True, exist_ok=True)
    meta = _start_meta(spec, out, command, workers)
    meta["planned_days"] = planned
    _reap(out, say)
    _remove_outputs(out)
    units = plan(spec)
    found = scan(out, units)
    for key, exc in found.bad.items():
        say(f"not a finished unit, recomputing it: {exc}")
        unit_path(out, next(u for u in units if u.key == key)).unlink(missing_ok=True)
    done = set(found.finished)
    if done:
        say(f"resuming {spec.name} in {out}: {len(done)} of {len(units)} units already done")
    started, prior = time.perf_counter(), float(meta.get("seconds") or 0.0)
    bases = server_bases(spec, units)
    early = [u for u in units if u.key in set(bases.values()) and u.key not in done]
    trainings = [u for u in units if u.kind == "train" and u.key not in done]
    if early and trainings:  # the tunings a federation's server reuses, first
        engine = _Engine(workers, address, out)
        try:
            engine.run(spec, out, early, done, say, progress)
        finally:
            engine.close()
    for unit in trainings:  # in this process
        say(f"training: {_training_text(unit.policy)} ...")
        base = next((u for u in units if u.key == bases.get(unit.key)), None)
        _write_json(unit_path(out, unit), train_unit(spec, unit, out, echo=echo, base=base))
        done.add(unit.key)
    todo = [u for u in units if u.key not in done]
    if todo:
        engine = _Engine(workers, address, out)
        meta["engine"], meta["workers"] = engine.name, engine.workers
        _write_json(out / "study.json", meta)
        try:
            engine.run(spec, out, todo, done, say, progress)
        finally:
            engine.close()
            meta["seconds"] = prior + time.perf_counter() - started  # also when it failed
            _write_json(out / "study.json", meta)
    from studies.collate import collate

    meta.update(
        finished=datetime.now(UTC).isoformat(timespec="seconds"),
        seconds=prior + time.perf_counter() - started,
    )
    _write_json(out / "study.json", meta)
    collate(spec, out)
    return out


RUN_OUTPUTS = ("results", "figures", "report.md")
"""What collating writes (removed before a run works, rewritten at its end)."""
RUN_FILES = ("units", *RUN_OUTPUTS, "study.json", "study.toml")
"""Everything ``fedinv run`` writes into its folder (what ``--restart`` removes)."""


def _reap(out: Path, say: Callable[[str], None]) -> None:
    """Stop what an interrupted run into ``out`` left running (its Ray cluster); refuse
    if another run is working in ``out`` now."""
    from fedinv.federation.processes import RunFolderBusy, reap_leftovers

    try:
        stopped = reap_leftovers(out)
    except RunFolderBusy as exc:
        raise StudyRunError(str(exc)) from None
    if stopped:
        say(f"stopped {len(stopped)} process(es) an interrupted run left in {out}")


def _remove_outputs(out: Path) -> None:
    for name in RUN_OUTPUTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def clear_run_folder(out: Path) -> list[str]:
    """Remove what ``fedinv run`` wrote into ``out`` (:data:`RUN_FILES`), after stopping
    any process an interrupted run left there; other files stay. Returns the names
    removed."""
    from fedinv.federation.processes import RunFolderBusy, reap_leftovers

    removed = []
    try:
        reap_leftovers(out)
        federated = out / "units" / "train" / "federated"
        if federated.is_dir():
            reap_leftovers(federated)
    except RunFolderBusy as exc:
        raise StudyRunError(str(exc)) from None
    for name in RUN_FILES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
            removed.append(name + "/")
        elif path.exists():
            path.unlink()
            removed.append(name)
    return removed


def _start_meta(spec: StudySpec, out: Path, command: str, workers: int | None) -> dict[str, Any]:
    path = out / "study.json"
    if path.is_file():
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
            meta["spec"]["name"]  # noqa: B018 - a KeyError/TypeError if it is not ours
        except (ValueError, KeyError, TypeError) as exc:
            raise StudyDefinitionChanged(
                f"{path} is not a valid study record ({type(exc).__name__}: {exc}); to "
                "start over in this folder, re-run with --restart"
            ) from None
        if meta.get("digest") != spec.digest():
            raise StudyDefinitionChanged(
                f"{out} holds results of a different study definition ({meta['spec']['name']}, "
                f"digest {meta.get('digest')}; this one is {spec.digest()}): resuming would mix "
                "them. To start over in this folder, re-run with --restart (it removes the "
                "old units and results); or give another --out folder."
            )
        meta["command"] = command or meta.get("command", "")
        meta["finished"] = None
        return meta
    base = _base_scenario(spec)
    meta = {
        "spec": dataclasses.asdict(spec),
        "digest": spec.digest(),
        "command": command,
        "days": spec.days or base.horizon_days,
        "warmup_days": base.warmup_days,
        "recovery_definition": (
            f"days after an event's window until the customers' {RECOVERY_WINDOW}-day "
            f"trailing fill rate is back within {RECOVERY_TOLERANCE * 100:.0f} points of "
            f"its level in the {PRE_EVENT_DAYS} days before the window (0 if it never "
            "fell below; if it never comes back, the days left in the horizon and "
            "recovered = false)"
        ),
        "versions": package_versions(),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "finished": None,
        "seconds": 0.0,
        "workers": workers or os.cpu_count() or 1,
        "engine": "ray",
    }
    _write_json(path, meta)
    return meta


def package_versions() -> dict[str, str]:
    out = {}
    for name in VERSIONS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


class _Engine:
    """Ray (several workers or a cluster) or this process (``workers == 1``)."""

    def __init__(self, workers: int | None, address: str | None, out: Path):
        self.workers = int(workers or os.cpu_count() or 1)
        self.ray = None
        self.guard = None
        if address is None and self.workers <= 1:
            self.name = "in-process"
            return
        import ray

        from fedinv.federation.processes import TAG_VARIABLE, ProcessGuard

        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
        if address is not None:
            ray.init(address=address, log_to_driver=False)
            self.workers = int(ray.cluster_resources().get("CPU", 1))
            self.name = f"ray cluster {address}"
        else:
            # the processes of Ray's local cluster inherit the guard's tag: they are
            # stopped with this run, even if this process is killed
            self.guard = ProcessGuard(out).__enter__()
            os.environ[TAG_VARIABLE] = self.guard.tag
            try:
                ray.init(
                    num_cpus=self.workers,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                    runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}},
                )
            except BaseException:
                self.guard.close()
                raise
            finally:
                os.environ.pop(TAG_VARIABLE, None)
            self.name = "ray"
        self.ray = ray
        self.remote = ray.remote(num_cpus=1, max_retries=0)(execute_unit)

    def run(
        self,
        spec: StudySpec,
        out: Path,
        todo: list[Unit],
        done: set[str],
        say: Callable[[str], None],
        progress: bool,
    ) -> None:
        pending = list(todo)
        failures: list[str] = []
        with _Bar(len(todo), f"{spec.name}: {len(todo)} units", progress) as bar:
            if self.ray is None:
                for unit in pending:
                    try:
                        payload = execute_unit(spec, str(out), unit)
                    except Exception as exc:  # noqa: BLE001 - reported, others go on
                        failures.append(f"{unit.key}: {type(exc).__name__}: {exc}")
                        bar.advance()
                        continue
                    _write_json(unit_path(out, unit), payload)
                    done.add(unit.key)
                    bar.advance(unit.key)
            else:
                self._run_ray(spec, out, pending, done, failures, bar)
        if failures:
            raise StudyRunError(
                f"{len(failures)} unit(s) failed (the others are saved; a "
                "re-run retries only these):\n  " + "\n  ".join(failures[:10])
            )

    def _run_ray(self, spec, out, pending, done, failures, bar) -> None:
        ray = self.ray
        spec_ref = ray.put(spec)
        running: dict[Any, Unit] = {}
        failed_needs: set[str] = set()
        while pending or running:
            ready = [u for u in pending if all(n in done for n in u.needs)]
            for unit in ready:
                pending.remove(unit)
                running[self.remote.remote(spec_ref, str(out), unit)] = unit
            for unit in [u for u in pending if any(n in failed_needs for n in u.needs)]:
                pending.remove(unit)
                failures.append(f"{unit.key}: skipped, {unit.needs[0]} failed")
                bar.advance()
            if not running:
                if pending:
                    raise StudyRunError(
                        "units wait for preparations that never ran: "
                        + ", ".join(u.key for u in pending[:5])
                    )
                break
            finished, _ = ray.wait(list(running), num_returns=1)
            for ref in finished:
                unit = running.pop(ref)
                try:
                    payload = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - reported, others go on
                    cause = getattr(exc, "cause", None) or exc
                    failures.append(f"{unit.key}: {type(cause).__name__}: {cause}")
                    failed_needs.add(unit.key)
                    bar.advance()
                    continue
                _write_json(unit_path(out, unit), payload)
                done.add(unit.key)
                bar.advance(unit.key)

    def close(self) -> None:
        if self.ray is not None:
            self.ray.shutdown()
        if self.guard is not None:
            self.guard.close()


class _Bar:
    """A rich progress bar on stderr, or nothing."""

    def __init__(self, total: int, title: str, show: bool):
        self.total, self.title, self.show = total, title, show
        self.progress = None

    def __enter__(self) -> _Bar:
        if self.show:
            from fedinv.progress import progress_bar

            self.progress = progress_bar()
            self.progress.start()
            self.task = self.progress.add_task(self.title, total=self.total)
        return self

    def advance(self, key: str = "") -> None:
        if self.progress is not None:
            self.progress.update(
                self.task, advance=1, description=f"{self.title} (last: {key})" if key else None
            )

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


def _write_json(path: Path, payload: Any) -> None:
    """Write ``payload`` so that ``path`` is either absent or complete."""
    from fedinv.files import atomic_write

    text = json.dumps(payload, indent=1, default=_json_default, allow_nan=True)
    atomic_write(path, lambda tmp: tmp.write_text(text))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


# -------------------------------------------------------------------------- the units


def execute_unit(spec: StudySpec, out: str, unit: Unit) -> dict[str, Any]:
    """Compute one tune, bound or eval unit; returns its JSON payload (a Ray task)."""
    started = time.perf_counter()
    if unit.kind == "tune" and unit.policy.startswith(COORDINATION_PREFIX):
        payload = _tune_coordination(spec, Path(out), unit)
    elif unit.kind == "tune":
        payload = _tune(spec, unit)
    elif unit.kind == "bound":
        payload = _bound(spec, unit)
    elif unit.kind == "eval":
        payload = _evaluate(spec, Path(out), unit)
    else:
        raise StudyRunError(f"unit {unit.key}: unknown kind {unit.kind!r}")
    payload["seconds"] = time.perf_counter() - started
    return payload


def _base_scenario(spec: StudySpec):
    from fedinv.model.scenario import load_scenario

    return load_scenario(spec.scenario)


def _variant(spec: StudySpec, name: str):
    return variant_scenario(spec, next(v for v in spec.variants if v.name == name))


def _tune(spec: StudySpec, unit: Unit) -> dict[str, Any]:
    from fedinv.policies.tuning import tune
    from studies.budget import parse_key

    _, name, mode, per = parse_key(unit.key)
    result = tune(
        training_scenario(spec),
        name,
        train_replications=spec.train_replications,
        days=spec.days,
        sweeps=spec.tune_sweeps,
        mode=mode,
        solver="highspy",
        per=per,
    )
    return {
        "policy": unit.policy,
        "mode": mode,
        "per": per,
        "params": result.params,
        "coords": result.coordinates,
        "train_cost_per_day": result.train_cost_per_day,
        "evaluations": result.evaluations,
        "simulated_days": result.simulated_days,
        "train_replications": spec.train_replications,
    }


def _tune_coordination(spec: StudySpec, out: Path, unit: Unit) -> dict[str, Any]:
    """Tune the Coordination Node of the policy whose :attr:`coordinated_by` is
    ``unit`` (:func:`fedinv.roles.coordination.tune_balance`) around that policy as the
    study evaluates it (its tuned params, read from its preparation unit), on the
    study's training replications of the training scenario, run as the policy is tuned
    (:attr:`~studies.spec.PolicySpec.trained_in`: pure, or through the safety layer)."""
    from fedinv.policies.tuning import TRAIN_BASE
    from fedinv.roles.coordination import tune_balance
    from fedinv.roles.signals import node_class

    pol = next(
        p for p in spec.policies if p.coordinated_by == unit.key and not p.coordination_tuned_with
    )
    scenario = training_scenario(spec)
    reps = list(range(TRAIN_BASE, TRAIN_BASE + spec.train_replications))
    factory = policy_factory(spec, pol, scenario, out)
    mode = pol.trained_in
    result = tune_balance(
        scenario,
        factory,
        reps,
        days=spec.days,
        sweeps=spec.tune_sweeps,
        mode=mode,
        solver=pol.solver,
        node=node_class(pol.coordination),
    )
    params = {"threshold": result.config.threshold, "reserve": result.config.reserve}
    days = spec.days or scenario.horizon_days
    return {
        "policy": unit.policy,
        "row": pol.label,
        "rule": pol.coordination,
        "mode": mode,
        "params": params,
        "coords": params,
        "train_cost_per_day": result.train_cost_per_day,
        "evaluations": result.evaluations,
        "simulated_days": result.evaluations * len(reps) * days,
        "train_replications": spec.train_replications,
    }


def _bound(spec: StudySpec, unit: Unit) -> dict[str, Any]:
    from fedinv.hybrid import perfect_information_bound

    value = perfect_information_bound(
        _variant(spec, unit.variant), [unit.replication], days=spec.days
    )
    return {
        "variant": unit.variant,
        "replication": unit.replication,
        "bound_cost_per_day": float(value[0]),
    }


def _evaluate(spec: StudySpec, out: Path, unit: Unit) -> dict[str, Any]:
    from fedinv.sim.run import simulate

    pol = spec.policy(unit.policy)
    variant = next(v for v in spec.variants if v.name == unit.variant)
    scenario = _variant(spec, unit.variant)
    factory = coordinated(spec, pol, policy_factory(spec, pol, scenario, out), out)
    result = simulate(
        scenario,
        factory,
        replications=1,
        first_replication=unit.replication,
        days=spec.days,
        mode=pol.mode,
        solver=pol.solver,
        keep_records=variant.monitor is not None,
    )
    metrics = {k: _float(v) for k, v in result.per_replication.iloc[0].items()}
    monthly = result.monthly.drop(columns=["replication"]).to_dict(orient="records")
    events = event_metrics(result.daily, scenario, spec)
    return {
        "variant": unit.variant,
        "policy": pol.label,
        "replication": unit.replication,
        "mode": pol.mode,
        "metrics": metrics,
        "monthly": monthly,
        "events": events,
        "relaxations": []
        if result.relaxations is None
        else result.relaxations.head(20).astype(str).to_dict(orient="records"),
        **({} if variant.monitor is None else {"monitor": _monitor(spec, variant, unit, result)}),
    }


def _monitor(spec: StudySpec, variant, unit: Unit, result) -> dict[str, Any]:
    """The Analytics Monitor on one evaluation's records (:func:`fedinv.roles.monitor.detect`,
    default thresholds, the plan the scenario's demand model without surges), summarized
    by :func:`fedinv.roles.monitor.alert_summary` from the variant's drift day."""
    from fedinv.roles.monitor import MonitorConfig, alert_summary, detect
    from fedinv.sim.simulator import Simulator

    sim = Simulator(result.scenario, days=spec.days)
    _, exo = sim.reset([unit.replication])  # the same streams the run drew
    records = dict(result.records)
    shipped = records.pop("shipped")
    alerts, _ = detect(records, shipped, exo, result.scenario, sim.layout, MonitorConfig())
    summary = alert_summary(alerts, sim.layout, sim.days, variant.monitor.get("day"))
    if variant.monitor["drift"] == "lead_time":  # the evidence the drifted lanes offered
        day, lanes = int(variant.monitor["day"]), result.scenario.network.lanes
        summary["shipments"] = {}
        for shift in variant.lead_shifts:
            m = sim.layout.lane_ids.index(shift["lane"])
            budget = day + int(lanes[m].lead_time.mean_days + 7)
            sent = shipped[:, 0, m] > 1e-9
            summary["shipments"][shift["lane"]] = {
                "in_budget": int(sent[day : budget + 1].sum()),
                "after": int(sent[day:].sum()),
            }
    return {"drift": variant.monitor["drift"], **summary}


def _float(value: Any) -> float:
    return float(value) if value is not None else float("nan")


def policy_factory(spec: StudySpec, pol, scenario, out: Path) -> Callable[[Any], Any]:
    """A ``simulate`` policy factory for ``pol`` (:func:`fedinv.registry.prepare`)
    from what its preparation unit saved."""
    from fedinv.registry import kind_of, prepare, scenario_layout

    kind = kind_of(pol.policy)
    if kind == "learned":
        import torch

        torch.set_num_threads(1)
        saved = _prepared_record(out, pol.prepared_by)
        if pol.policy == "dqn" and pol.training == "isolated":
            return _isolated_factory(spec, scenario, out, saved)
        layout = scenario_layout(scenario)
        return prepare(pol.policy, scenario, layout, checkpoint=out / saved["checkpoint"]).factory
    if kind == "optimization" or pol.values is not None:
        values: Any = None if pol.values is None else dict(pol.values)
    elif pol.params == "textbook":
        values = None
    else:
        values = _prepared_record(out, pol.prepared_by)["params"]
    return prepare(pol.policy, scenario, scenario_layout(scenario), params=values).factory


def coordination_params(pol, out: Path) -> dict[str, float] | None:
    """A row's Coordination Node parameters (``threshold``, ``reserve``, days of mean
    demand): given in the study, or read from its tuning unit; None without a node."""
    if pol.coordination == "none":
        return None
    if pol.coordination_params is not None:
        return dict(pol.coordination_params)
    return dict(_prepared_record(out, pol.coordinated_by)["params"])


def coordinated(spec: StudySpec, pol, factory: Callable[[Any], Any], out: Path):
    """``factory`` with the row's Coordination Node around it
    (:func:`fedinv.roles.coordination.coordinated_factory`; ``factory`` itself without
    one). The mode applies after it: in hybrid mode the safety layer projects the
    node's transfers with the orders."""
    from fedinv.roles.coordination import BalanceConfig
    from fedinv.roles.signals import node_factory

    params = coordination_params(pol, out)
    if params is None:
        return factory
    config = BalanceConfig(params["threshold"], params["reserve"])
    return node_factory(factory, pol.coordination, config)


def _prepared_record(out: Path, key: str) -> dict[str, Any]:
    """The validated record of the preparation unit ``key`` (``tune/P``, ``train/K``)."""
    kind, name = key.split("/")
    unit = Unit(kind, key, policy=name)
    return read_unit(unit_path(out, unit), unit)


def _isolated_factory(spec: StudySpec, scenario, out: Path, saved) -> Callable[[Any], Any]:
    """Each organization's nodes run by the policy it trained alone."""
    from fedinv.federation.task import isolated_policy, load_global_checkpoint

    cfg = training_config(spec)
    per_org = {
        org: load_global_checkpoint(out / path)[0] for org, path in saved["checkpoints"].items()
    }
    return lambda lay: isolated_policy(scenario, per_org, cfg)


# ------------------------------------------------------------------- disruption events


def event_metrics(daily: pd.DataFrame, scenario, spec: StudySpec) -> dict[str, Any]:
    """Per study event (a window of days): ``recovery_days`` -- days after the window
    until the customers' 7-day trailing fill rate is back within 2 points of its level in
    the 28 days before the window (0 if it never fell below; the days left in the
    horizon, with ``recovered`` False, if it never came back); ``stockouts`` --
    (customer node, day) pairs with unmet demand inside the window; ``cost_per_day`` --
    network cost per day inside the window ($)."""
    if not spec.events:
        return {}
    customers = list(scenario.network.customer_nodes)
    cust = daily[daily["node"].isin(customers)]
    demand = cust.groupby("day")["demand"].sum()
    filled = cust.groupby("day")["filled"].sum()
    cost = daily.groupby("day")["total_cost"].sum()
    unmet = (cust["demand"] - cust["filled"] > 1e-9).groupby(cust["day"]).sum()
    trailing = filled.rolling(RECOVERY_WINDOW, min_periods=1).sum() / demand.rolling(
        RECOVERY_WINDOW, min_periods=1
    ).sum().clip(lower=1e-9)
    horizon = int(daily["day"].max()) + 1
    out: dict[str, Any] = {}
    for e in spec.events:
        last = min(e.last_day, horizon - 1)
        pre = slice(max(e.first_day - PRE_EVENT_DAYS, 0), max(e.first_day - 1, 0))
        level = (
            float(filled.loc[pre].sum() / max(demand.loc[pre].sum(), 1e-9))
            if e.first_day > 0
            else 1.0
        )
        after = trailing.loc[last + 1 :]
        ok = after[after >= level - RECOVERY_TOLERANCE]
        if trailing.loc[e.first_day : last].min() >= level - RECOVERY_TOLERANCE:
            recovery, recovered = 0, True
        elif len(ok):
            recovery, recovered = int(ok.index[0]) - last, True
        else:
            recovery, recovered = horizon - 1 - last, False
        out[e.name] = {
            "recovery_days": recovery,
            "recovered": recovered,
            "stockouts": int(unmet.loc[e.first_day : last].sum()),
            "cost_per_day": float(cost.loc[e.first_day : last].mean()),
            "pre_event_fill_rate": level,
        }
    return out


# ---------------------------------------------------------------------------- training


def _training_text(kind: str) -> str:
    """``hdpo-federated.hybrid`` -> ``HDPO federated, trained through the safety layer``."""
    from studies.budget import learner_of, parse_key

    _, name, mode, _ = parse_key(f"train/{kind}")
    algo, how = learner_of(name)
    text = f"{algo.upper()} {how}"
    return text + (", trained through the safety layer" if mode == "hybrid" else "")


def server_bases(spec: StudySpec, units: list[Unit]) -> dict[str, str]:
    """Federated HDPO trainings whose server would tune exactly what one of the study's
    tuning units tunes -- the learner's base policy on the training scenario, in its
    train mode, per tier, with the study's replications and sweeps over the full horizon
    -- mapped to that unit's key: the server reads the unit's result instead of tuning
    again (:attr:`fedinv.federation.config.FedConfig.server_base`; same inputs, same
    result, so the training is unchanged)."""
    from fedinv.agents.hdpo import base_policy_name
    from studies.budget import learner_of, parse_key

    keys = {u.key for u in units if u.kind == "tune"}
    scenario = training_scenario(spec)
    if spec.days is not None and spec.days != scenario.horizon_days:
        return {}
    base = base_policy_name(scenario)
    out = {}
    for u in units:
        if u.kind != "train":
            continue
        _, name, mode, _ = parse_key(u.key)
        if learner_of(name) != ("hdpo", "federated"):
            continue
        key = f"tune/{base}" + (".hybrid" if mode == "hybrid" else "")
        if key in keys:
            out[u.key] = key
    return out


def train_unit(
    spec: StudySpec,
    unit: Unit,
    out: Path,
    echo: Callable[[str], None] | None = None,
    base: Unit | None = None,
) -> dict[str, Any]:
    """Train the learner of ``unit`` (``[hdpo-]federated|isolated|central[.hybrid]``) on
    the base scenario's training replications, with the same budget for every kind
    (DQN: rounds x local-steps days of a batch of ``replications`` per organization, the
    centralized learner stepping the whole network that many days; HDPO: rounds x
    local-iterations gradient batches). A federated learner's policy is the global round
    with the lowest cost on validation replications over the full horizon, run as it was
    trained (pure or through the layer); HDPO's round 0, its base policy, is a candidate.
    ``simulated_days``: the unit's planned budget (:func:`studies.budget.planned_days`).
    ``base``: a finished tuning unit whose result the federation's server reads as its
    base (:func:`server_bases`)."""
    from studies.budget import learner_of, parse_key, planned_days

    kind = unit.policy
    _, name, mode, _ = parse_key(unit.key)
    algo, training = learner_of(name)
    work = out / "units" / "train" / kind
    work.mkdir(parents=True, exist_ok=True)
    cfg = training_config(spec, algo, mode, training_scenario_path(spec, work))
    scenario = training_scenario(spec)
    if base is not None:
        path = _server_base_file(read_unit(unit_path(out, base), base), work, scenario)
        cfg = dataclasses.replace(cfg, server_base=str(path))
    started = time.perf_counter()
    extra: dict[str, Any] = {}
    if training == "federated":
        curve, checkpoint, extra = _train_federated(cfg, scenario, work, out, echo)
    elif training == "isolated":
        curve, checkpoint = _train_isolated(cfg, scenario, work, out)
    elif training == "central" and algo == "hdpo":
        curve, checkpoint = _train_central_hdpo(cfg, scenario, work, out)
    elif training == "central":
        from fedinv.federation.task import default_reward_scale

        curve, checkpoint = _train_central(cfg, scenario, work, out, default_reward_scale)
    else:
        raise StudyRunError(f"unknown training {kind!r}")
    curve_path = work / "curve.csv"
    curve.to_csv(curve_path, index=False)
    return {
        "kind": kind,
        "algo": algo,
        "train_mode": mode,
        "seconds": time.perf_counter() - started,
        "simulated_days": int(planned_days(spec, unit.key)),
        "curve": str(curve_path.relative_to(out)),
        "config": cfg.to_flat(),
        **extra,
        **checkpoint,
    }


def _server_base_file(payload: dict[str, Any], work: Path, scenario) -> Path:
    """A tuning unit's result as the file the federation's server reads
    (:meth:`fedinv.policies.tuning.TuneResult.to_dict`), in the training's folder."""
    from fedinv.agents.hdpo import base_policy_name
    from fedinv.policies.tuning import TuneResult

    result = TuneResult(
        base_policy_name(scenario),
        payload["params"],
        payload["coords"],
        float(payload["train_cost_per_day"]),
        int(payload["evaluations"]),
        int(payload["train_replications"]),
        scenario.horizon_days,
        mode=payload["mode"],
        per=payload["per"],
    )
    path = work / "server-base.json"
    path.write_text(json.dumps(result.to_dict(), indent=1), encoding="utf-8")
    return path


def _train_federated(cfg, scenario, work: Path, out: Path, echo):
    """A real local Flower federation, then the global round selected on validation."""
    from fedinv.errors import FederationError
    from fedinv.federation.local import run_federation

    try:
        run = run_federation(cfg, work, timeout=3600.0, echo=None, notice=echo)
    except FederationError as exc:
        raise StudyRunError(f"federated training failed: {exc}") from None
    rounds = pd.read_csv(run.rounds_csv)
    curve = pd.DataFrame(
        {
            "x": rounds["round"],
            "x_label": "round",
            "cost_per_day": rounds["global-cost-per-day"],
            "ci95": rounds.get("global-cost-ci95", np.nan),
        }
    )
    candidates = sorted((work / "checkpoints").glob("round-*.pt"))
    if cfg.algo == "hdpo" and candidates and candidates[0].stem != "round-0000":
        candidates.insert(0, _hdpo_start(cfg, scenario, candidates[0]))
    costs = {path: _validation_cost(cfg, scenario, path, cfg.train_mode) for path in candidates}
    best = min(costs, key=lambda p: costs[p])
    selection = {
        "selected_round": int(best.stem.removeprefix("round-")),
        "validation_cost_per_day": {p.stem: float(c) for p, c in costs.items()},
    }
    return curve, {"checkpoint": str(best.relative_to(out))}, selection


def _hdpo_start(cfg, scenario, first: Path) -> Path:
    """The federation's starting point as a checkpoint (``round-0000.pt`` beside
    ``first``): HDPO's global policy before any round is its base policy exactly (the
    networks' last layers start at zero), so it is ``first``'s policy -- same base, same
    input statistics -- with its heads zeroed."""

    import torch

    from fedinv.agents.checkpoints import load_policy, write_hdpo_checkpoint
    from fedinv.federation.config import federated_record
    from fedinv.federation.hdpo_task import hdpo_args
    from fedinv.registry import scenario_layout

    policy = load_policy(first, scenario_layout(scenario), "hdpo")
    with torch.no_grad():
        for net in policy.networks.nets.values():
            net.head.weight.zero_()
            net.head.bias.zero_()
    path = first.with_name("round-0000.pt")
    return write_hdpo_checkpoint(
        path,
        policy,
        scenario=scenario.name,
        args=hdpo_args(cfg, scenario),
        federated=federated_record(cfg, 0),
    )


def _validation_cost(cfg, scenario, checkpoint: Path, mode: str) -> float:
    """Mean cost per day of a checkpoint's policy on the validation replications (from
    :data:`fedinv.agents.dqn.VALIDATION_BASE`, ``cfg.eval_replications`` of them) over
    the full horizon, run in ``mode``."""
    import torch

    from fedinv.agents.dqn import VALIDATION_BASE
    from fedinv.hybrid import for_mode
    from fedinv.registry import prepare, scenario_layout
    from fedinv.sim.run import mean_cost_per_day
    from fedinv.sim.simulator import Simulator

    torch.set_num_threads(1)
    sim = Simulator(scenario)
    policy = prepare(cfg.algo, scenario, sim.layout, checkpoint=checkpoint).factory(sim.layout)
    run = for_mode(
        policy, mode, scenario_layout(scenario), backend="highspy", outages=scenario.outages
    )
    reps = range(VALIDATION_BASE, VALIDATION_BASE + cfg.eval_replications)
    return float(mean_cost_per_day(sim, run, list(reps)).mean())


def _train_central_hdpo(cfg, scenario, work: Path, out: Path):
    """HDPO on the whole network (:func:`fedinv.agents.hdpo.train`) with the federation's
    settings (:func:`fedinv.federation.hdpo_task.hdpo_args`)."""
    from fedinv.agents import hdpo
    from fedinv.agents.checkpoints import write_hdpo_checkpoint
    from fedinv.federation.hdpo_task import hdpo_args

    args = hdpo_args(cfg, scenario)
    result = hdpo.train(args, scenario)
    path = write_hdpo_checkpoint(
        work / "checkpoint.pt",
        result.policy,
        scenario=scenario.name,
        args=args,
        best_iteration=result.best_iteration,
    )
    return _validation_curve(result.curve, "iteration"), {
        "checkpoint": str(path.relative_to(out)),
        "selected_iteration": int(result.best_iteration),
    }


def _train_isolated(cfg, scenario, work: Path, out: Path):
    """Each organization trains alone (no aggregation) on its private data."""
    from fedinv.federation.private_data import export_private_data
    from fedinv.federation.task import (
        LocalTrainer,
        default_reward_scale,
        new_model,
        roles_of,
        save_global_checkpoint,
        to_arrays,
    )

    cfg = dataclasses.replace(cfg, reward_scale=default_reward_scale(scenario, cfg))
    data = work / "data"
    if not data.is_dir() or not any(data.iterdir()):
        shutil.rmtree(data, ignore_errors=True)
        export_private_data(scenario, data)
    roles = roles_of(scenario)
    rows, checkpoints = [], {}
    for org in sorted(p for p in data.iterdir() if (p / "scenario.toml").is_file()):
        path = work / f"{org.name}.pt"
        checkpoints[org.name] = str(path.relative_to(out))
        if path.is_file():
            continue
        weights = to_arrays(new_model(cfg, roles))
        for r in range(1, cfg.rounds + 1):
            weights, _, metrics = LocalTrainer(org, work / "clients", cfg, roles).train_round(
                weights, r
            )
            rows.append(
                {
                    "x": r,
                    "x_label": "round",
                    "organization": org.name,
                    "cost_per_day": metrics.get("local-cost-per-day", np.nan),
                }
            )
        save_global_checkpoint(path, scenario, weights, cfg, cfg.rounds, {})
    curve = pd.DataFrame(rows, columns=["x", "x_label", "organization", "cost_per_day"])
    if len(curve):  # the organizations' local costs summed per round
        curve = curve.groupby(["x", "x_label"], as_index=False)["cost_per_day"].sum()
    return curve, {"checkpoints": checkpoints}


def _train_central(cfg, scenario, work: Path, out: Path, default_reward_scale):
    from fedinv.agents.checkpoints import save_checkpoint
    from fedinv.agents.dqn import train

    cfg = dataclasses.replace(cfg, reward_scale=default_reward_scale(scenario, cfg))
    args = dataclasses.replace(
        cfg.dqn_args(),
        total_steps=cfg.rounds * cfg.local_steps,
        eval_every=max(cfg.local_steps, 1),
        learning_starts=cfg.learning_starts,
        eval_replications=2,
        exploration_fraction=0.5,
    )
    result = train(args, scenario)
    path = save_checkpoint(work / "checkpoint.pt", result)
    return _validation_curve(result.curve, "step"), {"checkpoint": str(path.relative_to(out))}


def _validation_curve(curve: pd.DataFrame, x: str) -> pd.DataFrame:
    """A central learner's validation curve in the study's curve format."""
    return pd.DataFrame(
        {
            "x": curve[x],
            "x_label": x,
            "cost_per_day": curve["validation_cost_per_day"],
            "ci95": curve["validation_ci95"],
        }
    )
