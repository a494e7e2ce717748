"""The alert sink: a firing low-MFU alert is logged as a warning, and every event goes to the user's
``on_alert`` callable (whose errors are reported, never raised into training)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from monitor.export.sinks import Sink
from monitor.figures.alert import AlertEvent
from monitor.figures.steps import StepBatch

log = logging.getLogger("monitor")


class AlertSink(Sink):
    name = "alerts"

    def __init__(
        self,
        *,
        run: str,
        rank: int,
        callback: Callable[[AlertEvent], Any] | None = None,
        on_error: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        self.run = run
        self.rank = rank
        self.callback = callback
        self.on_error = on_error

    def on_steps(self, batch: StepBatch) -> None:
        self.run, self.rank = batch.run, batch.rank

    def on_alert(self, event: AlertEvent) -> None:
        if event.state == "firing":
            log.warning("mfu-monitor: %s (run %s, rank %d)", event.message, self.run, self.rank)
        if self.callback is None:
            return
        try:
            self.callback(event)
        except Exception as exc:
            if self.on_error is None:
                raise
            self.on_error("on_alert callback", exc)
