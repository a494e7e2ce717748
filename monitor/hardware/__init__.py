"""What the accelerator can do: the peak catalogue, NVML detection, calibration.

Importing this package does not import torch (the calculators start instantly); ``run_dtype`` and
``calibrate`` import it when called.
"""

from monitor.hardware.catalog import Accelerator, all_accelerators, by_pci_device_id, lookup, resolve
from monitor.hardware.detect import PeakInfo, detect_accelerator, peak_at_clock
from monitor.hardware.dtypes import DTYPES, normalize_dtype, run_dtype

__all__ = [
    "DTYPES",
    "Accelerator",
    "PeakInfo",
    "all_accelerators",
    "by_pci_device_id",
    "detect_accelerator",
    "lookup",
    "normalize_dtype",
    "peak_at_clock",
    "resolve",
    "run_dtype",
]
