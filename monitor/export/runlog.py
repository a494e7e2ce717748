"""The JSONL run log (records declared in ``monitor/schema.py``): append-only, one record a line, flushed at
intervals.

Records are the pydantic models of ``monitor.schema``. The writer never raises into training: a path it cannot
open or write turns logging off, and ``on_error`` (the monitor's error counter and one warning) is told why.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from monitor.schema import record_to_json

log = logging.getLogger("monitor")

# One encoder for every record: json.dumps with options builds a new encoder per call.
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


MAX_PENDING_BYTES = 64 * 2**20  # unwritten log text held while the disk refuses it (a full disk)


class RunLogWriter:
    """Appends to ``path``; writes every ``flush_seconds`` or ``flush_records`` records and on close.

    Lines wait in memory until a flush writes them with ``os.write`` on an ``O_APPEND`` descriptor (no other
    buffer: what a write leaves undone stays pending, so a line is never torn by a failed write). Faults:

    - a write that fails (a full disk, ``ENOSPC``): the lines stay pending and every later flush (and close)
      tries again; the log is never turned off for it. Pending text is bounded by ``max_pending_bytes``:
      records beyond it are dropped and counted (``dropped_records``), said once. One error is counted per
      failing stretch; a line in the log says when writing works again.
    - the file removed under the run (its folder deleted): seen at the next flush (the open file has no name
      any more, or the name is another file); the folder and file are made again, starting with the run's
      ``header`` line (its ``run_start``, given by ``set_header``), and the error is counted.
    - a path that cannot be opened at all when the run starts: the log is off (``enabled`` False), counted.

    ``write`` is the function that writes bytes to a descriptor (``os.write``): a seam for tests of faults
    that cannot be made here, such as a full disk.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        on_error: Callable[[str, BaseException], None] | None = None,
        flush_seconds: float = 5.0,
        flush_records: int = 200,
        max_pending_bytes: int = MAX_PENDING_BYTES,
        write: Callable[[int, bytes], int] = os.write,
    ) -> None:
        self.path = Path(path)
        self._on_error = on_error
        self._flush_seconds = flush_seconds
        self._flush_records = flush_records
        self._max_pending = max_pending_bytes
        self._write = write
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._unflushed = 0
        self._last_flush = time.monotonic()
        self._header: bytes | None = None
        self._failing = False
        self.dropped_records = 0
        self.enabled = True
        try:
            self._fd = self._open()
        except OSError as exc:
            self.enabled = False
            self._report(f"run log open failed for {self.path}: {exc}; run log disabled", exc)

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _report(self, what: str, exc: BaseException) -> None:
        if self._on_error is not None:
            self._on_error(what, exc)

    def set_header(self, record: BaseModel) -> None:
        """The record a recreated file starts with (the run's ``run_start``), written now as well."""
        line = (_encode(record_to_json(record)) + "\n").encode()
        with self._lock:
            self._header = line
        self._append_bytes(line, 1)

    def write(self, record: BaseModel) -> None:
        """Append one schema record (``monitor.schema``)."""
        if not self.enabled:
            return
        self.write_dict(record_to_json(record))

    def write_dicts(self, records: list[dict[str, Any]]) -> None:
        """Append many plain-dict records (step records, at a log tick) under one lock."""
        if not self.enabled or not records:
            return
        try:
            text = "".join(_encode(r) + "\n" for r in records)
        except ValueError:  # NaN or infinity somewhere: fall back to one by one, skipping the bad ones
            for r in records:
                self.write_dict(r)
            return
        self._append_bytes(text.encode(), len(records))

    def write_dict(self, record: dict[str, Any]) -> None:
        """Append one record as a plain dict with the schema's fields (the fast path for step records)."""
        if not self.enabled:
            return
        try:
            line = _encode(record)
        except ValueError as exc:  # NaN or infinity: not JSON; skip the record, keep the log
            self._report("run log record not serialisable", exc)
            return
        self._append_bytes((line + "\n").encode(), 1)

    def _append_bytes(self, data: bytes, records: int) -> None:
        """Queue ``records`` encoded lines; write them when enough records or seconds have passed."""
        with self._lock:
            if not self.enabled:
                return
            if self._pending_bytes + len(data) > self._max_pending:
                if not self.dropped_records:
                    self._report(
                        f"run log: {self.path} could not be written for a while; more than "
                        f"{self._max_pending} bytes wait — records are dropped from here (counted)",
                        OSError("run log pending buffer full"),
                    )
                self.dropped_records += records
                return
            self._pending.append(data)
            self._pending_bytes += len(data)
            self._unflushed += records
            now = time.monotonic()
            if self._unflushed >= self._flush_records or now - self._last_flush >= self._flush_seconds:
                self._flush_locked(now)

    def _flush_locked(self, now: float) -> None:
        """Write what is pending (under the lock). Never raises: a failure leaves the rest pending."""
        self._last_flush = now
        if self._fd is None or not self._pending:
            return
        try:
            self._check_still_there()
            data = b"".join(self._pending)
            done = 0
            try:
                while done < len(data):
                    done += self._write(self._fd, data[done:])
            finally:
                rest = data[done:]
                self._pending = [rest] if rest else []
                self._pending_bytes = len(rest)
            self._unflushed = 0
            if self._failing:
                self._failing = False
                log.warning(
                    "mfu-monitor: run log: writing %s works again; the kept lines are written", self.path
                )
        except OSError as exc:
            if not self._failing:
                self._failing = True
                self._report(
                    f"run log write failed for {self.path}: {exc}; lines are kept and written when it works",
                    exc,
                )

    def _check_still_there(self) -> None:
        """Recreate the file when it was removed (or replaced) under the run, starting with the header."""
        assert self._fd is not None
        try:
            mine = os.fstat(self._fd)
            there = os.stat(self.path)
            if mine.st_nlink > 0 and (mine.st_ino, mine.st_dev) == (there.st_ino, there.st_dev):
                return
        except FileNotFoundError:
            pass
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = None
        self._fd = self._open()  # may raise OSError: the caller keeps the lines pending and retries
        if self._header is not None and not (self._pending and self._pending[0] is self._header):
            self._pending.insert(0, self._header)
            self._pending_bytes += len(self._header)
        self._report(
            f"run log: {self.path} was removed during the run; recreated, starting with run_start",
            FileNotFoundError(str(self.path)),
        )

    def flush(self) -> None:
        with self._lock:
            if self._fd is None and self.enabled and self._pending:
                with contextlib.suppress(OSError):
                    self._fd = self._open()
            self._flush_locked(time.monotonic())

    def close(self) -> None:
        with self._lock:
            self._flush_locked(time.monotonic())
            if self._pending:
                lost = sum(chunk.count(b"\n") for chunk in self._pending)
                self._report(
                    f"run log: {lost} line(s) could not be written to {self.path} before the run closed",
                    OSError("run log lines lost at close"),
                )
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
            self._fd = None
            self.enabled = False
