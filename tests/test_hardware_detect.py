"""Detection through a fake of our NVML interface: every driver name in the reference, the traps, MIG,
derivation, unknown parts, NVML absent or failing part-way, overrides and bad input."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from fakes import FakeGpuBackend, fake_device, no_gpu

from monitor.errors import InputError
from monitor.hardware.detect import derive_peak, detect_accelerator, peak_at_clock
from monitor.hardware.nvml import NullBackend

T = 1e12

# Names the driver reports, as the reference lists them (shared/reference/hardware.md), with the dense figure
# of the reference row each belongs to (bf16, or fp16 for Volta, which has no BF16 units). None: no row.
DRIVER_NAMES = {
    "Tesla V100-SXM2-32GB": ("fp16", 125),
    "Tesla V100-PCIE-16GB": ("fp16", 112),
    "NVIDIA A100-SXM4-80GB": ("bf16", 312),
    "NVIDIA A100-SXM4-40GB": ("bf16", 312),
    "NVIDIA A100 80GB PCIe": ("bf16", 312),
    "NVIDIA A100-PCIE-40GB": ("bf16", 312),
    "NVIDIA H100 80GB HBM3": ("bf16", 989.4),
    "NVIDIA H100 PCIe": ("bf16", 756),
    "NVIDIA H100 NVL": ("bf16", 835.5),
    "NVIDIA H200": ("bf16", 989.5),
    "NVIDIA H200 NVL": ("bf16", 835.5),
    "NVIDIA L4": ("bf16", 121),
    "NVIDIA L40S": ("bf16", 362),
    "NVIDIA L40": ("bf16", None),
    "NVIDIA B200": ("bf16", 2250),
    "NVIDIA GeForce RTX 4090": ("bf16", 165.2),
    "AMD Instinct MI300X": ("bf16", 1307.4),
}


def one(**kwargs: object) -> FakeGpuBackend:
    name = str(kwargs.pop("name", "NVIDIA Test GPU"))
    return FakeGpuBackend([fake_device(name, **kwargs)])  # type: ignore[arg-type]


def test_the_list_is_the_references() -> None:
    root = Path(__file__).resolve().parents[1]
    found = [
        p for p in (root / "shared", root.parent / "shared") if (p / "reference" / "hardware.md").exists()
    ]
    if not found:
        pytest.skip("shared/reference/hardware.md is not beside this checkout")
    text = (found[0] / "reference" / "hardware.md").read_text(encoding="utf-8")
    start = text.index("Names the driver reports")
    listed = text[start : text.index("Traps", start)]
    names = listed.split("`")[1::2]  # the names are the `quoted` parts
    assert set(names) == set(DRIVER_NAMES)


@pytest.mark.parametrize("name", list(DRIVER_NAMES))
def test_every_driver_name_in_the_reference(name: str) -> None:
    dtype, tflops = DRIVER_NAMES[name]
    info = detect_accelerator(dtype, backend=one(name=name))
    if tflops is None:
        assert info.peak_flops_per_second is None and info.source == "unknown" and info.warning
    else:
        assert info.source == "catalog"
        assert info.peak_flops_per_second == pytest.approx(tflops * T)
        assert info.device == name


@pytest.mark.parametrize(
    ("name", "device_id", "tflops"),
    [
        ("NVIDIA L40S", None, 362),  # "l4" is a substring of "l40s": must not give the L4's 121
        ("NVIDIA L4", None, 121),
        ("NVIDIA A10", None, 125),  # "a10" is a substring of "a100"
        ("NVIDIA A100-SXM4-80GB", None, 312),
        ("NVIDIA H200", None, 989.5),  # matched no key in other tools
        ("NVIDIA L40S", 0x26B9, 362),
        ("NVIDIA L4", 0x27B8, 121),
    ],
)
def test_traps(name: str, device_id: int | None, tflops: float) -> None:
    info = detect_accelerator("bf16", backend=one(name=name, pci_device_id=device_id))
    assert info.peak_flops_per_second == pytest.approx(tflops * T)


@pytest.mark.parametrize(
    ("device_id", "key", "tflops"),
    [(0x2330, "h100-sxm", 989.4), (0x2331, "h100-pcie", 756), (0x2321, "h100-nvl", 835.5)],
)
def test_h100_form_factors_told_apart_by_device_id(device_id: int, key: str, tflops: float) -> None:
    # The same ambiguous name for all three: only the device id tells them apart.
    info = detect_accelerator("bf16", backend=one(name="NVIDIA H100", pci_device_id=device_id))
    assert info.accelerator == key
    assert info.peak_flops_per_second == pytest.approx(tflops * T)
    assert f"{device_id:#06x}" in info.detail


def test_ambiguous_name_without_device_id_is_not_guessed() -> None:
    # "NVIDIA H100" could be SXM, PCIe or NVL: the friendly alias "H100" must not decide it for detection.
    info = detect_accelerator("bf16", backend=one(name="NVIDIA H100"))
    assert info.peak_flops_per_second is None and info.source == "unknown"


def test_device_id_wins_over_the_name() -> None:
    info = detect_accelerator("bf16", backend=one(name="NVIDIA H100 80GB HBM3", pci_device_id=0x2331))
    assert info.accelerator == "h100-pcie"


def test_dtype_chooses_the_figure() -> None:
    backend = one(name="NVIDIA H100 80GB HBM3", pci_device_id=0x2330)
    assert detect_accelerator("tf32", backend=backend).peak_flops_per_second == pytest.approx(494.7 * T)
    assert detect_accelerator("torch.bfloat16", backend=backend).peak_flops_per_second == pytest.approx(
        989.4 * T
    )
    assert detect_accelerator("float8_e4m3fn", backend=backend).peak_flops_per_second == pytest.approx(
        1978.9 * T
    )


def test_a_part_without_the_unit_gets_no_peak() -> None:
    info = detect_accelerator("bf16", backend=one(name="Tesla V100-SXM2-32GB", pci_device_id=0x1DB5))
    assert info.peak_flops_per_second is None
    assert info.warning is not None and "no bf16 units" in info.warning


def test_mig_slice_gets_its_share_of_the_sms() -> None:
    backend = one(
        name="NVIDIA H100 80GB HBM3", pci_device_id=0x2330, mig=True, sm_count=16, parent_sm_count=132
    )
    info = detect_accelerator("bf16", backend=backend)
    assert info.source == "catalog" and info.mig
    assert info.peak_flops_per_second == pytest.approx(989.4 * T * 16 / 132)
    assert "16/132" in info.detail


def test_mig_slice_without_sm_counts_is_unknown_not_the_whole_gpu() -> None:
    info = detect_accelerator(
        "bf16", backend=one(name="NVIDIA A100-SXM4-80GB", pci_device_id=0x20B2, mig=True)
    )
    assert info.peak_flops_per_second is None and info.warning


@pytest.mark.parametrize(
    ("cc", "sms", "mhz", "tflops"),
    [((8, 0), 108, 1410, 312), ((9, 0), 132, 1830, 989.4)],  # the reference's A100 and H100 SXM checks
)
def test_unknown_part_is_derived_and_reproduces_the_datasheet(
    cc: tuple[int, int], sms: int, mhz: float, tflops: float
) -> None:
    backend = one(name="NVIDIA Future GPU", compute_capability=cc, sm_count=sms, max_sm_clock_mhz=mhz)
    info = detect_accelerator("bf16", backend=backend)
    assert info.source == "derived" and info.accelerator is None
    assert info.peak_flops_per_second == pytest.approx(tflops * T, rel=0.01)
    assert "derived" in info.detail and str(sms) in info.detail


def test_derivation_at_nvml_max_clock_is_an_upper_bound() -> None:
    # NVML's max SM clock of an H100 SXM is 1980 MHz; the datasheet's 989.4 TF is rated at 1830 MHz.
    derived = derive_peak((9, 0), 132, 1980, "bf16")
    assert derived is not None and derived > 989.4 * T
    assert derived == pytest.approx(132 * 1980e6 * 4096)


def test_a10g_is_not_given_the_a10_figure() -> None:
    backend = one(name="NVIDIA A10G", pci_device_id=0x2237, compute_capability=(8, 6), sm_count=80)
    info = detect_accelerator("bf16", backend=backend)
    assert info.peak_flops_per_second is None and info.source == "unknown"


def test_unknown_part_without_sm_data_has_no_peak() -> None:
    info = detect_accelerator("bf16", backend=one(name="NVIDIA Mystery 9000", compute_capability=(9, 0)))
    assert info.peak_flops_per_second is None and info.source == "unknown"
    assert info.warning is not None and "mfu calibrate" in info.warning and "peak_flops" in info.warning


def test_ada_is_not_derived() -> None:
    backend = one(name="NVIDIA L40", compute_capability=(8, 9), sm_count=142, max_sm_clock_mhz=2490)
    assert detect_accelerator("bf16", backend=backend).peak_flops_per_second is None


def test_no_nvml_is_cpu_and_unknown() -> None:
    info = detect_accelerator("bf16", backend=NullBackend("NVML Shared Library Not Found"))
    assert info.device == "cpu" and info.source == "unknown" and info.peak_flops_per_second is None
    assert info.warning is not None
    assert "NVML Shared Library Not Found" in info.warning and "mfu calibrate" in info.warning


def test_no_nvml_with_a_calibration_uses_the_measured_rate() -> None:
    info = detect_accelerator("fp32", backend=no_gpu(), calibrated=5.0e10)
    assert info.source == "calibrated" and info.peak_flops_per_second == 5.0e10 and info.warning is None


def test_catalog_wins_over_calibration() -> None:
    backend = one(name="NVIDIA L4", pci_device_id=0x27B8)
    assert detect_accelerator("bf16", backend=backend, calibrated=5.0e10).source == "catalog"


def test_nvml_failing_part_way() -> None:
    backend = FakeGpuBackend(
        [fake_device("NVIDIA L4", pci_device_id=0x27B8), fake_device("NVIDIA L4", pci_device_id=0x27B8)],
        fail_device_info={1},
    )
    assert detect_accelerator("bf16", index=0, backend=backend).peak_flops_per_second == pytest.approx(
        121 * T
    )
    broken = detect_accelerator("bf16", index=1, backend=backend)
    assert broken.source == "unknown" and broken.peak_flops_per_second is None
    assert broken.warning is not None and "NVML failed reading GPU 1" in broken.warning


def test_nvml_failing_to_count() -> None:
    info = detect_accelerator("bf16", backend=FakeGpuBackend([], fail_count=True))
    assert info.source == "unknown" and info.warning is not None and "NVML failed" in info.warning


def test_override_always_wins() -> None:
    backend = one(name="NVIDIA H100 80GB HBM3", pci_device_id=0x2330)
    info = detect_accelerator("bf16", backend=backend, override_peak=700e12, calibrated=1e12)
    assert info.source == "override" and info.peak_flops_per_second == 700e12
    assert info.device == "NVIDIA H100 80GB HBM3"


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, "fast"])
def test_bad_override(bad: object) -> None:
    with pytest.raises(InputError, match="peak_flops"):
        detect_accelerator("bf16", backend=no_gpu(), override_peak=bad)  # type: ignore[arg-type]


def test_bad_dtype() -> None:
    with pytest.raises(InputError, match=r"dtype: unknown dtype 'bf61' — use one of fp64, fp32, tf32, bf16"):
        detect_accelerator("bf61", backend=no_gpu())


def test_index_past_the_devices() -> None:
    with pytest.raises(InputError, match="index"):
        detect_accelerator("bf16", index=3, backend=one(name="NVIDIA L4"))


def test_detection_reads_nvml_once() -> None:
    backend = one(name="NVIDIA L4", pci_device_id=0x27B8)
    detect_accelerator("bf16", backend=backend)
    assert backend.calls == [("device_count", None), ("device_info", 0)]


def test_peak_at_clock_scales_with_throttling() -> None:
    backend = one(name="NVIDIA A100-SXM4-80GB", pci_device_id=0x20B2, max_sm_clock_mhz=1410)
    info = detect_accelerator("bf16", backend=backend)
    assert peak_at_clock(info, 705e6) == pytest.approx(156 * T)
    assert peak_at_clock(info, 2000e6) == pytest.approx(312 * T)  # never above the rated peak
    assert peak_at_clock(detect_accelerator("bf16", backend=no_gpu()), 1e9) is None
