"""HDPO: pathwise policy gradients through the differentiable day, in one module read top
to bottom (docs/agents.md, "HDPO").

Hindsight differentiable policy optimization (Alvo, Russo & Kanoria, arXiv 2306.11246):
every random number of a replication is drawn up front (:mod:`fedinv.sim.exogenous`), so
its cost is a deterministic function of the orders the policy releases, and the day is
written once against an array namespace (:mod:`fedinv.sim.ops`) whose torch face carries
autograd through every step. The gradient of the mean cost per day with respect to the
policy's weights is then exact along each simulated path (almost everywhere), and Adam
follows it.

* **A residual on a tuned classical policy.** The base is the tuner's installation policy
  (:func:`fedinv.policies.tuning.tune` on training replications): ``base-stock`` (one
  safety factor per tier) where no lane has a fixed ordering cost, ``sS`` where one does;
  never the echelon policy. A network per role (a node's tier, as the DQN's
  :func:`fedinv.agents.dqn.agent_roles`; nodes of a role share it) reads each node's
  features (:meth:`fedinv.agents.envs.Observer.observe`, the DQN's observation) and
  outputs, per node, a change of its order-up-to level ``S`` (and of its reorder point
  ``s`` where the base is (s,S)) in days of the node's mean demand (``Observer.unit``),
  applied to every replenishment stream of the node (x bom for components). The last
  layer starts at zero, so at step 0 the orders are exactly the base policy's, and
  every gain is the network's.
* **Information.** By default a node's features are local (its own state, the orders it
  receives, the calendar). ``Args.env.information = "echelon"``
  (:attr:`fedinv.agents.envs.EnvConfig.information`) appends its echelon inventory
  position, exactly what the echelon base-stock policy reads: with it (and the local
  ``position``) the network can represent that policy, whose installation level is
  ``S(x) = E - (downstream echelon position)``; without it, it cannot. Where the
  downstream nodes belong to other organizations this is a shared-information
  assumption (docs/agents.md, "HDPO results").
* **Orders.** As the classical policies compute them
  (:meth:`fedinv.policies.classical.StreamPolicy.decide`, downstream nodes first): order
  up to ``S`` (base-stock), or up to ``S`` when the position is at or below ``s`` (sS);
  lot sizes round up (straight-through on torch). Evaluation (:meth:`HDPOPolicy.act`)
  is always the exact rule on the exact numpy day. The (s,S) trigger in training
  (:attr:`Args.trigger`) is by default the exact one, so only ``S`` learns and ``s``
  stays the tuned one; the relaxed trigger ``sigmoid((s - pos) / tau)`` (``tau`` in days
  of mean demand, annealed geometrically, with the fixed ordering cost's indicator
  ``1 - exp(-q / T)`` of :class:`fedinv.sim.ops.Smoothing`) is an option, and
  docs/agents.md says why it is not the default (its pathwise gradient explodes for a
  small ``tau`` and describes another policy for a large one).
* **Transfers** (``Args.transfers``, scenarios with lateral links: the Coordination
  Node's role, learned; docs/roles.md). One more output per node, its pressure ``g``
  (days of mean demand); a link ``i -> j`` proposes ``relu(g_j - g_i)`` days of ``j``'s
  mean demand, capped as the day caps transfers, the ``relu`` straight-through on torch
  (at step 0 no stock moves, yet the gradient says whether a move would pay). The
  orders are then computed on the state with the transfers landed, as the Coordination
  Node's ordering policy sees it.
* **Gradients.** The features are computed on a detached numpy copy of the state: they
  are constants of the backward pass; the gradient reaches the weights through the
  targets and flows along the path through positions, stock, backorders and costs.
* **Training.** Every iteration simulates a *fresh* batch of training replications
  (indices from :data:`fedinv.policies.tuning.TRAIN_BASE`, iteration ``i`` taking
  ``TRAIN_BASE + i B .. + B - 1``; disjoint from validation and held-out ones) over the
  horizon on torch. The horizon is cut into windows of ``window`` days (default
  :func:`auto_window`, four echelon lead times); at the end of a
  window the loss (mean network cost per day over the window's counted days, divided by
  the base policy's training cost per day so that one clipping norm fits every
  scenario) is back-propagated, the gradient norm clipped, Adam steps, and the state is
  detached (truncated back-propagation through time). Days before the scenario's
  ``warmup_days`` run without gradient and count nowhere, as in the metrics.
  **Purchases in truncated windows.** A window that ends before the horizon would see
  the price of every unit it orders but not the sales the unit makes after the window,
  and learn to hold too little; so such windows count purchases and shipping as the
  cost of goods sold (the embodied purchase and shipping cost of each unit delivered
  to a customer, :func:`embodied_cost`). Under backorders the two differ only by the
  value of the stock and pipeline at the window's ends. The last window counts them as
  paid, as the metric does, so the end of the horizon (stock bought but never sold) is
  still learned; ``Args.cost_of_goods = "all"`` counts the cost of goods sold there too
  (a going concern: the learner gains nothing by not buying what the horizon will not
  sell).
* **Training through the safety layer** (``train_mode = "hybrid"``; docs/agents.md).
  The base is tuned through the layer and validation runs through it
  (:func:`through_layer`). :attr:`Args.layer_gradient` says how training meets it:
  ``penalty`` runs the proposals and prices their violations in the loss
  (:func:`violation_cost`); ``straight-through`` and ``masked`` run, every training
  day, the orders the layer releases for the detached proposals (the same layer
  validation runs, :func:`training_day`), forward exactly, with the identity's
  gradient or the identity's only on the lanes the layer left unchanged
  (:func:`layer_release`).
* **Model selection.** Before training and every ``eval_every`` iterations the policy
  runs exactly (numpy) on validation replications (from
  :data:`fedinv.agents.dqn.VALIDATION_BASE`) over the full horizon; the weights with the
  lowest validation cost are the trained policy (the base policy itself, at iteration 0,
  is a candidate).
  With ``Args.average = d > 0`` an exponential moving average of the weights (decay
  ``d`` per iteration) is validated at the same points, and the best candidate, raw or
  averaged, is selected (the curve's ``selected`` column says which).
* **Determinism.** Initial weights from a ``torch.Generator`` seeded with ``seed``, no
  other randomness; torch single-threaded (:func:`fedinv.agents.dqn.torch_globals`).
  Same seed, same weights.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from fedinv.agents.dqn import VALIDATION_BASE, _ci95, agent_roles, evaluate, linear_layer
from fedinv.agents.dqn import torch_globals as torch_globals
from fedinv.agents.envs import EnvConfig, Observer
from fedinv.hybrid import for_mode
from fedinv.model.layout import Layout
from fedinv.model.network import Scenario
from fedinv.policies.classical import (
    StreamPolicy,
    link_matrices,
    make_policy,
    transfers_landed,
)
from fedinv.policies.tuning import TRAIN_BASE, TuneResult, tune
from fedinv.sim.ops import NUMPY, NumpyOps, Smoothing, torch_ops
from fedinv.sim.simulator import Decision, Simulator, State

BASES = ("base-stock", "sS")
"""The classical policies an HDPO policy can start from."""
TRIGGERS = ("exact", "sigmoid", "straight-through")
"""The (s,S) trigger rules of training (:attr:`Args.trigger`)."""


# -- arguments ---------------------------------------------------------------------------


@dataclass(kw_only=True)
class Args:
    """Everything an HDPO run depends on (saved in its checkpoint)."""

    scenario: str = "serial-3"
    """Built-in scenario name or path to a scenario TOML file."""
    seed: int = 1
    """Seed of the network's initial weights (a ``torch.Generator``); nothing else is
    random (the demand streams depend on the scenario seed and the replication indices)."""
    iterations: int = 40
    """Training batches; each is a fresh batch of replications simulated over the
    horizon."""
    replications: int = 16
    """Training replications per batch (``B``)."""
    window: int | None = None
    """Days of one gradient step (truncated back-propagation): None, :func:`auto_window`
    (4 echelon lead times, at least 30 days); 0, the whole horizon."""
    cost_of_goods: str = "before-last"
    """How a window counts purchases and shipping: ``before-last`` (default) as the cost
    of goods sold (:func:`embodied_cost`) in windows that end before the horizon and as
    paid in the last one (the metric's cost); ``all`` as the cost of goods sold in every
    window (a going concern: stock left at the horizon is worth what it cost, so the
    learner gains nothing by not buying what the horizon will not sell); ``none`` as
    paid everywhere."""
    base: str = "auto"
    """The classical policy the network is a residual on: ``base-stock``, ``sS`` or
    ``auto`` (``sS`` where a lane has a fixed ordering cost, else ``base-stock``)."""
    tune_replications: int = 16
    """Training replications of the base policy's tuning."""
    sweeps: int = 2
    """Coordinate-descent sweeps of the base policy's tuning."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden layer widths of each role's network (ReLU MLP)."""
    share: str = "tier"
    """Parameter sharing: ``tier`` (one network per tier) or ``node``."""
    max_change: float = 30.0
    """Bound on a target change, days of mean demand (``c tanh(x / c)``: slope 1 at 0)."""
    learning_rate: float = 1e-2
    """Adam step size at the first iteration."""
    final_learning_rate: float | None = 1e-3
    """Step size reached linearly at the last iteration (None: constant)."""
    max_grad_norm: float = 1.0
    """Gradient-norm clipping (the loss is about 1: cost over the base policy's)."""
    trigger_temperature: tuple[float, float] = (0.5, 0.05)
    """(s,S) bases: ``tau`` of the relaxed trigger ``sigmoid((s - pos) / tau)`` at the
    first and the last iteration, days of mean demand (geometric in between)."""
    trigger: str = "exact"
    """The (s,S) trigger in training: ``exact`` (``1[pos <= s]``: ``S`` learns, ``s``
    stays the base's), ``sigmoid`` (orders ``(S - pos) sigmoid((s - pos) / tau)``) or
    ``straight-through`` (the exact trigger forward, the sigmoid's gradient backward).
    See docs/agents.md for why ``exact`` is the default."""
    order_temperature: tuple[float, float] = (0.5, 0.05)
    """Scenarios with fixed ordering costs: ``T`` of the relaxed order indicator
    ``1 - exp(-q / T)`` at the first and last iteration, in days of the smallest mean
    lane flow (geometric in between; :class:`fedinv.sim.ops.Smoothing`)."""
    eval_every: int = 5
    """Iterations between validation runs (0: only before and after training)."""
    eval_replications: int = 8
    """Validation replications per run (indices from :data:`VALIDATION_BASE`)."""
    average: float = 0.0
    """Decay ``d`` per iteration of an exponential moving average of the weights, validated
    beside the raw iterate (0: off). After iteration 1 the average is its weights, after
    iteration ``i`` ``d avg + (1 - d) w_i``; the best validated candidate, raw or
    averaged, is the trained policy. Checkpoints written before the field load with 0."""
    eval_days: int | None = None
    """Days of a validation run (None: the scenario horizon)."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """The observation's settings (:class:`fedinv.agents.envs.EnvConfig`; its actions and
    rewards are unused here)."""
    threads: int = 1
    """torch CPU threads."""
    train_mode: str = "pure"
    """``pure``: trained and validated on its proposals; ``hybrid``: trained for the safety
    layer -- the base tuned through it, the training batches meeting the layer as
    :attr:`layer_gradient` says (by default every training window's loss adding
    ``constraint_weight`` x the value of what the proposals violate,
    :func:`violation_cost`), and validation run through the layer (highspy), so the
    selected weights are the best ones as they will run."""
    constraint_weight: float = 1.0
    """``train_mode = "hybrid"``, ``layer_gradient = "penalty"``: $ of penalty per $ of
    violation value (units over a capacity, storage or contract limit at the node's
    :func:`embodied_cost`, $ over a budget)."""
    layer_gradient: str = "penalty"
    """``train_mode = "hybrid"``: how training meets the safety layer (docs/agents.md,
    "Training through the safety layer"). ``penalty``: the torch day runs the
    *proposals* and the loss adds ``constraint_weight`` x :func:`violation_cost` (the
    layer is not in training). ``straight-through``: every training day the proposals
    ``p`` (detached) go through the layer validation runs (:func:`through_layer`) and
    the day runs the released orders ``x*`` as ``p + (x* - p).detach()``: forward
    exactly the layer's release, gradient the identity. ``masked``: the same forward,
    the gradient passed only on lanes the layer left unchanged (zero where it cut or
    raised them, as a clamp's derivative). Checkpoints written before the field load
    with ``penalty``."""
    projection_penalty: float = 0.0
    """``layer_gradient`` ``straight-through`` or ``masked``: days of the destination's
    stockout penalty ($/unit-day) added to the loss per unit of ``|p - x*|`` (the DQN's
    ``EnvConfig.projection_penalty``; its gradient pulls the proposals towards what the
    layer releases). 0: none."""
    transfers: bool = False
    """Scenarios with lateral links: propose transfers (the Coordination Node's role,
    learned; docs/roles.md). Each node's network has one more output, its *pressure*
    ``g`` (days of mean demand); a link ``i -> j`` proposes ``relu(g_j - g_i) x mu_j``
    units (:meth:`HDPOPolicy.transfers`). Checkpoints written before the field load with
    False."""


TRAIN_MODES = ("pure", "hybrid")
LAYER_GRADIENTS = ("penalty", "straight-through", "masked")
"""How hybrid training meets the safety layer (:attr:`Args.layer_gradient`)."""
LAYER_BACKEND = "highspy"
"""The projection backend of validation and of training through the layer."""


def violation_cost(record: Mapping[str, Any], value: Any) -> Any:
    """The value of a day's violations per node ``[B, N]`` ($): units over production,
    transport, storage and contract limits at ``value`` (the node's embodied cost per
    unit, :func:`embodied_cost`) plus $ over the monthly budget. Differentiable on torch
    (each term is ``max(excess, 0)``)."""
    units = (
        record["capacity_violation"]
        + record["transport_violation"]
        + record["storage_violation"]
        + record["contract_violation"]
    )
    return units * value + record["budget_violation"]


def through_layer(policy: Any, sim: Simulator) -> Any:
    """``policy`` behind the safety layer of ``sim``'s network (:data:`LAYER_BACKEND`, the
    scenario's outages; :func:`fedinv.hybrid.for_mode`): what validation runs in hybrid
    mode, and what training through the layer releases (wrapping :class:`Proposals`)."""
    return for_mode(
        policy, "hybrid", sim.layout, backend=LAYER_BACKEND, outages=sim.scenario.outages
    )


class Proposals:
    """A policy that proposes the :class:`Decision` it was last given: a training day's
    detached proposals, behind :func:`through_layer`."""

    name = "hdpo"

    def __init__(self) -> None:
        self.decision: Decision | None = None

    def act(self, state: State) -> Decision:
        if self.decision is None:
            raise RuntimeError("Proposals.act before a decision was given")
        return self.decision


def layer_release(proposals: torch.Tensor, released: np.ndarray, how: str) -> torch.Tensor:
    """The orders ``[B, M]`` a training day runs when the layer releases ``released`` for
    ``proposals`` (a tensor in the autograd graph): forward exactly ``released``;
    backward the identity (``how = "straight-through"``), or the identity on the lanes
    where the release equals the proposal (to 1e-9, relative) and zero where the layer
    changed it (``"masked"``)."""
    if how not in LAYER_GRADIENTS[1:]:
        raise ValueError(f"layer_release: how must be straight-through or masked, got {how!r}")
    exact = torch.as_tensor(released, dtype=proposals.dtype)
    moving = proposals - proposals.detach()  # 0 forward, the identity backward
    if how == "masked":
        p = proposals.detach().numpy()
        kept = np.abs(released - p) <= 1e-9 * np.maximum(1.0, np.abs(p))
        moving = moving * torch.as_tensor(kept, dtype=proposals.dtype)
    return exact + moving


def base_policy_name(scenario: Scenario) -> str:
    """``sS`` where any lane has a fixed ordering cost, else ``base-stock``."""
    fixed = any(lane.fixed_order_cost > 0 for lane in scenario.network.lanes)
    return "sS" if fixed else "base-stock"


def auto_window(layout: Layout, days: int) -> int:
    """Four times the longest echelon lead time (the replenishment lead times of a chain
    to a customer, days), at least 30 days and at most ``days``: every decision but the
    window's last sees its effect reach the customers. Measured (docs/agents.md): 30
    days beat the whole horizon on serial-3; on electronics-5r (longest echelon lead
    time 24 days) 60-day windows did worse than the whole horizon, 96-day ones better."""
    from fedinv.policies.classical import flow_stats

    longest = float(flow_stats(layout).echelon_lead.max(initial=0.0))
    return int(min(max(30, math.ceil(4 * longest)), days))


def annealed(start: float, end: float, iteration: int, iterations: int) -> float:
    """Geometric interpolation from ``start`` (iteration 0) to ``end`` (the last)."""
    if iterations <= 1 or start == end:
        return float(end if iteration > 0 else start)
    frac = min(max(iteration / (iterations - 1), 0.0), 1.0)
    return float(start * (end / start) ** frac)


# -- the network -------------------------------------------------------------------------


class PolicyNetwork(nn.Module):
    """A ReLU MLP from a node's features (``F`` numbers) to its target changes
    (``outputs`` numbers, days of mean demand). Inputs are standardized with fixed
    per-feature statistics (buffers ``input_mean``, ``input_std``, set once from a
    base-policy run); the hidden layers' initial weights are drawn from ``generator``
    (:func:`fedinv.agents.dqn.linear_layer`), the last layer is zero."""

    def __init__(
        self,
        obs_size: int,
        outputs: int,
        hidden: Sequence[int] = (64, 64),
        *,
        generator: torch.Generator,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width = obs_size
        for h in hidden:
            layers += [linear_layer(width, h, generator), nn.ReLU()]
            width = h
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(width, outputs)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("input_mean", torch.zeros(obs_size))
        self.register_buffer("input_std", torch.ones(obs_size))
        self.double()

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk((obs - self.input_mean) / self.input_std))


class RolePolicyNetworks(nn.Module):
    """One :class:`PolicyNetwork` per role; ``forward(obs [B, N, F], roles) -> [B, N,
    outputs]`` with node ``n`` through the network of ``roles[n]``. Initial weights from
    ``generator`` (None: seeded 0, for networks whose weights are loaded next), role
    after role in sorted order."""

    def __init__(
        self,
        roles: Sequence[str],
        obs_size: int,
        outputs: int,
        hidden: Sequence[int] = (64, 64),
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.roles = tuple(sorted(set(roles)))
        self.obs_size, self.outputs, self.hidden = int(obs_size), int(outputs), tuple(hidden)
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        self.nets = nn.ModuleDict(
            {r: PolicyNetwork(obs_size, outputs, hidden, generator=generator) for r in self.roles}
        )

    def forward(self, obs: torch.Tensor, roles: Sequence[str]) -> torch.Tensor:
        parts = []
        order = []
        for role, idx in _groups(roles).items():
            parts.append(self.nets[role](obs[:, idx]))
            order += idx
        out = torch.cat(parts, dim=1)
        return out[:, np.argsort(order)]

    def set_input_stats(self, obs: np.ndarray, roles: Sequence[str]) -> None:
        """Standardize inputs with the mean and standard deviation of ``obs [..., N, F]``
        over every node of each role (std at least 0.1: days of demand, or unitless)."""
        flat = obs.reshape(-1, obs.shape[-2], obs.shape[-1])
        for role, idx in _groups(roles).items():
            x = flat[:, idx].reshape(-1, obs.shape[-1]).astype(float)
            net = self.nets[role]
            net.input_mean.copy_(torch.as_tensor(x.mean(axis=0)))
            net.input_std.copy_(torch.as_tensor(np.maximum(x.std(axis=0), 0.1)))


def _groups(roles: Sequence[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, r in enumerate(roles):
        out.setdefault(r, []).append(i)
    return out


# -- the base policy ---------------------------------------------------------------------


@dataclass(frozen=True)
class Base:
    """The classical policy under the network: ``policy`` (``base-stock`` or ``sS``), its
    per-node ``params`` (as ``--params`` takes them) and, per stream (stream units),
    ``level`` (the order-up-to level ``S``) and ``reorder`` (``s``; None for
    base-stock)."""

    policy: str
    params: dict[str, Any]
    level: np.ndarray
    reorder: np.ndarray | None = None

    @classmethod
    def from_params(cls, policy: str, layout: Layout, params: Mapping[str, Any]) -> Base:
        """The base of ``policy`` with ``params`` (missing nodes: textbook values)."""
        if policy not in BASES:
            raise ValueError(f"HDPO starts from one of {', '.join(BASES)}, got {policy!r}")
        pol = make_policy(policy, layout, params)
        if policy == "base-stock":
            return cls(policy, dict(params), np.asarray(pol.levels, float).copy())
        return cls(
            policy,
            dict(params),
            np.asarray(pol.big_s, float).copy(),
            np.asarray(pol.s, float).copy(),
        )

    @property
    def outputs(self) -> int:
        """Target changes per node: ``S`` (and ``s``)."""
        return 1 if self.reorder is None else 2


# -- acting: the policy ------------------------------------------------------------------


class HDPOPolicy:
    """A fedinv policy: ``act(state) -> Decision`` on the exact numpy day, and
    :meth:`orders` on either namespace for training.

    It keeps each node's memory (:class:`fedinv.agents.envs.Observer`): call ``act`` once
    per day in order; day 0 starts afresh."""

    name = "hdpo"

    def __init__(
        self,
        layout: Layout,
        networks: RolePolicyNetworks,
        base: Base,
        config: EnvConfig,
        share: str = "tier",
        max_change: float = 30.0,
        transfers: bool = False,
    ):
        self.layout, self.networks, self.base, self.config = layout, networks, base, config
        self.needs_confirmations = config.confirmations
        self.share, self.max_change = share, float(max_change)
        self.proposes_transfers = bool(transfers)
        """Whether the networks' last output is each node's transfer pressure (unused on a
        layout without lateral links: an organization of a federation without any)."""
        self.roles = agent_roles(layout, range(layout.num_nodes), share)
        missing = sorted(set(self.roles) - set(networks.roles))
        if missing:
            raise ValueError(
                f"no policy network for role(s) {missing} (trained roles: "
                f"{', '.join(networks.roles)})"
            )
        wanted = base.outputs + int(self.proposes_transfers)
        if networks.outputs != wanted:
            extra = " and a transfer pressure" if self.proposes_transfers else ""
            raise ValueError(
                f"the networks output {networks.outputs} numbers per node; a {base.policy} "
                f"base{extra} needs {wanted}"
            )
        self.observer = Observer(layout, config)
        if self.observer.size != networks.obs_size:
            raise ValueError(
                f"observation size {self.observer.size} does not match the networks' "
                f"{networks.obs_size}"
            )
        self.stream_policy = StreamPolicy(layout)
        st = self.stream_policy.streams
        if len(base.level) != st.size:
            raise ValueError(f"base levels for {len(base.level)} streams, the layout has {st.size}")
        self.stream_node = st.node
        self.stream_unit = self.observer.unit[st.node] * st.bom
        """``[K]`` stream units per day of the node's mean demand."""
        self._link_src, self._link_dst = link_matrices(layout)  # [T, N]
        self._linked = int(((self._link_src + self._link_dst).sum(axis=0) > 0).sum())
        """Nodes with a lateral link (each shares its pressure every day)."""
        self._link_unit = self.observer.unit[layout.transfer_dst]
        """``[T]`` units per day of mean demand at each link's receiver."""
        self._day: int | None = None
        self._batch = 0
        self._obs: np.ndarray | None = None
        self.trigger = "exact"
        """The (s,S) trigger of training (:attr:`Args.trigger`)."""

    def changes(self, obs: np.ndarray) -> torch.Tensor:
        """Target changes ``[B, N, outputs]`` (days of mean demand) of observations
        ``[B, N, F]``; differentiable in the weights."""
        raw = self.networks(torch.as_tensor(obs, dtype=torch.float64), self.roles)
        c = self.max_change
        return c * torch.tanh(raw / c)

    def targets(
        self, obs: np.ndarray, ops: NumpyOps = NUMPY, changes: torch.Tensor | None = None
    ) -> tuple[Any, Any]:
        """Per-stream ``(S, s)`` ``[B, K]`` in ``ops`` (``s`` None for base-stock): the
        base's targets plus the network's changes (``changes``, if already computed for
        ``obs``)."""
        changes = self.changes(obs) if changes is None else changes
        change = changes[:, self.stream_node]  # [B, K, outputs]
        unit = torch.as_tensor(self.stream_unit)
        if not ops.differentiable:
            change = change.detach()
        level = torch.as_tensor(self.base.level) + change[..., 0] * unit
        reorder = None
        if self.base.reorder is not None:
            reorder = torch.as_tensor(self.base.reorder) + change[..., 1] * unit
            level = torch.maximum(level, reorder)
        if not ops.differentiable:
            return level.numpy(), None if reorder is None else reorder.numpy()
        return level, reorder

    def transfers(self, state: State, changes: torch.Tensor, ops: NumpyOps = NUMPY) -> Any:
        """Today's proposed transfers ``[B, T]`` (units, in ``ops``) from the networks'
        last output, each node's pressure ``g`` (days of mean demand): link ``i -> j``
        moves ``relu(g_j - g_i) x mu_j`` (``mu_j`` the receiver's mean daily demand),
        at most the link's capacity, each donor's links scaled down together to what it
        has on hand (as the day scales them). On torch the ``relu`` is straight-through
        (exact forward, the identity's gradient backward): at the start every ``g`` is 0
        and nothing moves, and the gradient still says whether a move would pay."""
        g = changes[..., -1]  # [B, N]
        if not ops.differentiable:
            g = g.detach().numpy()
        gap = g @ ops.asarray(self._link_dst.T) - g @ ops.asarray(self._link_src.T)  # [B, T]
        want = ops.straight_through(ops.maximum(gap, 0.0), gap) * ops.asarray(self._link_unit)
        want = ops.minimum(want, ops.asarray(self.layout.transfer_cap))
        src = ops.asarray(self._link_src)
        out = want @ src  # [B, N] asked of each donor
        on_hand = ops.maximum(state.on_hand, 0.0)
        scale = ops.where(out > on_hand, on_hand / ops.maximum(out, 1e-12), 1.0)
        return want * (scale @ src.T)

    def orders(
        self,
        state: State,
        obs: np.ndarray,
        ops: NumpyOps = NUMPY,
        trigger_temperature: float | None = None,
    ) -> Decision:
        """Today's decision for ``state`` (in ``ops``) given its observations ``[B, N,
        F]``. ``trigger_temperature`` (days of mean demand, torch): the relaxed (s,S)
        trigger (training); None: the exact rule. Lot rounding is straight-through on
        torch (:meth:`fedinv.policies.classical.StreamPolicy.round_lots`). With
        transfers (:attr:`Args.transfers`), the orders are those of the state with
        today's transfers and those in flight landed
        (:func:`fedinv.policies.classical.transfers_landed`)."""
        changes = self.changes(obs)
        level, reorder = self.targets(obs, ops, changes)
        moves = None
        if self.proposes_transfers:
            moves = self.transfers(state, changes, ops)
            state = transfers_landed(self.layout, state, moves, ops)
        relaxed = trigger_temperature is not None and ops.differentiable and self.trigger != "exact"
        if reorder is None:

            def rule(pos):
                return ops.maximum(level - pos, 0.0)

        elif relaxed:
            tau = torch.as_tensor(trigger_temperature * self.stream_unit)

            def rule(pos):
                soft = ops.sigmoid((reorder - pos) / tau)
                if self.trigger == "straight-through":
                    soft = ops.straight_through(ops.as_float(pos <= reorder), soft)
                return ops.maximum(level - pos, 0.0) * soft

        else:

            def rule(pos):
                return ops.where(pos <= reorder, level - pos, 0.0)

        orders = self.stream_policy.decide(state, rule, ops=ops)
        return Decision(self.stream_policy.round_lots(orders, ops), moves)

    def observe(self, state: State) -> np.ndarray:
        """Today's observations ``[B, N, F]`` of a numpy ``state`` (the observer's memory
        starts afresh on day 0 or a new batch size; a second call on the same day returns
        the same observations)."""
        batch = state.on_hand.shape[0]
        if self._obs is not None and state.day == self._day and batch == self._batch:
            return self._obs  # a second call on the same day (as the DQN policy)
        if state.day == 0 or self._day is None or self._batch != batch:
            self.observer.reset(state)
        self._day, self._batch = state.day, batch
        self._obs = self.observer.observe(state)
        return self._obs

    def act(self, state: State) -> Decision:
        """The exact decision on a numpy state (call once per day, in order). With
        transfers, every linked node shares its pressure every day: ``info["messages"]``,
        one per linked node and day ``[B]`` (as the daily Coordination Node counts them)."""
        with torch.no_grad():
            decision = self.orders(state, self.observe(state))
        if self.proposes_transfers:
            messages = np.full(state.on_hand.shape[0], float(self._linked))
            decision = Decision(decision.orders, decision.transfers, {"messages": messages})
        return decision


# -- training ----------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What :func:`train` returns: the selected policy, the training curve (one row per
    validation run), the iteration the policy comes from, the tuned base, the final
    optimizer state and weights, and the budget (simulated days, wall seconds)."""

    args: Args
    scenario: Scenario
    policy: HDPOPolicy
    curve: pd.DataFrame
    best_iteration: int
    tuned: TuneResult
    optimizer_state: dict[str, Any]
    final_state: dict[str, Any]
    """The networks' weights after the last iteration (the selected ones are the
    policy's)."""
    training_days: int
    """Replication-days simulated by the training batches."""
    validation_days: int
    """Replication-days simulated by the validation runs."""
    wall_s: float
    """Seconds of :func:`train` (the base's tuning included when it ran there, not when
    ``tuned`` was given)."""

    def budget(self) -> dict[str, float]:
        """Simulated days (training batches, validation, the base's tuning) and wall
        seconds (tuning included)."""
        days = {
            "training_days": int(self.training_days),
            "validation_days": int(self.validation_days),
            "tuning_days": int(self.tuned.simulated_days),
        }
        return {"simulated_days": sum(days.values()), **days, "wall_s": float(self.wall_s)}


def embodied_cost(layout: Layout) -> np.ndarray:
    """External purchase and shipping cost ($) embodied in one unit of each node's item
    ``[N]``: the costs paid on its inbound lanes per unit (share x bom), plus, for units
    bought from inside the network, their source's embodied cost (internal purchases
    cancel network-wide)."""
    bom = np.where(
        layout.lane_comp >= 0,
        layout.comp_bom[np.maximum(layout.lane_comp, 0)] if layout.num_components else 1.0,
        1.0,
    )
    paid = (layout.price * layout.external + layout.shipping_cost) * layout.lane_share * bom
    direct = paid @ layout.dst_mat  # [N] $ per unit of the node's item, its own lanes
    return layout.content.T @ direct


def lane_flow(layout: Layout) -> np.ndarray:
    """Mean daily flow per lane ``[M]``, lane units (its stream's mean demand x share)."""
    from fedinv.policies.classical import flow_stats, streams_of

    st = streams_of(layout)
    mean = flow_stats(layout, st).mean
    return np.maximum(mean[st.lane_stream] * layout.lane_share, 1e-9)


def check_transfers(transfers: bool, scenario: Scenario) -> None:
    """ValueError if transfers (:attr:`Args.transfers`) are asked of a scenario without
    lateral links (central training, a federation and their command lines call it)."""
    if transfers and not scenario.network.transfers:
        raise ValueError(
            f"HDPO transfers: scenario {scenario.name!r} has no lateral links (no "
            "[[transfers]] to propose on)"
        )


def check_layer_gradient(args: Args) -> None:
    """ValueError unless :attr:`Args.layer_gradient` is known and
    :attr:`Args.projection_penalty` a finite number >= 0."""
    if args.layer_gradient not in LAYER_GRADIENTS:
        raise ValueError(
            f"Args.layer_gradient must be one of {', '.join(LAYER_GRADIENTS)}, "
            f"got {args.layer_gradient!r}"
        )
    if not (math.isfinite(args.projection_penalty) and args.projection_penalty >= 0):
        raise ValueError(
            f"Args.projection_penalty must be a number >= 0, got {args.projection_penalty!r}"
        )


def initial_policy(
    args: Args, scenario: Scenario, tuned: TuneResult | None = None
) -> tuple[HDPOPolicy, TuneResult]:
    """The untrained policy: the base tuned (or ``tuned``, a tuning of the base policy
    already done), networks initialized from ``args.seed``, input statistics from a
    base-policy run on the first training batch."""
    sim = Simulator(scenario, days=args.eval_days, confirmations=args.env.confirmations)
    layout = sim.layout
    name = base_policy_name(scenario) if args.base == "auto" else args.base
    if name not in BASES:
        raise ValueError(f"Args.base must be auto or one of {', '.join(BASES)}, got {name!r}")
    if args.train_mode not in TRAIN_MODES:
        raise ValueError(
            f"Args.train_mode must be one of {', '.join(TRAIN_MODES)}, got {args.train_mode!r}"
        )
    check_layer_gradient(args)
    if tuned is None or tuned.policy != name or tuned.mode != args.train_mode:
        tuned = tune(
            scenario,
            name,
            train_replications=args.tune_replications,
            days=scenario.horizon_days,
            sweeps=args.sweeps,
            mode=args.train_mode,
        )
    base = Base.from_params(name, layout, tuned.params)
    observer = Observer(layout, args.env)
    roles = agent_roles(layout, range(layout.num_nodes), args.share)
    networks = RolePolicyNetworks(
        roles,
        observer.size,
        base.outputs + int(args.transfers),
        args.hidden,
        generator=torch.Generator().manual_seed(args.seed),
    )
    policy = HDPOPolicy(
        layout, networks, base, args.env, args.share, args.max_change, args.transfers
    )
    # input statistics: the features the base policy meets on the first training batch
    state, exo = sim.reset(range(TRAIN_BASE, TRAIN_BASE + args.replications))
    seen = []
    for _ in range(sim.days):
        with torch.no_grad():
            obs = policy.observe(state)
            decision = policy.orders(state, obs)
        seen.append(obs)
        state, _ = sim.step(state, exo, decision, violations=False)
    networks.set_input_stats(np.stack(seen), roles)
    return policy, tuned


def train(
    args: Args,
    scenario: Scenario | None = None,
    tuned: TuneResult | None = None,
    on_iteration: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train an HDPO policy on ``scenario`` (default: load ``args.scenario``; see the
    module doc). ``tuned``: the base policy's tuning, if done already;
    ``on_iteration(iteration, stats)`` is called after every training batch (progress;
    iteration 0 once tuning is done). With ``args.average > 0`` the curve adds the
    averaged weights' ``averaged_validation_cost_per_day`` and ``averaged_validation_ci95``
    and a ``selected`` column (``raw`` or ``averaged`` on the selected row, else empty)."""
    from fedinv.model.scenario import load_scenario

    start = time.perf_counter()
    torch_globals(args.seed, args.threads)
    scenario = scenario or load_scenario(args.scenario)
    check_transfers(args.transfers, scenario)
    policy, tuned = initial_policy(args, scenario, tuned)
    networks = policy.networks
    if args.trigger not in TRIGGERS:
        raise ValueError(f"Args.trigger must be one of {', '.join(TRIGGERS)}, got {args.trigger!r}")
    policy.trigger = args.trigger
    if not 0.0 <= args.average < 1.0:
        raise ValueError(f"Args.average must be in [0, 1), got {args.average!r}")
    optimizer = torch.optim.Adam(networks.parameters(), lr=args.learning_rate)
    sim = Simulator(scenario, days=args.eval_days, confirmations=args.env.confirmations)
    days = sim.days
    scale = max(float(tuned.train_cost_per_day), 1e-9)  # the loss is about 1 at the start
    valid = range(VALIDATION_BASE, VALIDATION_BASE + args.eval_replications)
    eval_policy = HDPOPolicy(
        sim.layout,
        copy.deepcopy(networks),
        policy.base,
        args.env,
        args.share,
        args.max_change,
        args.transfers,
    )

    rows: list[dict[str, float]] = []
    simulated = {"training": 0, "validation": 0}
    best = (np.inf, 0, copy.deepcopy(networks.state_dict()), "raw")
    averaged: list[torch.Tensor] | None = None  # the EMA of the parameters (Args.average)

    def candidate(name: str, iteration: int) -> np.ndarray:
        """Validation cost per replication of the ``raw`` or ``averaged`` weights at
        ``iteration`` (loaded into ``eval_policy``); keeps the best candidate."""
        nonlocal best
        eval_policy.networks.load_state_dict(networks.state_dict())
        if name == "averaged":
            with torch.no_grad():
                for p, a in zip(eval_policy.networks.parameters(), averaged or [], strict=True):
                    p.copy_(a)
        run = through_layer(eval_policy, sim) if args.train_mode == "hybrid" else eval_policy
        cost = evaluate(run, scenario, valid, args.eval_days)
        simulated["validation"] += len(valid) * days
        if cost.mean() < best[0]:
            state = copy.deepcopy(eval_policy.networks.state_dict())
            best = (float(cost.mean()), iteration, state, name)
        return cost

    def validate(iteration: int, loss: float, tau: float) -> None:
        cost = candidate("raw", iteration)
        row = {
            "iteration": iteration,
            "simulated_days": iteration * args.replications * days,
            "loss": loss,
            "temperature": tau,
            "validation_cost_per_day": float(cost.mean()),
            "validation_ci95": _ci95(cost),
        }
        if args.average > 0:
            mean = ci = float("nan")
            if averaged is not None:
                avg = candidate("averaged", iteration)
                mean, ci = float(avg.mean()), _ci95(avg)
            row |= {"averaged_validation_cost_per_day": mean, "averaged_validation_ci95": ci}
        rows.append(row | {"wall_s": time.perf_counter() - start})

    validate(0, float("nan"), float("nan"))
    if on_iteration is not None:
        on_iteration(0, {"loss": float("nan"), "best": best[0]})
    for it in range(1, args.iterations + 1):
        tau = annealed(*args.trigger_temperature, it - 1, args.iterations)
        loss = training_batch(policy, sim, optimizer, args, it, scale)
        simulated["training"] += args.replications * days
        if args.average > 0:
            with torch.no_grad():
                params = [p.detach() for p in networks.parameters()]
                if averaged is None:
                    averaged = [p.clone() for p in params]
                else:
                    for a, p in zip(averaged, params, strict=True):
                        a.lerp_(p, 1.0 - args.average)
        if it == args.iterations or (args.eval_every and it % args.eval_every == 0):
            validate(it, loss, tau)
        if on_iteration is not None:
            on_iteration(it, {"loss": loss, "best": best[0]})
    selected = copy.deepcopy(networks)
    selected.load_state_dict(best[2])
    curve = pd.DataFrame(rows)
    if args.average > 0:
        curve["selected"] = np.where(curve["iteration"] == best[1], best[3], "")
    return TrainResult(
        args,
        scenario,
        HDPOPolicy(
            sim.layout, selected, policy.base, args.env, args.share, args.max_change, args.transfers
        ),
        curve,
        best[1],
        tuned,
        optimizer.state_dict(),
        copy.deepcopy(networks.state_dict()),
        simulated["training"],
        simulated["validation"],
        time.perf_counter() - start,
    )


def training_batch(
    policy: HDPOPolicy,
    sim: Simulator,
    optimizer: torch.optim.Optimizer,
    args: Args,
    iteration: int,
    scale: float,
    proximal: tuple[float, Sequence[torch.Tensor]] | None = None,
) -> float:
    """Training batch ``iteration`` (1-based, of ``args.iterations``): its step size,
    temperatures and fresh replications (``TRAIN_BASE + (iteration - 1) B ..``), then
    :func:`run_batch`. ``scale``: $/day the loss is divided by (the base policy's training
    cost). Used by :func:`train` and by each organization of a federation
    (:mod:`fedinv.federation.hdpo_task`, with FedProx's ``proximal``). Returns the batch's
    mean network cost per day."""
    if args.cost_of_goods not in ("before-last", "all", "none"):
        raise ValueError(
            f"Args.cost_of_goods must be before-last, all or none, got {args.cost_of_goods!r}"
        )
    if args.trigger not in TRIGGERS:
        raise ValueError(f"Args.trigger must be one of {', '.join(TRIGGERS)}, got {args.trigger!r}")
    policy.trigger = args.trigger
    layout, days = sim.layout, sim.days
    it = iteration
    tau = annealed(*args.trigger_temperature, it - 1, args.iterations)
    temp = annealed(*args.order_temperature, it - 1, args.iterations)
    if args.final_learning_rate is not None:
        frac = (it - 1) / max(args.iterations - 1, 1)
        rate = args.learning_rate + (args.final_learning_rate - args.learning_rate) * frac
        for group in optimizer.param_groups:
            group["lr"] = rate
    fixed = bool((layout.fixed_cost > 0).any())
    flow_unit = float(lane_flow(layout)[layout.fixed_cost > 0].min()) if fixed else 1.0
    first = TRAIN_BASE + (it - 1) * args.replications
    check_layer_gradient(args)
    hybrid = args.train_mode == "hybrid"
    layer = args.layer_gradient if hybrid and args.layer_gradient != "penalty" else None
    return run_batch(
        policy,
        sim,
        range(first, first + args.replications),
        optimizer,
        window=auto_window(layout, days) if args.window is None else args.window or days,
        warmup=min(sim.scenario.warmup_days, days - 1),
        scale=scale,
        max_grad_norm=args.max_grad_norm,
        trigger_temperature=tau,
        smoothing=Smoothing(order_temperature=temp * flow_unit) if fixed else None,
        cost_of_goods=args.cost_of_goods,
        proximal=proximal,
        constraint_weight=args.constraint_weight if hybrid and layer is None else 0.0,
        layer=layer,
        projection_penalty=args.projection_penalty if layer is not None else 0.0,
    )


def run_batch(
    policy: HDPOPolicy,
    sim: Simulator,
    replications: Sequence[int],
    optimizer: torch.optim.Optimizer,
    *,
    window: int,
    warmup: int,
    scale: float,
    max_grad_norm: float,
    trigger_temperature: float | None,
    smoothing: Smoothing | None,
    cost_of_goods: str = "before-last",
    proximal: tuple[float, Sequence[torch.Tensor]] | None = None,
    constraint_weight: float = 0.0,
    layer: str | None = None,
    projection_penalty: float = 0.0,
) -> float:
    """Simulate ``replications`` over the horizon on torch, one Adam step per window of
    ``window`` days (loss: mean network cost per day over the window's days from
    ``warmup`` on, divided by ``scale``; windows before the last with purchases and
    shipping as the cost of goods sold as :attr:`Args.cost_of_goods` says),
    detaching the state between windows. ``proximal = (mu, anchor)`` adds FedProx's
    ``mu/2 ||w - anchor||^2`` to every window's loss (federated training);
    ``constraint_weight > 0`` adds that many times :func:`violation_cost` of every day
    (training for the safety layer by penalty). ``layer`` (``straight-through`` or
    ``masked``, :func:`layer_release`): every day runs the orders the safety layer
    releases (:func:`through_layer`, a fresh layer per batch), the loss adding
    ``projection_penalty`` x the destination's stockout penalty per unit of
    ``|proposed - released|``. Returns the batch's mean network cost per day ($, counted
    days, as the metric counts it; penalties not included)."""
    ops = torch_ops()
    state, exo = sim.reset(replications)
    ts = state.to(ops)
    value = torch.as_tensor(embodied_cost(sim.layout))
    gate = through_layer(Proposals(), sim) if layer is not None else None
    moved_price = torch.as_tensor(sim.layout.dst_mat * sim.layout.penalty)  # [M, N] $/unit
    last = (sim.days - 1 - warmup) // window  # index of the window holding the horizon's end
    costs: list[torch.Tensor] = []
    total, counted = 0.0, 0
    for t in range(sim.days):
        with torch.set_grad_enabled(t >= warmup):
            ts, record, moved = training_day(
                policy,
                sim,
                ts,
                exo,
                layer=gate,
                layer_gradient=layer or "straight-through",
                trigger_temperature=trigger_temperature,
                smoothing=smoothing,
                violations=constraint_weight > 0,
            )
        if t >= warmup:
            cost = record["total_cost"]
            if constraint_weight > 0:
                cost = cost + constraint_weight * violation_cost(record, value)
            if moved is not None and projection_penalty > 0:
                cost = cost + projection_penalty * (moved.abs() @ moved_price)
            window_index = (t - warmup) // window
            if cost_of_goods == "all" or (cost_of_goods == "before-last" and window_index < last):
                paid = record["external_purchase_cost"] + record["shipping_cost"]
                cost = cost - paid + record["sold"] * value
            costs.append(cost.sum(dim=1).mean())
            total += float(record["total_cost"].detach().sum(dim=1).mean())
            counted += 1
        end = t == sim.days - 1 or (t + 1 - warmup) % window == 0
        if costs and end:
            loss = torch.stack(costs).mean() / scale
            if proximal is not None and proximal[0] > 0:
                mu, anchor = proximal
                params = policy.networks.parameters()
                loss = loss + 0.5 * mu * sum(
                    ((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True)
                )
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(policy.networks.parameters(), max_grad_norm)
            optimizer.step()
            costs = []
            ts = ts.to(NUMPY).to(ops)  # truncate: the next window starts from a constant
    return total / max(counted, 1)


def training_day(
    policy: HDPOPolicy,
    sim: Simulator,
    ts: State,
    exo: Any,
    *,
    layer: Any = None,
    layer_gradient: str = "straight-through",
    trigger_temperature: float | None = None,
    smoothing: Smoothing | None = None,
    violations: bool = False,
) -> tuple[State, dict[str, Any], torch.Tensor | None]:
    """One training day on the torch state ``ts``: the policy's proposals (features from
    a detached numpy copy: constants of the backward pass), released as they are
    (``layer`` None) or as the safety layer ``layer`` (:func:`through_layer` of a
    :class:`Proposals`) releases them, with ``layer_gradient``'s backward
    (:func:`layer_release`); then the day (:meth:`Simulator.step`). Returns tomorrow's
    state, today's record and, with a layer, proposed minus released orders ``[B, M]``
    (units; differentiable in the proposals)."""
    ops = torch_ops()
    state = ts.to(NUMPY)
    obs = policy.observe(state)
    decision = policy.orders(ts, obs, ops, trigger_temperature)
    moved = None
    if layer is not None:
        proposed, moves = decision.orders, decision.transfers
        layer.policy.decision = Decision(
            proposed.detach().numpy(), None if moves is None else moves.detach().numpy()
        )
        out = layer.act(state)
        released = np.asarray(out.orders, float)
        moved = proposed - torch.as_tensor(released, dtype=proposed.dtype)
        if moves is not None:  # the layer projects transfers with the orders
            kept = np.asarray(out.transfers, float)
            moves = layer_release(moves, kept, layer_gradient)
        decision = Decision(layer_release(proposed, released, layer_gradient), moves)
    ts, record = sim.step(ts, exo, decision, ops=ops, smoothing=smoothing, violations=violations)
    return ts, record, moved
