"""The safety layer (solvers/program.py, solvers/projection.py): real HiGHS solves, known
answers, properties."""

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedinv.hybrid import make_projector
from fedinv.model.network import (
    DemandModel,
    Lane,
    LeadTime,
    Network,
    Node,
    Organization,
    Scenario,
    Tier,
)
from fedinv.model.synthetic import random_scenario
from fedinv.policies.classical import make_policy
from fedinv.policies.projector import IdentityProjector, Projected, SolverError
from fedinv.sim.simulator import Simulator
from solvers.program import LOT_TOL, ProjectionProgram

_SIMS: dict = {}


def _sim(lanes: int, seed: int) -> Simulator:
    key = (lanes, seed)
    if key not in _SIMS:
        _SIMS[key] = Simulator(random_scenario(lanes, seed, horizon_days=10))
    return _SIMS[key]


def _random_state(sim: Simulator, rng: np.random.Generator, batch: int):
    """A day-0 state with random stock, pipeline, owed orders, month-to-date spend and
    orders, announced outages and (half the time) a month's last day."""
    state, _ = sim.reset(batch)
    lay = sim.layout
    state.on_hand = rng.uniform(0, 300, state.on_hand.shape)
    state.owed = rng.uniform(0, 50, state.owed.shape) * (rng.random(state.owed.shape) < 0.3)
    state.pipeline = rng.uniform(0, 40, state.pipeline.shape) * (
        rng.random(state.pipeline.shape) < 0.2
    )
    state.components = rng.uniform(0, 100, state.components.shape)
    state.month_spend = lay.budget * rng.uniform(0.3, 1.05, state.month_spend.shape)
    state.month_spend[~np.isfinite(state.month_spend)] = 0.0
    state.month_ordered = lay.commitment * rng.uniform(0, 1.2, state.month_ordered.shape)
    state.alert = (rng.random(state.alert.shape) < 0.3).astype(float)
    state.month_end = bool(rng.random() < 0.5)
    return state


def _check_released(prog: ProjectionProgram, state, out, p):
    """Hard constraints hold to 1e-6; every soft excess above 1e-6 has a record."""
    day = prog.day_data(state, prog.clean(p))
    ex = prog.excess(out.released, day)
    for kind in ("transport", "negative", "production", "shipping", "assembly"):
        if kind in ex:
            assert ex[kind].max(initial=0.0) <= 1e-6, kind
    assert ex["lot"].max(initial=0.0) <= LOT_TOL
    recorded = {(r.replication, r.kind, r.target): r.amount for r in out.relaxations}
    lanes = prog.layout.lane_ids
    for kind in ("storage", "budget", "contract"):
        if kind not in ex:
            continue
        targets = prog.group[kind].targets if kind in prog.group else lanes
        for b, r in zip(*np.nonzero(ex[kind] > 1e-6), strict=True):
            key = (b, kind, targets[r])
            assert key in recorded, (key, ex[kind][b, r])
            if not (kind == "storage" and day.raw_storage[b, r] < 0):
                assert math.isclose(recorded[key], ex[kind][b, r], rel_tol=1e-6, abs_tol=1e-6)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lanes=st.integers(10, 16),
    net_seed=st.integers(0, 3),
    seed=st.integers(0, 10**6),
    scale=st.sampled_from([0.5, 1.0, 3.0]),
)
def test_released_orders_satisfy_every_constraint_and_feasible_proposals_are_kept(
    lanes, net_seed, seed, scale
):
    sim = _sim(lanes, net_seed)
    rng = np.random.default_rng(seed)
    state = _random_state(sim, rng, batch=3)
    prog_outages = sim.scenario.outages
    p = rng.uniform(0, 60 * scale, (3, sim.layout.num_lanes)) * (rng.random((3, 1)) < 0.9)
    proj = make_projector(
        sim.layout, "highspy", outages=prog_outages, skip_feasible=False, fast_path=False
    )
    out = proj.project(state, p)
    assert out.solver_used.all()
    _check_released(proj.program, state, out, p)
    # the released orders are feasible (where nothing was relaxed): projecting them again,
    # with a real solve, gives them back
    clean = [b for b in range(3) if not any(r.replication == b for r in out.relaxations)]
    if clean:
        again = proj.project(state, out.released)
        np.testing.assert_allclose(again.released[clean], out.released[clean], atol=1e-6)
        assert np.all(again.distance[clean] <= 1e-6)
        fast = make_projector(sim.layout, "highspy", outages=prog_outages)
        kept = fast.project(state, out.released)
        assert not kept.solved[clean].any()
        np.testing.assert_array_equal(kept.released[clean], out.released[clean])


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_with_only_transport_capacities_the_projection_is_clipping(seed):
    rng = np.random.default_rng(seed)
    base = random_scenario(12, seed % 3, horizon_days=5).network
    nodes = tuple(replace(n, capacity=math.inf, storage_capacity=math.inf) for n in base.nodes)
    lanes = tuple(
        replace(
            ln,
            lot_size=0.0,
            min_monthly_commitment=0.0,
            transport_capacity=float(rng.uniform(0, 50)),
        )
        for ln in base.lanes
    )
    orgs = tuple(replace(o, monthly_budget=math.inf) for o in base.organizations)
    sim = Simulator(Scenario("box", Network(nodes, lanes, orgs), horizon_days=5))
    state, _ = sim.reset(2)
    p = rng.uniform(-10, 80, (2, len(lanes)))
    p[0, 0] = np.nan
    for backend, fast in (("highspy", False), ("pyomo", False), ("highspy", True)):
        proj = make_projector(sim.layout, backend, skip_feasible=False, fast_path=fast)
        out = proj.project(state, p)
        assert out.solver_used.any() != fast
        clip = np.clip(np.nan_to_num(p), 0.0, sim.layout.transport_cap)
        np.testing.assert_allclose(out.released, clip, atol=1e-9)
        np.testing.assert_allclose(
            out.distance, np.abs(clip - np.maximum(np.nan_to_num(p), 0)).sum(axis=1), atol=1e-7
        )
        assert not out.relaxations


def test_pyomo_and_highspy_reach_the_same_objective():
    """Every solver path -- highspy and Pyomo (lean and public ``solve()``), MILP
    directly or LP relaxation first -- reaches the same optimum."""
    certified = 0
    for lanes, net_seed in ((12, 0), (20, 1), (30, 2), (60, 3)):
        sim = Simulator(random_scenario(lanes, net_seed, horizon_days=10))
        rng = np.random.default_rng(lanes)
        kw = dict(outages=sim.scenario.outages, skip_feasible=False, fast_path=False)
        a = make_projector(sim.layout, "highspy", lp_first=False, **kw)
        others = [
            make_projector(sim.layout, "highspy", **kw),
            make_projector(sim.layout, "pyomo", **kw),
            make_projector(sim.layout, "pyomo", lean=False, lp_first=False, **kw),
        ]
        for _ in range(4):
            state = _random_state(sim, rng, batch=3)
            p = rng.uniform(0, 120, (3, sim.layout.num_lanes))
            ra = a.project(state, p)
            for b in others:
                rb = b.project(state, p)
                assert abs(a.last_solver_objective - b.last_solver_objective) <= 1e-6
                np.testing.assert_allclose(a.last_objective, b.last_objective, atol=1e-6)
                np.testing.assert_allclose(ra.distance, rb.distance, atol=1e-6)
                assert [(r.kind, r.target) for r in ra.relaxations] == [
                    (r.kind, r.target) for r in rb.relaxations
                ]
        certified += others[0].counts["lp_certified"]
    assert certified > 0  # the LP-first path was taken, not only its MILP fallback


_FAST: dict = {}


def _fast_and_reference(lanes: int, seed: int):
    """Projectors of one random network: fast path on (highspy), and the references
    without it: highspy MILP (no LP first) and Pyomo."""
    key = (lanes, seed)
    if key not in _FAST:
        sim = _sim(lanes, seed)
        kw = dict(outages=sim.scenario.outages, skip_feasible=False)
        _FAST[key] = (
            make_projector(sim.layout, "highspy", **kw),
            make_projector(sim.layout, "highspy", fast_path=False, lp_first=False, **kw),
            make_projector(sim.layout, "pyomo", fast_path=False, **kw),
        )
    return _FAST[key]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lanes=st.integers(10, 24),
    net_seed=st.integers(0, 3),
    seed=st.integers(0, 10**6),
    scale=st.sampled_from([0.5, 1.0, 3.0]),
    on_lots=st.booleans(),
)
def test_fast_path_answers_with_the_solvers_optimum(lanes, net_seed, seed, scale, on_lots):
    """Where the separable relaxation's optimum is feasible, it is released without a
    solve, and its objective is the optimum both solvers find for the full program."""
    sim = _sim(lanes, net_seed)
    rng = np.random.default_rng(seed)
    state = _random_state(sim, rng, batch=4)
    p = rng.uniform(0, 60 * scale, (4, sim.layout.num_lanes))
    lot = sim.layout.lot_size
    if on_lots:  # policies propose whole lots
        p = np.where(lot > 0, np.ceil(p / np.where(lot > 0, lot, 1.0)) * lot, p)
    fast, milp, pyomo = _fast_and_reference(lanes, net_seed)
    out = fast.project(state, p)
    _check_released(fast.program, state, out, p)
    answered = ~out.solver_used
    for ref in (milp, pyomo):
        o = ref.project(state, p)
        np.testing.assert_allclose(fast.last_objective, ref.last_objective, atol=1e-6)
        np.testing.assert_allclose(out.distance, o.distance, atol=1e-6)
        if answered.any():
            # the same orders (the optimum is unique up to solver noise)
            np.testing.assert_allclose(out.released[answered], o.released[answered], atol=1e-5)


def test_fast_path_answers_most_benchmark_days_exactly():
    """The daily-solve benchmark's days (base-stock x U(0.5, 2.5): mostly infeasible)."""
    from fedinv.bench.lp import _days

    scenario, layout, days = _days(40, 40, seed=7)
    kw = dict(outages=scenario.outages, skip_feasible=False)
    fast = make_projector(layout, "highspy", **kw)
    refs = [
        make_projector(layout, "highspy", fast_path=False, lp_first=False, **kw),
        make_projector(layout, "pyomo", fast_path=False, **kw),
    ]
    for state, p in days:
        out = fast.project(state, p)
        _check_released(fast.program, state, out, p)
        for ref in refs:
            ref.project(state, p)
            np.testing.assert_allclose(fast.last_objective, ref.last_objective, atol=1e-6)
    c = fast.counts
    assert c["days"] == len(days) and c["fast_path"] + c["solver"] == c["infeasible"]
    assert c["fast_path"] >= 0.5 * c["infeasible"] > 0


def _row_scenario(capacity: float, lots: tuple[float, float]) -> Scenario:
    """A plant with a shipping capacity serving two stores (lanes plant->a, plant->b,
    lot sizes ``lots``), bought from a supplier."""
    nodes = (
        Node("sup", Tier.SUPPLIER, "R", "o"),
        Node("plant", Tier.MANUFACTURER, "R", "o", capacity=capacity),
        Node("a", Tier.DISTRIBUTOR, "R", "o", demand=DemandModel("deterministic", 1)),
        Node("b", Tier.DISTRIBUTOR, "R", "o", demand=DemandModel("deterministic", 1)),
    )
    lanes = (
        Lane("external", "sup"),
        Lane("sup", "plant"),
        Lane("plant", "a", lot_size=lots[0]),
        Lane("plant", "b", lot_size=lots[1]),
    )
    return Scenario("row", Network(nodes, lanes, (Organization("o"),)), horizon_days=5)


@pytest.mark.parametrize("backend", ["highspy", "pyomo"])
@pytest.mark.parametrize("fast", [True, False])
def test_lot_lane_rounded_up_when_cutting_the_other_lane_is_cheaper(backend, fast):
    """Capacity 250, proposals 200 (lot 100, weight 1) and 100 (no lot, weight 1.5):
    cutting the lot lane to 100 costs 100, cutting the other lane by 50 costs 75; the
    continuous relaxation would cut the lot lane to 150, off its lattice."""
    sim = Simulator(_row_scenario(250.0, (100.0, 0.0)))
    state, _ = sim.reset(1)
    proj = make_projector(
        sim.layout, backend, weights=np.array([1.0, 1.0, 1.0, 1.5]), fast_path=fast
    )
    out = proj.project(state, np.array([[0.0, 0.0, 200.0, 100.0]]))
    np.testing.assert_allclose(out.released, [[0.0, 0.0, 200.0, 50.0]], atol=1e-6)
    assert out.distance[0] == pytest.approx(75.0, abs=1e-6)
    assert out.solver_used[0] != fast


@pytest.mark.parametrize("backend", ["highspy", "pyomo"])
def test_two_lot_lanes_in_one_row(backend):
    """Capacity 330, lots 100 and 40, proposals 200 and 160 (weights 1, 1.2): the best
    lot multiples are 200 + 120 = 320 (cost 48); 100 + 160 = 260 costs 100."""
    sim = Simulator(_row_scenario(330.0, (100.0, 40.0)))
    state, _ = sim.reset(1)
    p = np.array([[0.0, 0.0, 200.0, 160.0]])
    w = np.array([1.0, 1.0, 1.0, 1.2])
    fast = make_projector(sim.layout, backend, weights=w)
    milp = make_projector(sim.layout, backend, weights=w, fast_path=False, lp_first=False)
    for proj in (fast, milp):
        out = proj.project(state, p)
        np.testing.assert_allclose(out.released, [[0.0, 0.0, 200.0, 120.0]], atol=1e-6)
        assert out.distance[0] == pytest.approx(48.0, abs=1e-6)


def _contract_scenario(budget: float = 10_000.0, storage: float = math.inf) -> Scenario:
    """A store buying on one lane at $9 + $1 shipping per unit, committed to 1,000 units a
    month, with a monthly budget."""
    nodes = (
        Node(
            "store",
            Tier.DISTRIBUTOR,
            "R",
            "shop",
            holding_cost=1,
            stockout_penalty=5,
            storage_capacity=storage,
            demand=DemandModel("deterministic", 10),
        ),
    )
    lanes = (
        Lane(
            "external",
            "store",
            LeadTime(mean=1),
            price=9.0,
            shipping_cost=1.0,
            min_monthly_commitment=1000.0,
            transport_capacity=5000.0,
        ),
    )
    return Scenario(
        "contract", Network(nodes, lanes, (Organization("shop", budget),)), horizon_days=40
    )


def _month_end_state(sim: Simulator, spent: float, ordered: float):
    """The state on January 31 (day 30), with this month's spend and orders so far."""
    state, exo = sim.reset(1)
    while state.day < 30:
        state, _ = sim.step(state, exo, np.zeros((1, 1)))
    assert state.month_end
    state.month_spend[:] = spent
    state.month_ordered[:] = ordered
    state.exo = exo
    return state


@pytest.mark.parametrize("backend", ["highspy", "pyomo"])
def test_commitment_beyond_budget_is_relaxed_and_recorded_never_released(backend):
    sim = Simulator(_contract_scenario())
    # 1,000 units due by month end, $6,000 of $10,000 spent: $4,000 buy only 400 units
    state = _month_end_state(sim, spent=6000.0, ordered=0.0)
    proj = make_projector(sim.layout, backend)
    out = proj.project(state, np.zeros((1, 1)))
    assert out.released[0, 0] == pytest.approx(400.0, abs=1e-6)
    assert out.released[0, 0] * 10.0 <= 4000.0  # the budget holds
    (rel,) = out.relaxations
    assert (rel.kind, rel.target, rel.unit) == ("contract", "external->store", "units")
    assert rel.amount == pytest.approx(600.0, abs=1e-6)
    assert "budget of shop" in rel.reason and "1,000 units" in rel.reason
    # the simulator counts exactly that contract shortfall, and nothing else
    state, rec = sim.step(state, state.exo, out.released)
    assert rec["contract_violation"].sum() == pytest.approx(600.0, abs=1e-6)
    assert rec["budget_violation"].sum() == 0.0


def test_relaxation_order_is_configurable_budget_before_contract():
    sim = Simulator(_contract_scenario())
    state = _month_end_state(sim, spent=6000.0, ordered=0.0)
    proj = make_projector(sim.layout, "highspy", soft_order=("budget", "storage", "contract"))
    out = proj.project(state, np.zeros((1, 1)))
    assert out.released[0, 0] == pytest.approx(1000.0)
    (rel,) = out.relaxations
    assert (rel.kind, rel.target, rel.unit) == ("budget", "shop", "$")
    assert rel.amount == pytest.approx(6000.0, abs=1e-6)


def test_storage_headroom_below_commitment_relaxes_contract_first():
    sim = Simulator(_contract_scenario(budget=1e9, storage=300.0))
    state = _month_end_state(sim, spent=0.0, ordered=500.0)  # 500 still due, room for 300
    state.on_hand[:] = 0.0
    out = make_projector(sim.layout, "highspy").project(state, np.array([[50.0]]))
    assert out.released[0, 0] == pytest.approx(300.0)
    (rel,) = out.relaxations
    assert rel.kind == "contract" and rel.amount == pytest.approx(200.0)
    assert "storage of store" in rel.reason


def test_solver_trouble_raises_solver_error():
    scenario = load("electronics-5r")
    sim = Simulator(scenario, days=3)
    with pytest.raises(SolverError, match="unknown projection backend"):
        make_projector(sim.layout, "cplex")
    # a MILP that needs branching (fast path and LP-first off) under a zero time limit
    sim = Simulator(random_scenario(100, 100, horizon_days=5), days=3)
    state, _ = sim.reset(2)
    rng = np.random.default_rng(0)
    p = make_policy("base-stock", sim.layout).act(state).orders * rng.uniform(
        0.5, 2.5, (2, sim.layout.num_lanes)
    )
    for backend in ("highspy", "pyomo"):
        proj = make_projector(
            sim.layout,
            backend,
            outages=sim.scenario.outages,
            time_limit=0.0,
            fast_path=False,
            lp_first=False,
        )
        with pytest.raises(SolverError, match=f"{backend} backend, day 0.*time limit"):
            proj.project(state, p)


def test_projected_policy_reports_info_and_passes_transfers():
    scenario = load("electronics-5r")
    sim = Simulator(scenario, days=3)
    policy = Projected(
        make_policy("base-stock", sim.layout),
        make_projector(sim.layout, "highspy", outages=scenario.outages),
    )
    state, _ = sim.reset(2)
    d = policy.act(state)
    assert d.orders.shape == (2, sim.layout.num_lanes)
    assert set(d.info) >= {"projection_l1", "solve_ms", "solved", "relaxations", "relaxation_log"}
    assert d.info["projection_l1"].shape == (2,)
    # the identity projector releases the proposals (negatives read as 0) with the same
    # bookkeeping: the switch a trainer flips between pure and projected actions
    raw = make_policy("base-stock", sim.layout).act(state).orders
    same = Projected(make_policy("base-stock", sim.layout), IdentityProjector()).act(state)
    np.testing.assert_array_equal(same.orders, raw)
    assert np.all(same.info["projection_l1"] == 0)


def load(name):
    from fedinv.model.scenario import load_scenario

    return load_scenario(name)


@pytest.mark.parametrize(
    "name", ["serial-3", "single-node", "single-node-lost-sales", "beer-game", "electronics-5r"]
)
def test_hybrid_simulation_of_builtin_scenarios_counts_no_violations(name):
    """Every violation left in hybrid mode is explained: an outage not yet announced
    (the state said full capacity) or a recorded relaxation."""
    from fedinv.sim.exogenous import draw_exogenous
    from fedinv.sim.run import simulate

    scenario = load(name)
    days = 120 if name == "electronics-5r" else 40
    solver = "pyomo" if name == "serial-3" else "highspy"
    result = simulate(
        scenario,
        lambda lay: make_policy("base-stock", lay),
        replications=2,
        days=days,
        mode="hybrid",
        solver=solver,
    )
    assert {"projection_l1_per_day", "solve_ms_median", "solve_ms_p95", "relaxations"} <= set(
        result.per_replication.columns
    )
    violated = result.daily[result.daily.violations > 0]
    if not scenario.outages:
        assert violated.empty, violated
        return
    sim = Simulator(scenario, days=days)
    exo = draw_exogenous(scenario, sim.layout, result.replications, days)
    node = {n: i for i, n in enumerate(sim.layout.node_ids)}
    relaxed = {(r.replication, r.day) for r in result.relaxations.itertuples()}
    for row in violated.itertuples():
        b, t, i = result.replications.index(row.replication), row.day, node[row.node]
        unannounced = exo.node_factor[b, t, i] < 1.0 and not (
            exo.alert[b, t] @ (sim.layout.lane_src == i)
            + exo.alert[b, t] @ (sim.layout.external & (sim.layout.lane_dst == i))
        )
        assert unannounced or (row.replication, t) in relaxed, row


def test_hybrid_results_do_not_depend_on_the_batch():
    """Common random numbers survive the safety layer: a replication simulated alone or
    with others gets the same released orders (the optimum is unique)."""
    from fedinv.sim.run import simulate

    scenario = load("electronics-5r")

    def run(reps, first=0):
        return simulate(
            scenario,
            lambda lay: make_policy("base-stock", lay),
            replications=reps,
            first_replication=first,
            days=45,
            mode="hybrid",
            solver="highspy",
        )

    together = run(3).per_replication.total_cost_per_day.to_numpy()
    alone = [run(1, first=i).per_replication.total_cost_per_day.iloc[0] for i in range(3)]
    np.testing.assert_allclose(together, alone, rtol=1e-12)


def test_the_mode_is_decided_in_one_place():
    """``fedinv.hybrid.for_mode``: pure runs the policy itself, hybrid the policy behind
    the solver-backed projector; unknown modes and backends are refused by name."""
    from fedinv.hybrid import for_mode

    sim = Simulator(load("serial-3"), days=3)
    policy = make_policy("base-stock", sim.layout)
    assert for_mode(policy, "pure", sim.layout) is policy
    hybrid = for_mode(policy, "hybrid", sim.layout, backend="highspy", fast_path=False)
    assert isinstance(hybrid, Projected) and hybrid.policy is policy
    assert hybrid.projector.backend == "highspy" and not hybrid.projector.fast_path
    with pytest.raises(ValueError, match="unknown mode 'mixed'; choose one of pure, hybrid"):
        for_mode(policy, "mixed", sim.layout)
    with pytest.raises(SolverError, match="unknown projection backend 'cplex'"):
        for_mode(policy, "hybrid", sim.layout, backend="cplex")
