"""Numbers for JSON output: NaN and infinities become ``None`` (JSON ``null``), so every
``--json`` document and result file is strict JSON."""

from __future__ import annotations

import json
import math
from typing import Any


def num(x: Any) -> float | None:
    """A float for JSON: NaN, infinities and non-numbers become None (null)."""
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def finite(obj: Any) -> Any:
    """``obj`` (dicts, lists, tuples, floats) with non-finite floats as None (null)."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    if isinstance(obj, float):
        return num(obj)
    return obj


def dump(obj: Any) -> str:
    """Indented strict JSON (a non-finite float is an error: pass it through :func:`num`)."""
    return json.dumps(obj, indent=2, allow_nan=False)
