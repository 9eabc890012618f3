"""``fedinv federate``: federated training (DQN or HDPO) on a local simulated Flower federation
(:mod:`fedinv.federation.local`, docs/federation.md)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fedinv.cli.common import CliError, refuse_unused
from fedinv.cli.training import add_training_options, fed_config, print_rounds
from fedinv.federation.runconfig import SERVER_DEFAULTS


def add_parser(commands: Any) -> None:
    """``fedinv federate``."""
    p = commands.add_parser(
        "federate",
        help="federated training (DQN or HDPO) on a local simulated Flower federation",
        description="Export each organization's private data, run a Flower simulation "
        "(one client per organization, FedAvg or FedProx), checkpoint every round, and stop "
        "every process it started. Re-running into the same --out resumes after the last "
        "finished round. See docs/federation.md.",
    )
    add_training_options(p)
    p.add_argument(
        "--out", default="runs/federated", metavar="DIR", help="run folder (default runs/federated)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="stop the run after this long (default 3600)",
    )
    p.add_argument(
        "--dp-noise",
        type=float,
        metavar="Z",
        help="differential privacy: Gaussian noise multiplier of Flower's "
        "server-side fixed clipping (default "
        f"{SERVER_DEFAULTS['dp-noise-multiplier']}: off)",
    )
    p.add_argument(
        "--dp-clip",
        type=float,
        metavar="C",
        help="differential privacy (with --dp-noise > 0): L2 clipping norm of a client's "
        f"update (default {SERVER_DEFAULTS['dp-clipping-norm']})",
    )
    p.add_argument("--quiet", action="store_true", help="do not echo Flower's log")
    p.set_defaults(func=cmd_federate)


def cmd_federate(args: argparse.Namespace) -> int:
    """``fedinv federate``: a local simulated federation (fedinv.federation.local)."""
    from fedinv.errors import FederationError
    from fedinv.federation.local import run_federation

    noise = SERVER_DEFAULTS["dp-noise-multiplier"] if args.dp_noise is None else args.dp_noise
    refuse_unused(args, noise > 0, ("dp_clip",), "without --dp-noise > 0 (no clipping then)")
    cfg = fed_config(args)  # a bad scenario name fails here, before Flower starts
    echo = None if args.quiet else (lambda line: print(line, file=sys.stderr))
    clip = SERVER_DEFAULTS["dp-clipping-norm"] if args.dp_clip is None else args.dp_clip
    try:
        extra = {"dp-noise-multiplier": noise, "dp-clipping-norm": clip}
        run = run_federation(cfg, args.out, timeout=args.timeout, echo=echo, extra=extra)
    except FederationError as exc:
        raise CliError(str(exc)) from None
    print_rounds(run.rounds_csv, skip=("no_reply",))
    print(f"final global policy: {run.final_checkpoint}")
    print(
        f"evaluate it: fedinv simulate --scenario {cfg.scenario} --policy {cfg.algo} "
        f"--checkpoint {run.final_checkpoint}"
    )
    return 0
