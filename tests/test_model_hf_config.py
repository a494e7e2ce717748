"""Hugging Face config import: family defaults, input forms, bad input, the measured fallback, `mfu flops`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from model_configs import TINY_CONFIGS, build_model, count_flops, hf_config

from monitor.cli import main
from monitor.errors import InputError
from monitor.model.hf_config import SUPPORTED_MODEL_TYPES, spec_from_hf_config
from monitor.model.measure import build_meta_model
from monitor.model.params import count_params
from monitor.model.summary import figures_for


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("model_type", [t for t in SUPPORTED_MODEL_TYPES if t != "deepseek_v2"])
def test_family_defaults_equal_transformers_defaults(model_type: str) -> None:
    """A config with only model_type: every field takes the family default, as transformers applies it."""
    model = build_meta_model({"model_type": model_type})
    assert count_params(spec_from_hf_config({"model_type": model_type})).total == sum(
        p.numel() for p in model.parameters()
    )


def test_deepseek_v2_default_top_k_is_missing_and_named() -> None:
    with pytest.raises(InputError, match="num_experts_per_tok"):
        spec_from_hf_config({"model_type": "deepseek_v2"})


def test_family_specifics_are_applied() -> None:
    assert spec_from_hf_config({"model_type": "gemma"}).tie_word_embeddings  # gemma ties by default
    assert spec_from_hf_config({"model_type": "gemma2"}).head_dim == 256
    qwen2 = spec_from_hf_config({"model_type": "qwen2"})
    assert qwen2.qkv_bias and not qwen2.o_bias
    assert spec_from_hf_config({"model_type": "olmo2"}).qk_norm == "projection"
    gpt2 = spec_from_hf_config({"model_type": "gpt2", "n_embd": 64, "n_head": 4, "n_layer": 2})
    assert gpt2.intermediate_size == 256 and gpt2.position_embeddings == 1024
    gemma3 = spec_from_hf_config({"model_type": "gemma3_text", "num_hidden_layers": 7})
    assert gemma3.layer_windows == (4096, 4096, 4096, 4096, 4096, None, 4096)
    v3 = spec_from_hf_config({"model_type": "deepseek_v3"})
    assert v3.moe is not None and v3.moe.layers[0] == 3 and v3.moe.shared_intermediate_size == 2048


def test_dict_path_folder_and_config_object_agree(tmp_path: Path) -> None:
    raw = TINY_CONFIGS["qwen3_moe"]
    (tmp_path / "config.json").write_text(json.dumps(raw))
    from_dict = spec_from_hf_config(raw)
    assert spec_from_hf_config(tmp_path / "config.json") == from_dict
    assert spec_from_hf_config(str(tmp_path)) == from_dict
    assert count_params(spec_from_hf_config(hf_config(raw))) == count_params(from_dict)


def test_supported_path_does_not_import_torch_or_transformers() -> None:
    code = (
        "import sys; from monitor.model.hf_config import spec_from_hf_config;"
        "from monitor.model.flops import flops_per_token; from monitor.model.presets import load_preset;"
        "flops_per_token(load_preset('deepseek-v3'), 4096);"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"model_type": "llama", "hidden_size": -4096}, "hidden_size"),
        ({"model_type": "llama", "num_hidden_layers": 0}, "num_hidden_layers"),
        ({"model_type": "llama", "vocab_size": None}, "vocab_size"),
        ({"model_type": "llama", "hidden_size": "4096"}, "hidden_size"),
        ({"model_type": "llama", "hidden_size": 100, "num_attention_heads": 7}, "num_attention_heads"),
        (
            {"model_type": "mistral", "num_attention_heads": 32, "num_key_value_heads": 5},
            "num_key_value_heads",
        ),
        ({"model_type": "mixtral", "num_local_experts": 2, "num_experts_per_tok": 3}, "num_experts_per_tok"),
        ({"model_type": "qwen2_moe", "mlp_only_layers": "all"}, "mlp_only_layers"),
        ({"model_type": "no_such_family"}, "model_type"),
        ({"hidden_size": 8}, "model_type"),
    ],
)
def test_bad_config_names_the_field(config: dict, field: str) -> None:
    with pytest.raises(InputError) as err:
        spec_from_hf_config(config)
    assert err.value.field == field
    assert err.value.fix


def test_validation_errors_read_as_one_line_with_a_fix() -> None:
    from pydantic import ValidationError

    from monitor.errors import describe_validation_error, validation_problem
    from monitor.model.spec import MoESpec

    with pytest.raises(ValidationError) as field_error:
        MoESpec(num_experts=0, top_k=1, expert_intermediate_size=8, layers=(0,))
    problem, fix = validation_problem(field_error.value)
    assert problem.startswith("num_experts: ") and "(got 0)" in problem and fix
    with pytest.raises(ValidationError) as cross_error:  # a check across fields has no field of its own
        MoESpec(num_experts=4, top_k=8, expert_intermediate_size=8, layers=(0,))
    line = describe_validation_error(cross_error.value)
    assert line.startswith("top_k (8) exceeds num_experts (4)")
    assert "expert_intermediate_size" not in line  # the whole input is not echoed
    assert "\n" not in line


def test_unknown_type_error_lists_the_supported_ones() -> None:
    with pytest.raises(InputError, match="llama, mistral") as err:
        spec_from_hf_config({"model_type": "rwkv"})
    assert "measure" in str(err.value)


def test_measured_fallback_for_other_model_types() -> None:
    raw = {**TINY_CONFIGS["llama"], "model_type": "starcoder2"}
    figures = figures_for(config=raw, seq_len=11)
    model = build_model(raw)
    forward, backward = count_flops(model, 11)
    assert figures.flops_per_token.method == "measured"
    assert figures.params.total == sum(p.numel() for p in model.parameters())
    assert figures.flops_per_token.forward == pytest.approx(forward)
    assert figures.flops_per_token.training == pytest.approx(forward + backward)


# --- the CLI ---


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_json_has_the_contract_keys(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "flops", "--model", "llama-2-7b", "--seq-len", "2048", "--json")
    data = json.loads(out)
    assert code == 0
    assert data["params"]["total"] == 6_738_415_616 == data["params"]["active"]
    f = data["flops_per_token"]
    assert f["training"] == pytest.approx(3 * f["forward"])
    assert sum(f["breakdown"].values()) == pytest.approx(f["forward"])
    assert set(f["breakdown"]) >= {"attention_proj", "attention_scores", "mlp", "lm_head"}


def test_cli_causal_halves_attention_and_config_path_works(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(TINY_CONFIGS["llama"]))
    _, full, _ = _cli(capsys, "flops", "--config", str(path), "--seq-len", "512", "--json")
    _, causal, _ = _cli(capsys, "flops", "--config", str(path), "--seq-len", "512", "--causal", "--json")
    a = json.loads(full)["flops_per_token"]["breakdown"]["attention_scores"]
    b = json.loads(causal)["flops_per_token"]["breakdown"]["attention_scores"]
    assert b == pytest.approx(a / 2)  # CONTRACTS: --causal halves the attention-score terms


def test_cli_table_shows_shares(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(
        capsys, "flops", "--model", "mixtral-8x7b", "--seq-len", "4096", "--recompute", "full"
    )
    assert code == 0
    for text in ("46,702,792,704", "12,879,925,248", "experts", "%", "hardware"):
        assert text in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--model", "llama-9", "--seq-len", "8"], "--model: unknown preset"),
        (["--model", "gpt2"], "--seq-len"),
        (["--model", "gpt2", "--seq-len", "-1"], "--seq-len"),
        (["--seq-len", "8"], "--config/--model"),
        (["--model", "gpt2", "--seq-len", "8", "--frozen", "layers.40"], "frozen"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list, needle: str
) -> None:
    code, out, err = _cli(capsys, "flops", *argv)
    assert code == 2 and out == ""
    assert needle in err and err.count("\n") == 1


def test_cli_bad_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    not_json = tmp_path / "config.json"
    not_json.write_text("{model_type: llama")
    code, _, err = _cli(capsys, "flops", "--config", str(not_json), "--seq-len", "8")
    assert code == 2 and "not valid JSON" in err and err.count("\n") == 1
    code, _, err = _cli(capsys, "flops", "--config", str(tmp_path / "missing.json"), "--seq-len", "8")
    assert code == 2 and "no such file" in err
    bad_heads = tmp_path / "heads.json"
    bad_heads.write_text(json.dumps({"model_type": "llama", "hidden_size": 100, "num_attention_heads": 7}))
    code, _, err = _cli(capsys, "flops", "--config", str(bad_heads), "--seq-len", "8")
    assert code == 2 and "num_attention_heads" in err and err.count("\n") == 1


def test_cli_lists_presets(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "flops", "--list", "--json")
    names = [p["name"] for p in json.loads(out)["presets"]]
    assert code == 0 and "deepseek-v3" in names and names == sorted(names)


def test_cli_other_model_types(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    measured = tmp_path / "starcoder2.json"
    measured.write_text(json.dumps({**TINY_CONFIGS["llama"], "model_type": "starcoder2"}))
    code, out, _ = _cli(capsys, "flops", "--config", str(measured), "--seq-len", "11", "--json")
    assert code == 0 and json.loads(out)["method"] == "measured"
    code, _, err = _cli(capsys, "flops", "--config", str(measured), "--seq-len", "11", "--causal")
    assert code == 2 and "--causal" in err and err.count("\n") == 1
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"model_type": "no_such_family"}))
    code, _, err = _cli(capsys, "flops", "--config", str(unknown), "--seq-len", "11")
    assert code == 2 and err.startswith("mfu flops: error: model_type:") and err.count("\n") == 1


def test_absurd_sizes_are_refused_at_once() -> None:
    from monitor.errors import InputError
    from monitor.model.hf_config import spec_from_hf_config

    base = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "vocab_size": 100}  # fmt: skip
    for key, value in (("num_hidden_layers", 1e30), ("num_hidden_layers", 10**6), ("hidden_size", 2**40)):
        with pytest.raises(InputError, match=f"{key}.*beyond any model"):
            spec_from_hf_config({**base, key: value})
