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
* processes: :func:`superlink_command`, :func:`supernode_command`; starting and
  stopping them is :mod:`fedinv.federation.processes` (every process of a tree, by PID;
  a run's processes tagged and stopped if the process that started them dies);
* the Control API through the ``flwr`` CLI: :func:`register_node`, :func:`list_nodes`,
  :func:`submit_run`, with a Flower home of their own holding ``config.toml``;
* :class:`LocalDeployment`: a SuperLink and one SuperNode per organization on this
  machine, with TLS and node authentication (``fedinv deploy local``, the tests and
  :func:`fedinv.bench.deployment.compare`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedinv.errors import DeployError
from fedinv.federation.processes import (
    ProcessGuard,
    flower_env,
    free_port,
    kill_tree,
    proc_table,
    process_tree,
    start,
    stop_tree,
)
from fedinv.federation.runconfig import run_config_text, staged_app
from fedinv.files import atomic_write

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
SUPEREXEC_POLL = 0.1
"""Seconds between a SuperExec's checks for a ServerApp or ClientApp to launch (Flower's
default 1 s; ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``)."""
SUPERNODE_IDLE_WAIT = 0.25
"""Seconds a SuperNode waits after a pull that found no message (Flower 1.42: a fixed
3 s; ``clients.flower_supernode`` shortens it). Five idle organizations then ask the
SuperLink ~20 times a second in all, each one small authenticated request."""


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
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


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
        check_name(org)
        certs.nodes[org] = make_node_key(out / NODES_DIR / org, force=force)
    return certs


def check_name(org: str) -> None:
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


def need_file(path: str | Path | None, what: str, hint: str = "") -> Path:
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


def check_certificate(path: Path, what: str) -> None:
    from cryptography import x509

    try:
        x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError:
        raise DeployError(f"{what} {path} is not a PEM certificate") from None


def check_node_key(path: Path) -> None:
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
            need_file(pick(ca_cert, CA_CERT), "CA certificate", hint),
            need_file(pick(cert, SERVER_CERT), "server certificate", hint),
            need_file(pick(key, SERVER_KEY), "server private key", hint),
        )
        check_certificate(tls.ca_cert, "CA certificate")
        check_certificate(tls.cert, "server certificate")
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
    trainer_socket: str | Path | None = None,
    short_wait: bool = True,
) -> list[str]:
    """``flower-supernode`` for one organization: its data folder and state folder in the
    node config (and its trainer's Unix socket, ``trainer-socket``: the ClientApp then
    hands every message to that trainer), TLS with ``root_cert`` (None: ``--insecure``),
    authenticated by ``private_key`` (None: no node authentication), its ClientAppIo
    API on ``port``. With ``short_wait`` it is Flower's SuperNode through
    ``clients.flower_supernode`` (a pull that found no message is retried after 0.25 s,
    not 3 s); else Flower's ``flower-supernode`` executable."""
    node_config = (
        f"data-dir={json.dumps(str(Path(data_dir).resolve()))} "
        f"state-dir={json.dumps(str(Path(state_dir).resolve()))}"
    )
    if trainer_socket is not None:
        node_config += f" trainer-socket={json.dumps(str(trainer_socket))}"
    exe = _exe("flower-supernode")  # Flower is installed here either way
    cmd = [
        *([sys.executable, "-m", "clients.flower_supernode"] if short_wait else [exe]),
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
    telemetry, no runtime installs), the SuperExec polling for work every
    :data:`SUPEREXEC_POLL` s, and, if ``threads``, that many torch/BLAS threads per
    process."""
    env = flower_env(Path(home))
    env["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] = str(SUPEREXEC_POLL)
    env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    if threads is not None:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(threads)
    return env


def with_shim(env: Mapping[str, str], bin_dir: str | Path) -> dict[str, str]:
    """``env`` with ``bin_dir`` (where :func:`fedinv.deploy.launcher.write_shim` put the
    ``flwr-clientapp`` shim) first on ``PATH``: the SuperNode's SuperExec then launches the
    shim instead of Flower's ``flwr-clientapp``."""
    out = dict(env)
    out["PATH"] = f"{Path(bin_dir).resolve()}{os.pathsep}{out.get('PATH', '')}"
    return out


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
    text = "\n".join(lines) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
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
    key = need_file(public_key, "node public key")
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
    (``flwr run APP fedinv --run-config ...``; APP by default the FAB's files staged in
    ``RUN_DIR/.flwr-app``, :func:`fedinv.federation.runconfig.staged_app`); returns the
    run ID (0 with ``stream``, where the call returns when the run ends)."""
    config = run_config(cfg, run_dir, extra)
    args = [
        "run",
        str(app or staged_app(Path(run_dir) / ".flwr-app")),
        CONNECTION,
        "--run-config",
        run_config_text(config),
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
    trainer: Any = None
    """Its :class:`fedinv.deploy.supervisor.SupervisedTrainer`."""
    launcher: Any = None
    """Its ClientApp launcher (:func:`fedinv.deploy.supervisor.supervised_launcher`)."""

    @property
    def log(self) -> Path:
        return self.home / "supernode.log"

    @property
    def socket(self) -> Path:
        return self.home / "trainer" / "trainer.sock"

    @property
    def launcher_socket(self) -> Path:
        return self.home / "launcher" / "launcher.sock"

    @property
    def bin(self) -> Path:
        """The private folder with the ``flwr-clientapp`` shim, first on the node's PATH."""
        return self.home / "bin"


class LocalDeployment:
    """A SuperLink and one SuperNode per organization folder of ``data_dir``, all on
    127.0.0.1, with TLS and node authentication (``secure=False``: neither). Use as a
    context manager: leaving it stops every process it started, by PID.

    Folders: ``root/superlink/`` (its state database and log), ``root/nodes/ORG/``
    (each node's Flower home, log, trainer socket and log, training state). Certificates
    and keys live in ``keys_dir`` (made there if missing), which must be outside
    ``root``'s run folders. Each organization's trainer process and (with ``launcher``)
    its ClientApp launcher (:mod:`fedinv.deploy.launcher`) are supervised as ``fedinv
    deploy node`` does (restarted if they die); ``short_wait``: the SuperNodes retry an
    empty pull after 0.25 s (``clients.flower_supernode``), not Flower's 3 s;
    ``env`` adds variables to every process's environment.
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
        env: Mapping[str, str] | None = None,
        launcher: bool = True,
        short_wait: bool = True,
    ):
        self.extra_env = dict(env or {})
        self.use_launcher, self.short_wait = launcher, short_wait
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
        self.port = free_port()
        self.address = f"{DEFAULT_HOST}:{self.port}"
        self.link_home = self.root / "superlink"
        self.superlink: subprocess.Popen | None = None
        self.nodes: dict[str, _Node] = {}
        self.node_ids: dict[str, int] = {}
        self.root_cert: Path | None = None
        self.guard: ProcessGuard | None = None
        self._tls: ServerTls | None = None

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
        the SuperNodes; returns once all nodes are online. Every process is tagged and
        recorded in ``root/processes.json`` (:class:`fedinv.federation.processes.ProcessGuard`):
        none outlives this process by more than a few seconds."""
        self.guard = ProcessGuard(self.root, echo=self.echo).__enter__()
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
        self._tls = tls
        self.start_superlink()
        for org in self.orgs:
            home = self.root / "nodes" / org
            key = self.keys / NODES_DIR / org if self.secure else None
            self.nodes[org] = _Node(org, self.data / org, home / "state", home, key, free_port())
            if key is not None:
                node_id = register_node(
                    key.with_name(key.name + ".pub"),
                    address=self.address,
                    root_cert=self.root_cert,
                    name=org,
                )
                self.node_ids[org] = node_id
                self.echo(f"registered {org}'s key (node {node_id})")
        for org in self.orgs:  # the trainers import torch meanwhile, all at once
            self.nodes[org].trainer = self.start_trainer(org, wait=None)
            if self.use_launcher:
                self.nodes[org].launcher = self.start_launcher(org, wait=None)
        for org in self.orgs:
            self.nodes[org].trainer.wait_ready()
            if self.nodes[org].launcher is not None:
                self.nodes[org].launcher.wait_ready()
            self.start_node(org)
        self.wait_online(len(self.orgs), wait)

    def start_superlink(self) -> subprocess.Popen:
        """Start (or restart) the SuperLink on its port, with its state database in
        ``root/superlink/state.db`` (registered keys, runs, messages survive a restart)."""
        self.link_home.mkdir(parents=True, exist_ok=True)
        self.superlink = start(
            superlink_command(self.link_home, port=self.port, tls=self._tls, auth=self.secure),
            env=self._env(self.link_home),
            log=self.link_log,
            cwd=self.link_home,
        )
        if self.guard is not None:
            self.guard.note(self.superlink, "superlink")
        wait_port(DEFAULT_HOST, self.port, self.superlink, "SuperLink", self.link_log)
        self.echo(f"SuperLink on {self.address} (pid {self.superlink.pid})")
        return self.superlink

    def kill_superlink(self) -> None:
        """SIGKILL the SuperLink and its tree (its SuperExec, the ServerApps) at once."""
        if self.superlink is not None:
            kill_tree(self.superlink)

    def start_node(self, org: str, rejoin: float = 0.0) -> subprocess.Popen:
        """Start (or restart) organization ``org``'s SuperNode. With ``rejoin`` > 0, a
        refused activation (exit 305: after a crash the SuperLink sees the node online
        for up to two heartbeat intervals, about 60 s) is retried for ``rejoin`` s, and
        this returns once the node is online."""
        node = self.nodes[org]
        node.home.mkdir(parents=True, exist_ok=True)
        if node.trainer is None:
            node.trainer = self.start_trainer(org)
        if node.launcher is None and self.use_launcher:
            node.launcher = self.start_launcher(org)
        env = self._env(node.home)
        if self.use_launcher:
            from fedinv.deploy.launcher import write_shim

            env = with_shim(env, write_shim(node.bin, node.launcher_socket).parent)
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
                    trainer_socket=node.socket,
                    short_wait=self.short_wait,
                ),
                env=env,
                log=node.log,
                cwd=node.home,
            )
            if self.guard is not None:
                self.guard.note(node.proc, f"supernode {org}")
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

    def start_trainer(self, org: str, wait: float | None = 120.0) -> Any:
        """Start organization ``org``'s supervised trainer; returns once it answers
        (``wait`` None: at once)."""
        from fedinv.deploy.supervisor import SupervisedTrainer

        node = self.nodes[org]
        return SupervisedTrainer(
            node.socket,
            node.data,
            node.state,
            env=self._env(node.home),
            log=node.home / "trainer" / "trainer.log",
            echo=self.echo,
            on_start=self._noter(f"trainer {org}"),
        ).start(wait)

    def start_launcher(self, org: str, wait: float | None = 120.0) -> Any:
        """Start organization ``org``'s supervised ClientApp launcher; returns once it
        answers (``wait`` None: at once)."""
        from fedinv.deploy.supervisor import supervised_launcher

        node = self.nodes[org]
        return supervised_launcher(
            node.launcher_socket,
            env=self._env(node.home),
            log=node.home / "launcher" / "launcher.log",
            echo=self.echo,
            on_start=self._noter(f"launcher {org}"),
        ).start(wait)

    def _noter(self, label: str) -> Callable[[subprocess.Popen], None]:
        """A supervisor's ``on_start``: every process it (re)starts is noted by the run's
        guard, if any, under ``label``."""

        def noted(proc: subprocess.Popen) -> None:
            if self.guard is not None:
                self.guard.note(proc, label)

        return noted

    def _env(self, home: Path) -> dict[str, str]:
        env = {**deploy_env(home, self.threads), **self.extra_env}
        return env if self.guard is None else self.guard.env(env)

    def _is_online(self, org: str) -> bool:
        """Whether ``org``'s key belongs to a node the SuperLink sees online."""
        wanted = self.node_ids.get(org)
        return any(
            str(n.get("node-id")) == str(wanted) and str(n.get("status", "")).lower() == "online"
            for n in list_nodes(address=self.address, root_cert=self.root_cert)
        )

    def kill_node(self, org: str) -> None:
        """SIGKILL organization ``org``'s SuperNode, its ClientApp, its trainer and its
        ClientApp launcher at once (the organization's machine crashed)."""
        node = self.nodes[org]
        if node.trainer is not None:
            node.trainer.kill()
            node.trainer = None
        if node.launcher is not None:
            node.launcher.kill()
            node.launcher = None
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
        table = proc_table()
        return [
            pid
            for pid, _ in process_tree(self.superlink.pid)
            if pid in table and any(b"flwr-serverapp" in a for a in table[pid][2][:2])
        ]

    def close(self) -> None:
        """Stop every SuperNode, then the SuperLink (each with its tree), by PID."""
        for node in self.nodes.values():
            stop_tree(node.proc, grace=5.0)
            if node.trainer is not None:
                node.trainer.stop()
                node.trainer = None
            if node.launcher is not None:
                node.launcher.stop()
                node.launcher = None
        stop_tree(self.superlink, grace=5.0)
        if self.guard is not None:
            self.guard.close()
            self.guard = None


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
