"""Device memory capacity for `mfu memory --gpu`: datasheet gigabytes, by catalogue key.

The catalogue (monitor/hardware/catalog.json) carries peaks, not capacities, so this small table does.
Capacities are the datasheet's "GB" figure taken as 10⁹ bytes — the smaller reading of "GB", so "fits" errs
on the safe side (NVML reports e.g. 81,920 MiB for an A100 80GB, some of which the driver reserves). Parts
sold in two sizes need the size in the name ("A100 80GB", "NVIDIA A100-SXM4-40GB") or ``--device-memory-gb``.
B200/GB200 are left out: their published capacities differ between spec revisions.
"""

from __future__ import annotations

import re

from monitor.errors import InputError

GB = 1e9

# catalogue key -> capacities in GB (datasheet), one entry unless the part ships in several sizes
CAPACITY_GB: dict[str, tuple[float, ...]] = {
    "v100-sxm2": (16, 32),  # V100 datasheet: 16 GB / 32 GB HBM2
    "v100-pcie": (16, 32),
    "a100-sxm": (40, 80),  # A100 datasheet: 40 GB HBM2 / 80 GB HBM2e
    "a100-pcie": (40, 80),
    "a10": (24,),  # A10 datasheet: 24 GB GDDR6
    "a10g": (24,),  # AWS G5 documentation: 24 GB
    "l4": (24,),  # L4 datasheet: 24 GB GDDR6
    "l40s": (48,),  # L40S datasheet: 48 GB GDDR6
    "h100-sxm": (80,),  # H100 datasheet: SXM 80 GB HBM3
    "h100-pcie": (80,),  # H100 datasheet: PCIe 80 GB HBM2e
    "h100-nvl": (94,),  # H100 datasheet: NVL 94 GB HBM3 per GPU
    "h200-sxm": (141,),  # H200 datasheet: 141 GB HBM3e
    "h200-nvl": (141,),
    "rtx-4090": (24,),  # GeForce RTX 4090 specifications: 24 GB GDDR6X
    "mi250x": (128,),  # AMD Instinct MI250X specifications: 128 GB HBM2e
    "mi300x": (192,),  # AMD Instinct MI300X specifications: 192 GB HBM3
}


def device_capacity_bytes(key: str, name: str) -> float:
    """Bytes of memory of the catalogued part ``key``, as the user named it (``name`` may carry the size)."""
    sizes = CAPACITY_GB.get(key)
    if sizes is None:
        raise InputError(
            "--gpu", f"no memory capacity on record for {name!r}", "pass --device-memory-gb with its capacity"
        )
    if len(sizes) == 1:
        return sizes[0] * GB
    match = re.search(r"(\d+)\s*GB", name, flags=re.IGNORECASE)
    if match and float(match.group(1)) in sizes:
        return float(match.group(1)) * GB
    options = " or ".join(f"{int(s)}GB" for s in sizes)
    raise InputError(
        "--gpu",
        f"{name!r} ships with {options}",
        f"name the size (e.g. '{name} {int(sizes[-1])}GB') or pass --device-memory-gb",
    )
