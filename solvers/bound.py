"""The perfect-information LP bound: a lower bound on the cost of every policy.

For one replication the bound sees the whole realized future -- demand, lead times of
every shipment (extra delays included), outages -- and solves the network-flow LP of
:mod:`solvers.flowlp` over the whole horizon from the scenario's initial state. Any
policy's simulated trajectory is a feasible point of that LP (ship what the simulator
shipped, sell what it sold) whose LP cost is at most the simulated cost, so the LP
optimum is a lower bound on the ``total_cost_per_day`` of any policy on that
replication, in pure or hybrid mode. It relaxes: integrality and lot sizes, fixed
ordering costs, budgets, storage and contracts (counted, not enforced, by the
simulator), the simulator's priorities (customers first, proportional rationing) and
all information constraints. It is a bound, not a policy: report gaps to it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedinv.model.network import Scenario
from fedinv.sim.exogenous import draw_exogenous
from fedinv.sim.simulator import Simulator
from solvers.flowlp import FlowInputs, solve_flow


def perfect_information_bound(
    scenario: Scenario,
    replications: Sequence[int] | int = 1,
    days: int | None = None,
    time_limit: float = 600.0,
) -> np.ndarray:
    """Lower bound on the total cost per day (after warm-up, as
    :func:`fedinv.sim.run.simulate` counts it) of each replication, ``[R]`` $/day."""
    reps = range(replications) if isinstance(replications, int) else replications
    sim = Simulator(scenario, days=days)
    lay = sim.layout
    if lay.order_lead.any():
        delayed = [lane for lane, d in zip(lay.lane_ids, lay.order_lead, strict=True) if d]
        raise ValueError(
            f"the perfect-information bound cannot model order lead times (the flow LP "
            f"fills an order the day it is placed); scenario {scenario.name!r} has them on "
            f"{', '.join(delayed)}"
        )
    arrivals = lay.initial_transit[:, : sim.days].T  # units in transit on day 0 [K', M]
    exo = draw_exogenous(scenario, lay, reps, sim.days)
    warm = min(scenario.warmup_days, sim.days - 2)
    weight = (np.arange(sim.days) >= warm).astype(float)
    out = np.empty(exo.batch)
    for b in range(exo.batch):
        data = FlowInputs(
            demand=exo.demand[b],
            lead=exo.lead[b],
            node_factor=exo.node_factor[b],
            lane_factor=exo.lane_factor[b],
            weight=weight,
            on_hand=lay.initial.copy(),
            components=np.zeros(lay.num_components),
            backlog=np.zeros(lay.num_nodes),
            owed=np.zeros(lay.num_lanes),
            arrivals=np.pad(arrivals, ((0, sim.days - len(arrivals)), (0, 0))),
            transfers_landing=np.zeros((sim.days, lay.num_nodes)),
            day0_events=True,
        )
        sol = solve_flow(lay, data, lost_sales=scenario.lost_sales, time_limit=time_limit)
        out[b] = sol.cost / weight.sum()
    return out
