"""Calibration on this CPU (tiny matrices, a fraction of a second) and its cache; the CLI of the hardware
commands, in process."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from monitor.cli import main
from monitor.errors import InputError
from monitor.hardware.calibrate import calibrate, load_cached_calibration
from monitor.hardware.detect import detect_accelerator
from monitor.hardware.nvml import NullBackend


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MFU_MONITOR_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_calibrate_measures_a_rate_consistent_with_its_own_timing() -> None:
    torch.set_num_threads(1)
    started = time.perf_counter()
    result = calibrate("fp32", size=128, seconds=0.1, cache=False)
    wall = time.perf_counter() - started
    assert result.source == "calibrated" and result.device == "cpu" and result.dtype == "fp32"
    assert result.matrix_size == 128 and result.repeats >= result.batches >= 1
    assert result.min_flops_per_second <= result.median_flops_per_second <= result.flops_per_second
    # The best batch is at least the mean rate over the whole call: 2·n³·repeats over the wall time.
    assert result.flops_per_second >= 2 * 128**3 * result.repeats / wall
    # An independent timing of the same matmul lands within a broad band of the median (noisy shared CPU).
    a, b = torch.randn(128, 128), torch.randn(128, 128)
    t0 = time.perf_counter()
    for _ in range(50):
        a @ b
    independent = 2 * 128**3 * 50 / (time.perf_counter() - t0)
    assert independent / 20 < result.median_flops_per_second < independent * 20


def test_cache_round_trip(cache_in_tmp: Path) -> None:
    assert load_cached_calibration("fp32", "cpu") is None
    result = calibrate("float32", size=64, seconds=0.05)
    assert (cache_in_tmp / "calibration.json").exists()
    cached = load_cached_calibration("fp32", "cpu")
    assert cached == result
    assert load_cached_calibration("bf16", "cpu") is None  # per dtype
    # Used by detection as the measured fallback where there is no GPU.
    info = detect_accelerator("fp32", backend=NullBackend("no NVML"), calibrated=cached.flops_per_second)
    assert info.source == "calibrated" and info.peak_flops_per_second == result.flops_per_second


def test_corrupt_cache_is_ignored(cache_in_tmp: Path) -> None:
    (cache_in_tmp / "calibration.json").write_text("{not json", encoding="utf-8")
    assert load_cached_calibration("fp32") is None
    calibrate("fp32", size=32, seconds=0.02)  # rewrites it
    assert load_cached_calibration("fp32") is not None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dtype": "fp8"}, "cannot calibrate fp8"),
        ({"dtype": "tf32"}, "tf32 is a CUDA tensor-core mode"),
        ({"dtype": "bf17"}, "unknown dtype"),
        ({"device": "tpu"}, "unknown device"),
        ({"size": 4}, "at least 16"),
        ({"seconds": 0}, "above 0"),
    ],
)
def test_bad_input(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InputError, match=match):
        calibrate(**kwargs)  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_unavailable() -> None:
    with pytest.raises(InputError, match="--device: CUDA is not available"):
        calibrate("bf16", device="cuda")


# --- CLI ---------------------------------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_hardware_name_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "hardware", "--name", "NVIDIA H100 80GB HBM3", "--json")
    data = json.loads(out)
    assert code == 0 and data["device"] == "H100 SXM"
    assert data["peak_flops_per_second"] == pytest.approx(989.4e12)
    code, out, _ = run_cli(capsys, "hardware", "--name", "h100-sxm", "--dtype", "fp8", "--json")
    assert json.loads(out)["peak_flops_per_second"] == pytest.approx(1978.9e12)


def test_cli_hardware_unknown_name_is_null_and_nonzero(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "hardware", "--name", "NVIDIA L40", "--json")
    data = json.loads(out)
    assert code == 1 and data["peak_flops_per_second"] is None and data["device"] == "NVIDIA L40"
    assert "L40S" in data["suggestions"] or "NVIDIA L40S" in data["suggestions"]


def test_cli_hardware_no_such_unit(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "hardware", "--name", "V100", "--dtype", "bf16", "--json")
    data = json.loads(out)
    assert code == 1 and data["peak_flops_per_second"] is None and "no bf16 units" in data["reason"]


def test_cli_hardware_catalogue_and_devices(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "hardware", "--json")
    data = json.loads(out)
    assert code == 0 and data["dtype"] == "bf16"
    keys = {row["key"] for row in data["catalog"]}
    assert {"h100-sxm", "h200-sxm", "l4", "l40s", "a10", "mi300x"} <= keys
    if not data["nvml"]["available"]:
        assert data["devices"] == [] and data["nvml"]["reason"]
    code, out, _ = run_cli(capsys, "hardware")
    assert code == 0 and "H100 SXM" in out and "989.4" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["hardware", "--dtype", "bf99"],
        ["calibrate", "--dtype", "fp8"],
        ["calibrate", "--size", "2"],
    ],
)
def test_cli_bad_input_is_one_line_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "error:" in err and "Traceback" not in err


def test_cli_calibrate_json(capsys: pytest.CaptureFixture[str], cache_in_tmp: Path) -> None:
    torch.set_num_threads(1)
    code, out, _ = run_cli(capsys, "calibrate", "--size", "64", "--seconds", "0.05", "--json")
    data = json.loads(out)
    assert code == 0 and data["flops_per_second"] > 0 and data["source"] == "calibrated"
    assert data["matrix_size"] == 64 and data["dtype"] == "fp32"
    assert load_cached_calibration("fp32", "cpu") is not None


def test_cli_hardware_lists_detected_devices(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fakes import FakeGpuBackend, fake_device

    import monitor.cli.cmd_hardware as cmd

    backend = FakeGpuBackend(
        [
            fake_device("NVIDIA H100 80GB HBM3", pci_device_id=0x2330),
            fake_device("NVIDIA Mystery", compute_capability=(8, 9)),
        ]
    )
    monkeypatch.setattr(cmd, "open_backend", lambda: backend)
    code, out, _ = run_cli(capsys, "hardware", "--json")
    devices = json.loads(out)["devices"]
    assert code == 0 and [d["source"] for d in devices] == ["catalog", "unknown"]
    assert devices[0]["peak_flops_per_second"] == pytest.approx(989.4e12) and devices[1]["warning"]
    code, out, _ = run_cli(capsys, "hardware")
    assert "GPU 0: NVIDIA H100 80GB HBM3" in out and "warning:" in out


def test_absurd_sizes_and_durations_are_refused() -> None:
    from monitor.errors import InputError
    from monitor.hardware.calibrate import calibrate

    with pytest.raises(InputError, match=r"--size.*GiB"):
        calibrate("fp32", size=100_000)
    for seconds in (float("inf"), float("nan"), 1e9):
        with pytest.raises(InputError, match="--seconds"):
            calibrate("fp32", size=64, seconds=seconds)


def test_an_unwritable_cache_is_said_not_claimed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from monitor.hardware.calibrate import calibrate

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MFU_MONITOR_CACHE_DIR", str(blocker / "cache"))
    result = calibrate("fp32", size=64, seconds=0.05)
    assert result.cached is False and result.cache_error and "cache" in result.cache_error
    monkeypatch.setenv("MFU_MONITOR_CACHE_DIR", str(tmp_path / "cache"))
    assert calibrate("fp32", size=64, seconds=0.05).cached is True
