"""FP8 runs: FP8 linear layers found by class (torchao, Transformer Engine), and the FLOP-weighted peak built
from the fake NVML device's catalogue peaks."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from fakes import FakeGpuBackend, fake_device

from monitor.errors import InputError
from monitor.hardware.detect import detect_accelerator
from monitor.hardware.mixed import flop_weighted_peak, mfu, mixed_peak
from monitor.model.fp8 import find_fp8_layers, fp8_state, fp8_training_flops_per_token


def _named(module: str, name: str, base: type[torch.nn.Module]) -> type[torch.nn.Module]:
    """A real nn.Module subclass whose class lives where the library's does (module path and name)."""
    return type(name, (base,), {"__module__": module, "__qualname__": name})


Float8Linear = _named("torchao.float8.float8_linear", "Float8Linear", torch.nn.Linear)
TeLinear = _named("transformer_engine.pytorch.module.linear", "Linear", torch.nn.Linear)


class TeLayerNormMLP(torch.nn.Module):
    def __init__(self, h: int, f: int) -> None:
        super().__init__()
        self.fc1 = TeLinear(h, f)  # an inner TE module: counted once, through its parent
        self.fc2 = torch.nn.Linear(f, h)
        self.norm = torch.nn.LayerNorm(h)


TeLayerNormMLP.__module__ = "transformer_engine.pytorch.module.layernorm_mlp"
TeLayerNormMLP.__qualname__ = TeLayerNormMLP.__name__ = "LayerNormMLP"


def _h100() -> FakeGpuBackend:
    return FakeGpuBackend([fake_device("NVIDIA H100 80GB HBM3", pci_device_id=0x2330)])


def test_fp8_layers_found_by_class() -> None:
    model = torch.nn.Sequential(
        Float8Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4), Float8Linear(4, 3)
    )
    model[3].weight.requires_grad_(False)
    layers = find_fp8_layers(model)
    assert [(x.name, x.library, x.kind) for x in layers] == [
        ("0", "torchao", "Float8Linear"),
        ("3", "torchao", "Float8Linear"),
    ]
    assert layers[0].weight_elements == 128 and layers[1].frozen_elements == 12
    assert fp8_training_flops_per_token(layers) == 6 * 128 + 4 * 12


def test_transformer_engine_layers_count_once_and_only_after_an_fp8_forward() -> None:
    model = torch.nn.Sequential(TeLayerNormMLP(8, 32), TeLinear(8, 8))
    layers = find_fp8_layers(model)
    assert [x.name for x in layers] == ["0", "1"]  # the inner fc1 is inside "0"
    assert layers[0].weight_elements == 2 * 8 * 32  # fc1 and fc2; the norm is no matmul
    assert all(x.active is None for x in layers)  # no forward yet: unknown
    assert fp8_training_flops_per_token(layers) == 0
    model[0].fc1.fp8 = True  # what TE sets in a forward under fp8_autocast
    model[1].fp8 = False
    state = fp8_state(model, layers)
    assert [x.active for x in state] == [True, False]
    assert fp8_training_flops_per_token(state) == 6 * 2 * 8 * 32


def test_flop_weighted_peak_on_a_fake_h100() -> None:
    backend = _h100()
    fp8 = detect_accelerator("fp8", backend=backend).peak_flops_per_second
    bf16 = detect_accelerator("bf16", backend=backend).peak_flops_per_second
    assert fp8 is not None and bf16 is not None and fp8 == pytest.approx(2 * bf16, rel=1e-3)
    peaks = {"fp8": fp8, "bf16": bf16}
    mix = mixed_peak(62.0, 100.0, peaks, source="catalog")
    # Time at peak: 0.62/fp8 + 0.38/bf16 per FLOP.
    assert mix.peak_flops_per_second == pytest.approx(1 / (0.62 / fp8 + 0.38 / bf16))
    assert bf16 < mix.peak_flops_per_second < fp8
    assert mix.source == "catalog fp8 62% / bf16 38% (FLOP-weighted)"
    assert mixed_peak(0.0, 5.0, peaks).peak_flops_per_second == bf16
    assert mixed_peak(5.0, 5.0, peaks).source == "catalogue fp8"
    rate = 0.4 * mix.peak_flops_per_second
    assert mfu(rate, mix.peak_flops_per_second) == pytest.approx(0.4)
    assert mfu(rate, mix.bf16_peak_flops_per_second) > 0.4  # the flattering figure, reported beside it
    assert mfu(rate, None) is None


def test_mixed_peak_bad_input_names_the_field() -> None:
    with pytest.raises(InputError, match="fp8_flops"):
        mixed_peak(7.0, 5.0, {"fp8": 2.0, "bf16": 1.0})
    with pytest.raises(InputError, match=r"peak\[bf16\]"):
        flop_weighted_peak({"fp8": 1.0, "bf16": 1.0}, {"fp8": 2.0})
    with pytest.raises(InputError, match="flops"):
        flop_weighted_peak({}, {"fp8": 2.0})


@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao not installed")
def test_real_torchao_float8_layers() -> None:
    from torchao.float8 import convert_to_float8_training

    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16))
    convert_to_float8_training(model)
    assert [x.name for x in find_fp8_layers(model)] == ["0", "2"]
