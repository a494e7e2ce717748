"""Dtype names as users and frameworks write them, and the dtype a run really computes in."""

from __future__ import annotations

import pytest
import torch

from monitor.errors import InputError
from monitor.hardware.dtypes import DTYPES, normalize_dtype, run_dtype


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bf16", "bf16"),
        ("bfloat16", "bf16"),
        ("torch.bfloat16", "bf16"),
        (torch.bfloat16, "bf16"),
        ("BF16-mixed", "bf16"),
        (torch.float16, "fp16"),
        ("half", "fp16"),
        ("16-mixed", "fp16"),
        (torch.float32, "fp32"),
        ("tf32", "tf32"),
        (torch.float64, "fp64"),
        (torch.float8_e4m3fn, "fp8"),
        ("float8_e5m2", "fp8"),
        (torch.int8, "int8"),
        ("  FP8 ", "fp8"),
    ],
)
def test_normalize(value: object, expected: str) -> None:
    assert normalize_dtype(value) == expected


@pytest.mark.parametrize("value", ["bf61", "float128", "", torch.complex64, "int4"])
def test_unknown_dtype_lists_the_valid_ones(value: object) -> None:
    with pytest.raises(InputError) as caught:
        normalize_dtype(value)
    message = str(caught.value)
    assert message.startswith("dtype: unknown dtype") and all(d in message for d in DTYPES)


def test_run_dtype_follows_parameters_and_autocast() -> None:
    model = torch.nn.Linear(4, 4)
    assert run_dtype(model) == "fp32"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert run_dtype(model) == "bf16"  # autocast wins over fp32 parameters
    assert run_dtype(model.to(torch.bfloat16)) == "bf16"
    assert run_dtype(None) == "fp32"
