"""Decision services (docs/service.md): the per-organization layer on a hand-computed
day, the request codec against the simulator's view, the hash-chained log (tampering,
a cut tail), and real ``fedinv serve`` processes over HTTP: the bearer token, 422s that
name the field, a SIGKILL that loses no acknowledged decision, and a replay through
one service per organization that releases exactly what the simulation releases."""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
from dataclasses import fields
from pathlib import Path

import httpx
import numpy as np
import pytest

from fedinv.cli import main
from fedinv.hybrid import for_mode, per_org_policy
from fedinv.model.scenario import load_scenario
from fedinv.policies.perorg import decision_order, org_scope, org_view
from fedinv.registry import prepare
from fedinv.service.codec import Codec, DecisionRequest
from fedinv.service.log import DecisionLog, verify
from fedinv.service.replay import (
    per_org_orders,
    replay,
    start_service,
    start_services,
    stop_service,
)
from fedinv.sim.simulator import Simulator

ROOT = Path(__file__).resolve().parents[1]

TWO_BUYERS = """
name = "two-buyers"
description = "a plant shipping at most 10 units a day to shops of two other organizations"
horizon_days = 30
start_date = "2025-01-01"
seed = 0

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
initial_inventory = 100.0

[[nodes]]
id = "P"
tier = "manufacturer"
region = "r"
organization = "maker"
holding_cost = 1.0
stockout_penalty = 1.0
capacity = 10.0
initial_inventory = 100.0

[[nodes]]
id = "A"
tier = "distributor"
region = "r"
organization = "shop-a"
holding_cost = 1.0
stockout_penalty = 5.0
initial_inventory = 5.0
[nodes.demand]
distribution = "deterministic"
mean = 1.0

[[nodes]]
id = "B"
tier = "distributor"
region = "r"
organization = "shop-b"
holding_cost = 1.0
stockout_penalty = 5.0
initial_inventory = 5.0
[nodes.demand]
distribution = "deterministic"
mean = 1.0

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
transport_capacity = 12.0

[[lanes]]
source = "P"
destination = "B"
lead_time = { distribution = "deterministic", mean = 2 }
"""
LEVELS = '{"levels": {"A": 20, "B": 20}}'


@pytest.fixture(scope="module")
def two_buyers(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scenario") / "two.toml"
    path.write_text(TWO_BUYERS)
    return path


def _policy(scenario, layout):
    return prepare("base-stock", scenario, layout, params={"levels": {"A": 20, "B": 20}})


# -- the per-organization layer, by hand ----------------------------------------------


def test_per_org_layer_drops_the_other_organizations_capacity_row(two_buyers):
    """Day 0: each shop has 5 - 1 = 4 on hand, so base-stock 20 proposes 16 each. The
    plant ships at most 10 a day: the network-wide layer cuts the cheaper lane (P->A,
    the lower tie-break weight) to 0 and P->B to 10; per organization, the plant's row is
    the maker's, not a row of the shops' programs: A keeps its own transport limit (12)
    and B its 16."""
    scenario = load_scenario(str(two_buyers))
    sim = Simulator(scenario, days=3)
    lay = sim.layout
    state, _ = sim.reset([0])
    factory = _policy(scenario, lay).factory
    lanes = [lay.lane_ids.index(x) for x in ("P->A", "P->B")]
    assert factory(lay).act(state).orders[0, lanes].tolist() == [16.0, 16.0]
    network = for_mode(factory(lay), "hybrid", lay, backend="highspy").act(state)
    assert network.orders[0, lanes] == pytest.approx([0.0, 10.0], abs=1e-9)
    per_org = per_org_policy(factory, "hybrid", lay, backend="highspy").act(state)
    assert per_org.orders[0, lanes] == pytest.approx([12.0, 16.0], abs=1e-9)
    assert [lay.org_ids[o] for o in decision_order(lay)] == ["shop-a", "shop-b", "maker"]


def test_the_request_codec_gives_the_organizations_view():
    """state_from_request(request_from_state(s)) equals org_view(s) field by field, for
    every organization of electronics-5r (assembly, budgets, outages) and of the beer
    game (order lead times: orders on their way to the source), on a mid-run day."""
    for name, days in (("electronics-5r", 40), ("beer-game", 9)):
        scenario = load_scenario(name)
        sim = Simulator(scenario, days=days + 2)
        lay = sim.layout
        policy = per_org_policy(prepare("base-stock", scenario, lay).factory, "pure", lay)
        state, exo = sim.reset([3])
        for _ in range(days):
            state, _ = sim.step(state, exo, policy.act(state))
        given = np.random.default_rng(0).uniform(0, 50, (1, lay.num_lanes))
        for org in lay.org_ids:
            codec = Codec.for_simulator(sim, org)
            body = codec.request(state, 0, given[0])
            got = codec.state(DecisionRequest.model_validate(body))
            want = org_view(state, org_scope(lay, org), given)
            for f in fields(want):
                a, b = getattr(got, f.name), getattr(want, f.name)
                if isinstance(b, np.ndarray):
                    np.testing.assert_array_equal(a, b, err_msg=f"{name} {org} {f.name}")
                else:
                    assert a == b, (name, org, f.name)


# -- the log -------------------------------------------------------------------------


def _log_with(path: Path, n: int) -> list[str]:
    log = DecisionLog(path)
    hashes = [
        log.append(
            "shop",
            kind="decision",
            org="shop",
            day=t,
            request_digest=f"{t:064x}",
            released={"P->A": float(t)},
            policy_digest="p" * 64,
            checkpoint_digest=None,
        ).hash
        for t in range(n)
    ]
    log.close()
    return hashes


def _cli(capsys, *args: str) -> tuple[int, str]:
    """``fedinv ARGS`` in this process: exit status and stdout + stderr."""
    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out + out.err


def test_verify_names_the_altered_or_missing_entry_and_a_cut_tail(tmp_path, capsys):
    hashes = _log_with(tmp_path / "log.sqlite", 6)
    assert verify(tmp_path / "log.sqlite", hashes[-1]).ok
    altered = tmp_path / "altered.sqlite"
    shutil.copy(tmp_path / "log.sqlite", altered)
    with sqlite3.connect(altered) as db:
        db.execute("UPDATE entries SET released = '{\"P->A\":99.0}' WHERE seq = 3")
    v = verify(altered)
    assert (v.ok, v.seq) == (False, 3) and "altered" in v.message
    code, text = _cli(capsys, "log", "verify", str(altered))
    assert code == 1 and "entry 3 of chain 'shop' was altered" in text
    missing = tmp_path / "missing.sqlite"
    shutil.copy(tmp_path / "log.sqlite", missing)
    with sqlite3.connect(missing) as db:
        db.execute("DELETE FROM entries WHERE seq = 2")
    v = verify(missing)
    assert (v.ok, v.seq) == (False, 2) and "missing" in v.message
    cut = tmp_path / "cut.sqlite"
    shutil.copy(tmp_path / "log.sqlite", cut)
    with sqlite3.connect(cut) as db:
        db.execute("DELETE FROM entries WHERE seq >= 5")
    assert verify(cut).ok  # a cut tail leaves a valid chain...
    v = verify(cut, hashes[-1])  # ...that a kept head exposes
    assert not v.ok and "chains end: shop at entry 4" in v.message
    code, text = _cli(capsys, "log", "verify", str(cut), "--head", hashes[-1])
    assert code == 1 and "not in the log" in text
    assert _cli(capsys, "log", "verify", str(cut), "--head", hashes[3])[0] == 0


# -- real services -------------------------------------------------------------------


def _serve_args(scenario: Path) -> list[str]:
    return ["--scenario", str(scenario), "--policy", "base-stock", "--params", LEVELS]


def _body(day: int, on_hand: float, **lane) -> dict:
    return {
        "day": day,
        "nodes": {"A": {"on_hand": on_hand, "demand": 1.0}},
        "lanes": {"P->A": lane} if lane else {},
        "budget_spent": 0.0,
    }


@pytest.fixture(scope="module")
def shop_a(two_buyers, tmp_path_factory):
    """shop-a's service over TLS (certificates from ``fedinv deploy certs``) with a token;
    yields an httpx client that trusts the CA (and sends no token)."""
    folder = tmp_path_factory.mktemp("shop-a")
    keys = folder / "keys"
    assert main(["deploy", "certs", "--out", str(keys), "--host", "127.0.0.1"]) == 0
    tls = (keys / "server.crt", keys / "server.key", keys / "ca.crt")
    token = folder / "token"
    token.write_text("s3cret-token\n")
    args = _serve_args(two_buyers)
    service = start_service(args, "shop-a", folder / "log.sqlite", token_file=token, tls=tls)
    try:
        assert service.url.startswith("https://")
        with httpx.Client(base_url=service.url, verify=service.verify) as client:
            yield client
    finally:
        stop_service(service)
    assert service.process.poll() is not None


AUTH = {"Authorization": "Bearer s3cret-token"}


def test_the_bearer_token_is_required_over_tls(shop_a):
    assert shop_a.get("/v1/health").status_code == 401
    wrong = {"Authorization": "Bearer s3cret-tokem"}
    assert shop_a.get("/v1/health", headers=wrong).status_code == 401
    assert shop_a.post("/v1/decide", json=_body(0, 4.0)).status_code == 401
    ok = shop_a.get("/v1/policy", headers=AUTH)
    assert ok.status_code == 200
    assert ok.json()["lanes"] == ["P->A"] and ok.json()["nodes"] == ["A"]
    with pytest.raises(httpx.ConnectError):  # the certificate is checked
        httpx.get(str(shop_a.base_url) + "/v1/health", verify=True)


def test_a_decision_over_http_is_the_hand_computed_one(shop_a):
    """On hand 4, 3 units arriving in 2 days, 1 owed: base-stock 20 proposes
    20 - (4 + 3 + 1) = 12 and the lane's transport capacity (12) lets it pass; the
    next day on hand 2, nothing on order: 18 proposed, 12 released (the limit)."""
    r = shop_a.post("/v1/decide", json=_body(0, 4.0, in_transit=[0.0, 3.0], owed=1.0), headers=AUTH)
    assert r.status_code == 200, r.text
    reply = r.json()
    assert reply["proposed"] == {"P->A": 12.0} and reply["released"] == {"P->A": 12.0}
    r = shop_a.post("/v1/decide", json=_body(1, 2.0), headers=AUTH)
    reply = r.json()
    assert reply["proposed"]["P->A"] == pytest.approx(18.0)
    assert reply["released"]["P->A"] == pytest.approx(12.0)
    assert reply["entry"] == 2 and len(reply["entry_hash"]) == 64
    health = shop_a.get("/v1/health", headers=AUTH).json()
    assert health["head"] == reply["entry_hash"]


def test_bad_requests_get_a_422_naming_the_field(shop_a):
    def detail(body):
        r = shop_a.post("/v1/decide", json=body, headers=AUTH)
        assert r.status_code == 422, r.text
        return r.json()["detail"]

    d = detail({"day": 2, "nodes": {"A": {"on_hand": -3}}})
    assert d[0]["loc"] == ["body", "nodes", "A", "on_hand"] and "0" in d[0]["msg"]
    d = detail({"day": 2, "nodes": {"A": {"on_hand": "many"}}})
    assert d[0]["loc"] == ["body", "nodes", "A", "on_hand"]
    d = detail({"day": 2, "nodes": {"A": {"on_hand": 1}, "Z": {"on_hand": 1}}})
    assert d[0]["loc"] == ["body", "nodes", "Z"] and "unknown node 'Z'" in d[0]["msg"]
    d = detail({"day": 2, "nodes": {"A": {"on_hand": 1}}, "lanes": {"P->B": {"owed": 1}}})
    assert d[0]["loc"] == ["body", "lanes", "P->B"] and "unknown lane 'P->B'" in d[0]["msg"]
    d = detail({"day": 2, "nodes": {}})
    assert d[0]["loc"] == ["body", "nodes", "A"] and "missing" in d[0]["msg"]
    d = detail({"day": 2, "nodes": {"A": {"on_hand": 1, "colour": "red"}}})
    assert d[0]["loc"] == ["body", "nodes", "A", "colour"]


@pytest.mark.parametrize("sync", ["full", "normal"])
def test_sigkill_loses_no_acknowledged_decision(two_buyers, tmp_path, sync):
    """Both --sync settings survive a killed process (``normal``: the WAL write is in the
    operating system before the reply; only an OS crash or a power cut could lose it)."""
    log = tmp_path / "log.sqlite"
    args = [*_serve_args(two_buyers), "--sync", sync]
    service = start_service(args, "shop-a", log)
    replies = []
    try:
        for t in range(5):
            r = httpx.post(service.url + "/v1/decide", json=_body(t, 4.0 + t))
            assert r.status_code == 200
            replies.append(r.json())
    finally:
        stop_service(service, kill=True)  # SIGKILL: no shutdown handler runs
    assert service.process.returncode == -9
    assert verify(log, replies[-1]["entry_hash"]).ok
    service = start_service(args, "shop-a", log)
    try:
        health = httpx.get(service.url + "/v1/health").json()
        assert (health["entries"], health["head"]) == (5, replies[-1]["entry_hash"])
        # a client that lost the last reply resends it and gets the same decision
        again = httpx.post(service.url + "/v1/decide", json=_body(4, 8.0)).json()
        assert again == replies[-1]
        r = httpx.post(service.url + "/v1/decide", json=_body(7, 1.0))
        assert r.status_code == 409 and "send day 5" in r.json()["detail"]
        r = httpx.post(service.url + "/v1/decide", json=_body(5, 9.0))
        assert r.status_code == 200 and r.json()["entry"] == 6
    finally:
        stop_service(service)
    assert verify(log).checked == {"shop-a": 6}


def test_replay_through_services_releases_what_per_org_simulation_releases(
    two_buyers, tmp_path, capsys
):
    """A month of the two-buyers network: three services (one per organization) driven
    over HTTP release exactly the orders of simulate --projection per-org, hybrid mode,
    the plant's capacity binding every day; the services' chains equal the simulation's
    log entry for entry."""
    scenario = load_scenario(str(two_buyers))
    orgs = [o.id for o in scenario.network.organizations]
    logs = {org: tmp_path / f"{org}.sqlite" for org in orgs}
    services = start_services(_serve_args(two_buyers), logs)
    try:
        released, heads = replay(scenario, {s.org: s.url for s in services})
    finally:
        for s in services:
            stop_service(s)
    layout = Simulator(scenario, days=2).layout
    expected = per_org_orders(scenario, _policy(scenario, layout).factory, "hybrid", "highspy")
    assert released.shape == (30, 4)
    np.testing.assert_array_equal(released, expected)
    plant = [layout.lane_ids.index(x) for x in ("P->A", "P->B")]
    assert released[:, plant].sum(axis=1).max() > 10.0  # per org, the plant's row is nobody's
    sim_log = tmp_path / "sim.sqlite"
    code, text = _cli(
        capsys,
        "simulate",
        *("--scenario", str(two_buyers), "--policy", "base-stock", "--params", LEVELS),
        *("--mode", "hybrid", "--solver", "highspy", "--projection", "per-org"),
        *("--replications", "1", "--log", str(sim_log), "--json", "--quiet"),
    )
    assert code == 0, text
    assert verify(sim_log).checked == dict.fromkeys(sorted(orgs), 30)
    log = DecisionLog(sim_log)
    assert {c: log.head(c)[1] for c in orgs} == heads
    log.close()


def test_a_learned_policys_memory_survives_a_restart(tmp_path):
    """A DQN (a federated checkpoint with fresh weights) keeps a demand forecaster per
    node. A service restarted after day 9 from its log decides day 10 exactly as a
    service that ran days 0..10 without a stop; a service without that memory does not."""
    from fedinv.federation.task import (
        FedConfig,
        new_model,
        roles_of,
        save_global_checkpoint,
        to_arrays,
    )
    from fedinv.service.core import DecisionService, ServiceConfig

    scenario = load_scenario("single-node")
    cfg = FedConfig(scenario="single-node", hidden=(8,), reward_scale=10.0)
    weights = to_arrays(new_model(cfg, roles_of(scenario)))
    ckpt = save_global_checkpoint(tmp_path / "g.pt", scenario, weights, cfg, 1, {"cost": 1.0})
    sim = Simulator(scenario, days=12)
    codec = Codec.for_simulator(sim, "retailer")
    policy = per_org_policy(prepare("base-stock", scenario, sim.layout).factory, "pure", sim.layout)
    state, exo = sim.reset([0])
    bodies = []
    for _ in range(11):
        bodies.append(codec.request(state, 0))
        state, _ = sim.step(state, exo, policy.act(state))
    requests = [DecisionRequest.model_validate(b) for b in bodies]

    def service(log: str) -> DecisionService:
        config = ServiceConfig("single-node", "retailer", "dqn", checkpoint=ckpt, mode="pure")
        return DecisionService(dataclasses.replace(config, log=tmp_path / log))

    first = service("a.sqlite")
    for r, b in zip(requests[:10], bodies[:10], strict=True):
        first.decide(r, b)
    first.log.close()
    restarted = service("a.sqlite").decide(requests[10], bodies[10])
    straight = service("b.sqlite")
    for r, b in zip(requests, bodies, strict=True):
        reply = straight.decide(r, b)
    assert restarted["proposed"] == reply["proposed"]
    # same decisions, same chain: the two logs are equal entry for entry
    assert (restarted["entry"], restarted["entry_hash"]) == (11, reply["entry_hash"])
    forgetful = service("c.sqlite").decide(requests[10], bodies[10])
    assert forgetful["proposed"] != reply["proposed"]


def test_per_org_pure_mode_is_the_network_run_where_nothing_couples_organizations():
    """The beer game: four companies in series, no lot sizes, order lead times (today's
    downstream orders reach a stage only later): each company's view holds everything
    its base-stock position reads, so the per-org run is the network run, cost for cost."""
    from fedinv.sim.run import simulate

    scenario = load_scenario("beer-game")
    params = {"levels": {"retailer": 8, "wholesaler": 8, "distributor": 0, "manufacturer": 0}}
    factory = prepare("base-stock", scenario, Simulator(scenario, 2).layout, params=params).factory
    runs = [
        simulate(scenario, factory, replications=3, projection=p).per_replication
        for p in ("network", "per-org")
    ]
    np.testing.assert_array_equal(runs[0]["total_cost_per_day"], runs[1]["total_cost_per_day"])


@pytest.mark.slow  # two DQN service processes (torch): ~70 s on the shared 2-core machine
def test_a_checkpoint_swaps_under_load_and_the_chain_records_it(tmp_path):
    """A client sends 60 days of decisions without pause while the checkpoint is swapped
    (POST /v1/checkpoint): no request fails, the chain holds 60 decisions and one swap
    entry, decisions before it carry the first checkpoint's digest and after it the
    second's, and a restarted service decides with the swapped-in checkpoint."""
    import threading

    from fedinv.federation.task import (
        FedConfig,
        new_model,
        roles_of,
        save_global_checkpoint,
        to_arrays,
    )
    from fedinv.service.core import file_digest

    scenario = load_scenario("single-node")
    paths = []
    for seed in (1, 2):
        cfg = FedConfig(scenario="single-node", hidden=(8,), reward_scale=10.0, seed=seed)
        weights = to_arrays(new_model(cfg, roles_of(scenario)))
        paths.append(
            save_global_checkpoint(tmp_path / f"{seed}.pt", scenario, weights, cfg, 1, {"c": 1.0})
        )
    sim = Simulator(scenario, days=61)
    codec = Codec.for_simulator(sim, "retailer")
    policy = per_org_policy(prepare("base-stock", scenario, sim.layout).factory, "pure", sim.layout)
    state, exo = sim.reset([0])
    bodies = []
    for _ in range(60):
        bodies.append(codec.request(state, 0))
        state, _ = sim.step(state, exo, policy.act(state))
    args = ["--scenario", "single-node", "--policy", "dqn", "--mode", "pure"]
    log = tmp_path / "log.sqlite"
    service = start_service([*args, "--checkpoint", str(paths[0])], "retailer", log)
    replies: list[httpx.Response] = []
    try:
        with httpx.Client(base_url=service.url, timeout=60) as client:
            sender = threading.Thread(
                target=lambda: replies.extend(client.post("/v1/decide", json=b) for b in bodies)
            )
            sender.start()
            while len(replies) < 10:
                threading.Event().wait(0.01)
            swap = client.post("/v1/checkpoint", json={"path": str(paths[1])})
            sender.join()
            assert swap.status_code == 200, swap.text
            assert client.post("/v1/checkpoint", json={"path": "nope.pt"}).status_code == 422
    finally:
        stop_service(service)
    assert [r.status_code for r in replies] == [200] * 60
    digests = [file_digest(p) for p in paths]
    entries = list(DecisionLog(log).entries("retailer"))
    kinds = [e.kind for e in entries]
    assert kinds.count("swap") == 1 and kinds.count("decision") == 60
    at = kinds.index("swap")
    assert 10 <= at < 60
    assert {e.checkpoint_digest for e in entries[:at]} == {digests[0]}
    assert {e.checkpoint_digest for e in entries[at:]} == {digests[1]}
    assert [e.day for e in entries if e.kind == "decision"] == list(range(60))
    assert verify(log, replies[-1].json()["entry_hash"]).ok
    service = start_service([*args, "--checkpoint", str(paths[0])], "retailer", log)
    try:
        info = httpx.get(service.url + "/v1/policy").json()
        assert info["checkpoint_digest"] == digests[1]
    finally:
        stop_service(service)
