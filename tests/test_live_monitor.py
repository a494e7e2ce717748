"""MFUMonitor end to end on CPU with real tiny models: token counting, MFU against FlopCounterMode, faults."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from monitor.demo import DemoConfig, DemoGPT, demo_spec
from monitor.errors import InputError
from monitor.live.monitor import MFUMonitor
from monitor.live.timing import CudaEventTimer

torch.set_num_threads(1)

V, D = 50, 16


class TinyLM(nn.Module):
    """Embedding + linear head; accepts ``input_ids``/``attention_mask`` like a Hugging Face model."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(V, D)
        self.head = nn.Linear(D, V)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self.emb(input_ids) if inputs_embeds is None else inputs_embeds
        return self.head(x)


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, **batch: Any) -> None:
    model(**batch).float().pow(2).mean().backward()
    opt.step()
    opt.zero_grad()


def _quiet(**kw: Any) -> dict[str, Any]:
    """Defaults for tests: a given peak and FLOPs model, no SIGTERM handler."""
    base: dict[str, Any] = {"handle_sigterm": False, "warmup_steps": 0}
    base.update(kw)
    return base


# --- token counting ---------------------------------------------------------------------------------------
def test_counts_tokens_and_real_tokens_from_attention_mask() -> None:
    model = TinyLM()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[0, 7:] = 0  # 3 padding tokens
    mask[2, 4:] = 0  # 6 padding tokens
    with MFUMonitor(model, opt, **_quiet(flops_per_token=100.0, peak_flops=1e12)) as mon:
        for _ in range(4):
            _train_step(model, opt, input_ids=torch.randint(0, V, (3, 10)), attention_mask=mask)
        snap = mon.snapshot()
    assert snap.steps == 4 and snap.resolved_steps == 4
    assert snap.tokens_total == 4 * 30
    assert snap.real_tokens_total == 4 * int(mask.sum())
    assert snap.padding_ratio == pytest.approx(9 / 30)
    assert snap.seq_len == 10
    assert [s.real_tokens for s in snap.recent] == [21] * 4


def test_gradient_accumulation_counts_every_micro_batch_in_one_step() -> None:
    model = TinyLM()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with MFUMonitor(model, opt, **_quiet(flops_per_token=100.0)) as mon:
        for _ in range(3):  # 3 optimizer steps of 4 micro-batches of 2 x 8 tokens
            for _ in range(4):
                model(input_ids=torch.randint(0, V, (2, 8))).float().mean().backward()
            opt.step()
            opt.zero_grad()
        snap = mon.snapshot()
    assert snap.steps == 3
    assert [s.tokens for s in snap.recent] == [64, 64, 64]
    assert snap.tokens_total == 192


def test_eval_forward_and_inputs_embeds() -> None:
    model = TinyLM()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with MFUMonitor(model, opt, **_quiet(flops_per_token=100.0)) as mon:
        with torch.no_grad():
            model(input_ids=torch.randint(0, V, (5, 9)))  # evaluation: not training throughput
        _train_step(model, opt, inputs_embeds=torch.randn(2, 6, D))
        snap = mon.snapshot()
    assert snap.tokens_total == 12  # 2 x 6 embedded tokens; the eval batch is not counted
    assert snap.seq_len == 6


def test_manual_mode_without_optimizer_hook() -> None:
    model = nn.Linear(4, 4)  # a custom loop: the monitor has no optimizer to hook
    with MFUMonitor(**_quiet(flops_per_token=50.0, peak_flops=1e12, seq_len=128)) as mon:
        for n in (100, 200, 300):
            model(torch.randn(2, 4)).sum().backward()
            mon.step(tokens=n)
        snap = mon.snapshot()
    assert snap.steps == 3
    assert snap.tokens_total == 600
    assert snap.model_flops_total == pytest.approx(600 * 50.0)
    with pytest.raises(InputError, match="tokens"):
        mon.step(tokens=-1)


def test_warmup_steps_are_left_out_of_rates_but_counted() -> None:
    model = TinyLM()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with MFUMonitor(model, opt, **_quiet(flops_per_token=100.0, warmup_steps=3, window_steps=100)) as mon:
        for _ in range(8):
            _train_step(model, opt, input_ids=torch.randint(0, V, (2, 4)))
        snap = mon.snapshot()
    assert snap.tokens_total == 64
    assert snap.window_steps == 5
    assert sum(1 for s in snap.recent if s.warmup) == 3
    in_window = [s for s in snap.recent if not s.warmup]
    assert snap.tokens_per_second == pytest.approx(40 / sum(s.seconds for s in in_window))


# --- MFU against FlopCounterMode ---------------------------------------------------------------------------
def _flop_counter_training_flops(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Forward + backward FLOPs of one step, measured by PyTorch's FlopCounterMode (the independent truth)."""
    with FlopCounterMode(display=False) as counter:
        _, loss = model(x, y)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


@pytest.mark.parametrize("flops_from", ["spec", "measured"])
def test_mfu_equals_flopcounter_flops_over_step_time_over_peak(flops_from: str) -> None:
    torch.manual_seed(0)
    cfg = DemoConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, d_model=32)
    model = DemoGPT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, cfg.vocab_size, (4, cfg.block_size))
    y = torch.randint(0, cfg.vocab_size, (4, cfg.block_size))
    flops_per_step = _flop_counter_training_flops(model, x, y)
    peak = 1e12
    steps, warm = 12, 2
    ends: list[float] = []
    kw = {"spec": demo_spec(cfg)} if flops_from == "spec" else {}
    with MFUMonitor(
        model, opt, peak_flops=peak, warmup_steps=warm, window_steps=100, handle_sigterm=False, **kw
    ) as mon:
        for _ in range(steps):
            _, loss = model(x, y)
            loss.backward()
            opt.step()
            ends.append(time.perf_counter())  # the test's own clock, right after each step
            opt.zero_grad()
        snap = mon.snapshot()
    seconds = ends[-1] - ends[warm - 1]  # the steps after warm-up, end to end
    expected = flops_per_step * (steps - warm) / seconds / peak
    assert snap.mfu == pytest.approx(expected, rel=0.02)
    assert snap.flops_per_token == pytest.approx(flops_per_step / x.numel(), rel=1e-6)
    assert snap.model_flops_total == pytest.approx(flops_per_step * steps, rel=1e-6)
    assert not snap.mfu_suspect


def test_hf_model_flops_come_from_model_config() -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=32)
    cfg._attn_implementation = "eager"  # what FlopCounterMode counts in full (the CPU SDPA kernel is not)
    model = transformers.GPT2LMHeadModel(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    ids = torch.randint(0, 64, (2, 16))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, labels=ids).loss.backward()
    model.zero_grad()
    with MFUMonitor(model, opt, **_quiet(peak_flops=1e12)) as mon:
        for _ in range(3):
            model(input_ids=ids, labels=ids).loss.backward()
            opt.step()
            opt.zero_grad()
        snap = mon.snapshot()
    assert snap.flops_method is not None and "analytic" in snap.flops_method
    assert snap.flops_per_token == pytest.approx(counter.get_total_flops() / ids.numel(), rel=0.01)


def test_spec_by_preset_name() -> None:
    from monitor.model.presets import load_preset

    by_name = MFUMonitor(TinyLM(), **_quiet(spec="gpt2", seq_len=1024))
    by_spec = MFUMonitor(TinyLM(), **_quiet(spec=load_preset("gpt2"), seq_len=1024))
    try:
        first, second = by_name.snapshot(), by_spec.snapshot()
        assert first.model == second.model == load_preset("gpt2").label
        assert first.flops_per_token is not None and first.flops_per_token == second.flops_per_token
    finally:
        by_name.close()
        by_spec.close()


def test_frozen_parameters_lower_the_measured_flops() -> None:
    cfg = DemoConfig(vocab_size=40, block_size=8, n_layer=2, n_head=2, d_model=32)
    model = DemoGPT(cfg)
    for p in model.blocks[0].parameters():
        p.requires_grad_(False)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    x = torch.randint(0, 40, (2, 8))
    with MFUMonitor(model, opt, **_quiet(peak_flops=1e12)) as mon:
        for _ in range(2):
            _, loss = model(x, x)
            loss.backward()
            opt.step()
            opt.zero_grad()
        snap = mon.snapshot()
    truth = _flop_counter_training_flops(model, x, x) / x.numel()
    assert snap.flops_per_token == pytest.approx(truth, rel=1e-6)


def test_mfu_above_one_is_flagged(caplog: pytest.LogCaptureFixture) -> None:
    model = TinyLM()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    quiet = _quiet(flops_per_token=1e9, peak_flops=1.0, tick_seconds=0.0)  # a log tick every step
    with caplog.at_level(logging.WARNING, logger="monitor"), MFUMonitor(model, opt, **quiet) as mon:
        for _ in range(4):
            _train_step(model, opt, input_ids=torch.randint(0, V, (2, 4)))
        snap = mon.snapshot()
    assert snap.mfu is not None and snap.mfu > 1 and snap.mfu_suspect
    messages = [r.getMessage() for r in caplog.records if "peak or the FLOPs model" in r.getMessage()]
    assert len(messages) == 1
    shown = re.search(r"MFU (\S+) is above 1", messages[0])
    assert shown is not None and float(shown.group(1)) > 1  # the figure named is one above 1


def test_unknown_peak_gives_no_mfu(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("MFU_MONITOR_CACHE_DIR", str(tmp_path))  # no cached calibration
    model = TinyLM()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with MFUMonitor(model, opt, **_quiet(flops_per_token=10.0)) as mon:
        _train_step(model, opt, input_ids=torch.randint(0, V, (2, 4)))
        snap = mon.snapshot()
    assert snap.peak_flops_per_second is None and snap.mfu is None and snap.hfu is None
    assert snap.tokens_per_second is not None


def test_cached_calibration_is_the_cpu_peak(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from monitor.hardware.calibrate import calibrate

    monkeypatch.setenv("MFU_MONITOR_CACHE_DIR", str(tmp_path))
    measured = calibrate("fp32", size=32, seconds=0.02)  # what `mfu calibrate` caches
    model = TinyLM()
    with MFUMonitor(model, **_quiet(flops_per_token=10.0)) as mon:
        assert mon.dtype == "fp32"
        assert (mon.peak_flops, mon.peak_source) == (measured.flops_per_second, "calibrated")


def test_bad_input_names_the_field() -> None:
    with pytest.raises(InputError, match="peak_flops"):
        MFUMonitor(peak_flops=-1.0, handle_sigterm=False)
    with pytest.raises(InputError, match="alert_below"):
        MFUMonitor(alert_below=2.0, handle_sigterm=False)
    with pytest.raises(InputError, match="port"):
        MFUMonitor(port=70000, handle_sigterm=False)
    with pytest.raises(InputError, match="optimizer"):
        MFUMonitor(nn.Linear(2, 2), optimizer=object(), handle_sigterm=False)  # type: ignore[arg-type]


# --- faults -----------------------------------------------------------------------------------------------
def test_exception_inside_a_hook_is_counted_and_warned_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import monitor.live.capture as live

    def broken(*_: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(live, "tokens_in", broken)
    model = nn.Linear(3, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    quiet = _quiet(flops_per_token=1.0)
    with caplog.at_level(logging.WARNING, logger="monitor"), MFUMonitor(model, opt, **quiet) as mon:
        for _ in range(5):
            model(torch.randn(2, 3)).sum().backward()  # positional input: goes through tokens_in
            opt.step()
            opt.zero_grad()
        snap = mon.snapshot()
    assert snap.steps == 5  # training and step counting went on
    assert snap.errors == 5
    assert sum("forward hook" in r.getMessage() for r in caplog.records) == 1


def test_hooks_are_removed_on_close() -> None:
    model = TinyLM()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = MFUMonitor(model, opt, **_quiet(flops_per_token=1.0))
    _train_step(model, opt, input_ids=torch.randint(0, V, (1, 4)))
    mon.close()
    _train_step(model, opt, input_ids=torch.randint(0, V, (1, 4)))
    assert mon.snapshot().steps == 1
    assert not model._forward_pre_hooks


# --- no synchronisation on the step path -------------------------------------------------------------------
class _FakeEvent:
    def __init__(self, owner: _FakeCuda, enable_timing: bool = False) -> None:
        self.owner = owner
        self.t: float | None = None

    def record(self) -> None:
        self.owner.recorded += 1
        self.t = time.perf_counter()

    def query(self) -> bool:
        return self.owner.complete

    def elapsed_time(self, end: _FakeEvent) -> float:
        assert self.owner.complete, "elapsed_time read before the events completed"
        assert self.t is not None and end.t is not None
        return (end.t - self.t) * 1000.0

    def synchronize(self) -> None:
        self.owner.complete = True


class _FakeCuda:
    """A stand-in for torch.cuda's event API whose events complete only when the test says so."""

    def __init__(self) -> None:
        self.recorded = 0
        self.complete = False

    def Event(self, enable_timing: bool = False) -> _FakeEvent:
        return _FakeEvent(self, enable_timing)


def test_step_path_makes_no_synchronize_or_item_call(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeCuda()
    model = TinyLM()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    batches = [torch.randint(0, V, (2, 5)) for _ in range(12)]
    mask = torch.ones(2, 5, dtype=torch.long)
    mon = MFUMonitor(
        model,
        opt,
        timer=CudaEventTimer(events=fake),
        tick_seconds=0.0,  # a log tick after every step: the tick path runs under the same guard
        **_quiet(flops_per_token=10.0, peak_flops=1e9),
    )

    def forbidden(*_: Any, **__: Any) -> Any:
        raise AssertionError("device synchronisation on the step path")

    with monkeypatch.context() as m:
        m.setattr(torch.cuda, "synchronize", forbidden)
        m.setattr(torch.Tensor, "item", forbidden)
        m.setattr(torch.Tensor, "cpu", forbidden)
        m.setattr(torch.Tensor, "tolist", forbidden)
        for ids in batches:
            out = model(input_ids=ids, attention_mask=mask)
            out.pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
        pending = mon.snapshot()  # a scrape while events are still in flight reads nothing from them
    assert mon.errors == 0
    assert fake.recorded == len(batches) + 2  # one per step end, the first forward, the monitor start
    assert pending.steps == 12 and pending.resolved_steps == 0 and pending.tokens_per_second is None
    done = mon.close()  # the run is over: close waits for the last event, and everything resolves
    assert fake.complete
    assert done.resolved_steps == 12 and done.tokens_total == 120 and done.tokens_per_second is not None


def test_hfu_counts_recomputation_from_the_flops_model() -> None:
    from monitor.model.flops import flops_per_token

    cfg = DemoConfig(vocab_size=40, block_size=8, n_layer=2, n_head=2, d_model=32)
    model = DemoGPT(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randint(0, 40, (2, 8))
    spec = demo_spec(cfg)
    with MFUMonitor(model, opt, spec=spec, recompute="full", **_quiet(peak_flops=1e12)) as mon:
        for _ in range(3):
            _, loss = model(x, x)
            loss.backward()
            opt.step()
            opt.zero_grad()
        snap = mon.snapshot()
    expected = flops_per_token(spec, 8, recompute="full")
    assert snap.flops_per_token == pytest.approx(expected.training)
    assert snap.hardware_flops_per_token == pytest.approx(expected.hardware)
    assert snap.mfu is not None and snap.hfu is not None
    assert snap.hfu / snap.mfu == pytest.approx(expected.hardware / expected.training)


@pytest.mark.parametrize(
    ("spec", "problem"), [("/nonexistent/config.json", "no such file"), ("llama-9", "unknown preset")]
)
def test_a_bad_spec_names_spec_not_a_cli_flag(spec: str, problem: str) -> None:
    with pytest.raises(InputError) as err:
        MFUMonitor(spec=spec, handle_sigterm=False)
    assert err.value.field == "spec" and problem in err.value.problem
    assert "--" not in str(err.value)  # no CLI flag in an API error
