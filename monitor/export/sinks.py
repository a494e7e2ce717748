"""The sink interface: where the live figures go (Prometheus, the run log, alerts, the terminal, a trainer's
loggers), in the shape of torchtitan's ``BaseLogger``/``LoggerContainer``.

A sink has three methods, all called on the thread that trains (``close`` also from a signal handler or at
exit): ``on_steps(batch)`` at each log tick with the steps resolved since the last one (``figures.steps.
StepBatch``), ``on_alert(event)`` when the low-MFU alert fires or resolves, and ``close(final, reason)`` once,
with the run's final snapshot. :class:`Sink` itself does nothing (the null sink); a sink overrides what it
needs. :class:`SinkFanOut` hands each call to every sink, each guarded: a failing sink is reported through
``on_error`` and the others still run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from monitor.figures.alert import AlertEvent
from monitor.figures.snapshot import Snapshot
from monitor.figures.steps import StepBatch


class Sink:
    """The null sink: every method does nothing. Subclass it and override what the sink needs."""

    name = "sink"

    def on_steps(self, batch: StepBatch) -> None:
        return None

    def on_alert(self, event: AlertEvent) -> None:
        return None

    def close(self, final: Snapshot, reason: str) -> None:
        return None


NullSink = Sink


class SinkFanOut(Sink):
    """Several sinks as one: each call reaches every sink in order; an error in one is reported."""

    name = "sinks"

    def __init__(
        self, sinks: Iterable[Sink] = (), *, on_error: Callable[[str, BaseException], None] | None = None
    ) -> None:
        self.sinks: list[Sink] = list(sinks)
        self.on_error = on_error

    def add(self, sink: Sink) -> None:
        self.sinks.append(sink)

    def _report(self, sink: Sink, exc: BaseException) -> None:
        if self.on_error is None:
            raise exc
        self.on_error(sink.name, exc)

    def on_steps(self, batch: StepBatch) -> None:
        for sink in self.sinks:
            try:
                sink.on_steps(batch)
            except Exception as exc:
                self._report(sink, exc)

    def on_alert(self, event: AlertEvent) -> None:
        for sink in self.sinks:
            try:
                sink.on_alert(event)
            except Exception as exc:
                self._report(sink, exc)

    def close(self, final: Snapshot, reason: str) -> None:
        for sink in self.sinks:
            try:
                sink.close(final, reason)
            except Exception as exc:
                self._report(sink, exc)
