"""The low-MFU alert's state machine lives in :mod:`monitor.figures.alert` (pure); kept importable here."""

from monitor.figures.alert import AlertEvent, LowMfuAlert

__all__ = ["AlertEvent", "LowMfuAlert"]
