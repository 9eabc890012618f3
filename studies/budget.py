"""Equal budgets: how many simulated replication-days of the whole network each
preparation unit (a tuning or a training) will use at most, counted before it starts.

The rule (docs/studies.md, "Budgets"): training, validation and the tuning of a
residual's base all count; a federated learner counts the sum over organizations of the
replication-days of their local scenarios, plus the server's runs on the whole network.
A unit planned above ``[study] budget_days`` is refused before the study starts
(:func:`check_budgets`). The figures are upper bounds where a search may stop early (the
tuner: :func:`fedinv.policies.tuning.max_evaluations`; a Coordination Node's, on the
study's training replications: :func:`fedinv.roles.coordination.max_balance_evaluations`);
a tuning unit also records the days it really used.
"""

from __future__ import annotations

from typing import Any

from studies.spec import StudyError, StudySpec, training_config

COORDINATION_PREFIX = "coordination-"
"""Tuning units of a Coordination Node: ``tune/coordination-LABEL-SLUG``."""


def parse_key(key: str) -> tuple[str, str, str, str]:
    """``tune/sS.hybrid.node`` -> ``("tune", "sS", "hybrid", "node")``;
    ``train/hdpo-federated.hybrid`` -> ``("train", "hdpo-federated", "hybrid", "")``."""
    kind, _, rest = key.partition("/")
    name, *flags = rest.split(".")
    mode = "hybrid" if "hybrid" in flags else "pure"
    per = "node" if "node" in flags else ("tier" if kind == "tune" else "")
    return kind, name, mode, per


def learner_of(name: str) -> tuple[str, str]:
    """A training unit's name -> (learner, training): ``hdpo-federated`` ->
    ``("hdpo", "federated")``, ``central`` -> ``("dqn", "central")``."""
    algo, _, training = name.rpartition("-")
    return algo or "dqn", training


def planned_days(spec: StudySpec, key: str) -> int:
    """Simulated replication-days the preparation unit ``key`` may use (see module doc)."""
    from fedinv.model.scenario import load_scenario
    from fedinv.policies.tuning import max_evaluations
    from fedinv.registry import scenario_layout

    scenario = load_scenario(spec.scenario)
    days = spec.days or scenario.horizon_days
    kind, name, mode, per = parse_key(key)
    if kind == "tune" and name.startswith(COORDINATION_PREFIX):
        from fedinv.roles.coordination import max_balance_evaluations

        return max_balance_evaluations(spec.tune_sweeps) * spec.train_replications * days
    if kind == "tune":
        evals = max_evaluations(name, scenario_layout(scenario), spec.tune_sweeps, per=per)
        return evals * spec.train_replications * days
    algo, training = learner_of(name)
    cfg = training_config(spec, algo, mode)
    orgs = len(scenario.network.organizations)
    horizon = scenario.horizon_days
    # the runner's selection of a federated round: rounds 1..R (HDPO also its round 0)
    candidates = cfg.rounds + (algo == "hdpo")
    select = candidates * cfg.eval_replications * horizon
    if algo == "dqn":
        steps = cfg.rounds * cfg.local_steps * cfg.replications
        if training == "central":  # validated every local-steps steps, 2 replications
            return steps + cfg.rounds * 2 * horizon
        if training == "isolated":  # no evaluation: each organization's last weights
            return steps * orgs
        evaluation = cfg.rounds * cfg.eval_replications * min(cfg.eval_days, horizon)
        return steps * orgs + evaluation * (orgs + 1) + select  # clients', server's
    return _hdpo_days(spec, cfg, scenario, training, select)


def _hdpo_days(spec: StudySpec, cfg: Any, scenario: Any, training: str, select: int) -> int:
    """HDPO: the base tunings, the gradient batches, validation (see module doc)."""
    from types import SimpleNamespace

    import numpy as np

    from fedinv.agents.hdpo import Args, base_policy_name
    from fedinv.policies.tuning import max_evaluations
    from fedinv.registry import scenario_layout

    horizon = scenario.horizon_days
    batches = cfg.rounds * cfg.local_iterations
    base = base_policy_name(scenario)

    def tuning(layout: Any) -> int:
        evals = max_evaluations(base, layout, cfg.tune_sweeps)
        return evals * cfg.tune_replications * horizon

    whole = tuning(scenario_layout(scenario))
    if training == "central":
        every = Args().eval_every  # validated before training, every N batches, at the end
        validations = 1 + batches // every + (batches % every != 0)
        return (
            whole
            + batches * cfg.replications * horizon
            + validations * cfg.eval_replications * horizon
        )
    per_org = 0
    # each trains on its own nodes, on the server's base (one evaluation) or its own tuning
    for org in scenario.network.organizations:
        nodes = [n for n in scenario.network.nodes if n.organization == org.id]
        own = SimpleNamespace(  # what the tuner's search space reads of a layout
            tier=np.array([n.tier.value for n in nodes]), node_ids=[n.id for n in nodes]
        )
        per_org += (
            (tuning(own) if cfg.client_base == "local" else cfg.tune_replications * horizon)
            + batches * cfg.replications * horizon
            + cfg.rounds * cfg.eval_replications * min(cfg.eval_days, horizon)
        )
    server = whole + cfg.rounds * cfg.eval_replications * min(cfg.eval_days, horizon)
    return per_org + server + select


def check_budgets(spec: StudySpec) -> dict[str, int]:
    """Planned days of every preparation unit; :class:`StudyError` naming the unit, its
    plan and the budget if one exceeds ``budget_days``."""
    plans = {key: planned_days(spec, key) for key in spec.preparations()}
    if spec.budget_days is not None:
        over = {k: v for k, v in plans.items() if v > spec.budget_days}
        if over:
            lines = ", ".join(f"{k} plans {v:,}" for k, v in over.items())
            raise StudyError(
                f"{spec.source or 'study'}: field study.budget_days: every tuning and training "
                f"must fit in {spec.budget_days:,} simulated replication-days, but {lines} "
                "(lower its replications, rounds, sweeps or iterations, or raise the budget)"
            )
    return plans
