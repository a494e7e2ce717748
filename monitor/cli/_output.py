"""Shared output helpers for the CLI: JSON on stdout, rich tables for people."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

from monitor.errors import InputError


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


PIPE_WIDTH = 160


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """Rich would exit with status 1 itself; the CLI's main ends every command on a closed pipe alike."""
        raise BrokenPipeError


def console() -> Console:
    """Rich output for people. Into a pipe or a file, lines are not wrapped at 80 columns: messages and paths
    stay whole, so that grep and logs see them as printed."""
    return plain_console(_Console(highlight=False))


def plain_console(con: Console) -> Console:
    """``con``, with soft wrapping when it does not write to a terminal (wrapping is for screens)."""
    if not con.is_terminal:
        con.soft_wrap = True
        con.width = max(con.width, PIPE_WIDTH)  # tables at their natural width, not cut to 80 columns
    return con


def add_json_flag(parser: Any) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def check_output(
    path: str | os.PathLike[str], flag: str, inputs: Iterable[str | os.PathLike[str]] = ()
) -> Path:
    """An output file the command will write, checked before any work: not a folder, not one of the files it
    reads (writing it would destroy the input), in a folder that exists and can be written."""
    out = Path(path)
    if out.is_dir():
        raise InputError(flag, f"{out} is a folder", "pass a file name, e.g. report.html")
    if out.exists():
        for given in inputs:
            with contextlib.suppress(OSError):
                if os.path.samefile(given, out):
                    problem = f"{out} is also the input; writing it would overwrite what is read"
                    raise InputError(flag, problem, "choose another output path")
    folder = out.parent
    if not folder.is_dir():
        raise InputError(flag, f"the folder {folder} does not exist", "create it, or choose another path")
    if not os.access(out if out.exists() else folder, os.W_OK):
        raise InputError(flag, f"{out} cannot be written (permission denied)", "choose a path you can write")
    return out


@contextlib.contextmanager
def writing(path: str | os.PathLike[str], flag: str) -> Iterator[None]:
    """Turn a failed write of an output file (a full disk, a read-only filesystem) into one line naming the
    flag."""
    try:
        yield
    except OSError as exc:
        raise InputError(
            flag, f"cannot write {path}: {exc.strerror or exc}", "choose a path on a writable disk with room"
        ) from None
