"""The integrations' shared pieces: dtypes from trainer settings, tokens from batch shapes, the step's
token-weighted length, option checking, the Hugging Face config inside a wrapper."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from integrations._common import (
    BatchCount,
    StepTokens,
    accelerate_dtype,
    batch_tokens,
    check_monitor_kwargs,
    count_with,
    find_hf_config,
    hf_args_dtype,
    lightning_precision_dtype,
)
from monitor.errors import InputError
from monitor.hardware.dtypes import DTYPES


@pytest.mark.parametrize(
    ("precision", "dtype"),
    [
        ("bf16-mixed", "bf16"),
        ("bf16-true", "bf16"),
        ("16-mixed", "fp16"),
        ("16-true", "fp16"),
        ("32-true", None),  # fp32 parameters: the monitor decides fp32 or tf32
        ("64-true", "fp64"),
        ("transformer-engine", "fp8"),
        ("nf4-something", None),
        (None, None),
    ],
)
def test_lightning_precision(precision: str | None, dtype: str | None) -> None:
    assert lightning_precision_dtype(precision) == dtype
    assert dtype is None or dtype in DTYPES


def test_hf_args_dtype_order() -> None:
    assert hf_args_dtype(bf16=True, fp16=False, tf32=True) == "bf16"  # autocast wins over the tf32 flag
    assert hf_args_dtype(bf16=False, fp16=True, tf32=None) == "fp16"
    assert hf_args_dtype(bf16=False, fp16=False, tf32=True) == "tf32"
    assert hf_args_dtype(bf16=False, fp16=False, tf32=None) is None


def test_accelerate_dtype() -> None:
    assert [accelerate_dtype(p) for p in ("no", "bf16", "fp16", "fp8", None)] == [
        None,
        "bf16",
        "fp16",
        "fp8",
        None,
    ]


def test_batch_tokens_shapes() -> None:
    ids = torch.zeros(3, 7, dtype=torch.long)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[0, -2:] = 0
    hf = batch_tokens({"input_ids": ids, "attention_mask": mask, "labels": ids})
    assert hf is not None and (hf.tokens, hf.seq_len, hf.real) == (21, 7, 19)
    emb = batch_tokens({"inputs_embeds": torch.zeros(2, 5, 16)})
    assert emb is not None and (emb.tokens, emb.seq_len, emb.real) == (10, 5, None)
    pair = batch_tokens((ids, torch.zeros(3)))
    assert pair is not None and (pair.tokens, pair.seq_len) == (21, 7)
    features = batch_tokens([torch.zeros(4, 8), torch.zeros(4, 1)])
    assert features is not None and (features.tokens, features.seq_len) == (4, 1)
    keyed = batch_tokens({"tokens": ids})
    assert keyed is not None and keyed.tokens == 21
    assert batch_tokens("not a batch") is None
    assert batch_tokens({"text": ["a", "b"]}) is None


def test_mask_of_other_shape_gives_no_real_count() -> None:
    ids = torch.zeros(2, 4, dtype=torch.long)
    counted = batch_tokens({"input_ids": ids, "attention_mask": torch.ones(2, 4, 4)})
    assert counted is not None and counted.real is None


def test_step_tokens_weighted_length() -> None:
    acc = StepTokens()
    acc.add(BatchCount(32, 16, 30))
    acc.add(BatchCount(64, 32, 64))
    assert acc.tokens == 96 and acc.real == 94
    assert acc.seq_len == round((32 * 16 + 64 * 32) / 96)  # 26.67 -> 27
    acc.add(BatchCount(8, None))
    assert acc.seq_len is None and acc.real is None  # one micro-batch of unknown length/padding
    acc.reset()
    assert (acc.tokens, acc.seq_len, acc.real) == (0, None, 0)


def test_count_with_user_function() -> None:
    assert count_with(lambda b: 5, object()).tokens == 5  # type: ignore[union-attr]
    got = count_with(lambda b: (12, 6), object())
    assert got is not None and (got.tokens, got.seq_len) == (12, 6)
    with pytest.raises(InputError, match="tokens_fn"):
        count_with(lambda b: -1, object())
    with pytest.raises(InputError, match="tokens_fn"):
        count_with(lambda b: 2.5, object())  # type: ignore[arg-type,return-value]
    for bad in ((-1, 16), (16, 0), (16,), (16, 8, 2), ("many", 8)):
        with pytest.raises(InputError, match="tokens_fn"):
            count_with(lambda b, bad=bad: bad, object())  # type: ignore[misc]


def test_check_monitor_kwargs() -> None:
    assert check_monitor_kwargs({"port": 9400, "log_path": "x"}, "Cb") == {"port": 9400, "log_path": "x"}
    with pytest.raises(InputError, match="porrt"):
        check_monitor_kwargs({"porrt": 1}, "Cb")
    with pytest.raises(InputError, match="taken from the trainer"):
        check_monitor_kwargs({"optimizer": None}, "Cb")


def test_find_hf_config_in_a_wrapper() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    backbone = transformers.LlamaForCausalLM(config)
    wrapper = torch.nn.Sequential(torch.nn.Identity(), backbone)
    assert find_hf_config(wrapper) is backbone.config
    assert find_hf_config(torch.nn.Linear(2, 2)) is None


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value.split(".")[0])  # importlib.import_module("...") targets
    return names


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("_common.py", {"transformers", "lightning", "pytorch_lightning", "accelerate"}),
        ("__init__.py", {"transformers", "lightning", "pytorch_lightning", "accelerate", "torch"}),
        ("hf_trainer.py", {"lightning", "pytorch_lightning", "accelerate"}),
        ("lightning.py", {"transformers", "accelerate"}),
    ],
)
def test_each_integration_needs_only_its_framework(module: str, forbidden: set[str]) -> None:
    path = Path(__file__).resolve().parents[1] / "integrations" / module
    assert not (_imported_packages(path) & forbidden)
