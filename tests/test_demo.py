"""`mfu demo`: the demo model's ModelSpec matches FlopCounterMode, and a short run produces every output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from monitor.cli import main
from monitor.demo import DemoConfig, DemoGPT, demo_spec, generate_text
from monitor.model.flops import flops_per_token
from monitor.model.params import count_params

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo caches the CPU's matmul rate: each test here gets its own cache, so that no other test of the
    session finds a calibrated CPU peak it did not ask for."""
    monkeypatch.setenv("MFU_MONITOR_CACHE_DIR", str(tmp_path / "demo-cache"))


@pytest.mark.parametrize(
    "cfg", [DemoConfig(), DemoConfig(vocab_size=50, block_size=24, n_layer=3, n_head=3, d_model=48)]
)
def test_demo_spec_flops_equal_flopcounter_on_the_demo_model(cfg: DemoConfig) -> None:
    model = DemoGPT(cfg)
    x = torch.randint(0, cfg.vocab_size, (2, cfg.block_size))
    with FlopCounterMode(display=False) as counter:
        _, loss = model(x, x)
        loss.backward()
    measured = counter.get_total_flops() / x.numel()
    analytic = flops_per_token(demo_spec(cfg), cfg.block_size)
    assert analytic.training == pytest.approx(measured, rel=1e-9)
    # parameters: the spec's count equals the module's (tied head counted once)
    assert count_params(demo_spec(cfg)).total == sum(p.numel() for p in model.parameters())


def test_default_demo_model_has_a_few_million_parameters() -> None:
    n = sum(p.numel() for p in DemoGPT(DemoConfig()).parameters())
    assert 1_000_000 < n < 10_000_000


def test_generated_text_is_deterministic_and_fits_the_vocabulary() -> None:
    text = generate_text(5000)
    assert text == generate_text(5000) and len(text) == 5000
    assert len(set(text)) <= DemoConfig().vocab_size


@pytest.mark.slow
def test_mfu_demo_runs_a_few_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "demo.jsonl"
    assert (
        main(["demo", "--steps", "5", "--port", "0", "--log", str(log), "--no-live", "--batch-size", "2"])
        == 0
    )
    out = capsys.readouterr().out
    assert "MFU" in out and "`mfu calibrate`" in out and "/metrics: http://127.0.0.1:" in out
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["event"] for r in records if r["event"] != "step"] == ["run_start", "run_end"]
    assert len([r for r in records if r["event"] == "step"]) == 5
    assert records[0]["peak_source"] == "calibrated" and records[0]["model"] == "mfu-demo-gpt"


def test_demo_rejects_bad_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err
    for argv in (["--seconds", "inf"], ["--seconds", "1e9"], ["--steps", "5", "--seconds", "10"]):
        assert main(["demo", *argv]) == 2
        assert "--seconds" in capsys.readouterr().err


def test_two_demo_runs_share_one_cpu_peak(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first run measures the CPU's matmul rate and caches it; the next one reuses it, so their MFU differ
    only by their training speed (a peak measured anew under whatever load there is made it swing)."""
    peaks, notes = [], []
    for i in range(2):
        log = tmp_path / f"demo{i}.jsonl"
        argv = ["demo", "--steps", "3", "--no-serve", "--log", str(log), "--no-live", "--batch-size", "2"]
        assert main(argv) == 0
        peaks.append(json.loads(log.read_text().splitlines()[0])["peak_flops_per_second"])
        notes.append(capsys.readouterr().out)
    assert peaks[0] == peaks[1]
    assert "measured now" in notes[0] and "cached by `mfu calibrate`" in notes[1]


def test_an_unwritable_run_log_is_not_advertised(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    argv = [
        "demo",
        "--steps",
        "2",
        "--no-serve",
        "--log",
        str(blocker / "x.jsonl"),
        "--no-live",
        "--batch-size",
        "2",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "no run log" in out and "mfu analyze" not in out
