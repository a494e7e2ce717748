"""Prometheus ``file_sd`` targets: each rank writes its own small JSON file, so a scraper whose
``file_sd_configs`` globs the directory (``files: [DIR/*.json]``) finds every rank without configuration.
Written atomically (temp file and rename: Prometheus never reads half a file), removed at close.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
from pathlib import Path


def target_host(addr: str) -> str:
    """The host a scraper should use: the bound address, or this machine's name for a wildcard bind."""
    if addr in ("", "0.0.0.0", "::"):
        return socket.gethostname()
    return f"[{addr}]" if ":" in addr else addr


def target_file(directory: str | os.PathLike[str], run: str, rank: int) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", run)
    return Path(directory) / f"{safe}-rank{rank}.json"


def write_target(
    directory: str | os.PathLike[str], *, run: str, rank: int, host: str, port: int, job: str = "training"
) -> Path:
    """Write this rank's target group; returns the file's path."""
    path = target_file(directory, run, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Only ``job`` as a target label: the metrics carry ``run`` and ``rank`` themselves, and a target
    # label of the same name would rename theirs to ``exported_run``/``exported_rank``.
    groups = [{"targets": [f"{host}:{port}"], "labels": {"job": job}}]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(groups, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def remove_target(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
