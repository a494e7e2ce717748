"""Checks for numbers a user types: each bad value becomes an InputError naming the field and the fix."""

from __future__ import annotations

import math

from monitor.errors import InputError


def positive(field: str, value: float | int | None, fix: str | None = None) -> float:
    """``value`` as a float, or an InputError when it is missing, NaN, infinite, zero or negative."""
    if value is None:
        raise InputError(field, "is required", fix or f"pass {field} as a positive number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(
            field, f"{value!r} is not a number", fix or f"pass {field} as a positive number"
        ) from None
    if math.isnan(number):
        raise InputError(field, "is NaN", fix or f"pass {field} as a positive number")
    if math.isinf(number):
        raise InputError(field, "is infinite", fix or f"pass {field} as a finite positive number")
    if number <= 0:
        raise InputError(
            field, f"must be positive, got {value!r}", fix or f"pass {field} as a positive number"
        )
    return number


def positive_int(field: str, value: int | float | None) -> int:
    """A whole number ≥ 1 (layer counts, device counts, parallel sizes)."""
    number = positive(field, value, f"pass {field} as a whole number ≥ 1")
    if number != int(number):
        raise InputError(
            field, f"must be a whole number, got {value!r}", f"pass {field} as a whole number ≥ 1"
        )
    return int(number)


def fraction(field: str, value: float | None) -> float:
    """A utilization in (0, 1]: MFU above 1 is impossible (more FLOPs than the peak), 0 trains nothing."""
    number = positive(field, value, f"pass {field} as a fraction in (0, 1], e.g. 0.4 for 40%")
    if number > 1:
        raise InputError(
            field,
            f"{value!r} is above 1 (more FLOP/s than the device's peak)",
            f"pass {field} as a fraction in (0, 1], e.g. 0.4 for 40%",
        )
    return number
