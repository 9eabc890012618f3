"""The roles study as a script (docs/roles.md): what the Coordination Node, the Analytics
Monitor and the event-triggered signals are worth on electronics-5r.

``python -m fedinv.bench.roles coordination``: the ordering policy (``--policy``,
tuned on training replications from :data:`fedinv.policies.tuning.TRAIN_BASE` unless
``--textbook``) with and without the Coordination Node, whose threshold and reserve are
tuned on the same training replications; held-out replications ``0..R-1`` of each variant
(:data:`COORDINATION_VARIANTS`) on common random numbers: cost, fill rate, transfers, and
the paired difference with its 95% interval.

``python -m fedinv.bench.roles monitor``: drift detection (see :func:`monitor_study`).

``python -m fedinv.bench.roles signals``: messages per agent-day and the cost gain kept by
signalled coordination against daily sharing (see :func:`signals_study`).

``python -m fedinv.bench.roles confirmations``: the ordering policy's position on
ordered against confirmed units, the Supplier Interface (see :func:`confirmations_study`).

``python -m fedinv.bench.roles learner``: HDPO trained with and without the Supplier
Interface's confirmations as features, and with and without its transfer outputs
(:data:`ARMS`), evaluated on the variants (see :func:`learner_study`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fedinv.agents.envs import EnvConfig
from fedinv.model.network import Scenario

if TYPE_CHECKING:
    from fedinv.policies.tuning import TuneResult

COORDINATION_VARIANTS: dict[str, dict[str, list[dict[str, Any]]]] = {
    "nominal": {},
    "lane-outage": {
        "outages": [
            {"target": "M-NA-MX->D-NA-1", "start_day": 150, "duration_days": 14},
            {"target": "M-EU-PL->D-EU-2", "start_day": 200, "duration_days": 14},
            {"target": "M-APAC-SZ->D-APAC-3", "start_day": 250, "duration_days": 14},
        ]
    },
    "disrupted": {
        "outages": [{"target": "S-CHIP-TW", "start_day": 120, "duration_days": 30}],
        "surges": [{"region": "NA", "multiplier": 1.6, "duration_days": 21, "start_day": 240}],
    },
}
"""electronics-5r and its variants: ``lane-outage`` cuts one distributor's inbound lane
per region for two weeks (its peers are supplied as usual); ``disrupted`` is the
disruption study's chip-supplier outage and North-American surge."""


def variant(base: str, name: str, events: Mapping[str, list[dict[str, Any]]]) -> Scenario:
    """The built-in scenario ``base`` with fixed ``outages`` and ``surges`` added."""
    from fedinv.model.scenario import _builtin_dir, builtin_scenario_text, parse_scenario

    doc = tomllib.loads(builtin_scenario_text(base))
    for key in ("outages", "surges"):
        doc.setdefault(key, []).extend(dict(e) for e in events.get(key, []))
    return parse_scenario(doc, f"builtin:{base} + {name}", Path(str(_builtin_dir())))


def _metrics(sim, policy, reps: Sequence[int], layer: Callable | None = None) -> pd.DataFrame:
    """Per-replication metrics of ``policy`` on ``sim`` (``layer(policy, sim)``: the
    policy as it runs, e.g. behind the safety layer)."""
    from fedinv.sim.metrics import replication_metrics
    from fedinv.sim.run import run_records

    records = run_records(sim, policy if layer is None else layer(policy, sim), reps)
    records.pop("_month")
    frame = replication_metrics(records, sim.layout, sim.scenario.warmup_days)
    frame.index = pd.Index(list(reps), name="replication")
    dist = sim.layout.tier == "distributor"
    frame["distributor_cost_per_day"] = records["total_cost"][:, :, dist].sum(axis=(0, 2)) / len(
        records["total_cost"]
    )
    frame["peer_stock_share"] = peer_stock_share(records, sim.layout)
    warm = sim.scenario.warmup_days
    before = replication_metrics(
        records, sim.layout, warm, max(sim.days - TAIL_DAYS, warm + 2)
    ).set_index(frame.index)
    frame["cost_per_day_before_tail"] = before["total_cost_per_day"]
    frame["fill_rate_before_tail"] = before["fill_rate"]
    return frame


TAIL_DAYS = 60
"""The horizon's last days, where an HDPO policy stops buying what the horizon will not
sell (docs/agents.md, "electronics-5r"): ``cost_per_day_before_tail`` leaves them out
(days 0-304 of electronics-5r's 365)."""


def peer_groups(layout) -> list[np.ndarray]:
    """Node indices of each connected group of lateral links (the same-region peers)."""
    parent = list(range(layout.num_nodes))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for a, b in zip(layout.transfer_src, layout.transfer_dst, strict=True):
        parent[root(int(a))] = root(int(b))
    linked = set(layout.transfer_src.tolist()) | set(layout.transfer_dst.tolist())
    roots = sorted({root(i) for i in linked})
    return [np.array([i for i in sorted(linked) if root(i) == r]) for r in roots]


def peer_stock_share(records: Mapping[str, np.ndarray], layout) -> np.ndarray:
    """Per replication, the share of the peers' unfilled customer demand that other
    peers of the group held on hand at the end of the same day (``min(unfilled,
    peers' on hand)`` summed over groups and days / unfilled): what perfect, free,
    same-day pooling could have filled at most -- the ceiling on what lateral transfers
    can add to the fill rate, as a share of the shortfall."""
    short = np.zeros(records["demand"].shape[1])
    covered = np.zeros_like(short)
    for group in peer_groups(layout):
        unmet = (records["demand"][:, :, group] - records["filled"][:, :, group]).clip(0)
        held = records["on_hand"][:, :, group]
        total = held.sum(axis=2, keepdims=True)
        cover = np.minimum(unmet, total - held)  # stock at the node's peers
        short += unmet.sum(axis=(0, 2))
        covered += np.minimum(cover.sum(axis=2), total[:, :, 0]).sum(axis=0)
    return np.where(short > 0, covered / np.maximum(short, 1e-12), 0.0)


def _paired(a: pd.Series, b: pd.Series) -> dict[str, float]:
    from fedinv.sim.metrics import paired_difference

    return paired_difference(a, b)


def _paired_points(a: pd.Series, b: pd.Series) -> dict[str, float]:
    """:func:`_paired` of two fill rates, mean and interval in points (percent: of ``b``)."""
    return {k: (100 * v if k != "percent" else v) for k, v in _paired(a, b).items()}


def coordination_study(
    policy: str = "sS",
    replications: int = 20,
    train_replications: int = 8,
    tuned: bool = True,
    sweeps: int = 1,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The ordering policy with and without the Coordination Node on each variant."""
    from fedinv.model.scenario import load_scenario
    from fedinv.policies.classical import make_policy
    from fedinv.policies.tuning import TRAIN_BASE, tune
    from fedinv.roles.coordination import BalanceRule, Coordinated, tune_balance
    from fedinv.sim.simulator import Simulator

    base = load_scenario("electronics-5r")
    train = list(range(TRAIN_BASE, TRAIN_BASE + train_replications))
    t0 = time.perf_counter()
    params = None
    if tuned:
        params = tune(base, policy, train_replications=train_replications, sweeps=sweeps).params
        log(f"tuned {policy} in {time.perf_counter() - t0:.0f} s")
    t1 = time.perf_counter()
    balance = tune_balance(base, lambda lay: make_policy(policy, lay, params), train)
    log(
        f"tuned the Coordination Node in {time.perf_counter() - t1:.0f} s "
        f"({balance.evaluations} evaluations): threshold {balance.config.threshold}, "
        f"reserve {balance.config.reserve}"
    )
    out: dict[str, Any] = {
        "policy": policy,
        "ordering_params": "tuned" if tuned else "textbook",
        "threshold": balance.config.threshold,
        "reserve": balance.config.reserve,
        "train_cost_per_day": balance.train_cost_per_day,
        "tuning_evaluations": balance.evaluations,
        "replications": replications,
        "variants": {},
    }
    reps = list(range(replications))
    for name, events in COORDINATION_VARIANTS.items():
        scen = variant("electronics-5r", name, events)
        sim = Simulator(scen)
        alone = make_policy(policy, sim.layout, params)
        with_node = Coordinated(alone, BalanceRule(sim.layout, balance.config))
        a, c = _metrics(sim, alone, reps), _metrics(sim, with_node, reps)
        row = {
            "cost_per_day": [
                float(a.total_cost_per_day.mean()),
                float(c.total_cost_per_day.mean()),
            ],
            "distributor_cost_per_day": [
                float(a.distributor_cost_per_day.mean()),
                float(c.distributor_cost_per_day.mean()),
            ],
            "fill_rate": [float(a.fill_rate.mean()), float(c.fill_rate.mean())],
            "transfer_units_per_day": float(c.transfer_units_per_day.mean()),
            "external_purchase_share_of_cost": float(
                (a.external_purchase_cost_k_per_month * 1000 / (365 / 12)).mean()
                / a.total_cost_per_day.mean()
            ),
            "peer_stock_share": float(a.peer_stock_share.mean()),
            "cost_difference": _paired(c.total_cost_per_day, a.total_cost_per_day),
            "distributor_cost_difference": _paired(
                c.distributor_cost_per_day, a.distributor_cost_per_day
            ),
            "fill_rate_points": _paired_points(c.fill_rate, a.fill_rate),
        }
        out["variants"][name] = row
        d, f = row["cost_difference"], row["fill_rate_points"]
        log(
            f"{name:12s} cost {row['cost_per_day'][0]:,.0f} -> {row['cost_per_day'][1]:,.0f} $/day "
            f"({d['percent']:+.2f}%, {d['mean']:+.0f} ± {d['ci95']:.0f}); fill rate "
            f"{row['fill_rate'][0]:.4f} -> {row['fill_rate'][1]:.4f} ({f['mean']:+.2f} ± "
            f"{f['ci95']:.2f} points); distributors' cost "
            f"{row['distributor_cost_difference']['percent']:+.2f}%; transfers "
            f"{row['transfer_units_per_day']:.1f} units/day; external purchases "
            f"{100 * row['external_purchase_share_of_cost']:.0f}% of the cost; peers held "
            f"stock for {100 * row['peer_stock_share']:.1f}% of the shortfall"
        )
    return out


def confirmations_study(
    policy: str = "sS",
    replications: int = 20,
    params: Mapping[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The ordering ``policy`` (textbook parameters, or ``params``) whose inventory
    position counts what the suppliers ordered from owe (``position = "ordered"``) against
    the same policy counting only what they confirmed (``position = "confirmed"``, the
    Supplier Interface), on each variant (:data:`COORDINATION_VARIANTS`), held-out
    replications ``0..R-1`` on common random numbers: cost, fill rate, the paired
    difference with its 95% interval."""
    from fedinv.policies.classical import make_policy
    from fedinv.sim.simulator import Simulator

    out: dict[str, Any] = {"policy": policy, "replications": replications, "variants": {}}
    reps = list(range(replications))
    for name, events in COORDINATION_VARIANTS.items():
        sim = Simulator(variant("electronics-5r", name, events), confirmations=True)
        ordered = make_policy(policy, sim.layout, dict(params or {}))
        confirmed = make_policy(policy, sim.layout, {**(params or {}), "position": "confirmed"})
        a, c = _metrics(sim, ordered, reps), _metrics(sim, confirmed, reps)
        row = {
            "cost_per_day": [
                float(a.total_cost_per_day.mean()),
                float(c.total_cost_per_day.mean()),
            ],
            "fill_rate": [float(a.fill_rate.mean()), float(c.fill_rate.mean())],
            "cost_difference": _paired(c.total_cost_per_day, a.total_cost_per_day),
            "fill_rate_points": _paired_points(c.fill_rate, a.fill_rate),
        }
        out["variants"][name] = row
        d, f = row["cost_difference"], row["fill_rate_points"]
        log(
            f"{name:12s} cost {row['cost_per_day'][0]:,.0f} -> {row['cost_per_day'][1]:,.0f} $/day "
            f"({d['percent']:+.2f}%, {d['mean']:+.0f} ± {d['ci95']:.0f}); fill rate "
            f"{row['fill_rate'][0]:.4f} -> {row['fill_rate'][1]:.4f} ({f['mean']:+.2f} ± "
            f"{f['ci95']:.2f} points)"
        )
    return out


LEARNER_BUDGET: dict[str, Any] = {
    "iterations": 16,
    "replications": 16,
    "tune_replications": 8,
    "sweeps": 1,
    "eval_replications": 4,
    "eval_every": 4,
}
"""The learner part's :class:`fedinv.agents.hdpo.Args` budget, docs/agents.md's
quick-study-size training: 16 iterations of 16 fresh training replications, the base
tuned on 8 training replications with one sweep, 4 validation replications every 4
iterations."""

ARMS: dict[str, dict[str, Any]] = {
    "none": {},
    "confirmations": {"env": EnvConfig(confirmations=True)},
    "transfers": {"transfers": True},
}
"""The learner part's arms: name -> :class:`fedinv.agents.hdpo.Args` fields over
:data:`LEARNER_BUDGET` (what the arm adds to the learner); ``none``, the learner as it
is, is the reference of every paired difference."""


def learner_study(
    seeds: Sequence[int] = (1,),
    replications: int = 10,
    iterations: int | None = None,
    train_mode: str = "pure",
    arms: Sequence[str] | None = None,
    budget: Mapping[str, Any] | None = None,
    tuned: TuneResult | None = None,
    variants: Mapping[str, Mapping[str, list[dict[str, Any]]]] = COORDINATION_VARIANTS,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """HDPO (:func:`fedinv.agents.hdpo.train`, central) trained on electronics-5r once per
    arm of :data:`ARMS` (``arms``: their names, default all; ``none`` always included)
    and seed, every run with the same budget (:data:`LEARNER_BUDGET`, ``budget``'s fields
    over it, ``iterations`` over both) and the same tuned base: (s,S) tuned once in
    ``train_mode`` (or ``tuned``, such a :class:`fedinv.policies.tuning.TuneResult`), so
    that the arms differ in what they add alone. Every trained policy and the tuned
    base run exactly (numpy; through the safety layer in ``hybrid`` mode) on held-out
    replications ``0..R-1`` of each of ``variants`` with the Supplier Interface on
    (``Simulator(..., confirmations=True)``), common random numbers: cost per day ($),
    fill rate, cost per day before the last :data:`TAIL_DAYS` days, and the paired
    differences (95% intervals) of each run with the ``none`` arm of its seed and with
    the base; with several seeds also each arm's mean over its seeds, paired by
    replication (that interval counts the replications' spread, not the seeds'), and
    paired by seed (``vs_none_across_seeds``: one difference of means per seed, the
    seeds' spread)."""
    from fedinv.agents import hdpo
    from fedinv.model.scenario import load_scenario
    from fedinv.policies.classical import make_policy
    from fedinv.policies.tuning import tune
    from fedinv.sim.simulator import Simulator

    names = ["none"] + [a for a in (arms or ARMS) if a != "none"]
    unknown = sorted(set(names) - set(ARMS))
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown}; the arms are {', '.join(ARMS)}")
    settings = {**LEARNER_BUDGET, **dict(budget or {})}
    if iterations is not None:
        settings["iterations"] = int(iterations)
    scenario = load_scenario("electronics-5r")
    probe = hdpo.Args(scenario="electronics-5r", train_mode=train_mode, **settings)
    t0 = time.perf_counter()
    if tuned is None:
        tuned = tune(
            scenario,
            hdpo.base_policy_name(scenario),
            train_replications=probe.tune_replications,
            days=scenario.horizon_days,
            sweeps=probe.sweeps,
            mode=train_mode,
        )
        log(
            f"tuned {tuned.policy} ({train_mode}) in {time.perf_counter() - t0:.0f} s, "
            f"{tuned.evaluations} evaluations: {tuned.train_cost_per_day:,.0f} $/day on "
            f"{tuned.train_replications} training replications"
        )
    out: dict[str, Any] = {
        "scenario": "electronics-5r",
        "train_mode": train_mode,
        "seeds": [int(s) for s in seeds],
        "replications": replications,
        "budget": settings,
        "arms": {a: {k: _jsonable(v) for k, v in ARMS[a].items()} for a in names},
        "base": {"policy": tuned.policy, **tuned.to_dict()},
        "training": {},
        "variants": {},
    }
    trained = {}
    for arm in names:
        for seed in seeds:
            fields = {**settings, **ARMS[arm]}
            args = hdpo.Args(scenario="electronics-5r", seed=seed, train_mode=train_mode, **fields)
            result = hdpo.train(args, scenario, tuned=tuned)
            if result.tuned is not tuned:  # hdpo.train retunes a base it cannot use
                raise RuntimeError(f"arm {arm}: hdpo.train did not keep the shared tuned base")
            label = f"{arm} seed {seed}"
            trained[label] = (arm, seed, result.policy)
            curve = result.curve
            out["training"][label] = {
                "best_iteration": int(result.best_iteration),
                "validation_cost_per_day": curve.validation_cost_per_day.tolist(),
                "validation_iterations": curve.iteration.tolist(),
                **result.budget(),
            }
            log(
                f"trained {label}: {result.wall_s:.0f} s, validation "
                + ", ".join(f"{c:,.0f}" for c in curve.validation_cost_per_day)
                + f" $/day; selected iteration {result.best_iteration}"
            )
    reps = list(range(replications))
    for name, events in variants.items():
        sim = Simulator(variant("electronics-5r", name, events), confirmations=True)

        layer = hdpo.through_layer if train_mode == "hybrid" else None
        base = _metrics(sim, make_policy(tuned.policy, sim.layout, tuned.params), reps, layer)
        frames: dict[str, pd.DataFrame] = {}
        withheld: dict[str, pd.DataFrame] = {}
        for label, (_, _, p) in trained.items():
            pol = hdpo.HDPOPolicy(
                sim.layout,
                p.networks,
                p.base,
                p.config,
                p.share,
                p.max_change,
                p.proposes_transfers,
            )
            frames[label] = _metrics(sim, pol, reps, layer)
            if p.proposes_transfers:  # the same weights, its transfers withheld
                pol.proposes_transfers = False
                withheld[label] = _metrics(sim, pol, reps, layer)
        runs = {
            label: {"arm": arm, "seed": seed}
            | _learner_row(frames[label], frames[f"none seed {seed}"], base)
            for label, (arm, seed, _) in trained.items()
        }
        for label, off in withheld.items():  # what its own transfers are worth to it
            runs[label]["vs_transfers_withheld"] = _paired(
                frames[label].total_cost_per_day, off.total_cost_per_day
            )
            runs[label]["fill_vs_transfers_withheld_points"] = _paired_points(
                frames[label].fill_rate, off.fill_rate
            )
        pooled = {}
        if len(seeds) > 1:
            means = {
                arm: pd.concat([frames[f"{arm} seed {s}"] for s in seeds]).groupby(level=0).mean()
                for arm in names
            }
            pooled = {arm: _learner_row(means[arm], means["none"], base) for arm in names}
            cols = ["total_cost_per_day", "fill_rate"]
            per_seed = {  # one row per seed: the seeds' spread, one paired difference each
                arm: pd.DataFrame({s: frames[f"{arm} seed {s}"][cols].mean() for s in seeds}).T
                for arm in names
            }
            for arm in names:
                a, n = per_seed[arm], per_seed["none"]
                pooled[arm]["vs_none_across_seeds"] = _paired(
                    a.total_cost_per_day, n.total_cost_per_day
                )
                pooled[arm]["fill_vs_none_across_seeds_points"] = _paired_points(
                    a.fill_rate, n.fill_rate
                )
        row = {
            "base": _learner_row(base, None, None),
            "runs": runs,
            "mean_over_seeds": pooled,
            "cost_per_replication": {"base": base.total_cost_per_day.tolist()}
            | {label: f.total_cost_per_day.tolist() for label, f in frames.items()},
        }
        out["variants"][name] = row
        b = row["base"]
        log(
            f"{name:12s} base {tuned.policy}: {b['cost_per_day']:,.0f} ± {b['ci95']:,.0f} $/day, "
            f"fill rate {b['fill_rate']:.4f}, before the last {TAIL_DAYS} days "
            f"{b['cost_per_day_before_tail']:,.0f}, fill rate {b['fill_rate_before_tail']:.4f}"
        )
        for label, r in list(runs.items()) + [(f"{a} (seeds)", r) for a, r in pooled.items()]:
            d, f, e, v = (
                r["vs_none"],
                r["fill_vs_none_points"],
                r["before_tail_vs_none"],
                r["vs_base"],
            )
            log(
                f"{name:12s} {label:24s} {r['cost_per_day']:,.0f} $/day (- none {d['mean']:+.0f} "
                f"± {d['ci95']:.0f}; - base {v['mean']:+.0f} ± {v['ci95']:.0f}), fill rate "
                f"{r['fill_rate']:.4f} ({f['mean']:+.2f} ± {f['ci95']:.2f} points), before "
                f"the last {TAIL_DAYS} days {r['cost_per_day_before_tail']:,.0f} "
                f"({e['mean']:+.0f} ± {e['ci95']:.0f}), fill rate {r['fill_rate_before_tail']:.4f}"
                + (
                    f"; across seeds - none {r['vs_none_across_seeds']['mean']:+.0f} ± "
                    f"{r['vs_none_across_seeds']['ci95']:.0f} $/day, fill "
                    f"{r['fill_vs_none_across_seeds_points']['mean']:+.2f} ± "
                    f"{r['fill_vs_none_across_seeds_points']['ci95']:.2f} points"
                    if "vs_none_across_seeds" in r
                    else ""
                )
                + (
                    f"; {r['transfer_units_per_day']:.1f} transfer units/day, - its transfers "
                    f"withheld {r['vs_transfers_withheld']['mean']:+.0f} ± "
                    f"{r['vs_transfers_withheld']['ci95']:.0f} $/day, fill "
                    f"{r['fill_vs_transfers_withheld_points']['mean']:+.2f} ± "
                    f"{r['fill_vs_transfers_withheld_points']['ci95']:.2f} points"
                    if "vs_transfers_withheld" in r
                    else ""
                )
            )
    return out


def _learner_row(
    frame: pd.DataFrame, none: pd.DataFrame | None, base: pd.DataFrame | None
) -> dict[str, Any]:
    """Means of one run's per-replication ``frame`` (:func:`_metrics`) and its paired
    differences with the ``none`` arm's and the base's frames (where given)."""
    from fedinv.sim.metrics import summarize

    cost = frame.total_cost_per_day
    row: dict[str, Any] = {
        "cost_per_day": float(cost.mean()),
        "ci95": float(summarize(frame[["total_cost_per_day"]]).loc["total_cost_per_day", "ci95"]),
        "fill_rate": float(frame.fill_rate.mean()),
        "cost_per_day_before_tail": float(frame.cost_per_day_before_tail.mean()),
        "fill_rate_before_tail": float(frame.fill_rate_before_tail.mean()),
        "transfer_units_per_day": float(
            frame.get("transfer_units_per_day", pd.Series([0.0])).mean()
        ),
    }
    if none is not None:
        row["vs_none"] = _paired(cost, none.total_cost_per_day)
        row["fill_vs_none_points"] = _paired_points(frame.fill_rate, none.fill_rate)
        row["before_tail_vs_none"] = _paired(
            frame.cost_per_day_before_tail, none.cost_per_day_before_tail
        )
    if base is not None:
        row["vs_base"] = _paired(cost, base.total_cost_per_day)
        row["fill_vs_base_points"] = _paired_points(frame.fill_rate, base.fill_rate)
        row["before_tail_vs_base"] = _paired(
            frame.cost_per_day_before_tail, base.cost_per_day_before_tail
        )
    return row


def _jsonable(value: Any) -> Any:
    """An :data:`ARMS` override as JSON: a dataclass (``EnvConfig``) as its fields."""
    import dataclasses

    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def signals_study(
    policy: str = "sS",
    replications: int = 20,
    train_replications: int = 8,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The textbook ``policy`` alone, with the daily-sharing Coordination Node and with
    the signalled one (:class:`fedinv.roles.signals.SignalledCoordination`), the rule's
    threshold and reserve tuned for the daily node on training replications; held-out
    replications of ``nominal`` and ``lane-outage`` on common random numbers: cost, fill
    rate, messages per agent-day (agents: every node), and the share of the daily node's
    cost gain the signalled node keeps."""
    from fedinv.policies.classical import make_policy
    from fedinv.policies.tuning import TRAIN_BASE
    from fedinv.roles.coordination import BalanceRule, Coordinated, tune_balance
    from fedinv.roles.signals import SignalledCoordination
    from fedinv.sim.simulator import Simulator

    base = variant("electronics-5r", "nominal", {})
    train = list(range(TRAIN_BASE, TRAIN_BASE + train_replications))
    tuned = tune_balance(base, lambda lay: make_policy(policy, lay), train)
    cfg = tuned.config
    log(f"tuned the Coordination Node: threshold {cfg.threshold}, reserve {cfg.reserve}")
    out: dict[str, Any] = {"policy": policy, "threshold": cfg.threshold, "reserve": cfg.reserve}
    reps = list(range(replications))
    for name in ("nominal", "lane-outage"):
        sim = Simulator(variant("electronics-5r", name, COORDINATION_VARIANTS[name]))
        alone = make_policy(policy, sim.layout)
        runs = {
            "none": alone,
            "daily": Coordinated(alone, BalanceRule(sim.layout, cfg)),
            "signals": SignalledCoordination(alone, BalanceRule(sim.layout, cfg)),
        }
        rows = {}
        for label, pol in runs.items():
            from fedinv.sim.metrics import replication_metrics
            from fedinv.sim.run import run_records

            rec = run_records(sim, pol, reps)
            rec.pop("_month")
            m = replication_metrics(rec, sim.layout)
            msgs = rec.get("info.messages")
            per_agent_day = (
                0.0 if msgs is None else float(msgs.sum() / msgs.size / sim.layout.num_nodes)
            )
            rows[label] = (m.total_cost_per_day, m.fill_rate, per_agent_day)
        gain_daily = rows["none"][0] - rows["daily"][0]
        gain_signal = rows["none"][0] - rows["signals"][0]
        kept = float(gain_signal.mean() / gain_daily.mean()) if gain_daily.mean() else float("nan")
        res = {
            label: {
                "cost_per_day": float(c.mean()),
                "fill_rate": float(f.mean()),
                "messages_per_agent_day": mpd,
            }
            for label, (c, f, mpd) in rows.items()
        }
        res["daily_gain"] = _paired(rows["none"][0], rows["daily"][0])
        res["signals_gain"] = _paired(rows["none"][0], rows["signals"][0])
        res["gain_kept"] = kept
        out[name] = res
        log(
            f"{name:12s} cost none {res['none']['cost_per_day']:,.0f}, daily "
            f"{res['daily']['cost_per_day']:,.0f} ({res['daily']['messages_per_agent_day']:.3f} "
            f"messages/agent-day), signals {res['signals']['cost_per_day']:,.0f} "
            f"({res['signals']['messages_per_agent_day']:.4f}); gain daily "
            f"{res['daily_gain']['mean']:+.0f} ± {res['daily_gain']['ci95']:.0f}, signals "
            f"{res['signals_gain']['mean']:+.0f} ± {res['signals_gain']['ci95']:.0f} $/day; "
            f"fill rate {res['none']['fill_rate']:.4f} / {res['daily']['fill_rate']:.4f} / "
            f"{res['signals']['fill_rate']:.4f}"
        )
    return out


SHIFT_DAY = 150
"""The day a planted drift starts (mid-year, before the autumn peak)."""
LEAD_LANES = ("S-DISP-KR->M-APAC-SZ", "S-CHIP-US->M-NA-MX", "M-EU-PL->D-EU-1")
"""Lanes whose lead time doubles in the lead-time drift variant (one per tier pair)."""


def plant_demand_shift(exo, day: int, factor: float = 0.3) -> None:
    """From ``day`` on, every customer node's demand mean rises by ``factor``: each
    day's draw plus a Poisson draw of mean ``factor x`` the day's mean (a generator per
    replication, seeded by its index)."""
    for b, rep in enumerate(exo.replications):
        rng = np.random.default_rng([int(rep), 16])
        extra = rng.poisson(factor * exo.demand_mean[b, day:])
        exo.demand[b, day:] += extra


def plant_lead_doubling(exo, layout, lanes: Sequence[str], day: int) -> list[int]:
    """From ``day`` on, shipments on ``lanes`` take twice their drawn lead time (extra
    delays added as before); returns the lane indices."""
    idx = [layout.lane_ids.index(lane) for lane in lanes]
    limit = layout.max_lead
    for m in idx:
        base = exo.lead[:, day:, m] - exo.extra_delay[:, day:, m]
        exo.lead[:, day:, m] = np.minimum(2 * base + exo.extra_delay[:, day:, m], limit)
    return idx


def doubled_law(pmf: np.ndarray) -> np.ndarray:
    """The law :func:`plant_lead_doubling` plants, ``P(2l) = P(l)`` (``pmf`` by days)."""
    out = np.zeros(2 * len(pmf) - 1)
    out[::2] = pmf
    return out


def monitor_study(
    policy: str = "sS",
    replications: int = 10,
    config=None,
    log: Callable[[str], None] = print,
    first: int = 0,
) -> dict[str, Any]:
    """Drift detection on electronics-5r without its random surges (the stationary
    network), replications ``first .. first + replications - 1``: false alerts per
    organization-year on the unchanged run; a 30% demand-mean shift of every customer
    node from :data:`SHIFT_DAY` (detected if that node's ``demand_up`` alert comes
    within 14 days); lead times doubled on :data:`LEAD_LANES` from :data:`SHIFT_DAY`
    (detected if that lane's alert comes within its expected lead time + 7 days; beside
    it, what the shipments allow: in how many replications the log-likelihood ratio of
    the planted law (:func:`doubled_law`) against the lane's own, of the shipments
    shipped from the change day on, reaches ``lead_h`` by that budget -- a test told the
    change day and the true law). Textbook ``policy``."""
    from fedinv.model.scenario import load_scenario
    from fedinv.policies.classical import make_policy
    from fedinv.roles.monitor import MonitorConfig, lead_llr, watch
    from fedinv.sim.simulator import Simulator

    cfg = config or MonitorConfig()
    scen = replace_surges(load_scenario("electronics-5r"))
    sim = Simulator(scen)
    lay = sim.layout
    reps = list(range(first, first + replications))
    pol = make_policy(policy, lay)
    org_years = replications * len(lay.org_ids) * sim.days / 365.0
    out: dict[str, Any] = {
        "policy": policy,
        "replications": replications,
        "first": first,
        "config": vars(cfg),
    }

    base = watch(sim, pol, reps, cfg)
    retrain = base.alerts[base.alerts.kind == "retrain"]
    per_org = retrain.groupby("organization").size().reindex(lay.org_ids, fill_value=0)
    out["false_alerts_per_org_year"] = float(len(retrain) / org_years)
    out["false_alerts_per_org_year_by_org"] = {
        k: float(v / (replications * sim.days / 365.0)) for k, v in per_org.items()
    }
    out["false_alerts_by_metric"] = retrain.groupby("metric").size().to_dict()
    out["policy_degraded_alerts"] = int((base.alerts.kind == "policy_degraded").sum())
    log(
        f"no drift: {len(retrain)} retrain alerts over {org_years:.0f} organization-years = "
        f"{out['false_alerts_per_org_year']:.2f} per organization-year "
        f"({out['false_alerts_by_metric']}); by organization "
        + ", ".join(f"{k} {v:.2f}" for k, v in out["false_alerts_per_org_year_by_org"].items())
    )

    _, exo = sim.reset(reps)
    plant_demand_shift(exo, SHIFT_DAY)
    shifted = watch(sim, pol, reps, cfg, exogenous=exo, plan_scenario=scen)
    a = shifted.alerts
    after = a[a.day >= SHIFT_DAY]
    cust = [lay.node_ids[i] for i in np.flatnonzero(lay.customer)]
    node_first = after[after.metric == "demand_up"].groupby(["node", "replication"]).day.min()
    delays = {n: [float(node_first.get((n, r), np.inf)) - SHIFT_DAY for r in reps] for n in cust}
    hits = {n: int(sum(d <= 14 for d in v)) for n, v in delays.items()}
    sellers = [o for i, o in enumerate(lay.org_ids) if (lay.customer & (lay.node_org == i)).any()]
    org_first = after[after.metric == "org_demand_up"].groupby(["organization", "replication"])
    org_first = org_first.day.min()
    org_delays = {
        o: [float(org_first.get((o, r), np.inf)) - SHIFT_DAY for r in reps] for o in sellers
    }
    org_hits = {o: int(sum(d <= 14 for d in v)) for o, v in org_delays.items()}
    out["demand_shift"] = {
        "organization_detected_within_14_days": org_hits,
        "organization_median_delay_days": float(
            np.median([d for v in org_delays.values() for d in v])
        ),
        "node_detected_within_14_days": hits,
        "node_median_delay_days": float(np.median([d for v in delays.values() for d in v])),
        "false_before_shift": int(((a.kind == "retrain") & (a.day < SHIFT_DAY)).sum()),
    }
    log(
        f"demand +30% from day {SHIFT_DAY}: each organization's total detected within 14 days "
        f"in {min(org_hits.values())}-{max(org_hits.values())} of {replications} replications "
        f"(median delay {out['demand_shift']['organization_median_delay_days']:.0f} days); "
        f"per node {min(hits.values())}-{max(hits.values())} of {replications} (median "
        f"{out['demand_shift']['node_median_delay_days']:.0f} days)"
    )

    _, exo = sim.reset(reps)
    lanes = plant_lead_doubling(exo, lay, LEAD_LANES, SHIFT_DAY)
    slow = watch(sim, pol, reps, cfg, exogenous=exo, plan_scenario=scen)
    a = slow.alerts
    since = slow.shipped.copy()
    since[:SHIFT_DAY] = 0.0  # the shipments a test told the change day would weigh
    told = lead_llr(since, exo, lay, floor=cfg.lead_floor, alternative=doubled_law)
    told = np.cumsum(told[SHIFT_DAY:], axis=0) >= cfg.lead_h
    res = {}
    for name, m in zip(LEAD_LANES, lanes, strict=True):
        expected = lay.network.lanes[m].lead_time.mean_days
        hit = a[(a.metric == "lead_time") & (a.lane == name) & (a.day >= SHIFT_DAY)]
        first_day = hit.groupby("replication").day.min() - SHIFT_DAY
        d = [float(first_day.get(r, np.inf)) for r in reps]
        told_d = [
            float(np.argmax(told[:, b, m])) if told[:, b, m].any() else np.inf
            for b in range(len(reps))
        ]
        res[name] = {
            "expected_lead_days": expected,
            "budget_days": expected + 7,
            "detected": int(sum(x <= expected + 7 for x in d)),
            "median_delay_days": float(np.median(d)),
            "informative_by_budget": int(sum(x <= expected + 7 for x in told_d)),
        }
        log(
            f"lead time x2 on {name} (E[L] {expected:.1f} days): detected within E[L] + 7 in "
            f"{res[name]['detected']} of {replications} (median delay "
            f"{res[name]['median_delay_days']:.0f} days); the planted law's likelihood "
            f"ratio reached e^h by then in {res[name]['informative_by_budget']}"
        )
    out["lead_doubling"] = res
    return out


def replace_surges(scenario: Scenario) -> Scenario:
    """``scenario`` without its demand surges (the stationary network for false alerts)."""
    from dataclasses import replace

    return replace(scenario, surges=())


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of the script (module doc)."""
    parser = argparse.ArgumentParser(prog="python -m fedinv.bench.roles", description=__doc__)
    sub = parser.add_subparsers(dest="part", required=True)
    p = sub.add_parser("coordination", help="the Coordination Node's value")
    p.add_argument("--policy", default="sS")
    p.add_argument("--replications", type=int, default=20)
    p.add_argument("--train-replications", type=int, default=8)
    p.add_argument("--textbook", action="store_true", help="textbook ordering parameters")
    p.add_argument("--json", type=Path, help="write the results to this file")
    p = sub.add_parser("monitor", help="the Analytics Monitor's detection and false alerts")
    p.add_argument("--policy", default="sS")
    p.add_argument("--replications", type=int, default=10)
    p.add_argument(
        "--first", type=int, default=0, help="first replication (e.g. 100: not those tuned on)"
    )
    p.add_argument("--json", type=Path, help="write the results to this file")
    p = sub.add_parser("confirmations", help="positions on confirmed against ordered units")
    p.add_argument("--policy", default="sS")
    p.add_argument("--replications", type=int, default=20)
    p.add_argument("--json", type=Path, help="write the results to this file")
    p = sub.add_parser(
        "learner", help="HDPO with and without each arm (confirmation features, transfers)"
    )
    p.add_argument("--seeds", default="1", help="training seeds, comma-separated (default 1)")
    p.add_argument("--replications", type=int, default=10, help="held-out replications")
    p.add_argument(
        "--iterations", type=int, help=f"training batches (default {LEARNER_BUDGET['iterations']})"
    )
    p.add_argument("--train-mode", choices=("pure", "hybrid"), default="pure")
    p.add_argument("--arms", help=f"comma-separated, of {', '.join(ARMS)} (default all)")
    p.add_argument("--json", type=Path, help="write the results to this file")
    p = sub.add_parser("signals", help="messages per agent-day and the gain they keep")
    p.add_argument("--policy", default="sS")
    p.add_argument("--replications", type=int, default=20)
    p.add_argument("--json", type=Path, help="write the results to this file")
    args = parser.parse_args(argv)
    if args.part == "confirmations":
        result = confirmations_study(args.policy, args.replications)
    elif args.part == "learner":
        result = learner_study(
            [int(s) for s in args.seeds.split(",")],
            args.replications,
            args.iterations,
            args.train_mode,
            None if args.arms is None else [a.strip() for a in args.arms.split(",")],
        )
    elif args.part == "signals":
        result = signals_study(args.policy, args.replications)
    elif args.part == "monitor":
        result = monitor_study(args.policy, args.replications, first=args.first)
    elif args.part == "coordination":
        result = coordination_study(
            args.policy, args.replications, args.train_replications, tuned=not args.textbook
        )
    else:  # pragma: no cover - argparse refuses other parts
        return 2
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
