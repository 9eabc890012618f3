"""What a decision service saw, kept in the organization's private data folder
(``fedinv serve --data DIR``; docs/service.md, "Continual learning").

Every fresh decision appends one line to ``DIR/service-journal.jsonl`` (the request body
as sent and the released orders), flushed to the operating system before the reply
leaves, so a SIGKILLed service loses no acknowledged day, and fsynced too under ``serve
--sync full`` (a power cut loses none either), as the decision log is. From the journal the
:class:`Recorder` writes the files ``fedinv data export`` writes (``scenario.toml``,
``demand.csv``, ``leadtimes.csv``, ``inventory.csv``, ``confirmations.csv``; the same
columns, :func:`fedinv.federation.private_data.write_org_folder`) for every *completed*
day: what shipped on day ``t`` and when it arrives are read from day ``t + 1``'s request
(``owed``, ``received_yesterday`` and ``arrived_today`` give the shipment, the new slot
of ``in_transit`` its lead time; a shipment arriving the next morning is never seen in
transit: lead 1), so day ``t``'s rows are written once day ``t + 1`` is in. The
request carries no confirmations: ``confirmations.csv`` is left with its header only.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedinv.service.codec import Codec, DecisionRequest

JOURNAL = "service-journal.jsonl"


@dataclass
class _Day:
    """One request as arrays of the network (``[N]`` or ``[M]``; ``arrivals [M, P]``:
    units arriving on day ``day + 1 + k``)."""

    day: int
    demand: np.ndarray
    inventory: np.ndarray  # [3, N] on hand, backlog, on order
    orders: np.ndarray  # [M] released (own lanes) and the buyers' orders (lanes supplied)
    owed: np.ndarray
    received_yesterday: np.ndarray
    arrived_today: np.ndarray
    arrivals: np.ndarray


@dataclass
class Recorder:
    """The journal of one organization's service and the export-format files built from
    it (``every``: rewrite the files after this many new completed days; 0: only on
    :meth:`flush`)."""

    folder: Path
    codec: Codec
    scenario: Any
    org: str
    every: int = 7
    fsync: bool = True
    """fsync each journal line before the decision returns (``serve --sync full``);
    False: flushed to the operating system only (``--sync normal``)."""
    days: list[_Day] = field(default_factory=list)
    _written: int = 0

    def __post_init__(self) -> None:
        self._write_lock = threading.Lock()
        self._folder_end = 0  # the day after the last one written into the folder
        self.folder = Path(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / JOURNAL
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    entry = json.loads(line)
                    self._add(DecisionRequest.model_validate(entry["request"]), entry["released"])
        self._journal = open(path, "a", encoding="utf-8")  # noqa: SIM115 (kept open)

    @property
    def completed(self) -> int:
        """Days whose rows are known (all but the last one seen)."""
        return max(len(self.days) - 1, 0)

    def record(self, req: DecisionRequest, body: Any, released: dict[str, float]) -> None:
        """Append day ``req.day`` (after its decision was logged); a day out of sequence
        (a gap after a lost journal line) starts the history afresh from it."""
        line = json.dumps({"request": body, "released": released}, separators=(",", ":"))
        if self.days and req.day != self.days[-1].day + 1:
            self.days.clear()
            self._journal.close()
            self._journal = open(self.folder / JOURNAL, "w", encoding="utf-8")  # noqa: SIM115
        self._journal.write(line + "\n")
        self._journal.flush()  # in the OS: survives a SIGKILL of the service
        if self.fsync:  # on disk: survives a power cut too (--sync full)
            os.fsync(self._journal.fileno())
        self._add(req, released)
        if self.every and self.completed - self._written >= self.every:
            self.flush()

    def _add(self, req: DecisionRequest, released: dict[str, float]) -> None:
        lay = self.codec.layout
        s = self.codec.state(req)
        orders = np.nan_to_num(np.asarray(s.given_orders[0], float), nan=0.0)
        lane = {lid: m for m, lid in enumerate(lay.lane_ids)}
        for lid, qty in released.items():
            orders[lane[lid]] = qty
        p = s.pipeline.shape[2]
        arrivals = s.pipeline[0][:, (req.day + 1 + np.arange(p - 1)) % p]
        inventory = np.stack([s.on_hand[0], s.backlog[0], s.on_order[0] @ lay.dst_mat])
        self.days.append(
            _Day(
                req.day,
                s.demand[0].copy(),
                inventory,
                orders,
                s.owed[0].copy(),
                s.last_received[0].copy(),
                s.arrived_orders[0].copy(),
                arrivals,
            )
        )

    def history(self) -> dict[str, np.ndarray]:
        """The completed days as ``write_org_folder``'s arrays (``shipped``, ``lead``
        from each next day's request)."""
        done = self.days[: self.completed]
        m = self.codec.layout.num_lanes
        shipped, lead = np.zeros((len(done), m)), np.ones((len(done), m))
        for t, (today, nxt) in enumerate(zip(done, self.days[1:], strict=False)):
            ship = (
                today.owed
                + nxt.received_yesterday
                - today.arrived_today
                - nxt.owed
                + nxt.arrived_today
            )
            shipped[t] = np.where(ship > 1e-9, ship, 0.0)
            # the new slot: tomorrow's arrivals for day d minus today's for that day
            new = nxt.arrivals.copy()
            new[:, :-1] -= today.arrivals[:, 1:]
            seen = new > 1e-9
            last = seen.shape[1] - 1 - np.argmax(seen[:, ::-1], axis=1)
            lead[t] = np.where(seen.any(axis=1), last + 2, 1)
        return {
            "demand": np.array([d.demand for d in done]).reshape(len(done), -1),
            "orders": np.array([d.orders for d in done]).reshape(len(done), m),
            "shipped": shipped,
            "lead": lead,
            "inventory": np.array([d.inventory for d in done]).reshape(
                len(done), 3, self.codec.layout.num_nodes
            ),
        }

    def snapshot(self, window: int | None = None) -> tuple[dict[str, np.ndarray], int] | None:
        """``(arrays, first day)`` of the completed days (``window``: the last ``window``
        only); None when no day is completed. Cheap: take it under the service's lock,
        write it (:meth:`write`) outside."""
        if self.completed == 0:
            return None
        h = self.history()
        skip = 0 if window is None else max(self.completed - int(window), 0)
        return {k: v[skip:] for k, v in h.items()}, self.days[0].day + skip

    def write(self, snap: tuple[dict[str, np.ndarray], int], folder: Path | None = None) -> Path:
        """Write a :meth:`snapshot` as the export-format files into the data folder (or
        ``folder``); writes of one recorder never interleave."""
        from fedinv.federation.private_data import write_org_folder

        h, first = snap
        scenario = self.scenario
        if first:  # a history that starts later (a window, a gap): its dates start there
            import datetime as dt
            from dataclasses import replace

            start = dt.date.fromisoformat(str(scenario.start_date)) + dt.timedelta(days=first)
            scenario = replace(scenario, start_date=start.isoformat())
        out = self.folder if folder is None else Path(folder)
        with self._write_lock:
            end = first + len(h["orders"])
            if folder is None:  # never replace the folder by an older snapshot
                if end < self._folder_end:
                    return out
                self._folder_end = end
            write_org_folder(
                scenario,
                self.codec.layout,
                self.org,
                out,
                h["demand"],
                h["orders"],
                h["shipped"],
                h["lead"],
                h["inventory"],
                None,
            )
        return out

    def flush(self, folder: Path | None = None, window: int | None = None) -> Path | None:
        """Write the completed days now (see :meth:`snapshot`, :meth:`write`); orders
        placed before a window are not matched to their shipments. None: no day yet."""
        snap = self.snapshot(window)
        if snap is None:
            return None
        if folder is None:
            self._written = self.completed
        return self.write(snap, folder)

    def retrain_alerts(self, config: Any = None) -> list[dict[str, Any]]:
        """The Analytics Monitor's demand ``retrain`` alerts (:func:`fedinv.roles.monitor.
        demand_alerts`: the CUSUMs of the organization's customer nodes and of their
        total) over every day seen; causal, so running it again on a longer history
        raises the same alerts for the earlier days, as an online monitor would."""
        from fedinv.roles.monitor import MonitorConfig, demand_alerts, demand_residuals

        if not self.days:
            return []
        first, lay = self.days[0].day, self.codec.layout
        demand = np.zeros((first + len(self.days), 1, lay.num_nodes))  # the plan from day 0
        demand[first:, 0] = [d.demand for d in self.days]
        z, z_org, _ = demand_residuals({"demand": demand}, self.scenario, lay)
        rows = demand_alerts(z, z_org, lay, [0], config or MonitorConfig())
        return [r for r in rows if r["organization"] == self.org and r["day"] >= first]

    def close(self) -> None:
        self.flush()
        self._journal.close()

    def sync(self) -> None:
        """fsync the journal (the log's own commit is durable; this is the data)."""
        os.fsync(self._journal.fileno())
