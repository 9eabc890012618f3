"""Rolling-horizon LP policy (``--policy rolling-lp``): plan ``horizon`` days on a demand
forecast, release the first day's orders, re-plan tomorrow.

Each day and replication it solves the flow LP of :mod:`solvers.flowlp` from today's
state (on hand, backlogs, owed orders, what is in transit and when it lands) over days
``0..H-1``, where day 0 is today after its demand (only today's orders and shipments are
decided) and days ``1..H-1`` carry forecast demand. What it knows, and only that:

  * demand forecast: ``calendar`` (default) -- each node's model mean times the known
    calendar (weekly and annual seasonality, promotions, surges with a fixed start day);
    random surges are not forecast -- or ``moving-average`` of the last ``window`` days
    of observed demand (per node; the calendar mean until there is history). It never
    reads realized future demand;
  * lead times: each lane's planning lead time (``lead_quantile``): by default the
    quantile ``p / (p + h)`` of its drawn lead time (extra delays included) at the
    destination's penalty ``p`` and holding cost ``h`` -- a safety time; ``mean``: the
    exact mean of a draw, rounded (at least 1 day);
  * capacities: nominal, or an announced outage's fraction (``state.alert``) for the
    whole plan.

A plan on the mean forecast holds no stock against forecast errors, so the plan keeps a
safety stock at customer-facing nodes: from the day an order placed today could arrive,
end-of-day stock below ``z x sigma`` costs the node's backorder penalty per unit-day
(``sigma = sqrt(L var(d) + mean(d)^2 var(lead))``: ``L`` the longest chain of expected
lead times from raw material into the node, ``var(d)`` the variance of its daily demand,
``var(lead)`` that of its inbound lead time; ``z``: ``safety``, by
default the newsvendor fractile ``Phi^-1(p / (p + h))`` of the node's penalty ``p`` and
holding cost ``h``; ``safety = 0``: none, the plain deterministic LP). Orders are
continuous (lanes with a lot size are rounded up to whole lots, as the classical
policies do); a lane with a fixed order cost ``K`` orders only every ``T`` days, its EOQ
cycle ``round(sqrt(2 K / (h D)))`` (``h`` the destination's holding cost, ``D`` the
lane's mean daily flow; ``order_cycle = "daily"``: every day, as before); budgets
and contracts are ignored: run it in hybrid mode to enforce them. Planned lateral
transfers of today are proposed too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from fedinv.model.layout import Layout
from fedinv.model.network import Scenario
from fedinv.policies.classical import flow_stats, streams_of
from fedinv.sim.simulator import Decision, State
from solvers.flowlp import FlowInputs, solve_flow
from solvers.program import ProjectionProgram

FORECASTS = ("calendar", "moving-average")
ORDER_CYCLES = ("eoq", "daily")


class RollingLP:
    """Rolling-horizon LP policy over ``horizon`` days (default: the longest chain of
    expected lead times plus 7 days)."""

    name = "rolling-lp"

    def __init__(
        self,
        layout: Layout,
        scenario: Scenario,
        horizon: int | None = None,
        forecast: str = "calendar",
        window: int = 28,
        safety: float | str = "newsvendor",
        lead_quantile: float | str = "newsvendor",
        order_cycle: str = "eoq",
        time_limit: float = 60.0,
    ):
        if forecast not in FORECASTS:
            raise ValueError(f"forecast must be one of {', '.join(FORECASTS)}, got {forecast!r}")
        if horizon is not None and (
            isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 2
        ):
            raise ValueError(f"horizon must be an integer >= 2 (days), got {horizon!r}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an integer >= 1 (days), got {window!r}")
        self.layout = lay = layout
        self.scenario = scenario
        if lay.order_lead.any():
            raise ValueError(
                f"{self.name} cannot model order lead times (its flow LP fills an order the "
                f"day it is placed); scenario {scenario.name!r} has them"
            )
        self.forecast = forecast
        self.window = window
        self.time_limit = float(time_limit)
        self.lead_quantile = lead_quantile
        self.expected_lead = self._planning_lead(lead_quantile)
        self.horizon = int(horizon or self._chain_lead() + 7)
        if order_cycle not in ORDER_CYCLES:
            raise ValueError(
                f"order_cycle must be one of {', '.join(ORDER_CYCLES)}, got {order_cycle!r}"
            )
        self.order_cycle = order_cycle
        self._known = ProjectionProgram(layout, scenario.outages)
        self.cycle = self._order_cycles() if order_cycle == "eoq" else np.ones(lay.num_lanes, int)
        self.safety = safety
        self.floor, self.floor_start = self._safety_stock(safety)
        self._history: list[np.ndarray] = []

    def order_days(self, day: int) -> np.ndarray:
        """``[H, M]`` bool: plan days ``day .. day+H-1`` on which each lane may order."""
        k = np.arange(self.horizon)
        return ((day + k[:, None]) % self.cycle[None, :]) == 0

    def order_limits(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The safety layer's per-day limits on orders (production, shipping and
        assembly rows of :class:`solvers.program.ProjectionProgram`): coefficients
        ``[R, M]``, nominal right-hand sides ``[R]`` (units/day) and each row's node ``[R]``
        (whose capacity factor scales it)."""
        prog = self._known
        a, cap, node = [], [], []
        for g in prog.groups:
            if g.kind not in ("production", "shipping", "assembly"):
                continue
            nodes = prog._cap_node[g.kind]
            a.append(g.a[:, : self.layout.num_lanes])  # lanes only (no transfer columns)
            cap.append(self.layout.capacity[nodes] * prog._cap_scale[g.kind])
            node.append(nodes)
        if not a:
            return np.zeros((0, self.layout.num_lanes)), np.zeros(0), np.zeros(0, int)
        return np.concatenate(a), np.concatenate(cap), np.concatenate(node)

    def _order_cycles(self) -> np.ndarray:
        """Per lane: days between order days -- the EOQ cycle (1 without a fixed cost),
        at most the days of flow one day's order may hold under the safety layer's
        per-day limits (production, shipping, assembly, transport)."""
        lay = self.layout
        st = streams_of(lay)
        fs = flow_stats(lay, st)
        flow = fs.mean[st.lane_stream] * lay.lane_share  # units/day on the lane
        hold = np.where(
            lay.lane_comp >= 0,
            lay.comp_holding[np.maximum(lay.lane_comp, 0)] if lay.num_components else 0.0,
            lay.holding[lay.lane_dst],
        )
        ok = (lay.fixed_cost > 0) & (flow > 0) & (hold > 0)
        t = np.sqrt(2 * lay.fixed_cost / np.where(ok, hold * flow, 1.0))
        t = np.where(ok, np.clip(np.round(t), 1, self.horizon // 2), 1)
        a, cap, _ = self.order_limits()
        fits = np.where(flow > 0, lay.transport_cap / np.maximum(flow, 1e-12), np.inf)
        for r in range(a.shape[0]):  # a cycle's order must fit one day's limit
            held = a[r] > 0
            days = cap[r] / max(float(a[r] @ flow), 1e-12)
            fits = np.where(held, np.minimum(fits, days), fits)
        return np.maximum(np.minimum(t, np.floor(fits)), 1).astype(int)

    def _planning_lead(self, q: float | str) -> np.ndarray:
        """Per lane: the lead time the plan assumes, days >= 1 -- the ``q`` quantile of the
        drawn lead time (extra delays included), ``newsvendor``: ``q = p / (p + h)`` of the
        destination's backorder penalty and holding cost (a safety time: a plan on the
        mean is late half the time), ``mean``: the exact mean of a draw, rounded."""
        lay = self.layout
        delays: dict[int, list] = {}
        for d in self.scenario.delays:
            delays.setdefault(lay.network.lane_index[d.lane], []).append(d)
        out = np.ones(lay.num_lanes, int)
        for m, lane in enumerate(lay.network.lanes):
            pmf = lane.lead_time.pmf()
            for d in delays.get(m, []):  # extra delay: 0 w.p. 1 - prob, else U{min..max}
                extra = np.zeros(d.max_days + 1)
                extra[0] = 1 - d.probability
                extra[d.min_days :] += d.probability / (d.max_days - d.min_days + 1)
                pmf = np.convolve(pmf, extra)
            if q == "mean":
                out[m] = max(1, int(round(float(np.dot(np.arange(len(pmf)), pmf)))))
                continue
            if q == "newsvendor":
                dst = lay.lane_dst[m]
                c = lay.lane_comp[m]
                pen = lay.penalty[dst]
                hold = lay.comp_holding[c] if c >= 0 else lay.holding[dst]
                qq = pen / (pen + hold) if pen > 0 else 0.5
            elif isinstance(q, int | float) and not isinstance(q, bool) and 0 < q < 1:
                qq = float(q)
            else:
                raise ValueError(
                    f"lead_quantile must be 'newsvendor', 'mean' or a number in (0, 1), got {q!r}"
                )
            out[m] = max(1, int(np.searchsorted(np.cumsum(pmf), qq - 1e-12)))
        return out

    def _safety_stock(self, safety: float | str) -> tuple[np.ndarray, np.ndarray]:
        """Per node: the safety-stock target (units) and the first plan day it applies."""
        lay = self.layout
        if safety == "newsvendor":
            p, h = lay.penalty, lay.holding
            z = np.where(p > 0, stats.norm.ppf(p / np.maximum(p + h, 1e-12)), 0.0)
        elif isinstance(safety, int | float) and not isinstance(safety, bool) and safety >= 0:
            z = np.full(lay.num_nodes, float(safety))
        else:
            raise ValueError(f"safety must be 'newsvendor' or a number >= 0, got {safety!r}")
        fs = flow_stats(lay)
        st = streams_of(lay)
        plain = st.slot < 0
        sigma = np.zeros(lay.num_nodes)
        chain = self._lead_into()[st.node[plain]]
        sigma[st.node[plain]] = np.sqrt(
            chain * fs.var[plain] + fs.mean[plain] ** 2 * fs.lead_var[plain]
        )
        floor = np.where(lay.customer, np.maximum(z, 0.0) * sigma, 0.0)
        first = np.array(
            [self.expected_lead[lay.inbound_lanes(i)].min(initial=1) for i in range(lay.num_nodes)]
        )
        return floor, first

    def _lead_into(self) -> np.ndarray:
        """Per node: the longest chain of expected lead times from raw material, days."""
        lay = self.layout
        into = np.zeros(lay.num_nodes)
        for i in lay.topo_order:
            lanes = lay.inbound_lanes(i)
            into[i] = (
                max(
                    self.expected_lead[m] + (into[lay.lane_src[m]] if lay.lane_src[m] >= 0 else 0.0)
                    for m in lanes
                )
                if len(lanes)
                else 0
            )
        return into

    def _chain_lead(self) -> int:
        """Longest path of expected lead times from raw material to a customer, days."""
        lay = self.layout
        below = np.zeros(lay.num_nodes)
        for i in lay.topo_order[::-1]:
            out = np.flatnonzero(lay.lane_src == i)
            if len(out):
                below[i] = max(self.expected_lead[m] + below[lay.lane_dst[m]] for m in out)
        ext = np.flatnonzero(lay.external)
        return int(max((self.expected_lead[m] + below[lay.lane_dst[m]] for m in ext), default=1))

    def calendar_mean(self, state: State, days: int) -> np.ndarray:
        """``[days, N]`` mean demand of days ``t .. t+days-1`` from the known calendar."""
        lay = self.layout
        k = np.arange(days)
        weekday = (state.weekday + k) % 7
        doy = (state.day_of_year - 1 + k) % 365 + 1
        day = state.day + k
        out = np.zeros((days, lay.num_nodes))
        for i, node in enumerate(lay.network.nodes):
            d = node.demand
            if d is None:
                continue
            if d.history:
                out[:, i] = d.base_mean
                continue
            mean = (
                d.base_mean
                * np.asarray(d.weekly, float)[weekday]
                * (1 + d.annual_amplitude * np.cos(2 * np.pi * (doy - d.annual_peak_day) / 365.0))
            )
            for pr in d.promotions:
                mean = mean * np.where(
                    (day >= pr.start_day) & (day <= pr.end_day), pr.multiplier, 1.0
                )
            for s in self.scenario.surges:
                if s.start_day is not None and s.region == lay.region[i]:
                    on = (day >= s.start_day) & (day < s.start_day + int(round(s.duration_days)))
                    mean = mean * np.where(on, s.multiplier, 1.0)
            out[:, i] = mean
        return out

    def _forecast(self, state: State) -> np.ndarray:
        """``[B, H, N]`` forecast demand (day 0, today, is past: 0)."""
        b, h = state.on_hand.shape[0], self.horizon
        cal = np.broadcast_to(self.calendar_mean(state, h), (b, h, self.layout.num_nodes)).copy()
        if self.forecast == "moving-average" and self._history:
            recent = np.stack(self._history[-self.window :])  # [W, B, N]
            cal[:] = recent.mean(axis=0)[:, None, :]
        cal[:, 0] = 0.0
        return cal

    def act(self, state: State) -> Decision:
        lay = self.layout
        if state.day == 0:
            self._history = []
        self._history.append(state.demand.copy())
        b_size = state.on_hand.shape[0]
        h = self.horizon
        demand = self._forecast(state)
        node_f = self._known.known_node_factor(state)
        lane_f = np.where((state.alert > 0) & self._known.lane_outage, self._known.lane_frac, 1.0)
        known = state.known_pipeline  # known arrival days, never the true ones
        p_len = known.shape[2]
        k = np.arange(h)
        slots = (state.day + k) % p_len
        arrivals = np.where((k >= 1) & (k < p_len), 1.0, 0.0)[None, :, None] * np.moveaxis(
            known[:, :, slots], 2, 1
        )  # [B, H, M]
        t_len = state.transfer_pipeline.shape[2]
        t_slots = (state.day + k) % t_len
        t_land = np.where((k >= 1) & (k < t_len), 1.0, 0.0)[None, :, None] * np.moveaxis(
            state.transfer_pipeline[:, :, t_slots], 2, 1
        )  # [B, H, T]
        dst_t = np.eye(lay.num_nodes)[lay.transfer_dst].reshape(lay.num_transfers, lay.num_nodes)
        lead = np.broadcast_to(self.expected_lead, (h, lay.num_lanes))
        floor = np.where(k[:, None] >= self.floor_start[None, :], self.floor[None, :], 0.0)
        open_days = self.order_days(state.day)
        orders = np.zeros((b_size, lay.num_lanes))
        transfers = np.zeros((b_size, lay.num_transfers))
        for b in range(b_size):
            data = FlowInputs(
                demand=demand[b],
                lead=lead,
                node_factor=np.broadcast_to(node_f[b], (h, lay.num_nodes)),
                lane_factor=np.broadcast_to(lane_f[b], (h, lay.num_lanes)),
                weight=np.ones(h),
                on_hand=state.on_hand[b].copy(),
                components=state.components[b].copy(),
                backlog=state.backlog[b].copy(),
                owed=state.owed[b].copy(),
                arrivals=arrivals[b],
                transfers_landing=t_land[b] @ dst_t,
                day0_events=False,
                floor=floor,
                floor_penalty=lay.penalty,
                order_open=open_days,
            )
            sol = solve_flow(
                lay, data, lost_sales=self.scenario.lost_sales, time_limit=self.time_limit
            )
            orders[b] = sol.orders[0]
            if lay.num_transfers:
                transfers[b] = sol.transfers[0]
        orders = np.where(orders > 1e-9, orders, 0.0)
        lot = lay.lot_size
        has = lot > 0
        orders = np.where(has, np.ceil(orders / np.where(has, lot, 1.0) - 1e-9) * lot, orders)
        return Decision(orders, transfers if lay.num_transfers else None)

    def options(self) -> dict[str, Any]:
        return {
            "horizon": self.horizon,
            "forecast": self.forecast,
            "window": self.window,
            "safety": self.safety,
            "lead_quantile": self.lead_quantile,
            "order_cycle": self.order_cycle,
        }
