"""Tensor-core activity (NVML GPM) shared by the readers that want it: the log ticks and the /metrics scrapes.

A GPM reading is the activity between two samples, and each ``GpuBackend.tensor_activity`` call takes a new
sample: two readers calling the backend directly would each get the share of time since the *other's* last
call. One ``TensorActivityMeter`` takes the samples instead; each reader holds a ``TensorWindow`` that
receives every interval sampled since its own last reading, and gets their time-weighted mean:

    activity over [t0, tn] = sum(activity_i x dt_i) / sum(dt_i)      (activity is a time share)

Only at log and scrape time, never per step. Where GPM is unavailable (pre-Hopper, MIG slice, old driver,
a failing call) no figure exists, and one log line per GPU says why.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from monitor.hardware.nvml import GPM_FIRST_SAMPLE, GpuBackend, TensorActivity

_log = logging.getLogger(__name__)

_KINDS = ("any_ratio", "hmma_ratio", "imma_ratio", "dfma_ratio")


class TensorWindow:
    """One reader's share of the meter: the activity of every interval sampled since its last ``take``."""

    def __init__(self, meter: TensorActivityMeter) -> None:
        self._meter = meter
        # per GPU and pipe kind: [activity x seconds, seconds with that kind known]
        self._sums: dict[int, list[list[float]]] = {}

    def _add(self, index: int, activity: TensorActivity, seconds: float) -> None:
        sums = self._sums.setdefault(index, [[0.0, 0.0] for _ in _KINDS])
        for pair, kind in zip(sums, _KINDS, strict=True):
            value = getattr(activity, kind)
            if value is not None:
                pair[0] += value * seconds
                pair[1] += seconds

    def take(self) -> list[tuple[int, TensorActivity]]:
        """Sample now, then the time-weighted activity per GPU since this window's last ``take`` (GPUs with
        no figure left out); the window starts over."""
        self._meter.sample()
        with self._meter.lock:
            sums, self._sums = self._sums, {}
        out = []
        for index, s in sorted(sums.items()):
            v = [weighted / seconds if seconds > 0 else None for weighted, seconds in s]
            if v[0] is not None:
                out.append((index, TensorActivity(v[0], v[1], v[2], v[3])))
        return out

    def busiest(self) -> float | None:
        """``take()``'s highest any-pipe activity over this rank's GPUs (a rank drives its GPUs together)."""
        readings = self.take()
        return max(a.any_ratio for _, a in readings if a.any_ratio is not None) if readings else None


class TensorActivityMeter:
    def __init__(
        self,
        gpu: GpuBackend | None,
        indices: Sequence[int],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gpu = gpu
        self.indices = tuple(indices)
        self.lock = threading.Lock()  # scrapes run on the server's thread, ticks on the training thread
        self._clock = clock
        self._windows: list[TensorWindow] = []
        self._last: dict[int, float] = {}  # GPU -> when its previous sample was taken
        self._said: set[int] = set()  # GPUs whose "no tensor-activity figure" line was logged

    @property
    def enabled(self) -> bool:
        return self.gpu is not None and self.gpu.available and bool(self.indices)

    def window(self) -> TensorWindow:
        """A new reader; it receives the intervals sampled from now on."""
        window = TensorWindow(self)
        with self.lock:
            self._windows.append(window)
        return window

    def sample(self) -> None:
        """Take a GPM sample of each GPU and hand the interval since its previous sample to every window.
        Never raises."""
        if not self.enabled:
            return
        assert self.gpu is not None
        with self.lock:
            for index in self.indices:
                try:
                    activity = self.gpu.tensor_activity(index)
                except Exception as exc:  # a backend that breaks its never-raise promise
                    activity = TensorActivity(reason=f"NVML GPM failed: {exc}")
                now = self._clock()
                previous = self._last.get(index)
                self._last[index] = now
                if activity.available:
                    seconds = max(now - previous, 1e-9) if previous is not None else 1.0
                    for window in self._windows:
                        window._add(index, activity, seconds)
                elif index not in self._said and activity.reason != GPM_FIRST_SAMPLE:
                    self._said.add(index)
                    _log.info("GPU %d: no tensor-activity figure: %s", index, activity.reason)
