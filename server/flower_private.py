"""The one private method of Flower's strategies that :mod:`server.strategy` uses.

``FedAvg._check_and_log_replies(replies, is_train)`` splits a round's replies into
valid ones and error replies, logs them and checks that the valid ones carry the
records the strategy expects -- what every built-in Flower strategy calls first in its
``aggregate_train``. It is private in Flower 1.2x (read from 1.42); every call goes
through this module, so a Flower that renames or reshapes it fails here with the Flower
version in the message (tests/test_private_api.py checks it on a real strategy)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flwr.app import Message

TESTED = "1.42"
"""The Flower version this method was read from."""


def flower_version() -> str:
    """The installed Flower's version string."""
    import flwr

    return str(getattr(flwr, "__version__", "unknown"))


def check_and_log_replies(
    strategy: Any, replies: Iterable[Message], *, is_train: bool
) -> tuple[list[Message], list[Message]]:
    """``(valid replies, error replies)`` of a round, logged and checked by Flower's
    strategy ``strategy`` (a ``FedAvg`` subclass)."""
    method = getattr(strategy, "_check_and_log_replies", None)
    if method is None:
        raise RuntimeError(
            f"flwr {flower_version()}: {type(strategy).__name__} has no "
            f"_check_and_log_replies (a private method of Flower's FedAvg, read from flwr "
            f"{TESTED}); server/flower_private.py must follow the new Flower"
        )
    out = method(list(replies), is_train=is_train)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise RuntimeError(
            f"flwr {flower_version()}: _check_and_log_replies returned "
            f"{type(out).__name__}, not (valid replies, error replies) as in flwr {TESTED}"
        )
    valid, errors = out
    return list(valid), list(errors)
