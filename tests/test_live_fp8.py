"""FP8 runs under MFUMonitor: FP8 linear layers found by their module types (torchao's Float8Linear,
Transformer Engine's Linear), the FLOP-weighted FP8/BF16 peak from the fake NVML device's catalogue peaks,
``dtype="fp8"`` forcing the all-FP8 peak, and MFU against the BF16 peak beside MFU.

The truth for the FP8 share of the FLOPs is FlopCounterMode's count of a training step of the real
transformers model: its FP8 linear layers do 6 x their weight elements per token (2 forward, 4 backward)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from fakes import FakeGpuBackend, fake_device
from model_configs import TINY_CONFIGS, build_model, count_flops
from prometheus_client import CollectorRegistry

from monitor.hardware.detect import detect_accelerator
from monitor.live.monitor import MFUMonitor

SEQ = 16


def _named(module: str, name: str, base: type[torch.nn.Module]) -> type[torch.nn.Module]:
    """A real nn.Module subclass whose class lives where the library's does (module path and name)."""
    return type(name, (base,), {"__module__": module, "__qualname__": name})


Float8Linear = _named("torchao.float8.float8_linear", "Float8Linear", torch.nn.Linear)
TeLinear = _named("transformer_engine.pytorch.module.linear", "Linear", torch.nn.Linear)


def _gpu(name: str = "NVIDIA H100 80GB HBM3", pci: int | None = 0x2330) -> FakeGpuBackend:
    return FakeGpuBackend([fake_device(name, pci_device_id=pci)])


def _llama(fp8_class: type[torch.nn.Module] | None) -> tuple[torch.nn.Module, int]:
    """The tiny transformers Llama with its MLP projections swapped to ``fp8_class`` (as torchao's
    convert_to_float8_training swaps nn.Linear); returns the model and the FP8 weight elements."""
    model = build_model(TINY_CONFIGS["llama"])
    elements = 0
    if fp8_class is not None:
        for layer in model.model.layers:
            for proj in (layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj):
                proj.__class__ = fp8_class
                elements += proj.weight.numel()
    return model, elements


def _train(model: torch.nn.Module, log: Path | None = None, steps: int = 6, **kw: Any) -> MFUMonitor:
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    options: dict[str, Any] = dict(
        handle_sigterm=False, warmup_steps=1, tick_seconds=0.0, registry=CollectorRegistry(), log_path=log
    )
    options.update(kw)
    mon = MFUMonitor(model, opt, **options)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        ids = torch.randint(3, 97, (2, SEQ), generator=gen)
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        opt.step()
        opt.zero_grad()
    return mon


def _peaks(gpu: FakeGpuBackend) -> tuple[float, float]:
    fp8 = detect_accelerator("fp8", backend=gpu).peak_flops_per_second
    bf16 = detect_accelerator("bf16", backend=gpu).peak_flops_per_second
    assert fp8 is not None and bf16 is not None
    return fp8, bf16


def test_torchao_fp8_layers_get_the_flop_weighted_peak(tmp_path: Path) -> None:
    model, fp8_elements = _llama(Float8Linear)
    forward, backward = count_flops(_llama(None)[0], SEQ)  # FlopCounterMode, per token
    share = 6 * fp8_elements / (forward + backward)
    assert 0.2 < share < 0.8  # a real mix: neither peak alone would do
    gpu = _gpu()
    fp8, bf16 = _peaks(gpu)
    mon = _train(model, tmp_path / "run.jsonl", dtype="bf16", gpu_backend=gpu, gpu_index=0)
    expected = 1 / (share / fp8 + (1 - share) / bf16)  # time at peak = sum of F_i / P_i
    assert mon.peak_flops == pytest.approx(expected, rel=1e-9)
    assert mon.peak_source is not None and "FLOP-weighted" in mon.peak_source
    assert f"fp8 {round(100 * share)}%" in mon.peak_source
    snap = mon.snapshot()
    assert snap.mfu is not None and snap.mfu_bf16 is not None
    assert snap.mfu_bf16 == pytest.approx(snap.mfu * expected / bf16, rel=1e-9)
    labels = {"run": mon.run, "rank": "0"}
    assert mon.registry.get_sample_value("training_peak_flops_per_second", labels) == pytest.approx(expected)
    assert mon.registry.get_sample_value("training_mfu_bf16_ratio", labels) is not None
    mon.close()
    records = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines()]
    start = records[0]
    assert start["event"] == "run_start"
    assert start["peak_flops_per_second"] == pytest.approx(expected)
    assert start["bf16_peak_flops_per_second"] == bf16
    steps = [r for r in records if r["event"] == "step"]
    assert all(r["mfu"] == pytest.approx(r["model_flops"] / r["step_seconds"] / expected) for r in steps)


def test_dtype_fp8_forces_the_all_fp8_peak() -> None:
    model, _ = _llama(Float8Linear)
    gpu = _gpu()
    fp8, bf16 = _peaks(gpu)
    mon = _train(model, dtype="fp8", gpu_backend=gpu, gpu_index=0)
    assert mon.peak_flops == fp8
    snap = mon.snapshot()
    assert snap.mfu is not None and snap.mfu_bf16 == pytest.approx(snap.mfu * fp8 / bf16)
    mon.close()


def test_transformer_engine_layers_count_only_when_they_ran_in_fp8() -> None:
    gpu = _gpu()
    fp8, bf16 = _peaks(gpu)
    # TE sets ``fp8`` on its modules in each forward: False outside fp8_autocast, so all FLOPs are BF16.
    model, _ = _llama(TeLinear)
    for module in model.modules():
        if type(module) is TeLinear:
            module.fp8 = False  # type: ignore[assignment]
    mon = _train(model, dtype="bf16", gpu_backend=gpu, gpu_index=0)
    assert mon.peak_flops == pytest.approx(bf16)
    mon.close()
    model, fp8_elements = _llama(TeLinear)
    for module in model.modules():
        if type(module) is TeLinear:
            module.fp8 = True  # type: ignore[assignment]
    mon = _train(model, dtype="bf16", gpu_backend=gpu, gpu_index=0)
    forward, backward = count_flops(_llama(None)[0], SEQ)
    share = 6 * fp8_elements / (forward + backward)
    assert mon.peak_flops == pytest.approx(1 / (share / fp8 + (1 - share) / bf16), rel=1e-9)
    mon.close()


def test_no_fp8_layers_a_given_peak_or_no_fp8_peak_leave_the_peak_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gpu = _gpu()
    _, bf16 = _peaks(gpu)
    mon = _train(_llama(None)[0], dtype="bf16", gpu_backend=gpu, gpu_index=0)
    assert mon.peak_flops == bf16 and mon.snapshot().mfu_bf16 is None
    mon.close()
    mon = _train(_llama(Float8Linear)[0], dtype="bf16", gpu_backend=gpu, gpu_index=0, peak_flops=5e14)
    assert mon.peak_flops == 5e14 and mon.snapshot().mfu_bf16 is None  # the user's figure wins
    mon.close()
    a100 = _gpu("NVIDIA A100-SXM4-80GB", pci=0x20B2)  # no FP8 tensor cores
    with caplog.at_level("WARNING"):
        mon = _train(_llama(Float8Linear)[0], dtype="bf16", gpu_backend=a100, gpu_index=0)
    assert mon.peak_flops == detect_accelerator("bf16", backend=a100).peak_flops_per_second
    assert any("FP8 linear layer" in r.getMessage() for r in caplog.records)
    mon.close()


def test_a_failing_fp8_share_costs_one_error_and_keeps_the_other_peak(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any) -> float:
        raise RuntimeError("layer walk failed (injected)")

    monkeypatch.setattr("monitor.live.fp8.fp8_share", broken)
    gpu = _gpu()
    _, bf16 = _peaks(gpu)
    mon = _train(_llama(Float8Linear)[0], dtype="bf16", gpu_backend=gpu, gpu_index=0, steps=8)
    assert mon.errors == 1  # once, not at every tick
    assert mon.peak_flops == bf16 and mon.snapshot().resolved_steps == 8
    mon.close()
