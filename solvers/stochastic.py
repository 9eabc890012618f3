"""Rolling-horizon stochastic programming (``--policy rolling-sp``).

Every ``resolve_every`` days, per replication, a sample-average LP over the whole
network: ``scenarios`` sampled futures of ``horizon`` days, each a copy of the flow LP of
:mod:`solvers.flowlp` (orders, shipments, owed orders, on hand, sales, backlog or lost
sales, components, assembly, transfers; transport, production, shipping and assembly
capacities) from today's state, with cost ``1/S`` times each copy's. The orders of plan
days ``0 .. resolve_every-1`` (and day 0's shipments and transfers) are **first stage**:
one value for every sampled future (non-anticipativity rows); everything later is
recourse, per future. Day 0's orders are released today, the later first-stage days'
orders on their days, then it solves again. What a future samples, and only that:

  * demand: each customer node's calendar mean (weekly and annual seasonality,
    promotions, fixed-date surges -- known in advance) times sampled random surges
    (each one's start probability and mean duration), through the inverse CDF of the
    node's demand distribution at fixed uniform quantiles (common random numbers:
    the quantiles are fixed, the calendar moves);
  * lead times: every shipment's lead time drawn from its lane's distribution, plus the
    lane's random extra delays (probability, min..max days);
  * outages: an announced one (``state.alert``) lasts a sampled geometric remaining
    spell of its mean duration (memoryless: what the policy knows about it); new ones
    start with their start probability.

The futures of each replication are drawn from a generator seeded by ``seed`` and a
digest of what the replication has shown so far (each day's demand, outage alerts and
delay notices: exogenous, drawn from ``(scenario seed, replication index)``), so that
a replication's orders do not depend on the batch it runs in; demand quantiles are
stratified (each day's and node's ``S`` quantiles are the midpoints of ``S`` equal
strata, in random order). The lead-time paths are drawn once per replication (they are
the matrix: which day's balance a shipment enters), the demand quantiles, surges and
outages every ``refresh`` days (0: once). The model is built once per replication; each
solve updates it in place -- column bounds (capacity factors, the order calendar) and
row bounds (today's stock, backlog, owed orders, what is in transit and when it lands,
demand), built once for future 0 and shifted by each future's demand where its
capacities are future 0's (costs depend on the lead-time paths only and stay) --
and HiGHS starts from the previous basis. (Redrawing lead times in place, moving matrix
entries with ``changeCoeff``, was measured: the basis it leaves needed 12,178 simplex
iterations, against 21,448 cold and ~2,000 warm.)

Plan periods: the first ``daily`` days one period each, the rest of the horizon in
periods of ``bucket`` days (:func:`solvers.flowlp.aggregate`: demand and arrivals summed,
capacities and per-day costs times the length, lead times rounded to the period that
holds the landing day), so that a future costs fewer columns and more futures fit the
same time. ``safety = z`` adds rolling-lp's stock floors at customer nodes to every
future; ``service`` multiplies the plan's backorder penalty (both tuned on training
replications, docs/hybrid.md).

Costs the LP cannot hold (fixed ordering costs need binaries): lanes with a fixed order
cost order only on their **order days**, every ``T = round(sqrt(2 K / (h D)))`` days
(EOQ cycle: ``K`` the fixed cost, ``h`` the destination's holding cost, ``D`` the lane's
mean daily flow; ``order_cycle = "daily"`` turns it off). Terminal value: stock left at
the plan's end (on hand, components, and shipments landing after it) is credited
``terminal`` times its replacement cost (raw material plus shipping along the cheapest
path), a final backlog charged the same, so the plan does not empty the network.
Budgets, storage and contracts are not in the LP: hybrid mode enforces them on the
released orders. Lanes with a lot size are rounded up to whole lots at release.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from fedinv.model.layout import Layout, capacity_times
from fedinv.model.network import Scenario
from fedinv.policies.projector import SolverError
from fedinv.sim.simulator import Decision, State
from solvers.flowlp import FlowInputs, FlowModel, aggregate, bucket_lengths, build_flow
from solvers.rolling import RollingLP

FEEDBACKS = ("release", "affine", "none")
"""Orders into customer nodes on first-stage days after the first: ``release`` -- the
plan's order plus the day's demand surprise (the plan does not know it will be
corrected), ``affine`` -- the same rule inside the program (non-anticipativity on the
rule's intercept), ``none`` -- the plan's order."""
AUTO_COLUMNS = 24_576
"""``scenarios = "auto"``: as many futures (4 to 64) as fit in this many LP columns."""
AUTO_BUCKET = 7
"""``bucket = "auto"``: days per period after the daily part of a weekly program (a program
re-solved daily plans every day)."""
AUTO_DAILY_DAYS = 14
"""``daily = None``: days planned day by day before the buckets (at least
``resolve_every``)."""
AUTO_SAFETY = 2.0
"""``safety = "auto"``: the stock-floor ``z`` of a program re-solved less often than daily
(few futures, a week of first-stage orders): chosen on electronics-5r's training
replications (docs/hybrid.md); a program re-solved daily (64 futures) has none."""
AUTO_DAILY_COLUMNS = 20_000
"""``resolve_every = "auto"``: daily when the whole program has at most this many
columns, weekly otherwise."""
HIGHS_OPTIONS: dict[str, Any] = {}
"""Extra HiGHS options of every rolling-sp model (measured alternatives, docs/hybrid.md)."""


@dataclass
class _Sample:
    """One replication's sampled futures, fixed between refreshes."""

    u: np.ndarray  # [S, H, N] demand quantiles in (0, 1)
    lead: np.ndarray  # [S, H, M] int days
    surge: np.ndarray  # [S, H, N] random-surge multipliers
    out_u: np.ndarray  # [S, H, K] uniforms for outage starts
    out_len: np.ndarray  # [S, H, K] geometric spell lengths
    out_rem: np.ndarray  # [S, K] remaining spell of an outage announced today


class _Model:
    """One replication's SAA model in HiGHS: block ``s`` is future ``s``'s flow LP."""

    def __init__(
        self,
        blocks: list[FlowModel],
        first: int,
        links: bool,
        time_limit: float,
        link_rhs: np.ndarray | None = None,
    ):
        import highspy

        from solvers.highs import highs_options, quiet_stdout

        self.blocks = blocks
        self.ncol = blocks[0].var.n
        self.nrow = blocks[0].row.n
        nb = len(blocks)
        ri, ci, v = [], [], []
        for j, fm in enumerate(blocks):
            ri.append(np.concatenate(fm.row.ri) + j * self.nrow)
            ci.append(np.concatenate(fm.row.ci) + j * self.ncol)
            v.append(np.concatenate(fm.row.v))
        # non-anticipativity: x[s] - x[0] = 0 for the first-stage columns
        fm0 = blocks[0]
        shared = [fm0.o[:first].ravel(), fm0.s[:1].ravel()]
        if fm0.tr is not None:
            shared.append(fm0.tr[:first].ravel())
        self.shared = np.concatenate(shared)
        n_link = (nb - 1) * len(self.shared) if links else 0
        base = nb * self.nrow
        if n_link:
            rows = base + np.arange(n_link)
            for j in range(1, nb):
                r = rows[(j - 1) * len(self.shared) : j * len(self.shared)]
                ri += [r, r]
                ci += [self.shared + j * self.ncol, self.shared]
                v += [np.ones(len(r)), -np.ones(len(r))]
        rows, cols, vals = np.concatenate(ri), np.concatenate(ci), np.concatenate(v)
        order = np.lexsort((cols, rows))
        rows, cols, vals = rows[order], cols[order], vals[order]
        n_rows = base + n_link
        starts = np.searchsorted(rows, np.arange(n_rows)).astype(np.int32)
        lo, hi, cost, rlo, rhi = self._bounds(blocks)
        with quiet_stdout():
            h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("time_limit", float(time_limit))
        # one thread where the process's global HiGHS scheduler allows it (a first solve
        # elsewhere in the process may have fixed it: then "threads" would fail the run)
        if "threads" in highs_options():
            h.setOptionValue("threads", 1)
        for key, val in HIGHS_OPTIONS.items():
            h.setOptionValue(key, val)
        n = len(lo)
        h.addVars(n, lo, hi)
        h.changeColsCost(n, np.arange(n, dtype=np.int32), cost)
        link = np.zeros(n_link) if link_rhs is None else link_rhs
        rlo = np.concatenate([rlo, link])
        rhi = np.concatenate([rhi, link])
        h.addRows(n_rows, rlo, rhi, len(vals), starts, cols.astype(np.int32), vals)
        self.h = h
        self.n_link = n_link
        self._cols = np.arange(n, dtype=np.int32)
        self._rows = np.arange(n_rows, dtype=np.int32)
        self.solves = 0
        self.iterations = 0

    @staticmethod
    def _bounds(blocks: list[FlowModel]):
        cat = np.concatenate
        lo = cat([cat(fm.var.lo) for fm in blocks])
        hi = cat([cat(fm.var.hi) for fm in blocks])
        cost = cat([cat(fm.var.cost) for fm in blocks])
        rlo = cat([cat(fm.row.lo) for fm in blocks])
        rhi = cat([cat(fm.row.hi) for fm in blocks])
        return lo, hi, cost, rlo, rhi

    def update(
        self,
        bounds: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
        link_rhs: np.ndarray | None = None,
    ) -> None:
        """Push today's column and row bounds ``lo, hi, rlo, rhi`` of every future (same
        matrix, same costs: both depend on the lead-time paths only) and the right-hand
        sides of the non-anticipativity rows into the model; the basis is kept (a warm
        start)."""
        lo, hi, rlo, rhi = bounds
        link = np.zeros(self.n_link) if link_rhs is None else link_rhs
        rlo, rhi = np.concatenate([rlo, link]), np.concatenate([rhi, link])
        self.h.changeColsBounds(len(lo), self._cols, lo, hi)
        self.h.changeRowsBounds(len(rlo), self._rows, rlo, rhi)

    def solve(self) -> np.ndarray:
        import highspy

        self.h.run()
        status = self.h.getModelStatus()
        if status != highspy.HighsModelStatus.kOptimal:
            raise SolverError(f"rolling-sp: HiGHS status {self.h.modelStatusToString(status)}")
        self.solves += 1
        self.iterations += int(self.h.getInfo().simplex_iteration_count)
        return np.asarray(self.h.getSolution().col_value)


class RollingSP(RollingLP):
    """Rolling-horizon two-stage stochastic program (sample average over ``scenarios``
    sampled futures of ``horizon`` days), re-solved every ``resolve_every`` days.
    Default horizon: the longest chain of mean lead times plus 7 days, or plus 2 where the
    program is re-solved daily. The plan: ``daily`` one-day periods, then periods of
    ``bucket`` days; ``safety``: the ``z`` of stock floors at customer nodes; ``service``:
    a weight on the plan's backorder penalty ("auto" values: module constants)."""

    name = "rolling-sp"

    def __init__(
        self,
        layout: Layout,
        scenario: Scenario,
        horizon: int | None = None,
        scenarios: int | str = "auto",
        resolve_every: int | str = "auto",
        refresh: int = 28,
        bucket: int | str = "auto",
        daily: int | None = None,
        terminal: float = 1.0,
        service: float = 1.0,
        safety: float | str = "auto",
        order_cycle: str = "eoq",
        feedback: str = "release",
        seed: int = 0,
        time_limit: float = 600.0,
    ):
        for key, val, low in (
            ("scenarios", 1 if scenarios == "auto" else scenarios, 1),
            ("resolve_every", 1 if resolve_every == "auto" else resolve_every, 1),
            ("refresh", refresh, 0),
            ("bucket", 1 if bucket == "auto" else bucket, 1),
            ("daily", 1 if daily is None else daily, 1),
            ("seed", seed, 0),
        ):
            if isinstance(val, bool) or not isinstance(val, int) or val < low:
                raise ValueError(f"{key} must be 'auto' or an integer >= {low}, got {val!r}")
        if isinstance(terminal, bool) or not isinstance(terminal, int | float):
            raise ValueError(f"terminal must be a number in [0, 1], got {terminal!r}")
        if not 0.0 <= float(terminal) <= 1.0:
            raise ValueError(f"terminal must be a number in [0, 1], got {terminal!r}")
        if (
            isinstance(service, bool)
            or not isinstance(service, int | float)
            or not 1.0 <= float(service) <= 100.0
        ):
            raise ValueError(f"service must be a number in [1, 100], got {service!r}")
        if safety != "auto" and (
            isinstance(safety, bool) or not isinstance(safety, int | float) or safety < 0
        ):
            raise ValueError(f"safety must be 'auto' or a number >= 0, got {safety!r}")
        if feedback not in FEEDBACKS:
            raise ValueError(f"feedback must be one of {', '.join(FEEDBACKS)}, got {feedback!r}")
        super().__init__(
            layout,
            scenario,
            horizon=horizon,
            safety=0.0,  # floors set below, once the schedule is known
            lead_quantile="mean",
            order_cycle=order_cycle,
            time_limit=time_limit,
        )
        lay = layout
        per_day = (
            3 * lay.num_lanes
            + lay.num_nodes
            + 2 * int(lay.customer.sum())
            + lay.num_components
            + len(lay.bom_nodes)
            + lay.num_transfers
        )  # columns of one future's flow LP per plan day
        # the plan's periods: `daily` days, then buckets of `bucket` days; the auto sizes
        # count them as for a weekly program, recomputed once resolve_every is known
        bucket_of = AUTO_BUCKET if bucket == "auto" else int(bucket)
        re_guess = 7 if resolve_every == "auto" else int(resolve_every)
        daily_of = max(AUTO_DAILY_DAYS if daily is None else int(daily), re_guess)
        self.length = bucket_lengths(self.horizon, daily_of, bucket_of)
        per_future = len(self.length) * per_day
        if scenarios == "auto":
            scenarios = int(np.clip(AUTO_COLUMNS // per_future, 4, 64))
        if resolve_every == "auto":
            daily_cols = scenarios * self.horizon * per_day
            resolve_every = 1 if daily_cols <= AUTO_DAILY_COLUMNS else 7
        if resolve_every == 1 and bucket == "auto":
            bucket_of = 1  # re-solved daily: a small program, planned day by day
        if horizon is None and resolve_every == 1:
            # re-solved daily: the longest chain of mean lead times plus 2 days (what today's
            # order reaches, and a day of use after it); longer plans let more of each
            # future's recourse see that future (serial-3: +0.47% at 6 days, +0.88% at 11)
            self.horizon = self._chain_lead() + 2
            if order_cycle == "eoq":
                self.cycle = self._order_cycles()
        daily_of = max(AUTO_DAILY_DAYS if daily is None else int(daily), int(resolve_every))
        self.length = bucket_lengths(self.horizon, daily_of, bucket_of)
        per_future = len(self.length) * per_day
        self.auto = {"columns_per_future": per_future}
        if self.horizon <= resolve_every:
            raise ValueError(
                f"horizon ({self.horizon}) must exceed resolve_every ({resolve_every})"
            )
        self.scenarios = scenarios
        self.resolve_every = resolve_every
        self.refresh = refresh
        self.bucket = bucket_of
        self.daily = daily_of
        self.terminal = float(terminal)
        self.service = float(service)
        if safety == "auto":
            safety = AUTO_SAFETY if resolve_every > 1 else 0.0
        self.safety = float(safety)
        self.floor, self.floor_start = self._safety_stock(self.safety)
        self.feedback = feedback
        self.seed = seed
        self.value, self.comp_value = self._replacement_value()
        into_customer = lay.customer[lay.lane_dst] & (lay.lane_comp < 0) & (self.cycle == 1)
        self._fb_mat = lay.dst_mat * (into_customer * lay.lane_share)[:, None]  # [M, N]
        self._outage_setup()
        a, cap, node = self.order_limits()
        tr = np.flatnonzero(np.isfinite(lay.transport_cap))
        self._limit_a = np.concatenate([a, np.eye(lay.num_lanes)[tr]])
        self._limit_nominal, self._limit_node, self._limit_lane = cap, node, tr
        self._reset(0)

    # -- static data -------------------------------------------------------------------

    def _replacement_value(self) -> tuple[np.ndarray, np.ndarray]:
        """$ per unit to bring a unit to each node ``[N]`` and component slot ``[C]``:
        raw material plus shipping along the cheapest inbound lanes, through the BOM."""
        lay = self.layout
        val = np.zeros(lay.num_nodes)
        comp = np.zeros(lay.num_components)
        for i in lay.topo_order:
            lanes = lay.inbound_lanes(i)
            if not len(lanes):
                continue
            lane_v = np.array(
                [
                    (lay.price[m] if lay.external[m] else val[lay.lane_src[m]])
                    + lay.shipping_cost[m]
                    for m in lanes
                ]
            )
            slots = lay.lane_comp[lanes]
            if (slots >= 0).any():
                for c in np.unique(slots[slots >= 0]):
                    comp[c] = lane_v[slots == c].min()
                mine = np.flatnonzero(lay.comp_node == i)
                val[i] = float((lay.comp_bom[mine] * comp[mine]).sum())
            else:
                val[i] = lane_v.min()
        return val, comp

    def _outage_setup(self) -> None:
        lay, sc = self.layout, self.scenario
        k = len(sc.outages)
        self.out_node = np.full(k, -1)
        self.out_lane = np.full(k, -1)
        self.out_alert = np.zeros((lay.num_lanes, k))  # lanes whose alert announces it
        nidx, lidx = lay.network.node_index, lay.network.lane_index
        for j, o in enumerate(sc.outages):
            if o.target in nidx:
                i = nidx[o.target]
                self.out_node[j] = i
                aff = (lay.lane_src == i) | (lay.external & (lay.lane_dst == i))
            else:
                self.out_lane[j] = lidx[o.target]
                aff = np.arange(lay.num_lanes) == self.out_lane[j]
            self.out_alert[aff, j] = 1.0
        self.out_p = np.array([o.start_probability for o in sc.outages])
        self.out_mean = np.array([max(o.mean_duration_days, 1.0) for o in sc.outages])
        self.out_frac = np.array([o.capacity_fraction for o in sc.outages])
        self.out_fixed = np.array([o.start_day is not None for o in sc.outages], bool)
        self.random_surges = [s for s in sc.surges if s.start_day is None]
        self.delays = [(lay.network.lane_index[d.lane], d) for d in sc.delays]

    # -- sampling ----------------------------------------------------------------------

    def _draw(self, rng: np.random.Generator) -> _Sample:
        lay = self.layout
        s, h, n, m = self.scenarios, self.horizon, lay.num_nodes, lay.num_lanes
        # stratified: each day's and node's S quantiles are the S strata midpoints, in an
        # independent random order per day and node
        u = (np.argsort(rng.random((s, h, n)), axis=0) + 0.5) / s
        lead = np.empty((s, h, m), np.int64)
        for j, lane in enumerate(lay.network.lanes):
            lead[:, :, j] = lane.lead_time.sample(rng, (s, h))
        for j, d in self.delays:
            late = rng.random((s, h)) < d.probability
            lead[:, :, j] += np.where(late, rng.integers(d.min_days, d.max_days + 1, (s, h)), 0)
        surge = np.ones((s, h, n))
        for sg in self.random_surges:
            if sg.start_probability <= 0:
                continue
            on = _spells(rng, s, h, sg.start_probability, max(sg.duration_days, 1.0))
            in_region = (lay.region == sg.region) & lay.customer
            surge[:, :, in_region] *= np.where(on, sg.multiplier, 1.0)[:, :, None]
        k = len(self.out_p)
        out_u = rng.random((s, h, k))
        out_len = rng.geometric(1.0 / self.out_mean, size=(s, h, k)) if k else np.zeros((s, h, 0))
        out_rem = rng.geometric(1.0 / self.out_mean, size=(s, k)) if k else np.zeros((s, 0))
        return _Sample(u, lead, surge, out_u, out_len, out_rem)

    def _demand(self, mean: np.ndarray, u: np.ndarray) -> np.ndarray:
        """``[S, H, N]`` demand at quantiles ``u`` of each node's distribution around
        ``mean [S, H, N]``."""
        out = np.zeros_like(mean)
        for i, node in enumerate(self.layout.network.nodes):
            d = node.demand
            if d is None:
                continue
            mu, q = mean[:, :, i], u[:, :, i]
            if d.history:
                out[:, :, i] = np.quantile(np.asarray(d.history, float), q)
                continue
            base = d.base_mean if d.base_mean > 0 else 1.0
            match d.distribution:
                case "poisson":
                    out[:, :, i] = stats.poisson.ppf(q, np.maximum(mu, 1e-12))
                case "negative_binomial":
                    r = d.dispersion
                    out[:, :, i] = stats.nbinom.ppf(q, r, r / (r + np.maximum(mu, 1e-12)))
                case "normal":
                    out[:, :, i] = np.maximum(mu + d.std * mu / base * stats.norm.ppf(q), 0.0)
                case "uniform":
                    out[:, :, i] = (d.low + np.floor(q * (d.high - d.low + 1))) * mu / base
                case _:
                    out[:, :, i] = mu
        return out

    def _outages(self, state: State, b: int, smp: _Sample) -> tuple[np.ndarray, np.ndarray]:
        """``[S, H, N]`` node and ``[S, H, M]`` lane capacity factors of the futures."""
        lay = self.layout
        s, h = self.scenarios, self.horizon
        node_f = np.ones((s, h, lay.num_nodes))
        lane_f = np.ones((s, h, lay.num_lanes))
        if not len(self.out_p):
            return node_f, lane_f
        announced = (state.alert[b] @ self.out_alert) > 0  # [K]
        k_days = np.arange(h)
        for j in range(len(self.out_p)):
            if self.out_fixed[j]:  # a fixed window is known only once announced
                on = announced[j] & (k_days[None, :] < smp.out_rem[:, j : j + 1])
            else:
                on = _spells_from(
                    smp.out_u[:, :, j] < self.out_p[j],
                    smp.out_len[:, :, j],
                    np.where(announced[j], smp.out_rem[:, j], 0),
                )
            fac = np.where(on, self.out_frac[j], 1.0)
            if self.out_node[j] >= 0:
                node_f[:, :, self.out_node[j]] = np.minimum(node_f[:, :, self.out_node[j]], fac)
            else:
                lane_f[:, :, self.out_lane[j]] = np.minimum(lane_f[:, :, self.out_lane[j]], fac)
        return node_f, lane_f

    # -- the model ---------------------------------------------------------------------

    def _reset(self, batch: int) -> None:
        self._seen = [hashlib.blake2b(digest_size=16) for _ in range(batch)]
        self._sample: list[_Sample | None] = [None] * batch
        self._model: list[_Model | None] = [None] * batch
        self._plan: list[tuple] = [(-(10**9), None, None, None)] * batch
        self._drawn = [-(10**9)] * batch
        self.solve_s: list[float] = []
        self.build_s: list[float] = []
        self.data_s: list[float] = []

    def _observe(self, state: State) -> None:
        """Fold today's exogenous observations of each row (demand, outage alerts, delay
        notices) into its replication's running digest."""
        for b, seen in enumerate(self._seen):
            for x in (state.demand[b], state.alert[b], state.delay_notice[b]):
                seen.update(np.ascontiguousarray(x, np.float64).tobytes())

    def _rng_of(self, b: int) -> np.random.Generator:
        """The generator of row ``b``'s next draw: seeded by ``seed`` and the digest of what
        its replication has shown so far (a function of the replication, drawn from
        ``(scenario seed, replication index)``, and not of the batch it shares)."""
        key = np.frombuffer(self._seen[b].digest(), np.uint32)
        return np.random.default_rng(np.random.SeedSequence([self.seed, *key.tolist()]))

    def _inputs(self, state: State, b: int, smp: _Sample) -> list[FlowInputs]:
        """Future ``s``'s flow-LP data of replication row ``b`` today, for every ``s``."""
        lay = self.layout
        h, s_n = self.horizon, self.scenarios
        k = np.arange(h)
        cal = self.calendar_mean(state, h)  # [H, N]
        mean = cal[None] * smp.surge
        demand = self._demand(mean, smp.u)
        demand[:, 0] = 0.0
        self._futures_demand = demand  # [S, H, N]
        node_f, lane_f = self._outages(state, b, smp)
        known = state.known_pipeline  # known arrival days, never the true ones
        p_len = known.shape[2]
        slots = (state.day + k) % p_len
        due = np.where((k >= 1) & (k < p_len), 1.0, 0.0)[:, None]
        arrivals = due * known[b, :, slots]  # [H, M]
        t_len = state.transfer_pipeline.shape[2]
        t_slots = (state.day + k) % t_len
        t_land = (
            np.where((k >= 1) & (k < t_len), 1.0, 0.0)[:, None]
            * state.transfer_pipeline[b, :, t_slots]
        )
        dst_t = np.eye(lay.num_nodes)[lay.transfer_dst].reshape(lay.num_transfers, lay.num_nodes)
        open_days = self.order_days(state.day)
        floor = None
        if self.floor.any():  # stock floors at customer nodes (rolling-lp's buffer)
            floor = np.where(k[:, None] >= self.floor_start[None, :], self.floor[None, :], 0.0)
        daily = [
            FlowInputs(
                demand=demand[s],
                lead=smp.lead[s],
                node_factor=node_f[s],
                lane_factor=lane_f[s],
                weight=np.ones(h),
                on_hand=state.on_hand[b].copy(),
                components=state.components[b].copy(),
                backlog=state.backlog[b].copy(),
                owed=state.owed[b].copy(),
                arrivals=arrivals,
                transfers_landing=t_land @ dst_t,
                day0_events=False,
                order_open=open_days,
                order_rows=self._limit_a,
                order_cap=self._limit_cap(node_f[s], lane_f[s]),
                floor=floor,
                floor_penalty=lay.penalty if floor is not None else None,
            )
            for s in range(s_n)
        ]
        if self.length.max() == 1:
            return daily
        return [aggregate(x, self.length) for x in daily]  # the plan's periods

    def _build(self, data: FlowInputs) -> FlowModel:
        fm = build_flow(
            self.layout, data, lost_sales=self.scenario.lost_sales, fixed_structure=True
        )
        self._terminal(fm, self.scenarios)
        return fm

    def blocks(self, state: State, b: int, smp: _Sample) -> list[FlowModel]:
        """Future ``s``'s flow LP of replication row ``b`` today, for every ``s``."""
        return [self._build(data) for data in self._inputs(state, b, smp)]

    def bounds(self, state: State, b: int, smp: _Sample) -> tuple[np.ndarray, ...]:
        """Column and row bounds ``lo, hi, rlo, rhi`` of every future today, as
        :meth:`blocks` gives them, built once for future 0: the bounds do not depend on
        lead times, so a future with future 0's capacity factors differs from it only in
        its demand rows (by its demand minus future 0's); others are built in full."""
        inputs = self._inputs(state, b, smp)
        fm0 = self._build(inputs[0])
        cat = np.concatenate
        base = [cat(x) for x in (fm0.var.lo, fm0.var.hi, fm0.row.lo, fm0.row.hi)]
        cust = self.layout.customer
        parts: list[list[np.ndarray]] = [[], [], [], []]
        for data in inputs:
            if data is inputs[0]:
                got = base
            elif np.array_equal(data.node_factor, inputs[0].node_factor) and np.array_equal(
                data.lane_factor, inputs[0].lane_factor
            ):
                delta = (data.demand - inputs[0].demand)[:, cust].ravel()
                rlo, rhi = base[2].copy(), base[3].copy()
                rlo[fm0.demand_rows.ravel()] += delta
                rhi[fm0.demand_rows.ravel()] += delta
                got = [base[0], base[1], rlo, rhi]
            else:
                fm = self._build(data)
                got = [cat(x) for x in (fm.var.lo, fm.var.hi, fm.row.lo, fm.row.hi)]
            for acc, x in zip(parts, got, strict=True):
                acc.append(x)
        return tuple(cat(acc) for acc in parts)

    def link_rhs(self, demand: np.ndarray) -> np.ndarray | None:
        """Right-hand sides of the non-anticipativity rows ``x[s] - x[0]``: with
        ``feedback = "affine"``, an order of first-stage day ``k >= 1`` into a customer node is an
        affine rule, ``base + share x demand[k]`` with ``base`` shared by every future, so
        ``o[s] - o[0] = share x (demand[s] - demand[0])``; 0 everywhere else."""
        lay = self.layout
        r, s_n = self.resolve_every, self.scenarios
        if s_n == 1:
            return None
        diff = demand[1:, :r] - demand[:1, :r]  # [S-1, R, N]
        # with feedback "release" the plan is not told that the orders will be corrected
        if self.feedback == "affine":
            o_part = np.einsum("mn,skn->skm", self._fb_mat, diff)
            o_part[:, 0] = 0.0  # today's demand is known: day 0 is one order
        else:
            o_part = np.zeros((s_n - 1, r, lay.num_lanes))
        rest = np.zeros((s_n - 1, lay.num_lanes + r * lay.num_transfers))
        return np.concatenate([o_part.reshape(s_n - 1, -1), rest], axis=1).ravel()

    def _limit_cap(self, node_f: np.ndarray, lane_f: np.ndarray) -> np.ndarray:
        """``[H, R]`` right-hand sides of the per-day order limits: the safety layer's
        production, shipping and assembly rows, then transport, at a future's capacity
        factors (a factor 0 shuts even an unlimited capacity)."""
        lay = self.layout
        return np.concatenate(
            [
                capacity_times(self._limit_nominal[None, :], node_f[:, self._limit_node]),
                capacity_times(
                    lay.transport_cap[self._limit_lane][None, :], lane_f[:, self._limit_lane]
                ),
            ],
            axis=1,
        )

    def _terminal(self, fm: FlowModel, s_n: int) -> None:
        """Scale future costs by ``1/S`` and credit what is left at the plan's end."""
        lay = self.layout
        cost = np.concatenate(fm.var.cost) / s_n
        theta = self.terminal / s_n
        h = len(self.length)  # periods
        cost[fm.b] *= self.service  # the plan's backorder (lost-sale) penalty, weighted
        cost[fm.h[h - 1]] -= theta * self.value
        if fm.c is not None:
            cost[fm.c[h - 1]] -= theta * self.comp_value
        cust = np.flatnonzero(lay.customer)
        if not self.scenario.lost_sales:
            cost[fm.b[h - 1]] += theta * self.value[cust]
        late = fm.land >= h  # shipments landing after the plan
        lane_val = np.where(
            lay.lane_comp >= 0,
            self.comp_value[np.maximum(lay.lane_comp, 0)] if lay.num_components else 0.0,
            self.value[lay.lane_dst],
        )
        cost[fm.s[late]] -= theta * np.broadcast_to(lane_val, late.shape)[late]
        sizes = np.cumsum([len(x) for x in fm.var.cost])[:-1]
        fm.var.cost = list(np.split(cost, sizes))

    def _solve(self, state: State, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Solve replication row ``b`` today: first-stage orders ``[R, M]``, transfers
        ``[R, T]`` and the demand the feedback is measured against on those days
        ``[R, N]`` (``affine``: future 0's; ``release``: the futures' mean)."""
        t = state.day
        t0 = time.process_time()
        redraw = self._sample[b] is None or (
            self.refresh > 0 and t - self._drawn[b] >= self.refresh
        )
        if redraw:
            old = self._sample[b]
            self._sample[b] = self._draw(self._rng_of(b))
            if old is not None:  # lead times stay: they are the matrix
                self._sample[b].lead = old.lead
            self._drawn[b] = t
        if self._model[b] is None:
            blocks = self.blocks(state, b, self._sample[b])
            t1 = time.process_time()
            self._model[b] = _Model(blocks, self.resolve_every, self.scenarios > 1, self.time_limit)
        else:
            bounds = self.bounds(state, b, self._sample[b])
            t1 = time.process_time()
            self._model[b].update(bounds)
        t2 = time.process_time()
        x = self._model[b].solve()
        t3 = time.process_time()
        self.data_s.append(t1 - t0)
        self.build_s.append(t2 - t1)
        self.solve_s.append(t3 - t2)
        fm = self._model[b].blocks[0]
        orders = x[fm.o[: self.resolve_every]]
        transfers = (
            x[fm.tr[: self.resolve_every]]
            if fm.tr is not None
            else np.zeros((self.resolve_every, 0))
        )
        r = self.resolve_every
        d = self._futures_demand[:, :r]
        return orders, transfers, (d[0] if self.feedback == "affine" else d.mean(axis=0))

    def act(self, state: State) -> Decision:
        lay = self.layout
        b_size = state.on_hand.shape[0]
        if state.day == 0 or len(self._model) != b_size:
            self._reset(b_size)
        self._observe(state)
        orders = np.zeros((b_size, lay.num_lanes))
        transfers = np.zeros((b_size, lay.num_transfers))
        for b in range(b_size):
            start, plan_o, plan_t, plan_d = self._plan[b]
            j = state.day - start
            if not 0 <= j < self.resolve_every:
                plan_o, plan_t, plan_d = self._solve(state, b)
                self._plan[b] = (state.day, plan_o, plan_t, plan_d)
                j = 0
            orders[b] = plan_o[j]
            if self.feedback != "none" and j > 0:  # today's demand surprise
                surprise = state.demand[b] - plan_d[j]
                orders[b] = np.maximum(orders[b] + self._fb_mat @ surprise, 0.0)
            if lay.num_transfers:
                transfers[b] = plan_t[j]
        orders = np.where(orders > 1e-9, orders, 0.0)
        lot = lay.lot_size
        has = lot > 0
        orders = np.where(has, np.ceil(orders / np.where(has, lot, 1.0) - 1e-9) * lot, orders)
        transfers = np.where(transfers > 1e-9, transfers, 0.0)
        return Decision(orders, transfers if lay.num_transfers else None)

    def options(self) -> dict[str, Any]:
        return {
            "horizon": self.horizon,
            "scenarios": self.scenarios,
            "resolve_every": self.resolve_every,
            "refresh": self.refresh,
            "bucket": self.bucket,
            "daily": self.daily,
            "terminal": self.terminal,
            "service": self.service,
            "safety": self.safety,
            "order_cycle": self.order_cycle,
            "feedback": self.feedback,
            "seed": self.seed,
        }


def _spells(rng: np.random.Generator, s: int, h: int, p: float, mean: float) -> np.ndarray:
    """``[S, H]`` on/off: a spell starts with probability ``p`` on an off day and lasts a
    geometric number of days of mean ``mean``."""
    return _spells_from(
        rng.random((s, h)) < p, rng.geometric(1.0 / mean, size=(s, h)), np.zeros(s, int)
    )


def _spells_from(start: np.ndarray, length: np.ndarray, remaining: np.ndarray) -> np.ndarray:
    """On/off ``[S, H]`` from start flags, spell lengths and a spell already on."""
    s, h = start.shape
    rem = np.asarray(remaining, int).copy()
    on = np.zeros((s, h), bool)
    for k in range(h):
        new = (rem == 0) & start[:, k]
        rem = np.where(new, length[:, k], rem)
        on[:, k] = rem > 0
        rem = np.maximum(rem - 1, 0)
    return on
