"""``fedinv deploy``: federated training across organizations on Flower's deployment engine.

One coordinator runs a SuperLink; each organization runs one SuperNode on its own
private data folder (``fedinv data export`` format); a run is submitted to the SuperLink
with ``flwr run`` and executed by the ServerApp on the coordinator. Walk-through:
docs/deployment.md.

Security defaults: TLS on (``--insecure`` is an explicit opt-out), node authentication
on (a SuperNode must present a key pair whose public half was registered with
``flwr supernode register``; an unregistered one is refused), the SuperLink bound to
127.0.0.1 unless another ``--host`` is given. Private keys are only ever passed to Flower
as paths: they are never copied into a run folder, a Flower home folder or a log.

Pieces (each usable alone):

* certificates: :func:`make_certs` (a CA, a server certificate with the subject
  alternative names of the SuperLink's host names and addresses, node key pairs),
  :func:`make_node_key` (an OpenSSH ECDSA-384 key pair, Flower's node-auth format);
* processes: :func:`superlink_command`, :func:`supernode_command`, :func:`start`,
  :func:`stop_tree` (every process of a tree, by PID);
* the Control API through the ``flwr`` CLI: :func:`register_node`, :func:`list_nodes`,
  :func:`submit_run`, with a Flower home of their own holding ``config.toml``;
* :class:`LocalDeployment`: a SuperLink and one SuperNode per organization on this
  machine, with TLS and node authentication (``fedinv deploy local``, the tests and
  :func:`overhead`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_HOST = "127.0.0.1"
"""Where the SuperLink listens unless told otherwise."""
DEFAULT_PORT = 9092
"""The SuperLink's port (one HTTPS port for the Fleet, Control and runtime APIs)."""
DEFAULT_SANS = ("localhost", "127.0.0.1")
"""Names in the server certificate by default (a one-machine federation)."""
CA_CERT, CA_KEY = "ca.crt", "ca.key"
SERVER_CERT, SERVER_KEY = "server.crt", "server.key"
NODES_DIR = "nodes"
"""``fedinv deploy certs`` writes ``nodes/ORG`` (private key) and ``nodes/ORG.pub``."""
CONNECTION = "fedinv"
"""Name of the SuperLink connection in the ``config.toml`` this module writes."""
EXIT_UNREGISTERED = 305
"""Flower's exit code of a SuperNode the SuperLink refused to activate (its key is not
registered, or it is still seen online after a crash). Flower prints it in the log as
``Exit Code: 305``; the process itself exits with status 1."""
REFUSED_MARK = f"Exit Code: {EXIT_UNREGISTERED}"


class DeployError(RuntimeError):
    """A deployment step failed; the message says which and where its log is."""


def _federate() -> Any:
    """:mod:`fedinv.federation.local` (its helpers: free ports, Flower's environment, stopping a
    process group), imported when needed: it imports torch, which ``fedinv --help``
    should not."""
    import fedinv.federation.local

    return fedinv.federation.local


def _free_port() -> int:
    return int(_federate()._free_port())


# -- certificates and keys ---------------------------------------------------------------


@dataclass
class Certificates:
    """Paths of what :func:`make_certs` wrote."""

    folder: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    nodes: dict[str, tuple[Path, Path]] = field(default_factory=dict)
    """Organization -> (private key, public key)."""


def _write_private(path: Path, data: bytes, force: bool) -> None:
    """Write a private key readable by its owner only; never overwrite one silently."""
    if path.exists() and not force:
        raise DeployError(f"{path} already exists; pass --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _write_public(path: Path, data: bytes, force: bool) -> None:
    if path.exists() and not force:
        raise DeployError(f"{path} already exists; pass --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _san_entries(hosts: Sequence[str]) -> list[Any]:
    """``x509`` subject alternative names: an IP address or a DNS name per host."""
    from cryptography import x509

    entries: list[Any] = []
    for host in hosts:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        if not re.fullmatch(
            r"(?=.{1,253}$)[A-Za-z0-9*]([A-Za-z0-9-]{0,62})"
            r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?",
            host,
        ):
            raise DeployError(f"--host {host!r} is neither an IP address nor a DNS name")
        entries.append(x509.DNSName(host))
    return entries


def make_certs(
    out_dir: str | Path,
    *,
    hosts: Sequence[str] = DEFAULT_SANS,
    nodes: Iterable[str] = (),
    days: int = 365,
    force: bool = False,
) -> Certificates:
    """Write a CA (``ca.crt``, ``ca.key``), a server certificate signed by it for
    ``hosts`` (``server.crt``, ``server.key``: the subject alternative names the
    SuperNodes will dial, IP addresses or DNS names) valid ``days`` days, and one node key
    pair per name of ``nodes`` (``nodes/ORG``, ``nodes/ORG.pub``). Keys are ECDSA P-384;
    private files are mode 0600."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if days < 1:
        raise DeployError(f"--days must be at least 1, got {days}")
    hosts = list(dict.fromkeys(hosts))
    if not hosts:
        raise DeployError("the server certificate needs at least one --host")
    sans = _san_entries(hosts)
    out = Path(out_dir)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=days)
    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    plain = serialization.NoEncryption()

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedinv federation CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA384())
    )

    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA384())
    )

    certs = Certificates(out, out / CA_CERT, out / CA_KEY, out / SERVER_CERT, out / SERVER_KEY)
    _write_private(certs.ca_key, ca_key.private_bytes(pem, pkcs8, plain), force)
    _write_public(certs.ca_cert, ca_cert.public_bytes(pem), force)
    _write_private(certs.server_key, server_key.private_bytes(pem, pkcs8, plain), force)
    _write_public(certs.server_cert, server_cert.public_bytes(pem), force)
    for org in nodes:
        _check_name(org)
        certs.nodes[org] = make_node_key(out / NODES_DIR / org, force=force)
    return certs


def _check_name(org: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", org):
        raise DeployError(f"organization name {org!r}: use letters, digits, '-', '_', '.'")


def make_node_key(path: str | Path, force: bool = False) -> tuple[Path, Path]:
    """Write a SuperNode's key pair: ``path`` (OpenSSH ECDSA P-384 private key, mode 0600)
    and ``path.pub`` (its public key, what the coordinator registers)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = Path(path)
    public = private.with_name(private.name + ".pub")
    key = ec.generate_private_key(ec.SECP384R1())
    _write_private(
        private,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
        force,
    )
    _write_public(
        public,
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        + f" fedinv-node-{private.name}\n".encode(),
        force,
    )
    return private, public


def _need_file(path: str | Path | None, what: str, hint: str = "") -> Path:
    """``path`` as a Path if it is a readable file; a clear DeployError otherwise."""
    if path is None:
        raise DeployError(f"no {what} given{hint}")
    p = Path(path).expanduser()
    if not p.is_file():
        raise DeployError(f"{what} not found: {p}{hint}")
    try:
        with p.open("rb"):
            pass
    except OSError as exc:
        raise DeployError(f"{what} {p} cannot be read: {exc.strerror}") from None
    return p.resolve()


def _check_certificate(path: Path, what: str) -> None:
    from cryptography import x509

    try:
        x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError:
        raise DeployError(f"{what} {path} is not a PEM certificate") from None


def _check_node_key(path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError):
        raise DeployError(
            f"node key {path} is not an unencrypted OpenSSH private key "
            "(make one with: fedinv deploy node-key --out PATH)"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise DeployError(
            f"node key {path}: Flower expects an ECDSA key (fedinv deploy node-key makes one)"
        )


@dataclass
class ServerTls:
    """The SuperLink's TLS files."""

    ca_cert: Path
    cert: Path
    key: Path

    @classmethod
    def from_args(
        cls,
        folder: str | Path | None,
        ca_cert: str | Path | None = None,
        cert: str | Path | None = None,
        key: str | Path | None = None,
    ) -> ServerTls:
        """Files named explicitly, else ``ca.crt``/``server.crt``/``server.key`` of
        ``folder``; checked to exist and parse."""
        base = Path(folder) if folder is not None else None
        hint = " (make them with: fedinv deploy certs --out DIR; or pass --insecure)"

        def pick(given, name):
            return given if given is not None else (base / name if base else None)

        tls = cls(
            _need_file(pick(ca_cert, CA_CERT), "CA certificate", hint),
            _need_file(pick(cert, SERVER_CERT), "server certificate", hint),
            _need_file(pick(key, SERVER_KEY), "server private key", hint),
        )
        _check_certificate(tls.ca_cert, "CA certificate")
        _check_certificate(tls.cert, "server certificate")
        return tls


# -- processes ---------------------------------------------------------------------------


def superlink_command(
    home: str | Path,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    tls: ServerTls | None = None,
    auth: bool = True,
) -> list[str]:
    """``flower-superlink`` with TLS (``tls``; None: ``--insecure``), node authentication
    (``auth``, needs TLS), its state database in ``home`` and ServerApps run as
    subprocesses, without runtime dependency installation."""
    if auth and tls is None:
        raise DeployError("node authentication needs TLS: drop --insecure or add --no-auth")
    cmd = [
        _exe("flower-superlink"),
        "--host",
        host,
        "--port",
        str(port),
        "--database",
        str(Path(home).resolve() / "state.db"),
        "--isolation",
        "subprocess",
        "--disable-runtime-dependency-installation",
    ]
    if tls is None:
        cmd.append("--insecure")
    else:
        cmd += [
            "--ssl-ca-certfile",
            str(tls.ca_cert),
            "--ssl-certfile",
            str(tls.cert),
            "--ssl-keyfile",
            str(tls.key),
        ]
    if auth:
        cmd.append("--enable-supernode-auth")
    return cmd


def supernode_command(
    superlink: str,
    *,
    data_dir: str | Path,
    state_dir: str | Path,
    root_cert: str | Path | None,
    private_key: str | Path | None,
    port: int,
) -> list[str]:
    """``flower-supernode`` for one organization: its data folder and state folder in the
    node config, TLS with ``root_cert`` (None: ``--insecure``), authenticated by
    ``private_key`` (None: no node authentication), its ClientAppIo API on ``port``."""
    node_config = (
        f"data-dir={json.dumps(str(Path(data_dir).resolve()))} "
        f"state-dir={json.dumps(str(Path(state_dir).resolve()))}"
    )
    cmd = [
        _exe("flower-supernode"),
        "--superlink",
        superlink,
        "--port",
        str(port),
        "--isolation",
        "subprocess",
        "--node-config",
        node_config,
    ]
    cmd += ["--insecure"] if root_cert is None else ["--root-certificates", str(root_cert)]
    if private_key is not None:
        cmd += ["--auth-supernode-private-key", str(private_key)]
    return cmd


def _exe(name: str) -> str:
    """A Flower executable of this environment (beside the running interpreter)."""
    found = shutil.which(
        name, path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    if found is None:
        raise DeployError(
            f"{name} not found: install fedinv (pip install -e .) in this environment"
        )
    return found


def deploy_env(home: str | Path, threads: int | None = None) -> dict[str, str]:
    """Environment of a Flower process: :func:`fedinv.federation.local.flower_env` (home, no
    telemetry, no runtime installs), the SuperExec polling for work every 0.2 s, and,
    if ``threads``, that many torch/BLAS threads per process."""
    env = _federate().flower_env(Path(home))
    env["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] = "0.2"
    env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    if threads is not None:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(threads)
    return env


def start(
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    log: str | Path,
    cwd: str | Path | None = None,
) -> subprocess.Popen:
    """Start ``command`` in a session of its own, appending its output to ``log``."""
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(command),
            env=dict(env),
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _proc_table() -> dict[int, tuple[int, str, list[bytes]]]:
    """PID -> (parent PID, start time, argv) of every process we can read."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), fields[19], args)
    return table


def process_tree(pid: int, root_alive: bool = True) -> list[tuple[int, str]]:
    """``pid`` and its descendants — by parent PID, and Flower's detached helpers started
    with ``--parent-pid`` — as (PID, start time) pairs. ``root_alive=False``: ``pid`` has
    exited (and may be reused): only the helpers naming it in ``--parent-pid``, and
    their descendants."""
    table = _proc_table()
    found, todo = [], [pid]
    seen = set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        is_root = current == pid
        if current in table and (root_alive or not is_root):
            found.append((current, table[current][1]))
        flag = str(current).encode()
        for other, (ppid, _, args) in table.items():
            if ppid == current and (root_alive or not is_root):
                todo.append(other)
            elif b"--parent-pid" in args:
                i = args.index(b"--parent-pid")
                if i + 1 < len(args) and args[i + 1] == flag:
                    todo.append(other)
    return found


def _alive(pid: int, started: str) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] == started and fields[0] != "Z"


def kill_tree(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to ``proc`` and every process of its tree at once (a crash)."""
    for pid, started in process_tree(proc.pid):
        if _alive(pid, started):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass


def stop_tree(proc: subprocess.Popen | None, grace: float = 10.0) -> None:
    """Stop ``proc`` gracefully (its process group, SIGTERM then SIGKILL after
    ``grace`` s), then kill whatever of its tree, found by PID beforehand, is left."""
    if proc is None:
        return
    tree = process_tree(proc.pid, root_alive=proc.poll() is None)
    _federate().stop_process_tree(proc, grace=grace)
    deadline = time.monotonic() + 5.0
    for pid, started in tree:
        while _alive(pid, started) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid, started):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def wait_port(
    host: str, port: int, proc: subprocess.Popen, what: str, log: Path, seconds: float = 60.0
) -> None:
    """Wait until ``proc`` accepts connections on ``host:port``."""
    import socket

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DeployError(
                f"the {what} exited at start (code {proc.returncode}); see {log}{_log_hint(log)}"
            )
        with socket.socket() as s:
            s.settimeout(1.0)
            if s.connect_ex((host if host not in ("0.0.0.0", "::") else "127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise DeployError(f"the {what} did not open port {port} within {seconds:.0f} s; see {log}")


def _log_hint(log: Path, lines: int = 3) -> str:
    """The last lines of a log, for an error message."""
    try:
        text = re.sub(r"\x1b\[[0-9;]*m", "", Path(log).read_text(errors="replace"))
    except OSError:
        return ""
    tail = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return (": " + " | ".join(tail)) if tail else ""


def refused(log: str | Path, offset: int = 0) -> bool:
    """Whether a SuperNode's log, from byte ``offset`` on, says the SuperLink refused it
    (:data:`EXIT_UNREGISTERED`)."""
    try:
        with open(log, "rb") as handle:
            handle.seek(offset)
            return REFUSED_MARK.encode() in handle.read()
    except OSError:
        return False


def port_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound now."""
    import socket

    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


# -- the Control API through the flwr CLI -------------------------------------------------


def write_connection(home: str | Path, address: str, root_cert: str | Path | None) -> Path:
    """``home/config.toml`` with one SuperLink connection, ``fedinv``: ``address`` over TLS
    checked against ``root_cert`` (None: insecure)."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    lines = [
        "[superlink]",
        f'default = "{CONNECTION}"',
        "",
        f"[superlink.{CONNECTION}]",
        f"address = {json.dumps(address)}",
    ]
    if root_cert is None:
        lines.append("insecure = true")
    else:
        lines.append(f"root-certificates = {json.dumps(str(Path(root_cert).resolve()))}")
    path = home / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def flwr_cli(
    args: Sequence[str],
    *,
    address: str,
    root_cert: str | Path | None,
    home: str | Path | None = None,
    timeout: float = 120.0,
    stream: bool = False,
) -> subprocess.CompletedProcess:
    """Run ``flwr ARGS`` against the SuperLink at ``address`` (a ``config.toml`` in
    ``home``, else in a temporary folder removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="fedinv-flwr-") as tmp:
        where = Path(home) if home is not None else Path(tmp)
        write_connection(where, address, root_cert)
        try:
            return subprocess.run(
                [_exe("flwr"), *args],
                env=deploy_env(where),
                capture_output=not stream,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise DeployError(
                f"flwr {args[0]} did not finish within {timeout:.0f} s "
                f"(is the SuperLink at {address} up?)"
            ) from None


def _json_out(done: subprocess.CompletedProcess, what: str) -> dict:
    text = done.stdout or ""
    start_at = text.find("{")
    try:
        payload = json.loads(text[start_at:]) if start_at >= 0 else {}
    except json.JSONDecodeError:
        payload = {}
    if done.returncode != 0 or not payload.get("success", True):
        message = payload.get("error-message") or _clean(done.stderr or text)
        raise DeployError(f"{what} failed: {message}")
    return payload


def _clean(text: str) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    text = re.sub(r"[\u2500-\u257f]", "", text)
    return " ".join(text.split())[-600:]


def register_node(
    public_key: str | Path, *, address: str, root_cert: str | Path | None, name: str | None = None
) -> int:
    """Register a SuperNode's public key with the SuperLink (``flwr supernode
    register``); returns its node ID."""
    key = _need_file(public_key, "node public key")
    args = ["supernode", "register", str(key), CONNECTION, "--format", "json"]
    if name:
        args += ["--name", name]
    payload = _json_out(
        flwr_cli(args, address=address, root_cert=root_cert), f"registering {key.name}"
    )
    return int(payload.get("node-id", 0))


def list_nodes(*, address: str, root_cert: str | Path | None) -> list[dict]:
    """The SuperLink's SuperNodes (``flwr supernode list``): dicts with ``node-id``,
    ``status`` (``online``, ``offline``, ``registered``, ...) and more."""
    payload = _json_out(
        flwr_cli(
            ["supernode", "list", CONNECTION, "--format", "json"],
            address=address,
            root_cert=root_cert,
        ),
        "listing nodes",
    )
    return list(payload.get("nodes", []))


def run_config(
    cfg: Any, run_dir: str | Path, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The run config of a deployed run of ``cfg`` (a :class:`FedConfig`) writing into
    ``run_dir`` on the coordinator. Nodes read their data from their own node config, so
    ``data-dir`` is empty (the ServerApp then exports nothing)."""
    return {
        **cfg.to_flat(),
        "run-dir": str(Path(run_dir).resolve()),
        "data-dir": "",
        "state-dir": "",
        **(extra or {}),
    }


def submit_run(
    cfg: Any,
    run_dir: str | Path,
    *,
    address: str,
    root_cert: str | Path | None,
    extra: Mapping[str, Any] | None = None,
    app: str | Path | None = None,
    stream: bool = False,
    timeout: float = 120.0,
) -> int:
    """Submit ``cfg`` as a run of the Flower app (this checkout) to the SuperLink
    (``flwr run APP fedinv --run-config ...``); returns the run ID (0 with ``stream``,
    where the call returns when the run ends)."""
    config = run_config(cfg, run_dir, extra)
    fed = _federate()
    args = [
        "run",
        str(app or fed.app_dir()),
        CONNECTION,
        "--run-config",
        " ".join(f"{k}={fed._toml_value(v)}" for k, v in config.items()),
    ]
    if stream:
        done = flwr_cli(
            [*args, "--stream"], address=address, root_cert=root_cert, timeout=timeout, stream=True
        )
        if done.returncode != 0:
            raise DeployError(f"flwr run exited with code {done.returncode}")
        return 0
    payload = _json_out(
        flwr_cli(
            [*args, "--format", "json"], address=address, root_cert=root_cert, timeout=timeout
        ),
        "submitting the run",
    )
    return int(payload.get("run-id", 0))


def stop_run(run_id: int, *, address: str, root_cert: str | Path | None) -> None:
    """``flwr stop RUN_ID``; errors are ignored (the run may have ended)."""
    flwr_cli(["stop", str(run_id), CONNECTION], address=address, root_cert=root_cert)


# -- a federation on this machine --------------------------------------------------------


@dataclass
class _Node:
    org: str
    data: Path
    state: Path
    home: Path
    key: Path | None
    port: int
    proc: subprocess.Popen | None = None

    @property
    def log(self) -> Path:
        return self.home / "supernode.log"


class LocalDeployment:
    """A SuperLink and one SuperNode per organization folder of ``data_dir``, all on
    127.0.0.1, with TLS and node authentication (``secure=False``: neither). Use as a
    context manager: leaving it stops every process it started, by PID.

    Folders: ``root/superlink/`` (its state database and log), ``root/nodes/ORG/``
    (each node's Flower home, log and training state). Certificates and keys live in
    ``keys_dir`` (made there if missing), which must be outside ``root``'s run folders.
    """

    def __init__(
        self,
        root: str | Path,
        data_dir: str | Path,
        keys_dir: str | Path,
        *,
        secure: bool = True,
        threads: int | None = 1,
        echo: Callable[[str], None] | None = None,
    ):
        self.root, self.data = Path(root).resolve(), Path(data_dir).resolve()
        self.keys = Path(keys_dir).resolve()
        self.secure, self.threads, self.echo = secure, threads, echo or (lambda _: None)
        self.orgs = (
            sorted(p.name for p in self.data.iterdir() if (p / "scenario.toml").is_file())
            if self.data.is_dir()
            else []
        )
        if not self.orgs:
            raise DeployError(f"no organization folders (ORG/scenario.toml) in {self.data}")
        self.port = _free_port()
        self.address = f"{DEFAULT_HOST}:{self.port}"
        self.link_home = self.root / "superlink"
        self.superlink: subprocess.Popen | None = None
        self.nodes: dict[str, _Node] = {}
        self.node_ids: dict[str, int] = {}
        self.root_cert: Path | None = None

    # context manager
    def __enter__(self) -> LocalDeployment:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def link_log(self) -> Path:
        return self.link_home / "superlink.log"

    def start(self, wait: float = 120.0) -> None:
        """Certificates (unless present), the SuperLink, registration of every node's key,
        the SuperNodes; returns once all nodes are online."""
        tls = None
        if self.secure:
            if not (self.keys / CA_CERT).is_file():
                self.echo(f"certificates and node keys -> {self.keys}")
                make_certs(self.keys, nodes=self.orgs)
            for org in self.orgs:
                if not (self.keys / NODES_DIR / org).is_file():
                    make_node_key(self.keys / NODES_DIR / org)
            tls = ServerTls.from_args(self.keys)
            self.root_cert = tls.ca_cert
        self.link_home.mkdir(parents=True, exist_ok=True)
        env = deploy_env(self.link_home, self.threads)
        self.superlink = start(
            superlink_command(self.link_home, port=self.port, tls=tls, auth=self.secure),
            env=env,
            log=self.link_log,
            cwd=self.link_home,
        )
        wait_port(DEFAULT_HOST, self.port, self.superlink, "SuperLink", self.link_log)
        self.echo(f"SuperLink on {self.address} (pid {self.superlink.pid})")
        for org in self.orgs:
            home = self.root / "nodes" / org
            key = self.keys / NODES_DIR / org if self.secure else None
            self.nodes[org] = _Node(org, self.data / org, home / "state", home, key, _free_port())
            if key is not None:
                node_id = register_node(
                    key.with_name(key.name + ".pub"),
                    address=self.address,
                    root_cert=self.root_cert,
                    name=org,
                )
                self.node_ids[org] = node_id
                self.echo(f"registered {org}'s key (node {node_id})")
        for org in self.orgs:
            self.start_node(org)
        self.wait_online(len(self.orgs), wait)

    def start_node(self, org: str, rejoin: float = 0.0) -> subprocess.Popen:
        """Start (or restart) organization ``org``'s SuperNode. With ``rejoin`` > 0, a
        refused activation (exit 305: after a crash the SuperLink sees the node online
        for up to two heartbeat intervals, about 60 s) is retried for ``rejoin`` s, and
        this returns once the node is online."""
        node = self.nodes[org]
        node.home.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + rejoin
        while True:
            offset = node.log.stat().st_size if node.log.is_file() else 0
            node.proc = start(
                supernode_command(
                    self.address,
                    data_dir=node.data,
                    state_dir=node.state,
                    root_cert=self.root_cert,
                    private_key=node.key,
                    port=node.port,
                ),
                env=deploy_env(node.home, self.threads),
                log=node.log,
                cwd=node.home,
            )
            self.echo(f"SuperNode {org} (pid {node.proc.pid})")
            if rejoin <= 0 or node.key is None:  # without node keys nothing is refused
                return node.proc
            while node.proc.poll() is None and not self._is_online(org):
                time.sleep(0.5)
            if node.proc.poll() is None:
                return node.proc
            if not refused(node.log, offset) or time.monotonic() > deadline:
                raise DeployError(
                    f"SuperNode {org} exited (code {node.proc.returncode}); "
                    f"see {node.log}{_log_hint(node.log)}"
                )
            self.echo(f"SuperNode {org} refused (Flower exit code 305), retrying")
            time.sleep(3.0)

    def _is_online(self, org: str) -> bool:
        """Whether ``org``'s key belongs to a node the SuperLink sees online."""
        wanted = self.node_ids.get(org)
        return any(
            str(n.get("node-id")) == str(wanted) and str(n.get("status", "")).lower() == "online"
            for n in list_nodes(address=self.address, root_cert=self.root_cert)
        )

    def kill_node(self, org: str) -> None:
        """SIGKILL organization ``org``'s SuperNode and its ClientApp at once (a crash)."""
        node = self.nodes[org]
        if node.proc is not None:
            kill_tree(node.proc)

    def online(self) -> int:
        """SuperNodes the SuperLink sees online now."""
        return sum(
            1
            for n in list_nodes(address=self.address, root_cert=self.root_cert)
            if str(n.get("status", "")).lower() == "online"
        )

    def wait_online(self, count: int, seconds: float = 120.0) -> None:
        """Wait until ``count`` SuperNodes are online."""
        deadline = time.monotonic() + seconds
        while True:
            for node in self.nodes.values():
                if node.proc is not None and node.proc.poll() is not None:
                    raise DeployError(
                        f"SuperNode {node.org} exited (code "
                        f"{node.proc.returncode}); see {node.log}"
                        f"{_log_hint(node.log)}"
                    )
            if self.online() >= count:
                return
            if time.monotonic() > deadline:
                raise DeployError(
                    f"fewer than {count} SuperNodes online after "
                    f"{seconds:.0f} s; see {self.root / 'nodes'}"
                )
            time.sleep(0.5)

    def submit(self, cfg: Any, run_dir: str | Path, extra: Mapping[str, Any] | None = None) -> int:
        """Submit ``cfg`` as a run writing into ``run_dir``; returns the run ID."""
        return submit_run(cfg, run_dir, address=self.address, root_cert=self.root_cert, extra=extra)

    def serverapps(self) -> list[int]:
        """PIDs of the ServerApp processes running now."""
        if self.superlink is None:
            return []
        table = _proc_table()
        return [
            pid
            for pid, _ in process_tree(self.superlink.pid)
            if pid in table and any(b"flwr-serverapp" in a for a in table[pid][2][:2])
        ]

    def close(self) -> None:
        """Stop every SuperNode, then the SuperLink (each with its tree), by PID."""
        for node in self.nodes.values():
            stop_tree(node.proc, grace=5.0)
        stop_tree(self.superlink, grace=5.0)


def wait_for(
    predicate: Callable[[], bool],
    seconds: float,
    what: str,
    check: Callable[[], None] | None = None,
    poll: float = 0.5,
) -> None:
    """Poll ``predicate`` until true; DeployError after ``seconds``. ``check`` runs each
    time too and may raise (e.g. a process died)."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if check is not None:
            check()
        if time.monotonic() > deadline:
            raise DeployError(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(poll)


def run_finished(run_dir: str | Path, rounds: int = 0) -> bool:
    """Whether the ServerApp wrote a final ``summary.json`` into ``run_dir`` (for at
    least ``rounds`` rounds)."""
    path = Path(run_dir) / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return (
        summary.get("status") in ("finished", "already complete")
        and int(summary.get("rounds", 0)) >= rounds
    )


# -- the command line: fedinv deploy ... -------------------------------------------------


def add_deploy_parser(commands: Any) -> None:
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
    p.add_argument(
        "--scenario",
        default="electronics-5r",
        metavar="NAME|FILE",
        help="the whole network (default electronics-5r)",
    )
    p.add_argument("--rounds", type=int, default=3, metavar="R", help="server rounds")
    p.add_argument("--strategy", choices=("fedavg", "fedprox"), default="fedavg")
    p.add_argument(
        "--mu",
        type=float,
        default=0.1,
        metavar="MU",
        help="FedProx proximal weight (with --strategy fedprox)",
    )
    p.add_argument(
        "--local-steps",
        type=int,
        default=120,
        metavar="N",
        help="days of local training per client and round (default 120)",
    )
    p.add_argument("--replications", type=int, default=4, metavar="B")
    p.add_argument("--eval-replications", type=int, default=4, metavar="R")
    p.add_argument("--eval-days", type=int, default=120, metavar="N")
    p.add_argument("--seed", type=int, default=1, metavar="S")
    p.add_argument(
        "--min-nodes",
        type=int,
        default=2,
        metavar="N",
        help="rounds start once N nodes are online and use the replies of at least N (default 2)",
    )
    p.add_argument(
        "--round-timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="a round's training (and evaluation) replies are awaited this long "
        "at most (default 600)",
    )
    p.add_argument(
        "--no-client-eval",
        action="store_true",
        help="skip the organizations' local evaluation after each round",
    )


def _cmd(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``func`` with a DeployError reported as a usage error (``fedinv: error: ...``)."""

    def wrapped(args: argparse.Namespace) -> int:
        from fedinv.cli import CliError

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


def _foreground(
    command: Sequence[str], env: Mapping[str, str], watch: str | None = None
) -> tuple[int, bool]:
    """Run ``command`` with its output copied to our stderr until it exits or we are
    interrupted (Ctrl-C, SIGTERM: KeyboardInterrupt, after its tree is stopped by PID).
    Returns its exit status and whether ``watch`` appeared in its output.

    The process is reaped as soon as it exits (not when its output ends): Flower's
    helpers hold the output pipe and watch their parent by PID, and a parent left a
    zombie still looks alive to them."""
    import threading

    proc = subprocess.Popen(
        list(command),
        env=dict(env),
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    seen = threading.Event()

    def copy() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stderr.write(line)
            sys.stderr.flush()
            if watch is not None and watch in line:
                seen.set()

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    reader = threading.Thread(target=copy, daemon=True)
    reader.start()
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        code = proc.wait()
        reader.join(10.0)
        return code, seen.is_set()
    finally:
        stop_tree(proc, grace=10.0)
        signal.signal(signal.SIGTERM, previous)


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
    return _foreground(command, deploy_env(home))[0]


def _client_tls(args: argparse.Namespace) -> Path | None:
    """The CA certificate to verify the SuperLink with (None with --insecure)."""
    if args.insecure:
        if args.ca:
            raise DeployError("--insecure with --ca: choose one")
        return None
    path = _need_file(
        args.ca, "CA certificate", " (pass --ca ca.crt, the federation's CA; or --insecure)"
    )
    _check_certificate(path, "CA certificate")
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
        path = _need_file(key, "node public key")
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
    _check_name(args.org)
    ca = _client_tls(args)
    address = _check_address(args.superlink)
    data = _org_folder(args.data, args.org)
    key = None
    if not (args.no_auth or args.insecure):
        key = _need_file(
            args.key,
            "node private key",
            " (pass --key, made by fedinv deploy node-key; or --no-auth)",
        )
        _check_node_key(key)
    state = Path(args.state).resolve() if args.state else data.parent / ".fedinv-state"
    port = args.port if args.port is not None else _free_port()
    if not port_free(DEFAULT_HOST, port):
        raise DeployError(f"--port {port} is in use; choose another (or omit it)")
    home = state / f"flower-{args.org}"
    home.mkdir(parents=True, exist_ok=True)
    command = supernode_command(
        address, data_dir=data, state_dir=state, root_cert=ca, private_key=key, port=port
    )
    print(
        f"SuperNode {args.org}: data {data}, state {state}, SuperLink {address} "
        f"(TLS {'off' if ca is None else 'on'}, node authentication "
        f"{'off' if key is None else 'on'})",
        file=sys.stderr,
    )
    deadline = time.monotonic() + max(args.rejoin_wait, 0.0)
    while True:
        code, refused_now = _foreground(command, deploy_env(home), watch=REFUSED_MARK)
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
    from fedinv.federation.task import FedConfig
    from fedinv.model.scenario import load_scenario

    for name in ("rounds", "local_steps", "replications", "eval_replications", "min_nodes"):
        if getattr(args, name) < 1:
            raise DeployError(f"--{name.replace('_', '-')} must be at least 1")
    if args.eval_days < 2 or args.round_timeout <= 0:
        raise DeployError("--eval-days must be at least 2 and --round-timeout positive")
    scenario = load_scenario(args.scenario)  # a bad name fails here, before Flower starts
    source = scenario.source
    cfg = FedConfig(
        scenario=source.removeprefix("builtin:")
        if source.startswith("builtin:")
        else str(Path(args.scenario).resolve()),
        rounds=args.rounds,
        strategy=args.strategy,
        proximal_mu=args.mu if args.strategy == "fedprox" else 0.0,
        local_steps=args.local_steps,
        replications=args.replications,
        eval_replications=args.eval_replications,
        eval_days=args.eval_days,
        seed=args.seed,
    )
    extra = {
        "min-train-nodes": args.min_nodes,
        "min-available-nodes": args.min_nodes,
        "min-evaluate-nodes": 0 if args.no_client_eval else args.min_nodes,
        "fraction-evaluate": 0.0 if args.no_client_eval else 1.0,
        "round-timeout": float(args.round_timeout),
    }
    return cfg, extra


def _print_rounds(run_dir: Path) -> None:
    import pandas as pd

    path = run_dir / "rounds.csv"
    if not path.is_file():
        print(f"no rounds.csv in {run_dir} (yet)")
        return
    rounds = pd.read_csv(path)
    cols = [
        c
        for c in (
            "round",
            "global-cost-per-day",
            "global-cost-ci95",
            "results",
            "failures",
            "no_reply",
            "local-cost-per-day",
            "wall_s",
        )
        if c in rounds
    ]
    print(rounds[cols].to_string(index=False))
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
