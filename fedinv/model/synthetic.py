"""Random, valid three-tier networks of a given size (benchmarks and property tests).

``random_scenario(lanes, seed)`` draws suppliers (each buying raw material on an
external lane and making item ``a`` or ``b``), manufacturers (plain, or assembling one
unit from one ``a`` and one ``b`` when ``assembly``), and customer-facing distributors;
lanes connect suppliers of the right item to manufacturers and manufacturers to
distributors until there are exactly ``lanes`` lanes. Capacities are about 1.5x the
mean flow; budgets, storage, lot sizes, contracts, outages and lane outages are drawn
so that a sensible policy is mostly feasible. The document goes through the scenario
validator (:func:`fedinv.model.scenario.parse_scenario`), so the result is a valid scenario.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fedinv.model.network import Scenario


def random_scenario(
    lanes: int = 20, seed: int = 0, *, assembly: bool = True, horizon_days: int = 120
) -> Scenario:
    """A random valid scenario with exactly ``lanes`` lanes (``lanes >= 10``)."""
    from fedinv.model.scenario import parse_scenario

    if lanes < 10:
        raise ValueError(f"a synthetic network needs at least 10 lanes, got {lanes}")
    rng = np.random.default_rng(seed)
    n_sup = max(2, round(lanes * 0.2))
    n_man = max(2, round(lanes * 0.08))
    n_dist = max(1, round(lanes * 0.35))
    # manufacturers: even ones assemble from items a and b, odd ones buy item a or b
    man_bom = [assembly and m % 2 == 0 for m in range(n_man)]
    man_item = ["" if man_bom[m] else ("a" if (m // 2) % 2 == 0 else "b") for m in range(n_man)]
    sup_item = ["a" if s % 2 == 0 else "b" for s in range(n_sup)]
    if not assembly:
        sup_item = ["a"] * n_sup
        man_item = ["a"] * n_man

    def accepts(m: int, item: str) -> bool:
        return man_bom[m] or man_item[m] == item

    sm: set[tuple[int, int]] = set()
    md: set[tuple[int, int]] = set()
    for m in range(n_man):  # every manufacturer gets its items and serves a distributor
        for item in ("a", "b") if man_bom[m] else (man_item[m],):
            cands = [s for s in range(n_sup) if sup_item[s] == item]
            sm.add((int(rng.choice(cands)), m))
        md.add((m, int(rng.integers(n_dist))))
    for s in range(n_sup):  # every supplier sells to someone
        if not any(e[0] == s for e in sm):
            cands = [m for m in range(n_man) if accepts(m, sup_item[s])]
            sm.add((s, int(rng.choice(cands))))
    for d in range(n_dist):  # every distributor buys from someone
        if not any(e[1] == d for e in md):
            md.add((int(rng.integers(n_man)), d))
    target = lanes - n_sup
    pairs_sm = [(s, m) for s in range(n_sup) for m in range(n_man) if accepts(m, sup_item[s])]
    pairs_md = [(m, d) for m in range(n_man) for d in range(n_dist)]
    free = [("sm", e) for e in pairs_sm if e not in sm] + [
        ("md", e) for e in pairs_md if e not in md
    ]
    need = target - len(sm) - len(md)
    if need < 0 or need > len(free):
        raise ValueError(f"cannot build a network with {lanes} lanes")
    for k in rng.permutation(len(free))[:need]:
        kind, e = free[k]
        (sm if kind == "sm" else md).add(e)

    demand = rng.uniform(5, 40, n_dist)
    dist_in = {d: [m for (m, d2) in md if d2 == d] for d in range(n_dist)}
    man_flow = np.zeros(n_man)
    for d in range(n_dist):
        for m in dist_in[d]:
            man_flow[m] += demand[d] / len(dist_in[d])
    man_in: dict[int, dict[str, list[int]]] = {m: {} for m in range(n_man)}
    for s, m in sorted(sm):
        man_in[m].setdefault(sup_item[s], []).append(s)
    sup_flow = np.zeros(n_sup)
    for m in range(n_man):
        for _item, ss in man_in[m].items():
            for s in ss:
                sup_flow[s] += man_flow[m] / len(ss)

    orgs = [{"id": f"org-{k}", "monthly_budget": 0.0} for k in range(max(2, lanes // 25))]
    org_spend = np.zeros(len(orgs))
    nodes: list[dict[str, Any]] = []
    node_org: dict[str, int] = {}

    def node(id_: str, tier: str, value: float, flow: float, **extra: Any) -> None:
        org = int(rng.integers(len(orgs)))
        node_org[id_] = org
        nodes.append(
            {
                "id": id_,
                "tier": tier,
                "region": f"R{int(rng.integers(3))}",
                "organization": orgs[org]["id"],
                "unit_value": value,
                "holding_cost": round(value * 0.25 / 365, 4),
                "stockout_penalty": round(value * 0.01, 3),
                "initial_inventory": round(flow * rng.uniform(3, 8), 1),
                **extra,
            }
        )

    for s in range(n_sup):
        node(
            f"S{s}",
            "supplier",
            10.0,
            sup_flow[s],
            item=sup_item[s],
            capacity=round(max(sup_flow[s], 1.0) * rng.uniform(1.4, 1.8), 1),
        )
    for m in range(n_man):
        extra: dict[str, Any] = {
            "capacity": round(max(man_flow[m], 1.0) * rng.uniform(1.4, 1.8), 1)
        }
        if man_bom[m]:
            extra["bill_of_materials"] = {"a": 1.0, "b": 1.0}
        else:
            extra["item"] = f"p{m}"
        node(f"M{m}", "manufacturer", 40.0, man_flow[m], **extra)
    for d in range(n_dist):
        extra = {"demand": {"distribution": "poisson", "mean": round(float(demand[d]), 2)}}
        if rng.random() < 0.5:
            extra["storage_capacity"] = round(float(demand[d]) * rng.uniform(25, 40), 1)
        node(f"D{d}", "distributor", 60.0, demand[d], **extra)

    lane_rows: list[dict[str, Any]] = []

    def lane(src: str, dst: str, flow: float, value: float, **extra: Any) -> None:
        row: dict[str, Any] = {
            "source": src,
            "destination": dst,
            "lead_time": {"distribution": "uniform", "low": 1, "high": int(rng.integers(2, 5))},
            "shipping_cost": round(float(rng.uniform(0.1, 1.0)), 2),
            **extra,
        }
        if rng.random() < 0.3:
            row["transport_capacity"] = round(max(flow, 1.0) * rng.uniform(1.5, 2.5), 1)
        if rng.random() < 0.15 and flow > 2:
            lot = float(max(1, round(flow * rng.uniform(0.3, 0.8))))
            row["lot_size"] = lot
            row["transport_capacity"] = max(row.get("transport_capacity", 0.0), 3 * lot)
        if rng.random() < 0.1:
            row["min_monthly_commitment"] = round(flow * 30 * rng.uniform(0.3, 0.6), 1)
        org_spend[node_org[dst]] += flow * 30.4 * (value + row["shipping_cost"])
        lane_rows.append(row)

    for s in range(n_sup):
        lane("external", f"S{s}", sup_flow[s], 4.0, price=4.0)
    for s, m in sorted(sm):
        ss = man_in[m][sup_item[s]]
        lane(f"S{s}", f"M{m}", man_flow[m] / len(ss), 10.0, order_share=1.0 / len(ss))
    for m, d in sorted(md):
        lane(f"M{m}", f"D{d}", demand[d] / len(dist_in[d]), 40.0, order_share=1.0 / len(dist_in[d]))
    for k, o in enumerate(orgs):
        o["monthly_budget"] = round(float(max(org_spend[k], 100.0) * rng.uniform(1.2, 1.6)), 0)
    outages = [
        {
            "target": f"S{s}",
            "start_probability": 0.02,
            "mean_duration_days": 5.0,
            "capacity_fraction": 0.3,
            "notice_lag_days": 1,
        }
        for s in range(n_sup)
        if rng.random() < 0.3
    ]
    doc = {
        "name": f"synthetic-{lanes}-{seed}",
        "horizon_days": horizon_days,
        "seed": seed,
        "description": f"random network with {lanes} lanes (fedinv.model.synthetic)",
        "organizations": orgs,
        "nodes": nodes,
        "lanes": lane_rows,
        "outages": outages,
    }
    return parse_scenario(doc, f"synthetic:{lanes}:{seed}", Path("."))
