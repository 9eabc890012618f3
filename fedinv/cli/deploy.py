"""``fedinv deploy ...``: the command line of the deployment engine
(:mod:`fedinv.deploy.engine`, docs/deployment.md). Every :class:`DeployError` is reported
as a usage error (``fedinv: error: ...``, exit status 2)."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedinv.cli.common import CliError
from fedinv.cli.training import add_training_options, fed_config, print_rounds
from fedinv.deploy.engine import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_SANS,
    REFUSED_MARK,
    LocalDeployment,
    ServerTls,
    check_certificate,
    check_name,
    check_node_key,
    deploy_env,
    list_nodes,
    make_certs,
    make_node_key,
    need_file,
    port_free,
    register_node,
    run_finished,
    submit_run,
    superlink_command,
    supernode_command,
    wait_for,
    with_shim,
)
from fedinv.deploy.launcher import write_shim
from fedinv.deploy.supervisor import SupervisedTrainer, supervised_launcher
from fedinv.errors import DeployError
from fedinv.federation.processes import free_port, run_foreground
from fedinv.federation.runconfig import SERVER_DEFAULTS
from fedinv.federation.trainer import socket_path_for


def add_parser(commands: Any) -> None:
    """Add ``fedinv deploy`` and its actions to the ``fedinv`` subparsers ``commands``."""
    deploy = commands.add_parser(
        "deploy",
        help="federated training across organizations (Flower deployment engine)",
        description="Run the federation across organizations: a SuperLink at the "
        "coordinator, one SuperNode per organization on its private data, TLS and node "
        "authentication on by default. See docs/deployment.md.",
    )
    actions = deploy.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = actions.add_parser(
        "certs",
        help="a CA, the SuperLink's certificate and node key pairs (test federation)",
        description="Write DIR/ca.crt, DIR/ca.key, DIR/server.crt, DIR/server.key (subject "
        "alternative names: every --host) and, for each --nodes name, DIR/nodes/ORG "
        "(private key) and DIR/nodes/ORG.pub. Private files are mode 0600.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write")
    p.add_argument(
        "--host",
        action="append",
        metavar="NAME|IP",
        help="a host name or IP address SuperNodes dial to reach the SuperLink "
        "(repeatable; default: localhost and 127.0.0.1)",
    )
    p.add_argument(
        "--nodes",
        default="",
        metavar="ORG,...",
        help="organizations to make node key pairs for (comma-separated)",
    )
    p.add_argument(
        "--days",
        type=int,
        default=365,
        metavar="N",
        help="validity of the certificates in days (default 365)",
    )
    p.add_argument("--force", action="store_true", help="replace existing files")
    p.set_defaults(func=_cmd(cmd_certs))

    p = actions.add_parser(
        "node-key",
        help="one organization's node key pair (OpenSSH ECDSA P-384)",
        description="Write PATH (private key, mode 0600: keep it on the organization's "
        "machine) and PATH.pub (send it to the coordinator to register).",
    )
    p.add_argument("--out", required=True, metavar="PATH", help="private key file to write")
    p.add_argument("--force", action="store_true", help="replace existing files")
    p.set_defaults(func=_cmd(cmd_node_key))

    p = actions.add_parser(
        "superlink",
        help="run the coordinator's SuperLink in the foreground",
        description="Run flower-superlink with TLS and node authentication until Ctrl-C; "
        "ServerApps of submitted runs are its subprocesses.",
    )
    _tls_server_args(p)
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        metavar="ADDR",
        help="address to listen on (default 127.0.0.1: this machine only; "
        "0.0.0.0 for every interface)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        metavar="PORT",
        help=f"port of every API (default {DEFAULT_PORT})",
    )
    p.add_argument(
        "--home",
        default="fedinv-superlink",
        metavar="DIR",
        help="Flower home: state database and logs (default ./fedinv-superlink)",
    )
    p.add_argument(
        "--no-auth",
        action="store_true",
        help="accept SuperNodes without registered keys (not recommended)",
    )
    p.set_defaults(func=_cmd(cmd_superlink))

    p = actions.add_parser(
        "register",
        help="register organizations' node public keys with the SuperLink",
        description="flwr supernode register, for each public key.",
    )
    p.add_argument("keys", nargs="+", metavar="KEY.pub", help="node public key files")
    _client_args(p)
    p.set_defaults(func=_cmd(cmd_register))

    p = actions.add_parser("nodes", help="list the SuperLink's SuperNodes and their status")
    _client_args(p)
    p.set_defaults(func=_cmd(cmd_nodes))

    p = actions.add_parser(
        "node",
        help="run one organization's SuperNode in the foreground",
        description="Run flower-supernode on the organization's private data folder until "
        "Ctrl-C. A restart after a crash rejoins with the node's local state (replay "
        "buffers and learner in --state).",
    )
    p.add_argument("--org", required=True, metavar="ORG", help="the organization's id")
    p.add_argument(
        "--data",
        required=True,
        metavar="DIR",
        help="its private data folder (DIR/scenario.toml), or a folder holding "
        "DIR/ORG/ (fedinv data export)",
    )
    _client_args(p)
    p.add_argument(
        "--key",
        metavar="FILE",
        help="the node's private key (fedinv deploy node-key); omit only with --no-auth",
    )
    p.add_argument(
        "--no-auth", action="store_true", help="the SuperLink runs without node authentication"
    )
    p.add_argument(
        "--state", metavar="DIR", help="the node's training state (default DATA/../.fedinv-state)"
    )
    p.add_argument(
        "--port",
        type=int,
        metavar="PORT",
        help="local port of the node's ClientApp API (default: a free one)",
    )
    p.add_argument(
        "--rejoin-wait",
        type=float,
        default=90.0,
        metavar="SECONDS",
        help="retry a refused activation this long (after a crash the SuperLink "
        "sees the node online for up to 60 s; default 90)",
    )
    p.add_argument(
        "--no-launcher",
        action="store_true",
        help="start a cold flwr-clientapp per message instead of forking it from the "
        "node's pre-imported ClientApp launcher (docs/deployment.md)",
    )
    p.set_defaults(func=_cmd(cmd_node))

    p = actions.add_parser(
        "run",
        help="submit a federated training run to the SuperLink (on the coordinator)",
        description="flwr run of this checkout's app. --out is the run folder on the "
        "coordinator; submitting again into the same --out resumes after its last "
        "checkpoint.",
    )
    _client_args(p)
    _training_args(p)
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="run folder on the coordinator (checkpoints, rounds.csv, final.pt)",
    )
    p.add_argument(
        "--detach",
        action="store_true",
        help="return once submitted (default: stream the run's log until it ends)",
    )
    p.set_defaults(func=_cmd(cmd_run))

    p = actions.add_parser(
        "local",
        help="a whole TLS-authenticated federation on this machine, one run",
        description="Export each organization's data into OUT/data (unless there), make "
        "certificates and node keys (in a temporary folder unless --keys), start a SuperLink "
        "and one SuperNode per organization on 127.0.0.1 with TLS and node "
        "authentication, run the training into OUT, and stop every process it started.",
    )
    _training_args(p)
    p.add_argument(
        "--out", default="runs/deployed", metavar="DIR", help="run folder (default runs/deployed)"
    )
    p.add_argument(
        "--keys",
        metavar="DIR",
        help="certificates and keys (made if missing; keep it outside --out)",
    )
    p.add_argument("--insecure", action="store_true", help="no TLS, no node authentication")
    p.add_argument("--timeout", type=float, default=3600.0, metavar="SECONDS")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_cmd(cmd_local))


def _tls_server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--certs",
        metavar="DIR",
        help="folder with ca.crt, server.crt, server.key (fedinv deploy certs)",
    )
    p.add_argument("--ca-cert", metavar="FILE", help="CA certificate (default DIR/ca.crt)")
    p.add_argument("--cert", metavar="FILE", help="server certificate (default DIR/server.crt)")
    p.add_argument("--key", metavar="FILE", help="server private key (default DIR/server.key)")
    p.add_argument(
        "--insecure",
        action="store_true",
        help="no TLS (and no node authentication): only for a trusted network",
    )


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--superlink",
        required=True,
        metavar="HOST:PORT",
        help="the SuperLink's address, as named in its certificate",
    )
    p.add_argument(
        "--ca",
        metavar="FILE",
        help="the federation's CA certificate (ca.crt) to verify the SuperLink",
    )
    p.add_argument("--insecure", action="store_true", help="the SuperLink runs without TLS")


def _training_args(p: argparse.ArgumentParser) -> None:
    """FedConfig's options (:mod:`fedinv.cli.training`) and the server's, with the
    defaults of :data:`fedinv.federation.runconfig.SERVER_DEFAULTS`."""
    add_training_options(p)
    nodes, timeout = SERVER_DEFAULTS["min-train-nodes"], SERVER_DEFAULTS["round-timeout"]
    p.add_argument(
        "--min-nodes",
        type=int,
        default=nodes,
        metavar="N",
        help="rounds start once N nodes are online and use the replies of at least N "
        f"(default {nodes})",
    )
    p.add_argument(
        "--round-timeout",
        type=float,
        default=timeout,
        metavar="SECONDS",
        help="a round's training (and evaluation) replies are awaited this long "
        f"at most (default {timeout:g})",
    )
    p.add_argument(
        "--no-client-eval",
        action="store_true",
        help="skip the organizations' local evaluation after each round",
    )


def _cmd(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``func`` with a DeployError reported as a usage error (``fedinv: error: ...``)."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except DeployError as exc:
            raise CliError(str(exc)) from None

    wrapped.__doc__ = func.__doc__
    return wrapped


def cmd_certs(args: argparse.Namespace) -> int:
    """``fedinv deploy certs``."""
    nodes = [n.strip() for n in args.nodes.split(",") if n.strip()]
    certs = make_certs(
        args.out, hosts=args.host or DEFAULT_SANS, nodes=nodes, days=args.days, force=args.force
    )
    print(f"CA certificate:     {certs.ca_cert}   (give to every organization)")
    print(f"CA private key:     {certs.ca_key}   (keep offline)")
    print(
        f"server certificate: {certs.server_cert}   (SuperLink; names: "
        f"{', '.join(args.host or DEFAULT_SANS)})"
    )
    print(f"server private key: {certs.server_key}   (SuperLink only)")
    for org, (private, public) in certs.nodes.items():
        print(f"node {org}: {private} (to {org} only), {public} (register it)")
    return 0


def cmd_node_key(args: argparse.Namespace) -> int:
    """``fedinv deploy node-key``."""
    private, public = make_node_key(args.out, force=args.force)
    print(f"private key: {private}   (stays on this machine)")
    print(f"public key:  {public}   (send to the coordinator to register)")
    return 0


def cmd_superlink(args: argparse.Namespace) -> int:
    """``fedinv deploy superlink``."""
    given = [args.certs, args.ca_cert, args.cert, args.key]
    if args.insecure and any(x is not None for x in given):
        raise DeployError("--insecure with certificate options: choose one")
    tls = (
        None
        if args.insecure
        else ServerTls.from_args(args.certs, args.ca_cert, args.cert, args.key)
    )
    if not port_free(args.host, args.port):
        raise DeployError(
            f"port {args.port} on {args.host} is in use (another SuperLink?); "
            "choose another with --port"
        )
    home = Path(args.home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    auth = not (args.no_auth or args.insecure)
    command = superlink_command(home, host=args.host, port=args.port, tls=tls, auth=auth)
    print(
        f"SuperLink on {args.host}:{args.port}: TLS {'off' if tls is None else 'on'}, "
        f"node authentication {'on' if auth else 'off'}; home {home}",
        file=sys.stderr,
    )
    return run_foreground(command, deploy_env(home))[0]


def _client_tls(args: argparse.Namespace) -> Path | None:
    """The CA certificate to verify the SuperLink with (None with --insecure)."""
    if args.insecure:
        if args.ca:
            raise DeployError("--insecure with --ca: choose one")
        return None
    path = need_file(
        args.ca, "CA certificate", " (pass --ca ca.crt, the federation's CA; or --insecure)"
    )
    check_certificate(path, "CA certificate")
    return path


def _check_address(address: str) -> str:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DeployError(
            f"--superlink {address!r}: expected HOST:PORT, e.g. 127.0.0.1:{DEFAULT_PORT}"
        )
    return address


def cmd_register(args: argparse.Namespace) -> int:
    """``fedinv deploy register``."""
    ca = _client_tls(args)
    address = _check_address(args.superlink)
    for key in args.keys:
        path = need_file(key, "node public key")
        name = path.name.removesuffix(".pub")
        node_id = register_node(path, address=address, root_cert=ca, name=name)
        print(f"registered {path} as node {node_id}")
    return 0


def cmd_nodes(args: argparse.Namespace) -> int:
    """``fedinv deploy nodes``."""
    ca = _client_tls(args)
    for node in list_nodes(address=_check_address(args.superlink), root_cert=ca):
        print(f"{node.get('node-id')}  {node.get('status')}  {node.get('name', '')}".rstrip())
    return 0


def _org_folder(data: str | Path, org: str) -> Path:
    base = Path(data).expanduser().resolve()
    for folder in (base / org, base):
        if (folder / "scenario.toml").is_file():
            return folder
    raise DeployError(
        f"no private data for {org!r}: neither {base / org}/scenario.toml nor "
        f"{base}/scenario.toml exists (fedinv data export writes them)"
    )


def cmd_node(args: argparse.Namespace) -> int:
    """``fedinv deploy node``."""
    check_name(args.org)
    ca = _client_tls(args)
    address = _check_address(args.superlink)
    data = _org_folder(args.data, args.org)
    key = None
    if not (args.no_auth or args.insecure):
        key = need_file(
            args.key,
            "node private key",
            " (pass --key, made by fedinv deploy node-key; or --no-auth)",
        )
        check_node_key(key)
    state = Path(args.state).resolve() if args.state else data.parent / ".fedinv-state"
    port = args.port if args.port is not None else free_port()
    if not port_free(DEFAULT_HOST, port):
        raise DeployError(f"--port {port} is in use; choose another (or omit it)")
    home = state / f"flower-{args.org}"
    home.mkdir(parents=True, exist_ok=True)
    socket_path = socket_path_for(state / f"trainer-{args.org}")
    command = supernode_command(
        address,
        data_dir=data,
        state_dir=state,
        root_cert=ca,
        private_key=key,
        port=port,
        trainer_socket=socket_path,
    )
    print(
        f"SuperNode {args.org}: data {data}, state {state}, SuperLink {address} "
        f"(TLS {'off' if ca is None else 'on'}, node authentication "
        f"{'off' if key is None else 'on'}); trainer on {socket_path}",
        file=sys.stderr,
    )
    say = lambda line: print(f"fedinv: {line}", file=sys.stderr)  # noqa: E731
    trainer = SupervisedTrainer(
        socket_path,
        data,
        state,
        env=deploy_env(home),
        log=socket_path.parent / "trainer.log",
        echo=say,
    )
    env = deploy_env(home)
    launcher = None
    if not args.no_launcher:
        launcher_socket = socket_path_for(state / f"launcher-{args.org}").with_name("launcher.sock")
        launcher = supervised_launcher(
            launcher_socket, env=env, log=launcher_socket.parent / "launcher.log", echo=say
        )
        env = with_shim(env, write_shim(home / "bin", launcher_socket).parent)
    try:
        trainer.start(wait=None)
        if launcher is not None:
            launcher.start()
        trainer.wait_ready()
        return _run_node(command, env, args.rejoin_wait)
    finally:
        if launcher is not None:
            launcher.stop()
        trainer.stop()


def _run_node(command: list[str], env: dict[str, str], rejoin_wait: float) -> int:
    """Run the SuperNode in the foreground, retrying a refused activation."""
    deadline = time.monotonic() + max(rejoin_wait, 0.0)
    while True:
        code, refused_now = run_foreground(command, env, watch=REFUSED_MARK)
        if not refused_now:
            return code
        if time.monotonic() > deadline:
            raise DeployError(
                "the SuperLink refused this node (Flower exit 305): is its public key "
                "registered (fedinv deploy register KEY.pub)? A node restarted after a "
                "crash is refused until the SuperLink notices it went offline (up to 60 s)"
            )
        print(
            "fedinv: the SuperLink refused this node (not registered, or still seen "
            "online after a crash); retrying in 5 s",
            file=sys.stderr,
        )
        time.sleep(5.0)


def _fed_config(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The FedConfig and extra run-config keys of the training options."""
    if args.min_nodes < 1:
        raise DeployError("--min-nodes must be at least 1")
    if args.round_timeout <= 0:
        raise DeployError("--round-timeout must be positive")
    cfg = fed_config(args)  # a bad scenario name fails here, before Flower starts
    extra = {
        "min-train-nodes": args.min_nodes,
        "min-available-nodes": args.min_nodes,
        "min-evaluate-nodes": 0 if args.no_client_eval else args.min_nodes,
        "fraction-evaluate": 0.0 if args.no_client_eval else 1.0,
        "round-timeout": float(args.round_timeout),
    }
    return cfg, extra


def _print_rounds(run_dir: Path) -> None:
    if not print_rounds(run_dir / "rounds.csv"):
        print(f"no rounds.csv in {run_dir} (yet)")
        return
    if (run_dir / "final.pt").is_file():
        print(f"final global policy: {run_dir / 'final.pt'}")


def cmd_run(args: argparse.Namespace) -> int:
    """``fedinv deploy run``."""
    ca = _client_tls(args)
    address = _check_address(args.superlink)
    cfg, extra = _fed_config(args)
    out = Path(args.out).resolve()
    run_id = submit_run(
        cfg,
        out,
        address=address,
        root_cert=ca,
        extra=extra,
        stream=not args.detach,
        timeout=10 * 24 * 3600.0,
    )
    if args.detach:
        print(f"submitted run {run_id}; results in {out} (on the coordinator)")
        return 0
    _print_rounds(out)
    return 0


def cmd_local(args: argparse.Namespace) -> int:
    """``fedinv deploy local``."""
    from fedinv.federation.private_data import export_private_data
    from fedinv.model.scenario import load_scenario

    cfg, extra = _fed_config(args)
    out = Path(args.out).resolve()
    data = out / "data"
    if not data.is_dir() or not any(data.iterdir()):
        export_private_data(load_scenario(cfg.scenario), data)
    echo = (lambda _: None) if args.quiet else (lambda line: print(line, file=sys.stderr))
    with tempfile.TemporaryDirectory(prefix="fedinv-keys-") as tmp:
        keys = Path(args.keys).resolve() if args.keys else Path(tmp)
        if keys == out or out in keys.parents:
            raise DeployError("--keys must be outside --out (keys never go into run folders)")
        with LocalDeployment(
            out / "deployment", data, keys, secure=not args.insecure, echo=echo
        ) as fed:
            run_id = fed.submit(cfg, out, extra=extra)
            echo(f"run {run_id} submitted; results in {out}")
            rows = [0]

            def progress() -> bool:
                path = out / "rounds.csv"
                if path.is_file():
                    lines = path.read_text().splitlines()
                    for line in lines[max(rows[0], 1) :]:
                        echo(f"round done: {line[:100]}")
                    rows[0] = max(rows[0], len(lines))
                return run_finished(out, cfg.rounds)

            def alive() -> None:
                if fed.superlink is not None and fed.superlink.poll() is not None:
                    raise DeployError(f"the SuperLink exited; see {fed.link_log}")

            wait_for(progress, args.timeout, "the run to finish", check=alive, poll=1.0)
    _print_rounds(out)
    return 0
