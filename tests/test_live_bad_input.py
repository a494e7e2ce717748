"""Bad input to the live monitor: a clear InputError naming the argument — at construction, or at the call
for ``mon.step`` — and a bad call leaves the run's figures as they were (real CPU training loops)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from prometheus_client import CollectorRegistry
from torch import nn

from monitor.errors import InputError
from monitor.live.monitor import MFUMonitor

torch.set_num_threads(1)


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.head = nn.Linear(16, 50)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(input_ids))


def _monitor(**kw: Any) -> MFUMonitor:
    base: dict[str, Any] = dict(flops_per_token=1000.0, peak_flops=1e12, registry=CollectorRegistry(),
                                warmup_steps=0, handle_sigterm=False)  # fmt: skip
    return MFUMonitor(**(base | kw))


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (dict(tokens=64, seq_len=-3), "seq_len"),
        (dict(tokens=64, seq_len=0), "seq_len"),
        (dict(tokens=64, seq_len=2.5), "seq_len"),
        (dict(tokens=-1), "tokens"),
        (dict(tokens=64, real_tokens=-5), "real_tokens"),
        (dict(tokens=64, real_tokens=100), "real_tokens"),  # more non-padding tokens than tokens
        (dict(tokens=64, real_tokens=True), "real_tokens"),
    ],
)
def test_a_bad_step_argument_is_refused_and_the_run_keeps_its_figures(
    call: dict[str, Any], field: str
) -> None:
    mon = _monitor()
    with mon:
        mon.step(tokens=64, seq_len=8)
        with pytest.raises(InputError, match=field):
            mon.step(**call)
        for _ in range(3):
            mon.step(tokens=64, seq_len=8)
    snap = mon.snapshot()
    assert snap.steps == 4 and snap.tokens_total == 4 * 64  # the refused call counted nothing
    assert snap.model_flops_total == 4 * 64 * 1000.0 and snap.mfu is not None  # FLOPs and MFU go on
    assert snap.padding_ratio is None and snap.errors == 0


def test_real_tokens_above_what_the_hook_counted_is_refused() -> None:
    model = TinyLM()
    mon = _monitor(model=model)
    with mon:
        model(input_ids=torch.randint(0, 50, (2, 8))).sum().backward()
        with pytest.raises(InputError, match="real_tokens"):
            mon.step(real_tokens=17)  # the hook counted 16
        mon.step(real_tokens=12)
    snap = mon.snapshot()
    assert (snap.steps, snap.tokens_total, snap.real_tokens_total) == (1, 16, 12)
    assert snap.padding_ratio == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("peak_flops", 10**400),
        ("flops_per_token", float("inf")),
        ("recompute", "bogus"),
        ("causal", "yes"),
        ("run", 123),
        ("run", ""),
        ("tls", {"bogus": 1}),
        ("tls", "cert.pem"),
        ("log_path", 123),
        ("file_sd_dir", 4.5),
        ("registry", "x"),
        ("timer", "x"),
        ("addr", None),
    ],
)
def test_constructor_values_of_the_wrong_kind_name_the_option(
    option: str, value: Any, tmp_path: Path
) -> None:
    with pytest.raises(InputError, match=option) as err:
        _monitor(**{option: value})
    assert "\n" not in str(err.value) and len(str(err.value)) < 300  # one line, not a dump of the value


def test_accelerates_wrapped_optimizer_is_unwrapped() -> None:
    accelerate = pytest.importorskip("accelerate")
    acc = accelerate.Accelerator(cpu=True, gradient_accumulation_steps=2)
    model = TinyLM()
    model, opt = acc.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert type(opt).__name__ == "AcceleratedOptimizer"
    with _monitor(model=model, optimizer=opt) as mon:
        for _ in range(6):
            with acc.accumulate(model):
                acc.backward(model(input_ids=torch.randint(0, 50, (2, 8))).sum())
                opt.step()  # the inner optimizer steps every second micro-batch
                opt.zero_grad()
    snap = mon.snapshot()
    assert (snap.steps, snap.tokens_total) == (3, 6 * 16)


def test_forwards_without_any_step_are_reported(caplog: pytest.LogCaptureFixture) -> None:
    from monitor.live.capture import FORWARDS_WITHOUT_STEP

    model, other = TinyLM(), TinyLM()
    wrong = torch.optim.SGD(other.parameters(), lr=0.1)  # the optimizer of another model: never steps
    with _monitor(model=model, optimizer=wrong) as mon:
        for _ in range(FORWARDS_WITHOUT_STEP + 1):
            model(input_ids=torch.randint(0, 50, (1, 4)))
    assert mon.snapshot().steps == 0
    warned = [r.getMessage() for r in caplog.records if "no optimizer step closed" in r.getMessage()]
    assert len(warned) == 1 and "mon.step()" in warned[0]


def test_steps_without_any_token_are_reported(caplog: pytest.LogCaptureFixture) -> None:
    from monitor.live.monitor import NO_TOKENS_AFTER

    model = TinyLM()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with _monitor(optimizer=opt, tick_seconds=0) as mon:  # no model: the forward is not hooked
        for _ in range(NO_TOKENS_AFTER + 2):
            model(input_ids=torch.randint(0, 50, (1, 4))).sum().backward()
            opt.step()
    assert mon.snapshot().steps == NO_TOKENS_AFTER + 2 and mon.snapshot().tokens_total == 0
    warned = [r.getMessage() for r in caplog.records if "no token was counted" in r.getMessage()]
    assert len(warned) == 1 and "model=" in warned[0]
