"""`mfu estimate`: PaLM's appendix-B arithmetic, throughput ↔ MFU, time and cost, measured FLOPs."""

from __future__ import annotations

import json

import pytest

from monitor.cli import main
from monitor.errors import InputError
from monitor.planning.mfu import mfu_from_throughput, palm_flops_per_token, throughput_for_mfu


def test_palm_540b_table3_mfu() -> None:
    # PaLM appendix B: 6N + 12·L·H·Q·T; 540.35B params, 118 layers, 48 heads × 256, T = 2048;
    # 238.3K tokens/s on 6144 TPU v4 chips at 275 TFLOP/s → 46.2% (table 3)
    flops = palm_flops_per_token(540.35e9, 118, 48 * 256, 2048)
    assert flops == 6 * 540.35e9 + 12 * 118 * 12288 * 2048
    est = mfu_from_throughput(238.3e3, flops, 275e12, 6144)
    assert round(est.mfu * 100, 1) == 46.2


def test_target_mfu_round_trips_and_costs() -> None:
    flops = palm_flops_per_token(7e9, 32, 4096, 4096)
    est = throughput_for_mfu(0.4, flops, 989.4e12, 8, train_tokens=1e12, price_per_device_hour=2.5)
    assert est.tokens_per_second == pytest.approx(0.4 * 989.4e12 * 8 / flops)
    back = mfu_from_throughput(est.tokens_per_second, flops, 989.4e12, 8)
    assert back.mfu == pytest.approx(0.4)
    seconds = 1e12 / est.tokens_per_second
    assert est.train_seconds == pytest.approx(seconds)
    assert est.device_hours == pytest.approx(seconds / 3600 * 8)
    assert est.cost_usd == pytest.approx(seconds / 3600 * 8 * 2.5)


def test_cli_estimate_contract_keys(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["estimate", "--params", "7e9", "--layers", "32", "--hidden", "4096", "--seq-len", "2048",
            "--tokens-per-second", "3000", "--gpu", "A100 80GB", "--json"]  # fmt: skip
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"mfu", "flops_per_token", "achieved_flops_per_second"} <= set(out)
    expected_fpt = 6 * 7e9 + 12 * 32 * 4096 * 2048
    assert out["flops_per_token"] == expected_fpt
    assert out["achieved_flops_per_second"] == pytest.approx(3000 * expected_fpt)
    assert out["mfu"] == pytest.approx(3000 * expected_fpt / 312e12)  # A100 dense bf16 peak (datasheet)


def test_cli_estimate_from_config_matches_flop_counter(
    tmp_path: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """Training FLOPs per token of a real tiny Llama, measured by FlopCounterMode over forward + backward."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(1)
    cfg = transformers.LlamaConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=160, vocab_size=128, max_position_embeddings=64,
    )  # fmt: skip
    cfg._attn_implementation = "eager"
    model = transformers.LlamaForCausalLM(cfg)
    batch, seq = 2, 32
    ids = torch.randint(0, 128, (batch, seq))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, labels=ids).loss.backward()
    measured = counter.get_total_flops() / (batch * seq)
    path = tmp_path / "config.json"  # type: ignore[operator]
    path.write_text(cfg.to_json_string())
    assert main(["estimate", "--config", str(path), "--seq-len", str(seq), "--tokens-per-second", "1e4",
                 "--peak-tflops", "100", "--json"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["flops_per_token"] == pytest.approx(measured, rel=1e-6)
    assert out["mfu"] == pytest.approx(1e4 * measured / 100e12, rel=1e-6)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--tokens-per-second", "0", "--gpu", "H100"], "--tokens-per-second"),
        (["--tokens-per-second", "-5", "--gpu", "H100"], "--tokens-per-second"),
        (["--tokens-per-second", "nan", "--gpu", "H100"], "--tokens-per-second"),
        (["--target-mfu", "1.5", "--gpu", "H100"], "--target-mfu"),
        (["--target-mfu", "0", "--gpu", "H100"], "--target-mfu"),
        (["--target-mfu", "0.4", "--gpu", "H999"], "--gpu"),
        (["--target-mfu", "0.4"], "--gpu/--peak-tflops"),
        (["--target-mfu", "0.4", "--peak-tflops", "inf"], "--peak-tflops"),
        (["--target-mfu", "0.4", "--gpu", "H100", "--num-gpus", "0"], "--num-gpus"),
        (["--target-mfu", "0.4", "--gpu", "H100", "--price-per-hour", "2"], "--price-per-hour"),
        (["--target-mfu", "0.4", "--gpu", "V100", "--dtype", "bf16"], "--dtype"),
        (["--tokens-per-second", "1e9", "--gpu", "H100"], "above the devices' peak"),
    ],
)
def test_cli_estimate_bad_input(capsys: pytest.CaptureFixture[str], args: list[str], needle: str) -> None:
    raw = ["--params", "7e9", "--layers", "32", "--hidden", "4096", "--seq-len", "2048"]
    assert main(["estimate", *raw, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err


def test_raw_mode_needs_all_three() -> None:
    with pytest.raises(InputError, match="--layers"):
        palm_flops_per_token(7e9, 0, 4096, 2048)


def test_cli_estimate_from_a_preset(capsys: pytest.CaptureFixture[str]) -> None:
    from monitor.model.flops import flops_per_token
    from monitor.model.presets import load_preset

    args = ["estimate", "--model", "llama-2-7b", "--seq-len", "4096", "--target-mfu", "0.5",
            "--gpu", "H100", "--num-gpus", "8", "--json"]  # fmt: skip
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"] == 6_738_415_616  # literature.md: Llama-2-7B's exact count
    fpt = flops_per_token(load_preset("llama-2-7b"), 4096).training
    assert out["tokens_per_second"] == pytest.approx(0.5 * 989.4e12 * 8 / fpt)  # H100 SXM dense bf16
    assert main(["estimate", "--model", "no-such-model", "--seq-len", "8", "--target-mfu", "0.5",
                 "--gpu", "H100"]) == 2  # fmt: skip
    assert "\n" not in capsys.readouterr().err.strip()
