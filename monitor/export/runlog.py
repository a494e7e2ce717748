"""The JSONL run log (records declared in ``monitor/schema.py``): append-only, one record a line, flushed at
intervals.

Records are the pydantic models of ``monitor.schema``. The writer never raises into training: a path it cannot
open or write turns logging off, and ``on_error`` (the monitor's error counter and one warning) is told why.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel

from monitor.schema import record_to_json

# One encoder for every record: json.dumps with options builds a new encoder per call.
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


class RunLogWriter:
    """Appends to ``path``; flushes every ``flush_seconds`` or ``flush_records`` records and on close."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        on_error: Callable[[str, BaseException], None] | None = None,
        flush_seconds: float = 5.0,
        flush_records: int = 200,
    ) -> None:
        self.path = Path(path)
        self._on_error = on_error
        self._flush_seconds = flush_seconds
        self._flush_records = flush_records
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._unflushed = 0
        self._last_flush = time.monotonic()
        self.enabled = True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run
        except OSError as exc:
            self._fail("open", exc)

    def _fail(self, what: str, exc: BaseException) -> None:
        self.enabled = False
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        if self._on_error is not None:
            self._on_error(f"run log {what} failed for {self.path}: {exc}; run log disabled", exc)

    def write(self, record: BaseModel) -> None:
        """Append one schema record (``monitor.schema``)."""
        if self._file is None:
            return
        self.write_dict(record_to_json(record))

    def write_dicts(self, records: list[dict[str, Any]]) -> None:
        """Append many plain-dict records (step records, at a log tick) under one lock."""
        if self._file is None or not records:
            return
        try:
            text = "".join(_encode(r) + "\n" for r in records)
        except ValueError:  # NaN or infinity somewhere: fall back to one by one, skipping the bad ones
            for r in records:
                self.write_dict(r)
            return
        self._append(text, len(records))

    def write_dict(self, record: dict[str, Any]) -> None:
        """Append one record as a plain dict with the schema's fields (the fast path for step records)."""
        if self._file is None:
            return
        try:
            line = _encode(record)
        except ValueError as exc:  # NaN or infinity: not JSON; skip the record, keep the log
            if self._on_error is not None:
                self._on_error("run log record not serialisable", exc)
            return
        self._append(line + "\n", 1)

    def _append(self, text: str, records: int) -> None:
        """Write ``records`` encoded lines; flush when enough records or seconds have passed."""
        with self._lock:
            if self._file is None:
                return
            try:
                self._file.write(text)
                self._unflushed += records
                now = time.monotonic()
                if self._unflushed >= self._flush_records or now - self._last_flush >= self._flush_seconds:
                    self._flush_locked(now)
            except (OSError, ValueError) as exc:
                self._fail("write", exc)

    def _flush_locked(self, now: float) -> None:
        assert self._file is not None
        self._file.flush()
        self._unflushed = 0
        self._last_flush = now

    def flush(self) -> None:
        with self._lock:
            if self._file is None:
                return
            try:
                self._flush_locked(time.monotonic())
            except (OSError, ValueError) as exc:
                self._fail("flush", exc)

    def close(self) -> None:
        with self._lock:
            if self._file is None:
                return
            try:
                self._file.flush()
                self._file.close()
            except (OSError, ValueError) as exc:
                self._file = None
                self._fail("close", exc)
            self._file = None
