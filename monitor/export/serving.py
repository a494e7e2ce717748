"""The Prometheus sink: registers the scrape-time collector, serves ``/metrics`` (optionally TLS) and
writes this rank's ``file_sd`` target; undoes all three at close. Nothing happens per step: the collector
reads a snapshot (and NVML telemetry) when Prometheus scrapes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from monitor.export.prometheus import MonitorCollector, serve
from monitor.export.sinks import Sink
from monitor.figures.snapshot import Snapshot

OnError = Callable[[str, BaseException], None]


class PrometheusSink(Sink):
    name = "prometheus"

    def __init__(self, collector: MonitorCollector, registry: Any = None, *, on_error: OnError) -> None:
        from prometheus_client import CollectorRegistry

        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
        self.collector = collector
        self.registry.register(collector)
        self.on_error = on_error
        self.server: Any = None
        self.port: int | None = None
        self.file_sd: Path | None = None

    def serve(
        self,
        port: int,
        addr: str,
        tls: dict[str, Any],
        *,
        local_rank: int,
        file_sd_dir: Any = None,
        run: str,
        rank: int,
    ) -> None:
        """Serve /metrics on ``port + local_rank`` (``port`` 0: any free port); a failure is reported."""
        wanted = port + local_rank if port else 0
        try:
            self.server, _ = serve(self.registry, wanted, addr, **tls)
            self.port = int(self.server.server_port)
        except OSError as exc:
            self.on_error(f"serving /metrics on {addr}:{wanted}", exc)
            return
        if file_sd_dir is not None:
            from monitor.export.file_sd import target_host, write_target

            try:
                self.file_sd = write_target(
                    file_sd_dir, run=run, rank=rank, host=target_host(addr), port=self.port
                )
            except OSError as exc:
                self.on_error("writing the file_sd target", exc)

    def close(self, final: Snapshot, reason: str) -> None:
        if self.server is not None:
            try:
                self.server.shutdown()
                self.server.server_close()
            except Exception as exc:
                self.on_error("stopping the /metrics server", exc)
        if self.file_sd is not None:
            from monitor.export.file_sd import remove_target

            remove_target(self.file_sd)
        with contextlib.suppress(KeyError):
            self.registry.unregister(self.collector)
