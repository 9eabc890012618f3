"""``python -m fedinv``: the command line of :mod:`fedinv.cli`."""

from fedinv.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
