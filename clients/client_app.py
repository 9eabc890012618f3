"""Flower ClientApp: one client per organization, a thin hand-over to its trainer.

The work is in :mod:`fedinv.federation.trainer` (and below it :mod:`fedinv.federation.task`).
This module imports only Flower, numpy and the standard library: Flower starts a fresh
ClientApp process for every message in deployment, and torch, pandas and scipy live in
the organization's long-lived trainer process instead. What it sends back is only the
model's arrays and scalar metrics.

Where the trainer is:
  * deployment (one SuperNode per organization, ``fedinv deploy node``): the node config
    names the trainer's Unix socket (``trainer-socket=PATH``); the trainer was started
    with the organization's data folder and state folder and answers over that socket;
  * simulation: no socket; the trainer runs in this process
    (:class:`fedinv.federation.trainer.TrainerService`), on the folder the node config
    (``data-dir``) or the run config (``data-dir``, partition ``partition-id``) names.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedinv.federation.packing import LAYOUT_KEY, PACKED, pack, parse_layout, unpack
from fedinv.federation.trainer import HEAVY_MODULES, locate

app = ClientApp()
CONNECT_WAIT = 60.0
"""Seconds to wait for a trainer that is (re)starting."""
PROBE_VARIABLE = "FEDINV_CLIENTAPP_PROBE"
"""A folder: if set, each ClientApp process writes there which heavy modules it had
loaded when it replied (tests)."""

_LOCAL = None  # simulation: this process's trainer


def _ask(kind: str, msg: Message, context: Context) -> tuple[dict, dict]:
    content = msg.content
    config = dict(content["config"]) if "config" in content else {}
    arrays = {}
    if "arrays" in content:
        record = content["arrays"]
        arrays = dict(zip(record.keys(), record.to_numpy_ndarrays(), strict=True))
    layout = parse_layout(str(config[LAYOUT_KEY])) if LAYOUT_KEY in config else None
    if layout is not None:  # one packed array on the wire (fedinv.federation.packing)
        arrays = unpack(arrays[PACKED], layout)
    header = {"kind": kind, "run-config": dict(context.run_config), "config": config}
    path = context.node_config.get("trainer-socket")
    if path:
        reply, out = _over_socket(str(path), header, arrays)
    else:
        global _LOCAL
        from fedinv.federation.trainer import TrainerService

        data, state = locate(context.node_config, context.run_config)
        header.update({"data-dir": str(data), "state-dir": str(state)})
        _LOCAL = _LOCAL or TrainerService()
        reply, out = _LOCAL.handle(header, arrays)
    _probe()
    if not reply.get("ok"):
        raise RuntimeError(str(reply.get("error", "the trainer failed")))
    if layout is not None and out:
        out = {PACKED: pack(out, layout)}
    return reply, out


def _over_socket(path: str, header: dict, arrays: dict) -> tuple[dict, dict]:
    from fedinv.federation.wire import request

    deadline = time.monotonic() + CONNECT_WAIT
    while True:
        try:
            return request(path, header, arrays)
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"no trainer answers on {path} (is fedinv deploy node running?)"
                ) from None
            time.sleep(0.2)


def _probe() -> None:
    folder = os.environ.get(PROBE_VARIABLE)
    if folder:
        loaded = sorted(m for m in HEAVY_MODULES if m in sys.modules)
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{os.getpid()}.json").write_text(json.dumps(loaded))


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Local training (DQN or HDPO) from the global weights (and, when the server asks
    with ``local-eval``, the received weights' local cost); replies weights and metrics."""
    reply, weights = _ask("train", msg, context)
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in weights.items()}),
            "metrics": MetricRecord(reply["metrics"]),
        }
    )
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """The global weights' cost on this organization's validation replications."""
    reply, _ = _ask("evaluate", msg, context)
    return Message(content=RecordDict({"metrics": MetricRecord(reply["metrics"])}), reply_to=msg)
