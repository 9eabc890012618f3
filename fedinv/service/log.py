"""The tamper-evident decision log: an SQLite hash chain (docs/service.md).

One database holds one or more *chains* (a decision service writes one, named by its
organization; ``fedinv simulate --log`` one per organization and replication). Entry
``seq`` (1, 2, ...) of a chain carries the fields of :data:`HASHED` and

    hash = sha256(canonical JSON of {chain, seq, kind, org, day, request_digest,
                   released, policy_digest, checkpoint_digest, prev})

with ``prev`` the previous entry's hash (64 zeros for the first). Changing any hashed
field of an entry breaks its hash; deleting an entry breaks the sequence or the next
entry's ``prev``; deleting the tail is seen only against a hash kept elsewhere
(:func:`verify` with ``head``: every reply returns its entry's hash).

The database runs in WAL mode; :meth:`DecisionLog.append` returns once the entry (and
the policy's memory after the decision, in the same transaction) is committed: with
``sync="full"`` fsynced to disk (a reply sent after it survives a power cut), with
``sync="normal"`` in the operating system's WAL file (it survives a killed process,
not a power cut); see :data:`SYNC_MODES`.
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedinv.service.codec import canonical

GENESIS = "0" * 64
"""``prev`` of a chain's first entry."""
HASHED = (
    "chain",
    "seq",
    "kind",
    "org",
    "day",
    "request_digest",
    "released",
    "policy_digest",
    "checkpoint_digest",
    "prev",
)
"""The fields an entry's hash covers (``released``: ``{lane: units}``)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    chain TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    org TEXT NOT NULL,
    day INTEGER NOT NULL,
    request_digest TEXT NOT NULL,
    released TEXT NOT NULL,
    policy_digest TEXT NOT NULL,
    checkpoint_digest TEXT,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL,
    reply TEXT,
    PRIMARY KEY (chain, seq)
);
CREATE TABLE IF NOT EXISTS memory (
    chain TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    state BLOB NOT NULL
);
"""


def entry_hash(fields: dict[str, Any]) -> str:
    """sha256 hex over the canonical JSON of the :data:`HASHED` fields."""
    return hashlib.sha256(canonical({k: fields[k] for k in HASHED})).hexdigest()


@dataclass(frozen=True)
class Entry:
    chain: str
    seq: int
    kind: str
    org: str
    day: int
    request_digest: str
    released: dict[str, float]
    policy_digest: str
    checkpoint_digest: str | None
    prev: str
    hash: str
    reply: dict[str, Any] | None = None
    reply_json: str | None = None
    """The reply as JSON text (what the service sends)."""


SYNC_MODES = ("full", "normal")
"""``DecisionLog(sync=...)``: SQLite's ``synchronous`` in WAL mode. ``full``: every commit
is fsynced before :meth:`DecisionLog.append` returns (survives a power cut or an OS
crash); ``normal``: the commit is in the WAL file, in the operating system, before it
returns (survives a killed process, SIGKILL included; an OS crash or power cut may lose
the last commits, never corrupt the chain). docs/service.md, "The decision log"."""


class DecisionLog:
    """Append-only access to a log database (created if missing); ``sync``: one of
    :data:`SYNC_MODES` (a service's default ``full``; a simulation's log ``normal``)."""

    def __init__(self, path: str | Path, sync: str = "full"):
        if sync not in SYNC_MODES:
            raise ValueError(f"sync must be one of {', '.join(SYNC_MODES)}, not {sync!r}")
        self.path = Path(path)
        self.sync = sync
        self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={sync.upper()}")
        self.db.executescript(_SCHEMA)
        self._heads: dict[str, tuple[int, str]] = {}  # chains this connection appended to

    def close(self) -> None:
        self.db.close()

    def head(self, chain: str) -> tuple[int, str]:
        """``(seq, hash)`` of the chain's last entry (``(0, GENESIS)`` when empty)."""
        row = self.db.execute(
            "SELECT seq, hash FROM entries WHERE chain = ? ORDER BY seq DESC LIMIT 1", (chain,)
        ).fetchone()
        return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))

    def last(self, chain: str, kind: str | None = None) -> Entry | None:
        """The chain's last entry (of ``kind``, when given), or None."""
        rows = list(self.entries(chain, last=True, kind=kind))
        return rows[0] if rows else None

    def append(
        self,
        chain: str,
        *,
        kind: str,
        org: str,
        day: int,
        request_digest: str,
        released: dict[str, float],
        policy_digest: str,
        checkpoint_digest: str | None,
        reply: dict[str, Any] | None = None,
        memory: bytes | None = None,
    ) -> Entry:
        """Append one entry (and the policy's ``memory`` after it) in one committed
        transaction; returns it with its hash."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            # the head this connection wrote last (one writer per chain); should another
            # writer have appended meanwhile, the insert's (chain, seq) key refuses it
            seq, prev = self._heads.get(chain) or self.head(chain)
            fields = {
                "chain": chain,
                "seq": seq + 1,
                "kind": kind,
                "org": org,
                "day": int(day),
                "request_digest": request_digest,
                "released": released,
                "policy_digest": policy_digest,
                "checkpoint_digest": checkpoint_digest,
                "prev": prev,
            }
            h = entry_hash(fields)
            text = None
            if reply is not None:
                reply = {**reply, "entry": seq + 1, "entry_hash": h}
                text = json.dumps(reply, allow_nan=False)  # stored as sent, not hashed
            self.db.execute(
                "INSERT INTO entries VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    chain,
                    seq + 1,
                    kind,
                    org,
                    int(day),
                    request_digest,
                    canonical(released).decode(),
                    policy_digest,
                    checkpoint_digest,
                    prev,
                    h,
                    text,
                ),
            )
            if memory is not None:
                self.db.execute(
                    "INSERT OR REPLACE INTO memory VALUES (?,?,?)", (chain, seq + 1, memory)
                )
            self.db.execute("COMMIT")
        except BaseException:
            self._heads.pop(chain, None)
            self.db.execute("ROLLBACK")
            raise
        self._heads[chain] = (seq + 1, h)
        return Entry(**fields, hash=h, reply=reply, reply_json=text)

    def memory(self, chain: str) -> tuple[int, bytes] | None:
        """``(seq, state)`` of the memory saved with the chain's latest decision."""
        row = self.db.execute("SELECT seq, state FROM memory WHERE chain = ?", (chain,)).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def chains(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT chain FROM entries ORDER BY chain")]

    def entries(
        self, chain: str | None = None, last: bool = False, kind: str | None = None
    ) -> Iterator[Entry]:
        """Entries in chain and sequence order (``last``: only the last one; ``kind``:
        only entries of that kind)."""
        sql = "SELECT * FROM entries"
        where, args = [], []
        if chain is not None:
            where.append("chain = ?")
            args.append(chain)
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY chain, seq" + (" DESC LIMIT 1" if last else "")
        for row in self.db.execute(sql, tuple(args)):
            yield Entry(
                chain=row[0],
                seq=int(row[1]),
                kind=row[2],
                org=row[3],
                day=int(row[4]),
                request_digest=row[5],
                released=json.loads(row[6]),
                policy_digest=row[7],
                checkpoint_digest=row[8],
                prev=row[9],
                hash=row[10],
                reply=None if row[11] is None else json.loads(row[11]),
                reply_json=row[11],
            )


@dataclass(frozen=True)
class Verdict:
    """What :func:`verify` found: ``ok``, the entries checked per chain, and the first
    problem (``chain``, ``seq``, ``message``) when not ok."""

    ok: bool
    checked: dict[str, int]
    chain: str | None = None
    seq: int | None = None
    message: str = ""


def verify(path: str | Path, head: str | None = None) -> Verdict:
    """Check every chain of the database at ``path``: sequence 1, 2, ... without gaps,
    each ``prev`` the previous hash, each hash recomputed. ``head``: a hash a client
    kept; it must be an entry's hash (else the tail was cut or altered)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no decision log at {p}")
    db = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
    checked: dict[str, int] = {}
    seen_head = head is None
    try:
        log = DecisionLog.__new__(DecisionLog)
        log.db = db
        for chain in log.chains():
            expect, prev = 1, GENESIS
            count = 0
            for e in log.entries(chain):
                if e.seq != expect:
                    return Verdict(
                        False,
                        checked,
                        chain,
                        expect,
                        f"entry {expect} of chain {chain!r} is missing",
                    )
                if e.prev != prev:
                    return Verdict(
                        False,
                        checked,
                        chain,
                        e.seq,
                        f"entry {e.seq} of chain {chain!r} does not follow entry {e.seq - 1} "
                        "(its prev hash differs: an entry before it was altered or removed)",
                    )
                fields = {
                    "chain": e.chain,
                    "seq": e.seq,
                    "kind": e.kind,
                    "org": e.org,
                    "day": e.day,
                    "request_digest": e.request_digest,
                    "released": e.released,
                    "policy_digest": e.policy_digest,
                    "checkpoint_digest": e.checkpoint_digest,
                    "prev": e.prev,
                }
                if entry_hash(fields) != e.hash:
                    return Verdict(
                        False,
                        checked,
                        chain,
                        e.seq,
                        f"entry {e.seq} of chain {chain!r} was altered",
                    )
                seen_head = seen_head or e.hash == head
                prev, expect, count = e.hash, expect + 1, count + 1
            checked[chain] = count
    finally:
        db.close()
    if not seen_head:
        ends = ", ".join(f"{c} at entry {n}" for c, n in checked.items()) or "no entries"
        return Verdict(
            False,
            checked,
            None,
            None,
            f"head {head} is not in the log (its tail was cut or altered; chains end: {ends})",
        )
    return Verdict(True, checked)


def export_parquet(path: str | Path, out: str | Path) -> int:
    """Write every entry (one row, ``released`` as JSON text) to the parquet ``out``;
    returns the row count."""
    import pandas as pd

    from fedinv.files import atomic_write

    log = DecisionLog(path)
    try:
        rows = [
            {
                "chain": e.chain,
                "seq": e.seq,
                "kind": e.kind,
                "org": e.org,
                "day": e.day,
                "request_digest": e.request_digest,
                "released": canonical(e.released).decode(),
                "policy_digest": e.policy_digest,
                "checkpoint_digest": e.checkpoint_digest,
                "prev": e.prev,
                "hash": e.hash,
            }
            for e in log.entries()
        ]
    finally:
        log.close()
    frame = pd.DataFrame(rows, columns=[*HASHED, "hash"])
    atomic_write(Path(out), lambda p: frame.to_parquet(p, index=False))
    return len(frame)


# -- a policy's memory -----------------------------------------------------------------

MEMORY_PATHS = (
    "observer.forecaster.level",
    "observer.forecaster.variance",
    "observer.forecaster.observations",
    "observer._lags",
    "observer.day",
    "_day",
    "_obs",
    "_batch",
)
"""What a learned policy keeps between days (:class:`fedinv.agents.envs.Observer`'s
forecaster and recent demand, the day it last saw); classical policies keep nothing."""


def _get(obj: Any, path: str) -> tuple[bool, Any]:
    for part in path.split("."):
        if not hasattr(obj, part):
            return False, None
        obj = getattr(obj, part)
    return True, obj


def save_memory(policy: Any) -> bytes | None:
    """The policy's memory (:data:`MEMORY_PATHS` it has) as npz bytes (no pickle); None
    for a policy that keeps nothing between days."""
    arrays, scalars = {}, {}
    for path in MEMORY_PATHS:
        found, value = _get(policy, path)
        if not found:
            continue
        if isinstance(value, np.ndarray):
            arrays[path] = value
        else:
            scalars[path] = None if value is None else int(value)
    if not arrays and not scalars:
        return None
    buf = io.BytesIO()
    np.savez(buf, __scalars__=np.frombuffer(canonical(scalars), np.uint8), **arrays)
    return buf.getvalue()


def load_memory(policy: Any, blob: bytes) -> None:
    """Restore what :func:`save_memory` saved into ``policy`` (same kind of policy)."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as data:
        values: dict[str, Any] = json.loads(bytes(data["__scalars__"]).decode())
        values.update({k: data[k].copy() for k in data.files if k != "__scalars__"})
    for path, value in values.items():
        *parents, name = path.split(".")
        obj = policy
        for part in parents:
            obj = getattr(obj, part)
        setattr(obj, name, value)
