"""Validation helpers of the specifications: errors that name the field (no torch)."""

from __future__ import annotations

import math
from typing import Any


class SpecError(ValueError):
    """A specification field is invalid. `field` is the dotted field name, `fix` what to do."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _require(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise SpecError(field, message)


def _positive_int(value: Any, field: str, minimum: int = 1) -> None:
    _require(
        isinstance(value, int) and not isinstance(value, bool), field, f"must be an integer, got {value!r}"
    )
    _require(value >= minimum, field, f"must be >= {minimum}, got {value}")


def _finite(
    value: Any, field: str, lo: float | None = None, hi: float | None = None, lo_open: bool = False
) -> None:
    _require(
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
        field,
        f"must be a finite number, got {value!r}",
    )
    if lo is not None:
        ok = value > lo if lo_open else value >= lo
        _require(ok, field, f"must be {'>' if lo_open else '>='} {lo}, got {value}")
    if hi is not None:
        _require(value <= hi, field, f"must be <= {hi}, got {value}")
