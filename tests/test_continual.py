"""Continual learning in the decision service (docs/service.md): what a service sees,
recorded into the organization's private data folder, is what ``fedinv data export``
writes for the same simulated days; ``POST /v1/retrain`` on a real server re-tunes in a
background process while decisions go on and swaps through the chain; the Analytics
Monitor's demand alert on the recorded days starts a retrain by itself."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from fedinv.federation.private_data import FILES, export_private_data, load_org_scenario
from fedinv.model.scenario import load_scenario
from fedinv.policies.classical import make_policy
from fedinv.service.codec import Codec, DecisionRequest
from fedinv.service.core import DecisionService, ServiceConfig
from fedinv.service.log import verify
from fedinv.service.record import Recorder
from fedinv.service.replay import start_service, stop_service
from fedinv.sim.simulator import Simulator

# a plant (maker: an outside raw-material lane, an internal lane) shipping to shops of
# two other organizations; one shop's lane has a random lead time of 2 or 3 days
SCENARIO = """
name = "two-buyers-random"
horizon_days = 40
start_date = "2025-01-20"
seed = 3

[[organizations]]
id = "maker"
[[organizations]]
id = "shop-a"
[[organizations]]
id = "shop-b"

[[nodes]]
id = "S"
tier = "supplier"
region = "r"
organization = "maker"
holding_cost = 0.5
stockout_penalty = 1.0
initial_inventory = 30.0

[[nodes]]
id = "P"
tier = "manufacturer"
region = "r"
organization = "maker"
holding_cost = 1.0
stockout_penalty = 1.0
capacity = 10.0
initial_inventory = 20.0

[[nodes]]
id = "A"
tier = "distributor"
region = "r"
organization = "shop-a"
holding_cost = 1.0
stockout_penalty = 5.0
initial_inventory = 5.0
[nodes.demand]
distribution = "poisson"
mean = 4.0

[[nodes]]
id = "B"
tier = "distributor"
region = "r"
organization = "shop-b"
holding_cost = 1.0
stockout_penalty = 5.0
initial_inventory = 5.0
[nodes.demand]
distribution = "poisson"
mean = 3.0

[[lanes]]
source = "external"
destination = "S"
item = "raw"
lead_time = { distribution = "deterministic", mean = 1 }

[[lanes]]
source = "S"
destination = "P"
lead_time = { distribution = "deterministic", mean = 1 }

[[lanes]]
source = "P"
destination = "A"
lead_time = { distribution = "deterministic", mean = 2 }
transport_capacity = 6.0

[[lanes]]
source = "P"
destination = "B"
lead_time = { distribution = "empirical", values = [2, 3], weights = [0.5, 0.5] }
"""
PARAMS = {"levels": {"A": 24, "B": 20, "P": 30, "S": 30}}
DAYS = 25


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scenario") / "two-random.toml"
    path.write_text(SCENARIO)
    return path


def _trajectory(scenario, days: int):
    """The export's history (same simulator, policy, replication): the morning states
    of days 0..days (the last one past the horizon) and each day's orders."""
    sim = Simulator(scenario, days=days, confirmations=True)
    pol = make_policy("base-stock", sim.layout, PARAMS)
    state, exo = sim.reset([0])
    states, orders = [], []
    for _ in range(days):
        states.append(state)
        decision = pol.act(state)
        orders.append(np.asarray(decision.orders[0], float))
        state, _ = sim.step(state, exo, decision)
    states.append(state)
    orders.append(np.zeros_like(orders[0]))
    return sim, exo, states, orders


def _frames_equal(a: Path, b: Path) -> None:
    left, right = pd.read_csv(a), pd.read_csv(b)
    assert list(left.columns) == list(right.columns), a.name
    assert len(left) == len(right), a.name
    for col in left.columns:
        if pd.api.types.is_numeric_dtype(left[col]):
            np.testing.assert_allclose(left[col], right[col], atol=1e-9, err_msg=a.name)
        else:
            assert list(left[col]) == list(right[col]), (a.name, col)


def test_a_service_records_what_data_export_writes(scenario_file, tmp_path):
    scenario = load_scenario(str(scenario_file))
    exported = export_private_data(
        scenario, tmp_path / "export", policy="base-stock", params=PARAMS, days=DAYS
    )
    sim, exo, states, orders = _trajectory(scenario, DAYS)
    lay = sim.layout
    shipped_any = False
    recorders = {}
    for org, folder in exported.items():
        data = tmp_path / "seen" / org
        svc = DecisionService(
            ServiceConfig(
                scenario=str(scenario_file),
                org=org,
                policy="base-stock",
                params=PARAMS,
                mode="pure",
                log=tmp_path / f"{org}.sqlite",
                data=data,
                record_every=0,
            )
        )
        for t, state in enumerate(states):  # day DAYS completes day DAYS - 1
            body = svc.codec.request(state, given=orders[t])
            reply = svc.decide(DecisionRequest.model_validate(body), body)
            if t < DAYS:  # here the per-org pure service is the export's policy
                expect = svc.codec.orders(orders[t])
                assert reply["released"] == pytest.approx(expect), (org, t)
        svc.recorder.flush()
        recorders[org] = svc.recorder
        for name in FILES[1:-1]:  # demand, leadtimes, inventory
            _frames_equal(folder / name, data / name)
        assert (data / "scenario.toml").read_text() == (folder / "scenario.toml").read_text()
        confirmations = pd.read_csv(data / "confirmations.csv")  # none in a request
        assert list(confirmations.columns) == list(pd.read_csv(folder / "confirmations.csv"))
        assert len(confirmations) == 0
        assert load_org_scenario(data).name == f"{scenario.name}/{org}"
        shipped_any |= len(pd.read_csv(data / "leadtimes.csv")) > 0
        # a restarted service reads its journal back: the same history
        again = Recorder(data, svc.codec, svc.scenario, org, every=0)
        for key, value in svc.recorder.history().items():
            np.testing.assert_array_equal(again.history()[key], value)
    assert shipped_any
    # every shipment's lead time read from the next request is the one the simulator drew
    # on the lanes the organization buys on (on a lane it supplies it sees no transit)
    # (leadtimes.csv's lead_days also count the days an order waited at the plant)
    for org, rec in recorders.items():
        h = rec.history()
        ships = (h["shipped"] > 0) & rec.codec.scope.own  # the lanes it buys on
        np.testing.assert_array_equal(h["lead"][ships], exo.lead[0, :DAYS][ships], err_msg=org)
    m = lay.lane_ids.index("P->B")
    h = recorders["shop-b"].history()
    assert set(h["lead"][h["shipped"][:, m] > 0, m]) == {2, 3}


def test_a_retrain_swaps_retuned_parameters_while_decisions_go_on(scenario_file, tmp_path):
    """A real ``fedinv serve --data`` process: 20 days recorded, ``POST /v1/retrain``
    starts the re-tuning in a background process, decisions sent meanwhile are all
    answered, and the swap is an entry of the chain after which the digest changes."""
    scenario = load_scenario(str(scenario_file))
    sim, _, states, orders = _trajectory(scenario, 70)
    codec = Codec.for_simulator(sim, "shop-b")
    args = ["--scenario", str(scenario_file), "--policy", "base-stock"]
    args += ["--params", json.dumps(PARAMS), "--mode", "pure"]
    args += ["--data", str(tmp_path / "data"), "--record-every", "5"]
    log = tmp_path / "log.sqlite"
    service = start_service(args, "shop-b", log)
    codes, during, digests, answered = [], 0, [], []
    try:
        with httpx.Client(base_url=service.url, timeout=60) as client:

            def send(t: int) -> dict:
                r = client.post("/v1/decide", json=codec.request(states[t], given=orders[t]))
                codes.append(r.status_code)
                answered.append(r.json()["policy_digest"])
                return r.json()

            for t in range(20):
                digests.append(send(t)["policy_digest"])
            too_early = client.post("/v1/retrain", json={"min_days": 30})
            assert too_early.status_code == 409 and "19 days recorded" in too_early.text
            started = client.post("/v1/retrain", json={"replications": 4})
            assert started.status_code == 200 and started.json()["status"] == "running"
            assert client.post("/v1/retrain", json={}).status_code == 409  # one at a time
            t = 20
            while client.get("/v1/retrain").json()["status"] == "running" and t < 65:
                send(t)
                during += 1
                t += 1
                time.sleep(0.05)  # an ERP's pace, not a load test: the tuner gets the core
            deadline = time.time() + 120
            while (job := client.get("/v1/retrain").json())["status"] == "running":
                assert time.time() < deadline
                time.sleep(0.2)
            assert job["status"] == "swapped", job.get("error")
            after = [send(k)["policy_digest"] for k in range(t, t + 3)]
    finally:
        stop_service(service)
    assert set(codes) == {200} and during >= 1
    swap = job["swap"]
    assert swap["previous_policy_digest"] == digests[0] != swap["policy_digest"]
    assert after == [swap["policy_digest"]] * 3
    # the re-tuned level is shop-b's own node's; the other organizations' are kept
    assert set(job["result"]["params"]["levels"]) == {"B"}
    assert swap["params"]["levels"]["A"] == PARAMS["levels"]["A"]
    assert verify(log).ok
    with sqlite3.connect(log) as db:
        kinds = [k for (k,) in db.execute("SELECT kind FROM entries ORDER BY seq")]
    # the swap entry splits the decisions: those before it answered with the old policy,
    # those after with the new (the job's status may still read "running" for a moment
    # after the swap, so the loop above can send one more decision after it)
    assert kinds.count("swap") == 1 and kinds[0] != "swap" and len(kinds) == t + 3 + 1
    at = kinds.index("swap")
    assert set(kinds) - {"swap"} == {"decision"} and at >= 20
    assert answered[:at] == [digests[0]] * at
    assert answered[at:] == [swap["policy_digest"]] * (len(kinds) - at - 1)
    # SIGTERM wrote the folder: every completed day's demand row
    demand = pd.read_csv(tmp_path / "data" / "demand.csv")
    assert len(demand[demand["kind"] == "customer"]) == t + 3 - 1


def test_the_monitors_retrain_alert_on_recorded_demand_starts_a_retrain(scenario_file, tmp_path):
    """shop-b's customers triple their demand from day 20 on (what its ERP reports):
    the Analytics Monitor's demand CUSUM on the recorded days alerts after the shift,
    never before, the same alerts the monitor raises on the whole run's arrays, and the
    service starts a retrain by itself that ends in a swap to a higher level."""
    from fedinv.roles.monitor import MonitorConfig, demand_alerts, demand_residuals

    scenario = load_scenario(str(scenario_file))
    sim, _, states, orders = _trajectory(scenario, 40)
    svc = DecisionService(
        ServiceConfig(
            scenario=str(scenario_file),
            org="shop-b",
            policy="base-stock",
            params=PARAMS,
            mode="pure",
            log=tmp_path / "log.sqlite",
            data=tmp_path / "data",
            record_every=3,  # the monitor runs every 3 recorded days
            auto_retrain=True,
        )
    )
    shifted = []
    for t in range(40):
        body = svc.codec.request(states[t], given=orders[t])
        if t >= 20:
            body["nodes"]["B"]["demand"] *= 3.0
        shifted.append(body["nodes"]["B"]["demand"])
        svc.decide(DecisionRequest.model_validate(body), body)
        if svc.retrain_job is not None:
            break
    alerts = svc.recorder.retrain_alerts()
    assert alerts and min(a["day"] for a in alerts) >= 20
    assert {a["metric"] for a in alerts} <= {"demand_up", "org_demand_up"}
    # the same alerts as the monitor run offline on the whole history's arrays
    lay = sim.layout
    demand = np.zeros((len(shifted), 1, lay.num_nodes))
    demand[:, 0, lay.node_ids.index("B")] = shifted
    z, z_org, _ = demand_residuals({"demand": demand}, scenario, lay)
    offline = demand_alerts(z, z_org, lay, [0], MonitorConfig())
    assert [a for a in offline if a["organization"] == "shop-b"] == alerts
    job = svc.retrain_job
    assert job is not None and job.trigger.startswith("monitor: ")
    deadline = time.time() + 120
    while job.status == "running":
        assert time.time() < deadline
        time.sleep(0.1)
    assert job.status == "swapped", job.error
    assert job.swap["params"]["levels"]["B"] > PARAMS["levels"]["B"]
    svc.close()


def test_a_window_writes_only_the_last_days(scenario_file, tmp_path):
    """``flush(window=N)``: the folder of the last N completed days, dated from there."""
    scenario = load_scenario(str(scenario_file))
    sim, _, states, orders = _trajectory(scenario, 12)
    codec = Codec.for_simulator(sim, "shop-a")
    rec = Recorder(tmp_path / "all", codec, scenario, "shop-a", every=0)
    for t, state in enumerate(states):
        body = codec.request(state, given=orders[t])
        rec.record(DecisionRequest.model_validate(body), body, codec.orders(orders[t]))
    rec.flush(tmp_path / "last", window=5)
    rec.flush()
    full = pd.read_csv(tmp_path / "all" / "demand.csv")
    last = pd.read_csv(tmp_path / "last" / "demand.csv")
    assert len(full) == 12 and list(last["date"]) == list(full["date"][7:])  # 2025-01-27 on
    assert list(last["quantity"]) == list(full["quantity"][7:])
    assert last["date"].iloc[0] == "2025-01-27"
