"""Event-triggered signals between agents (docs/roles.md): a small message sent only when
a threshold is crossed, and a Coordination Node that acts on them instead of reading
every peer every day.

A :class:`Signal` is one message: day, sender, receiver, kind, the value that crossed
and the threshold. Kinds (:data:`SIGNAL_KINDS`):

  * ``stockout_risk`` -- a node's projected stock (the Coordination Node's ``y``,
    :mod:`fedinv.roles.coordination`) falls below ``threshold x mu``, sent to each
    linked peer on the day it crosses (not again until it has recovered);
  * ``offer`` -- a peer that can spare stock answers a ``stockout_risk`` with what it
    offers (one message per answering peer);
  * ``demand_deviation`` -- a customer node's demand is more than ``k`` standard
    deviations off its plan (:func:`fedinv.roles.monitor.demand_residuals`), sent to its
    supplier on the day it first is (:func:`demand_signals`);
  * ``outage_notice`` -- a lane's supply enters an announced outage, sent to the buyer
    (:func:`outage_signals`).

:class:`SignalledCoordination` moves stock only on the day a ``stockout_risk`` signal is
sent, with the offers it gets, and counts every message in ``Decision.info["messages"]``
(``[B]`` per day; :func:`fedinv.sim.run.run_records` keeps it as ``info.messages``).
The daily-sharing node (:class:`fedinv.roles.coordination.Coordinated`) counts one
message per linked node and day.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedinv.model.layout import Layout
from fedinv.roles.coordination import (
    BalanceConfig,
    BalanceRule,
    Coordinated,
    coordinated_factory,
)
from fedinv.sim.simulator import Decision, State

SIGNAL_KINDS = ("stockout_risk", "offer", "demand_deviation", "outage_notice")
NODE_RULES = ("none", "balance", "signalled")
"""Coordination Nodes a study row may put around its ordering policy: none, the
daily-sharing ``balance`` node (:class:`~fedinv.roles.coordination.Coordinated`) or the
``signalled`` one (:class:`SignalledCoordination`), both with the balancing rule."""


def node_class(rule: str) -> Callable[[Any, BalanceRule], Any]:
    """The node class of ``rule`` (``balance`` or ``signalled``)."""
    if rule == "balance":
        return Coordinated
    if rule == "signalled":
        return SignalledCoordination
    raise ValueError(f"unknown coordination {rule!r}; choose balance or signalled")


def node_factory(
    factory: Callable[[Layout], Any], rule: str, config: BalanceConfig | None = None
) -> Callable[[Layout], Any]:
    """``factory`` (layout -> ordering policy) with the Coordination Node ``rule``
    (:data:`NODE_RULES`; ``none`` returns ``factory``)."""
    if rule in ("none", "balance"):
        return coordinated_factory(factory, rule, config)
    cls = node_class(rule)
    return lambda layout: cls(factory(layout), BalanceRule(layout, config))


@dataclass(frozen=True)
class Signal:
    """One message between agents (units of ``value`` and ``threshold`` by kind: units
    of projected stock, units offered, standard deviations, or 1 for a notice)."""

    day: int
    replication: int
    sender: str
    receiver: str
    kind: str
    value: float
    threshold: float


def rising(flag: np.ndarray) -> np.ndarray:
    """``[D, ...]`` boolean -> true on the days a flag turns on (threshold crossings)."""
    before = np.concatenate([np.zeros_like(flag[:1]), flag[:-1]])
    return flag & ~before


def demand_signals(z: np.ndarray, k: float = 3.0) -> np.ndarray:
    """``demand_deviation`` messages ``[D, B, N]`` (0/1): ``|z| > k`` where it was not
    the day before (``z`` the standardized demand residuals ``[D, B, N]``)."""
    return rising(np.abs(z) > k).astype(float)


def outage_signals(alert: np.ndarray) -> np.ndarray:
    """``outage_notice`` messages ``[B, D, M]`` (0/1) from the announced-outage flags
    (:attr:`fedinv.sim.exogenous.Exogenous.alert`, ``[B, D, M]``): its first day."""
    return rising(np.moveaxis(alert > 0, 1, 0)).astype(float).transpose(1, 0, 2)


class SignalledCoordination:
    """The Coordination Node driven by signals: a node whose projection crosses below
    the threshold sends ``stockout_risk`` to its linked peers; the peers that can spare
    stock answer with an ``offer``; stock moves that day by the rule of
    :class:`~fedinv.roles.coordination.BalanceRule`, to the signalling nodes only.
    ``log``: keep every :class:`Signal` in :attr:`signals` (batch row as replication)."""

    def __init__(self, base: Any, rule: BalanceRule, log: bool = False):
        self.base, self.rule, self.log = base, rule, log
        self.needs_confirmations = bool(getattr(base, "needs_confirmations", False))
        """The inner policy's: the run helpers switch the Supplier Interface on for it."""
        self.name = f"{getattr(base, 'name', type(base).__name__)}+balance-signals"
        self._at_risk: np.ndarray | None = None
        self.signals: list[Signal] = []

    def act(self, state: State) -> Decision:
        rule = self.rule
        need, spare = rule.needs(state)
        at_risk = need > 0.0
        if state.day == 0 or self._at_risk is None or self._at_risk.shape != at_risk.shape:
            self._at_risk = np.zeros_like(at_risk)
        crossed = at_risk & ~self._at_risk
        self._at_risk = at_risk
        offers = rule.offers(spare) * ((crossed @ rule._dst.T) > 0)  # [B, T]
        moves = rule.transfers(state, receivers=crossed)
        peers = rule._src.T @ rule._dst  # [N, N] 1 where a link j -> i exists (as [j, i])
        risk_messages = (crossed * ((peers.T > 0).sum(axis=1))).sum(axis=1)
        messages = risk_messages + (offers > 0).sum(axis=1)
        if self.log:
            self._log(state.day, crossed, need, offers)
        d = self.base.act(rule.view(state, moves))
        if not isinstance(d, Decision):
            d = Decision(np.asarray(d, float))
        if d.transfers is not None and rule.layout.num_transfers:
            moves = moves + np.maximum(np.nan_to_num(np.asarray(d.transfers, float)), 0.0)
        info = dict(d.info or {})
        info["messages"] = messages.astype(float)
        return Decision(d.orders, moves if rule.layout.num_transfers else d.transfers, info)

    def _log(self, day: int, crossed: np.ndarray, need: np.ndarray, offers: np.ndarray) -> None:
        lay, ids = self.rule.layout, self.rule.layout.node_ids
        thr = self.rule.config.threshold
        for b, i in zip(*np.nonzero(crossed), strict=True):
            for t in np.flatnonzero(lay.transfer_dst == i):
                self.signals.append(
                    Signal(
                        day,
                        int(b),
                        ids[i],
                        ids[lay.transfer_src[t]],
                        "stockout_risk",
                        float(-need[b, i]),
                        thr,
                    )
                )
        for b, t in zip(*np.nonzero(offers > 0), strict=True):
            self.signals.append(
                Signal(
                    day,
                    int(b),
                    ids[lay.transfer_src[t]],
                    ids[lay.transfer_dst[t]],
                    "offer",
                    float(offers[b, t]),
                    0.0,
                )
            )
