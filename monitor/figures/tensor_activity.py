"""MFU checked against the GPU's own tensor-core counters (NVML GPM tensor activity). Pure, torch-free.

Tensor activity is the time share in which the SMs' tensor pipes were busy. A dense matmul at the dtype's
full tensor rate turns each busy tensor-pipe cycle into at most the peak's FLOPs, so the model FLOPs done can
be at most ``activity x peak x time``: MFU <= tensor activity. An MFU above the tensor activity (beyond
``MARGIN``, which absorbs the two figures' different windows and NVML's sampling) means the analytic FLOPs
model or the peak overcounts. The converse is not a fault: tensor pipes can be busy at less than full rate
(small tiles, a lower-rate dtype), so tensor activity well above MFU is normal.
"""

from __future__ import annotations

from dataclasses import dataclass

# Absolute slack in ratio units: the MFU window and the GPM sampling interval differ, and NVML rounds.
MARGIN = 0.05

ABOVE_TENSOR_ACTIVITY = "above_tensor_activity"


@dataclass(frozen=True)
class TensorCheck:
    suspect: bool
    reason: str  # "" when consistent; else a short reason label
    detail: str  # one sentence for a log line


def check_mfu_against_tensor_activity(
    mfu: float | None, tensor_active: float | None, margin: float = MARGIN
) -> TensorCheck | None:
    """None when a figure is missing; else whether MFU exceeds tensor activity by more than ``margin``."""
    if mfu is None or tensor_active is None:
        return None
    if mfu > tensor_active + margin:
        return TensorCheck(
            True,
            ABOVE_TENSOR_ACTIVITY,
            f"MFU {mfu:.1%} is above the tensor-core activity {tensor_active:.1%} the GPU reports: "
            "the FLOPs model or the peak overcounts",
        )
    return TensorCheck(False, "", "")
