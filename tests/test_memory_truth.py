"""Training memory against a real training step on CPU: a tiny transformers Llama and torch.optim.AdamW.

Weights, gradients and optimizer state are measured from the tensors themselves (exact); activations with
``torch.autograd.graph.saved_tensors_hooks``, summing the bytes of the distinct storages saved for backward
(parameters excluded). Our formula must be within 10% (derived tensor by tensor, it lands far closer).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from monitor.model.hf_config import spec_from_hf_config  # noqa: E402
from monitor.model.memory import MemoryConfig, activation_memory, training_memory  # noqa: E402

TINY = dict(
    hidden_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,  # grouped-query attention: eager attention repeats k/v, flash does not
    intermediate_size=136,
    vocab_size=100,
    max_position_embeddings=64,
)


def _model(attn: str, dtype: torch.dtype, **overrides: int) -> tuple[object, object]:
    cfg = transformers.LlamaConfig(**{**TINY, **overrides})
    cfg._attn_implementation = attn
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).to(dtype)
    model.train()
    return cfg, model


def _saved_activation_bytes(
    model: object, ids: torch.Tensor, checkpoint: bool = False, autocast: bool = False
) -> int:
    """Bytes of distinct non-parameter storages saved for backward during one forward (then run backward)."""
    if checkpoint:
        enable = (
            getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        )  # type: ignore[attr-defined]
        enable()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}  # type: ignore[attr-defined]
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with (
        torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast),
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
    ):
        loss = model(input_ids=ids, labels=ids).loss  # type: ignore[operator]
    loss.backward()
    return sum(seen.values())


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_weights_gradients_and_adamw_state_bytes_are_exact() -> None:
    cfg, model = _model("eager", torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)  # type: ignore[attr-defined]
    ids = torch.randint(0, TINY["vocab_size"], (2, 16))
    model(input_ids=ids, labels=ids).loss.backward()  # type: ignore[operator]
    opt.step()
    params = list(model.parameters())  # type: ignore[attr-defined]
    weight_bytes = sum(p.numel() * p.element_size() for p in params)
    grad_bytes = sum(p.grad.numel() * p.grad.element_size() for p in params)
    state_bytes = sum(
        t.numel() * t.element_size() for s in opt.state.values() for t in s.values() if torch.is_tensor(t)
    )
    est = training_memory(
        spec_from_hf_config(cfg), MemoryConfig(seq_len=16, micro_batch=2, optimizer="adamw", precision="fp32")
    )
    assert est.weights_bytes == weight_bytes
    assert est.gradients_bytes == grad_bytes
    # exp_avg + exp_avg_sq (8 bytes per parameter) + one float32 ``step`` per parameter tensor
    assert est.optimizer_bytes == state_bytes
    assert est.params_total == sum(p.numel() for p in params)


def test_biases_count_as_tensors_too() -> None:
    """Qwen2 has q/k/v biases: one more tensor (and step counter) per projection."""
    cfg = transformers.Qwen2Config(**{**TINY, "num_hidden_layers": 1})
    torch.manual_seed(0)
    model = transformers.Qwen2ForCausalLM(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    ids = torch.randint(0, TINY["vocab_size"], (1, 8))
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    state_bytes = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values())
    est = training_memory(
        spec_from_hf_config(cfg), MemoryConfig(seq_len=8, optimizer="adam", precision="fp32")
    )
    assert est.weights_bytes == sum(p.numel() * 4 for p in model.parameters())
    assert est.optimizer_bytes == state_bytes


def test_sgd_momentum_state_bytes_are_exact() -> None:
    cfg, model = _model("eager", torch.float32)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)  # type: ignore[attr-defined]
    ids = torch.randint(0, TINY["vocab_size"], (1, 8))
    model(input_ids=ids, labels=ids).loss.backward()  # type: ignore[operator]
    opt.step()
    state_bytes = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values())
    est = training_memory(
        spec_from_hf_config(cfg), MemoryConfig(seq_len=8, optimizer="sgd-momentum", precision="fp32")
    )
    assert est.optimizer_bytes == state_bytes


@pytest.mark.parametrize(
    ("attn", "flash", "dtype", "precision"),
    [
        ("eager", False, torch.float32, "fp32"),  # S×S scores stored (fp32 softmax output)
        ("eager", False, torch.bfloat16, "bf16"),  # fp32 softmax output plus its bf16 copy
        ("sdpa", True, torch.float32, "fp32"),  # CPU flash kernel: q, k, v, out, log-sum-exp; no S×S
        ("sdpa", True, torch.bfloat16, "bf16"),
        ("eager", False, torch.float32, "amp"),  # autocast: fp32 residual stream, 16-bit weight copies
        ("sdpa", True, torch.float32, "amp"),
    ],
)
@pytest.mark.parametrize(("seq_len", "batch"), [(40, 3), (64, 1)])
def test_activations_match_saved_tensors(
    attn: str, flash: bool, dtype: torch.dtype, precision: str, seq_len: int, batch: int
) -> None:
    cfg, model = _model(attn, dtype)
    ids = torch.randint(0, TINY["vocab_size"], (batch, seq_len))
    measured = _saved_activation_bytes(model, ids, autocast=precision == "amp")
    config = MemoryConfig(seq_len=seq_len, micro_batch=batch, precision=precision, flash_attention=flash)
    ours = activation_memory(spec_from_hf_config(cfg), config).total_bytes
    assert ours == pytest.approx(measured, rel=0.10)
    assert ours == pytest.approx(measured, rel=0.001)  # the derivation is tensor by tensor


def test_flash_attention_removes_the_quadratic_term() -> None:
    """Doubling S grows eager activations faster than linearly (S×S scores); flash ones linearly."""
    cfg, _ = _model("eager", torch.float32)
    spec = spec_from_hf_config(cfg)

    def layers(s: int, flash: bool) -> float:
        return activation_memory(
            spec, MemoryConfig(seq_len=s, precision="fp32", flash_attention=flash)
        ).per_layer_bytes

    assert layers(128, True) == pytest.approx(2 * layers(64, True))
    assert layers(128, False) > 2 * layers(64, False)


@pytest.mark.parametrize("precision", ["fp32", "amp"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_full_recomputation_keeps_layer_inputs(attn: str, precision: str) -> None:
    cfg, model = _model(attn, torch.float32)
    ids = torch.randint(0, TINY["vocab_size"], (2, 32))
    measured = _saved_activation_bytes(model, ids, checkpoint=True, autocast=precision == "amp")
    config = MemoryConfig(
        seq_len=32, micro_batch=2, precision=precision, recompute="full", flash_attention=attn == "sdpa"
    )
    act = activation_memory(spec_from_hf_config(cfg), config)
    # what the forward keeps; the recompute buffer is one layer re-materialised during backward
    assert act.total_bytes - act.recompute_buffer_bytes == pytest.approx(measured, rel=0.001)
    # one layer's activations (and, under autocast, its 16-bit weight copies) come back during backward
    assert act.recompute_buffer_bytes >= act.per_layer_bytes
    if precision == "fp32":
        assert act.recompute_buffer_bytes == pytest.approx(act.per_layer_bytes)
