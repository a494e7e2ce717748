"""Every catalogue figure against the datasheet table in the reference file, and the lookups that other
tools got wrong (substring matches, unknown names)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.errors import InputError
from monitor.hardware import catalog
from monitor.hardware.catalog import all_accelerators, by_pci_device_id, lookup, resolve

# The reference's datasheet table, transcribed verbatim from shared/reference/hardware.md so that the
# test runs where shared/ is not checked out; where it is, test_transcription_matches_the_reference_file
# checks the copy.
REFERENCE_TABLE = """\
| device | FP64 (vector / tensor) | FP32 | TF32 | BF16 / FP16 | FP8 | INT8 | source |
|---|---|---|---|---|---|---|---|
| V100 SXM2 | 7.8 | 15.7 | — | FP16 125 (no BF16 units) | — | — | V100 datasheet |
| V100 PCIe | 7 | 14 | — | FP16 112 | — | — | V100 datasheet |
| A100 (SXM4 and PCIe, 40/80 GB) | 9.7 / 19.5 | 19.5 | 156 | 312 | — | 624 | A100 datasheet |
| A10 / A10G | — | 31.2 | 62.5 | 125 | — | 250 | A10 datasheet (A10G differs slightly: unverified) |
| L4 | — | 30.3 | 60 | 121 | 242.5 | 242.5 | L4 datasheet |
| L40S | — | 91.6 | 183 | 362 | 733 | 733 | L40S datasheet |
| H100 SXM | 33.5 / 66.9 | 66.9 | 494.7 | 989.4 | 1978.9 | 1978.9 | H100 datasheet |
| H100 PCIe | 25.6 / 51.2 | 51.2 | 378 | 756 | 1513 | 1513 | H100 datasheet |
| H100 NVL (per GPU) | 30 / 60 | 60 | 417.5 | 835.5 | 1670.5 | 1670.5 | H100 NVL datasheet |
| H200 SXM | 34 / 67 | 67 | 494.5 | 989.5 | 1979 | 1979 | H200 datasheet |
| H200 NVL | 30 / 60 | 60 | 417.5 | 835.5 | 1670.5 | 1670.5 | H200 datasheet |
| B200 (HGX) | 37–40 | 75–80 | 1100 | 2250 | 4500 | 4500 | HGX B200 spec (revisions differ) |
| GB200 (per GPU) | 40–45 | 80–90 | 1250 | 2500 | 5000 | 5000 | GB200 spec |
| RTX 4090 | — | 82.6 | 82.6 | 165.2 (FP32 accumulate) | 330.3 | 660.6 | Ada whitepaper |
| MI250X | 47.9 / 95.7 | 47.9 | — | 383 | — | 383 | AMD spec |
| MI300X | 81.7 / 163.4 | 163.4 | 653.7 | 1307.4 | 2614.9 | 2614.9 | AMD ROCm docs (dense) |
"""

_HERE = Path(__file__).resolve().parents[1]
REFERENCE_CANDIDATES = [
    _HERE / "shared" / "reference" / "hardware.md",
    _HERE.parent / "shared" / "reference" / "hardware.md",
]

# Reference row -> catalogue keys it covers (the row names are the reference's own words).
ROW_TO_KEYS = {
    "V100 SXM2": ["v100-sxm2"],
    "V100 PCIe": ["v100-pcie"],
    "A100 (SXM4 and PCIe, 40/80 GB)": ["a100-sxm", "a100-pcie"],
    "A10 / A10G": ["a10"],
    "L4": ["l4"],
    "L40S": ["l40s"],
    "H100 SXM": ["h100-sxm"],
    "H100 PCIe": ["h100-pcie"],
    "H100 NVL (per GPU)": ["h100-nvl"],
    "H200 SXM": ["h200-sxm"],
    "H200 NVL": ["h200-nvl"],
    "B200 (HGX)": ["b200"],
    "GB200 (per GPU)": ["gb200"],
    "RTX 4090": ["rtx-4090"],
    "MI250X": ["mi250x"],
    "MI300X": ["mi300x"],
}

# Ranges in the reference ("37–40") and the figure chosen in each (docs/hardware.md says why: the lower one).
RANGE_CHOICE = {
    ("b200", "fp64"): 37.0,
    ("b200", "fp32"): 75.0,
    ("gb200", "fp64"): 40.0,
    ("gb200", "fp32"): 80.0,
}


def _numbers(cell: str) -> list[float]:
    return [float(x) for x in re.findall(r"\d+(?:\.\d+)?", cell)]


def _cell(cell: str) -> tuple[str, list[float]]:
    """('none' | 'value' | 'range', numbers) for one table cell."""
    cell = cell.strip()
    if cell in {"—", "-", ""}:
        return "none", []
    if re.fullmatch(r"\d+(\.\d+)?\s*[–-]\s*\d+(\.\d+)?", cell):
        return "range", _numbers(cell)
    return "value", _numbers(cell)


def reference_rows() -> dict[str, dict[str, str]]:
    rows = {}
    header: list[str] = []
    for line in REFERENCE_TABLE.splitlines():
        if not line.startswith("|") or set(line) <= {"|", "-", " "}:
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "device":
            header = cells
            continue
        rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


def test_transcription_matches_the_reference_file() -> None:
    found = [p for p in REFERENCE_CANDIDATES if p.exists()]
    if not found:
        pytest.skip("shared/reference/hardware.md is not beside this checkout")
    assert REFERENCE_TABLE in found[0].read_text(encoding="utf-8")


def test_reference_table_is_all_covered() -> None:
    assert set(reference_rows()) == set(ROW_TO_KEYS)


def _tf(key: str, dtype: str) -> float | None:
    acc = next(a for a in all_accelerators() if a.key == key)
    value = acc.peak(dtype)
    return None if value is None else value / 1e12


@pytest.mark.parametrize("row", list(ROW_TO_KEYS))
def test_every_figure_matches_the_reference(row: str) -> None:
    ref = reference_rows()[row]
    for key in ROW_TO_KEYS[row]:
        # FP64 column: "vector / tensor" -> the catalogue's fp64 is the tensor (matmul) figure, the last
        # number.
        kind, nums = _cell(ref["FP64 (vector / tensor)"])
        if kind == "none":
            assert _tf(key, "fp64") is None
        elif kind == "range":
            assert nums[0] <= RANGE_CHOICE[(key, "fp64")] <= nums[1]
            assert _tf(key, "fp64") == RANGE_CHOICE[(key, "fp64")]
        else:
            assert _tf(key, "fp64") == pytest.approx(nums[-1])
            acc = next(a for a in all_accelerators() if a.key == key)
            assert acc.fp64_vector is not None and acc.fp64_vector / 1e12 == pytest.approx(nums[0])
        for column, dtype in [("FP32", "fp32"), ("TF32", "tf32"), ("FP8", "fp8"), ("INT8", "int8")]:
            kind, nums = _cell(ref[column])
            if kind == "none":
                assert _tf(key, dtype) is None, (key, dtype)
            elif kind == "range":
                assert nums[0] <= RANGE_CHOICE[(key, dtype)] <= nums[1]
                assert _tf(key, dtype) == RANGE_CHOICE[(key, dtype)]
            else:
                assert _tf(key, dtype) == pytest.approx(nums[0]), (key, dtype)
        # "BF16 / FP16" column: "312", "FP16 125 (no BF16 units)", "165.2 (FP32 accumulate)".
        cell = ref["BF16 / FP16"]
        if cell.startswith("FP16"):  # Volta: an FP16 figure only; the part has no BF16 units
            value = _numbers(cell)[1]  # "FP16 125": the first number is the 16 of the label
            assert _tf(key, "fp16") == pytest.approx(value)
            assert _tf(key, "bf16") is None
        else:
            value = _numbers(cell)[0]
            assert _tf(key, "bf16") == pytest.approx(value)
            assert _tf(key, "fp16") == pytest.approx(value)


def test_a10g_has_no_copied_figure() -> None:
    a10g = lookup("NVIDIA A10G")
    assert a10g is not None and a10g.key == "a10g"
    assert all(a10g.peak(d) is None for d in ("bf16", "fp16", "tf32", "fp32"))
    assert a10g.has_unit("bf16") is None  # unverified, not "no unit"


def test_every_part_has_a_source() -> None:
    for acc in all_accelerators():
        assert acc.source.strip(), acc.key


# PCI ids as the PCI ID Repository lists them (pciutils/pciids pci.ids): id -> the words in its entry.
PCI_IDS = {
    0x1DB1: ("v100-sxm2", "V100 SXM2 16GB"),
    0x1DB5: ("v100-sxm2", "V100 SXM2 32GB"),
    0x1DB4: ("v100-pcie", "V100 PCIe 16GB"),
    0x20B0: ("a100-sxm", "A100 SXM4 40GB"),
    0x20B2: ("a100-sxm", "A100 SXM4 80GB"),
    0x20F1: ("a100-pcie", "A100 PCIe 40GB"),
    0x20B5: ("a100-pcie", "A100 PCIe 80GB"),
    0x2236: ("a10", "A10"),
    0x2237: ("a10g", "A10G"),
    0x27B8: ("l4", "L4"),
    0x26B9: ("l40s", "L40S"),
    0x2330: ("h100-sxm", "H100 SXM5 80GB"),
    0x2331: ("h100-pcie", "H100 PCIe"),
    0x2321: ("h100-nvl", "H100L 94GB"),
    0x2335: ("h200-sxm", "H200 SXM 141GB"),
    0x233B: ("h200-nvl", "H200 NVL"),
    0x2684: ("rtx-4090", "GeForce RTX 4090"),
    0x2901: ("b200", "B200"),
}


@pytest.mark.parametrize("device_id", list(PCI_IDS))
def test_pci_device_ids(device_id: int) -> None:
    key, words = PCI_IDS[device_id]
    acc = by_pci_device_id(device_id)
    assert acc is not None and acc.key == key
    assert words in acc.pci_device_ids[device_id]
    # NVML's pciDeviceId: device id in the upper 16 bits, NVIDIA's vendor id 0x10DE in the lower.
    assert by_pci_device_id((device_id << 16) | 0x10DE) is acc
    assert by_pci_device_id((device_id << 16) | 0x1002) is None  # another vendor's id is not ours


def test_unlisted_ids_are_unknown() -> None:
    assert by_pci_device_id(0x26B5) is None  # L40: no figures in the reference, so not catalogued
    assert by_pci_device_id(None) is None


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("H100", "h100-sxm"),
        ("h100-sxm", "h100-sxm"),
        ("H100 SXM", "h100-sxm"),
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("A100", "a100-sxm"),
        ("NVIDIA A100", "a100-sxm"),
        ("a100_pcie", "a100-pcie"),
        ("  nvidia   l40s ", "l40s"),
        ("H200", "h200-sxm"),
        ("mi300x", "mi300x"),
        ("AMD Instinct MI300X", "mi300x"),
    ],
)
def test_friendly_names(name: str, key: str) -> None:
    acc = lookup(name)
    assert acc is not None and acc.key == key


@pytest.mark.parametrize("name", ["L4 0", "NVIDIA L40", "A10 0", "H1", "H100X", "NVIDIA H100 80GB", "GPU"])
def test_no_substring_matches(name: str) -> None:
    assert lookup(name) is None


def test_trap_names_resolve_to_their_own_rows() -> None:
    assert lookup("NVIDIA L40S").key == "l40s"  # type: ignore[union-attr]
    assert lookup("NVIDIA L4").key == "l4"  # type: ignore[union-attr]
    assert lookup("NVIDIA A10").key == "a10"  # type: ignore[union-attr]
    assert lookup("NVIDIA A100-SXM4-80GB").key == "a100-sxm"  # type: ignore[union-attr]


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(InputError, match=r"--gpu: unknown accelerator 'H10O'.*did you mean.*'H100'"):
        resolve("H10O")


def test_peak_takes_any_dtype_spelling() -> None:
    h100 = lookup("H100 SXM")
    assert h100 is not None
    assert h100.peak("bfloat16") == h100.peak("bf16") == pytest.approx(989.4e12)
    with pytest.raises(InputError, match="dtype"):
        h100.peak("bf17")


def test_catalog_imports_without_torch() -> None:
    code = "import sys, monitor.hardware.catalog, monitor.hardware.detect; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_catalog_module_has_no_io_beyond_its_data() -> None:
    assert catalog.all_accelerators() is catalog.all_accelerators()  # loaded once
