"""In-process low-MFU alerting: a small state machine over (time, windowed MFU), pure and clock-injected."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AlertEvent:
    state: str  # "firing" | "resolved"
    mfu: float
    threshold: float
    since: float  # unix seconds the low episode began
    time: float  # unix seconds of this event
    message: str


class LowMfuAlert:
    """Fires once per episode when MFU stays below ``threshold`` for ``hold_seconds``; resolves on recovery.

    An unknown MFU (no peak, warm-up) neither starts nor ends an episode.
    """

    def __init__(self, threshold: float, hold_seconds: float) -> None:
        self.threshold = threshold
        self.hold_seconds = hold_seconds
        self._low_since: float | None = None
        self.firing = False

    def update(self, mfu: float | None, now: float) -> AlertEvent | None:
        if mfu is None:
            return None
        if mfu < self.threshold:
            if self._low_since is None:
                self._low_since = now
            if not self.firing and now - self._low_since >= self.hold_seconds:
                self.firing = True
                return AlertEvent(
                    "firing",
                    mfu,
                    self.threshold,
                    self._low_since,
                    now,
                    f"MFU {mfu:.1%} below {self.threshold:.0%} for {now - self._low_since:.0f} s",
                )
            return None
        since = self._low_since
        self._low_since = None
        if self.firing and since is not None:
            self.firing = False
            return AlertEvent(
                "resolved", mfu, self.threshold, since, now, f"MFU back to {mfu:.1%} (≥ {self.threshold:.0%})"
            )
        return None
