"""This rank's SM clock ratio (clock / max clock, from NVML), for the throttling share of the MFU loss:
read at log ticks and handed over by the Prometheus collector at scrapes — never per step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from monitor.figures.attribution import clock_ratio
from monitor.hardware.nvml import GpuBackend


class SmClock:
    def __init__(
        self, gpu: GpuBackend, indices: list[int], on_error: Callable[[str, BaseException], None]
    ) -> None:
        self.gpu = gpu
        self.indices = indices
        self.on_error = on_error
        self.ratio: float | None = None  # the lowest ratio of this rank's GPUs at the last reading
        self._max_hz: float | None = None
        self._max_read = False

    def read(self) -> None:
        """Read the clocks now (a log tick)."""
        if not self.gpu.available or not self.indices:
            return
        try:
            self.on_telemetry([(i, self.gpu.telemetry(i)) for i in self.indices])
        except Exception as exc:
            self.on_error("NVML clock reading", exc)

    def on_telemetry(self, readings: list[tuple[int, Any]]) -> None:
        """Keep the lowest SM clock ratio of this rank's GPUs (what the collector or a tick just read)."""
        ratios = [
            r for _, t in readings
            if (r := clock_ratio(t.sm_clock_hz, t.max_sm_clock_hz or self._max_clock_hz())) is not None
        ]  # fmt: skip
        if ratios:
            self.ratio = min(ratios)

    def _max_clock_hz(self) -> float | None:
        """The max SM clock from NVML's device info, read once (a reading without its own max uses it)."""
        if not self._max_read:
            self._max_read = True
            try:
                mhz = self.gpu.device_info(self.indices[0]).max_sm_clock_mhz
            except Exception:
                mhz = None
            self._max_hz = mhz * 1e6 if mhz else None
        return self._max_hz
