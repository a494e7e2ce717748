"""A live terminal view (rich) of the monitor's snapshots: tokens/s, MFU with its peak source, step time,
tokens so far, ETA to a token budget. Refreshed from rich's own thread; reads snapshots only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from monitor.export.sinks import Sink
from monitor.figures.attribution import verdict
from monitor.figures.snapshot import Snapshot


def si(value: float | None, unit: str = "", digits: int = 3) -> str:
    """1.23 k, 4.56 M, ... ('—' for unknown)."""
    if value is None:
        return "—"
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.{digits}g} {prefix}{unit}"
    return f"{value:.{digits}g} {unit}".rstrip()


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{sec:02d}s"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def render(s: Snapshot) -> Table:
    """The view of one snapshot (pure: used by the live view and the demo's summary)."""
    title = f"mfu-monitor · run {s.run} · rank {s.rank}/{s.world_size}"
    table = Table(title=title, show_header=False, title_justify="left", expand=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    mfu = percent(s.mfu)
    if s.mfu_suspect:
        mfu += "  [red]> 100%: peak or FLOPs model wrong[/red]"
    elif s.alert_firing:
        mfu += "  [yellow]low[/yellow]"
    peak = "unknown — MFU not shown (pass peak_flops=)" if s.peak_flops_per_second is None else (
        f"{si(s.peak_flops_per_second, 'FLOP/s')} ({s.peak_source}, {s.dtype}, {s.device})"
    )  # fmt: skip
    table.add_row("tokens/s", si(s.tokens_per_second))
    table.add_row("MFU", mfu)
    if s.hfu is not None and s.hfu != s.mfu:
        table.add_row("HFU", percent(s.hfu))
    if s.mfu_loss is not None:
        table.add_row("MFU lost to", verdict(s.mfu_loss))
    table.add_row("peak", peak)
    table.add_row("model FLOP/s", si(s.model_flops_per_second, "FLOP/s"))
    table.add_row("step time", f"{duration(s.step_seconds)} (last {duration(s.last_step_seconds)})")
    table.add_row("steps", f"{s.resolved_steps} ({s.warmup_steps} warm-up left out of rates)")
    tokens = si(s.tokens_total, digits=4)
    if s.token_budget:
        tokens += f" of {si(s.token_budget, digits=4)}  ETA {duration(s.eta_seconds)}"
    table.add_row("tokens", tokens)
    if s.padding_ratio is not None:
        table.add_row("padding", percent(s.padding_ratio))
    if s.world is not None:
        w = s.world
        table.add_row(
            "all ranks", f"{si(w.tokens_per_second)} tokens/s, MFU {percent(w.mfu)} (step {w.as_of_step})"
        )
    if s.errors:
        table.add_row("monitor errors", f"[red]{s.errors}[/red]")
    return table


class LiveView:
    """rich.Live over ``snapshot()``; start/stop, or use as a context manager."""

    def __init__(
        self, snapshot: Callable[[], Snapshot], *, console: Console | None = None, per_second: float = 2
    ) -> None:
        self._snapshot = snapshot
        self._live = Live(
            get_renderable=self._render,
            console=console or Console(),
            refresh_per_second=per_second,
            transient=False,
        )

    def _render(self) -> Any:
        return render(self._snapshot())

    def start(self) -> None:
        self._live.start()

    def stop(self) -> None:
        self._live.stop()

    def __enter__(self) -> LiveView:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class TerminalSink(Sink):
    """The live terminal view as a sink: it refreshes itself from snapshots; closing the run stops it."""

    name = "terminal view"

    def __init__(self, view: LiveView) -> None:
        self.view = view

    def close(self, final: Snapshot, reason: str) -> None:
        self.view.stop()
