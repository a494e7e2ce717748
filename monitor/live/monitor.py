"""MFUMonitor: wrap a training loop, change nothing else, and see true MFU live.

    from monitor import MFUMonitor

    with MFUMonitor(model, optimizer=opt, port=9400, log_path="runs/run.jsonl") as mon:
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            opt.step()  # the step post-hook closes the step (every micro-batch before it counted)
            opt.zero_grad()
    print(mon.snapshot().mfu)

This module is the façade that wires the live path together, data flowing one way:

    capture (live/capture.py: the hooks, timestamps and counts) → resolver (live/resolver.py: resolved steps,
    totals, histogram) → figures (figures/: Snapshot, windows, world figures, the MFU-loss split) → sinks
    (export/: Prometheus, run log, alerts, terminal view), with what the run needs to know once (FLOPs source,
    peak, device, dtype) resolved by live/setup.py.

The per-step path only reads tensor shapes, takes a host timestamp or records a CUDA event, and appends to a
deque. FLOPs, rates, MFU, the run log and the all-reduce across ranks happen at log ticks; Prometheus values
at scrape time. Every hook body is guarded: an error inside the monitor is counted in
``training_monitor_errors_total``, warned about once, and training goes on. It is the only module that
imports both ``live/`` and ``export/``.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from monitor.export.alerts import AlertSink
from monitor.export.figures_sink import FiguresSink
from monitor.export.prometheus import MonitorCollector
from monitor.export.runlog import RunLogWriter
from monitor.export.runlog_sink import RunLogSink
from monitor.export.serving import PrometheusSink
from monitor.export.sinks import SinkFanOut
from monitor.figures.alert import AlertEvent, LowMfuAlert
from monitor.figures.snapshot import Snapshot, WorldFigures
from monitor.figures.steps import StepBatch, window_mfu
from monitor.figures.world import rank_contribution, world_figures
from monitor.hardware.activity import TensorActivityMeter
from monitor.hardware.nvml import GpuBackend
from monitor.live.capture import StepCapture, inert_capture
from monitor.live.clock import SmClock
from monitor.live.compile_compat import unwrap
from monitor.live.distributed import MAX_FIELDS, SUM_FIELDS, Reducer, rank_place
from monitor.live.distributed import initialized as dist_initialized
from monitor.live.flops import FlopsPerToken
from monitor.live.fp8 import Fp8Peak
from monitor.live.options import CHECKED, check_inputs, default_run_id, unwrap_optimizer
from monitor.live.parallel import apply_layout, parallel_layout, parallel_record
from monitor.live.resolver import StepResolver
from monitor.live.setup import resolve_run_setup
from monitor.live.signals import SigtermHandler
from monitor.live.snapshots import RunLabels, build_snapshot, run_start_record
from monitor.live.timing import TimerBackend
from monitor.parallel.dtensor import unknown_mesh_dims
from monitor.schema import RunStart

log = logging.getLogger("monitor")
NO_TOKENS_AFTER = 20  # closed steps without a single counted token before the monitor says so


class MFUMonitor:
    """Live tokens/s, MFU and HFU of a training loop, exported to Prometheus, a run log and the terminal.

    Arguments (all optional; see ``docs/monitor.md``):
      model, optimizer: hooks go on them. Without an optimizer call ``mon.step(tokens=n)`` after each step.
      spec: a ``ModelSpec``, a Hugging Face config (object, dict or path) or a preset name; default
        ``model.config`` when present, else FLOPs measured once per sequence length on the meta device.
      flops_per_token: training FLOPs per token (a number; overrides ``spec``).
      seq_len: the attention length for the FLOPs model (default: the batch's last dimension).
      peak_flops: per-device peak FLOP/s (default: detected for ``dtype``), labelled ``peak_source``
        (default "override"). dtype: e.g. "bf16" (default: autocast or the parameters' dtype at start).
      port, addr: serve /metrics on ``port + LOCAL_RANK`` at ``addr`` (default 127.0.0.1); ``tls`` passes
        certfile/keyfile/client_cafile/client_capath/client_auth_required to prometheus-client.
      registry: a prometheus_client CollectorRegistry (default: a fresh one per monitor).
      log_path: the JSONL run log; file_sd_dir: write a Prometheus file_sd target per rank there.
      alert_below (0.25), alert_after (600 s), on_alert: in-process low-MFU alert.
      on_figures: ``callback(figures, step)`` at each log tick, ``figures`` a dict of MFU, HFU, tokens/s and
        model TFLOP/s (``figures/loggers.py``; unknown ones left out) — for TensorBoard or any tracker.
      warmup_steps (3), window_steps (20), window_seconds (60): the rate window.
      log_every (50): steps between log ticks under torchrun (run log, alert, all-reduce across ranks,
        the same steps on every rank); tick_seconds (2): on one process, a tick every 2 s (or 1000 steps).
      recompute (False | "full" | "selective"): activation recomputation, for HFU.
      causal (False): the FLOPs convention for attention (default full S×S attention).
      token_budget: tokens the run will process (for the ETA); live: show the rich terminal view.
      gpu_backend, gpu_index: NVML backend and this rank's NVML GPU index (default: the model's device).
      timer: a ``TimerBackend`` (default: CUDA events for a CUDA model, the host clock otherwise).
      rank, world_size: this process's place, for launchers without torch.distributed (ignored once it is
        initialised); first_step: the index of the first step (a resumed run continues its numbering).
    """

    def __init__(
        self,
        model: torch.nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        spec: Any = None,
        flops_per_token: float | None = None,
        seq_len: int | None = None,
        peak_flops: float | None = None,
        peak_source: str | None = None,
        dtype: Any = None,
        port: int | None = None,
        addr: str = "127.0.0.1",
        tls: dict[str, Any] | None = None,
        registry: Any = None,
        log_path: str | os.PathLike[str] | None = None,
        file_sd_dir: str | os.PathLike[str] | None = None,
        alert_below: float = 0.25,
        alert_after: float = 600.0,
        on_alert: Callable[[AlertEvent], Any] | None = None,
        on_figures: Callable[[dict[str, float], int], Any] | None = None,
        run: str | None = None,
        warmup_steps: int = 3,
        window_steps: int = 20,
        window_seconds: float = 60.0,
        log_every: int = 50,
        tick_seconds: float = 2.0,
        recompute: bool | str = False,
        causal: bool = False,
        token_budget: int | None = None,
        live: bool = False,
        gpu_backend: GpuBackend | None = None,
        gpu_index: int | None = None,
        timer: TimerBackend | None = None,
        process_group: Any = None,
        handle_sigterm: bool = True,
        flush_seconds: float = 5.0,
        rank: int | None = None,
        world_size: int | None = None,
        first_step: int = 0,
        mesh: Any = None,
        parallel: dict[str, Any] | None = None,
    ) -> None:
        check_inputs(**{name: value for name, value in locals().items() if name in CHECKED})
        self._closed = False
        self._train_thread = threading.get_ident()  # re-read at each log tick: the thread that trains
        self._errors = 0
        self._warned: set[str] = set()
        self.model = model
        optimizer = unwrap_optimizer(optimizer)
        self.optimizer = optimizer
        place = rank_place()
        self.rank, self.local_rank, self.world_size = place.rank, place.local_rank, place.world_size
        if not dist_initialized():  # launchers without torch.distributed may say where this process is
            self.rank = self.rank if rank is None else rank
            self.world_size = self.world_size if world_size is None else world_size
        self.run = run or default_run_id()
        self._first_step = first_step
        self._warmup_steps = warmup_steps
        self._window_steps = window_steps
        self._window_seconds = float(window_seconds)
        self._token_budget = token_budget
        self._seq_len_override = seq_len
        self._alert = LowMfuAlert(alert_below, alert_after)
        self._reducer = Reducer(process_group)
        self._world: WorldFigures | None = None

        # What the run needs to know once (bad input fails here, not mid-run).
        self.setup = resolve_run_setup(
            model,
            spec=spec,
            flops_per_token=flops_per_token,
            peak_flops=peak_flops,
            peak_source=peak_source,
            dtype=dtype,
            gpu_backend=gpu_backend,
            gpu_index=gpu_index,
            timer=timer,
            warn=self._warn_once,
            on_error=self._error,
        )
        self.device, self.dtype = self.setup.device, self.setup.dtype
        peak = self.setup.peak
        self.peak_flops, self.peak_source, self.device_name = (
            peak.flops_per_second,
            peak.source,
            peak.device_name,
        )
        self.model_name, self.params = self.setup.model_name, self.setup.params
        # FP8 linear layers: the FLOP-weighted peak is settled at the first log tick that knows the FLOPs
        # per token (live/fp8.py); until then MFU is unknown rather than against the wrong peak
        self._fp8 = Fp8Peak(self.setup.fp8, unwrap(model)) if self.setup.fp8 is not None else None
        if self._fp8 is not None and self._fp8.pending:
            self.peak_flops, self.peak_source = None, "fp8 FLOP-weighted (at the first log tick)"
        self._clock = SmClock(self.setup.gpu, self.setup.gpu_indices, self._error)
        # GPM tensor activity, sampled at log ticks and scrapes (each gets the activity since its own last)
        self._tensor_meter = TensorActivityMeter(self.setup.gpu, self.setup.gpu_indices)
        self._tensor = self._tensor_meter.window()
        self._tensor_active: float | None = None

        # Capture → resolver.
        self._flops = FlopsPerToken(
            self.setup.flops_source,
            model=model,
            seq_len_override=seq_len,
            causal=causal,
            recompute=recompute,
            on_error=self._error,
        )
        self._capture = StepCapture(
            timer=self.setup.timer,
            first_step=first_step,
            log_every=log_every,
            tick_seconds=tick_seconds,
            seq_len_override=seq_len,
            on_tick=self._log_tick,
            on_error=self._error,
            on_seq_len=self._note_seq_len,
            seq_len_hint=self._last_seq_len,
        )
        self._flops.pause_hooks = self._pause_hooks
        self._capture.on_warn = self._warn_once
        self._layout = parallel_layout(mesh, parallel, rank=self.rank, world_size=self.world_size)
        self._resolver = StepResolver(
            self._capture.pending,
            flops=self._flops,
            timer=self.setup.timer,
            host_timer=self._capture.host_timer,
            first_counted_step=first_step + warmup_steps,
            window_steps=window_steps,
            seq_len=seq_len,
            on_error=self._error,
        )
        self._lock = self._resolver.lock
        if self._layout is not None:
            apply_layout(self._layout, self._flops, self._resolver)
            self._resolver.warn = self._warn_once
            self._capture.pipeline_inference = self._layout.size("pp") > 1
        if model is not None:
            unknown = unknown_mesh_dims(unwrap(model).named_parameters(), self._layout)
            if unknown:
                self._warn_once("mesh dims", unknown)
        self._wall_offset = self._capture.wall0 - self._capture.perf0  # unix time = offset + perf_counter

        # Hooks.
        self._handles: list[Any] = []
        capture = self._capture
        if model is not None:
            self._handles.append(model.register_forward_pre_hook(capture.forward_pre_hook, with_kwargs=True))
            if capture.host_timer and self.world_size > 1:
                # When the backward starts (for the straggler wait): a tensor hook on the forward's output,
                # only where there are ranks to wait for (it costs ~10 us a step). On CUDA the host clock
                # cannot tell when the device gets there, so it is not measured there.
                self._handles.append(model.register_forward_hook(capture.forward_post_hook))
        if optimizer is not None:
            self._handles.append(optimizer.register_step_post_hook(capture.optimizer_step_hook))

        # Sinks. Each failure is counted and warned once; training goes on without that export.
        self._sinks = SinkFanOut(on_error=self._error)
        self._prometheus = PrometheusSink(
            MonitorCollector(
                self.snapshot,
                gpu=self.setup.gpu,
                gpu_indices=self.setup.gpu_indices,
                on_error=self._error,
                on_telemetry=self._clock.on_telemetry,
                tensor_meter=self._tensor_meter,
            ),
            registry,
            on_error=self._error,
        )
        self._sinks.add(self._prometheus)
        self.registry = self._prometheus.registry
        self.port: int | None = None
        if port is not None:
            self._prometheus.serve(
                port, addr, tls or {}, local_rank=self.local_rank, file_sd_dir=file_sd_dir, run=self.run,
                rank=self.rank,
            )  # fmt: skip
            self.port = self._prometheus.port
        self._server = self._prometheus.server
        self._tensor_meter.sample()  # GPM's first sample: the first tick and scrape then have a figure
        self._run_log: RunLogSink | None = None
        if log_path is not None:
            writer = RunLogWriter(log_path, on_error=self._error, flush_seconds=flush_seconds)
            self._run_log = RunLogSink(writer, self._run_start, run=self.run, rank=self.rank)
            self._sinks.add(self._run_log)
            self._resolver.keep_for_log = writer.enabled
            if self._seq_len_for_start() is not None:
                self._run_log.write_start()
        self._sinks.add(AlertSink(run=self.run, rank=self.rank, callback=on_alert, on_error=self._error))
        if on_figures is not None:
            self._sinks.add(FiguresSink(on_figures, self.snapshot))
        self._view: Any = None
        if live:
            self.start_view()
        self._end_reason = "exit"  # the run_end reason at interpreter exit
        self._flush_at_tick = False
        self._sigterm = SigtermHandler(lambda reason: self.close(reason=reason), self._after_sigterm)
        if handle_sigterm:
            self._sigterm.install()
        atexit.register(self._atexit)

    # --- the training loop's calls ---
    def step(
        self,
        tokens: int | None = None,
        *,
        real_tokens: int | None = None,
        seq_len: int | None = None,
        documents: list[int] | None = None,
    ) -> None:
        """Close a step by hand (loops without an optimizer hook).

        ``tokens``: processed this step on this rank (default: what the forward hook counted);
        ``real_tokens``: the non-padding ones, if known; ``documents``: the lengths of the packed documents
        of this step's rows (flat, or one list per row), priced per document (attention Σ Lᵢ²) — they
        replace what ``position_ids`` / ``cu_seq_lens_*`` said."""
        self._capture.step(tokens, real_tokens=real_tokens, seq_len=seq_len, documents=documents)

    def resume(self) -> None:
        """The next step's clock starts now: call it after work between steps that is not training
        (evaluation, a checkpoint save), so that it counts neither into the next step's time nor as input
        wait. Does nothing while a step is under way (a forward since the last step)."""
        self._capture.resume()

    def _pause_hooks(self, paused: bool) -> None:
        self._capture.paused = paused

    def _note_seq_len(self, seq_len: int) -> None:
        self._resolver.last_seq_len = seq_len

    def _last_seq_len(self) -> int | None:
        return self._resolver.last_seq_len

    # --- copies of a monitored model ---
    def __deepcopy__(self, memo: dict[int, Any]) -> MFUMonitor:
        """A copy of the monitor (with a copied model) is inert: see ``StepCapture.__deepcopy__``."""
        return _inert_monitor()

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return _inert_monitor, ()

    # --- log ticks ---
    def _log_tick(self, reduce: bool) -> None:
        """A log tick, on the training thread: resolve, hand the steps to the sinks, alert, reduce across
        ranks."""
        try:
            self._train_thread = threading.get_ident()  # ticks run on the thread that trains
            now = time.perf_counter()
            self._clock.read()
            self._tensor_active = self._tensor.busiest()
            self._capture.pipeline_inference = False  # the schedule's shape inference is in its first step
            resolver = self._resolver
            with self._lock:
                resolver.resolve(True)
                self._settle_fp8_peak()
                mfu = None
                if self._flops.source is not None:
                    mfu = window_mfu(
                        reversed(resolver.recent),
                        now_perf=now,
                        first_counted_step=resolver.first_counted_step,
                        max_steps=self._window_steps,
                        max_age_seconds=self._window_seconds,
                        peak_flops_per_second=self.peak_flops,
                    )
                cumulative = resolver.mfu_cumulative(self.peak_flops)
            self._sinks.on_steps(self._step_batch(resolver.take_unlogged(), mfu, cumulative))
            over = [v for v in (mfu, cumulative) if v is not None and v > 1.0]
            if over and "suspect" not in self._warned:
                self._warn_suspect(over[0])
            if resolver.tokens_total == 0 and resolver.resolved >= NO_TOKENS_AFTER:
                self._warn_once(
                    "no tokens",
                    f"{resolver.resolved} steps closed and no token was counted: the forward hook is not on "
                    "the model that runs (pass model=, the module whose forward gets the input ids) — or "
                    "call mon.step(tokens=n)",
                )
            event = self._alert.update(mfu, self._last_end_wall or time.time())
            if event is not None:
                self._sinks.on_alert(event)
            if reduce and dist_initialized():
                self._exchange(self.snapshot())
            if self._flush_at_tick and self._run_log is not None:
                self._flush_at_tick = False
                self._run_log.writer.flush()
        except Exception as exc:
            self._error("log interval", exc)

    def _settle_fp8_peak(self) -> None:
        """The FLOP-weighted peak of an FP8 run, once: the FP8 layers' share of the FLOPs per token at the
        run's sequence length (this pipeline stage's share under a parallel layout)."""
        fp8 = self._fp8
        if fp8 is None or not fp8.pending:
            return
        seq = self._seq_len_override or self._resolver.last_seq_len or (1 if self._flops.fixed else None)
        per_token = self._flops(seq) if seq else None
        if per_token is None:
            return
        model_flops = per_token[0] / self._flops.scale  # the whole model's, at the length attention runs over
        layout = self._layout
        if layout is not None:  # this pipeline stage's FLOPs
            model_flops *= layout.stage_share
        try:
            peak = fp8.settle(model_flops)
        except Exception as exc:  # counted once; the other dtype's peak from now on
            self.peak_flops, self.peak_source = fp8.fallback
            self._error("FP8 peak", exc)
            return
        self.peak_flops, self.peak_source = peak.peak_flops_per_second, peak.source

    @property
    def bf16_peak_flops(self) -> float | None:
        """An FP8 run's BF16 peak, for MFU against it (FP8 and BF16 runs compare); None otherwise."""
        return self._fp8.peaks.bf16 if self._fp8 is not None else None

    def _step_batch(
        self, steps: list[Any], mfu: float | None = None, cumulative: float | None = None
    ) -> StepBatch:
        return StepBatch(
            steps=steps,
            run=self.run,
            rank=self.rank,
            wall_offset=self._wall_offset,
            first_counted_step=self._resolver.first_counted_step,
            peak_flops_per_second=self.peak_flops,
            sm_clock_ratio=self._clock.ratio,
            tensor_active=self._tensor_active,
            window_mfu=mfu,
            mfu_cumulative=cumulative,
            token_weight=self._resolver.token_weight,
        )

    @property
    def _last_end_wall(self) -> float | None:
        last = self._resolver.last_end_perf
        return None if last is None else self._wall_offset + last

    def snapshot(self) -> Snapshot:
        """The current figures (resolves completed steps first; safe from any thread)."""
        on_training_thread = threading.get_ident() == self._train_thread
        with self._lock:
            self._resolver.resolve(on_training_thread)
            return build_snapshot(
                self._resolver,
                self._flops,
                self._labels(),
                now=time.time(),
                wall0=self._capture.wall0,
                wall_offset=self._wall_offset,
                steps=self._capture.next_index - self._first_step,
                window_steps=self._window_steps,
                window_seconds=self._window_seconds,
                measure=on_training_thread,
                alert_firing=self._alert.firing,
                errors=self._errors,
                world=self._world,
                clock_ratio=self._clock.ratio,
                tensor_active=self._tensor_active,
            )

    def _exchange(self, snap: Snapshot) -> None:
        """The run's figures from one all-reduce of every rank's contribution (``figures/world.py``)."""
        place = rank_place()
        self.rank, self.world_size = place.rank, place.world_size
        if place.world_size <= 1:
            return
        sums, maxes = rank_contribution(snap)
        got = self._reducer.exchange([sums[k] for k in SUM_FIELDS], [maxes[k] for k in MAX_FIELDS])
        if got is None:
            return
        s, m = dict(zip(SUM_FIELDS, got[0], strict=True)), dict(zip(MAX_FIELDS, got[1], strict=True))
        world = world_figures(s, m, world_size=place.world_size, as_of_step=self._capture.next_index)
        with self._lock:
            self._world = world

    # --- run log ---
    def _seq_len_for_start(self) -> int | None:
        if self._seq_len_override:
            return self._seq_len_override
        if self._flops.fixed:
            return self._resolver.last_seq_len or 0
        return None

    def _labels(self) -> RunLabels:
        return RunLabels(
            run=self.run,
            rank=self.rank,
            local_rank=self.local_rank,
            world_size=self.world_size,
            device=self.device_name,
            dtype=self.dtype,
            model=self.model_name,
            params=self.params,
            peak_flops_per_second=self.peak_flops,
            peak_source=self.peak_source,
            bf16_peak_flops_per_second=self.bf16_peak_flops,
            warmup_steps=self._warmup_steps,
            token_budget=self._token_budget,
            parallel=self._layout.short() if self._layout is not None else None,
        )

    def _run_start(self) -> RunStart:
        seq = self._seq_len_override or self._resolver.last_seq_len
        return run_start_record(
            self._flops,
            self._labels(),
            seq_len=seq,
            time=self._capture.wall0,
            timer=self.setup.timer.name,
            parallel=parallel_record(self._layout),
        )

    def _warn_suspect(self, mfu: float) -> None:
        self._warn_once(
            "suspect",
            f"MFU {mfu:.3g} is above 1, which is impossible: the peak or "
            f"the FLOPs model is wrong (peak {self.peak_flops:.3g} FLOP/s from {self.peak_source}; "
            f"FLOPs {self._flops.method}) — pass peak_flops= or spec=",
        )

    # --- terminal view ---
    def start_view(self, console: Any = None) -> None:
        """Show the live rich view (refreshed from its own thread from snapshots)."""
        if self._view is not None:
            return
        try:
            from monitor.export.terminal import LiveView, TerminalSink

            self._view = LiveView(self.snapshot, console=console)
            self._view.start()
            self._sinks.add(TerminalSink(self._view))
        except Exception as exc:
            self._error("terminal view", exc)
            self._view = None

    # --- errors ---
    def _error(self, where: str, exc: BaseException) -> None:
        """Count an error inside the monitor and warn once per place; never raise into training."""
        self._errors += 1
        self._warn_once(where, f"{where}: {type(exc).__name__}: {exc} (training continues; counted in "
                               "training_monitor_errors_total)")  # fmt: skip

    def _warn_once(self, key: str, message: str) -> None:
        if key in self._warned:
            return
        self._warned.add(key)
        log.warning("mfu-monitor: %s", message)

    @property
    def errors(self) -> int:
        return self._errors

    # --- lifecycle ---
    def __enter__(self) -> MFUMonitor:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        reason = "closed" if exc_type is None else f"exception: {exc_type.__name__}"
        self.close(reason=reason)

    def close(self, reason: str = "closed") -> Snapshot:
        """Remove hooks, write what is left and a ``run_end``, stop the server. Returns the final snapshot."""
        with self._lock:
            if self._closed:
                return self.snapshot()
            self._closed = True
            self._capture.closed = True
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        wait = getattr(self.setup.timer, "wait", None)
        if wait is not None and self._capture.prev_marker is not None:
            try:
                wait(self._capture.prev_marker)  # the run is over: waiting for the last event costs nothing
            except Exception as exc:
                self._error("waiting for the last step", exc)
        snap = self.snapshot()
        self._sinks.on_steps(self._step_batch(self._resolver.take_unlogged()))
        self._sinks.close(snap, reason)
        self._sigterm.restore()
        atexit.unregister(self._atexit)
        return snap

    def _atexit(self) -> None:
        if not self._closed:
            self.close(reason=self._end_reason)

    @property
    def run_log_enabled(self) -> bool:
        """Whether a run log is being written (a log_path was given and could be opened)."""
        return self._run_log is not None and self._run_log.enabled

    def _after_sigterm(self) -> None:
        """SIGTERM with a program handler that trains on: nothing is done inside the signal handler (it may
        have interrupted a hook); the next step ticks, writing and flushing the run log, and the run's
        ``run_end`` at exit says ``sigterm``."""
        self._end_reason = "sigterm"
        self._flush_at_tick = True
        self._capture.next_tick = 0.0


def _inert_monitor() -> MFUMonitor:
    """A monitor whose hooks and calls do nothing: what copies of a monitored model's hooks are bound to."""
    mon = MFUMonitor.__new__(MFUMonitor)
    mon._capture = inert_capture()
    mon._closed = True
    return mon
