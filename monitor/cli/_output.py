"""Shared output helpers for the CLI: JSON on stdout, rich tables for people."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from rich.console import Console


def _clean(value: Any) -> Any:
    """JSON has no NaN or infinity: write null for them rather than emit invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "model_dump"):
        return _clean(value.model_dump(mode="json"))
    return value


def print_json(obj: Any) -> None:
    """One JSON object on stdout (the `--json` contract of every command)."""
    json.dump(_clean(obj), sys.stdout, indent=2, allow_nan=False)
    sys.stdout.write("\n")


def console() -> Console:
    return Console(highlight=False)


def add_json_flag(parser: Any) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
