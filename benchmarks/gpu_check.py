"""What detection finds on this machine's NVIDIA GPUs, and a measured bf16 matmul rate against the
catalogue peak.

    python benchmarks/gpu_check.py [--seconds 2] [--size 8192]

Where there is no NVIDIA GPU (or no driver) it says so and exits 0. It prints one JSON object at the end too,
so a device run can keep it. The measured/peak ratio of a large bf16 matmul sits below 1 (no kernel reaches
the datasheet figure); a ratio above 1 would mean the catalogue peak is wrong for this part.
"""

from __future__ import annotations

import argparse
import json
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--size", type=int, default=8192)
    args = parser.parse_args()

    from monitor.hardware.detect import detect_accelerator
    from monitor.hardware.nvml import open_backend

    backend = open_backend()
    count = backend.device_count()
    if count == 0:
        print(f"no NVIDIA GPU here: {backend.reason or 'NVML lists none'} — nothing to check")
        return 0
    devices: list[dict[str, object]] = []
    report: dict[str, object] = {"devices": devices}
    peaks = []
    for i in range(count):
        info = backend.device_info(i)
        peak = detect_accelerator("bf16", index=i, backend=backend)
        peaks.append(peak)
        print(f"GPU {i}: {info}")
        print(f"  bf16 peak: {peak.peak_flops_per_second} ({peak.source}) — {peak.detail}")
        if peak.warning:
            print(f"  warning: {peak.warning}")
        tel = backend.telemetry(i)
        print(f"  telemetry: {tel}")
        devices.append({"info": info.__dict__, "peak": peak.model_dump(), "telemetry": tel.__dict__})

    import torch

    if not torch.cuda.is_available():
        print("torch sees no CUDA device (CPU-only torch build?): skipping the matmul measurement")
        print(json.dumps(report, default=str))
        return 0
    from monitor.hardware.calibrate import calibrate

    result = calibrate("bf16", device="cuda", size=args.size, seconds=args.seconds, cache=False)
    peak0 = peaks[0].peak_flops_per_second  # NVML's device 0, taken to be cuda:0
    print(
        f"measured bf16 matmul on cuda:0 ({result.device_name}), n={result.matrix_size}: "
        f"best {result.flops_per_second / 1e12:.1f} TFLOP/s, "
        f"median {result.median_flops_per_second / 1e12:.1f}"
    )
    if peak0:
        print(f"  ratio to the catalogue peak {peak0 / 1e12:.1f}: best {result.flops_per_second / peak0:.3f}")
    report["calibration"] = result.model_dump()
    report["ratio_best_to_peak"] = result.flops_per_second / peak0 if peak0 else None
    print(json.dumps(report, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
