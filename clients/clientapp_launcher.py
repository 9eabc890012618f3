"""An organization's pre-imported ClientApp launcher: ``python -m clients.clientapp_launcher
serve --socket PATH`` (started and supervised by ``fedinv deploy node``).

It imports what a cold ``flwr-clientapp`` spends its start on (Flower's SuperNode
command line and ClientApp runtime, numpy and grpc, with one BLAS thread) once, then
runs :func:`fedinv.deploy.launcher.serve`, whose forked children become Flower's real
``flwr_clientapp()`` with the argv of the ``flwr-clientapp`` shim that asked. The
protocol, fork safety, fallback and security are in :mod:`fedinv.deploy.launcher`; this
module only holds the Flower imports (``fedinv`` never imports Flower)."""

from __future__ import annotations

import argparse
import gc
import sys

from fedinv.deploy.launcher import Child, become_clientapp, serve, single_threaded_blas


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clients.clientapp_launcher")
    parser.add_argument("action", choices=["serve"])
    parser.add_argument("--socket", required=True)
    args = parser.parse_args(argv)
    single_threaded_blas()
    import flwr.app  # noqa: F401
    import flwr.clientapp  # noqa: F401
    import flwr.supernode.runtime.run_clientapp  # noqa: F401
    import grpc  # noqa: F401  # its import starts no thread; a channel would
    import numpy  # noqa: F401
    from flwr.supernode.cli.flwr_clientapp import flwr_clientapp

    gc.freeze()  # the children share these pages (copy-on-write) and never scan them
    try:
        serve(args.socket)
    except Child as child:
        become_clientapp(child, flwr_clientapp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
