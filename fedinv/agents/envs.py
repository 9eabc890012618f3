"""Environments over the simulator for learned ordering agents (reference: docs/agents.md).

Three faces of one environment:

* :class:`BatchedInventoryEnv`: ``B`` replications stepped in lockstep, numpy in and out
  (observations ``[B, A, F]``, actions ``[B, A]``, rewards ``[B, A]`` for ``A`` agents);
  what the trainers use.
* :class:`InventoryParallelEnv`: a PettingZoo ``ParallelEnv``, one agent per ordering
  node, one replication.
* :class:`SingleNodeEnv`: a Gymnasium ``Env`` for one node; every other node follows a
  fixed base-stock policy.

**Agents and the day.** Every node that orders is an agent (by default all nodes; the
agents are ``config.controlled``). On day ``t`` each agent observes its local state after
steps 1-4 of the day (docs/model.md) and picks one discrete choice. All agents choose at
once, but a choice is an *order-up-to target*, and the orders are computed as the
installation base-stock policy computes them: downstream nodes first, so a node's
position includes the orders its downstream nodes place today (the textbook sequence,
the same information the classical policies use). A node outside ``controlled`` orders up
to its fixed base-stock level.

**Actions** (:class:`ActionSet`): choice 0 orders nothing; choice ``j >= 1`` orders, for
every replenishment stream ``k`` of the node (one per component at an assembly plant, so
one choice orders all components consistently), up to

    target_k = bom_k x [ m (L_k + c_j) + z_j sqrt(L_k s^2 + m^2 var(L_k)) ]

where ``m`` and ``s`` are the node's forecast of its daily demand and its residual
standard deviation (:mod:`fedinv.agents.forecast`), ``L_k`` and ``var(L_k)`` the stream's
expected lead time and its variance (days; what a node knows of its suppliers), ``z_j``
a safety factor and ``c_j`` extra days of cover. With ``c = 0`` this is the textbook
base-stock level at safety factor ``z``, so a grid of ``z`` contains the tuned base-stock
policy (one choice per tier, always), and choices with ``c > 0`` together with choice 0
let an agent batch orders like an (s, S) policy where ordering has a fixed cost.

**Observations** (``F`` numbers per agent, :func:`observation_names`): quantities are in
days of the node's mean daily demand flow ``u`` (the scenario's long-run mean, a static
fact a node knows from its history), clipped to ``[-OBS_CLIP, OBS_CLIP]``: on hand,
component stock (the scarcest component, in units of product), customer backorders,
orders owed downstream, orders received yesterday, own orders yesterday, inventory
position, on order, in transit by arrival day ``t+1 .. t+P`` (the last bucket holds
everything later), the demand signal of the last ``W`` days, the forecast (mean per day
and the 90% interval of the lead-time total, per day), the share of inbound lanes with
an announced supplier outage (``State.alert``) and the extra transit days announced
today (``State.delay_notice``, in weeks), the calendar (weekday and day of year as sine
and cosine, month end) and node features for parameter sharing (tier one-hot,
customer-facing, assembling, mean lead time and its standard deviation in weeks, critical
ratio ``p / (p + h)``). Nothing a node could not see locally, and never future demand:
an observation of day ``t`` is a function of the state after day ``t``'s demand. Opt-in
(:attr:`EnvConfig.information` ``= "echelon"``): the node's echelon inventory position
(its own and every downstream node's stock and pipeline; what the echelon base-stock
policy reads), appended last -- information from other nodes, shared.

**Reward** (:class:`RewardConfig`), per agent and day, negative and scaled:

    r_i = -( own_weight x c_i + network_share x sum_j c_j + order_change_cost x |dq_i| ) / scale

``c_i`` is node ``i``'s cost of the day (holding, penalty, fixed ordering and transfer
cost; per-unit purchase and shipping costs only if ``variable_costs``), ``dq_i`` the
change of its order from yesterday (units of its item), and ``scale`` ($/day) the
network cost per day of the textbook base-stock policy on a few training replications
(or the value given).

**Seeding.** :meth:`BatchedInventoryEnv.reset` takes replication indices (training from
:data:`fedinv.policies.tuning.TRAIN_BASE`, held-out evaluation ``0, 1, ...``): a replication's
random streams depend only on the scenario seed and its index. The PettingZoo and
Gymnasium envs map ``reset(seed=s)`` to replication ``replication_base + s`` (each later
``reset()`` without a seed runs the next index), or ``options={"replication": r}``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from fedinv.agents.forecast import DemandForecaster
from fedinv.model.layout import Layout
from fedinv.model.network import Scenario
from fedinv.policies.classical import (
    StreamPolicy,
    default_params,
    flow_stats,
    node_demand,
    stream_vector,
    streams_of,
)
from fedinv.sim.exogenous import Exogenous
from fedinv.sim.simulator import Decision, Simulator, State

OBS_CLIP = 100.0
"""Observations are clipped to ``[-OBS_CLIP, OBS_CLIP]`` (days of demand, or unitless)."""
TIERS = ("supplier", "manufacturer", "distributor")
REFERENCE_REPLICATIONS = 4
"""Training replications of the base-stock run that sets the reward scale."""
INFORMATION = ("local", "echelon")
"""The information options of :attr:`EnvConfig.information`."""


# -- configuration -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ActionSet:
    """The discrete order choices (see the module doc): 0 = order nothing (if ``zero``),
    then one order-up-to target per safety factor (no extra cover), then one per
    ``cover_days`` at ``cover_safety_factor``."""

    safety_factors: tuple[float, ...] = (
        -1.0,
        -0.5,
        0.0,
        0.25,
        0.5,
        0.75,
        1.0,
        1.25,
        1.5,
        1.75,
        2.0,
        2.5,
        3.0,
    )
    """Safety factors ``z`` of the base-stock-like targets."""
    cover_days: tuple[float, ...] = (2.0, 4.0, 7.0, 14.0)
    """Extra days of mean demand on top of the lead-time demand (order batching)."""
    cover_safety_factor: float = 1.0
    """Safety factor of the targets with extra cover."""
    zero: bool = True
    """Choice 0 orders nothing."""

    @property
    def choices(self) -> tuple[tuple[float, float], ...]:
        """``(z, cover days)`` of each target choice, in action order after choice 0."""
        return tuple((float(z), 0.0) for z in self.safety_factors) + tuple(
            (float(self.cover_safety_factor), float(c)) for c in self.cover_days
        )

    @property
    def size(self) -> int:
        """Number of discrete actions."""
        return len(self.choices) + int(self.zero)

    def describe(self) -> list[str]:
        """One line per action, in action order."""
        out = ["order nothing"] if self.zero else []
        for z, c in self.choices:
            out.append(f"up to lead-time demand{f' + {c:g} days' if c else ''}, z = {z:g}")
        return out


@dataclass(frozen=True, kw_only=True)
class RewardConfig:
    """Weights of the reward (see the module doc)."""

    own_weight: float = 1.0
    """Weight of the node's own cost."""
    network_share: float = 1.0
    """Weight of the whole network's cost (1: every agent also bears the team's cost)."""
    order_change_cost: float = 0.0
    """$ per unit of day-to-day change of the node's order (order-variability penalty)."""
    variable_costs: bool = False
    """Include per-unit purchase and shipping costs (under discounting they reward
    delaying purchases that the long run pays anyway; off by default)."""
    scale: float | None = None
    """$ per day dividing the cost; None: the network cost per day of the textbook
    base-stock policy on a few training replications."""


@dataclass(frozen=True, kw_only=True)
class EnvConfig:
    """Everything that shapes observations, actions and rewards."""

    actions: ActionSet = field(default_factory=ActionSet)
    """The discrete order choices."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """The reward weights."""
    episode_days: int | None = None
    """Days per episode (None: the scenario's horizon)."""
    pipeline_days: int = 8
    """Arrival-day buckets of the in-transit observation (the last holds the rest)."""
    demand_lags: int = 3
    """Days of demand signal observed (today, yesterday, ...)."""
    forecast_alpha: float = 0.03
    """Smoothing constant of the forecaster's level (a memory of about 1 / alpha days)."""
    forecast_beta: float = 0.05
    """Smoothing constant of the forecaster's squared residuals."""
    safety_std: str = "static"
    """Daily demand standard deviation ``s`` of the action targets: ``static``, the
    node's long-run value (a stable yardstick for ``z``), or ``forecast``, the
    forecaster's residual standard deviation."""
    controlled: tuple[str, ...] | None = None
    """Node ids of the agents (None: every node)."""
    fallback_levels: Mapping[str, Any] | None = None
    """Base-stock levels of nodes that are not agents, ``{node: level}`` as
    ``--params`` takes them (missing nodes: the textbook level)."""
    train_mode: str = "pure"
    """``pure``: the proposed orders are released; ``hybrid``: the safety layer releases
    its projection of them (highspy), the simulator runs the released orders, and each
    node's cost in the reward adds ``projection_penalty`` x its stockout penalty per unit
    the layer changed on its inbound lanes (safe RL by projection: the proposer learns
    what the layer lets through and to propose feasible orders). The discrete action
    stored for learning is the proposed one."""
    projection_penalty: float = 1.0
    """``train_mode = "hybrid"``: days of the destination's stockout penalty ($/unit-day)
    charged per unit of ``|proposed - released|``."""
    confirmations: bool = False
    """Opt-in: append the Supplier Interface's confirmations to every node's observation
    (``confirmed``, ``confirm_days``, ``promised``; docs/agents.md). Off, the observation
    is the layout it always was."""
    information: str = "local"
    """What a node observes of the rest of the chain: ``local`` (its own state, the
    orders it receives, the calendar: the layout it always was) or ``echelon`` (also
    appends ``echelon_position``, its echelon inventory position: what the echelon
    base-stock policy reads; a shared-information assumption where downstream nodes
    belong to other organizations, docs/agents.md)."""

    def __post_init__(self) -> None:
        if self.information not in INFORMATION:
            raise ValueError(
                f"EnvConfig.information must be one of {', '.join(INFORMATION)}, "
                f"got {self.information!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (for checkpoints and JSON)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EnvConfig:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        acts = dict(data.pop("actions", {}) or {})
        for key in ("safety_factors", "cover_days"):
            if key in acts:
                acts[key] = tuple(acts[key])
        controlled = data.pop("controlled", None)
        return cls(
            actions=ActionSet(**acts),
            reward=RewardConfig(**(data.pop("reward", {}) or {})),
            controlled=None if controlled is None else tuple(controlled),
            **data,
        )


OBSERVATION_VERSION = 1
"""The version of the observation layout (the features' order and meaning); bumped when
either changes, so that a checkpoint trained on another layout is refused."""
CONFIRMATION_FEATURES = ("confirmed", "confirm_days", "promised")
"""The opt-in features of :attr:`EnvConfig.confirmations`, appended at the end."""
ECHELON_FEATURES = ("echelon_position",)
"""The features of :attr:`EnvConfig.information` ``= "echelon"``, appended last."""


def observation_layout(config: EnvConfig) -> str:
    """The observation layout's tag for ``config``: ``fedinv-obs/1``, with
    ``+confirmations`` and ``+echelon`` when those opt-in features are on (checkpoints
    record it)."""
    tag = f"fedinv-obs/{OBSERVATION_VERSION}"
    if config.confirmations:
        tag += "+confirmations"
    return tag + "+echelon" if config.information == "echelon" else tag


def observation_names(config: EnvConfig) -> list[str]:
    """Names of the ``F`` observation features, in order."""
    extra = list(CONFIRMATION_FEATURES) if config.confirmations else []
    extra += list(ECHELON_FEATURES) if config.information == "echelon" else []
    return (
        [
            "on_hand",
            "components",
            "backlog",
            "owed_downstream",
            "orders_received",
            "own_orders",
            "position",
            "on_order",
        ]
        + [f"in_transit_{d}" for d in range(1, config.pipeline_days + 1)]
        + [f"demand_lag_{w}" for w in range(config.demand_lags)]
        + [
            "forecast_mean",
            "forecast_lower",
            "forecast_upper",
            "alert",
            "delay_notice",
            "weekday_sin",
            "weekday_cos",
            "year_sin",
            "year_cos",
            "month_end",
        ]
        + [f"tier_{t}" for t in TIERS]
        + ["customer_facing", "assembling", "lead_time", "lead_time_std", "critical_ratio"]
        + extra
    )


# -- observations ------------------------------------------------------------------------


class Observer:
    """Builds every node's observation from the state of a day, and keeps what a node
    remembers (its forecaster, its recent demand). Call :meth:`reset` on day 0, then
    :meth:`observe` exactly once per day, in order."""

    def __init__(self, layout: Layout, config: EnvConfig):
        self.layout, self.config = layout, config
        lay = layout
        st = self.streams = streams_of(layout)
        self.stats = flow_stats(layout, st)
        mean_n, var_n = node_demand(layout)
        self.unit = np.where(mean_n > 1e-12, mean_n, 1.0)  # [N] units/day
        self.forecaster = DemandForecaster(
            mean_n, var_n, config.forecast_alpha, config.forecast_beta, min_std=1e-3 * self.unit
        )
        self._positions = StreamPolicy(layout)  # installation positions
        echelon = config.information == "echelon"
        self._echelon = StreamPolicy(layout, echelon=True) if echelon else None  # its positions
        n, k = lay.num_nodes, st.size
        count = np.bincount(st.node, minlength=n).astype(float)
        self._stream_mean = np.zeros((k, n))  # stream units -> node units, mean over streams
        self._stream_mean[np.arange(k), st.node] = 1.0 / (st.bom * count[st.node])
        self.lane_to_node = st.lane_mat @ self._stream_mean
        """``[M, N]``: lane quantities -> units of each node's product, averaged over the
        node's streams (a lane's units / bom, over its inbound streams)."""
        self._plain = np.flatnonzero(st.slot < 0)
        self._comp = np.flatnonzero(st.slot >= 0)
        self._comp_starts = lay.comp_starts
        self._inbound = lay.dst_mat / np.maximum(lay.dst_mat.sum(axis=0), 1.0)  # [M, N]
        # static node features
        lead = np.zeros(n)
        lead_var = np.zeros(n)
        np.add.at(lead, st.node, self.stats.lead / count[st.node])
        np.add.at(lead_var, st.node, self.stats.lead_var / count[st.node])
        self.node_lead = lead  # [N] days, mean over the node's streams
        tier = np.stack([(lay.tier == t).astype(float) for t in TIERS], axis=1)
        crit = np.where(
            lay.penalty + lay.holding > 0,
            lay.penalty / np.maximum(lay.penalty + lay.holding, 1e-12),
            0.0,
        )
        assembling = np.zeros(n)
        assembling[lay.bom_nodes] = 1.0
        self._static = np.column_stack(
            [
                tier,
                lay.customer.astype(float),
                assembling,
                lead / 7.0,
                np.sqrt(lead_var) / 7.0,
                crit,
            ]
        )
        self.size = len(observation_names(config))
        self._lags = np.zeros((1, n, config.demand_lags))
        self.day = -1

    def reset(self, state: State) -> None:
        """Forget everything: a new batch of replications starts (``state`` of day 0)."""
        batch = state.on_hand.shape[0]
        self.forecaster.reset(batch)
        self._lags = np.zeros((batch, self.layout.num_nodes, self.config.demand_lags))
        self.day = state.day - 1

    def signal(self, state: State) -> np.ndarray:
        """Today's demand signal ``[B, N]``: customer demand plus the orders received
        from downstream yesterday (units of the node's item)."""
        return state.demand + state.last_received @ self.layout.src_mat

    def observe(self, state: State) -> np.ndarray:
        """Take in today's state; return the observations ``[B, N, F]`` (float32)."""
        lay, s = self.layout, state
        if s.day != self.day + 1 or s.on_hand.shape[0] != self._lags.shape[0]:
            raise ValueError(
                f"Observer.observe: expected day {self.day + 1} of a batch of "
                f"{self._lags.shape[0]}, got day {s.day} of "
                f"{s.on_hand.shape[0]} (call reset on day 0)"
            )
        self.day = s.day
        signal = self.signal(s)
        if s.day == 0:  # nothing was ordered yesterday: only customer demand is news
            known = np.broadcast_to(lay.customer, signal.shape)
            level, var = self.forecaster.level.copy(), self.forecaster.variance.copy()
            self.forecaster.update(signal)
            self.forecaster.level = np.where(known, self.forecaster.level, level)
            self.forecaster.variance = np.where(known, self.forecaster.variance, var)
        else:
            self.forecaster.update(signal)
        self._lags = np.roll(self._lags, 1, axis=2)
        self._lags[:, :, 0] = signal
        u = self.unit
        net = s.on_hand - s.backlog - s.owed @ lay.src_mat
        position = self._node_min(self._positions.position(s, net))
        components = np.zeros_like(s.on_hand)
        if lay.num_components:
            ratio = s.components / lay.comp_bom
            components[:, lay.bom_nodes] = np.minimum.reduceat(ratio, self._comp_starts, axis=1)
        transit = self._transit(s)  # [B, N, P]
        fc = self.forecaster
        lead = np.maximum(self.node_lead, 1.0)
        window = fc.forecast(lead[None, :])
        calendar = np.array(
            [
                math.sin(2 * math.pi * s.weekday / 7),
                math.cos(2 * math.pi * s.weekday / 7),
                math.sin(2 * math.pi * s.day_of_year / 365.25),
                math.cos(2 * math.pi * s.day_of_year / 365.25),
                float(s.month_end),
            ]
        )
        b, n = s.on_hand.shape
        per_unit = np.stack(
            [
                s.on_hand,
                components,
                s.backlog,
                s.owed @ lay.src_mat,
                s.last_received @ lay.src_mat,
                s.last_orders @ self.lane_to_node,
                position,
                s.on_order @ self.lane_to_node,
            ],
            axis=2,
        )
        forecast = np.stack([fc.mean, window.lower / lead, window.upper / lead], axis=2)
        obs = np.concatenate(
            [
                per_unit / u[None, :, None],
                transit / u[None, :, None],
                self._lags / u[None, :, None],
                forecast / u[None, :, None],
                (s.alert @ self._inbound)[:, :, None],
                (s.delay_notice @ lay.dst_mat)[:, :, None] / 7.0,
                np.broadcast_to(calendar, (b, n, len(calendar))),
                np.broadcast_to(self._static, (b, n, self._static.shape[1])),
            ]
            + ([self._confirmations(s)] if self.config.confirmations else [])
            + ([self._echelon_features(s)] if self._echelon is not None else []),
            axis=2,
        )
        return np.clip(obs, -OBS_CLIP, OBS_CLIP).astype(np.float32)

    def _confirmations(self, s: State) -> np.ndarray:
        """The opt-in confirmation features ``[B, N, 3]``: yesterday's confirmed units of
        the node's orders and the suppliers' promised units of all they owe it (both in
        days of the node's mean demand, mean over its streams), and the mean confirmed
        ship lead over its inbound lanes (weeks)."""
        if s.confirmed is None:
            raise ValueError(
                "EnvConfig.confirmations observes the suppliers' confirmations: simulate "
                "with Simulator(..., confirmations=True)"
            )
        confirmed = s.confirmed @ self.lane_to_node
        promised = s.promised @ self.lane_to_node
        days = s.confirm_days @ self._inbound
        u = self.unit[None, :]
        return np.stack([confirmed / u, days / 7.0, promised / u], axis=2)

    def _echelon_features(self, s: State) -> np.ndarray:
        """``echelon_position`` ``[B, N, 1]``: the node's echelon inventory position in
        days of its mean demand, exactly what the echelon base-stock policy compares with
        its level (:meth:`fedinv.policies.classical.StreamPolicy.position` with
        ``echelon=True``: stock at the node and everywhere downstream, internal transit,
        minus customer backorders, plus its own on order; the scarcest component stream
        at a plant). Before today's orders, as the echelon policy reads it."""
        e = self._echelon
        position = self._node_min(e.position(s, e.net(s)))
        return (position / self.unit[None, :])[:, :, None]

    def _node_min(self, per_stream: np.ndarray) -> np.ndarray:
        """Per node, the smallest of its streams' values in units of product ``[B, N]``."""
        st = self.streams
        out = np.empty((per_stream.shape[0], self.layout.num_nodes))
        out[:, st.node[self._plain]] = per_stream[:, self._plain]
        if len(self._comp):
            per_unit = per_stream[:, self._comp] / st.bom[self._comp]
            out[:, self.layout.bom_nodes] = np.minimum.reduceat(per_unit, self._comp_starts, axis=1)
        return out

    def _transit(self, s: State) -> np.ndarray:
        """In transit to each node by arrival day ``t+1 .. t+P`` ``[B, N, P]`` (units of
        product, mean over streams); the last bucket holds later arrivals too."""
        known = s.known_pipeline  # known arrival days, never the true ones
        p_len = known.shape[2]
        days = self.config.pipeline_days
        ahead = known[:, :, (s.day + 1 + np.arange(p_len - 1)) % p_len]  # [B, M, p-1]
        out = np.zeros(ahead.shape[:2] + (days,))
        k = min(days, ahead.shape[2])
        out[:, :, :k] = ahead[:, :, :k]
        if ahead.shape[2] > days:
            out[:, :, days - 1] += ahead[:, :, days:].sum(axis=2)
        return np.einsum("bmd,mn->bnd", out, self.lane_to_node)


# -- actions -----------------------------------------------------------------------------


class ActionMap:
    """Discrete choices of the agents -> order-up-to targets per stream -> lane orders
    (installation positions, downstream nodes first; see the module doc)."""

    def __init__(
        self,
        layout: Layout,
        actions: ActionSet,
        agent_nodes: Sequence[int],
        fallback_levels: Mapping[str, Any] | None = None,
        safety_std: str = "static",
    ):
        if safety_std not in ("static", "forecast"):
            raise ValueError(f"safety_std must be 'static' or 'forecast', got {safety_std!r}")
        self.layout, self.actions, self.safety_std = layout, actions, safety_std
        self.policy = StreamPolicy(layout)
        st = self.streams = self.policy.streams
        self.stats = flow_stats(layout, st)
        self.agent_nodes = np.asarray(agent_nodes, int)
        choices = np.array(actions.choices, float).reshape(-1, 2)
        pad = 1 if actions.zero else 0
        self._z = np.concatenate([np.zeros(pad), choices[:, 0]])
        self._cover = np.concatenate([np.zeros(pad), choices[:, 1]])
        self._agent_of_node = np.full(layout.num_nodes, -1)
        self._agent_of_node[self.agent_nodes] = np.arange(len(self.agent_nodes))
        self._stream_agent = self._agent_of_node[st.node]  # [K], -1: not an agent
        self._controlled = self._stream_agent >= 0
        levels = dict(default_params("base-stock", layout)["levels"])
        levels.update(fallback_levels or {})
        self.fallback = stream_vector(layout, levels, st)

    def levels(
        self, actions: np.ndarray, mean: np.ndarray, std: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Targets ``[B, K]`` (stream units) and the order-nothing mask ``[B, K]`` from
        actions ``[B, A]`` and the forecast ``mean``, ``std`` ``[B, N]`` (units/day)."""
        st, fs = self.streams, self.stats
        actions = np.asarray(actions, int)
        if actions.min(initial=0) < 0 or actions.max(initial=0) >= self.actions.size:
            raise ValueError(f"actions must be in 0..{self.actions.size - 1}")
        padded = np.concatenate([actions, np.zeros((len(actions), 1), int)], axis=1)
        a = padded[:, self._stream_agent]  # [B, K]; -1 (not an agent) reads the pad
        m = mean[:, st.node] * st.bom
        s = np.sqrt(fs.var) if self.safety_std == "static" else std[:, st.node] * st.bom
        sd = np.sqrt(fs.lead * s * s + m * m * fs.lead_var)
        target = np.maximum(m * (fs.lead + self._cover[a]) + self._z[a] * sd, 0.0)
        levels = np.where(self._controlled, target, self.fallback)
        zero = self._controlled & (a == 0) if self.actions.zero else np.zeros_like(a, bool)
        return levels, zero

    def decision(
        self, state: State, actions: np.ndarray, mean: np.ndarray, std: np.ndarray
    ) -> Decision:
        """Lane orders of today from the agents' choices ``[B, A]``."""
        levels, zero = self.levels(actions, mean, std)
        orders = self.policy.decide(
            state, lambda pos: np.where(zero, 0.0, np.maximum(levels - pos, 0.0))
        )
        return self.policy.finish(orders)


# -- the batched environment -------------------------------------------------------------


class BatchedInventoryEnv:
    """``B`` replications of a scenario in lockstep; numpy in, numpy out.

    ``reset(replications) -> obs [B, A, F]``; ``step(actions [B, A]) -> (obs, reward
    [B, A], terminated [B], truncated [B], info)``. Episodes last ``episode_days`` days and
    end truncated (never terminated: the horizon is a time limit); the observation
    returned with the truncation is that of the day after the last one, for bootstrapping.
    ``info``: ``cost`` (``[B, N]`` $, each node's total cost of the day, as in the
    metrics) and ``network_cost`` (``[B]``).
    """

    def __init__(self, scenario: Scenario, config: EnvConfig | None = None):
        self.scenario = scenario
        self.config = cfg = config or EnvConfig()
        self.episode_days = int(cfg.episode_days or scenario.horizon_days)
        self.sim = Simulator(scenario, days=self.episode_days + 1, confirmations=cfg.confirmations)
        self.layout = lay = self.sim.layout
        if cfg.controlled is None:
            self.agent_nodes = np.arange(lay.num_nodes)
        else:
            unknown = [n for n in cfg.controlled if n not in lay.node_ids]
            if unknown:
                raise ValueError(
                    f"unknown node(s) {unknown} in controlled (known: {', '.join(lay.node_ids)})"
                )
            self.agent_nodes = np.array([lay.node_ids.index(n) for n in cfg.controlled], int)
        self.agents = tuple(lay.node_ids[i] for i in self.agent_nodes)
        self.roles = tuple(str(lay.tier[i]) for i in self.agent_nodes)
        self.observer = Observer(lay, cfg)
        self.action_map = ActionMap(
            lay, cfg.actions, self.agent_nodes, cfg.fallback_levels, cfg.safety_std
        )
        self.observation_size = self.observer.size
        self.num_actions = cfg.actions.size
        self.cost_scale = float(cfg.reward.scale or reference_cost(scenario, cfg))
        if cfg.train_mode not in ("pure", "hybrid"):
            raise ValueError(f"train_mode must be pure or hybrid, got {cfg.train_mode!r}")
        self.projector = None
        if cfg.train_mode == "hybrid":
            from fedinv.hybrid import make_projector

            self.projector = make_projector(lay, "highspy", outages=scenario.outages)
        self.state: State | None = None
        self.exogenous: Exogenous | None = None
        self.replications: tuple[int, ...] = ()
        self.day = 0
        self._last_orders: np.ndarray | None = None

    def reset(self, replications: Sequence[int], exogenous: Exogenous | None = None) -> np.ndarray:
        """Start replications (indices; see the module doc) -> observations ``[B, A, F]``.
        ``exogenous``: streams drawn before for ``episode_days + 1`` days, reused."""
        self.state, self.exogenous = self.sim.reset(list(replications), exogenous=exogenous)
        self.replications = self.exogenous.replications
        self.day = 0
        self._last_orders = np.zeros_like(self.state.on_hand)
        self.observer.reset(self.state)
        return self.observer.observe(self.state)[:, self.agent_nodes]

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Release the orders of ``actions [B, A]``, run to tomorrow's decision."""
        if self.state is None or self.exogenous is None:
            raise RuntimeError("call reset before step")
        if self.day >= self.episode_days:
            raise RuntimeError("the episode is over: call reset")
        s, rcfg = self.state, self.config.reward
        actions = np.asarray(actions)
        if actions.shape != (s.on_hand.shape[0], len(self.agent_nodes)):
            raise ValueError(
                f"actions must have shape {(s.on_hand.shape[0], len(self.agents))}"
                f", got {actions.shape}"
            )
        fc = self.observer.forecaster
        decision = self.action_map.decision(s, actions, fc.mean, fc.std)
        moved = None
        if self.projector is not None:  # the layer releases, the proposer pays the change
            released = self.projector.project(s, decision.orders).released
            moved = np.abs(decision.orders - released) @ self.layout.dst_mat  # [B, N]
            decision = Decision(released, decision.transfers, decision.info)
        s, record = self.sim.step(s, self.exogenous, decision)
        self.state = s
        cost = record["total_cost"]
        reward_cost = (
            cost
            if rcfg.variable_costs
            else (cost - record["external_purchase_cost"] - record["shipping_cost"])
        )
        if moved is not None:
            penalty = self.config.projection_penalty * self.layout.penalty
            reward_cost = reward_cost + penalty * moved
        node_orders = decision.orders @ self.observer.lane_to_node  # units of product
        change = np.abs(node_orders - self._last_orders)
        self._last_orders = node_orders
        team = reward_cost.sum(axis=1, keepdims=True)
        total = (
            rcfg.own_weight * reward_cost
            + rcfg.network_share * team
            + rcfg.order_change_cost * change
        )
        reward = -(total[:, self.agent_nodes] / self.cost_scale).astype(np.float32)
        self.day += 1
        obs = self.observer.observe(s)[:, self.agent_nodes]
        b = cost.shape[0]
        over = np.full(b, self.day >= self.episode_days)
        info = {"cost": cost, "network_cost": cost.sum(axis=1)}
        return obs, reward, np.zeros(b, bool), over, info


def reference_cost(
    scenario: Scenario, config: EnvConfig, replications: int = REFERENCE_REPLICATIONS
) -> float:
    """Network cost per day ($) of the textbook base-stock policy on training
    replications (the default reward scale; only the cost components the reward counts)."""
    from fedinv.policies.classical import make_policy
    from fedinv.policies.tuning import TRAIN_BASE

    days = min(int(config.episode_days or scenario.horizon_days), 365)
    sim = Simulator(scenario, days=days)
    policy = make_policy("base-stock", sim.layout)
    state, exo = sim.reset(range(TRAIN_BASE, TRAIN_BASE + replications))
    total = 0.0
    for _ in range(days):
        state, rec = sim.step(state, exo, policy.act(state))
        cost = rec["total_cost"]
        if not config.reward.variable_costs:
            cost = cost - rec["external_purchase_cost"] - rec["shipping_cost"]
        total += float(cost.sum())
    per_day = total / (days * replications)
    lay = sim.layout
    floor = float((lay.holding * node_demand(lay)[0]).sum())  # a day of flow held everywhere
    return max(per_day, floor, 1e-6)


# -- PettingZoo --------------------------------------------------------------------------


class InventoryParallelEnv(ParallelEnv):
    """PettingZoo ``ParallelEnv``: one agent per ordering node (ids = node ids), one
    replication per episode. ``reset(seed=s)`` runs replication ``replication_base + s``
    (later unseeded resets the next indices); ``options={"replication": r}`` runs ``r``."""

    metadata = {"name": "fedinv_inventory_v0", "render_modes": []}

    def __init__(
        self,
        scenario: Scenario,
        config: EnvConfig | None = None,
        replication_base: int | None = None,
    ):
        from fedinv.policies.tuning import TRAIN_BASE

        self.env = BatchedInventoryEnv(scenario, config)
        self.replication_base = TRAIN_BASE if replication_base is None else replication_base
        self.possible_agents = list(self.env.agents)
        self.agents: list[str] = []
        size = self.env.observation_size
        self._obs_spaces = {
            a: spaces.Box(-OBS_CLIP, OBS_CLIP, (size,), np.float32) for a in self.possible_agents
        }
        self._act_spaces = {a: spaces.Discrete(self.env.num_actions) for a in self.possible_agents}
        self._next = 0

    def observation_space(self, agent: str) -> spaces.Box:
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> spaces.Discrete:
        return self._act_spaces[agent]

    def _replication(self, seed: int | None, options: Mapping[str, Any] | None) -> int:
        if options and "replication" in options:
            return int(options["replication"])
        if seed is not None:
            self._next = int(seed)
        rep = self.replication_base + self._next
        self._next += 1
        return rep

    def reset(
        self, seed: int | None = None, options: dict | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        obs = self.env.reset([self._replication(seed, options)])
        self.agents = list(self.possible_agents)
        return (
            {a: obs[0, i] for i, a in enumerate(self.possible_agents)},
            {a: {"replication": self.env.replications[0]} for a in self.possible_agents},
        )

    def step(self, actions: dict[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        if not self.agents:
            raise RuntimeError("the episode is over: call reset")
        arr = np.array([[int(actions[a]) for a in self.possible_agents]])
        obs, reward, _, truncated, info = self.env.step(arr)
        done = bool(truncated[0])
        agents = self.possible_agents
        out = (
            {a: obs[0, i] for i, a in enumerate(agents)},
            {a: float(reward[0, i]) for i, a in enumerate(agents)},
            dict.fromkeys(agents, False),
            dict.fromkeys(agents, done),
            {
                a: {"cost": float(info["cost"][0, self.env.agent_nodes[i]])}
                for i, a in enumerate(agents)
            },
        )
        if done:
            self.agents = []
        return out


# -- Gymnasium ---------------------------------------------------------------------------


class SingleNodeEnv(gymnasium.Env):
    """Gymnasium ``Env`` for one node (default: the first customer-facing node); every
    other node orders up to its fixed base-stock level (``config.fallback_levels``).
    Seeding as :class:`InventoryParallelEnv`."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        scenario: Scenario,
        node: str | None = None,
        config: EnvConfig | None = None,
        replication_base: int | None = None,
    ):
        from fedinv.policies.tuning import TRAIN_BASE

        net = scenario.network
        self.node = node or (net.customer_nodes[0] if net.customer_nodes else net.nodes[0].id)
        self.env = BatchedInventoryEnv(
            scenario, replace(config or EnvConfig(), controlled=(self.node,))
        )
        self.replication_base = TRAIN_BASE if replication_base is None else replication_base
        self.observation_space = spaces.Box(
            -OBS_CLIP, OBS_CLIP, (self.env.observation_size,), np.float32
        )
        self.action_space = spaces.Discrete(self.env.num_actions)
        self._next = 0

    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if options and "replication" in options:
            rep = int(options["replication"])
        else:
            if seed is not None:
                self._next = int(seed)
            rep = self.replication_base + self._next
            self._next += 1
        obs = self.env.reset([rep])
        return obs[0, 0], {"replication": rep}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(np.array([[int(action)]]))
        node = self.env.agent_nodes[0]
        return (
            obs[0, 0],
            float(reward[0, 0]),
            bool(terminated[0]),
            bool(truncated[0]),
            {"cost": float(info["cost"][0, node]), "network_cost": float(info["network_cost"][0])},
        )
