"""Every policy by name, in one place: which kind it is and how it is built.

Three kinds (docs/cli.md, docs/studies.md):

* **classical** (:data:`fedinv.policies.classical.POLICY_NAMES`) -- built from per-node
  parameters: the ones given over the textbook defaults (:func:`resolve_params`);
* **optimization** (:data:`fedinv.hybrid.OPTIMIZATION_POLICIES`, ``rolling-lp``,
  ``rolling-sp``) --
  built from the scenario and options, through the gateway to ``solvers``;
* **learned** (:data:`LEARNED_POLICIES`, ``dqn``, ``hdpo``) -- loaded from a checkpoint
  file.

:func:`prepare` checks the inputs once (before any simulation) and returns a
:class:`PreparedPolicy` whose ``factory(layout)`` builds the policy; ``fedinv simulate``
and the study runner both use it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedinv.errors import InputError
from fedinv.hybrid import OPTIMIZATION_POLICIES
from fedinv.policies.classical import POLICY_NAMES

if TYPE_CHECKING:
    from fedinv.model.layout import Layout
    from fedinv.model.network import Scenario

CLASSICAL = POLICY_NAMES
"""Classical policies (per-node parameters)."""
OPTIMIZATION = OPTIMIZATION_POLICIES
"""Optimization baselines (options)."""
LEARNED_POLICIES = ("dqn", "hdpo")
"""Learned policies (a checkpoint file)."""
KINDS: dict[str, tuple[str, ...]] = {
    "classical": CLASSICAL,
    "optimization": OPTIMIZATION,
    "learned": LEARNED_POLICIES,
}
ALL_POLICIES = (*CLASSICAL, *LEARNED_POLICIES, *OPTIMIZATION)
"""Every policy name, in the order the command line lists them."""


def kind_of(policy: str) -> str:
    """``classical``, ``optimization`` or ``learned`` (:class:`InputError` if unknown)."""
    for kind, names in KINDS.items():
        if policy in names:
            return kind
    raise InputError(f"unknown policy {policy!r}; choose one of {', '.join(ALL_POLICIES)}")


@dataclass(frozen=True)
class PreparedPolicy:
    """A policy checked against a scenario, ready to build per layout."""

    policy: str
    kind: str
    factory: Callable[[Layout], Any]
    """Layout -> a policy with ``act(state) -> Decision``."""
    params: dict[str, Any] = field(default_factory=dict)
    """Classical: every node's parameters actually used (else empty)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Optimization: the options given (else empty)."""
    checkpoint: Path | None = None
    """Learned: the checkpoint file."""


def scenario_layout(scenario: Scenario) -> Layout:
    """The layout the simulator compiles for ``scenario``."""
    from fedinv.sim.simulator import Simulator

    return Simulator(scenario, days=2).layout


def prepare(
    policy: str,
    scenario: Scenario,
    layout: Layout,
    *,
    params: Mapping[str, Any] | None = None,
    checkpoint: str | Path | None = None,
    where: str | None = None,
) -> PreparedPolicy:
    """Check and prepare ``policy`` on ``scenario``: ``params`` are a classical policy's
    parameters (over the textbook ones) or an optimization policy's options;
    ``checkpoint`` a learned policy's file. ``where`` names the input in error messages
    (default ``options of POLICY``)."""
    kind = kind_of(policy)
    if kind == "learned":
        if checkpoint is None:
            raise InputError(f"policy {policy!r} needs a checkpoint file")
        from fedinv.agents.checkpoints import load_checkpoint, policy_from_checkpoint

        path = Path(checkpoint)
        data = load_checkpoint(path, policy)
        policy_from_checkpoint(data, layout, path)  # fail early, before simulating
        return PreparedPolicy(
            policy,
            kind,
            lambda lay: policy_from_checkpoint(data, lay, path),
            checkpoint=path,
        )
    if kind == "optimization":
        from fedinv.hybrid import make_optimization_policy

        options = dict(params or {})
        try:  # check the options now, before simulating
            make_optimization_policy(policy, scenario, layout, options)
        except TypeError as exc:
            raise InputError(f"{where or f'options of {policy}'}: {exc}") from None
        return PreparedPolicy(
            policy,
            kind,
            lambda lay: make_optimization_policy(policy, scenario, lay, options),
            options=options,
        )
    from fedinv.policies.classical import make_policy

    resolved = resolve_params(policy, layout, params)
    return PreparedPolicy(
        policy, kind, lambda lay: make_policy(policy, lay, resolved), params=resolved
    )


def resolve_params(
    policy: str, layout: Layout, given: Mapping[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """Every node's parameters of a classical ``policy``: ``given`` over the textbook
    defaults (a component table of an assembling node merged item by item), checked by
    building the policy (:class:`InputError` naming the parameter or node at fault)."""
    from fedinv.policies.classical import default_params, make_policy

    defaults = default_params(policy, layout)
    given = dict(given or {})
    position = given.pop("position", None)  # an option, not a node table
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise InputError(
            f"unknown parameter(s) {', '.join(map(repr, unknown))} for policy "
            f"{policy!r}; expected {', '.join(map(repr, defaults))} (and the option "
            "'position')"
        )
    order = {n: i for i, n in enumerate(layout.node_ids)}  # report nodes in file order
    merged = {
        k: dict(sorted(v.items(), key=lambda kv: order.get(kv[0], len(order))))
        for k, v in defaults.items()
    }
    for key, values in given.items():
        if not isinstance(values, dict):
            raise InputError(
                f"parameter {key!r} must map node ids to numbers, e.g. "
                f'{{"{key}": {{"{layout.node_ids[0]}": 10}}}}, got {values!r}'
            )
        for node, value in values.items():
            if node not in merged[key]:
                raise InputError(
                    f"unknown node {node!r} in parameter {key!r} (known nodes: "
                    f"{', '.join(layout.node_ids)})"
                )
            old = merged[key][node]
            merged[key][node] = (
                {**old, **value} if isinstance(old, dict) and isinstance(value, dict) else value
            )
    if position is not None:  # "ordered" or "confirmed" (docs/model.md, "Confirmations")
        merged["position"] = position
    try:
        make_policy(policy, layout, merged)  # the policy's own checks (numbers, components)
    except ValueError as exc:
        if position is None or "'position'" not in str(exc):
            raise
        raise InputError(str(exc)) from None
    return merged
