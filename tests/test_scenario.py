"""Scenario files: every validation error, demand-history files, the built-in scenarios."""

from __future__ import annotations

import copy
import math
import pickle
import random
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedinv.model.network import EXTERNAL, DemandModel, Tier
from fedinv.model.scenario import (
    ScenarioError,
    builtin_scenario_text,
    builtin_scenarios,
    load_demand_history,
    load_scenario,
    parse_scenario,
)

BUILTINS = ("beer-game", "electronics-5r", "serial-3", "single-node", "single-node-lost-sales")

# A valid network: external -> S (supplier) -> D1, D2 (distributors with demand).
BASE = """\
name = "tiny"
description = "a tiny network"
horizon_days = 30
seed = 3

[[organizations]]
id = "org"

[[nodes]]
id = "S"
tier = "supplier"
region = "R"
organization = "org"
unit_value = 10.0
holding_cost = 0.1
capacity = 100.0
initial_inventory = 20.0

[[nodes]]
id = "D1"
tier = "distributor"
region = "R"
organization = "org"
holding_cost = 1.0
stockout_penalty = 5.0
demand = { distribution = "poisson", mean = 5.0 }

[[nodes]]
id = "D2"
tier = "distributor"
region = "R"
organization = "org"
holding_cost = 1.0
stockout_penalty = 5.0
demand = { distribution = "normal", mean = 4.0, std = 1.0 }

[[lanes]]
source = "external"
destination = "S"
lead_time = { distribution = "deterministic", mean = 2 }

[[lanes]]
source = "S"
destination = "D1"
lead_time = { distribution = "uniform", low = 1, high = 3 }

[[lanes]]
source = "S"
destination = "D2"
lead_time = { distribution = "deterministic", mean = 1 }
"""

# The same kind of network with a bill of materials: two suppliers -> M -> D.
BOM_BASE = """\
[[organizations]]
id = "org"

[[nodes]]
id = "chips"
tier = "supplier"
region = "R"
organization = "org"
item = "chip"

[[nodes]]
id = "screens"
tier = "supplier"
region = "R"
organization = "org"
item = "screen"

[[nodes]]
id = "M"
tier = "manufacturer"
region = "R"
organization = "org"
bill_of_materials = { chip = 2.0, screen = 1.0 }

[[nodes]]
id = "D"
tier = "distributor"
region = "R"
organization = "org"
demand = { distribution = "poisson", mean = 5.0 }

[[lanes]]
source = "external"
destination = "chips"

[[lanes]]
source = "external"
destination = "screens"

[[lanes]]
source = "chips"
destination = "M"

[[lanes]]
source = "screens"
destination = "M"

[[lanes]]
source = "M"
destination = "D"
"""


def sub(text: str, old: str, new: str, count: int = 1) -> str:
    """Replace ``old`` (which must occur) by ``new``: a mutation of a valid file."""
    assert old in text, old
    return text.replace(old, new, count)


def write(tmp_path: Path, text: str, name: str = "bad.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def expect_error(tmp_path: Path, text: str, field: str, *expected: str) -> ScenarioError:
    """Load ``text`` from a file: one ScenarioError naming the file, ``field`` and each
    of the ``expected`` fragments (in its ``expected`` part)."""
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    err = info.value
    message = str(err)
    assert err.file == str(path)
    assert err.field == field, message
    assert message.startswith(f"{path}: field {field}: expected "), message
    assert "\n" not in message
    for fragment in expected:
        assert fragment in err.expected, message
    return err


def test_base_files_are_valid(tmp_path: Path) -> None:
    scenario = load_scenario(write(tmp_path, BASE, "tiny.toml"))
    assert scenario.name == "tiny"
    assert scenario.horizon_days == 30 and scenario.seed == 3
    assert scenario.start_date == "2025-01-01" and not scenario.lost_sales
    assert [n.id for n in scenario.network.nodes] == ["S", "D1", "D2"]
    assert scenario.network.node("S").tier is Tier.SUPPLIER
    assert scenario.network.node("D1").capacity == math.inf
    assert scenario.network.lanes[1].lead_time.high == 3
    assert scenario.network.lanes[0].price is None
    assert scenario.network.lanes[0].transit_holding_cost is None
    assert scenario.source == str(tmp_path / "tiny.toml")
    bom = load_scenario(write(tmp_path, BOM_BASE, "bom.toml"))
    assert bom.name == "bom"  # defaults to the file name
    assert dict(bom.network.node("M").bill_of_materials) == {"chip": 2.0, "screen": 1.0}


def test_accepted_shorthands(tmp_path: Path) -> None:
    text = sub(BASE, "capacity = 100.0", 'capacity = "inf"')
    text = sub(text, 'lead_time = { distribution = "deterministic", mean = 2 }', "lead_time = 4")
    text = sub(text, "seed = 3", "seed = 3\nstart_date = 2025-03-01")
    scenario = load_scenario(write(tmp_path, text))
    assert scenario.network.node("S").capacity == math.inf
    assert scenario.network.lanes[0].lead_time.support_max == 4
    assert scenario.start_date == "2025-03-01"


# ----------------------------------------------------------------- syntax and keys


def test_toml_syntax_error(tmp_path: Path) -> None:
    err = expect_error(tmp_path, BASE + "\nbroken = \n", "<toml>", "valid TOML")
    assert "line" in err.got


def test_unknown_top_level_key(tmp_path: Path) -> None:
    err = expect_error(tmp_path, "horizon = 10\n" + BASE, "horizon", "horizon_days")
    assert "did you mean 'horizon_days'" in err.got


@pytest.mark.parametrize(
    ("old", "new", "field", "hint"),
    [
        ("holding_cost = 0.1", "holdng_cost = 0.1", "nodes[id=S].holdng_cost", "holding_cost"),
        ("mean = 5.0 }", "maen = 5.0 }", "nodes[id=D1].demand.maen", "mean"),
        ("mean = 2 }", "mean = 2, max_day = 4 }", "lanes[0].lead_time.max_day", "max_days"),
        (
            'destination = "D1"',
            'destination = "D1"\nshiping_cost = 1',
            "lanes[1].shiping_cost",
            "shipping_cost",
        ),
        ('id = "org"', 'id = "org"\nbudget = 5', "organizations[id=org].budget", "monthly_budget"),
    ],
)
def test_unknown_table_key(tmp_path: Path, old: str, new: str, field: str, hint: str) -> None:
    err = expect_error(tmp_path, sub(BASE, old, new), field, "one of the keys", hint)
    assert f"did you mean '{hint}'" in err.got


# ----------------------------------------------------------------- required fields


# The supplier node S, whose lines are deleted one at a time.
S_LINES = 'id = "S"\ntier = "supplier"\nregion = "R"\norganization = "org"\n'


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        (S_LINES, S_LINES.replace('id = "S"\n', ""), "nodes[0].id"),
        (S_LINES, S_LINES.replace('tier = "supplier"\n', ""), "nodes[id=S].tier"),
        (S_LINES, S_LINES.replace('region = "R"\n', ""), "nodes[id=S].region"),
        (S_LINES, S_LINES.replace('organization = "org"\n', ""), "nodes[id=S].organization"),
        ('source = "S"\n', "", "lanes[1].source"),
        ('destination = "S"\n', "", "lanes[0].destination"),
        ('id = "org"\n', "", "organizations[0].id"),
    ],
)
def test_missing_required_field(tmp_path: Path, old: str, new: str, field: str) -> None:
    err = expect_error(tmp_path, sub(BASE, old, new), field, "required")
    assert err.got == "nothing"


# ----------------------------------------------------------------- types and values


@pytest.mark.parametrize(
    ("old", "new", "field", "expected"),
    [
        ("holding_cost = 0.1", 'holding_cost = "cheap"', "nodes[id=S].holding_cost", "a number"),
        ("capacity = 100.0", "capacity = true", "nodes[id=S].capacity", "a number"),
        ("horizon_days = 30", "horizon_days = 10.5", "horizon_days", "an integer"),
        ("horizon_days = 30", "horizon_days = 0", "horizon_days", ">= 1"),
        ("seed = 3", 'seed = 3\nlost_sales = "yes"', "lost_sales", "true or false"),
        ('tier = "supplier"', 'tier = "factory"', "nodes[id=S].tier", '"manufacturer"'),
        ('tier = "supplier"', "tier = 1", "nodes[id=S].tier", '"supplier"'),
        ("seed = 3", 'seed = 3\nstart_date = "01/02/2025"', "start_date", "ISO date"),
        ("seed = 3", "seed = 3\nwarmup_days = 30", "warmup_days", "below horizon_days (30)"),
        ("seed = 3", "seed = -1", "seed", ">= 0"),
        ('[[organizations]]\nid = "org"\n', "organizations = 3\n", "organizations", "tables"),
    ],
)
def test_wrong_type_or_value(tmp_path: Path, old: str, new: str, field: str, expected: str) -> None:
    expect_error(tmp_path, sub(BASE, old, new), field, expected)


def test_bool_is_not_a_number(tmp_path: Path) -> None:
    err = expect_error(
        tmp_path,
        sub(BASE, "stockout_penalty = 5.0", "stockout_penalty = false"),
        "nodes[id=D1].stockout_penalty",
        "a number >= 0",
    )
    assert "boolean" in err.got


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("holding_cost = 0.1", "holding_cost = -0.1", "nodes[id=S].holding_cost"),
        ("unit_value = 10.0", "unit_value = -10.0", "nodes[id=S].unit_value"),
        ("capacity = 100.0", "capacity = -1.0", "nodes[id=S].capacity"),
        ("initial_inventory = 20.0", "initial_inventory = -5", "nodes[id=S].initial_inventory"),
        ("stockout_penalty = 5.0", "stockout_penalty = -5.0", "nodes[id=D1].stockout_penalty"),
        ('"poisson", mean = 5.0', '"poisson", mean = -5.0', "nodes[id=D1].demand.mean"),
        ("std = 1.0", "std = -1.0", "nodes[id=D2].demand.std"),
        ('destination = "D1"', 'destination = "D1"\nprice = -2', "lanes[1].price"),
        ('destination = "D1"', 'destination = "D1"\nlot_size = -10', "lanes[1].lot_size"),
        (
            'destination = "D1"',
            'destination = "D1"\nmin_monthly_commitment = -1',
            "lanes[1].min_monthly_commitment",
        ),
        ('destination = "D1"', 'destination = "D1"\nshipping_cost = -1', "lanes[1].shipping_cost"),
        ('id = "org"', 'id = "org"\nmonthly_budget = -100', "organizations[id=org].monthly_budget"),
    ],
)
def test_negative_quantity(tmp_path: Path, old: str, new: str, field: str) -> None:
    err = expect_error(tmp_path, sub(BASE, old, new), field, ">= 0")
    assert err.got.startswith("-")


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("holding_cost = 0.1", "holding_cost = nan", "nodes[id=S].holding_cost"),
        ("capacity = 100.0", "capacity = nan", "nodes[id=S].capacity"),
        ('"poisson", mean = 5.0', '"poisson", mean = nan', "nodes[id=D1].demand.mean"),
        ('id = "org"', 'id = "org"\nmonthly_budget = nan', "organizations[id=org].monthly_budget"),
        (
            'destination = "D1"',
            'destination = "D1"\ntransit_holding_cost = nan',
            "lanes[1].transit_holding_cost",
        ),
    ],
)
def test_nan_is_rejected(tmp_path: Path, old: str, new: str, field: str) -> None:
    err = expect_error(tmp_path, sub(BASE, old, new), field, "a number")
    assert err.got == "nan"


def test_infinity_only_where_unlimited_makes_sense(tmp_path: Path) -> None:
    expect_error(
        tmp_path,
        sub(BASE, "holding_cost = 0.1", "holding_cost = inf"),
        "nodes[id=S].holding_cost",
        "a number >= 0",
    )


# ----------------------------------------------------------------- ids and references


def test_duplicate_node_id(tmp_path: Path) -> None:
    text = sub(BASE, 'id = "D2"', 'id = "D1"')
    err = expect_error(tmp_path, text, "nodes[2].id", "unique")
    assert '"D1"' in err.got


def test_duplicate_organization_id(tmp_path: Path) -> None:
    orgs = '[[organizations]]\nid = "org"\n\n[[organizations]]\nid = "other"\n\n'
    text = sub(BASE, '[[organizations]]\nid = "org"\n', orgs + '[[organizations]]\nid = "org"\n')
    err = expect_error(tmp_path, text, "organizations[2].id", "unique")
    assert '"org"' in err.got


def test_duplicate_lane(tmp_path: Path) -> None:
    text = BASE + '\n[[lanes]]\nsource = "S"\ndestination = "D1"\n'
    err = expect_error(tmp_path, text, "lanes[3]", "one lane per source->destination")
    assert '"S->D1"' in err.got


@pytest.mark.parametrize(
    ("old", "new", "field", "got"),
    [
        (
            'source = "S"\ndestination = "D1"',
            'source = "SS"\ndestination = "D1"',
            "lanes[1].source",
            '"SS"',
        ),
        ('destination = "D1"', 'destination = "D3"', "lanes[1].destination", '"D3"'),
        (
            'destination = "D1"',
            f'destination = "{EXTERNAL}"',
            "lanes[1].destination",
            f'"{EXTERNAL}"',
        ),
        (
            'organization = "org"\nholding_cost = 1.0',
            'organization = "orgg"\nholding_cost = 1.0',
            "nodes[id=D1].organization",
            "did you mean 'org'",
        ),
    ],
)
def test_unknown_reference(tmp_path: Path, old: str, new: str, field: str, got: str) -> None:
    err = expect_error(tmp_path, sub(BASE, old, new), field, "declared")
    assert got in err.got


def test_unknown_transfer_end(tmp_path: Path) -> None:
    text = BASE + '\n[[transfers]]\nsource = "D1"\ndestination = "D9"\n'
    expect_error(tmp_path, text, "transfers[0].destination", "a declared node id")


def test_transfer_between_regions(tmp_path: Path) -> None:
    text = sub(
        BASE,
        'id = "D2"\ntier = "distributor"\nregion = "R"',
        'id = "D2"\ntier = "distributor"\nregion = "Q"',
    )
    text += '\n[[transfers]]\nsource = "D1"\ndestination = "D2"\nunit_cost = 1.0\n'
    err = expect_error(tmp_path, text, "transfers[0].destination", 'region "R"', "same-region")
    assert 'region "Q"' in err.got


def test_valid_transfers_outages_delays_surges(tmp_path: Path) -> None:
    text = (
        BASE
        + """
[[transfers]]
source = "D1"
destination = "D2"
unit_cost = 1.5

[[outages]]
target = "S"
start_probability = 0.01
mean_duration_days = 5
capacity_fraction = 0.2
notice_lag_days = 1

[[outages]]
target = "S->D1"
start_probability = 0.01
mean_duration_days = 3

[[delays]]
lane = "external->S"
probability = 0.1
min_days = 2
max_days = 4

[[surges]]
region = "R"
multiplier = 1.5
duration_days = 7
start_day = 10
"""
    )
    scenario = load_scenario(write(tmp_path, text))
    assert scenario.network.transfers[0].lead_time_days == 1
    assert [o.target for o in scenario.outages] == ["S", "S->D1"]
    assert scenario.delays[0].max_days == 4
    assert scenario.surges[0].start_day == 10


def test_fixed_outage_window_is_exact_in_every_replication(tmp_path: Path) -> None:
    from fedinv.model.layout import compile_layout
    from fedinv.sim.exogenous import draw_exogenous

    text = BASE + '\n[[outages]]\ntarget = "S"\nstart_day = 5\nduration_days = 3\n'
    scenario = load_scenario(write(tmp_path, text))
    assert (scenario.outages[0].start_day, scenario.outages[0].duration_days) == (5, 3)
    layout = compile_layout(scenario.network)
    exo = draw_exogenous(scenario, layout, [0, 1, 7], 12)
    s = scenario.network.node_index["S"]
    down = np.flatnonzero(exo.node_factor[:, :, s] < 1.0)
    expected = np.zeros((3, 12), bool)
    expected[:, 5:8] = True
    np.testing.assert_array_equal(exo.node_factor[:, :, s] == 0.0, expected)
    assert len(down) == 9
    # random outages still need their probability; a fixed one refuses it
    expect_error(
        tmp_path,
        BASE + '\n[[outages]]\ntarget = "S"\nstart_day = 5\n'
        "duration_days = 3\nstart_probability = 0.1\n",
        "outages[0].start_probability",
        "fixed outage",
    )
    expect_error(
        tmp_path,
        BASE + '\n[[outages]]\ntarget = "S"\nduration_days = 3\n'
        "start_probability = 0.1\nmean_duration_days = 2\n",
        "outages[0].start_day",
        "random outage",
    )


@pytest.mark.parametrize(
    ("section", "field", "expected"),
    [
        (
            '[[outages]]\ntarget = "X"\nstart_probability = 0.1\nmean_duration_days = 2',
            "outages[0].target",
            "lane id",
        ),
        (
            '[[outages]]\ntarget = "S->D2x"\nstart_probability = 0.1\nmean_duration_days = 2',
            "outages[0].target",
            "lane id",
        ),
        ('[[delays]]\nlane = "S"\nprobability = 0.1', "delays[0].lane", "SOURCE->DESTINATION"),
        (
            '[[surges]]\nregion = "Mars"\nmultiplier = 2\nduration_days = 5\nstart_day = 1',
            "surges[0].region",
            "region with customer-facing nodes (R)",
        ),
    ],
)
def test_unknown_event_reference(tmp_path: Path, section: str, field: str, expected: str) -> None:
    expect_error(tmp_path, BASE + "\n" + section + "\n", field, expected)


# ----------------------------------------------------------------- lane graph


def test_cycle_names_a_node_on_it(tmp_path: Path) -> None:
    text = BASE + '\n[[lanes]]\nsource = "D1"\ndestination = "D2"\n'
    text += '\n[[lanes]]\nsource = "D2"\ndestination = "D1"\n'
    err = expect_error(tmp_path, text, "lanes[4]", "acyclic")
    assert "D1 -> D2 -> D1" in err.got


def test_node_without_path_to_demand(tmp_path: Path) -> None:
    text = BASE.replace(
        '[[lanes]]\nsource = "external"',
        '[[nodes]]\nid = "D3"\ntier = "distributor"\nregion = "R"\norganization = "org"\n\n'
        '[[lanes]]\nsource = "S"\ndestination = "D3"\n\n[[lanes]]\nsource = "external"',
    )
    expect_error(tmp_path, text, "nodes[id=D3]", "path through lanes", "customer demand")


def test_no_customer_node_at_all(tmp_path: Path) -> None:
    text = sub(BASE, 'demand = { distribution = "poisson", mean = 5.0 }\n', "")
    text = sub(text, 'demand = { distribution = "normal", mean = 4.0, std = 1.0 }\n', "")
    expect_error(tmp_path, text, "nodes", "customer demand")


def test_node_without_inbound_lane(tmp_path: Path) -> None:
    text = sub(BASE, '[[lanes]]\nsource = "external"\ndestination = "S"\n', "")
    text = sub(text, 'lead_time = { distribution = "deterministic", mean = 2 }\n', "")
    expect_error(tmp_path, text, "nodes[id=S]", "inbound lane", EXTERNAL)


def test_bom_item_without_supplier(tmp_path: Path) -> None:
    text = sub(BOM_BASE, "chip = 2.0, screen = 1.0", "chip = 2.0, screen = 1.0, battery = 1.0")
    err = expect_error(tmp_path, text, "nodes[id=M].bill_of_materials.battery", '"battery"')
    assert err.got == "no such lane"


def test_inbound_lane_item_not_in_bom(tmp_path: Path) -> None:
    text = sub(BOM_BASE, "chip = 2.0, screen = 1.0", "chip = 2.0")
    err = expect_error(tmp_path, text, "lanes[3].source", "bill_of_materials", "(chip)")
    assert '"screen"' in err.got


def test_external_lane_into_bom_node_must_name_a_bom_item(tmp_path: Path) -> None:
    text = BOM_BASE + '\n[[lanes]]\nsource = "external"\ndestination = "M"\n'
    expect_error(tmp_path, text, "lanes[5].item", "bill_of_materials item")
    named = text + 'item = "gravel"\n'
    expect_error(tmp_path, named, "lanes[5].item", "bill_of_materials item")


def test_item_only_on_external_lanes(tmp_path: Path) -> None:
    text = sub(
        BASE, 'source = "S"\ndestination = "D1"', 'source = "S"\ndestination = "D1"\nitem = "x"'
    )
    expect_error(tmp_path, text, "lanes[1].item", "no item on a lane from a node")


def test_bom_only_on_manufacturers(tmp_path: Path) -> None:
    text = sub(BOM_BASE, 'tier = "manufacturer"', 'tier = "distributor"')
    expect_error(tmp_path, text, "nodes[id=M].bill_of_materials", "manufacturer")


def test_bom_quantity_positive(tmp_path: Path) -> None:
    text = sub(BOM_BASE, "chip = 2.0", "chip = -2.0")
    expect_error(tmp_path, text, "nodes[id=M].bill_of_materials.chip", "> 0")


def test_order_shares_of_split_sourcing_sum_to_one(tmp_path: Path) -> None:
    second = """
[[nodes]]
id = "chips2"
tier = "supplier"
region = "R"
organization = "org"
item = "chip"

[[lanes]]
source = "external"
destination = "chips2"

[[lanes]]
source = "chips2"
destination = "M"
order_share = 0.4
"""
    text = BOM_BASE.replace("[[lanes]]", second.strip() + "\n\n[[lanes]]", 1)
    err = expect_error(tmp_path, text, "lanes[4].order_share", '"chip" to "M"', "sum to 1")
    assert err.got == "0.4 + 1 = 1.4"
    text = sub(
        text,
        'source = "chips"\ndestination = "M"',
        'source = "chips"\ndestination = "M"\norder_share = 0.6',
    )
    scenario = load_scenario(write(tmp_path, text, "ok.toml"))
    assert sorted(lane.order_share for lane in scenario.network.lanes) == [0.4, 0.6] + [1.0] * 5


def test_order_shares_into_a_node_without_bom_sum_to_one(tmp_path: Path) -> None:
    # without a bill of materials every inbound lane brings the same product, whatever
    # the sources' item names
    text = sub(BASE, 'id = "S"\n', 'id = "S"\nitem = "widget"\n')
    text += '\n[[lanes]]\nsource = "D2"\ndestination = "D1"\norder_share = 0.2\n'
    err = expect_error(tmp_path, text, "lanes[3].order_share", 'into "D1" that sum to 1')
    assert err.got == "1 + 0.2 = 1.2"
    text = sub(
        text,
        'source = "S"\ndestination = "D1"',
        'source = "S"\ndestination = "D1"\norder_share = 0.8',
    )
    assert load_scenario(write(tmp_path, text, "ok.toml")).network.lanes[1].order_share == 0.8
    # a single lane (here the external one) must carry the whole stream
    text = sub(BASE, 'destination = "S"\n', 'destination = "S"\norder_share = 0.5\n')
    expect_error(tmp_path, text, "lanes[0].order_share", 'into "S"')


# ----------------------------------------------------------------- lead times


def test_negative_lead_time_explains_the_convention(tmp_path: Path) -> None:
    text = sub(BASE, '"deterministic", mean = 2', '"deterministic", mean = -1')
    err = expect_error(
        tmp_path,
        text,
        "lanes[0].lead_time.mean",
        "lead times are whole days >= 1",
        "arrives at the earliest the next morning",
    )
    assert err.got == "-1"


@pytest.mark.parametrize(
    ("new", "field", "expected"),
    [
        ("lead_time = 0", "lanes[0].lead_time", "whole days >= 1"),
        (
            'lead_time = { distribution = "deterministic", mean = 1.5 }',
            "lanes[0].lead_time.mean",
            "whole days >= 1",
        ),
        (
            'lead_time = { distribution = "uniform", low = 0, high = 2 }',
            "lanes[0].lead_time.low",
            "whole days >= 1",
        ),
        (
            'lead_time = { distribution = "poisson", mean = 0.5 }',
            "lanes[0].lead_time.mean",
            "whole days >= 1",
        ),
        (
            'lead_time = { distribution = "empirical", values = [2, 0] }',
            "lanes[0].lead_time.values[1]",
            "whole days >= 1",
        ),
        (
            'lead_time = { distribution = "weibull", mean = 2 }',
            "lanes[0].lead_time.distribution",
            '"lognormal"',
        ),
        (
            'lead_time = { distribution = "uniform", low = 4, high = 2 }',
            "lanes[0].lead_time.high",
            ">= low (4)",
        ),
        (
            'lead_time = { distribution = "empirical", values = [2, 3], weights = [1.0] }',
            "lanes[0].lead_time.weights",
            "one weight per value (2 values)",
        ),
        (
            'lead_time = { distribution = "gamma", mean = 3 }',
            "lanes[0].lead_time.std",
            "positive mean and std",
        ),
        (
            'lead_time = { distribution = "gamma", mean = 3, std = 0 }',
            "lanes[0].lead_time.std",
            "positive mean and std",
        ),
        (
            'lead_time = { distribution = "lognormal", mean = 0, std = 1 }',
            "lanes[0].lead_time.mean",
            "positive mean and std",
        ),
        (
            'lead_time = { distribution = "poisson", mean = 2, std = 1 }',
            "lanes[0].lead_time.std",
            "poisson distribution uses (mean)",
        ),
        (
            'lead_time = { distribution = "uniform", low = 3, high = 6, max_days = 2 }',
            "lanes[0].lead_time.max_days",
            "shortest lead time (3 days)",
        ),
        ('lead_time = "two days"', "lanes[0].lead_time", "a table"),
    ],
)
def test_bad_lead_time(tmp_path: Path, new: str, field: str, expected: str) -> None:
    text = sub(BASE, 'lead_time = { distribution = "deterministic", mean = 2 }', new)
    expect_error(tmp_path, text, field, expected)


def test_lead_time_distributions_load(tmp_path: Path) -> None:
    text = sub(
        BASE,
        'lead_time = { distribution = "deterministic", mean = 2 }',
        'lead_time = { distribution = "empirical", values = [2, 5], weights = [3, 1] }',
    )
    text = sub(
        text,
        'lead_time = { distribution = "deterministic", mean = 1 }',
        'lead_time = { distribution = "lognormal", mean = 4, std = 1.5, max_days = 9 }',
    )
    scenario = load_scenario(write(tmp_path, text))
    empirical, _, lognormal = (lane.lead_time for lane in scenario.network.lanes)
    assert empirical.values == (2, 5) and empirical.expected_days == pytest.approx(2.75)
    assert lognormal.support_max == 9


# ----------------------------------------------------------------- demand


@pytest.mark.parametrize(
    ("new", "field", "expected"),
    [
        (
            '{ distribution = "gaussian", mean = 5.0 }',
            "nodes[id=D1].demand.distribution",
            '"negative_binomial"',
        ),
        (
            '{ distribution = "uniform", low = 3, high = 1 }',
            "nodes[id=D1].demand.high",
            ">= low (3)",
        ),
        (
            "{ mean = 5.0, weekly = [1, 1, 1, 1, 1, 1] }",
            "nodes[id=D1].demand.weekly",
            "7 weekday factors",
        ),
        (
            "{ mean = 5.0, weekly = [1, 1, 1, 1, 1, 1, -1] }",
            "nodes[id=D1].demand.weekly[6]",
            "7 weekday factors",
        ),
        ("{ mean = 5.0, std = 2.0 }", "nodes[id=D1].demand.std", "poisson distribution uses"),
        (
            '{ distribution = "negative_binomial", mean = 5.0 }',
            "nodes[id=D1].demand.dispersion",
            "required",
        ),
        (
            "{ mean = 5.0, annual_amplitude = 1.5 }",
            "nodes[id=D1].demand.annual_amplitude",
            "in [0, 1]",
        ),
        (
            "{ mean = 5.0, promotions = [{ start_day = 9, end_day = 3, multiplier = 2 }] }",
            "nodes[id=D1].demand.promotions[0].end_day",
            ">= start_day (9)",
        ),
        (
            "{ mean = 5.0, promotions = [{ start_day = 1, end_day = 3, multiplier = -2 }] }",
            "nodes[id=D1].demand.promotions[0].multiplier",
            ">= 0",
        ),
    ],
)
def test_bad_demand(tmp_path: Path, new: str, field: str, expected: str) -> None:
    text = sub(BASE, '{ distribution = "poisson", mean = 5.0 }', new)
    expect_error(tmp_path, text, field, expected)


def test_demand_sub_tables_load(tmp_path: Path) -> None:
    text = sub(BASE, 'demand = { distribution = "normal", mean = 4.0, std = 1.0 }\n', "")
    text = text.replace(
        "[[lanes]]",
        """[nodes.demand]
distribution = "negative_binomial"
mean = 8.0
dispersion = 4.0
weekly = [1.1, 1.1, 1.1, 1.1, 1.1, 0.8, 0.7]
annual_amplitude = 0.3
annual_peak_day = 330
[[nodes.demand.promotions]]
start_day = 331
end_day = 334
multiplier = 2.0

[[lanes]]""",
        1,
    )
    demand = load_scenario(write(tmp_path, text)).network.node("D2").demand
    assert demand is not None
    assert demand.distribution == "negative_binomial" and demand.dispersion == 4.0
    assert demand.weekly[5] == 0.8 and demand.promotions[0].multiplier == 2.0


# ----------------------------------------------------------------- probabilities, events


@pytest.mark.parametrize(
    ("section", "field"),
    [
        (
            '[[outages]]\ntarget = "S"\nstart_probability = 1.5\nmean_duration_days = 2',
            "outages[0].start_probability",
        ),
        (
            '[[outages]]\ntarget = "S"\nstart_probability = 0.1\nmean_duration_days = 2\n'
            "capacity_fraction = -0.1",
            "outages[0].capacity_fraction",
        ),
        (
            '[[outages]]\ntarget = "S"\nstart_probability = 0.1\nmean_duration_days = 2\n'
            "capacity_fraction = 1.2",
            "outages[0].capacity_fraction",
        ),
        ('[[delays]]\nlane = "S->D1"\nprobability = 2.0', "delays[0].probability"),
        (
            '[[surges]]\nregion = "R"\nmultiplier = 2\nduration_days = 5\nstart_probability = 1.2',
            "surges[0].start_probability",
        ),
    ],
)
def test_probability_outside_unit_interval(tmp_path: Path, section: str, field: str) -> None:
    expect_error(tmp_path, BASE + "\n" + section + "\n", field, "in [0, 1]")


@pytest.mark.parametrize(
    ("target", "what"),
    [("D1", 'node "D1" has no capacity'), ("S->D1", 'lane "S->D1" has no transport_capacity')],
)
def test_partial_outage_of_unlimited_capacity(tmp_path: Path, target: str, what: str) -> None:
    section = (
        f'[[outages]]\ntarget = "{target}"\nstart_probability = 0.1\nmean_duration_days = 2\n'
        "capacity_fraction = 0.5\n"
    )
    expect_error(tmp_path, BASE + "\n" + section, "outages[0].capacity_fraction", what)
    full_stop = section.replace("capacity_fraction = 0.5", "capacity_fraction = 0.0")
    assert load_scenario(write(tmp_path, BASE + "\n" + full_stop, "ok.toml")).outages


def test_delay_bounds(tmp_path: Path) -> None:
    section = '[[delays]]\nlane = "S->D1"\nprobability = 0.1\nmin_days = 4\nmax_days = 2\n'
    expect_error(tmp_path, BASE + "\n" + section, "delays[0].max_days", ">= min_days (4)")


@pytest.mark.parametrize(
    ("extra", "got"), [("start_day = 3\nstart_probability = 0.1", "both"), ("", "neither")]
)
def test_surge_is_fixed_or_random(tmp_path: Path, extra: str, got: str) -> None:
    section = f'[[surges]]\nregion = "R"\nmultiplier = 2\nduration_days = 5\n{extra}\n'
    err = expect_error(tmp_path, BASE + "\n" + section, "surges[0].start_day", "either")
    assert err.got == got


# ----------------------------------------------------------------- files and names


def test_missing_scenario_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario(tmp_path / "nope.toml")
    assert info.value.field == "<file>" and "no such file" in str(info.value)


def test_unknown_builtin_name_lists_the_builtins() -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario("no-such-scenario")
    assert "serial-3" in info.value.expected and "electronics-5r" in info.value.expected


def test_error_is_one_line_and_picklable(tmp_path: Path) -> None:
    text = sub(BASE, 'id = "D2"', 'id = "D1"')
    err = expect_error(tmp_path, text, "nodes[2].id", "unique")
    clone = pickle.loads(pickle.dumps(err))
    assert isinstance(clone, ScenarioError) and str(clone) == str(err)
    assert (clone.file, clone.field, clone.expected, clone.got) == (
        err.file,
        err.field,
        err.expected,
        err.got,
    )
    multi = sub(BASE, 'tier = "supplier"', 'tier = """sup\nplier"""')
    assert "\n" not in str(expect_error(tmp_path, multi, "nodes[id=S].tier", '"supplier"'))


# ----------------------------------------------------------------- demand history

HISTORY = 'seed = 3\n[demand_history]\nfile = "{file}"\nmode = "{mode}"\n'


def history_scenario(tmp_path: Path, file: str, mode: str = "replay") -> str:
    """BASE with a demand-history section and without D2's demand table."""
    text = sub(BASE, "seed = 3\n", HISTORY.format(file=file, mode=mode))
    # D2 gets its demand only from the file
    return sub(text, 'demand = { distribution = "normal", mean = 4.0, std = 1.0 }\n', "")


def write_history(tmp_path: Path, kind: str, frame: pd.DataFrame) -> str:
    name = f"sales.{kind}"
    if kind == "csv":
        frame.to_csv(tmp_path / name, index=False)
    else:
        frame.to_parquet(tmp_path / name, index=False)
    return name


GOOD_ROWS = pd.DataFrame(
    {
        "date": ["2024-01-03", "2024-01-01", "2024-01-01", "2024-01-02", "2024-01-05"],
        "node": ["D1", "D1", "D1", "D2", "D2"],
        "quantity": [4.0, 2.0, 3.0, 7.0, 1.0],
    }
)


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_demand_history_is_aggregated_per_node_and_day(tmp_path: Path, kind: str) -> None:
    file = write_history(tmp_path, kind, GOOD_ROWS)
    scenario = load_scenario(write(tmp_path, history_scenario(tmp_path, file), "hist.toml"))
    d1 = scenario.network.node("D1").demand
    d2 = scenario.network.node("D2").demand
    assert d1 is not None and d2 is not None
    assert d1.history == (5.0, 0.0, 4.0)  # Jan 1 summed, Jan 2 missing -> 0, sorted
    assert d1.distribution == "poisson" and d1.mean == 5.0  # the model's fields stay
    assert d2.history == (7.0, 0.0, 0.0, 1.0) and d2.history_mode == "replay"
    assert d2 == DemandModel(history=(7.0, 0.0, 0.0, 1.0), history_mode="replay")
    assert scenario.network.node("S").demand is None


def test_parquet_history_with_datetime_column(tmp_path: Path) -> None:
    frame = GOOD_ROWS.assign(date=pd.to_datetime(GOOD_ROWS["date"]))
    series = load_demand_history(
        tmp_path / write_history(tmp_path, "parquet", frame), ["D1", "D2"], "x.toml"
    )
    np.testing.assert_array_equal(series["D1"], [5.0, 0.0, 4.0])


def test_history_makes_a_node_customer_facing_for_the_reach_check(tmp_path: Path) -> None:
    text = history_scenario(tmp_path, write_history(tmp_path, "csv", GOOD_ROWS.iloc[:3]))
    # D2 has no demand table and no rows now: it reaches no customer
    expect_error(tmp_path, text, "nodes[id=D2]", "path through lanes")


def test_history_file_missing(tmp_path: Path) -> None:
    path = write(tmp_path, history_scenario(tmp_path, "nowhere.csv"))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    err = info.value
    assert err.file == str(path) and err.field == "demand_history.file"
    assert "no such file" in err.got and "nowhere.csv" in err.got


def test_history_mode_checked(tmp_path: Path) -> None:
    file = write_history(tmp_path, "csv", GOOD_ROWS)
    text = history_scenario(tmp_path, file, mode="shuffle")
    expect_error(tmp_path, text, "demand_history.mode", '"bootstrap"', '"replay"')


def history_error(tmp_path: Path, kind: str, frame: pd.DataFrame) -> ScenarioError:
    file = write_history(tmp_path, kind, frame)
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, history_scenario(tmp_path, file)))
    err = info.value
    assert err.file == str(tmp_path / file)
    assert "\n" not in str(err)
    return err


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_history_missing_columns_are_named(tmp_path: Path, kind: str) -> None:
    err = history_error(tmp_path, kind, GOOD_ROWS.rename(columns={"quantity": "qty"}))
    assert err.field == "<columns>" and "missing quantity" in err.got and "qty" in err.got


@pytest.mark.parametrize(("kind", "row"), [("csv", "line 4"), ("parquet", "row 3")])
def test_history_unknown_node_names_the_first(tmp_path: Path, kind: str, row: str) -> None:
    frame = GOOD_ROWS.copy()
    frame.loc[2, "node"] = "D7"
    frame.loc[4, "node"] = "D8"
    err = history_error(tmp_path, kind, frame)
    assert err.field == f"node ({row})" and '"D7"' in err.got


@pytest.mark.parametrize(("kind", "row"), [("csv", "line 3"), ("parquet", "row 2")])
def test_history_bad_date_gives_the_row(tmp_path: Path, kind: str, row: str) -> None:
    frame = GOOD_ROWS.copy()
    frame.loc[1, "date"] = "2024-13-01"
    err = history_error(tmp_path, kind, frame)
    assert err.field == f"date ({row})" and "ISO date" in err.expected and "2024-13-01" in err.got


@pytest.mark.parametrize(
    ("kind", "value", "row"),
    [
        ("csv", -3.0, "line 5"),
        ("csv", math.nan, "line 5"),
        ("parquet", -3.0, "row 4"),
        ("parquet", math.nan, "row 4"),
    ],
)
def test_history_negative_or_nan_quantity_gives_the_row(
    tmp_path: Path, kind: str, value: float, row: str
) -> None:
    frame = GOOD_ROWS.copy()
    frame.loc[3, "quantity"] = value
    err = history_error(tmp_path, kind, frame)
    assert err.field == f"quantity ({row})" and ">= 0" in err.expected


def test_history_csv_text_quantity_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("Date,Node,Quantity,Store\n2024-01-01,D1,3,x\n\n2024-01-02,D1,many,x\n")
    with pytest.raises(ScenarioError) as info:
        load_demand_history(path, ["D1"], "s.toml")
    assert info.value.field == "quantity (line 4)" and '"many"' in info.value.got


def test_history_unreadable_parquet(tmp_path: Path) -> None:
    path = tmp_path / "h.parquet"
    path.write_bytes(b"not a parquet file")
    with pytest.raises(ScenarioError) as info:
        load_demand_history(path, ["D1"], "s.toml")
    assert info.value.file == str(path) and "Parquet" in info.value.expected


# ----------------------------------------------------------------- built-in scenarios


def test_builtin_scenarios_are_listed() -> None:
    listed = builtin_scenarios()
    assert tuple(sorted(listed)) == BUILTINS
    assert all(description and "\n" not in description for description in listed.values())


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_loads(name: str) -> None:
    scenario = load_scenario(name)
    assert scenario.name == name
    assert scenario.source == f"builtin:{name}"
    assert scenario.description == builtin_scenarios()[name]
    assert scenario.network.customer_nodes


def test_serial_3_is_snyder_shen_example_6_1() -> None:
    scenario = load_scenario("serial-3")
    net = scenario.network
    assert [n.id for n in net.nodes] == ["stage-1", "stage-2", "stage-3"]
    assert [n.tier for n in net.nodes] == [Tier.DISTRIBUTOR, Tier.MANUFACTURER, Tier.SUPPLIER]
    assert [n.holding_cost for n in net.nodes] == [7.0, 4.0, 2.0]  # local = echelon 3, 2, 2
    assert [n.initial_inventory for n in net.nodes] == [6.484, 5.544, 10.692]
    assert np.cumsum([6.484, 5.544, 10.692]) == pytest.approx([6.484, 12.028, 22.720])
    stage1 = net.node("stage-1")
    assert stage1.stockout_penalty == 37.12
    assert stage1.demand == DemandModel(distribution="normal", mean=5.0, std=1.0)
    lanes = {lane.id: lane for lane in net.lanes}
    assert set(lanes) == {"external->stage-3", "stage-3->stage-2", "stage-2->stage-1"}
    assert lanes["external->stage-3"].lead_time.expected_days == 2
    assert lanes["external->stage-3"].transit_holding_cost == 0
    for lane_id in ("stage-3->stage-2", "stage-2->stage-1"):
        assert lanes[lane_id].lead_time.expected_days == 1
        assert lanes[lane_id].transit_holding_cost is None  # the source's holding cost
    assert all(lane.price is None and lane.shipping_cost == 0 for lane in net.lanes)
    assert all(n.unit_value == 0 for n in net.nodes)
    assert not scenario.lost_sales and scenario.horizon_days == 365 and scenario.seed == 1
    assert len(net.organizations) == 1


def test_small_builtins_have_their_textbook_parameters() -> None:
    beer = load_scenario("beer-game")
    assert len(beer.network.organizations) == 4 and beer.horizon_days == 100
    assert [n.holding_cost for n in beer.network.nodes] == [2.0] * 4
    assert [n.stockout_penalty for n in beer.network.nodes] == [2.0, 0.0, 0.0, 0.0]
    assert all(lane.lead_time.expected_days == 2 for lane in beer.network.lanes)
    assert all(lane.transit_holding_cost == 0 for lane in beer.network.lanes)
    retailer = beer.network.node("retailer").demand
    assert retailer is not None and (retailer.low, retailer.high) == (0, 2)

    single = load_scenario("single-node")
    store = single.network.node("store")
    assert store.demand == DemandModel(distribution="normal", mean=100.0, std=15.0)
    assert (store.holding_cost, store.stockout_penalty) == (1.0, 19.0)
    assert single.network.lanes[0].lead_time.expected_days == 1 and not single.lost_sales

    lost = load_scenario("single-node-lost-sales")
    store = lost.network.node("store")
    assert lost.lost_sales and store.demand == DemandModel(distribution="poisson", mean=5.0)
    assert (store.holding_cost, store.stockout_penalty) == (1.0, 4.0)
    assert lost.network.lanes[0].lead_time.expected_days == 2


def test_electronics_5r_structure() -> None:
    scenario = load_scenario("electronics-5r")
    net = scenario.network
    nodes = {n.id: n for n in net.nodes}
    assert len(net.nodes) >= 20
    assert {n.tier for n in net.nodes} == set(Tier)
    distributors = [n for n in net.nodes if n.tier is Tier.DISTRIBUTOR]
    regions = {n.region for n in distributors}
    assert len(regions) == 5
    assert all(2 <= sum(d.region == r for d in distributors) <= 4 for r in regions)
    assert all(d.demand is not None for d in distributors)
    assert len({d.demand.mean for d in distributors if d.demand}) > 5  # regional means differ
    assert len(net.organizations) >= 3
    assert all(math.isfinite(o.monthly_budget) for o in net.organizations)
    suppliers = [n for n in net.nodes if n.tier is Tier.SUPPLIER]
    assert len(suppliers) >= 6 and len({s.item for s in suppliers}) >= 3
    assert len({s.region for s in suppliers}) >= 2
    plants = [n for n in net.nodes if n.tier is Tier.MANUFACTURER]
    assert len(plants) >= 3
    assert all(len(p.bill_of_materials) >= 2 and math.isfinite(p.capacity) for p in plants)
    for supplier in suppliers:  # raw material from outside, limited production
        assert any(
            lane.source == EXTERNAL and lane.destination == supplier.id for lane in net.lanes
        )
        assert math.isfinite(supplier.capacity)
    stochastic = {lane.lead_time.distribution for lane in net.lanes}
    assert {"uniform", "gamma", "lognormal", "empirical", "poisson"} <= stochastic
    assert any(0 < lane.order_share < 1 for lane in net.lanes)  # split sourcing
    assert net.transfers
    for link in net.transfers:
        assert nodes[link.source].region == nodes[link.destination].region
    links = {(t.source, t.destination) for t in net.transfers}
    assert all((b, a) in links for a, b in links)  # both directions
    assert len(scenario.outages) >= 2 and len(scenario.delays) >= 2
    assert any(s.start_day is not None for s in scenario.surges)
    assert any(s.start_probability > 0 for s in scenario.surges)
    assert any(lane.lot_size > 0 for lane in net.lanes)
    assert any(lane.min_monthly_commitment > 0 for lane in net.lanes)
    assert any(lane.fixed_order_cost > 0 for lane in net.lanes)
    assert (scenario.horizon_days, scenario.start_date, scenario.seed) == (365, "2025-01-01", 2025)


def test_electronics_5r_capacities_exceed_mean_flow() -> None:
    """Every capacity is 30-60% above the mean flow the bill of materials and shares imply."""
    net = load_scenario("electronics-5r").network
    need = {n.id: n.demand.base_mean for n in net.nodes if n.demand is not None}
    nodes = {n.id: n for n in net.nodes}
    for node in reversed(net.nodes):  # the file lists suppliers first, distributors last
        for lane in net.lanes:
            if lane.destination != node.id or lane.source == EXTERNAL:
                continue
            per_unit = node.bill_of_materials.get(nodes[lane.source].item_name, 1.0)
            need[lane.source] = need.get(lane.source, 0.0) + (
                need[node.id] * per_unit * lane.order_share
            )
    for node in net.nodes:
        if math.isfinite(node.capacity):
            assert 1.3 <= node.capacity / need[node.id] <= 1.6, node.id


# ----------------------------------------------------------------- robustness


def _mutations(data: object, rng: random.Random) -> object:
    """One random mutation of a parsed TOML document (in place): a key deleted or a
    value replaced by one of the wrong type or out of range."""
    junk = [-1, -0.5, 0, 1.5, math.nan, math.inf, "x", "", True, [], {}, [1, "a"], 10**12]
    container, key = data, None
    path: list[tuple[object, object]] = []
    while True:
        if isinstance(container, dict) and container:
            key = rng.choice(list(container))
        elif isinstance(container, list) and container:
            key = rng.randrange(len(container))
        else:
            break
        path.append((container, key))
        child = container[key]  # type: ignore[index]
        if not isinstance(child, dict | list) or rng.random() < 0.3:
            break
        container = child
    if not path:
        return data
    parent, key = path[-1]
    if isinstance(parent, dict) and rng.random() < 0.25:
        del parent[key]
    else:
        parent[key] = copy.deepcopy(rng.choice(junk))  # type: ignore[index]
    return data


@pytest.mark.parametrize("name", ["serial-3", "electronics-5r"])
def test_random_corruptions_raise_only_scenario_errors(name: str) -> None:
    """No traceback but ScenarioError reaches a user, whatever is wrong in the file."""
    text = builtin_scenario_text(name)
    original = tomllib.loads(text)
    rng = random.Random(7)
    errors = 0
    for _ in range(150 if name == "electronics-5r" else 400):
        data = copy.deepcopy(original)
        for _ in range(rng.randint(1, 3)):
            _mutations(data, rng)
        try:
            parse_scenario(data, "fuzz.toml", Path("."))
        except ScenarioError as err:
            errors += 1
            assert str(err).startswith("fuzz.toml: field ") and "\n" not in str(err)
    assert errors > 50


# ----------------------------------------------------------------- order lead times, pipeline

LANE_S_D1 = 'destination = "D1"\nlead_time = { distribution = "uniform", low = 1, high = 3 }\n'


def test_order_lead_time_and_initial_pipeline_load(tmp_path: Path) -> None:
    text = sub(
        BASE,
        LANE_S_D1,
        LANE_S_D1 + "order_lead_time = 2\n"
        "initial_pipeline = [{ arrival_day = 2, quantity = 4.0 }, "
        "{ arrival_day = 1, quantity = 3 }]\n",
    )
    lane = load_scenario(write(tmp_path, text)).network.lanes[1]
    assert lane.order_lead_time == 2
    assert [(e.arrival_day, e.quantity) for e in lane.initial_pipeline] == [(1, 3.0), (2, 4.0)]


@pytest.mark.parametrize(
    ("new", "field", "expected"),
    [
        ("order_lead_time = -1", "lanes[1].order_lead_time", "0 to 100000"),
        ("order_lead_time = 1.5", "lanes[1].order_lead_time", "an integer number of days"),
        (
            "initial_pipeline = [{ arrival_day = 0, quantity = 1 }]",
            "lanes[1].initial_pipeline[0].arrival_day",
            "initial_inventory",
        ),
        (
            "initial_pipeline = [{ arrival_day = 1, quantity = -1 }]",
            "lanes[1].initial_pipeline[0].quantity",
            ">= 0",
        ),
        (
            "initial_pipeline = [{ arrival_day = 1, quantity = 1 }, "
            "{ arrival_day = 1, quantity = 2 }]",
            "lanes[1].initial_pipeline[1].arrival_day",
            "one entry per arrival day",
        ),
        (  # U{1..3}: what left on day -1 or earlier arrives by day 2
            "initial_pipeline = [{ arrival_day = 3, quantity = 1 }]",
            "lanes[1].initial_pipeline",
            "arrival days from 1 to 2",
        ),
        ("initial_pipeline = [{ day = 1, quantity = 1 }]", "lanes[1].initial_pipeline[0].day", ""),
        ("initial_pipeline = 4", "lanes[1].initial_pipeline", "an array"),
    ],
)
def test_bad_order_lead_time_or_initial_pipeline(
    tmp_path: Path, new: str, field: str, expected: str
) -> None:
    expect_error(tmp_path, sub(BASE, LANE_S_D1, LANE_S_D1 + new + "\n"), field, expected)


def test_initial_pipeline_may_arrive_late_by_the_lane_extra_delay(tmp_path: Path) -> None:
    late = "initial_pipeline = [{ arrival_day = 4, quantity = 1 }]\n"
    text = sub(BASE, LANE_S_D1, LANE_S_D1 + late)
    expect_error(tmp_path, text, "lanes[1].initial_pipeline", "arrival days from 1 to 2")
    text += '\n[[delays]]\nlane = "S->D1"\nprobability = 0.1\nmin_days = 1\nmax_days = 2\n'
    assert load_scenario(write(tmp_path, text, "ok.toml")).network.lanes[1].initial_pipeline


# ----------------------------------------------------------------- magnitudes


@pytest.mark.parametrize(
    ("old", "new", "field", "expected"),
    [
        ("horizon_days = 30", "horizon_days = 1e308", "horizon_days", "written as an integer"),
        ("horizon_days = 30", "horizon_days = 30.5", "horizon_days", "an integer >= 1"),
        ("capacity = 100.0", "capacity = 1e308", "nodes[id=S].capacity", "at most 1e+15"),
        ("unit_value = 10.0", "unit_value = -1e300", "nodes[id=S].unit_value", ">= 0"),
        ("unit_value = 10.0", "unit_value = 1e16", "nodes[id=S].unit_value", "at most 1e+15"),
        (
            'id = "org"\n',
            'id = "org"\nmonthly_budget = 1e300\n',
            "organizations[id=org].monthly_budget",
            "at most 1e+15",
        ),
        (
            'lead_time = { distribution = "deterministic", mean = 2 }',
            "lead_time = 1000000",
            "lanes[0].lead_time",
            "at most 100000",
        ),
    ],
)
def test_absurd_magnitudes_are_refused(
    tmp_path: Path, old: str, new: str, field: str, expected: str
) -> None:
    expect_error(tmp_path, sub(BASE, old, new), field, expected)


def test_integral_floats_and_large_finite_numbers_still_load(tmp_path: Path) -> None:
    text = sub(BASE, "horizon_days = 30", "horizon_days = 30.0")
    text = sub(text, "capacity = 100.0", "capacity = 1e15")
    scenario = load_scenario(write(tmp_path, text))
    assert scenario.horizon_days == 30 and scenario.network.nodes[0].capacity == 1e15


# ----------------------------------------------------------------- messages that mislead


def test_a_directory_is_not_reported_as_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario(tmp_path)
    assert info.value.field == "<file>" and info.value.got == "a directory"


def test_a_name_without_slash_and_suffix_is_always_a_builtin(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, BASE, "tiny")  # a file named like a built-in name would be
    with pytest.raises(ScenarioError) as info:
        load_scenario("tiny")
    assert "not a built-in" in info.value.got and "./tiny" in info.value.got
    assert load_scenario("./tiny").name == "tiny"
    assert load_scenario(Path("tiny")).name == "tiny"  # a Path is always a file


def test_look_alike_characters_are_shown_by_code_point(tmp_path: Path) -> None:
    look_alike = "D\u0425"  # CYRILLIC CAPITAL LETTER HA, drawn like X
    text = BASE + f'\n[[lanes]]\nsource = "S"\ndestination = "{look_alike}1"\n'
    text = sub(text, 'id = "D1"', 'id = "DX1"')
    text = text.replace('destination = "D1"', 'destination = "DX1"')
    err = expect_error(tmp_path, text, "lanes[3].destination", "a declared node id")
    assert err.got == (
        f"\"{look_alike}1\" (U+0425 CYRILLIC CAPITAL LETTER HA at character 2); did you mean 'DX1'?"
    )


def _history_scenario(tmp_path: Path, content: bytes) -> Path:
    (tmp_path / "sales.csv").write_bytes(content)
    return write(tmp_path, BASE + '\n[demand_history]\nfile = "sales.csv"\n')


def test_non_utf8_history_names_the_line(tmp_path: Path) -> None:
    content = "date,node,quantity\n2024-01-01,D1,3\n2024-01-02,D1,4 caf\xe9\n".encode("latin-1")
    with pytest.raises(ScenarioError) as info:
        load_scenario(_history_scenario(tmp_path, content))
    err = info.value
    assert err.file.endswith("sales.csv") and err.field == "<file> (line 3)"
    assert err.got == "byte 0xE9 at line 3, column 20, which is not UTF-8"


@pytest.mark.parametrize("content", [b"", b"\n  \n"])
def test_empty_history_file(tmp_path: Path, content: bytes) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario(_history_scenario(tmp_path, content))
    assert info.value.got == "an empty file"
    assert "header line date,node,quantity" in info.value.expected
    assert "EmptyDataError" not in str(info.value)


def test_non_utf8_scenario_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin.toml"
    path.write_bytes(BASE.replace('"a tiny network"', '"caf\xe9"').encode("latin-1"))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert info.value.field == "<toml> (line 2)" and "line 2, column 19" in info.value.got


def test_single_node_comment_agrees_with_the_timing() -> None:
    text = builtin_scenario_text("single-node")
    assert "nothing is ever in transit" not in text
    assert "in transit overnight" in text


def _documented_fields(heading: str) -> set[str]:
    """Field names in the first table under ``heading`` of docs/scenarios.md."""
    text = (Path(__file__).parents[1] / "docs" / "scenarios.md").read_text(encoding="utf-8")
    section = text.split(heading, 1)[1]
    fields: set[str] = set()
    started = False
    for line in section.splitlines()[1:]:
        if line.startswith("| `"):
            started = True
            for name in line.split("|")[1].split(","):
                fields.add(name.strip().strip("`"))
        elif started and not line.startswith("|"):
            break
    return fields


@pytest.mark.parametrize(
    ("heading", "keys"),
    [
        ("## `[[organizations]]`", "ORGANIZATION_KEYS"),
        ("## `[[nodes]]`", "NODE_KEYS"),
        ("## `[[lanes]]`", "LANE_KEYS"),
        ("### `initial_pipeline`", "IN_TRANSIT_KEYS"),
        ("## `[[transfers]]`", "TRANSFER_KEYS"),
        ("## `[[outages]]`", "OUTAGE_KEYS"),
        ("## `[[delays]]`", "DELAY_KEYS"),
        ("## `[[surges]]`", "SURGE_KEYS"),
    ],
)
def test_docs_list_exactly_the_accepted_fields(heading: str, keys: str) -> None:
    from fedinv.model import scenario as module

    assert _documented_fields(heading) == set(getattr(module, keys))


def test_document_toml_reads_back_every_builtin_scenario():
    """A scenario document written as TOML reads back to the same document."""
    import tomllib

    from fedinv.model.scenario import builtin_scenario_text, builtin_scenarios, document_toml

    for name in builtin_scenarios():
        doc = tomllib.loads(builtin_scenario_text(name))
        assert tomllib.loads(document_toml(doc)) == doc, name
