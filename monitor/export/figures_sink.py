"""A sink that hands the monitor's figures to any callable at each log tick (``MFUMonitor(on_figures=...)``):
the way into loggers the monitor does not know (TensorBoard's ``SummaryWriter``, an experiment tracker)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from monitor.export.sinks import Sink
from monitor.figures.loggers import logger_figures
from monitor.figures.snapshot import Snapshot
from monitor.figures.steps import StepBatch


class FiguresSink(Sink):
    """``callback(figures, step)`` at each log tick that resolved new steps: ``figures`` as ``logger_figures``
    names them (unknown ones absent), ``step`` the last resolved step's index. Nothing is called while no
    figure is known yet (warm-up). An error in the callback is counted and reported once by the fan-out."""

    name = "on_figures"

    def __init__(self, callback: Callable[[dict[str, float], int], Any], snapshot: Callable[[], Snapshot]):
        self.callback = callback
        self.snapshot = snapshot

        self._last_step: int | None = None

    def on_steps(self, batch: StepBatch) -> None:
        snap = self.snapshot()  # ``batch.steps`` is empty without a run log: the snapshot says what is new
        if not snap.recent or snap.recent[-1].step == self._last_step:
            return
        self._last_step = step = snap.recent[-1].step
        figures = logger_figures(snap)
        if figures:
            self.callback(figures, step)
