"""Prometheus export (``training_*`` metrics, labels ``run``/``rank``): a collector run at scrape time.

The collector reads a ``Snapshot`` (and NVML telemetry through ``GpuBackend``) when Prometheus scrapes;
nothing is computed or read per training step. Gauges whose value is unknown are left out rather than
exported as a guess: ``training_mfu_ratio`` and ``training_peak_flops_per_second`` are absent while the peak
is unknown.

An MFU above 1 is physically impossible: it is still exported (so a dashboard shows the wrong figure and can
be fixed) but ``training_mfu_suspect`` is 1 and the monitor warns once that the peak or the FLOPs model is
wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from monitor.figures.snapshot import Snapshot
from monitor.figures.tensor_activity import check_mfu_against_tensor_activity
from monitor.hardware.activity import TensorActivityMeter
from monitor.hardware.nvml import GpuBackend, Telemetry, TensorActivity

LABELS = ["run", "rank"]
GPU_LABELS = ["run", "rank", "gpu"]


class MonitorCollector(Collector):
    """Turns the monitor's snapshot and NVML telemetry into metric families at each scrape."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        *,
        gpu: GpuBackend | None = None,
        gpu_indices: Sequence[int] = (),
        on_error: Callable[[str, BaseException], None] | None = None,
        on_telemetry: Callable[[list[tuple[int, Telemetry]]], None] | None = None,
        tensor_meter: TensorActivityMeter | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._on_telemetry = on_telemetry
        self._gpu = gpu
        self._gpu_indices = tuple(gpu_indices)
        self._on_error = on_error
        # GPM tensor activity since the previous scrape; the meter is shared with whoever else samples GPM
        # (the monitor's log ticks), so that each gets the activity since its own previous reading
        meter = tensor_meter if tensor_meter is not None else TensorActivityMeter(gpu, gpu_indices)
        self._tensor = meter.window()

    def describe(self) -> Iterable[Metric]:
        # Registration must not evaluate a snapshot (the monitor may not be ready): describe nothing.
        return []

    def collect(self) -> Iterator[Metric]:
        telemetry = self._read_gpus()
        try:
            if telemetry and self._on_telemetry is not None:
                self._on_telemetry(telemetry)  # the clock for the throttling share, read at this scrape
            snap = self._snapshot()
        except Exception as exc:  # never break a scrape; the monitor counts it
            if self._on_error is not None:
                self._on_error("snapshot for /metrics failed", exc)
            return
        yield from snapshot_metrics(snap)
        yield from gpu_metrics(snap, telemetry)
        yield from tensor_metrics(snap, self._tensor.take())

    def _read_gpus(self) -> list[tuple[int, Telemetry]]:
        out: list[tuple[int, Telemetry]] = []
        if self._gpu is None or not self._gpu.available:
            return out
        for index in self._gpu_indices:
            try:
                reading = self._gpu.telemetry(index)
            except Exception as exc:
                reading = None
                if self._on_error is not None:
                    self._on_error(f"NVML telemetry for GPU {index} failed", exc)
            if reading is None:
                continue
            if reading == Telemetry() and self._on_error is not None:
                # The NVML adapter turns a failed read into empty fields: still a failure to count and report.
                self._on_error(f"NVML telemetry for GPU {index}", RuntimeError("NVML returned no readings"))
            out.append((index, reading))
        return out


def _gauge(name: str, doc: str, labels: list[str], value: float, unit: str = "") -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=LABELS, unit=unit)
    g.add_metric(labels, value)
    return g


def _counter(name: str, doc: str, labels: list[str], value: float) -> CounterMetricFamily:
    c = CounterMetricFamily(name, doc, labels=LABELS)
    c.add_metric(labels, value)
    return c


def snapshot_metrics(s: Snapshot) -> Iterator[Metric]:
    """The training_* families of one snapshot (pure: testable without a server)."""
    lv = [s.run, str(s.rank)]
    yield _counter("training_tokens", "Tokens processed on this rank (padding included)", lv, s.tokens_total)
    if s.real_tokens_total is not None:
        yield _counter(
            "training_real_tokens",
            "Non-padding tokens (from attention_mask) on this rank",
            lv,
            s.real_tokens_total,
        )
    yield _counter("training_steps", "Optimizer steps completed on this rank", lv, s.resolved_steps)
    yield _counter(
        "training_model_flops", "Model FLOPs done on this rank (tokens x training FLOPs per token)", lv,
        s.model_flops_total,
    )  # fmt: skip
    yield _counter("training_monitor_errors", "Errors the monitor caught and survived", lv, s.errors)
    if s.peak_flops_per_second is not None:
        doc = "Dense peak FLOP/s of this rank's device for the run's dtype"
        yield _gauge("training_peak_flops_per_second", doc, lv, s.peak_flops_per_second)
    if s.mfu is not None:
        yield _gauge("training_mfu_ratio", "Model FLOPs utilization over the window, this rank", lv, s.mfu)
        yield _gauge(
            "training_mfu_suspect",
            "1 when MFU > 1: the peak or the FLOPs model is wrong",
            lv,
            float(s.mfu_suspect),
        )
    if s.mfu_bf16 is not None:
        yield _gauge(
            "training_mfu_bf16_ratio",
            "An FP8 run's MFU against the BF16 peak (training_mfu_ratio is against the FLOP-weighted "
            "FP8/BF16 peak), so that FP8 and BF16 runs compare",
            lv,
            s.mfu_bf16,
        )
    if s.hfu is not None:
        yield _gauge(
            "training_hfu_ratio", "Hardware FLOPs utilization (with recomputation), window", lv, s.hfu
        )
    if s.mfu_cumulative is not None:
        yield _gauge(
            "training_mfu_cumulative_ratio", "MFU since warm-up ended, this rank", lv, s.mfu_cumulative
        )
    if s.tokens_per_second is not None:
        yield _gauge("training_tokens_per_second", "Tokens per second over the window, this rank", lv,
                     s.tokens_per_second)  # fmt: skip
    if s.model_flops_per_second is not None:
        yield _gauge(
            "training_model_flops_per_second",
            "Model FLOP/s over the window, this rank",
            lv,
            s.model_flops_per_second,
        )
    if s.last_step_time is not None:
        yield _gauge(
            "training_last_step_timestamp_seconds",
            "Unix time of the last completed step",
            lv,
            s.last_step_time,
        )
    yield _gauge("training_world_size", "Ranks in the run", lv, s.world_size)
    if s.documents_total is not None:
        yield _counter("training_documents", "Packed documents processed on this rank", lv, s.documents_total)
    if s.mean_document_length is not None:
        yield _gauge(
            "training_document_length_mean", "Mean tokens per packed document, this rank", lv,
            s.mean_document_length,
        )  # fmt: skip
    hist = HistogramMetricFamily(
        "training_step_duration_seconds", "Step time: previous step end to this step end", labels=LABELS
    )
    buckets = [(_le(le), float(count)) for le, count in s.step_duration_buckets]
    buckets.append(("+Inf", float(s.step_duration_count)))
    hist.add_metric(lv, buckets, s.step_duration_sum)
    yield hist
    info = InfoMetricFamily("training_run", "What this run measures against", labels=LABELS)
    run_labels = {
        "device": s.device,
        "dtype": s.dtype or "",
        "model": s.model or "",
        "peak_source": s.peak_source or "unknown",
        "flops_method": s.flops_method or "",
        "world_size": str(s.world_size),
    }
    if s.parallel:  # only with a parallel layout: the label set of other runs stays as it was
        run_labels["parallel"] = s.parallel
    info.add_metric(lv, run_labels)
    yield info
    if s.mfu_loss is not None:
        loss = GaugeMetricFamily(
            "training_mfu_loss_ratio",
            "Points of peak FLOPs lost, by cause (docs/attribution.md); all but padding sum to 1 - MFU",
            labels=[*LABELS, "cause"],
        )
        for cause, value in s.mfu_loss.shares().items():
            if value is not None:  # an unmeasured cause is left out, never exported as 0
                loss.add_metric([*lv, cause], value)
        yield loss
    w = s.world
    if w is not None:
        if w.tokens_per_second is not None:  # None: no rank has a windowed rate yet (warm-up), not zero
            yield _gauge(
                "training_world_tokens_per_second", "All ranks: tokens per second", lv, w.tokens_per_second
            )
        yield _counter("training_world_tokens", "All ranks: tokens processed", lv, w.tokens_total)
        if w.mfu is not None:
            yield _gauge(
                "training_world_mfu_ratio", "All ranks: sum of model FLOP/s over sum of peaks", lv, w.mfu
            )
        if w.max_step_seconds is not None:
            yield _gauge(
                "training_world_max_step_seconds",
                "Slowest rank's windowed mean step time",
                lv,
                w.max_step_seconds,
            )


def _le(value: float) -> str:
    from prometheus_client.utils import floatToGoString

    return str(floatToGoString(value))


def gpu_metrics(s: Snapshot, readings: list[tuple[int, Telemetry]]) -> Iterator[Metric]:
    """The training_gpu_* families from NVML readings; a field NVML did not give is left out."""
    specs: list[tuple[str, str, str, Callable[[Telemetry], Any]]] = [
        (
            "training_gpu_utilization_ratio",
            "gauge",
            "GPU busy time share (NVML)",
            lambda t: t.utilization_ratio,
        ),
        (
            "training_gpu_memory_used_bytes",
            "gauge",
            "Device memory in use (NVML)",
            lambda t: t.memory_used_bytes,
        ),
        ("training_gpu_power_watts", "gauge", "Power draw (NVML)", lambda t: t.power_watts),
        (
            "training_gpu_energy_joules",
            "counter",
            "Energy since driver load (NVML)",
            lambda t: t.energy_joules,
        ),
        ("training_gpu_sm_clock_hertz", "gauge", "SM clock (NVML)", lambda t: t.sm_clock_hz),
        (
            "training_gpu_temperature_celsius",
            "gauge",
            "GPU temperature (NVML)",
            lambda t: t.temperature_celsius,
        ),
    ]
    if not readings:
        return
    for name, kind, doc, get in specs:
        family: GaugeMetricFamily | CounterMetricFamily
        if kind == "counter":
            family = CounterMetricFamily(name, doc, labels=GPU_LABELS)
        else:
            family = GaugeMetricFamily(name, doc, labels=GPU_LABELS)
        any_value = False
        for index, t in readings:
            value = get(t)
            if value is not None:
                family.add_metric([s.run, str(s.rank), str(index)], float(value))
                any_value = True
        if any_value:
            yield family


def tensor_metrics(s: Snapshot, readings: list[tuple[int, TensorActivity]]) -> Iterator[Metric]:
    """training_gpu_tensor_active_ratio (kind any/hmma/imma/dfma) and the MFU-vs-tensor-activity flag."""
    if not readings:
        return
    family = GaugeMetricFamily(
        "training_gpu_tensor_active_ratio",
        "Time share of tensor-core activity since the previous scrape (NVML GPM; kind any/hmma/imma/dfma)",
        labels=[*GPU_LABELS, "kind"],
    )
    for index, a in readings:
        for kind, value in (
            ("any", a.any_ratio), ("hmma", a.hmma_ratio), ("imma", a.imma_ratio), ("dfma", a.dfma_ratio)
        ):  # fmt: skip
            if value is not None:
                family.add_metric([s.run, str(s.rank), str(index), kind], value)
    yield family
    # This rank's MFU against its busiest GPU's tensor activity (a rank drives its GPUs together).
    check = check_mfu_against_tensor_activity(s.mfu, max(a.any_ratio or 0.0 for _, a in readings))
    if check is not None:
        flag = GaugeMetricFamily(
            "training_mfu_suspect_reason",
            "1 when MFU is implausible for the named reason (above_tensor_activity: the FLOPs model or the "
            "peak overcounts)",
            labels=[*LABELS, "reason"],
        )
        flag.add_metric([s.run, str(s.rank), "above_tensor_activity"], float(check.suspect))
        yield flag


def serve(
    registry: Any,
    port: int,
    addr: str = "127.0.0.1",
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
    client_cafile: str | None = None,
    client_capath: str | None = None,
    client_auth_required: bool = False,
) -> tuple[Any, Any]:
    """Start the HTTP(S) server for ``registry``; returns (server, thread); OSError if in use."""
    from prometheus_client import start_http_server

    return start_http_server(
        port,
        addr,
        registry=registry,
        certfile=certfile,
        keyfile=keyfile,
        client_cafile=client_cafile,
        client_capath=client_capath,
        client_auth_required=client_auth_required,
    )
