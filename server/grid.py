"""A Flower Grid that collects replies with a short pull interval.

Flower 1.42's deployment grid (``flwr.superlink.grid.http_grid``) sleeps a fixed 3 s
between two pulls of a round's replies in ``send_and_receive``; its simulation grid
0.1 s. :class:`PromptGrid` wraps either and implements ``send_and_receive`` with the
public Grid API only: ``push_messages`` once, then ``pull_messages`` every
``pull_interval`` seconds until every reply is in or ``timeout`` passes. Everything
else is the wrapped grid's."""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid

PULL_INTERVAL = 0.1
"""Seconds between two pulls of a round's replies (the run config's ``pull-interval``)."""


class PromptGrid(Grid):
    """``grid`` with ``send_and_receive`` = push, then pull every ``pull_interval`` s."""

    def __init__(self, grid: Grid, pull_interval: float = PULL_INTERVAL):
        if pull_interval <= 0:
            raise ValueError(f"pull-interval must be positive, got {pull_interval}")
        self.inner, self.pull_interval = grid, float(pull_interval)

    def set_run(self, run) -> None:
        self.inner.set_run(run)

    @property
    def run(self):
        return self.inner.run

    def create_message(self, *args, **kwargs) -> Message:
        return self.inner.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def get_nodes(self):
        return self.inner.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.inner.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push ``messages``, then pull their replies until all came or ``timeout`` s
        passed (None: no limit)."""
        messages = list(messages)
        if not messages:
            return []
        waiting = set(self.push_messages(messages))
        del messages
        end = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while waiting:
            got = list(self.pull_messages(waiting))
            replies.extend(got)
            waiting.difference_update(m.metadata.reply_to_message_id for m in got)
            if not waiting or (end is not None and time.monotonic() >= end):
                break
            time.sleep(self.pull_interval)
        return replies
