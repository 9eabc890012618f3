"""Flower strategies that average each role's Q-network by the experience clients
collected for that role (:func:`fedinv.federation.task.role_weighted_average`), log every
round's results and failures, and describe what every reply carried (record names and
types, array shapes, metric names: never values) for an audit of what crossed the wire."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedProx

from fedinv.federation.packing import PACKED, Layout, pack, unpack
from fedinv.federation.server_step import ServerStep
from fedinv.federation.task import role_weighted_average
from server.flower_private import check_and_log_replies


class _RoleWeighted:
    """Mixin over FedAvg / FedProx: role-weighted averaging, ``round_log[round]`` with
    ``results``, ``failures`` and the failed nodes' reasons, ``no_reply`` (nodes sent
    the round's instructions that did not answer before the round's timeout), and
    ``received[round]``: a :func:`describe_reply` of every reply of the round.

    Fat rounds (``eval_in_train``, with client evaluation on): the train message asks
    every client (``local-eval``) to evaluate the weights it received — the aggregate of
    the round before — on its own validation replications before it trains, and to send
    that cost in its train reply; ``local_eval[round]`` then holds the mean for the
    aggregate of ``round`` (weighted by the clients' evaluation days), and Flower's
    separate evaluate exchange is skipped except after ``last_round`` (whose
    aggregate no later train message evaluates)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.round_log: dict[int, dict] = {}
        self.received: dict[int, list[dict]] = {}
        self.local_eval: dict[int, dict[str, float]] = {}
        self.eval_in_train = False
        self.last_round = 0
        self.layout: Layout | None = None
        """Set: the weights travel packed in one array of this layout."""
        self.server_step: ServerStep | None = None
        """Set: the server's step and acceptance rule on the average
        (:mod:`fedinv.federation.server_step`)."""
        self._sent = 0
        self._global: dict[str, np.ndarray] = {}

    @property
    def replies_carry_eval(self) -> bool:
        """Whether train replies carry the clients' evaluation of the weights they
        received (``eval_in_train`` with evaluation on): "fat" rounds."""
        return self.eval_in_train and self.fraction_evaluate > 0

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._global = self._named(arrays)
        if self.replies_carry_eval:
            config = ConfigRecord({**dict(config), "local-eval": True})
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self._sent = len(messages)
        return messages

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self.replies_carry_eval and server_round != self.last_round:
            return []  # the next round's train replies carry this evaluation
        return super().configure_evaluate(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        self.received[server_round] = [describe_reply(m, "train") for m in replies]
        valid, errors = check_and_log_replies(self, replies, is_train=True)
        self.round_log[server_round] = {
            "results": len(valid),
            "failures": len(errors),
            "no_reply": max(self._sent - len(replies), 0),
            "failure_reasons": "; ".join(_reason(m) for m in errors),
        }
        self._collect_local_eval(server_round - 1, valid)
        if not valid:
            return None, None
        # a fixed order (by content), so the floating-point sums do not depend on the
        # order replies arrived in: a resumed run reproduces an uninterrupted one
        contents = sorted((m.content for m in valid), key=_fingerprint)
        updates, counts = [], []
        for content in contents:
            updates.append(self._named(content["arrays"]))
            metrics = content["metrics"]
            counts.append(
                {
                    k.removeprefix("examples-"): float(v)
                    for k, v in metrics.items()
                    if k.startswith("examples-")
                }
            )
        averaged = role_weighted_average(updates, counts, self._global)
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)
        log = self.round_log[server_round]
        if self.server_step is not None:
            reports = [
                float(c["metrics"]["local-cost-per-day"])
                for c in contents
                if "local-cost-per-day" in c["metrics"]
            ]
            averaged, decided = self.server_step.next_global(self._global, averaged, reports)
            log.update(decided)
        for key, value in metrics.items():
            if not key.startswith(("examples-", "local-")):
                log[f"train-{key}" if not key.startswith("train-") else key] = float(value)
        if self.layout is not None:
            return ArrayRecord({PACKED: Array(pack(averaged, self.layout))}), metrics
        return ArrayRecord({k: Array(v) for k, v in averaged.items()}), metrics

    def _named(self, record: ArrayRecord) -> dict[str, np.ndarray]:
        """The named arrays of a record (unpacked if the run packs them)."""
        if self.layout is not None:
            return unpack(record[PACKED].numpy(), self.layout)
        return dict(zip(record.keys(), record.to_numpy_ndarrays(), strict=True))

    def _collect_local_eval(self, evaluated_round: int, valid: list[Message]) -> None:
        """The mean local cost of the weights the round's train messages carried (the
        aggregate of ``evaluated_round``), weighted by each client's evaluation days."""
        pairs = [
            (
                float(m.content["metrics"]["local-cost-per-day"]),
                float(m.content["metrics"].get("local-eval-examples", 1.0)),
            )
            for m in valid
            if "local-cost-per-day" in m.content["metrics"]
        ]
        total = sum(w for _, w in pairs)
        if pairs and total > 0:
            self.local_eval[evaluated_round] = {
                "local-cost-per-day": sum(c * w for c, w in pairs) / total
            }

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        replies = list(replies)
        self.received.setdefault(server_round, []).extend(
            describe_reply(m, "evaluate") for m in replies
        )
        metrics = super().aggregate_evaluate(server_round, replies)
        if metrics is not None:
            log = self.round_log.setdefault(server_round, {})
            log.update({k: float(v) for k, v in metrics.items() if k != "num-examples"})
        return metrics


def describe_reply(msg: Message, phase: str) -> dict:
    """What a reply carried, without any value: its sender node, and per record its kind
    and for arrays their shapes and dtypes, for metrics and configs the names and types of
    their values; an error reply's code."""
    out: dict = {"phase": phase, "node": int(msg.metadata.src_node_id)}
    if msg.has_error():
        out["error"] = int(msg.error.code)
        return out
    records: dict = {}
    for name, record in msg.content.items():
        kind = type(record).__name__
        if isinstance(record, ArrayRecord):
            fields = {k: [list(a.shape), str(a.dtype)] for k, a in record.items()}
        else:
            fields = {k: type(v).__name__ for k, v in record.items()}
        records[name] = {"kind": kind, "fields": fields}
    out["records"] = records
    return out


def _reason(msg: Message, keep: int = 400) -> str:
    """A failed reply's reason, without terminal colours; its end (the exception)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(msg.error.reason)).replace("\n", " ")
    return text if len(text) <= keep else "..." + text[-keep:]


def _fingerprint(content) -> str:
    digest = hashlib.sha256()
    for array in content["arrays"].to_numpy_ndarrays():
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


class RoleFedAvg(_RoleWeighted, FedAvg):
    """FedAvg with role-weighted averaging."""


class RoleFedProx(_RoleWeighted, FedProx):
    """FedProx (clients add the proximal term) with role-weighted averaging."""


def make_strategy(name: str, proximal_mu: float = 0.0, **kwargs) -> RoleFedAvg:
    """``fedavg`` or ``fedprox`` with the given fractions and minimum node counts."""
    if name == "fedavg":
        return RoleFedAvg(**kwargs)
    if name == "fedprox":
        return RoleFedProx(proximal_mu=proximal_mu, **kwargs)
    raise ValueError(f"unknown strategy {name!r}; choose fedavg or fedprox")


def with_differential_privacy(
    strategy: RoleFedAvg, noise_multiplier: float, clipping_norm: float, num_sampled_clients: int
):
    """Flower's server-side fixed-clipping DP around ``strategy``: each client's update
    is clipped to ``clipping_norm`` (L2) before aggregation and Gaussian noise of standard
    deviation ``noise_multiplier x clipping_norm / num_sampled_clients`` is added."""
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping

    return DifferentialPrivacyServerSideFixedClipping(
        strategy,
        noise_multiplier=noise_multiplier,
        clipping_norm=clipping_norm,
        num_sampled_clients=num_sampled_clients,
    )
