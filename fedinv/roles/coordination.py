"""The Coordination Node (docs/roles.md): a classical balancing rule over a scenario's
lateral links, composable with any ordering policy.

Per node ``i`` with lateral links, on the evening of day ``t`` (after its demand, before
its orders), the rule projects its stock to the end of its *window* ``W_i`` -- the days
an order placed today takes to arrive (the node's mean replenishment lead time, order
lead time included, rounded up; at least the link's transfer lead time):

    y_i = on hand - customer backorders - owed downstream
          + shipments and transfers due at i on days t+1 .. t+W_i - mu_i W_i

(units; ``mu_i`` its mean daily demand, :func:`fedinv.policies.classical.node_demand`;
due dates as the carriers' tracking reports them). With ``threshold`` and ``reserve``
in days of mean demand:

  * a node with ``y_i < threshold x mu_i`` *needs* ``threshold x mu_i - y_i`` units:
    without help it expects to run short before a new order can arrive;
  * a node that needs nothing can *spare* ``y_j - reserve x mu_j`` units, if positive
    (``reserve < threshold`` lets a donor share a peer's shortage);
  * a link ``j -> i`` is used only when its unit cost is below the penalty it can save,
    ``unit_cost < stockout_penalty_i x (W_i - transfer lead)`` ($ per unit: a unit short
    at ``i`` stays backordered until a regular order arrives);
  * each needing node draws from its eligible peers in proportion to what they can
    spare; a donor asked for more than it can spare gives each peer its share of it;
    links carry at most their ``capacity``; whole units (rounded down).

The wrapped ordering policy then sees the day as if the transfers (and those still in
flight) had landed: the donor's on hand is lower, the receiver's higher, so the donor
reorders what it gave and the receiver does not reorder what it gets. Its own proposed
transfers (a learned policy may propose some) are added to the rule's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedinv.model.layout import Layout
from fedinv.model.network import Scenario
from fedinv.policies.classical import (
    flow_stats,
    link_matrices,
    node_demand,
    streams_of,
    transfers_landed,
)
from fedinv.sim.simulator import Decision, Simulator, State

COORDINATION_RULES = ("none", "balance")
"""``--coordination`` choices: ``none`` (the ordering policy alone) or ``balance``."""
THRESHOLD_RANGE = (-3.0, 4.0)
RESERVE_RANGE = (-3.0, 4.0)
"""Tuning intervals (days of mean demand) of ``threshold`` and ``reserve``."""
SEARCH_EVALUATIONS = 20
"""Most evaluations of one coordinate's bounded scalar search in :func:`tune_balance`
(measured searches stop after about 11 at the default tolerance)."""


@dataclass(frozen=True)
class BalanceConfig:
    """The balancing rule's parameters, days of a node's mean daily demand."""

    threshold: float = 0.0
    """A node whose projected stock at the end of its window is below ``threshold x mu``
    receives transfers up to that level."""
    reserve: float = 0.0
    """A donor (a node that needs nothing) keeps ``reserve x mu`` of projected stock and
    gives only the excess; below ``threshold`` it shares a shortage rather than only a
    surplus."""

    def __post_init__(self) -> None:
        for name in ("threshold", "reserve"):
            value = getattr(self, name)
            if isinstance(value, bool) or not math.isfinite(float(value)):
                raise ValueError(f"coordination {name} must be a finite number, got {value!r}")


class BalanceRule:
    """The transfers of the balancing rule (module doc) for one compiled layout."""

    def __init__(self, layout: Layout, config: BalanceConfig | None = None):
        self.layout, self.config = layout, config or BalanceConfig()
        lay = layout
        n, t = lay.num_nodes, lay.num_transfers
        self.mean = node_demand(lay)[0]  # [N] units/day
        st = streams_of(lay)
        lead = flow_stats(lay, st).lead
        window = np.ones(n, int)
        for k in range(st.size):  # a plain node's stream (assembling nodes: longest component)
            window[st.node[k]] = max(window[st.node[k]], math.ceil(lead[k] - 1e-9))
        tlead = lay.transfer_lead.astype(int)
        if t:
            np.maximum.at(window, lay.transfer_dst, np.maximum(tlead, 1))
        self.window = window
        self._src, self._dst = link_matrices(lay)  # [T, N]
        saved = lay.penalty[lay.transfer_dst] * np.maximum(window[lay.transfer_dst] - tlead, 0)
        self.eligible = (lay.transfer_cost < saved).astype(float)  # [T]
        self.linked = (self._src.sum(axis=0) + self._dst.sum(axis=0)) > 0  # [N]

    def projected(self, s: State) -> np.ndarray:
        """``y`` of the module doc, ``[B, N]`` units (0 at nodes without links)."""
        lay, t = self.layout, s.day
        known = s.known_pipeline  # known arrival days, never the true ones
        p = known.shape[2]
        w_max = int(min(self.window.max(initial=1), p - 1))
        ahead = (t + np.arange(1, w_max + 1)) % p  # slots of days t+1 .. t+w_max
        due = known[:, :, ahead]  # [B, M, W]
        lane_window = self.window[lay.lane_dst]
        mask = np.arange(1, w_max + 1)[None, :] <= lane_window[:, None]  # [M, W]
        arriving = (due * mask).sum(axis=2) @ lay.dst_mat
        if lay.num_transfers:
            q = s.transfer_pipeline.shape[2]
            w_t = int(min(self.window.max(initial=1), q - 1))
            tahead = (t + np.arange(1, w_t + 1)) % q
            tmask = np.arange(1, w_t + 1)[None, :] <= self.window[lay.transfer_dst][:, None]
            arriving = (
                arriving + (s.transfer_pipeline[:, :, tahead] * tmask).sum(axis=2) @ self._dst
            )
        net = s.on_hand - s.backlog - s.owed @ lay.src_mat
        y = net + arriving - self.mean * self.window
        return np.where(self.linked, y, 0.0)

    def needs(self, s: State) -> tuple[np.ndarray, np.ndarray]:
        """``(need, spare)`` per node ``[B, N]`` (units, module doc)."""
        cfg = self.config
        y = self.projected(s)
        need = np.where(self.linked, np.maximum(cfg.threshold * self.mean - y, 0.0), 0.0)
        donor = self.linked & (need <= 0.0)
        spare = np.where(donor, np.maximum(y - cfg.reserve * self.mean, 0.0), 0.0)
        return need, np.minimum(spare, np.maximum(s.on_hand, 0.0))  # only what is on the shelf

    def offers(self, spare: np.ndarray) -> np.ndarray:
        """What each link's donor can offer, ``[B, T]`` units (0 on links not worth it)."""
        return (spare @ self._src.T) * self.eligible

    def transfers(self, s: State, receivers: np.ndarray | None = None) -> np.ndarray:
        """Units to move on each lateral link today, ``[B, T]`` (whole units); only to
        the nodes where ``receivers`` ``[B, N]`` is true, if given."""
        lay = self.layout
        b = s.on_hand.shape[0]
        if not lay.num_transfers:
            return np.zeros((b, 0))
        need, spare = self.needs(s)
        if receivers is not None:
            need = np.where(receivers, need, 0.0)
        offer = self.offers(spare)  # [B, T] what the link's donor can spare
        offered_to = offer @ self._dst  # [B, N]
        share = offer / np.maximum(offered_to @ self._dst.T, 1e-12)
        want = share * (need @ self._dst.T)  # [B, T]
        asked = want @ self._src  # [B, N] asked of each donor
        scale = np.minimum(1.0, spare / np.maximum(asked, 1e-12))
        moves = np.minimum(want * (scale @ self._src.T), lay.transfer_cap)
        return np.floor(moves + 1e-9)

    def view(self, s: State, moves: np.ndarray) -> State:
        """The state the ordering policy sees: ``moves`` and the transfers in flight as
        if landed (donor on hand lower, receiver's higher)."""
        return transfers_landed(self.layout, s, moves)


class Coordinated:
    """An ordering policy with a Coordination Node: ``act`` adds the rule's transfers.
    The node reads every linked peer's projection every day (``info["messages"]``: one
    message per linked node and day, ``[B]``)."""

    def __init__(self, base: Any, rule: BalanceRule):
        self.base, self.rule = base, rule
        self.name = f"{getattr(base, 'name', type(base).__name__)}+balance"
        self.needs_confirmations = bool(getattr(base, "needs_confirmations", False))
        """The inner policy's: the run helpers switch the Supplier Interface on for it."""

    def act(self, state: State) -> Decision:
        moves = self.rule.transfers(state)
        d = self.base.act(self.rule.view(state, moves))
        if not isinstance(d, Decision):
            d = Decision(np.asarray(d, float))
        if d.transfers is not None and self.rule.layout.num_transfers:
            moves = moves + np.maximum(np.nan_to_num(np.asarray(d.transfers, float)), 0.0)
        info = dict(d.info or {})
        # daily sharing: every linked node reports its projection to the node every day
        info["messages"] = np.full(state.on_hand.shape[0], float(self.rule.linked.sum()))
        return Decision(d.orders, moves if self.rule.layout.num_transfers else d.transfers, info)


def coordinated_factory(
    factory: Callable[[Layout], Any], rule: str = "balance", config: BalanceConfig | None = None
) -> Callable[[Layout], Any]:
    """``factory`` (layout -> ordering policy) with the Coordination Node ``rule``
    (:data:`COORDINATION_RULES`; ``none`` returns ``factory``)."""
    if rule not in COORDINATION_RULES:
        raise ValueError(
            f"unknown coordination {rule!r}; choose one of {', '.join(COORDINATION_RULES)}"
        )
    if rule == "none":
        return factory
    return lambda layout: Coordinated(factory(layout), BalanceRule(layout, config))


def max_balance_evaluations(sweeps: int = 2) -> int:
    """An upper bound on :func:`tune_balance`'s ``evaluations``: the start point plus
    :data:`SEARCH_EVALUATIONS` per coordinate and sweep (repeated points are not
    simulated again, so it may use fewer)."""
    return 1 + 2 * sweeps * SEARCH_EVALUATIONS


@dataclass(frozen=True)
class BalanceTuning:
    """The tuned rule and the search's budget."""

    config: BalanceConfig
    train_cost_per_day: float
    evaluations: int
    history: tuple[tuple[float, float, float], ...]
    """``(threshold, reserve, cost $/day)`` per evaluation."""


def tune_balance(
    scenario: Scenario,
    factory: Callable[[Layout], Any],
    replications: Sequence[int],
    days: int | None = None,
    sweeps: int = 2,
    tolerance: float = 0.05,
    *,
    mode: str = "pure",
    solver: str = "highspy",
    node: Callable[[Any, BalanceRule], Any] | None = None,
) -> BalanceTuning:
    """Tune ``threshold`` and ``reserve`` (:data:`THRESHOLD_RANGE`,
    :data:`RESERVE_RANGE`) for the ordering policy ``factory`` builds, as the classical
    policies are tuned (docs/model.md): cyclic coordinate descent from (0, 0), each
    coordinate by a bounded scalar search (``tolerance`` days), on the training
    ``replications`` with common random numbers; the objective is the mean total cost per
    day of the coordinated policy run in ``mode`` (``hybrid``: through the safety layer
    with ``solver``, which projects the transfers with the orders); each search stops
    after :data:`SEARCH_EVALUATIONS` evaluations at most (:func:`max_balance_evaluations`).
    ``node(policy, rule)`` builds the node tuned (default :class:`Coordinated`, daily
    sharing; :class:`fedinv.roles.signals.SignalledCoordination` for the signalled one)."""
    from scipy.optimize import minimize_scalar

    from fedinv.hybrid import for_mode
    from fedinv.sim.run import mean_cost_per_day  # pandas: off the CLI's start-up path

    sim = Simulator(scenario, days=days)
    _, exo = sim.reset(list(replications))
    base = factory(sim.layout)
    cache: dict[tuple[float, float], float] = {}
    history: list[tuple[float, float, float]] = []

    def cost(point: Sequence[float]) -> float:
        key = (round(point[0], 4), round(point[1], 4))
        if key not in cache:
            wrapped = (node or Coordinated)(base, BalanceRule(sim.layout, BalanceConfig(*key)))
            pol = for_mode(wrapped, mode, sim.layout, backend=solver, outages=scenario.outages)
            cache[key] = float(mean_cost_per_day(sim, pol, exo.replications, exo).mean())
            history.append((*key, cache[key]))
        return cache[key]

    point = [0.0, 0.0]
    best = cost(point)
    for _ in range(sweeps):
        for i, bounds in enumerate((THRESHOLD_RANGE, RESERVE_RANGE)):

            def along(x: float, i: int = i) -> float:
                return cost([x if j == i else v for j, v in enumerate(point)])

            res = minimize_scalar(
                along,
                bounds=bounds,
                method="bounded",
                options={"xatol": tolerance, "maxiter": SEARCH_EVALUATIONS},
            )
            if float(res.fun) < best:
                best, point[i] = float(res.fun), round(float(res.x), 4)
    return BalanceTuning(BalanceConfig(*point), best, len(history), tuple(history))
