"""JSON for scripts: strict (RFC 8259) output, never the `Infinity`/`NaN` tokens Python's json
writes by default and other parsers (jq, JavaScript, Go) reject. A non-finite number is null."""

from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """`value` with every non-finite float (inf, -inf, nan), at any depth, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """json.dumps of `finite(value)`; raises rather than ever writing Infinity or NaN."""
    return json.dumps(finite(value), allow_nan=False, **kwargs)
