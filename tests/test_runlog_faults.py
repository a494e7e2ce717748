"""Run-log faults on a real CPU training loop, read back afterwards: nothing is lost that can be kept.

The folder removed under the run is real. A full disk cannot be made here without mounting a filesystem, so
it comes through the writer's one seam, the function that writes bytes (``RunLogWriter(write=...)``)."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from test_export_runlog import _model, _records, _step

from monitor.live.monitor import MFUMonitor


def _monitor(model: Any, opt: Any, log: Path) -> MFUMonitor:
    return MFUMonitor(model, opt, log_path=log, flops_per_token=1.0, run="faults", tick_seconds=0,
                      flush_seconds=0, warmup_steps=0, handle_sigterm=False)  # fmt: skip


class FullDisk:
    """os.write, except while ``full``: then ENOSPC — the first write of a full stretch takes half of what it
    is given (a real full disk takes what fits), so a line is cut in the middle, and later writes fail."""

    def __init__(self, partial: bool = True) -> None:
        self.full = False
        self.partial = partial
        self.cut = False
        self.refused = 0

    def write(self, fd: int, data: bytes) -> int:
        if not self.full:
            self.cut = False
            return os.write(fd, data)
        self.refused += 1
        if self.partial and not self.cut and len(data) > 1:
            self.cut = True
            return os.write(fd, data[: len(data) // 2])  # a short write; the next call fails
        raise OSError(errno.ENOSPC, "No space left on device")


def _full_disk_writes(mon: MFUMonitor, disk: FullDisk) -> None:
    assert mon._run_log is not None
    mon._run_log.writer._write = disk.write  # the seam: a full disk cannot be made here


def test_the_log_folder_removed_mid_run_is_recreated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "runs"
    log = folder / "run.jsonl"
    model, opt = _model()
    mon = _monitor(model, opt, log)
    with mon:
        for i in range(20):
            _step(model, opt)
            if i == 9:
                shutil.rmtree(folder)  # steps 0..9 go with it
    records = _records(log)
    assert records[0].event == "run_start" and records[0].run == "faults"
    assert [r.step for r in records if r.event == "step"] == list(range(10, 20))
    assert records[-1].event == "run_end" and records[-1].steps == 20
    assert mon.errors == 1
    assert sum("was removed during the run" in r.getMessage() for r in caplog.records) == 1


def test_a_full_disk_then_freed_loses_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = tmp_path / "run.jsonl"
    model, opt = _model()
    disk = FullDisk()
    mon = _monitor(model, opt, log)
    _full_disk_writes(mon, disk)
    with mon:
        for i in range(120):
            disk.full = 60 <= i < 80
            _step(model, opt)
    assert disk.refused > 0
    lines = log.read_text().splitlines()
    records = _records(log)  # every line whole: the short writes were completed later
    assert len(records) == len(lines)
    assert records[0].event == "run_start" and records[-1].event == "run_end"
    assert [r.step for r in records if r.event == "step"] == list(range(120))
    assert mon.errors == 1  # one failing stretch
    assert any("works again" in r.getMessage() for r in caplog.records)


def test_a_full_disk_at_the_first_write_keeps_run_start(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    model, opt = _model()
    disk = FullDisk()
    disk.full = True
    mon = _monitor(model, opt, log)
    _full_disk_writes(mon, disk)
    with mon:
        for i in range(10):
            disk.full = i < 5
            _step(model, opt)
    records = _records(log)
    assert records[0].event == "run_start"
    assert [r.step for r in records if r.event == "step"] == list(range(10))
    assert records[-1].event == "run_end"


def test_a_disk_full_until_the_end_says_what_was_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "run.jsonl"
    model, opt = _model()
    disk = FullDisk()
    mon = _monitor(model, opt, log)
    _full_disk_writes(mon, disk)
    with mon:
        for i in range(6):
            disk.full = i >= 3
            _step(model, opt)
    assert mon.snapshot().steps == 6  # training went on
    assert any("could not be written" in r.getMessage() and "before the run closed" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    kept = [line for line in log.read_text().splitlines() if line.endswith("}")]
    assert '"event":"run_start"' in kept[0]


def test_pending_lines_are_bounded(tmp_path: Path) -> None:
    from monitor.export.runlog import RunLogWriter

    disk = FullDisk(partial=False)
    disk.full = True
    errors: list[str] = []
    writer = RunLogWriter(tmp_path / "run.jsonl", flush_records=1, max_pending_bytes=1000,
                          write=disk.write, on_error=lambda what, exc: errors.append(what))  # fmt: skip
    for i in range(100):
        writer.write_dict({"event": "step", "step": i, "pad": "x" * 40})
    assert writer.dropped_records > 0 and writer._pending_bytes <= 1000
    assert sum("dropped" in e for e in errors) == 1
