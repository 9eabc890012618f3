"""``flower-supernode`` with a shorter wait after a pull that found no message.

Flower 1.42's SuperNode loop (``flwr.supernode.start_client_internal.start_client_internal``)
pulls a message from the SuperLink and, when there is none, calls ``time.sleep(3)``
(no flag sets it). That is up to 3 s per message before an organization even sees a
round's work. ``python -m clients.flower_supernode ARGS`` runs Flower's own
``flower-supernode`` main with ``ARGS`` after one change: in that module, a sleep of
exactly :data:`FLOWER_IDLE_WAIT` s becomes :data:`IDLE_WAIT` s; every other sleep and
everything else in ``time`` is untouched.

This module is the only place that reaches into that private call site. It was read
from Flower :data:`TESTED`; :func:`check_call_site` reads the installed Flower's source
and says what changed if the call site is gone or no longer unique (the patch is then
not applied, with a warning on stderr, and the SuperNode waits Flower's 3 s);
tests/test_deploy_launcher.py runs it on the real installed Flower and fails loudly.
(It lives in ``clients/``: ``fedinv`` never imports Flower; ``fedinv deploy`` only
names this module on the SuperNode's command line.)
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import time
import types

from fedinv.deploy.engine import SUPERNODE_IDLE_WAIT

TESTED = "1.42"
"""The Flower version the call site was read from."""
MODULE = "flwr.supernode.start_client_internal"
FLOWER_IDLE_WAIT = 3
"""Flower's fixed wait (s) after a pull that found no message."""
IDLE_WAIT = SUPERNODE_IDLE_WAIT
"""Our wait (s), :data:`fedinv.deploy.engine.SUPERNODE_IDLE_WAIT`."""
CALL_SITE = re.compile(
    r"if run_id is None:\s*\n(\s*#[^\n]*\n)*\s*time\.sleep\(" + str(FLOWER_IDLE_WAIT) + r"\)"
)
"""The call site in ``start_client_internal``'s loop."""


def flower_version() -> str:
    import flwr

    return str(getattr(flwr, "__version__", "unknown"))


def check_call_site(module: types.ModuleType) -> None:
    """RuntimeError (naming the Flower version) unless ``module`` uses the module ``time``
    and has exactly one sleep of 3 s, ``time.sleep(3)`` in ``start_client_internal``
    after a pull that found no message."""
    where = f"flwr {flower_version()} ({MODULE}, read from flwr {TESTED})"
    if getattr(module, "time", None) is not time:
        raise RuntimeError(f"{where}: the module no longer imports time as `time`")
    calls = len(re.findall(rf"sleep\(\s*{FLOWER_IDLE_WAIT}(\.0*)?\s*\)", inspect.getsource(module)))
    if calls != 1 or not CALL_SITE.search(inspect.getsource(module.start_client_internal)):
        raise RuntimeError(
            f"{where}: start_client_internal no longer waits time.sleep({FLOWER_IDLE_WAIT}) "
            f"once after a pull that found no message ({calls} such calls); "
            "clients/flower_supernode.py must follow the new Flower"
        )


class _Time(types.ModuleType):
    """``time`` as ``start_client_internal`` sees it: ``sleep(3)`` waits ``IDLE_WAIT``."""

    def __init__(self, wait: float):
        super().__init__("time")
        self._wait = wait

    def __getattr__(self, name: str):
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        time.sleep(self._wait if seconds == FLOWER_IDLE_WAIT else seconds)


def patch(wait: float = IDLE_WAIT) -> bool:
    """Apply the shorter wait to the installed Flower; False (and a warning on stderr)
    if its call site is not the one this module knows."""
    module = importlib.import_module(MODULE)
    try:
        check_call_site(module)
    except (RuntimeError, OSError, TypeError) as exc:
        print(f"fedinv: not shortening the SuperNode's idle wait: {exc}", file=sys.stderr)
        return False
    module.time = _Time(wait)
    return True


def main(argv: list[str] | None = None) -> None:
    """Flower's ``flower-supernode`` with ``argv`` (default: this process's), patched."""
    patch()
    from flwr.supernode.cli.flower_supernode import flower_supernode

    sys.argv = ["flower-supernode", *(sys.argv[1:] if argv is None else argv)]
    flower_supernode()


if __name__ == "__main__":
    main()
