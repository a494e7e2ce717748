"""Step timing without device synchronisation.

A ``TimerBackend`` records a marker at each step boundary on the training thread (cheap: a host timestamp or a
CUDA event record) and, later, at log or scrape time, tells the seconds between two markers — or ``None``
while the device has not reached them yet. Nothing here waits for the device: CUDA events are read only once
``query()`` says they are complete (``query`` does not block), so a step's duration shows up a little after
the step ends, never by stalling it.
"""

from __future__ import annotations

import time
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class TimerBackend(Protocol):
    """Markers at step boundaries, durations read later."""

    name: str

    def mark(self) -> Any:
        """Record a boundary now (the hot path: must not synchronise)."""
        ...

    def elapsed(self, start: Any, end: Any) -> float | None:
        """Seconds from ``start`` to ``end``; None while either marker is not complete yet."""
        ...


class HostTimer:
    """The host's monotonic clock (``time.perf_counter``): for CPU training, where work is synchronous."""

    name = "host"

    def mark(self) -> float:
        return time.perf_counter()

    def elapsed(self, start: float, end: float) -> float | None:
        # perf_counter is monotonic, but clamp anyway: a duration below zero is never a measurement.
        return max(0.0, end - start)


class CudaEventTimer:
    """CUDA events recorded on the current stream at step boundaries, read with ``elapsed_time`` later.

    The GPU timeline between two step-end events is the step's device time, including any idle gap while the
    host prepared the next batch (the event is recorded when the host reaches the boundary, and executes when
    the stream reaches it). ``events`` lets a test inject a fake ``torch.cuda`` module.
    """

    name = "cuda-events"

    def __init__(self, events: Any = None) -> None:
        if events is None:
            import torch

            events = torch.cuda
        self._cuda = events

    def mark(self) -> Any:
        event = self._cuda.Event(enable_timing=True)
        event.record()
        return event

    def elapsed(self, start: Any, end: Any) -> float | None:
        # query() is non-blocking; elapsed_time on two completed events does not synchronise either.
        if not (start.query() and end.query()):
            return None
        return max(0.0, float(start.elapsed_time(end)) / 1000.0)

    def wait(self, marker: Any) -> None:
        """Block until ``marker`` completes: only at close, when the run is over."""
        marker.synchronize()


def timer_for_device(device: Any) -> TimerBackend:
    """CUDA events for a CUDA model, the host clock for anything else (CPU, MPS, meta)."""
    if getattr(device, "type", str(device)) == "cuda":
        return CudaEventTimer()
    return HostTimer()
