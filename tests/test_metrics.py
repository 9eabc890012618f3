"""Metric definitions on records small enough to compute by hand."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fedinv.model.network import (
    DemandModel,
    Lane,
    Network,
    Node,
    Organization,
    Scenario,
    Tier,
)
from fedinv.sim.metrics import DAYS_PER_MONTH, paired_difference, replication_metrics, summarize
from fedinv.sim.simulator import RECORD_FIELDS, Simulator


def _layout():
    nodes = (
        Node("s", Tier.SUPPLIER, "r", "o", unit_value=5.0),
        Node(
            "d", Tier.DISTRIBUTOR, "r", "o", unit_value=10.0, demand=DemandModel("deterministic", 1)
        ),
    )
    lanes = (Lane("external", "s"), Lane("s", "d"))
    return Simulator(Scenario("m", Network(nodes, lanes, (Organization("o"),))), days=1).layout


def _records():
    days, reps, n = 4, 1, 2
    rec = {k: np.zeros((days, reps, n)) for k in RECORD_FIELDS}
    rec["demand"][:, 0, 1] = [4, 2, 6, 0]
    rec["filled"][:, 0, 1] = [4, 1, 6, 0]
    rec["sold"][:, 0, 1] = [4, 1, 7, 0]
    rec["ordered"][:, 0, 1] = [4, 2, 6, 0]  # distributor orders
    rec["ordered"][:, 0, 0] = [0, 8, 0, 4]  # supplier orders
    rec["inventory_value"][:, 0, :] = [[10, 20], [10, 40], [10, 0], [10, 20]]
    rec["holding_cost"][:, 0, 1] = [1, 2, 3, 4]
    rec["total_cost"][:, 0, 1] = [2, 2, 2, 2]
    rec["internal_shortfall"][:, 0, 0] = [0, 1, 0, 0]
    return rec


def test_network_metrics_by_hand():
    m = replication_metrics(_records(), _layout()).iloc[0]
    months = 4 / DAYS_PER_MONTH
    assert m["total_cost_per_day"] == pytest.approx(2.0)
    assert m["holding_cost_k_per_month"] == pytest.approx(10 / 1000 / months)
    assert m["stockouts_per_month"] == pytest.approx(1 / months)  # only day 1 short
    assert m["internal_stockouts_per_month"] == pytest.approx(1 / months)
    assert m["fill_rate"] == pytest.approx(11 / 12)
    assert m["cycle_service_level"] == pytest.approx(3 / 4)
    # turnover: COGS 12 x $10 over mean stock value (30+50+10+30)/4 = 30, x 365/4
    assert m["inventory_turnover"] == pytest.approx(120 / 30 * 365 / 4)
    # bullwhip: the supplier tier's orders (0, 8, 0, 4) vs demand (4, 2, 6, 0)
    assert m["bullwhip_ratio"] == pytest.approx(
        np.var([0, 8, 0, 4], ddof=1) / np.var([4, 2, 6, 0], ddof=1)
    )
    assert m["bullwhip_distributor"] == pytest.approx(1.0)


def test_a_window_of_days_by_hand():
    rec = _records()
    rec["total_cost"][:, 0, 1] = [1, 3, 8, 20]
    # days 1..2: demand 2 + 6, filled 1 + 6; cost (3 + 8) / 2
    m = replication_metrics(rec, _layout(), warmup_days=1, end_day=3).iloc[0]
    assert m["total_cost_per_day"] == pytest.approx(5.5)
    assert m["fill_rate"] == pytest.approx(7 / 8)
    assert m["holding_cost_k_per_month"] == pytest.approx(5 / 1000 / (2 / DAYS_PER_MONTH))
    with pytest.raises(ValueError, match="days 3..4 of 4"):
        replication_metrics(rec, _layout(), warmup_days=3, end_day=4)


def test_summary_is_a_student_t_interval():
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 6.0]})
    row = summarize(frame).loc["x"]
    half = stats.t.ppf(0.975, 3) * np.std([1, 2, 3, 6], ddof=1) / 2
    assert row["mean"] == pytest.approx(3.0)
    assert row["ci95"] == pytest.approx(half)


def test_paired_difference_on_common_replications():
    a = pd.Series([10.0, 12.0, 11.0])
    b = pd.Series([9.0, 10.0, 10.0])
    d = paired_difference(a, b)
    assert d["mean"] == pytest.approx(4 / 3)
    assert d["percent"] == pytest.approx(100 * (4 / 3) / (29 / 3))
