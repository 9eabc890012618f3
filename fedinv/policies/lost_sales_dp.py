"""The exact optimum of a single-node lost-sales system, by dynamic programming.

Scope: one node, one external lane with a deterministic lead time of ``L`` days,
Poisson(λ) demand with a constant mean, unmet demand lost, no capacities, lots,
budgets, contracts or disruptions (:func:`solve` refuses anything else, naming it).
Costs are fedinv's (docs/model.md): ``h`` per unit on hand at the end of a day, ``p``
per lost unit, and per order ``K`` (fixed) plus ``c`` per unit, where ``c`` = price +
shipping cost + ``L`` x transit holding cost (a unit ordered is in transit at the end of
exactly ``L`` days).

Timing (fedinv's day, :mod:`fedinv.sim.simulator`): the policy decides at the end of
day ``t``, after the demand; the order arrives at the start of day ``t + L``. The state
it sees is the on hand ``y`` and the orders ``a_k`` arriving at the start of day
``t + k``, ``k = 1..L-1``. Since ``a_1`` arrives before any further demand, only
``y + a_1`` matters: the DP state is

    u = (y + a_1, a_2, ..., a_{L-1})     (L >= 2; u = (y) for L = 1),

and after ordering ``q`` tomorrow's demand ``D`` meets ``x = u_0`` (``y + q`` for
``L = 1``): end-of-day stock ``(x - D)^+``, lost units ``(D - x)^+``. This is Zipkin's
(2008) lost-sales model with his lead time ``L - 1`` (he orders at the start of a
period, before its demand).

Truncation: the inventory position after ordering, ``|u| + q``, is capped at ``N``
(the ``1 - 1e-12`` quantile of Poisson(λ (L + 1)), L + 1 days of demand, unless given).
Positions only fall between orders, so the states with ``|u| <= N`` are closed and
nothing else is truncated: demand is not cut off (a stock-out lumps ``D >= x``, and
``E(D - x)^+ = λ - x + E(x - D)^+`` is exact). The cap is only an approximation if it
binds; :func:`solve` checks that the optimal order stays below it in every state with
room to order (and that the best base-stock level lies below ``N``) and enlarges
``N`` otherwise. (Morton 1969 bounds the optimal order by a base-stock rule with a
level near the p/(p+h) quantile of L + 1 days of demand, far below ``N``.)

Method: relative value iteration on ``u`` with the span bounds on the average cost
``g`` (stop when ``max(TV - V) - min(TV - V) <= tol``); the optimal table is then
evaluated exactly as a Markov chain (stationary distribution, sparse solve), and so is
every base-stock level ``0..N`` (order ``max(S - |u|, 0)``: fedinv's ``BaseStock``,
whose position is on hand + in transit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import sparse, stats
from scipy.sparse.linalg import spsolve

from fedinv.model.layout import Layout, compile_layout
from fedinv.model.network import EXTERNAL, Scenario
from fedinv.sim.simulator import Decision, State

CAP_TAIL = 1e-12
"""Upper-tail probability of L + 1 days of demand above the default cap ``N``."""
MAX_CELLS = 20_000_000
"""Most cells ``(N + 1)^L`` of the post-decision array (160 MB at the limit; a value
iteration step holds a few such arrays)."""


@dataclass(frozen=True)
class LostSalesModel:
    """The data of a lost-sales instance: ``lead_time`` L (days), ``demand_mean`` λ
    (units/day), ``holding`` h ($/unit-day on hand), ``penalty`` p ($/lost unit),
    ``unit_cost`` c ($/unit ordered, transit holding included), ``fixed_cost`` K ($/order)."""

    lead_time: int
    demand_mean: float
    holding: float
    penalty: float
    unit_cost: float = 0.0
    fixed_cost: float = 0.0

    @classmethod
    def of(cls, scenario: Scenario) -> LostSalesModel:
        """The model of ``scenario``; ``ValueError`` naming every unsupported feature."""
        net = scenario.network
        why = []
        if not scenario.lost_sales:
            why.append("unmet demand is backordered (lost_sales = false)")
        if len(net.nodes) != 1:
            why.append(f"{len(net.nodes)} nodes (one node only)")
        if len(net.lanes) != 1 or net.lanes[0].source != EXTERNAL:
            why.append("the node needs exactly one lane, from an external source")
        for label, items in (
            ("outages", scenario.outages),
            ("extra delays", scenario.delays),
            ("demand surges", scenario.surges),
            ("lateral transfers", net.transfers),
        ):
            if items:
                why.append(label)
        if why and (len(net.nodes) != 1 or len(net.lanes) != 1):
            raise ValueError(_refusal(scenario, why))
        node, lane = net.nodes[0], net.lanes[0]
        d = node.demand
        if d is None:
            why.append("the node has no customer demand")
        else:
            if d.history:
                why.append("demand from a history file (Poisson only)")
            elif d.distribution != "poisson":
                why.append(f"{d.distribution} demand (Poisson only)")
            if len(set(d.weekly)) > 1 or d.annual_amplitude or d.promotions:
                why.append("a demand mean that changes over time (weekly, annual, promotions)")
        law = lane.lead_time.distribution
        if law != "deterministic":
            why.append(f"a {law} lead time (deterministic only)")
        for label, bad in (
            ("an order lead time", lane.order_lead_time > 0),
            ("a bill of materials", bool(node.bill_of_materials)),
            ("a finite node capacity", math.isfinite(node.capacity)),
            ("a finite storage capacity", math.isfinite(node.storage_capacity)),
            ("a finite transport capacity", math.isfinite(lane.transport_capacity)),
            ("a lot size", lane.lot_size > 0),
            ("a minimum monthly commitment", lane.min_monthly_commitment > 0),
            (
                "a finite monthly budget",
                any(math.isfinite(o.monthly_budget) for o in net.organizations),
            ),
        ):
            if bad:
                why.append(label)
        start = [node.initial_inventory] + [e.quantity for e in lane.initial_pipeline]
        if any(abs(v - round(v)) > 1e-9 for v in start):
            why.append("a fractional initial inventory or pipeline (whole units only)")
        if why:
            raise ValueError(_refusal(scenario, why))
        lam = d.base_mean * d.weekly[0]
        if lam <= 0:
            raise ValueError(_refusal(scenario, ["a demand mean of 0"]))
        lead = int(lane.lead_time.law.mean)
        lay = compile_layout(net)  # the lane's price and transit holding, defaults applied
        return cls(
            lead_time=lead,
            demand_mean=float(lam),
            holding=float(lay.holding[0]),
            penalty=float(lay.penalty[0]),
            unit_cost=float(lay.price[0] + lay.shipping_cost[0] + lead * lay.transit_holding[0]),
            fixed_cost=float(lay.fixed_cost[0]),
        )


def _refusal(scenario: Scenario, why: list[str]) -> str:
    return f"the lost-sales DP does not support scenario {scenario.name!r}: " + "; ".join(why)


@dataclass(frozen=True)
class LostSalesDP:
    """The solved instance. ``order``: the optimal order (units) in state ``u`` (module
    doc), an array ``[N + 1] * max(L - 1, 1)`` (entries with ``|u| > N`` unused);
    ``average_cost``: its exact long-run cost ``g`` ($/day); ``bounds``: the value
    iteration's bounds on ``g``; ``base_stock_costs[S]``: exact cost of base-stock level
    ``S = 0..N`` ($/day), the best being ``base_stock_level``."""

    model: LostSalesModel
    cap: int
    order: np.ndarray
    average_cost: float
    bounds: tuple[float, float]
    iterations: int
    base_stock_level: int
    base_stock_cost: float
    base_stock_costs: np.ndarray

    def orders(self, on_hand: np.ndarray, arriving: np.ndarray) -> np.ndarray:
        """Optimal orders ``[B]`` (units) for on hand ``[B]`` and ``arriving [B, L-1]``
        (units due at the start of days ``t+1 .. t+L-1``). Positions above the cap
        ``N`` (never reached from below it) order 0; fractional units are refused."""
        lead = self.model.lead_time
        on_hand = np.asarray(on_hand, float)
        arriving = np.asarray(arriving, float).reshape(len(on_hand), lead - 1)
        if lead >= 2:
            u = np.column_stack([on_hand + arriving[:, 0], arriving[:, 1:]])
        else:
            u = on_hand[:, None]
        units = np.rint(u)
        if np.any(np.abs(u - units) > 1e-6) or np.any(units < 0):
            raise ValueError("the lost-sales DP needs whole, non-negative units in its state")
        units = units.astype(np.int64)
        inside = units.sum(axis=1) <= self.cap
        idx = np.where(inside[:, None], units, 0)
        return np.where(inside, self.order[tuple(idx.T)], 0).astype(float)


def solve(
    scenario: Scenario | LostSalesModel,
    cap: int | None = None,
    tol: float = 1e-10,
    max_iterations: int = 100_000,
) -> LostSalesDP:
    """Optimal policy, its average cost and the best base-stock level of a lost-sales
    ``scenario`` (or model; see the module doc). ``cap``: the position cap ``N`` to
    start from (default from :data:`CAP_TAIL`); ``tol``: width of the bounds on ``g``
    ($/day) at which value iteration stops."""
    model = scenario if isinstance(scenario, LostSalesModel) else LostSalesModel.of(scenario)
    lead, lam = model.lead_time, model.demand_mean
    n = int(cap) if cap is not None else int(stats.poisson.isf(CAP_TAIL, lam * (lead + 1))) + 1
    while True:
        if (n + 1) ** lead > MAX_CELLS:
            raise ValueError(
                f"the lost-sales DP with lead time {lead} days and position cap {n} needs "
                f"{(n + 1) ** lead:.3g} cells (at most {MAX_CELLS:.3g}): lead time too long"
            )
        grid = _Grid(model, n)
        order, bounds, iterations = grid.value_iteration(tol, max_iterations)
        bs_costs = np.array([grid.average_cost(grid.base_stock(s), s) for s in range(n + 1)])
        best = int(np.argmin(bs_costs))
        if not grid.binds(order) and best < n:
            break
        n = int(math.ceil(1.5 * n))
    g = grid.average_cost(order)
    return LostSalesDP(
        model, n, order, g, bounds, iterations, best, float(bs_costs[best]), bs_costs
    )


class _Grid:
    """The truncated state space ``{u : |u| <= N}`` stored as a dense ``[N+1]^(L-1)``
    array (``[N+1]`` for L = 1), with the one-day arrays of the module doc."""

    def __init__(self, model: LostSalesModel, cap: int):
        self.model, self.n = model, cap
        lead, lam, n = model.lead_time, model.demand_mean, cap
        self.dims = max(lead - 1, 1)
        k = np.arange(n + 1)
        pmf = stats.poisson.pmf(k, lam)
        # move[x, k]: P(end-of-day stock k | x units available): pmf(x - k), k >= 1;
        # k = 0 takes every demand >= x
        diff = k[:, None] - k[None, :]
        self.move = np.where((diff >= 0) & (k[None, :] >= 1), pmf[np.clip(diff, 0, n)], 0.0)
        self.move[:, 0] = stats.poisson.sf(k - 1, lam)
        over = (self.move * k[None, :]).sum(axis=1)  # E(x - D)^+
        short = np.maximum(lam - k + over, 0.0)  # E(D - x)^+
        self.day_cost = model.holding * over + model.penalty * short  # [x]
        self.order_cost = model.fixed_cost * (k > 0) + model.unit_cost * k  # [q]
        shape = (n + 1,) * self.dims
        self.size = np.indices(shape).sum(axis=0)  # |u|
        self.valid = self.size <= n
        self.room = n - self.size

    def post_value(self, v: np.ndarray) -> np.ndarray:
        """Expected cost of tomorrow plus ``v`` of the next state, for every post-decision
        state: ``[N+1]^L`` indexed ``(u, q)`` (L >= 2), ``[N+1]`` by ``x = y + q`` (L = 1)."""
        n, k = self.n, np.arange(self.n + 1)
        if self.model.lead_time == 1:
            return self.day_cost + self.move @ v
        # next state ((x - D)^+ + w_1, w_2, ..., w_{L-1}), w = (u, q)
        shifted = v[np.minimum(k[:, None] + k[None, :], n)]  # [k, w_1, w_2, ...]
        ahead = np.tensordot(self.move, shifted, axes=([1], [0]))  # [x, w_1, ...]
        return ahead + self.day_cost.reshape((n + 1,) + (1,) * (self.model.lead_time - 1))

    def q_values(self, v: np.ndarray) -> np.ndarray:
        """Cost of ordering ``q`` in state ``u``: ``[N+1]^(L-1) x [N+1]``, inf beyond the cap."""
        n, k = self.n, np.arange(self.n + 1)
        post = self.post_value(v)
        if self.model.lead_time == 1:
            post = post[np.minimum(k[:, None] + k[None, :], n)]
        allowed = k <= self.room[..., None]
        return np.where(allowed, post + self.order_cost, np.inf)

    def value_iteration(self, tol: float, max_iterations: int) -> tuple[np.ndarray, tuple, int]:
        v = np.zeros(self.valid.shape)
        for it in range(1, max_iterations + 1):
            q = self.q_values(v)
            tv = np.where(self.valid, q.min(axis=-1), 0.0)
            diff = (tv - v)[self.valid]
            lo, hi = float(diff.min()), float(diff.max())
            v = tv - tv.flat[0]
            if hi - lo <= tol:
                return np.where(self.valid, q.argmin(axis=-1), 0), (lo, hi), it
        raise RuntimeError(f"relative value iteration did not converge in {max_iterations} steps")

    def binds(self, order: np.ndarray) -> bool:
        """Whether the cap binds: the optimal order fills all the room somewhere."""
        return bool(np.any(self.valid & (self.room > 0) & (order == self.room)))

    def base_stock(self, level: int) -> np.ndarray:
        """Orders of base-stock ``level``: ``max(level - |u|, 0)``."""
        return np.where(self.valid, np.maximum(level - self.size, 0), 0)

    def average_cost(self, order: np.ndarray, within: int | None = None) -> float:
        """Exact long-run cost per day ($) of the order table: stationary distribution of
        the chain on ``{u : |u| <= within}`` (default ``N``; a set the table must keep
        closed, as base-stock ``S`` keeps ``|u| <= S``) times the expected day cost."""
        n, lead = self.n, self.model.lead_time
        states = np.argwhere(self.size <= (n if within is None else within))  # [S, dims]
        q = order[tuple(states.T)]
        index = np.full(self.valid.shape, -1)
        index[tuple(states.T)] = np.arange(len(states))
        if lead == 1:
            x, rest = states[:, 0] + q, np.zeros((len(states), 0), int)
        else:
            x, rest = states[:, 0], np.column_stack([states[:, 1:], q])  # w_1 .. w_{L-1}
        cost = self.day_cost[x] + self.order_cost[q]
        prob = self.move[x]  # [S, k]
        k = np.arange(n + 1)
        nxt = np.empty((len(states), n + 1, self.dims), int)
        nxt[..., 0] = k[None, :] + (rest[:, :1] if lead >= 2 else 0)
        if lead >= 3:
            nxt[..., 1:] = rest[:, None, 1:]
        src, col = np.nonzero(prob > 0)
        dst = index[tuple(nxt[src, col].T)]
        if np.any(dst < 0):
            raise ValueError(f"the order table leaves the states with |u| <= {within}")
        size = len(states)
        p = sparse.csr_matrix((prob[src, col], (src, dst)), shape=(size, size))
        balance = (p.T - sparse.identity(size, format="csr")).tocsr()
        # one balance equation is redundant (the rows sum to 0): normalize instead
        a = sparse.vstack([np.ones((1, size)), balance[1:]], format="csc")
        rhs = np.zeros(size)
        rhs[0] = 1.0
        return float(spsolve(a, rhs) @ cost)


class LostSalesDPPolicy:
    """The optimal policy of :func:`solve` for the one node and lane of ``layout``: reads
    on hand and the pipeline (slot = arrival day % P) and orders from the table."""

    name = "lost-sales-dp"

    def __init__(self, layout: Layout, dp: LostSalesDP):
        if layout.num_nodes != 1 or layout.num_lanes != 1:
            raise ValueError("the lost-sales DP policy runs one node with one lane")
        lane = layout.network.lanes[0]
        if lane.lead_time.distribution != "deterministic" or lane.lead_time.law.mean != (
            dp.model.lead_time
        ):
            raise ValueError(
                f"the lost-sales DP was solved for lead time {dp.model.lead_time} days, "
                f"the lane has {lane.lead_time.describe()}"
            )
        self.layout, self.dp = layout, dp

    def act(self, state: State) -> Decision:
        known = state.known_pipeline  # known arrival days, never the true ones
        lead, slots = self.dp.model.lead_time, known.shape[2]
        due = (state.day + np.arange(1, lead)) % slots
        arriving = known[:, 0, due]  # [B, L-1]
        return Decision(self.dp.orders(state.on_hand[:, 0], arriving)[:, None])
