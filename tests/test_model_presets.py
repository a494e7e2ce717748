"""Presets against transformers on the meta device (no memory), and against published sizes."""

from __future__ import annotations

import pytest
import torch

from monitor.errors import InputError
from monitor.model.flops import flops_per_token
from monitor.model.measure import build_meta_model, measure_module
from monitor.model.params import count_params
from monitor.model.presets import list_presets, load_preset, preset_config, preset_info

PRESETS = list_presets()


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_every_reference_config_is_a_preset() -> None:
    # the 13 configs of the shared reference file, by the names it uses
    reference = {
        "llama-2-7b", "llama-2-70b", "llama-3-8b", "llama-3.1-70b", "llama-3.1-405b", "mistral-7b",
        "mixtral-8x7b", "qwen2.5-7b", "qwen3-30b-a3b", "gemma-2-9b", "gpt2", "gpt2-xl", "deepseek-v3",
    }  # fmt: skip
    assert reference <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_params_equal_transformers_on_meta(name: str) -> None:
    model = build_meta_model(preset_config(name))
    assert count_params(load_preset(name)).total == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", [n for n in PRESETS if load_preset(n).moe is None])
def test_dense_preset_training_flops_equal_flop_counter_on_meta(name: str) -> None:
    measured = measure_module(build_meta_model(preset_config(name)), 4096)
    ours = flops_per_token(load_preset(name), 4096)
    assert ours.training == pytest.approx(measured.training, rel=1e-9)
    assert ours.forward == pytest.approx(measured.forward, rel=1e-9)


def test_published_sizes() -> None:
    """Figures from the model cards and papers (literature.md), not from our own output."""
    assert count_params(load_preset("llama-2-7b")).total == 6_738_415_616
    v3 = count_params(load_preset("deepseek-v3"))
    assert round(v3.total / 1e9) == 671 and round(v3.active / 1e9) in (37, 38)
    mixtral = count_params(load_preset("mixtral-8x7b"))
    assert round(mixtral.total / 1e8) == 467 and round(mixtral.active / 1e8) == 129
    qwen3 = count_params(load_preset("qwen3-30b-a3b"))
    assert round(qwen3.total / 1e8) == 305 and round(qwen3.active / 1e8) == 34  # card: 30.5B, 3.3B (3.35)
    qwen25 = count_params(load_preset("qwen2.5-7b"))
    assert round(qwen25.total / 1e7) == 762 and round(qwen25.non_embedding / 1e7) == 653  # 7.61B / 6.53B


def test_llama_7b_worked_example_against_the_wrong_formula() -> None:
    """docs/flops.md: the design notes' 12H² + 2aSH per layer overstates LLaMA-7B training FLOPs by ~65%."""
    spec = load_preset("llama-2-7b")
    s, h, a, layers = 2048, spec.hidden_size, spec.num_heads, spec.num_layers
    ours = flops_per_token(spec, s).training
    wrong = 3 * layers * (12 * h * h + 2 * a * s * h)  # forward FLOPs/token per layer, x3 for training
    assert 0.64 < wrong / ours - 1 < 0.66


def test_preset_names_are_forgiving_and_unknown_ones_list_the_known() -> None:
    assert load_preset("meta-llama/Llama-2-7b-hf") == load_preset("llama-2-7b")
    assert load_preset("LLAMA-3-8B").name == "llama-3-8b"
    with pytest.raises(InputError, match="llama-2-7b") as err:
        load_preset("llama-9")
    assert "unknown preset" in str(err.value)
    assert preset_info("gpt2")["source"]
