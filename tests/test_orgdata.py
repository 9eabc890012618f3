"""Private data folders: what each organization exports, and its local scenario."""

import numpy as np
import pandas as pd
import pytest

from fedinv.federation.private_data import FILES, _fifo, export_private_data, load_org_scenario
from fedinv.model.scenario import load_scenario


def test_fifo_matches_shipments_to_orders_in_order():
    chunks = list(_fifo(np.array([5.0, 0.0, 3.0]), np.array([2.0, 3.0, 3.0]), np.array([2, 2, 2])))
    assert chunks == [(0, 2.0, 2), (0, 3.0, 3), (2, 3.0, 4)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    scenario = load_scenario("electronics-5r")
    out = tmp_path_factory.mktemp("orgs")
    return scenario, export_private_data(scenario, out, days=120)


def test_each_folder_holds_only_its_own_nodes(exported):
    scenario, folders = exported
    assert set(folders) == {o.id for o in scenario.network.organizations}
    for org, folder in folders.items():
        assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
        own = {n.id for n in scenario.network.nodes if n.organization == org}
        local = load_org_scenario(folder)
        assert {n.id for n in local.network.nodes} == own
        assert {o.id for o in local.network.organizations} == {org}
        for name in ("demand.csv", "inventory.csv"):
            assert set(pd.read_csv(folder / name)["node"]) <= own
        # outside suppliers appear only as external lanes into own nodes
        assert all(ln.source in own or ln.source == "external" for ln in local.network.lanes)


def test_demand_file_is_what_the_organization_faced(exported):
    scenario, folders = exported
    demand = pd.read_csv(folders["dist-asia"] / "demand.csv")
    customer = demand[(demand["node"] == "D-APAC-1") & (demand["kind"] == "customer")]
    assert len(customer) == 120 and (customer["quantity"] >= 0).all()
    # the supplier group faces the plants' orders, not customer demand
    supplier = pd.read_csv(folders["compotech"] / "demand.csv")
    assert set(supplier["kind"]) == {"order"} and supplier["quantity"].sum() > 0


def test_observed_lead_times_cover_the_nominal_transit(exported):
    scenario, folders = exported
    log = pd.read_csv(folders["assemble-co"] / "leadtimes.csv")
    lane = log[log["lane"] == "S-DISP-KR->M-APAC-SZ"]
    nominal = scenario.network.lanes[scenario.network.lane_index["S-DISP-KR->M-APAC-SZ"]]
    assert len(lane) > 0
    # order -> receipt is at least the shortest transit time the lane can draw
    assert lane["lead_days"].min() >= min(1, nominal.lead_time.support_max)
    assert (
        pd.to_datetime(lane["receipt_date"]) - pd.to_datetime(lane["order_date"])
    ).dt.days.tolist() == lane["lead_days"].tolist()
