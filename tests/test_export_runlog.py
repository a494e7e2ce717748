"""The JSONL run log: schema of every record, append-only, flushed on close, SIGTERM, exceptions; alerts."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import TypeAdapter
from torch import nn

from monitor.live.alert import AlertEvent
from monitor.live.monitor import MFUMonitor
from monitor.schema import LogRecord

torch.set_num_threads(1)
RECORD = TypeAdapter(LogRecord)


def _model() -> tuple[nn.Module, torch.optim.Optimizer]:
    model = nn.Sequential(nn.Embedding(20, 8), nn.Linear(8, 20))
    return model, torch.optim.SGD(model.parameters(), lr=0.01)


def _step(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    model(torch.randint(0, 20, (2, 6))).float().mean().backward()
    opt.step()
    opt.zero_grad()


def _records(path: Path) -> list[Any]:
    return [RECORD.validate_python(json.loads(line)) for line in path.read_text().splitlines()]


def test_every_record_follows_the_schema(tmp_path: Path) -> None:
    log = tmp_path / "runs" / "run.jsonl"
    model, opt = _model()
    kw: dict[str, Any] = {
        "flops_per_token": 500.0,
        "peak_flops": 1e12,
        "warmup_steps": 1,
        "handle_sigterm": False,
    }
    with MFUMonitor(model, opt, log_path=log, run="schema", log_every=4, **kw):
        for _ in range(10):
            _step(model, opt)
    records = _records(log)
    assert records[0].event == "run_start" and records[-1].event == "run_end"
    start, end = records[0], records[-1]
    assert (start.run, start.rank, start.world_size) == ("schema", 0, 1)
    assert start.flops_per_token == 500.0 and start.peak_flops_per_second == 1e12 and start.dtype == "fp32"
    steps = [r for r in records if r.event == "step"]
    assert [r.step for r in steps] == list(range(10))
    for r in steps:
        assert r.tokens == 12 and r.model_flops == 12 * 500.0
        assert r.mfu == pytest.approx(r.model_flops / r.step_seconds / 1e12)
    times = [r.time for r in steps]
    assert times == sorted(times)
    assert end.steps == 10 and end.tokens == 120 and end.reason == "closed" and end.errors == 0


def test_log_is_append_only(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    for name in ("first", "second"):
        model, opt = _model()
        with MFUMonitor(model, opt, log_path=log, run=name, flops_per_token=1.0, handle_sigterm=False):
            _step(model, opt)
    starts = [r.run for r in _records(log) if r.event == "run_start"]
    assert starts == ["first", "second"]


def test_exception_in_training_closes_the_log_with_the_reason(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    model, opt = _model()
    mon = MFUMonitor(model, opt, log_path=log, flops_per_token=1.0, handle_sigterm=False)
    with pytest.raises(ValueError, match="data"), mon:
        _step(model, opt)
        raise ValueError("bad data")
    end = _records(log)[-1]
    assert end.event == "run_end" and end.reason == "exception: ValueError" and end.steps == 1


def test_unwritable_log_path_is_counted_and_training_continues(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    model, opt = _model()
    with MFUMonitor(
        model, opt, log_path=blocker / "run.jsonl", flops_per_token=1.0, handle_sigterm=False
    ) as mon:
        for _ in range(3):
            _step(model, opt)
        snap = mon.snapshot()
    assert snap.steps == 3 and snap.errors == 1
    assert sum("run log" in r.getMessage() for r in caplog.records) == 1


def test_low_mfu_alert_fires_once_per_episode(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    events: list[AlertEvent] = []
    model, opt = _model()
    kw: dict[str, Any] = {
        "flops_per_token": 1.0,
        "peak_flops": 1e15,
        "warmup_steps": 0,
        "handle_sigterm": False,
    }
    with MFUMonitor(
        model,
        opt,
        log_path=log,
        alert_below=0.25,
        alert_after=0.0,
        on_alert=events.append,
        tick_seconds=0,
        **kw,
    ) as mon:
        for _ in range(6):
            _step(model, opt)
        assert mon.snapshot().alert_firing
    assert [e.state for e in events] == ["firing"]
    assert events[0].mfu < 0.25 and events[0].threshold == 0.25
    alerts = [r for r in _records(log) if r.event == "alert"]
    assert len(alerts) == 1 and alerts[0].state == "firing" and alerts[0].kind == "mfu_low"


SIGTERM_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, torch
    from torch import nn
    from monitor.live.monitor import MFUMonitor
    torch.set_num_threads(1)
    model = nn.Sequential(nn.Embedding(20, 8), nn.Linear(8, 20))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = MFUMonitor(model, opt, log_path=sys.argv[1], flops_per_token=1.0, run="term")
    for i in range(100):
        model(torch.randint(0, 20, (2, 6))).float().mean().backward()
        opt.step()
        opt.zero_grad()
        if i == 6:
            os.kill(os.getpid(), signal.SIGTERM)
    print("not reached")
    """
)


@pytest.mark.slow
def test_sigterm_flushes_the_log_and_still_terminates(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    script = tmp_path / "train.py"
    script.write_text(SIGTERM_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(log)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGTERM, proc.stderr  # the default action still runs after the flush
    assert "not reached" not in proc.stdout
    records = _records(log)
    assert records[-1].event == "run_end" and records[-1].reason == "sigterm"
    assert len([r for r in records if r.event == "step"]) == 7


GRACEFUL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    import torch
    from torch import nn
    from monitor import MFUMonitor

    stop = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))  # a graceful shutdown
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(20, 8), nn.Linear(8, 20))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = MFUMonitor(model, opt, log_path=sys.argv[1], flops_per_token=1.0, run="graceful", tick_seconds=60)
    steps_after = 0
    for i in range(30):
        model(torch.randint(0, 20, (2, 6))).float().mean().backward()
        opt.step()
        opt.zero_grad()
        if i == 19:
            os.kill(os.getpid(), signal.SIGTERM)
        if stop:
            steps_after += 1
            if steps_after == 2:
                # the step after the signal wrote and flushed the log: it is on disk before exit
                with open(sys.argv[1]) as f:
                    print("on disk:", sum('"event":"step"' in line for line in f))
    print("trained", i + 1, "handler ran", len(stop))
    """
)


@pytest.mark.slow
def test_a_graceful_sigterm_handler_keeps_the_run_counting(tmp_path: Path) -> None:
    """The program's own SIGTERM handler trains 10 more steps: all 30 steps are logged, the steps before the
    signal are on disk right after it, and the run ends at exit with reason sigterm."""
    log = tmp_path / "run.jsonl"
    script = tmp_path / "train.py"
    script.write_text(GRACEFUL_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(log)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "trained 30 handler ran 1" in proc.stdout
    on_disk = int(proc.stdout.split("on disk:")[1].split()[0])
    assert on_disk >= 20  # flushed at the first step after the signal (tick_seconds=60: no timed tick did it)
    records = _records(log)
    assert [r.step for r in records if r.event == "step"] == list(range(30))
    assert records[-1].event == "run_end" and records[-1].reason == "sigterm" and records[-1].steps == 30
