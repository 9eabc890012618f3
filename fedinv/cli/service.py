"""``fedinv serve``, ``fedinv log verify | export`` and ``fedinv replay``: decision
services (docs/service.md)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from fedinv.cli.common import DAYS, SEED, CliError, dump, load


def add_parsers(commands: Any) -> None:
    """``serve``, ``log`` and ``replay``."""
    from fedinv.hybrid import BACKENDS, MODES
    from fedinv.registry import ALL_POLICIES

    def policy_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--scenario", required=True, metavar="NAME|FILE")
        p.add_argument("--policy", required=True, choices=ALL_POLICIES, metavar="POLICY")
        p.add_argument("--params", metavar="JSON|FILE", help="a classical policy's parameters")
        p.add_argument("--checkpoint", type=Path, metavar="PATH", help="dqn or hdpo checkpoint")
        p.add_argument("--mode", choices=MODES, default="hybrid", help="default hybrid")
        p.add_argument("--solver", choices=BACKENDS, default="highspy", help="default highspy")
        p.add_argument("--seed", type=SEED, metavar="S", help="override the scenario's seed")

    p = commands.add_parser(
        "serve",
        help="serve one organization's decisions over HTTP",
        description="One organization's decision service: POST /v1/decide releases its "
        "orders through its policy and safety layer and appends them to a hash-chained "
        "log (docs/service.md).",
    )
    policy_args(p)
    p.add_argument("--org", required=True, help="the organization served")
    p.add_argument("--log", type=Path, required=True, metavar="PATH", help="SQLite decision log")
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token-file", type=Path, metavar="PATH", help="bearer token required")
    p.add_argument("--certfile", type=Path, metavar="PATH", help="TLS certificate (PEM)")
    p.add_argument("--keyfile", type=Path, metavar="PATH", help="TLS private key (PEM)")
    p.add_argument(
        "--sync",
        choices=("full", "normal"),
        default="full",
        help="durability of the log and the --data journal: full (default) fsyncs each "
        "decision before its reply, surviving a power cut; normal leaves it in the "
        "operating system, surviving a killed process (SIGKILL) but not a power cut or "
        "an OS crash, for less time per decision (docs/service.md)",
    )
    p.add_argument(
        "--data",
        type=Path,
        metavar="DIR",
        help="record what the service sees into this private data folder (the files "
        "fedinv data export writes; POST /v1/retrain re-tunes on it)",
    )
    p.add_argument(
        "--record-every",
        type=int,
        default=7,
        metavar="DAYS",
        help="rewrite --data's files after this many new days (default 7; 0: on "
        "retrain and at shutdown only); the journal is appended every decision",
    )
    p.add_argument(
        "--auto-retrain",
        action="store_true",
        help="retrain when the Analytics Monitor's demand detectors raise 'retrain' on "
        "the recorded days (checked every --record-every days; needs --data)",
    )
    p.add_argument(
        "--retrain-cooldown",
        type=int,
        default=28,
        metavar="DAYS",
        help="with --auto-retrain: at most one retrain per this many days (default 28)",
    )
    p.add_argument(
        "--retrain-window",
        type=int,
        metavar="DAYS",
        help="retrain on the last DAYS recorded days only (default: all of them)",
    )
    p.set_defaults(func=cmd_serve)

    p = commands.add_parser("log", help="check or export a decision log")
    sub = p.add_subparsers(dest="log_command", required=True, metavar="ACTION")
    v = sub.add_parser("verify", help="check the hash chain(s) of a decision log")
    v.add_argument("path", type=Path)
    v.add_argument("--head", metavar="HASH", help="an entry hash kept by a client")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_log_verify)
    e = sub.add_parser("export", help="write a decision log's entries as parquet")
    e.add_argument("path", type=Path)
    e.add_argument("--out", type=Path, required=True, metavar="FILE.parquet")
    e.set_defaults(func=cmd_log_export)

    p = commands.add_parser(
        "replay",
        help="play a simulated year through one decision service per organization",
        description="Start one fedinv serve process per organization and drive them day "
        "by day over HTTP with a simulated replication; --check compares the released "
        "orders with simulate --projection per-org.",
    )
    policy_args(p)
    p.add_argument("--days", type=DAYS, metavar="N", help="days (default: horizon)")
    p.add_argument("--replication", type=int, default=0, metavar="R")
    p.add_argument("--out", type=Path, metavar="DIR", help="logs and released.csv (default: temp)")
    p.add_argument(
        "--check", action="store_true", help="compare with simulate --projection per-org"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_replay)


def config_from_args(args: argparse.Namespace) -> Any:
    """A :class:`fedinv.service.core.ServiceConfig` of the shared options."""
    from fedinv.cli.simulate import read_params
    from fedinv.registry import LEARNED_POLICIES
    from fedinv.service.core import ServiceConfig

    learned = args.policy in LEARNED_POLICIES
    if learned and args.checkpoint is None:
        raise CliError(f"--policy {args.policy} needs --checkpoint PATH")
    if not learned and args.checkpoint is not None:
        raise CliError(f"--checkpoint is for --policy dqn or hdpo, not {args.policy!r}")
    if learned and args.params is not None:
        raise CliError(f"--params is for classical policies, not --policy {args.policy}")
    params = read_params(args.params, args.policy) if args.params is not None else None
    return ServiceConfig(
        scenario=args.scenario,
        org=getattr(args, "org", ""),
        policy=args.policy,
        params=params,
        checkpoint=args.checkpoint,
        mode=args.mode,
        solver=args.solver,
        log=getattr(args, "log", None) or Path("decisions.sqlite"),
        seed=args.seed,
        data=getattr(args, "data", None),
        record_every=getattr(args, "record_every", 7),
        auto_retrain=getattr(args, "auto_retrain", False),
        retrain_cooldown=getattr(args, "retrain_cooldown", 28),
        retrain_window=getattr(args, "retrain_window", None),
        sync=getattr(args, "sync", "full"),
    )


def serve_args(args: argparse.Namespace) -> list[str]:
    """The policy options of ``args`` as ``fedinv serve`` arguments."""
    out = ["--scenario", args.scenario, "--policy", args.policy, "--mode", args.mode]
    out += ["--solver", args.solver]
    for flag, value in (("--params", args.params), ("--checkpoint", args.checkpoint)):
        if value is not None:
            out += [flag, str(value)]
    if args.seed is not None:
        out += ["--seed", str(args.seed)]
    return out


def cmd_serve(args: argparse.Namespace) -> int:
    from fedinv.service.app import read_token, serve
    from fedinv.service.core import DecisionService

    if (args.certfile is None) != (args.keyfile is None):
        raise CliError("--certfile and --keyfile go together (fedinv deploy certs makes both)")
    token = read_token(args.token_file) if args.token_file is not None else None
    if args.auto_retrain and args.data is None:
        raise CliError("--auto-retrain retrains on the recorded data: give --data DIR")
    config = config_from_args(args)
    scenario = load(args.scenario, args.seed)
    if args.org not in [o.id for o in scenario.network.organizations]:
        known = ", ".join(o.id for o in scenario.network.organizations)
        raise CliError(f"unknown organization {args.org!r} in {scenario.name}; known: {known}")
    service = DecisionService(config)
    scheme = "https" if args.certfile else "http"
    print(
        f"fedinv serve: {args.org} on {scheme}://{args.host}:{args.port} "
        f"({args.policy}, {args.mode}); log {args.log}",
        file=sys.stderr,
    )
    serve(service, args.host, args.port, token, args.certfile, args.keyfile)
    return 0


def cmd_log_verify(args: argparse.Namespace) -> int:
    from fedinv.service.log import verify

    verdict = verify(args.path, args.head)
    if args.json:
        print(
            dump(
                {
                    "ok": verdict.ok,
                    "checked": verdict.checked,
                    "chain": verdict.chain,
                    "entry": verdict.seq,
                    "message": verdict.message,
                }
            )
        )
    elif verdict.ok:
        chains = ", ".join(f"{c}: {n} entries" for c, n in verdict.checked.items())
        print(f"ok: {chains or 'no entries'}" + (f"; head {args.head} found" if args.head else ""))
    else:
        print(f"fedinv: log: {verdict.message}", file=sys.stderr)
    return 0 if verdict.ok else 1


def cmd_log_export(args: argparse.Namespace) -> int:
    from fedinv.service.log import export_parquet

    if not args.path.exists():
        raise CliError(f"no decision log at {args.path}")
    rows = export_parquet(args.path, args.out)
    print(f"wrote {rows} entries to {args.out}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from fedinv.service.replay import replay, start_services, stop_service

    config_from_args(args)  # the same checks as serve, before starting processes
    scenario = load(args.scenario, args.seed)
    out = args.out or Path(tempfile.mkdtemp(prefix="fedinv-replay-"))
    out.mkdir(parents=True, exist_ok=True)
    orgs = [o.id for o in scenario.network.organizations]
    logs = {org: out / f"{org}.sqlite" for org in orgs}
    for log in logs.values():
        if log.exists():
            raise CliError(f"{log} exists: replay writes fresh logs (choose another --out)")
    services = start_services(serve_args(args), logs)
    try:
        released, heads = replay(
            scenario,
            {s.org: s.url for s in services},
            days=args.days,
            replication=args.replication,
        )
    finally:
        for s in services:
            stop_service(s)
    from fedinv.sim.simulator import Simulator

    lanes = Simulator(scenario, days=2).layout.lane_ids
    frame = pd.DataFrame(released, columns=list(lanes))
    frame.index.name = "day"
    frame.to_csv(out / "released.csv")
    payload: dict[str, Any] = {"days": int(released.shape[0]), "out": str(out), "heads": heads}
    if args.check:
        expected = simulated_orders(args, scenario)
        diff = float(np.abs(expected - released).max()) if released.size else 0.0
        payload["identical"] = bool(np.array_equal(expected, released))
        payload["max_abs_difference"] = diff
    if args.json:
        print(dump(payload))
    else:
        print(f"replayed {payload['days']} days through {len(orgs)} services; logs in {out}")
        if args.check:
            print(
                "released orders identical to simulate --projection per-org"
                if payload["identical"]
                else f"released orders DIFFER (max {payload['max_abs_difference']:.3g} units)"
            )
    return 0 if payload.get("identical", True) else 1


def simulated_orders(args: argparse.Namespace, scenario: Any) -> Any:
    """Released orders ``[D, M]`` of ``simulate --projection per-org`` for the replay's
    policy and replication."""
    from fedinv.registry import prepare, scenario_layout
    from fedinv.service.replay import per_org_orders

    config = config_from_args(args)
    prepared = prepare(
        config.policy,
        scenario,
        scenario_layout(scenario),
        params=config.params,
        checkpoint=config.checkpoint,
    )
    return per_org_orders(
        scenario, prepared.factory, config.mode, config.solver, args.days, args.replication
    )


__all__ = ["add_parsers"]
