"""The memory model's arithmetic: bytes per parameter, ZeRO, TP/PP, Korthikanti, the CLI."""

from __future__ import annotations

import json

import pytest

from monitor.cli import main
from monitor.errors import InputError
from monitor.model.memory import (
    MemoryConfig,
    bytes_per_param,
    korthikanti_layer_bytes,
    params_per_device,
    training_memory,
)
from monitor.model.params import count_params
from monitor.model.spec import ModelSpec

# Llama-2-7B (published-configs.json): 6,738,415,616 parameters (literature.md)
LLAMA2_7B = ModelSpec(
    model_type="llama", num_layers=32, hidden_size=4096, vocab_size=32000, num_heads=32, num_kv_heads=32,
    head_dim=128, v_head_dim=128, intermediate_size=11008,
)  # fmt: skip
LLAMA2_7B_CONFIG = {
    "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32,
    "num_hidden_layers": 32, "num_key_value_heads": 32, "vocab_size": 32000, "tie_word_embeddings": False,
}  # fmt: skip
N = 6_738_415_616


def test_spec_matches_the_published_count() -> None:
    assert count_params(LLAMA2_7B).total == N


def test_mixed_precision_adam_is_16_bytes_per_parameter() -> None:
    # ZeRO (Rajbhandari et al. 2019) §3.1: 2 (fp16 weights) + 2 (fp16 grads) + 12 (fp32 master,
    # momentum, variance)
    b = bytes_per_param("mixed", "adamw")
    assert (b.weights, b.gradients, b.optimizer) == (2, 2, 12)
    f = bytes_per_param("fp32", "adam")
    assert (f.weights, f.gradients, f.optimizer) == (4, 4, 8)
    assert bytes_per_param("fp32", "sgd").optimizer == 0


@pytest.mark.parametrize("zero", [0, 1, 2, 3])
def test_zero_stages_shard_what_the_paper_says(zero: int) -> None:
    dp = 8
    base = training_memory(LLAMA2_7B, MemoryConfig(seq_len=2048, zero=0, dp=dp))
    est = training_memory(LLAMA2_7B, MemoryConfig(seq_len=2048, zero=zero, dp=dp))
    assert est.optimizer_bytes == pytest.approx(base.optimizer_bytes / (dp if zero >= 1 else 1))
    assert est.gradients_bytes == pytest.approx(base.gradients_bytes / (dp if zero >= 2 else 1))
    assert est.weights_bytes == pytest.approx(base.weights_bytes / (dp if zero >= 3 else 1))
    assert est.activations_bytes == base.activations_bytes


def test_zero3_model_states_match_the_zero_paper_formula() -> None:
    # ZeRO paper figure 1: stage 3 keeps (2 + 2 + K)·Ψ / N_d bytes with K = 12
    est = training_memory(LLAMA2_7B, MemoryConfig(seq_len=2048, zero=3, dp=64), param_tensors=0)
    assert est.weights_bytes + est.gradients_bytes + est.optimizer_bytes == pytest.approx(16 * N / 64)


def test_tensor_and_pipeline_parallel_split_the_parameters() -> None:
    assert params_per_device(LLAMA2_7B, tp=4) == pytest.approx(N / 4)
    # pp=2: 16 layers each; the first stage also holds the token embedding, the last the LM head + final norm
    layer = (N - 2 * 32000 * 4096 - 4096) / 32
    first = 16 * layer + 32000 * 4096
    last = 16 * layer + 32000 * 4096 + 4096
    assert params_per_device(LLAMA2_7B, pp=2) == pytest.approx(max(first, last))


def test_korthikanti_equation_1() -> None:
    # s·b·h·(34 + 5·a·s/h) for GPT-3 175B's layer at s=2048, b=1, h=12288, a=96
    s, b, h, a = 2048, 1, 12288, 96
    assert korthikanti_layer_bytes(s, b, h, a, flash=False) == s * b * h * 34 + 5 * a * s * s * b
    assert korthikanti_layer_bytes(s, b, h, a, flash=True) == s * b * h * 34


def test_korthikanti_with_tensor_and_sequence_parallelism() -> None:
    s, b, h, a, t = 2048, 1, 12288, 96, 8
    assert korthikanti_layer_bytes(s, b, h, a, flash=False, tp=t) == pytest.approx(
        s * b * h * (10 + 24 / t + 5 * a * s / (h * t))
    )
    assert korthikanti_layer_bytes(s, b, h, a, flash=False, tp=t, sp=True) == pytest.approx(
        s * b * h * (34 + 5 * a * s / h) / t
    )


def test_sequence_parallelism_splits_the_norm_activations() -> None:
    plain = training_memory(LLAMA2_7B, MemoryConfig(seq_len=4096, tp=8, flash_attention=True))
    sp = training_memory(
        LLAMA2_7B, MemoryConfig(seq_len=4096, tp=8, flash_attention=True, sequence_parallel=True)
    )
    # two RMSNorms per layer: fp32 input 4h + normalised and scaled 2·2h + rsqrt 4, per token, mixed precision
    norms = 2 * (4 * 4096 + 4 * 4096 + 4)
    assert plain.activations.per_layer_bytes - sp.activations.per_layer_bytes == pytest.approx(
        4096 * norms * (1 - 1 / 8)
    )


def test_recompute_shrinks_and_flash_attention_drops_scores() -> None:
    plain = training_memory(LLAMA2_7B, MemoryConfig(seq_len=4096)).activations_bytes
    flash = training_memory(LLAMA2_7B, MemoryConfig(seq_len=4096, flash_attention=True)).activations_bytes
    recompute = training_memory(LLAMA2_7B, MemoryConfig(seq_len=4096, recompute="full")).activations_bytes
    # eager scores: 32 heads × 4096 keys × (4 + 2) bytes per token per layer
    scores = 32 * 4096 * 4096 * 6 * 32
    assert plain - flash > scores * 0.95
    assert recompute < plain
    kept = training_memory(LLAMA2_7B, MemoryConfig(seq_len=4096, recompute="full")).activations.layers_bytes
    assert kept == 32 * 4096 * 4096 * 2  # each layer's bf16 input, nothing else


def test_cli_memory_json_and_fit(
    tmp_path: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "config.json"  # type: ignore[operator]
    cfg.write_text(json.dumps(LLAMA2_7B_CONFIG))
    code = main(
        ["memory", "--config", str(cfg), "--seq-len", "4096", "--flash-attention", "--gpu", "H100", "--json"]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["params_total"] == N
    assert out["weights_bytes"] == 2 * N and out["optimizer_bytes"] >= 12 * N
    assert out["device_memory_bytes"] == 80e9
    assert out["fits"] is False  # 16 bytes × 6.7B = 108 GB of model states alone
    code = main(["memory", "--config", str(cfg), "--seq-len", "4096", "--flash-attention", "--zero", "3",
                 "--dp", "8", "--gpu", "H100", "--json"])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["fits"] is True and out["headroom_bytes"] > 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--seq-len", "0"], "--seq-len"),
        (["--seq-len", "nan"], "--seq-len"),
        (["--seq-len", "128", "--gpu", "A100"], "40GB or 80GB"),
        (["--seq-len", "128", "--gpu", "Z9000"], "--gpu"),
        (["--seq-len", "128", "--zero", "2"], "--dp"),
        (["--seq-len", "128", "--tp", "3"], "--tp"),
        (["--seq-len", "128", "--device-memory-gb", "-1"], "--device-memory-gb"),
    ],
)
def test_cli_memory_bad_input_is_one_line(
    tmp_path: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    cfg = tmp_path / "config.json"  # type: ignore[operator]
    cfg.write_text(json.dumps(LLAMA2_7B_CONFIG))
    assert main(["memory", "--config", str(cfg), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err


def test_only_llama_like_layers_claim_a_measured_accounting() -> None:
    cfg = MemoryConfig(seq_len=128)
    assert training_memory(LLAMA2_7B, cfg).activations.measured_family
    gpt2 = LLAMA2_7B.model_copy(update={"norm": "layernorm", "mlp_gated": False, "model_type": "gpt2"})
    assert not training_memory(gpt2, cfg).activations.measured_family


def test_pipeline_deeper_than_the_model_is_refused() -> None:
    with pytest.raises(InputError, match="--pp"):
        training_memory(LLAMA2_7B, MemoryConfig(seq_len=128, pp=64))
