"""Continual learning of a learned policy (docs/service.md, "Continual learning"): a real
``fedinv serve --policy hdpo --data`` process fine-tunes its checkpoint on what it
recorded (the federated client's local round), decisions go on meanwhile, and the new
checkpoint -- no worse on held-out replications of the recorded scenario -- is swapped
in through the chain."""

from __future__ import annotations

import sqlite3
import time

import httpx
import numpy as np
import pytest
import torch

from fedinv.agents import hdpo
from fedinv.agents.checkpoints import load_checkpoint, write_hdpo_checkpoint
from fedinv.model.scenario import load_scenario
from fedinv.policies.classical import make_policy
from fedinv.policies.tuning import TuneResult
from fedinv.service.codec import Codec
from fedinv.service.core import file_digest
from fedinv.service.log import verify
from fedinv.service.replay import start_service, stop_service
from fedinv.sim.simulator import Simulator

LEVELS = {"stage-1": 6.0, "stage-2": 10.0, "stage-3": 15.0}


def _states(scenario, days: int) -> list:
    """Morning states of a base-stock run of ``days`` days (what the ERP reports)."""
    sim = Simulator(scenario, days=days + 1)
    pol = make_policy("base-stock", sim.layout, {"levels": LEVELS})
    state, exo = sim.reset([0])
    out = []
    for _ in range(days):
        out.append(state)
        state, _ = sim.step(state, exo, pol.act(state))
    return out


@pytest.mark.slow
def test_an_hdpo_checkpoint_is_fine_tuned_on_the_recorded_days_and_swapped(tmp_path):
    scenario = load_scenario("serial-3")
    args = hdpo.Args(scenario="serial-3", replications=2, hidden=(8,), eval_days=5)
    tuned = TuneResult("base-stock", {"levels": LEVELS}, {}, 1.0, 0, 0, 5)
    policy, _ = hdpo.initial_policy(args, scenario, tuned)
    with torch.no_grad():  # a checkpoint whose networks raise every target: costly stock
        for net in policy.networks.nets.values():
            net.head.bias.fill_(3.0)
    checkpoint = tmp_path / "start.pt"
    write_hdpo_checkpoint(checkpoint, policy, scenario="serial-3", args=args)
    states = _states(scenario, 40)
    codec = Codec.for_simulator(Simulator(scenario, days=2), "serial")
    serve = ["--scenario", "serial-3", "--policy", "hdpo", "--checkpoint", str(checkpoint)]
    serve += ["--mode", "pure", "--data", str(tmp_path / "data"), "--record-every", "0"]
    log = tmp_path / "log.sqlite"
    service = start_service(serve, "serial", log)
    codes, replies = [], []
    try:
        with httpx.Client(base_url=service.url, timeout=60) as client:

            def send(t: int) -> dict:
                r = client.post("/v1/decide", json=codec.request(states[t]))
                codes.append(r.status_code)
                replies.append(r.json())
                return replies[-1]

            for t in range(20):
                send(t)
            body = {"iterations": 3, "replications": 2, "sweeps": 1}
            body |= {"eval_replications": 4, "learning_rate": 0.05, "min_days": 14}
            started = client.post("/v1/retrain", json=body)
            assert started.status_code == 200, started.text
            t, deadline = 20, time.time() + 240
            while (job := client.get("/v1/retrain").json())["status"] == "running":
                assert time.time() < deadline, "the fine-tuning did not end"
                if t < 37:
                    send(t)  # decisions go on while it trains
                    t += 1
                time.sleep(0.1)
            assert job["status"] == "swapped", job
            after = [send(k) for k in range(t, t + 3)]
    finally:
        stop_service(service)
    assert set(codes) == {200}
    result, swap = job["result"], job["swap"]
    # the new weights are no worse than the current ones on the same held-out days
    assert result["new_cost_per_day"] <= result["current_cost_per_day"]
    assert swap["retrain"]["new_cost_per_day"] == result["new_cost_per_day"]
    new = load_checkpoint(result["checkpoint"], "hdpo")
    assert new["fine_tuned"]["parent_checkpoint_digest"] == file_digest(checkpoint)
    moved = [
        not torch.equal(new["policy_state"][k], v)
        for k, v in load_checkpoint(checkpoint, "hdpo")["policy_state"].items()
    ]
    assert any(moved)  # the networks were trained
    # the swap is an entry of the chain; the digests switch there
    assert swap["previous_checkpoint_digest"] == file_digest(checkpoint)
    assert swap["checkpoint_digest"] == file_digest(result["checkpoint"]) != file_digest(checkpoint)
    assert {r["checkpoint_digest"] for r in replies[:20]} == {file_digest(checkpoint)}
    assert {r["checkpoint_digest"] for r in after} == {swap["checkpoint_digest"]}
    assert verify(log).ok
    with sqlite3.connect(log) as db:
        kinds = [k for (k,) in db.execute("SELECT kind FROM entries ORDER BY seq")]
    assert kinds.count("swap") == 1 and kinds[-4:] == ["swap"] + ["decision"] * 3
    assert len(kinds) == t + 3 + 1
    assert np.isfinite(result["train_cost_per_day"])
