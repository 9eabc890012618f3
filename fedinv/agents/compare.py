"""Train a learned ordering policy and compare it with tuned classical policies: what
``fedinv train`` runs (docs/agents.md).

1. Tune each baseline (default: installation base-stock) with :func:`fedinv.policies.tuning.tune`
   on the training replications (from :data:`fedinv.policies.tuning.TRAIN_BASE`).
2. Train the learner -- the DQN (:func:`fedinv.agents.dqn.train`, given
   :class:`fedinv.agents.dqn.Args`) or HDPO (:func:`fedinv.agents.hdpo.train`, given
   :class:`fedinv.agents.hdpo.Args`; its base policy is always among the baselines, and
   their tuning is shared) -- on training replications; its training curve is the
   validation cost per day (replications from :data:`fedinv.agents.dqn.VALIDATION_BASE`)
   against environment steps (DQN) or iterations (HDPO), and the baselines are run on the
   same validation replications (the horizontal lines of the plot).
3. Evaluate the selected policy and the tuned baselines on the held-out replications
   ``0..R-1`` (common random numbers): mean cost per day with a 95% interval, and the
   paired difference learner - baseline (:func:`fedinv.sim.metrics.paired_difference`).

A learner trained for the safety layer (``hdpo.Args.train_mode`` or the DQN's
``EnvConfig.train_mode`` ``= "hybrid"``) is compared like with like: the baselines are
tuned through the layer too, and every policy is validated and evaluated through it
(highspy backend).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedinv.agents import hdpo
from fedinv.agents.checkpoints import save_checkpoint
from fedinv.agents.dqn import VALIDATION_BASE, Args, TrainResult, evaluate, train
from fedinv.hybrid import for_mode
from fedinv.jsonout import num as _num
from fedinv.model.network import Scenario
from fedinv.policies.classical import make_policy
from fedinv.policies.tuning import TuneResult, tune
from fedinv.sim.metrics import paired_difference, summarize
from fedinv.sim.simulator import Simulator

REPORT_FILES = ("checkpoint.pt", "curve.csv", "curve.png", "evaluation.csv", "summary.json")
"""What ``fedinv train --out DIR`` writes."""


@dataclass
class TrainingReport:
    """Training result, tuned baselines and the held-out comparison.

    ``evaluation``: cost per day ($) per held-out replication (index) and policy
    (columns); ``summary``: mean, std, ci95 per policy; ``differences``: per baseline,
    the paired difference learner - baseline (``mean``, ``ci95``, ``percent``)."""

    scenario: Scenario
    result: TrainResult | hdpo.TrainResult
    baselines: dict[str, TuneResult]
    baseline_validation: dict[str, float]
    evaluation: pd.DataFrame
    summary: pd.DataFrame
    differences: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def algo(self) -> str:
        """``dqn`` or ``hdpo``."""
        return "hdpo" if isinstance(self.result, hdpo.TrainResult) else "dqn"

    def payload(self) -> dict[str, Any]:
        """A JSON-ready summary (``summary.json``)."""
        r = self.result
        if isinstance(r, hdpo.TrainResult):
            head: dict[str, Any] = {
                "scenario": self.scenario.name,
                "algo": "hdpo",
                "seed": r.args.seed,
                "iterations": r.args.iterations,
                "replications": r.args.replications,
                "window": r.args.window,
                "base": r.policy.base.policy,
                **r.budget(),
                "best_iteration": r.best_iteration,
            }
        else:
            head = {
                "scenario": self.scenario.name,
                "algo": "dqn",
                "seed": r.args.seed,
                "steps": r.args.total_steps,
                "replications": r.args.replications,
                "simulated_days": int(r.args.total_steps * r.args.replications),
                "best_step": r.best_step,
            }
        return {
            **head,
            "days": self.scenario.horizon_days,
            "test_replications": len(self.evaluation),
            "cost_per_day": {
                p: {
                    "mean": _num(self.summary.at[p, "mean"]),
                    "ci95": _num(self.summary.at[p, "ci95"]),
                }
                for p in self.summary.index
            },
            "difference_vs": {
                p: {k: _num(v) for k, v in d.items()} for p, d in self.differences.items()
            },
            "baselines": {
                p: {
                    "params": t.params,
                    "evaluations": t.evaluations,
                    "simulated_days": t.simulated_days,
                    "train_cost_per_day": _num(t.train_cost_per_day),
                    "validation_cost_per_day": _num(self.baseline_validation[p]),
                }
                for p, t in self.baselines.items()
            },
        }


def train_and_compare(
    scenario: Scenario,
    args: Args | hdpo.Args,
    *,
    baselines: Sequence[str] = ("base-stock",),
    tune_replications: int = 16,
    sweeps: int = 2,
    test_replications: int = 10,
    on_tune: Callable[[str, int, float], None] | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainingReport:
    """Steps 1-3 of the module doc; ``on_tune(policy, evaluations, cost)`` and
    ``on_step(step, stats)`` (an environment step or an HDPO iteration) report progress."""
    days = scenario.horizon_days
    layout = Simulator(scenario, days=2).layout
    algo = "hdpo" if isinstance(args, hdpo.Args) else "dqn"
    mode = args.train_mode if isinstance(args, hdpo.Args) else args.env.train_mode

    def run_in_mode(policy: Any) -> Any:
        """The policy as it runs in ``mode`` (hybrid: through the safety layer)."""
        return for_mode(policy, mode, layout, backend="highspy", outages=scenario.outages)

    if isinstance(args, hdpo.Args):
        base = hdpo.base_policy_name(scenario) if args.base == "auto" else args.base
        baselines = [base, *(b for b in baselines if b != base)]
    tuned: dict[str, TuneResult] = {}
    for name in baselines:

        def progress(evaluations: int, cost: float, name: str = name) -> None:
            if on_tune is not None:
                on_tune(name, evaluations, cost)

        tuned[name] = tune(
            scenario,
            name,
            train_replications=tune_replications,
            days=days,
            sweeps=sweeps,
            progress=progress,
            mode=mode,
        )
    classical = {
        name: run_in_mode(make_policy(name, layout, t.params)) for name, t in tuned.items()
    }
    valid = range(VALIDATION_BASE, VALIDATION_BASE + args.eval_replications)
    validation = {
        name: float(evaluate(p, scenario, valid, args.eval_days).mean())
        for name, p in classical.items()
    }
    if isinstance(args, hdpo.Args):
        result: TrainResult | hdpo.TrainResult = hdpo.train(
            args, scenario, tuned=tuned[baselines[0]], on_iteration=on_step
        )
    else:
        result = train(args, scenario, on_step=on_step)
    test = range(test_replications)
    evaluation = pd.DataFrame(
        {algo: evaluate(run_in_mode(result.policy), scenario, test)}, index=test
    )
    for name, p in classical.items():
        evaluation[name] = evaluate(p, scenario, test)
    evaluation.index.name = "replication"
    summary = summarize(evaluation)
    diffs = {name: paired_difference(evaluation[algo], evaluation[name]) for name in classical}
    return TrainingReport(scenario, result, tuned, validation, evaluation, summary, diffs)


def write_report(report: TrainingReport, out_dir: Path) -> list[Path]:
    """Write :data:`REPORT_FILES` to ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [save_checkpoint(out_dir / "checkpoint.pt", report.result)]
    curve = report.result.curve.copy()
    for name, cost in report.baseline_validation.items():
        curve[f"{name}_validation_cost_per_day"] = cost
    curve.to_csv(out_dir / "curve.csv", index=False)
    paths.append(out_dir / "curve.csv")
    plot_curve(
        report.result.curve,
        report.baseline_validation,
        out_dir / "curve.png",
        f"{report.algo.upper()} on {report.scenario.name}",
    )
    paths.append(out_dir / "curve.png")
    report.evaluation.to_csv(out_dir / "evaluation.csv")
    paths.append(out_dir / "evaluation.csv")
    (out_dir / "summary.json").write_text(
        json.dumps(report.payload(), indent=2, allow_nan=False) + "\n"
    )
    paths.append(out_dir / "summary.json")
    return paths


def plot_curve(curve: pd.DataFrame, baselines: dict[str, float], path: Path, title: str) -> None:
    """Validation cost per day against environment steps (DQN) or iterations (HDPO: a
    ``iteration`` column), with its 95% interval, and a horizontal line per tuned
    baseline; written as PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    hdpo_curve = "iteration" in curve
    x = curve["iteration" if hdpo_curve else "step"].to_numpy()
    y = curve["validation_cost_per_day"].to_numpy()
    ci = curve["validation_ci95"].fillna(0.0).to_numpy()
    label = "HDPO (exact day" if hdpo_curve else "DQN (greedy"
    ax.plot(x, y, marker="o", ms=3, label=f"{label}, validation replications)")
    ax.fill_between(x, y - ci, y + ci, alpha=0.2)
    for i, (name, cost) in enumerate(baselines.items()):
        ax.axhline(cost, color=f"C{i + 1}", ls="--", label=f"tuned {name}: {cost:,.2f}")
    finite = np.concatenate([y[np.isfinite(y)], list(baselines.values())])
    if len(finite):  # early, exploratory policies can cost orders of magnitude more
        low, high = float(np.min(finite)), float(np.median(finite))
        top = max(high, min(baselines.values(), default=high)) * 1.5
        ax.set_ylim(low * 0.9 if low > 0 else low * 1.1 - 1e-9, max(top, low * 1.1 + 1e-9))
    ax.set_xlabel(
        "iterations (fresh training batches over the horizon)"
        if hdpo_curve
        else "environment steps (days of the training batch)"
    )
    ax.set_ylabel("total cost per day ($)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
