"""MFUMonitor: wrap a training loop, change nothing else, and see true MFU live.

    from monitor import MFUMonitor

    with MFUMonitor(model, optimizer=opt, port=9400, log_path="runs/run.jsonl") as mon:
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            opt.step()  # the step post-hook closes the step (every micro-batch before it counted)
            opt.zero_grad()
    print(mon.snapshot().mfu)

The per-step path (a forward pre-hook and an optimizer step post-hook) only reads tensor shapes, takes a host
timestamp or records a CUDA event, and appends to a deque. FLOPs, rates, MFU, the run log and the all-reduce
across ranks happen at log intervals; Prometheus values at scrape time. Every hook body is guarded: an error
inside the monitor is counted in ``training_monitor_errors_total``, warned about once, and training goes on.
"""

from __future__ import annotations

import atexit
import bisect
import contextlib
import hashlib
import logging
import math
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from monitor.errors import InputError
from monitor.hardware.nvml import GpuBackend, NullBackend
from monitor.live.alert import AlertEvent, LowMfuAlert
from monitor.live.distributed import Reducer, rank_place
from monitor.live.snapshot import Snapshot, WorldFigures
from monitor.live.timing import HostTimer, TimerBackend, timer_for_device
from monitor.live.tokens import DeferredCount, tokens_in
from monitor.live.window import (
    STEP_BUCKETS,
    StepSample,
    eta_seconds,
    rates,
    select_window,
    utilization,
)

log = logging.getLogger("monitor")

_grad_enabled = torch.is_grad_enabled
_perf = time.perf_counter


class _Raw:
    """A closed step as the hot path left it: markers and counts, nothing computed."""

    __slots__ = (
        "end_perf",
        "forward_perf",
        "index",
        "marker",
        "masks",
        "prev",
        "prev_end",
        "real",
        "tokens_by_len",
    )

    def __init__(
        self,
        index: int,
        prev: Any,
        marker: Any,
        end_perf: float,
        prev_end: float | None,
        forward_perf: float | None,
        tokens_by_len: dict[int, int],
        masks: list[DeferredCount] | None,
        real: int | None,
    ) -> None:
        self.index = index
        self.prev = prev
        self.marker = marker
        self.end_perf = end_perf
        self.prev_end = prev_end
        self.forward_perf = forward_perf
        self.tokens_by_len = tokens_by_len
        self.masks = masks
        self.real = real


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
      warmup_steps (3), window_steps (20), window_seconds (60): the rate window.
      log_every (50): steps between log ticks (run log, alert, all-reduce across ranks); also every
        ``tick_seconds`` (2 s) on one process.
      recompute (False | "full" | "selective"): activation recomputation, for HFU.
      causal (False): the FLOPs convention for attention (default full S×S, as CONTRACTS).
      token_budget: tokens the run will process (for the ETA); live: show the rich terminal view.
      gpu_backend, gpu_index: NVML backend and this rank's NVML GPU index (default: the model's device).
      timer: a ``TimerBackend`` (default: CUDA events for a CUDA model, the host clock otherwise).
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
    ) -> None:
        _check_inputs(
            flops_per_token=flops_per_token,
            seq_len=seq_len,
            peak_flops=peak_flops,
            port=port,
            alert_below=alert_below,
            alert_after=alert_after,
            on_alert=on_alert,
            warmup_steps=warmup_steps,
            window_steps=window_steps,
            window_seconds=window_seconds,
            log_every=log_every,
            token_budget=token_budget,
            model=model,
            optimizer=optimizer,
        )
        self._lock = threading.RLock()
        self._closed = False
        self._measuring = False
        self._train_thread = threading.get_ident()  # re-read at the first step: the thread that trains
        self._errors = 0
        self._warned: set[str] = set()
        self.model = model
        self.optimizer = optimizer
        place = rank_place()
        self.rank, self.local_rank, self.world_size = place.rank, place.local_rank, place.world_size
        self.run = run or _default_run_id()
        self.device = _model_device(model)
        self.dtype = _resolve_dtype(dtype, model)
        self._warmup = warmup_steps
        self._window_steps = window_steps
        self._window_seconds = float(window_seconds)
        self._log_every = log_every
        self._tick_seconds = tick_seconds
        self._token_budget = token_budget
        self._recompute: Any = recompute
        self._causal = causal
        self._seq_len_override = seq_len
        self._on_alert = on_alert
        self._alert = LowMfuAlert(alert_below, alert_after)
        self._reducer = Reducer(process_group)
        self._world: WorldFigures | None = None

        # Clocks: wall time is derived from one perf_counter reading per step (one clock call per step).
        self._timer: TimerBackend = timer or timer_for_device(self.device)
        self._host_timer = isinstance(self._timer, HostTimer)
        self._perf0 = _perf()
        self._wall0 = time.time()
        self._start_marker = self._perf0 if self._host_timer else self._timer.mark()

        # FLOPs model and peak (resolved now so that bad input fails here, not mid-run).
        self._flops_source = self._resolve_flops_source(spec, flops_per_token)
        self._fpt_cache: dict[int, tuple[float, float]] = {}
        self._gpu = self._open_gpu(gpu_backend)
        self._gpu_indices = self._gpu_indices_for(gpu_index)
        self.peak_flops, self.peak_source, self.device_name = self._resolve_peak(peak_flops, peak_source)
        self.model_name, self.params = _model_identity(model, self._flops_source)

        # Hot-path state.
        self._nsteps = 0
        self._prev_marker: Any = None
        self._prev_end_perf: float | None = None
        self._fwd_perf: float | None = None
        self._tokens_by_len: dict[int, int] = {}
        self._masks: list[DeferredCount] | None = None
        self._last_seq_len: int | None = seq_len
        self._pending: deque[_Raw] = deque()
        self._next_tick = self._perf0 + tick_seconds

        # Resolved state (under the lock).
        self._samples: deque[StepSample] = deque(maxlen=max(window_steps, 256))
        self._unlogged: list[StepSample] = []
        self._resolved = 0
        self._tokens_total = 0
        self._real_total = 0
        self._masked_tokens = 0
        self._model_flops_total = 0.0
        self._hw_flops_total = 0.0
        self._post_tokens = 0
        self._post_model_flops = 0.0
        self._post_seconds = 0.0
        self._bucket_counts = [0] * len(STEP_BUCKETS)
        self._dur_sum = 0.0
        self._last_end_wall: float | None = None
        self._last_seconds: float | None = None
        self._suspect_warned = False
        self._run_start_written = False

        # Hooks.
        self._handles: list[Any] = []
        if model is not None:
            self._handles.append(model.register_forward_pre_hook(self._pre_hook, with_kwargs=True))
        if optimizer is not None:
            self._handles.append(optimizer.register_step_post_hook(self._post_hook))

        # Exports. Each failure is counted and warned once; training goes on without that export.
        self._setup_prometheus(registry, port, addr, tls or {}, file_sd_dir)
        self._writer = None
        if log_path is not None:
            from monitor.export.runlog import RunLogWriter

            self._writer = RunLogWriter(log_path, on_error=self._error, flush_seconds=flush_seconds)
            if self._seq_len_for_start() is not None:
                self._write_run_start()
        self._view: Any = None
        if live:
            self.start_view()
        self._sigterm_prev: Any = None
        if handle_sigterm:
            self._install_sigterm()
        atexit.register(self._atexit)

    # --- hot path ---
    def _pre_hook(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Forward pre-hook: shapes only (tokens, sequence length), a mask kept for later, a timestamp."""
        if not _grad_enabled() or self._measuring:  # evaluation (no_grad) is not training throughput
            return None
        try:
            if self._fwd_perf is None:
                self._fwd_perf = _perf()
                if self._prev_marker is None:  # the very first step starts at its first forward
                    self._prev_marker = self._fwd_perf if self._host_timer else self._timer.mark()
            ids = kwargs.get("input_ids")
            if ids is not None:
                n, s = ids.numel(), (ids.shape[-1] if ids.dim() else 1)
            else:
                counted = tokens_in(args, kwargs)
                if counted is None:
                    return None
                n, s = counted
            by_len = self._tokens_by_len
            by_len[s] = by_len.get(s, 0) + n
            self._last_seq_len = s
            mask = kwargs.get("attention_mask")
            if mask is not None and mask.dim() == 2 and mask.numel() == n:
                if self._masks is None:
                    self._masks = []
                self._masks.append(DeferredCount(mask))
        except Exception as exc:
            self._error("forward hook", exc)
        return None

    def _post_hook(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        """Optimizer step post-hook: closes the step (all micro-batches since the last one)."""
        try:
            self._close_step(None, None)
        except Exception as exc:
            self._error("optimizer hook", exc)

    def step(
        self, tokens: int | None = None, *, real_tokens: int | None = None, seq_len: int | None = None
    ) -> None:
        """Close a step by hand (loops without an optimizer hook).

        ``tokens``: processed this step on this rank (default: what the forward hook counted);
        ``real_tokens``: the non-padding ones, if known."""
        if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0):
            raise InputError(
                "tokens", f"must be a non-negative integer, got {tokens!r}", "pass mon.step(tokens=n)"
            )
        try:
            if tokens is not None:
                s = seq_len or self._seq_len_override or self._last_seq_len or 1
                self._tokens_by_len = {s: tokens}
                self._masks = None
            self._close_step(None, real_tokens)
        except Exception as exc:
            self._error("step()", exc)

    def _close_step(self, _unused: None, real: int | None) -> None:
        if self._closed:
            return
        now = _perf()
        if self._nsteps == 0:
            self._train_thread = threading.get_ident()
        marker = now if self._host_timer else self._timer.mark()
        prev = self._prev_marker
        if prev is None:
            prev = self._start_marker
        self._pending.append(
            _Raw(
                self._nsteps,
                prev,
                marker,
                now,
                self._prev_end_perf,
                self._fwd_perf,
                self._tokens_by_len,
                self._masks,
                real,
            )
        )
        self._prev_marker = marker
        self._prev_end_perf = now
        self._fwd_perf = None
        self._tokens_by_len = {}
        self._masks = None
        self._nsteps += 1
        if self._nsteps % self._log_every == 0:
            self._tick(reduce=True)
        elif now >= self._next_tick:
            self._tick(reduce=False)

    # --- log time ---
    def _tick(self, *, reduce: bool) -> None:
        """Log interval, on the training thread: resolve, write the run log, alert, reduce across ranks."""
        try:
            self._next_tick = _perf() + self._tick_seconds
            snap = self.snapshot()
            self._write_pending_steps()
            self._check_suspect(snap)
            event = self._alert.update(snap.mfu, snap.last_step_time or time.time())
            if event is not None:
                self._emit_alert(event)
            if reduce:
                self._exchange(snap)
        except Exception as exc:
            self._error("log interval", exc)

    def _resolve(self, training_thread: bool) -> None:
        """Turn closed steps whose markers are complete into samples (under the lock).

        A FLOPs model measured on the meta device runs the model, so it is measured only on the training
        thread (at a log tick); until then, a scrape leaves steps of an unmeasured sequence length pending.
        """
        pending = self._pending
        while pending:
            raw = pending[0]
            if not training_thread and self._needs_measure(raw):
                break
            seconds = self._timer.elapsed(raw.prev, raw.marker)
            if seconds is None:
                break
            pending.popleft()
            self._add_sample(raw, seconds)

    def _add_sample(self, raw: _Raw, seconds: float) -> None:
        tokens = 0
        model_flops = hw_flops = 0.0
        flops_known = True
        seq_len = None
        for s, n in raw.tokens_by_len.items():
            tokens += n
            fpt = self._fpt(s)
            if fpt is None:
                flops_known = False
            else:
                model_flops += n * fpt[0]
                hw_flops += n * fpt[1]
            seq_len = s
        real = raw.real
        if raw.masks:
            try:
                real = sum(m.read() for m in raw.masks)
            except Exception as exc:
                self._error("attention_mask count", exc)
                real = None
        if not flops_known:
            model_flops = hw_flops = 0.0
        end_wall = self._wall0 + (raw.end_perf - self._perf0)
        fwd_wall = None if raw.forward_perf is None else self._wall0 + (raw.forward_perf - self._perf0)
        # Host time from the previous step's end to this step's first forward: waiting for input (issue 9).
        wait = None
        if raw.forward_perf is not None and raw.prev_end is not None:
            wait = max(0.0, raw.forward_perf - raw.prev_end)
        warm = raw.index < self._warmup
        sample = StepSample(
            step=raw.index,
            tokens=tokens,
            real_tokens=real,
            seq_len=seq_len,
            seconds=seconds,
            end_time=end_wall,
            forward_start_time=fwd_wall,
            input_wait_seconds=wait,
            model_flops=model_flops,
            hardware_flops=hw_flops,
            warmup=warm,
        )
        self._samples.append(sample)
        self._unlogged.append(sample)
        self._resolved += 1
        self._tokens_total += tokens
        if real is not None:
            self._real_total += real
            self._masked_tokens += tokens
        self._model_flops_total += model_flops
        self._hw_flops_total += hw_flops
        if not warm:
            self._post_tokens += tokens
            self._post_model_flops += model_flops
            self._post_seconds += seconds
        i = bisect.bisect_left(STEP_BUCKETS, seconds)
        for j in range(i, len(self._bucket_counts)):
            self._bucket_counts[j] += 1
        self._dur_sum += seconds
        self._last_end_wall = end_wall
        self._last_seconds = seconds

    def _needs_measure(self, raw: _Raw) -> bool:
        src = self._flops_source
        if src is None or src[0] != "measured":
            return False
        if self._seq_len_override:
            return self._seq_len_override not in self._fpt_cache
        return any(s not in self._fpt_cache for s in raw.tokens_by_len)

    def snapshot(self) -> Snapshot:
        """The current figures (resolves completed steps first; safe from any thread)."""
        on_training_thread = threading.get_ident() == self._train_thread
        with self._lock:
            self._resolve(on_training_thread)
            now = time.time()
            samples = list(self._samples)
            window = select_window(
                samples, max_steps=self._window_steps, max_age_seconds=self._window_seconds, now=now
            )
            r = rates(window)
            seq = self._seq_len_override or (window[-1].seq_len if window else self._last_seq_len)
            fpt = self._fpt(seq, measure=on_training_thread) if seq else None
            flops_ok = fpt is not None and self._flops_source is not None
            peak = self.peak_flops
            mfps = r.model_flops_per_second if flops_ok else None
            hfps = r.hardware_flops_per_second if flops_ok else None
            mfu = utilization(mfps, peak)
            hfu = utilization(hfps, peak)
            cum = None
            if flops_ok and self._post_seconds > 0:
                cum = utilization(self._post_model_flops / self._post_seconds, peak)
            suspect = any(v is not None and v > 1.0 for v in (mfu, cum))
            padding = None
            if self._masked_tokens > 0:
                padding = 1.0 - self._real_total / self._masked_tokens
            buckets = tuple(zip(STEP_BUCKETS, self._bucket_counts, strict=True))
            return Snapshot(
                run=self.run,
                rank=self.rank,
                local_rank=self.local_rank,
                world_size=self.world_size,
                device=self.device_name,
                dtype=self.dtype,
                model=self.model_name,
                params=self.params,
                steps=self._nsteps,
                resolved_steps=self._resolved,
                tokens_total=self._tokens_total,
                real_tokens_total=self._real_total if self._masked_tokens else None,
                model_flops_total=self._model_flops_total,
                hardware_flops_total=self._hw_flops_total,
                seq_len=seq,
                flops_per_token=fpt[0] if fpt else None,
                hardware_flops_per_token=fpt[1] if fpt else None,
                flops_method=self._flops_method(),
                peak_flops_per_second=peak,
                peak_source=self.peak_source,
                warmup_steps=self._warmup,
                window_steps=r.steps,
                window_seconds=r.seconds,
                tokens_per_second=r.tokens_per_second,
                model_flops_per_second=mfps,
                hardware_flops_per_second=hfps,
                step_seconds=r.step_seconds,
                last_step_seconds=self._last_seconds,
                mfu=mfu,
                hfu=hfu,
                mfu_cumulative=cum,
                mfu_suspect=suspect,
                padding_ratio=padding,
                last_step_time=self._last_end_wall,
                seconds_since_last_step=None
                if self._last_end_wall is None
                else max(0.0, now - self._last_end_wall),
                elapsed_seconds=max(0.0, now - self._wall0),
                token_budget=self._token_budget,
                eta_seconds=eta_seconds(self._tokens_total, self._token_budget, r.tokens_per_second),
                alert_firing=self._alert.firing,
                errors=self._errors,
                world=self._world,
                recent=tuple(samples[-self._window_steps :]),
                step_duration_buckets=buckets,
                step_duration_sum=self._dur_sum,
                step_duration_count=self._resolved,
            )

    # --- FLOPs, peak ---
    def _resolve_flops_source(self, spec: Any, flops_per_token: float | None) -> Any:
        if flops_per_token is not None:
            return ("fixed", float(flops_per_token))
        if spec is None and self.model is not None and getattr(self.model, "config", None) is not None:
            spec = self.model.config
        if spec is not None:
            return ("spec", _to_spec(spec))
        if self.model is not None:
            return ("measured", None)
        return None

    def _flops_method(self) -> str | None:
        src = self._flops_source
        if src is None:
            return None
        return {
            "fixed": "given (flops_per_token)",
            "spec": "analytic (ModelSpec)",
            "measured": "measured (meta)",
        }[src[0]]

    def _fpt(self, seq_len: int | None, *, measure: bool = True) -> tuple[float, float] | None:
        """(training, hardware) FLOPs per token at ``seq_len``, computed once per length (log time only)."""
        if self._seq_len_override:
            seq_len = self._seq_len_override
        if seq_len is None or self._flops_source is None:
            return None
        cached = self._fpt_cache.get(seq_len)
        if cached is not None:
            return cached
        kind, value = self._flops_source
        try:
            if kind == "fixed":
                result = (value, value)
            elif kind == "spec":
                from monitor.model.flops import flops_per_token

                f = flops_per_token(
                    value, seq_len, causal=self._causal, recompute=self._recompute, frozen=self._frozen(value)
                )
                result = (f.training, f.hardware)
            else:
                if not measure:
                    return None
                from monitor.model.measure import measure_module

                assert self.model is not None
                self._measuring = True  # our own forward hook must not count the measurement's forward
                try:
                    f = measure_module(self.model, seq_len)
                finally:
                    self._measuring = False
                extra = 0.0
                if self._recompute in (True, "full"):
                    extra = f.forward  # full recomputation runs the forward once more
                result = (f.training, f.training + extra)
        except Exception as exc:
            self._error("FLOPs model", exc)
            self._flops_source = None
            return None
        self._fpt_cache[seq_len] = result
        return result

    def _frozen(self, spec: Any) -> list[str] | None:
        """Frozen parameters, seen from ``requires_grad``, as the FLOPs model's canonical names."""
        if self.model is None:
            return None
        names = [n for n, p in self.model.named_parameters() if not p.requires_grad]
        if not names:
            return None
        from monitor.model.flops import frozen_from_param_names

        return frozen_from_param_names(spec, names)

    def _resolve_peak(
        self, peak_flops: float | None, peak_source: str | None
    ) -> tuple[float | None, str | None, str]:
        """(peak FLOP/s, source, device name): the user's figure, else detection (catalogue, derivation,
        a cached ``mfu calibrate`` measurement), else unknown — then MFU is not shown, and we say so once."""
        cpu = self.device.type != "cuda"
        device_label = _cpu_name() if self.device.type == "cpu" else str(self.device)
        if peak_flops is not None:
            name = device_label
            if not cpu and self._gpu.available and self._gpu_indices:
                try:
                    name = self._gpu.device_info(self._gpu_indices[0]).name
                except Exception as exc:
                    self._error("NVML device_info", exc)
            return float(peak_flops), peak_source or "override", name
        calibrated = self._cached_calibration()
        if cpu:
            if calibrated is None:
                self._warn_once(
                    "peak", f"no peak FLOP/s for {device_label}: MFU is not shown — run `mfu calibrate` "
                    "or pass peak_flops=",
                )  # fmt: skip
                return None, None, device_label
            return calibrated, "calibrated", device_label
        try:
            from monitor.hardware.detect import detect_accelerator

            index = self._gpu_indices[0] if self._gpu_indices else (self.device.index or 0)
            info = detect_accelerator(
                self.dtype or "bf16", index=index, backend=self._gpu, calibrated=calibrated
            )
        except Exception as exc:
            self._warn_once("peak", f"peak FLOP/s unknown ({exc}); MFU is not shown — pass peak_flops=")
            return None, None, device_label
        if info.warning:
            self._warn_once("peak", str(info.warning))
        return info.peak_flops_per_second, info.source, str(info.device or device_label)

    def _cached_calibration(self) -> float | None:
        """A measured matmul rate from ``mfu calibrate`` for this device and dtype, if one is cached."""
        try:
            from monitor.hardware import calibrate
        except ImportError:
            return None
        try:
            value = calibrate.load_cached_calibration(self.dtype or "fp32", self.device.type)
        except Exception:
            return None
        if value is None:
            return None
        rate = getattr(value, "flops_per_second", value)
        return float(rate) if isinstance(rate, (int, float)) and rate > 0 else None

    # --- exports ---
    def _open_gpu(self, backend: GpuBackend | None) -> GpuBackend:
        if backend is not None:
            return backend
        if self.device.type != "cuda":
            return NullBackend("the model is not on a CUDA device")
        try:
            from monitor.hardware.nvml import open_backend

            opened: GpuBackend = open_backend()
        except Exception as exc:
            opened = NullBackend(f"NVML unavailable: {exc}")
        if not opened.available:
            self._warn_once("nvml", f"no GPU telemetry: {opened.reason}")
        return opened

    def _gpu_indices_for(self, gpu_index: int | None) -> list[int]:
        if gpu_index is not None:
            return [gpu_index]
        if not self._gpu.available or self.device.type != "cuda":
            return []
        index = self.device.index if self.device.index is not None else 0
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible:
            items = [v.strip() for v in visible.split(",")]
            if index < len(items) and items[index].isdigit():
                return [int(items[index])]
        return [index]

    def _setup_prometheus(
        self, registry: Any, port: int | None, addr: str, tls: dict[str, Any], file_sd_dir: Any
    ) -> None:
        from prometheus_client import CollectorRegistry

        from monitor.export.prometheus import MonitorCollector, serve

        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
        self._collector = MonitorCollector(
            self.snapshot, gpu=self._gpu, gpu_indices=self._gpu_indices, on_error=self._error
        )
        self.registry.register(self._collector)
        self._server: Any = None
        self.port: int | None = None
        self._file_sd: Path | None = None
        if port is None:
            return
        wanted = port + self.local_rank if port else 0
        try:
            self._server, _ = serve(self.registry, wanted, addr, **tls)
            self.port = int(self._server.server_port)
        except OSError as exc:
            self._error(f"serving /metrics on {addr}:{wanted}", exc)
            return
        if file_sd_dir is not None:
            from monitor.export.file_sd import target_host, write_target

            try:
                self._file_sd = write_target(
                    file_sd_dir, run=self.run, rank=self.rank, host=target_host(addr), port=self.port
                )
            except OSError as exc:
                self._error("writing the file_sd target", exc)

    def _seq_len_for_start(self) -> int | None:
        if self._seq_len_override:
            return self._seq_len_override
        if self._flops_source is not None and self._flops_source[0] == "fixed":
            return self._last_seq_len or 0
        return None

    def _write_run_start(self) -> None:
        if self._writer is None or self._run_start_written:
            return
        from monitor.schema import RunStart

        self._run_start_written = True
        seq = self._seq_len_override or self._last_seq_len
        fixed = self._flops_source is not None and self._flops_source[0] == "fixed"
        fpt = self._fpt(seq) if seq else (self._fpt(1) if fixed else None)
        self._writer.write(
            RunStart(
                time=self._wall0,
                run=self.run,
                rank=self.rank,
                world_size=self.world_size,
                model=self.model_name,
                params=self.params,
                flops_per_token=fpt[0] if fpt else None,
                peak_flops_per_second=self.peak_flops,
                device=self.device_name,
                dtype=self.dtype,
                seq_len=seq or None,
                peak_source=self.peak_source,
                flops_method=self._flops_method(),
                hardware_flops_per_token=fpt[1] if fpt else None,
                warmup_steps=self._warmup,
                local_rank=self.local_rank,
                timer=self._timer.name,
            )
        )

    def _write_pending_steps(self) -> None:
        with self._lock:
            todo, self._unlogged = self._unlogged, []
        if self._writer is None or not self._writer.enabled:
            return
        self._write_run_start()
        peak = self.peak_flops
        for s in todo:
            record: dict[str, Any] = {
                "event": "step",
                "time": s.end_time,
                "run": self.run,
                "rank": self.rank,
                "step": s.step,
                "tokens": s.tokens,
                "step_seconds": s.seconds,
                "model_flops": s.model_flops,
                "mfu": (s.model_flops / s.seconds / peak)
                if peak and s.seconds > 0 and s.model_flops
                else None,
                "hardware_flops": s.hardware_flops,
                "real_tokens": s.real_tokens,
                "seq_len": s.seq_len,
                "forward_start_time": s.forward_start_time,
                "input_wait_seconds": s.input_wait_seconds,
                "warmup": s.warmup,
            }
            self._writer.write_dict(record)

    def _emit_alert(self, event: AlertEvent) -> None:
        if event.state == "firing":
            log.warning("mfu-monitor: %s (run %s, rank %d)", event.message, self.run, self.rank)
        if self._writer is not None:
            from monitor.schema import AlertRecord

            self._writer.write(
                AlertRecord(
                    time=event.time,
                    run=self.run,
                    rank=self.rank,
                    state="firing" if event.state == "firing" else "resolved",
                    mfu=event.mfu,
                    threshold=event.threshold,
                    since=event.since,
                    message=event.message,
                )
            )
        if self._on_alert is not None:
            try:
                self._on_alert(event)
            except Exception as exc:
                self._error("on_alert callback", exc)

    def _check_suspect(self, snap: Snapshot) -> None:
        if snap.mfu_suspect and not self._suspect_warned:
            self._suspect_warned = True
            self._warn_once(
                "suspect",
                f"MFU {snap.mfu or snap.mfu_cumulative:.3g} is above 1, which is impossible: the peak or "
                f"the FLOPs model is wrong (peak {self.peak_flops:.3g} FLOP/s from {self.peak_source}; "
                f"FLOPs {snap.flops_method}) — pass peak_flops= or spec=",
            )

    def _exchange(self, snap: Snapshot) -> None:
        place = rank_place()
        self.rank, self.world_size = place.rank, place.world_size
        if place.world_size <= 1:
            return
        peak = snap.peak_flops_per_second
        sums = [
            float(snap.tokens_total),
            snap.model_flops_total,
            snap.tokens_per_second or 0.0,
            snap.model_flops_per_second or 0.0,
            peak or 0.0,
            1.0 if peak else 0.0,
        ]
        got = self._reducer.exchange(sums, [snap.step_seconds or 0.0])
        if got is None:
            return
        s, m = got
        known_all = round(s[5]) == place.world_size
        peak_sum = s[4] if known_all else None
        mfps = s[3] if s[3] > 0 else None
        with self._lock:
            self._world = WorldFigures(
                as_of_step=self._nsteps,
                world_size=place.world_size,
                tokens_total=int(s[0]),
                model_flops_total=s[1],
                tokens_per_second=s[2] if s[2] > 0 else None,
                model_flops_per_second=mfps,
                peak_flops_per_second=peak_sum,
                mfu=utilization(mfps, peak_sum),
                max_step_seconds=m[0] if m[0] > 0 else None,
            )

    # --- terminal view ---
    def start_view(self, console: Any = None) -> None:
        """Show the live rich view (refreshed from its own thread from snapshots)."""
        if self._view is not None:
            return
        try:
            from monitor.export.terminal import LiveView

            self._view = LiveView(self.snapshot, console=console)
            self._view.start()
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
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        wait = getattr(self._timer, "wait", None)
        if wait is not None and self._prev_marker is not None:
            try:
                wait(self._prev_marker)  # the run is over: waiting for the last event costs training nothing
            except Exception as exc:
                self._error("waiting for the last step", exc)
        snap = self.snapshot()
        try:
            self._write_pending_steps()
            if self._writer is not None:
                from monitor.schema import RunEnd

                self._write_run_start()
                self._writer.write(
                    RunEnd(
                        time=time.time(),
                        run=self.run,
                        rank=self.rank,
                        steps=snap.resolved_steps,
                        tokens=snap.tokens_total,
                        seconds=snap.elapsed_seconds,
                        reason=reason,
                        errors=self._errors,
                        mfu_cumulative=snap.mfu_cumulative,
                        tokens_per_second=snap.tokens_per_second,
                    )
                )
                self._writer.close()
        except Exception as exc:
            self._error("closing the run log", exc)
        if self._view is not None:
            self._view.stop()
        if self._server is not None:
            try:
                self._server.shutdown()
                self._server.server_close()
            except Exception as exc:
                self._error("stopping the /metrics server", exc)
        if self._file_sd is not None:
            from monitor.export.file_sd import remove_target

            remove_target(self._file_sd)
        with contextlib.suppress(KeyError):
            self.registry.unregister(self._collector)
        self._restore_sigterm()
        atexit.unregister(self._atexit)
        return snap

    def _atexit(self) -> None:
        if not self._closed:
            self.close(reason="exit")

    def _install_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            self._sigterm_prev = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, self._on_sigterm)
            self._sigterm_installed = True
        except (ValueError, OSError):
            self._sigterm_installed = False

    def _restore_sigterm(self) -> None:
        if not getattr(self, "_sigterm_installed", False):
            return
        try:
            if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
                signal.signal(signal.SIGTERM, self._sigterm_prev)
        except (ValueError, OSError):
            pass
        self._sigterm_installed = False

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        prev = self._sigterm_prev
        self.close(reason="sigterm")
        if callable(prev):
            prev(signum, frame)
        elif prev == signal.SIG_DFL or prev is None:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)


# --- helpers ---
def _check_inputs(**kw: Any) -> None:
    def positive(name: str, value: Any, fix: str, *, allow_zero: bool = False) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InputError(name, f"must be a number, got {value!r}", fix)
        if value < 0 or (value == 0 and not allow_zero):
            raise InputError(
                name, f"must be {'non-negative' if allow_zero else 'positive'}, got {value!r}", fix
            )

    positive("flops_per_token", kw["flops_per_token"], "pass training FLOPs per token, e.g. 6 * params")
    positive("peak_flops", kw["peak_flops"], "pass the device's dense peak in FLOP/s, e.g. 989e12")
    positive("window_seconds", kw["window_seconds"], "pass e.g. window_seconds=60")
    positive("alert_after", kw["alert_after"], "pass seconds, e.g. alert_after=600", allow_zero=True)
    for name in ("seq_len", "window_steps", "log_every", "token_budget"):
        v = kw[name]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
            raise InputError(name, f"must be a positive integer, got {v!r}", f"pass e.g. {name}=...")
    w = kw["warmup_steps"]
    if isinstance(w, bool) or not isinstance(w, int) or w < 0:
        raise InputError(
            "warmup_steps", f"must be a non-negative integer, got {w!r}", "pass e.g. warmup_steps=3"
        )
    port = kw["port"]
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535):
        raise InputError(
            "port", f"must be an integer 0..65535, got {port!r}", "pass e.g. port=9400 (0: any free)"
        )
    a = kw["alert_below"]
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 <= a <= 1:
        raise InputError(
            "alert_below", f"must be an MFU between 0 and 1, got {a!r}", "pass e.g. alert_below=0.25"
        )
    if kw["on_alert"] is not None and not callable(kw["on_alert"]):
        raise InputError("on_alert", "must be callable", "pass a function taking one AlertEvent")
    model = kw["model"]
    if model is not None and not isinstance(model, torch.nn.Module):
        raise InputError(
            "model", f"must be a torch.nn.Module, got {type(model).__name__}", "pass the model you train"
        )
    opt = kw["optimizer"]
    if opt is not None and not hasattr(opt, "register_step_post_hook"):
        fix = "pass a torch.optim.Optimizer, or omit it and call mon.step(tokens=n) after each step"
        raise InputError("optimizer", f"{type(opt).__name__} has no register_step_post_hook", fix)


def _to_spec(spec: Any) -> Any:
    from monitor.model.spec import ModelSpec

    if isinstance(spec, ModelSpec):
        return spec
    if isinstance(spec, str) and not os.path.exists(spec):
        import importlib

        return importlib.import_module("monitor.model.presets").load_preset(spec)
    from monitor.model.hf_config import spec_from_hf_config

    return spec_from_hf_config(spec)


def _model_device(model: torch.nn.Module | None) -> torch.device:
    if model is not None:
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


def _resolve_dtype(dtype: Any, model: Any) -> str | None:
    from monitor.hardware.dtypes import normalize_dtype, run_dtype

    if dtype is not None:
        return normalize_dtype(dtype)
    try:
        return run_dtype(model)
    except Exception:
        return None


def _model_identity(model: Any, source: Any) -> tuple[str | None, int | None]:
    name = None
    params = None
    if source is not None and source[0] == "spec":
        name = source[1].label
    if model is not None:
        name = name or type(model).__name__
        params = sum(p.numel() for p in model.parameters())
    return name, params


def _cpu_name() -> str:
    import platform

    return f"cpu ({platform.processor() or platform.machine()})"


def _default_run_id() -> str:
    """A run id every rank of one launch agrees on: MFU_RUN, torchrun's rendezvous id, or one from the master
    address; a local timestamp for a single process. Pass ``run=`` for a stable name."""
    explicit = os.environ.get("MFU_RUN")
    if explicit:
        return explicit
    elastic = os.environ.get("TORCHELASTIC_RUN_ID", "")
    if elastic and elastic != "none":
        return elastic
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and os.environ.get("MASTER_PORT"):
        key = f"{os.environ.get('MASTER_ADDR', '')}:{os.environ['MASTER_PORT']}"
        return "run-" + hashlib.sha1(key.encode()).hexdigest()[:10]
    return time.strftime("run-%Y%m%d-%H%M%S", time.localtime()) + f"-{os.getpid()}"
