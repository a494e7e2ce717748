"""FLOPs and parameters against the transformers implementation, counted by FlopCounterMode.

Every supported model type is built from a tiny config with odd sizes; the expected numbers come from
``torch.utils.flop_counter.FlopCounterMode`` over a real forward+backward (eager attention, eager experts) and
from ``sum(p.numel())`` — never from our own output.
"""

from __future__ import annotations

import random

import pytest
import torch
from model_configs import DENSE_TYPES, MOE_TYPES, TINY_CONFIGS, build_model, count_flops

from monitor.errors import InputError
from monitor.model.flops import attended_keys, flops_per_token, frozen_from_param_names
from monitor.model.hf_config import spec_from_hf_config
from monitor.model.measure import MeasureError, measure_module
from monitor.model.params import count_params

SEQ = 11
ALL_TYPES = DENSE_TYPES + MOE_TYPES


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _close(a: float, b: float, rel: float = 1e-3) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b))


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_params_equal_sum_of_numel(model_type: str) -> None:
    raw = TINY_CONFIGS[model_type]
    model = build_model(raw, device="meta")
    assert count_params(spec_from_hf_config(raw)).total == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_forward_and_training_flops_match_flop_counter(model_type: str) -> None:
    raw = TINY_CONFIGS[model_type]
    forward, backward = count_flops(build_model(raw), SEQ)
    ours = flops_per_token(spec_from_hf_config(raw), SEQ)
    assert _close(ours.forward, forward), (ours.forward, forward)
    assert _close(ours.training, forward + backward), (ours.training, forward + backward)
    assert ours.hardware == ours.training
    assert sum(ours.breakdown.values()) == pytest.approx(ours.forward)


def test_moe_breakdown_and_active_params() -> None:
    spec = spec_from_hf_config(TINY_CONFIGS["qwen2_moe"])
    assert spec.moe is not None and spec.moe.layers == (1,)  # sparse step 2, layer 3 forced dense
    f = flops_per_token(spec, SEQ)
    h, moe = spec.hidden_size, spec.moe
    assert f.breakdown["experts"] == moe.top_k * 3 * 2 * h * moe.expert_intermediate_size
    assert f.breakdown["router"] == 2 * h * moe.num_experts + 2 * h  # router + shared-expert gate
    p = count_params(spec)
    unused = (moe.num_experts - moe.top_k) * 3 * h * moe.expert_intermediate_size
    assert p.active == p.total - unused


def _frozen_sets(names: list[str], seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    layer0 = [n for n in names if ".0." in n]
    sets = [
        [names[0]],  # the embedding
        [n for n in names if n.startswith(names[0].rsplit(".", 1)[0])] + layer0,  # embedding + first layer
        [n for n in names if n.endswith("bias") or "norm" in n or "ln" in n],  # biases and norms
        [n for n in names if "proj" in n or "attn" in n or "experts" in n],  # LoRA-like: base weights frozen
    ]
    sets += [rng.sample(names, rng.randint(1, len(names) - 1)) for _ in range(4)]
    return [s for s in sets if s]


@pytest.mark.parametrize(
    "model_type", ["llama", "gpt2", "gpt_neox", "olmo2", "gemma2", "qwen2_moe", "deepseek_v3"]
)
def test_frozen_parameters_match_autograd(model_type: str) -> None:
    raw = TINY_CONFIGS[model_type]
    spec = spec_from_hf_config(raw)
    names = [n for n, _ in build_model(raw, device="meta").named_parameters()]
    full = flops_per_token(spec, SEQ)
    for frozen in _frozen_sets(names, seed=len(model_type)):
        model = build_model(raw)
        for name, p in model.named_parameters():
            p.requires_grad_(name not in frozen)
        forward, backward = count_flops(model, SEQ)
        groups = frozen_from_param_names(spec, frozen)
        ours = flops_per_token(spec, SEQ, frozen=groups)
        assert _close(ours.forward, forward)
        assert _close(ours.training, forward + backward), (frozen, ours.training, forward + backward)
        assert ours.training <= full.training


def test_frozen_first_layers_cost_no_backward() -> None:
    spec = spec_from_hf_config(TINY_CONFIGS["llama"])
    everything = flops_per_token(spec, SEQ, frozen=["embedding", "layers.*", "final_norm", "lm_head"])
    assert everything.training == everything.forward
    only_head = flops_per_token(spec, SEQ, frozen=["embedding", "layers", "final_norm"])
    # only the LM head trains: its weight gradient is the single backward matmul
    assert only_head.training - only_head.forward == pytest.approx(only_head.breakdown["lm_head"])


def test_frozen_pattern_that_matches_nothing_is_an_input_error() -> None:
    spec = spec_from_hf_config(TINY_CONFIGS["llama"])
    with pytest.raises(InputError, match="frozen"):
        flops_per_token(spec, SEQ, frozen=["layers.99.q"])


def test_lora_adapter_names_are_ignored_and_fused_names_map_to_groups() -> None:
    spec = spec_from_hf_config(TINY_CONFIGS["phi3"])
    groups = frozen_from_param_names(
        spec,
        [
            "model.layers.1.self_attn.qkv_proj.weight",
            "model.layers.1.mlp.gate_up_proj.weight",
            "base_model.model.model.layers.1.self_attn.qkv_proj.lora_A.default.weight",
        ],
    )
    assert groups == ["layers.1.q", "layers.1.k", "layers.1.v", "layers.1.gate", "layers.1.up"]


@pytest.mark.parametrize("model_type", ["llama", "gemma3_text", "gpt_neox", "qwen3_moe", "deepseek_v2"])
def test_full_recompute_matches_checkpointed_layers(model_type: str) -> None:
    raw = TINY_CONFIGS[model_type]
    ours = flops_per_token(spec_from_hf_config(raw), SEQ, recompute=True)
    model = build_model(raw)
    model.train()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    # Non-reentrant checkpointing stops recomputing once the saved tensors are back (it can skip a layer's
    # last matmul); with early stop off it re-runs each layer's whole forward, which is what we count.
    with torch.utils.checkpoint.set_checkpoint_early_stop(False):
        forward, backward = count_flops(model, SEQ)
    assert _close(ours.hardware, forward + backward), (ours.hardware, forward + backward)
    assert ours.training < ours.hardware < ours.training + ours.forward  # the LM head is not recomputed


def test_selective_recompute_adds_attention_scores_only() -> None:
    spec = spec_from_hf_config(TINY_CONFIGS["llama"])
    f = flops_per_token(spec, SEQ, recompute="selective")
    assert f.hardware - f.training == pytest.approx(f.breakdown["attention_scores"])


def _attended_from_masks(raw: dict, seq_len: int) -> list[float]:
    """Mean keys per query of each layer, read from the attention masks transformers builds."""
    model = build_model(raw)
    masks: list[torch.Tensor] = []
    for module in model.modules():
        if type(module).__name__.endswith("Attention"):
            module.register_forward_pre_hook(
                lambda mod, args, kwargs: masks.append(kwargs["attention_mask"]), with_kwargs=True
            )
    with torch.no_grad():
        model(input_ids=torch.randint(3, 90, (1, seq_len)), use_cache=False)
    return [float((m if m.dtype == torch.bool else m == 0).sum()) / seq_len for m in masks]


@pytest.mark.parametrize("model_type", ["llama", "mistral", "gemma2", "gemma3_text", "gpt2", "deepseek_v3"])
def test_causal_and_sliding_windows_count_tokens_actually_attended(model_type: str) -> None:
    raw = TINY_CONFIGS[model_type]
    seq_len = 13
    spec = spec_from_hf_config(raw)
    per_key = 2 * spec.num_heads * (spec.head_dim + spec.v_head_dim)
    keys = _attended_from_masks(raw, seq_len)
    assert len(keys) == spec.num_layers
    ours = flops_per_token(spec, seq_len, causal=True)
    # The masks' key counts, each query's own (diagonal) key counted half: half of S×S without a window.
    assert ours.breakdown["attention_scores"] == pytest.approx(per_key * sum(k - 0.5 for k in keys))
    if spec.layer_windows is None:
        assert ours.breakdown["attention_scores"] == pytest.approx(
            flops_per_token(spec, seq_len).breakdown["attention_scores"] / 2
        )
    full = flops_per_token(spec, seq_len)
    assert full.breakdown["attention_scores"] == pytest.approx(per_key * seq_len * spec.num_layers)


def test_attended_keys_formula() -> None:
    assert attended_keys(8, None, causal=False) == 8
    assert attended_keys(8, None, causal=True) == 4  # half of S×S: (S+1)/2 in the mask, diagonal counted half
    assert attended_keys(8, 3, causal=True) == (1 + 2 + 3 * 6) / 8 - 0.5
    assert attended_keys(8, 100, causal=True) == 4


def test_measure_module_matches_flop_counter_and_respects_frozen() -> None:
    raw = TINY_CONFIGS["gemma2"]
    model = build_model(raw)
    model.model.embed_tokens.weight.requires_grad_(False)
    model.model.layers[0].requires_grad_(False)
    measured = measure_module(model, SEQ, batch_size=2)
    forward, backward = count_flops(model, SEQ)
    assert measured.method == "measured"
    assert _close(measured.forward, forward) and _close(measured.training, forward + backward)
    assert measured.training < 3 * measured.forward
    assert measured.breakdown["lm_head"] == 2 * raw["hidden_size"] * raw["vocab_size"]
    assert all(p.device.type == "cpu" for p in model.parameters())  # nothing was moved or copied


def test_measure_module_explains_what_cannot_run_on_meta() -> None:
    model = build_model(TINY_CONFIGS["mixtral"])
    with pytest.raises(MeasureError, match="meta device"):
        measure_module(model, SEQ)


def test_bad_sequence_length() -> None:
    spec = spec_from_hf_config(TINY_CONFIGS["llama"])
    for bad in (0, -3, 2.5, True):
        with pytest.raises(InputError, match="seq_len"):
            flops_per_token(spec, bad)  # type: ignore[arg-type]


def test_measure_module_names_the_bad_size() -> None:
    model = torch.nn.Linear(4, 4)
    with pytest.raises(InputError) as err:
        measure_module(model, 0)
    assert err.value.field == "seq_len"
    with pytest.raises(InputError) as err:
        measure_module(model, SEQ, batch_size=0)
    assert err.value.field == "batch_size"


class _LoRALinear(torch.nn.Module):
    """A LoRA-wrapped linear in PEFT's parameter layout: base_layer, lora_A.default, lora_B.default."""

    def __init__(self, base: torch.nn.Linear, rank: int) -> None:
        super().__init__()
        self.base_layer = base
        self.lora_A = torch.nn.ModuleDict({"default": torch.nn.Linear(base.in_features, rank, bias=False)})
        self.lora_B = torch.nn.ModuleDict({"default": torch.nn.Linear(rank, base.out_features, bias=False)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + 0.5 * self.lora_B["default"](self.lora_A["default"](x))


@pytest.mark.parametrize(("model_type", "targets"), [("llama", ("q_proj", "v_proj")), ("qwen3", ("o_proj",))])
def test_lora_fine_tuning_matches_autograd(model_type: str, targets: tuple[str, ...]) -> None:
    from monitor.model.flops import training_setup_from_parameters

    raw = TINY_CONFIGS[model_type]
    spec = spec_from_hf_config(raw)
    model = build_model(raw)
    model.requires_grad_(False)
    for layer in model.model.layers:
        for target in targets:
            setattr(layer.self_attn, target, _LoRALinear(getattr(layer.self_attn, target), rank=3))
    forward, backward = count_flops(model, SEQ)
    setup = training_setup_from_parameters(spec, model.named_parameters())
    assert set(setup.adapters.values()) == {3} and len(setup.adapters) == len(targets) * spec.num_layers
    ours = flops_per_token(spec, SEQ, frozen=setup.frozen, adapters=setup.adapters)
    assert _close(ours.forward, forward), (ours.forward, forward)
    assert _close(ours.training, forward + backward), (ours.training, forward + backward)
    assert ours.breakdown["adapters"] > 0


def test_flops_for_model_reads_config_and_frozen_parameters() -> None:
    from monitor.model.summary import flops_for_model

    raw = TINY_CONFIGS["qwen2"]
    model = build_model(raw)
    for layer in model.model.layers[:2]:
        layer.requires_grad_(False)
    model.model.embed_tokens.requires_grad_(False)
    forward, backward = count_flops(model, SEQ)
    ours = flops_for_model(model, SEQ)
    assert ours.method == "analytic" and ours.frozen
    assert _close(ours.training, forward + backward)
    bare = torch.nn.Sequential(torch.nn.Embedding(50, 16), torch.nn.Linear(16, 50))
    measured = flops_for_model(bare, SEQ)
    assert measured.method == "measured" and measured.forward == 2 * 16 * 50
