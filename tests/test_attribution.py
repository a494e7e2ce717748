"""Why is MFU low: the split of 1 - MFU into measured causes, with known answers.

Pure math first (monitor.figures.attribution), then the live monitor on real tiny models: a data loader that
sleeps a known time (input wait), batches with known padding, a fake NVML whose clock drops (throttling, the
one thing faked), checkpointed layers against FlopCounterMode's extra FLOPs (recomputation); plus the monitor
API additions the integrations use (resume(), step(seq_len=)). Stragglers: tests/test_attribution_dist.py.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from fakes import FakeGpuBackend, fake_device
from prometheus_client import CollectorRegistry
from torch import nn
from torch.utils.checkpoint import checkpoint
from torch.utils.flop_counter import FlopCounterMode

from monitor.export.terminal import render
from monitor.figures.attribution import GAP_PARTS, LABELS, attribute, clock_ratio, verdict
from monitor.hardware.nvml import Telemetry
from monitor.live.monitor import MFUMonitor

torch.set_num_threads(1)
V, D = 50, 32


def _quiet(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"handle_sigterm": False, "warmup_steps": 0, "window_steps": 200}
    base.update(kw)
    return base


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(V, D)
        self.head = nn.Linear(D, V)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.emb(input_ids))


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, **batch: Any) -> None:
    model(**batch).float().pow(2).mean().backward()
    opt.step()
    opt.zero_grad()


# --- the split itself ------------------------------------------------------------------------------------
def test_causes_and_unexplained_sum_to_the_gap_exactly() -> None:
    # two steps of 1 s and 2 s on a 100 FLOP/s device: capacity 300 FLOPs
    loss = attribute(
        [1.0, 2.0],
        100.0,
        [30.0, 60.0],
        hardware_flops=[40.0, 80.0],
        input_wait=[0.1, 0.5],
        straggler_wait=[0.2, 0.0],
        clock_ratio=[0.5, 1.0],
        real_fraction=[0.5, 1.0],
    )
    assert loss is not None
    assert loss.mfu == pytest.approx(90 / 300)
    assert loss.input_wait == pytest.approx(60 / 300)  # (0.1 + 0.5) s x 100
    assert loss.stragglers == pytest.approx(20 / 300)
    assert loss.throttling == pytest.approx((1.0 - 0.1 - 0.2) * 0.5 * 100 / 300)
    assert loss.recomputation == pytest.approx(30 / 300)
    assert loss.padding == pytest.approx(15 / 300)  # half of the first step's 30 FLOPs
    assert loss.useful_mfu == pytest.approx(75 / 300)
    gap = sum(v for k, v in loss.shares().items() if k in GAP_PARTS and v is not None)
    assert gap == pytest.approx(1 - loss.mfu, abs=1e-12)
    assert loss.largest() == ("input_wait", pytest.approx(0.2))
    assert verdict(loss) == "input pipeline: 20% of step time"
    assert set(loss.shares()) == set(LABELS)


def test_unknown_causes_are_none_and_their_time_stays_unexplained() -> None:
    loss = attribute([1.0, 1.0], 10.0, [5.0, 5.0], input_wait=[math.nan, None], clock_ratio=None)
    assert loss is not None
    assert loss.input_wait is None and loss.throttling is None and loss.padding is None
    assert loss.unexplained == pytest.approx(1 - 10 / 20)
    # a partly known cause: the unknown step counts zero
    partial = attribute([1.0, 1.0], 10.0, [5.0, 5.0], input_wait=[0.5, math.nan])
    assert partial is not None and partial.input_wait == pytest.approx(0.25)
    assert attribute([1.0], None, [1.0]) is None  # no peak, no split
    assert attribute([0.0], 1.0, [0.0]) is None
    assert verdict(None).startswith("MFU loss: unknown")


def test_waits_are_clamped_to_their_step() -> None:
    loss = attribute([1.0], 1.0, [0.1], input_wait=[3.0], straggler_wait=[1.0])
    assert loss is not None
    assert loss.input_wait == 1.0 and loss.stragglers == 0.0
    assert loss.unexplained == pytest.approx(-0.1)  # more FLOPs than time left: shown, not hidden


def test_clock_ratio() -> None:
    assert clock_ratio(1.5e9, 2.0e9) == 0.75
    assert clock_ratio(2.5e9, 2.0e9) == 1.0
    assert clock_ratio(None, 2.0e9) is None and clock_ratio(1e9, None) is None


# --- live, known answers ----------------------------------------------------------------------------------
def test_input_wait_share_of_a_sleeping_loader_within_3_points() -> None:
    model = TinyLM()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sleep = 0.03
    slept = 0.0
    ends: list[float] = []
    with MFUMonitor(model, opt, **_quiet(flops_per_token=100.0, peak_flops=1e9, warmup_steps=1)) as mon:
        for i in range(12):
            t0 = time.perf_counter()
            time.sleep(sleep)  # the data loader
            if i > 0:  # step 0 is warm-up (its time starts at its first forward)
                slept += time.perf_counter() - t0
            batch = torch.randint(0, V, (4, 16))
            _train_step(model, opt, input_ids=batch)
            ends.append(time.perf_counter())
        snap = mon.snapshot()
    expected = slept / (ends[-1] - ends[0])  # measured by the test itself, around the sleeps
    assert snap.mfu_loss is not None and snap.mfu_loss.input_wait is not None
    assert snap.mfu_loss.input_wait == pytest.approx(expected, abs=0.03)
    assert snap.mfu_loss.input_wait > 0.5  # the loader dominates this loop
    assert verdict(snap.mfu_loss).startswith("input pipeline: ")


def test_padding_share_is_exact() -> None:
    model = TinyLM()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[0, 7:] = 0
    mask[2, 4:] = 0  # 9 of 30 tokens are padding
    with MFUMonitor(model, opt, **_quiet(flops_per_token=100.0, peak_flops=1e9)) as mon:
        for _ in range(4):
            _train_step(model, opt, input_ids=torch.randint(0, V, (3, 10)), attention_mask=mask)
        snap = mon.snapshot()
    loss = snap.mfu_loss
    assert loss is not None and snap.mfu is not None
    assert loss.padding == pytest.approx(snap.mfu * 9 / 30, rel=1e-12)
    assert loss.useful_mfu == pytest.approx(snap.mfu * 21 / 30, rel=1e-12)


def _manual_monitor(backend: FakeGpuBackend, registry: CollectorRegistry, **kw: Any) -> MFUMonitor:
    return MFUMonitor(
        None, **_quiet(flops_per_token=100.0, peak_flops=1e9, gpu_backend=backend, gpu_index=0,
                       registry=registry, **kw)
    )  # fmt: skip


def test_throttling_share_from_a_fake_nvml_clock_drop_is_exact() -> None:
    backend = FakeGpuBackend([fake_device("Fake GPU", max_sm_clock_mhz=2000.0)])
    backend.set_telemetry(0, Telemetry(sm_clock_hz=2.0e9, max_sm_clock_hz=2.0e9))
    registry = CollectorRegistry()
    mon = _manual_monitor(backend, registry)
    try:
        at_start = len(backend.calls)  # GPM's first sample, taken when the monitor starts
        for _ in range(5):
            mon.step(tokens=64, seq_len=16)  # manual mode, no forward: input wait and stragglers unknown
        calls = len(backend.calls)
        assert calls == at_start  # no NVML call on the step path

        def share(cause: str) -> float | None:
            return registry.get_sample_value(
                "training_mfu_loss_ratio", {"run": mon.run, "rank": "0", "cause": cause}
            )

        assert share("throttling") == 0.0  # full clock
        backend.set_telemetry(0, Telemetry(sm_clock_hz=1.4e9, max_sm_clock_hz=2.0e9))
        assert share("throttling") == pytest.approx(0.3, abs=1e-12)  # read at this scrape
        assert share("input_wait") is None and share("stragglers") is None and share("padding") is None
        mfu = registry.get_sample_value("training_mfu_ratio", {"run": mon.run, "rank": "0"})
        gap = sum(v for c in GAP_PARTS if (v := share(c)) is not None)
        assert gap == pytest.approx(1 - mfu, abs=1e-9)
        # a clock reported without its maximum uses the device's (NVML device info)
        backend.set_telemetry(0, Telemetry(sm_clock_hz=1.0e9))
        assert share("throttling") == pytest.approx(0.5, abs=1e-12)
    finally:
        mon.close()


def test_run_log_step_records_carry_what_the_offline_split_needs(tmp_path: Path) -> None:
    backend = FakeGpuBackend([fake_device("Fake GPU", max_sm_clock_mhz=2000.0)])
    backend.set_telemetry(0, Telemetry(sm_clock_hz=1.5e9, max_sm_clock_hz=2.0e9))
    model = TinyLM()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    log = tmp_path / "run.jsonl"
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 6:] = 0
    with MFUMonitor(
        model, opt, **_quiet(flops_per_token=100.0, peak_flops=1e9, gpu_backend=backend, gpu_index=0,
                             log_path=log, tick_seconds=0.0)
    ):  # fmt: skip
        for _ in range(3):
            _train_step(model, opt, input_ids=torch.randint(0, V, (2, 8)), attention_mask=mask)
    steps = [r for r in map(json.loads, log.read_text().splitlines()) if r["event"] == "step"]
    assert len(steps) == 3
    for r in steps:
        assert r["sm_clock_ratio"] == 0.75
        assert r["real_tokens"] == 14 and r["tokens"] == 16
        assert r["hardware_flops"] == r["model_flops"]
        assert r["pre_backward_seconds"] is None  # one process: no ranks to wait for, not measured
    assert all(r["input_wait_seconds"] is not None for r in steps[1:])


class Checkpointed(nn.Module):
    """Every layer with FLOPs recomputed in backward (reentrant checkpointing reruns a block's whole
    forward, which is what recompute="full" counts). On the meta device (the monitor's FLOPs measurement) it
    runs plain: model FLOPs never count recomputation."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(V, D)
        blocks = [nn.Sequential(nn.Linear(D, 4 * D), nn.GELU(), nn.Linear(4 * D, D)) for _ in range(2)]
        self.layers = nn.ModuleList([*blocks, nn.Linear(D, V)])
        self.use_checkpoint = True

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(input_ids)
        for layer in self.layers:
            if self.use_checkpoint and x.device.type != "meta":
                x = checkpoint(layer, x, use_reentrant=True)
            else:
                x = layer(x)
        return x


def _step_flops(model: Checkpointed, ids: torch.Tensor, use_checkpoint: bool) -> int:
    model.use_checkpoint = use_checkpoint
    with FlopCounterMode(display=False) as counter:
        model(ids).pow(2).mean().backward()
    model.zero_grad()
    model.use_checkpoint = True
    return int(counter.get_total_flops())


def test_recomputation_share_matches_flopcountermode_extra_flops() -> None:
    model = Checkpointed()
    ids = torch.randint(0, V, (4, 16))
    extra = _step_flops(model, ids, True) - _step_flops(model, ids, False)  # per step of 64 tokens
    assert extra > 0
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    peak = 1e9
    with MFUMonitor(model, opt, **_quiet(peak_flops=peak, recompute="full")) as mon:
        for _ in range(4):
            model(ids).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
        snap = mon.snapshot()
    assert snap.flops_method == "measured (meta)"
    loss = snap.mfu_loss
    assert loss is not None and loss.recomputation is not None and snap.hfu is not None
    # points x capacity (window seconds x peak) = recomputed FLOPs of the window's steps
    recomputed = loss.recomputation * snap.window_seconds * peak
    assert recomputed == pytest.approx(extra * snap.window_steps, rel=1e-9)
    assert loss.recomputation == pytest.approx(snap.hfu - snap.mfu, rel=1e-9)


def test_terminal_view_shows_the_verdict() -> None:
    model = TinyLM()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with MFUMonitor(model, opt, **_quiet(flops_per_token=100.0, peak_flops=1e9)) as mon:
        for _ in range(3):
            time.sleep(0.02)
            _train_step(model, opt, input_ids=torch.randint(0, V, (2, 8)))
        snap = mon.snapshot()
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(render(snap))
    text = console.export_text()
    assert "MFU lost to" in text and "input pipeline:" in text


# --- monitor API additions ---------------------------------------------------------------------------------
def test_resume_keeps_evaluation_out_of_the_next_step() -> None:
    model = TinyLM()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    pause = 0.3
    results = {}
    for use_resume in (False, True):
        with MFUMonitor(model, opt, **_quiet(flops_per_token=100.0, peak_flops=1e9)) as mon:
            for i in range(4):
                _train_step(model, opt, input_ids=torch.randint(0, V, (2, 8)))
                if i == 1:
                    with torch.no_grad():  # an evaluation between steps
                        model(input_ids=torch.randint(0, V, (2, 8)))
                    time.sleep(pause)
                    if use_resume:
                        mon.resume()
            results[use_resume] = mon.snapshot().recent
    slow = results[False][2]
    assert slow.seconds >= pause and (slow.input_wait_seconds or 0) >= pause
    resumed = results[True][2]
    assert resumed.seconds < pause / 3 and (resumed.input_wait_seconds or 0) < pause / 3


def test_resume_mid_step_does_nothing() -> None:
    model = TinyLM()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with MFUMonitor(model, opt, **_quiet(flops_per_token=100.0)) as mon:
        mon.resume()  # before the first step: harmless
        _train_step(model, opt, input_ids=torch.randint(0, V, (2, 8)))
        loss = model(input_ids=torch.randint(0, V, (2, 8))).float().mean()
        time.sleep(0.1)
        mon.resume()  # a forward happened: the step is under way, its clock keeps running
        loss.backward()
        opt.step()
        snap = mon.snapshot()
    assert snap.recent[-1].seconds >= 0.1
    assert mon.errors == 0


def test_manual_step_seq_len_reaches_run_start(tmp_path: Path) -> None:
    from monitor.demo import DemoConfig, DemoGPT, demo_spec

    cfg = DemoConfig()
    model = DemoGPT(cfg)
    log = tmp_path / "run.jsonl"
    mon = MFUMonitor(model, None, **_quiet(spec=demo_spec(cfg), peak_flops=1e12, log_path=log))
    mon.step(tokens=64, seq_len=16)
    mon.close()
    (start,) = [r for r in map(json.loads, log.read_text().splitlines()) if r["event"] == "run_start"]
    assert start["seq_len"] == 16 and start["flops_per_token"] is not None


# --- afterwards: mfu analyze -------------------------------------------------------------------------------
def _logged_run(tmp_path: Path) -> tuple[Path, float]:
    """A monitor run: a sleeping loader, 25% padding, a GPU clock at 75%; returns (log, slept share)."""
    backend = FakeGpuBackend([fake_device("Fake GPU", max_sm_clock_mhz=2000.0)])
    backend.set_telemetry(0, Telemetry(sm_clock_hz=1.5e9, max_sm_clock_hz=2.0e9))
    model = TinyLM()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    log = tmp_path / "run.jsonl"
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[:, 6:] = 0  # 4 of 16 tokens are padding
    slept, ends = 0.0, []
    with MFUMonitor(
        model, opt, **_quiet(flops_per_token=100.0, peak_flops=1e9, gpu_backend=backend, gpu_index=0,
                             log_path=log, tick_seconds=0.0)
    ):  # fmt: skip
        for i in range(12):
            t0 = time.perf_counter()
            time.sleep(0.02)
            if i >= 2:  # analyze --warmup 2 leaves out steps 0 and 1
                slept += time.perf_counter() - t0
            _train_step(model, opt, input_ids=torch.randint(0, V, (2, 8)), attention_mask=mask)
            ends.append(time.perf_counter())
    return log, slept / (ends[-1] - ends[1])


def test_the_monitors_own_tick_is_not_input_wait(tmp_path: Path) -> None:
    """A log tick after every step that takes 30 ms (an on_figures callback that sleeps) and a loader that
    waits for nothing: the tick's time is in the step, not in the input wait of the step after it."""
    model = TinyLM()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    log = tmp_path / "run.jsonl"
    mon = MFUMonitor(
        model, opt, **_quiet(flops_per_token=100.0, peak_flops=1e9, log_path=log, tick_seconds=0.0,
                             on_figures=lambda figures, step: time.sleep(0.03))
    )  # fmt: skip
    with mon:
        for _ in range(8):
            _train_step(model, opt, input_ids=torch.randint(0, V, (2, 8)))
    steps = [r for r in map(json.loads, log.read_text().splitlines()) if r["event"] == "step"][1:]
    assert all(s["step_seconds"] >= 0.03 for s in steps[1:])  # the sleeping tick of the step before
    waits = sorted(s["input_wait_seconds"] for s in steps)
    assert waits[len(waits) // 2] < 0.015  # the loop does nothing between steps: far below the 30 ms tick
    assert mon.snapshot().mfu_loss.input_wait < 0.3  # the tick is most of each step: not an input wait


def test_analyze_splits_a_logged_run(tmp_path: Path) -> None:
    from monitor.analysis.summary import AnalyzeOptions, analyze

    log, slept_share = _logged_run(tmp_path)
    run = analyze([log], AnalyzeOptions(warmup=2, threshold=1.0)).analysis.runs[0]
    loss = run.mfu_loss
    assert loss is not None and run.mfu.overall is not None
    assert loss.mfu == pytest.approx(run.mfu.overall, rel=1e-12)
    assert loss.input_wait == pytest.approx(slept_share, abs=0.03)
    assert loss.padding == pytest.approx(loss.mfu * 4 / 16, rel=1e-9)
    assert loss.stragglers is None  # one rank
    assert loss.throttling == pytest.approx((1 - loss.input_wait) * 0.25, rel=1e-9)
    assert loss.recomputation == 0.0
    parts = [loss.input_wait, loss.throttling, loss.recomputation, loss.unexplained]
    assert sum(p or 0.0 for p in parts) == pytest.approx(1 - loss.mfu, abs=1e-12)
    assert loss.largest == "input_wait" and loss.verdict.startswith("input pipeline: ")
    # every step is below threshold 1.0: the low-MFU split is the same steps'
    assert run.mfu_loss_low_mfu is not None
    assert run.mfu_loss_low_mfu.input_wait == pytest.approx(loss.input_wait, rel=1e-12)
    assert run.low_mfu_episodes and run.low_mfu_episodes[0].mfu_loss is not None


def test_analyze_of_a_log_without_the_fields_says_unknown(tmp_path: Path) -> None:
    from monitor.analysis.summary import AnalyzeOptions, analyze

    log, _ = _logged_run(tmp_path)
    old = tmp_path / "old.jsonl"
    keep = {"event", "time", "run", "rank", "step", "tokens", "step_seconds", "model_flops", "mfu"}
    lines = []
    for record in map(json.loads, log.read_text().splitlines()):
        if record["event"] == "step":
            record = {k: v for k, v in record.items() if k in keep}
        lines.append(json.dumps(record))
    old.write_text("\n".join(lines) + "\n")
    run = analyze([old], AnalyzeOptions(warmup=2)).analysis.runs[0]
    loss = run.mfu_loss
    assert loss is not None and run.mfu.overall is not None
    assert loss.input_wait is None and loss.throttling is None and loss.padding is None
    assert loss.recomputation is None and loss.stragglers is None
    assert loss.unexplained == pytest.approx(1 - run.mfu.overall, abs=1e-12)
    assert loss.largest is None


def test_html_report_shows_the_split(tmp_path: Path) -> None:
    from monitor.analysis.report import render_html
    from monitor.analysis.summary import AnalyzeOptions, analyze

    log, _ = _logged_run(tmp_path)
    result = analyze([log], AnalyzeOptions(warmup=2, threshold=1.0))
    page = render_html(result)
    assert "Where the MFU gap goes" in page and "Where the peak went" in page
    assert "input pipeline (of step time)" in page and "useful MFU" in page
    assert page.count("data:image/png;base64,") == 4  # timeline, split, step times, ranks
