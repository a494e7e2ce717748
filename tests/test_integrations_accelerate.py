"""The Accelerate example's loop (``accelerator.backward`` under ``accelerator.accumulate``) on CPU: the
monitor hooked on the unwrapped model and the optimizer inside Accelerate's wrapper closes one step per real
optimizer step, with every micro-batch's tokens in it."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("accelerate")

import torch
from prometheus_client import CollectorRegistry
from test_integrations_models import PEAK, read_log, training_flops

from integrations import accelerate_example
from integrations.accelerate_example import random_batches, tiny_llama, train

STEPS, ACCUM, BATCH, SEQ = 3, 2, 2, 16


def test_example_loop_counts_steps_tokens_and_flops(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    log = tmp_path / "run.jsonl"
    registry = CollectorRegistry()
    model = tiny_llama(vocab_size=128, hidden_size=32)
    reference = training_flops(model, random_batches(1, BATCH, SEQ, 128)[0]) / (BATCH * SEQ)
    snap = train(
        steps=STEPS, grad_accum=ACCUM, batch_size=BATCH, seq_len=SEQ, cpu=True, model=model,
        peak_flops=PEAK, registry=registry, log_path=log, warmup_steps=1, run="acc-test",
    )  # fmt: skip
    records = read_log(log)
    steps = records["step"]
    assert snap.steps == STEPS == len(steps)  # not STEPS * ACCUM: only real optimizer steps close a step
    assert [s["tokens"] for s in steps] == [ACCUM * BATCH * SEQ] * STEPS
    assert [s["real_tokens"] for s in steps] == [ACCUM * BATCH * SEQ] * STEPS  # all-ones masks
    for s in steps:
        assert s["model_flops"] == pytest.approx(s["tokens"] * reference, rel=1e-9)
        assert s["mfu"] is not None and 0 < s["mfu"] < 1
    assert records["run_start"][0]["dtype"] == "fp32"  # mixed_precision="no", fp32 parameters
    assert snap.mfu is not None and 0 < snap.mfu < 1


def test_example_main_prints_the_figures(capsys: pytest.CaptureFixture[str]) -> None:
    torch.set_num_threads(1)
    argv = ["--steps", "5", "--grad-accum", "1", "--batch-size", "1", "--seq-len", "8", "--cpu",
            "--peak-tflops", "1"]  # fmt: skip
    assert accelerate_example.main(argv) == 0
    out = capsys.readouterr().out
    assert "5 steps, 40 tokens" in out and "MFU 0." in out
