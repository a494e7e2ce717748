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
import contextlib
import hashlib
import itertools
import logging
import math
import os
import signal
import threading
import time
from bisect import bisect_left as _bisect_left
from bisect import bisect_right as _bisect_right
from collections import deque
from collections.abc import Callable
from operator import itemgetter, sub
from pathlib import Path
from typing import Any

import torch

from monitor.errors import InputError
from monitor.figures.attribution import MfuLoss, attribute, clock_ratio
from monitor.figures.snapshot import Snapshot, WorldFigures
from monitor.figures.window import (
    STEP_BUCKETS,
    StepSample,
    eta_seconds,
    rates,
    select_window,
    utilization,
)
from monitor.hardware.nvml import GpuBackend, NullBackend
from monitor.live.alert import AlertEvent, LowMfuAlert
from monitor.live.distributed import MAX_FIELDS, SUM_FIELDS, Reducer, rank_place
from monitor.live.distributed import initialized as dist_initialized
from monitor.live.timing import HostTimer, TimerBackend, timer_for_device
from monitor.live.tokens import DeferredCount, tokens_in

log = logging.getLogger("monitor")
_NO_FLOPS = (0.0, 0.0)
_MAX_PENDING = 1000  # steps waiting for a log tick on one process before one is forced
_item1, _item2, _item6, _item7, _item8, _item9, _item10 = (itemgetter(i) for i in (1, 2, 6, 7, 8, 9, 10))

_grad_enabled = torch.is_grad_enabled
_perf = time.perf_counter


# A closed step as the hot path leaves it (a plain tuple: the cheapest thing to build per step):
# (index, prev_marker, marker, end_perf, prev_end_perf, forward_perf, tokens, seq_len, other_lengths, masks,
#  real_tokens, backward_perf). ``tokens`` were seen at ``seq_len``; micro-batches of other lengths go to
# ``other_lengths``; ``backward_perf`` is the host time the step's last backward started (host timer only).
_Raw = tuple[
    int, Any, Any, float, "float | None", "float | None", int, "int | None", "dict[int, int] | None", Any,
    "int | None", "float | None",
]  # fmt: skip
# A resolved step: (raw, seconds, (training, hardware) FLOPs per token); the raw tuple of a step with several
# lengths or masks is flattened first. Turned into a StepSample only when someone reads it.
_Resolved = tuple[_Raw, float, tuple[float, float]]


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
      log_every (50): steps between log ticks under torchrun (run log, alert, all-reduce across ranks,
        the same steps on every rank); tick_seconds (2): on one process, a tick every 2 s (or 1000 steps).
      recompute (False | "full" | "selective"): activation recomputation, for HFU.
      causal (False): the FLOPs convention for attention (default full S×S, as CONTRACTS).
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
            tick_seconds=tick_seconds,
            token_budget=token_budget,
            model=model,
            optimizer=optimizer,
            rank=rank,
            world_size=world_size,
            first_step=first_step,
        )
        self._lock = threading.RLock()
        self._writer: Any = None
        self._log_steps = False  # keep resolved steps for the run log
        self._closed = False
        self._measuring = False
        self._train_thread = threading.get_ident()  # re-read at the first step: the thread that trains
        self._errors = 0
        self._warned: set[str] = set()
        self.model = model
        self.optimizer = optimizer
        place = rank_place()
        self.rank, self.local_rank, self.world_size = place.rank, place.local_rank, place.world_size
        if not dist_initialized():  # launchers without torch.distributed may say where this process is
            self.rank = self.rank if rank is None else rank
            self.world_size = self.world_size if world_size is None else world_size
        self.run = run or _default_run_id()
        self.device = _model_device(model)
        self.dtype = _resolve_dtype(dtype, model)
        self._first_step = first_step
        self._warmup_steps = warmup_steps
        self._warmup = first_step + warmup_steps  # step indices below this are warm-up
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
        self._nsteps = first_step  # the next step's index (a resumed run continues its numbering)
        self._countdown = log_every - first_step % log_every  # steps to the next multiple of log_every
        self._prev_marker: Any = None
        self._prev_end_perf: float | None = None
        self._fwd_perf: float | None = None
        self._bwd_perf: float | None = None  # start of the step's last backward (host timer only)
        self._tok = 0  # tokens of this step at sequence length self._seq
        self._seq: int | None = None
        self._other: dict[int, int] | None = None  # micro-batches of other lengths (rare)
        self._masks: list[DeferredCount] | None = None
        self._next_real: int | None = None  # real tokens given to step() by hand
        self._last_seq_len: int | None = seq_len
        self._pending: deque[_Raw] = deque()
        self._next_tick = self._perf0 + tick_seconds

        # Resolved state (under the lock).
        self._resolved_steps: deque[_Resolved] = deque(maxlen=max(window_steps, 256))
        self._unlogged: list[_Resolved] = []
        self._resolved = 0
        self._tokens_total = 0
        self._real_total = 0
        self._masked_tokens = 0
        self._model_flops_total = 0.0
        self._hw_flops_total = 0.0
        self._post_tokens = 0
        self._post_model_flops = 0.0
        self._post_seconds = 0.0
        self._bucket_counts = [0] * (len(STEP_BUCKETS) + 1)  # per bucket, the last one above all bounds
        self._dur_sum = 0.0
        self._last_end_perf: float | None = None
        self._last_seconds: float | None = None
        self._run_start_written = False
        self._clock_ratio: float | None = None  # SM clock / max (NVML), read at log ticks and scrapes

        # Hooks.
        self._handles: list[Any] = []
        if model is not None:
            self._handles.append(model.register_forward_pre_hook(self._pre_hook, with_kwargs=True))
            if self._host_timer and self.world_size > 1:
                # When the backward starts (for the straggler wait): a tensor hook on the forward's output,
                # only where there are ranks to wait for (it costs ~10 us a step). On CUDA the host clock
                # cannot tell when the device gets there, so it is not measured there.
                self._handles.append(model.register_forward_hook(self._post_forward_hook))
        if optimizer is not None:
            self._handles.append(optimizer.register_step_post_hook(self._post_hook))

        # Exports. Each failure is counted and warned once; training goes on without that export.
        self._setup_prometheus(registry, port, addr, tls or {}, file_sd_dir)
        if log_path is not None:
            from monitor.export.runlog import RunLogWriter

            self._writer = RunLogWriter(log_path, on_error=self._error, flush_seconds=flush_seconds)
            self._log_steps = self._writer.enabled
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
        """Forward pre-hook: shapes only (tokens, sequence length), a mask kept for later, a timestamp.

        Kept lean (benchmarks/overhead.py): the common call (``input_ids=`` on the step's first forward, no
        mask) reads two shape facts and sets four attributes; the rare cases go through ``_pre_rare``."""
        if self._measuring or not _grad_enabled():  # evaluation (no_grad) is not training throughput
            return None
        try:
            if self._fwd_perf is None:
                self._fwd_perf = now = _perf()
                if self._prev_marker is None:  # the very first step starts at its first forward
                    self._prev_marker = now if self._host_timer else self._timer.mark()
            ids = kwargs.get("input_ids")
            if ids is None or self._tok or "attention_mask" in kwargs:
                self._pre_rare(ids, args, kwargs)
                return None
            shape = ids.shape
            self._tok = ids.numel()
            self._seq = shape[-1] if shape else 1
        except Exception as exc:
            self._error("forward hook", exc)
        return None

    def _pre_rare(self, ids: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """The forward pre-hook's other cases: no ``input_ids`` (embeddings, a positional tensor), a further
        micro-batch of the step (gradient accumulation, maybe of another length), an attention mask."""
        if ids is not None:
            shape = ids.shape
            n, s = ids.numel(), (shape[-1] if shape else 1)
        else:
            counted = tokens_in(args, kwargs)
            if counted is None:
                return
            n, s = counted
        if self._tok and s != self._seq:  # a micro-batch of another length in the same step
            other = self._other if self._other is not None else {}
            other[s] = other.get(s, 0) + n
            self._other = other
        else:
            self._seq = s
            self._tok += n
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() == 2 and mask.numel() == n:
            if self._masks is None:
                self._masks = []
            self._masks.append(DeferredCount(mask))

    def _post_forward_hook(self, module: Any, args: Any, output: Any) -> None:
        """Forward post-hook: a hook on the output's gradient marks when this forward's backward starts."""
        if not _grad_enabled() or self._measuring:
            return None
        try:
            tensor = _grad_output(output)
            if tensor is not None:
                tensor.register_hook(self._backward_started)
        except Exception as exc:
            self._error("forward post-hook", exc)
        return None

    def _backward_started(self, grad: Any) -> None:
        self._bwd_perf = _perf()
        return None

    def _post_hook(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        """Optimizer step post-hook: closes the step (all micro-batches since the last one).

        The hot path, kept inline: one clock read (or event record), one tuple appended, counters reset."""
        try:
            now = _perf()
            if self._closed:
                return
            prev = self._prev_marker
            if prev is None:
                prev = self._start_marker
            n = self._nsteps
            marker = now if self._host_timer else self._timer.mark()
            self._pending.append(
                (
                    n, prev, marker, now, self._prev_end_perf, self._fwd_perf, self._tok, self._seq,
                    self._other, self._masks, self._next_real, self._bwd_perf,
                )
            )  # fmt: skip
            self._prev_marker = marker
            self._prev_end_perf = now
            self._fwd_perf = self._bwd_perf = self._other = self._masks = None
            self._tok = 0
            self._nsteps = n + 1
            # One countdown to the next multiple of log_every and one clock comparison, instead of a modulo.
            c = self._countdown - 1
            if c and now < self._next_tick:
                self._countdown = c
                return
            if c:  # a tick by time between multiples of log_every
                self._countdown = c
                self._tick(reduce=False)
                return
            self._countdown = self._log_every
            # Same steps on every rank: the all-reduce lines up. On one process, a tick is due only by time
            # or when many steps wait (batches amortise a tick's fixed cost).
            if dist_initialized():
                self._tick(reduce=True)
            elif now >= self._next_tick or len(self._pending) >= _MAX_PENDING:
                self._tick(reduce=False)
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
                self._tok, self._seq, self._other, self._masks = tokens, s, None, None
                if seq_len:
                    self._last_seq_len = seq_len  # a run_start written later carries it
            self._next_real = real_tokens
            self._post_hook(None, None, None)
            self._next_real = None
        except Exception as exc:
            self._error("step()", exc)

    def resume(self) -> None:
        """The next step's clock starts now: call it after work between steps that is not training
        (evaluation, a checkpoint save), so that it counts neither into the next step's time nor as input
        wait. Does nothing while a step is under way (a forward since the last step)."""
        try:
            if self._closed or self._fwd_perf is not None or self._tok or self._prev_marker is None:
                return  # mid-step, or before the first step (which starts at its first forward anyway)
            now = _perf()
            self._prev_marker = now if self._host_timer else self._timer.mark()
            self._prev_end_perf = now
        except Exception as exc:
            self._error("resume()", exc)

    # --- copies of a monitored model ---
    def __deepcopy__(self, memo: dict[int, Any]) -> MFUMonitor:
        """``copy.deepcopy(model)`` (an EMA or teacher copy) copies the model's hooks, bound to a copy of this
        monitor: that copy is inert — its hooks return at once — so the copy's steps are not counted as this
        run's, and copying does not fail on the monitor's lock, server or files."""
        return _inert_monitor()

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        """Pickling a monitored model (``torch.save(model)``) stores inert hooks, as ``__deepcopy__``."""
        return _inert_monitor, ()

    # --- log time ---
    def _tick(self, *, reduce: bool) -> None:
        """Log interval, on the training thread: resolve, write the run log, alert, reduce across ranks."""
        try:
            self._train_thread = threading.get_ident()  # ticks run on the thread that trains
            now = _perf()
            self._next_tick = now + self._tick_seconds
            self._read_clock()
            with self._lock:
                self._resolve(True)
                mfu = self._window_mfu(now)
                cumulative = None
                if self._post_seconds > 0 and self._fpt_cache:
                    cumulative = utilization(self._post_model_flops / self._post_seconds, self.peak_flops)
            self._write_pending_steps()
            over = [v for v in (mfu, cumulative) if v is not None and v > 1.0]
            if over and "suspect" not in self._warned:
                self._warn_suspect(over[0])
            event = self._alert.update(mfu, self._last_end_wall or time.time())
            if event is not None:
                self._emit_alert(event)
            if reduce and dist_initialized():
                self._exchange(self.snapshot())
        except Exception as exc:
            self._error("log interval", exc)

    def _window_mfu(self, now_perf: float) -> float | None:
        """Windowed MFU straight from the resolved records, for log ticks (cheaper than a snapshot).

        The same window as ``window.select_window``: the last ``window_steps`` post-warm-up steps that ended
        within ``window_seconds``, at least the latest one.
        """
        if self.peak_flops is None or self._flops_source is None:
            return None
        seconds = flops = 0.0
        taken = 0
        for rec in reversed(self._resolved_steps):
            raw, sec, fpt = rec
            if raw[0] < self._warmup:
                break  # warm-up steps come first: nothing older is in the window
            if taken and now_perf - raw[3] > self._window_seconds:
                break
            seconds += sec
            flops += raw[6] * fpt[0]
            taken += 1
            if taken >= self._window_steps:
                break
        if not taken or seconds <= 0 or not flops:
            return None
        return utilization(flops / seconds, self.peak_flops)

    def _resolve(self, training_thread: bool) -> None:
        """Turn closed steps into resolved records, in batches at log ticks and scrapes (under the lock).

        Per-step work here is done with comprehensions and C builtins: it is the monitor's main cost after
        the hooks. With CUDA events, only steps whose events are complete are taken. A FLOPs model measured
        on the meta device runs the model, so it is measured only on the training thread; until then, a
        scrape leaves steps of an unmeasured sequence length pending.
        """
        pending = self._pending
        if not pending:
            return
        batch: list[_Raw] = list(pending)  # one atomic copy: the training thread may append meanwhile
        cache = self._fpt_cache
        override = self._seq_len_override
        if self._flops_source is not None and self._flops_source[0] == "measured" and not training_thread:
            for i, r in enumerate(batch):
                lengths = [r[7], *(r[8] or ())]
                if any(x is not None and (override or x) not in cache for x in lengths):
                    batch = batch[:i]
                    break
        if self._host_timer:  # perf_counter is monotonic: end - start is never negative
            seconds = list(map(sub, map(_item2, batch), map(_item1, batch)))
        else:
            elapsed = self._timer.elapsed
            seconds = []
            for r in batch:
                got = elapsed(r[1], r[2])
                if got is None:
                    break
                seconds.append(got)
            batch = batch[: len(seconds)]
        if not batch:
            return
        if training_thread and len(batch) == len(pending):
            pending.clear()  # only the training thread appends: nothing can arrive meanwhile
        else:
            for _ in batch:
                pending.popleft()
        self._absorb(batch, seconds)

    def _absorb(self, batch: list[_Raw], seconds: list[float]) -> None:
        """Resolved steps into the totals, the histogram and the recent records.

        A record is ``(raw, seconds, (training, hardware) FLOPs per token)``: the hot path's own tuple is
        kept as it is (no per-step object built here); StepSamples are made only when someone reads them.
        """
        total_seconds = math.fsum(seconds)
        lengths = set(map(_item7, batch))
        if len(lengths) == 1 and not any(map(_item8, batch)) and not any(map(_item9, batch)):
            # The common case, in C-level passes: one sequence length, no attention masks.
            (length,) = lengths
            fpt = (self._fpt(length) or _NO_FLOPS) if length is not None else _NO_FLOPS
            tokens = sum(map(_item6, batch))
            model_flops, hw_flops = tokens * fpt[0], tokens * fpt[1]
            with_real = any(map(_item10, batch))
            if batch[0][0] >= self._warmup and not with_real and not self._log_steps:
                # Only the last records are kept (the recent-steps deque): build no more than those.
                keep = -(self._resolved_steps.maxlen or len(batch))
                records: list[_Resolved] = list(zip(batch[keep:], seconds[keep:], itertools.repeat(fpt)))
                post = (tokens, model_flops, total_seconds)
            else:
                records = list(zip(batch, seconds, itertools.repeat(fpt)))
                post = self._post_sums(records)
        else:
            records = [self._normalised(r, sec) for r, sec in zip(batch, seconds, strict=True)]
            tokens = sum(rec[0][6] for rec in records)
            model_flops = math.fsum(rec[0][6] * rec[2][0] for rec in records)
            hw_flops = math.fsum(rec[0][6] * rec[2][1] for rec in records)
            post = self._post_sums(records)
            with_real = any(rec[0][10] is not None for rec in records)
        self._resolved_steps.extend(records)
        if self._log_steps:
            self._unlogged.extend(records)
        self._resolved += len(batch)
        self._tokens_total += tokens
        self._model_flops_total += model_flops
        self._hw_flops_total += hw_flops
        self._post_tokens += post[0]
        self._post_model_flops += post[1]
        self._post_seconds += post[2]
        if with_real:
            given = [(rec[0][6], rec[0][10]) for rec in records if rec[0][10] is not None]
            self._real_total += sum(x for _, x in given)
            self._masked_tokens += sum(t for t, _ in given)
        # The histogram per bucket (cumulated at snapshot time): a bucket holds the durations d with
        # bound[i-1] < d <= bound[i] (Prometheus' "le"). Steps of a batch mostly share one bucket: when the
        # shortest and the longest do, that is all; otherwise the count at or below each bound is one
        # bisection of the sorted durations.
        counts = self._bucket_counts
        low = _bisect_left(STEP_BUCKETS, min(seconds))
        if low == _bisect_left(STEP_BUCKETS, max(seconds)):
            counts[low] += len(seconds)
        else:
            ordered = sorted(seconds)
            below = 0
            for i, bound in enumerate(STEP_BUCKETS):
                at_or_below = _bisect_right(ordered, bound)
                counts[i] += at_or_below - below
                below = at_or_below
            counts[-1] += len(ordered) - below
        self._dur_sum += total_seconds
        last_raw, last_seconds, _ = records[-1]
        self._last_end_perf = last_raw[3]
        self._last_seconds = last_seconds
        if last_raw[7] is not None:
            self._last_seq_len = last_raw[7]

    def _post_sums(self, records: list[_Resolved]) -> tuple[int, float, float]:
        """(tokens, model FLOPs, seconds) of the records after warm-up."""
        live = [rec for rec in records if rec[0][0] >= self._warmup]
        return (
            sum(rec[0][6] for rec in live),
            math.fsum(rec[0][6] * rec[2][0] for rec in live),
            math.fsum(rec[1] for rec in live),
        )

    def _normalised(self, r: _Raw, seconds: float) -> _Resolved:
        """A step with several sequence lengths or attention masks as a plain record: all its tokens, the
        token-weighted FLOPs per token of its lengths, its real-token count read now (events complete)."""
        tokens = r[6] + sum((r[8] or {}).values())
        flat = (r[0], r[1], r[2], r[3], r[4], r[5], tokens, r[7], None, None, self._real_count(r), r[11])
        return flat, seconds, self._step_fpt(r)

    def _step_fpt(self, r: _Raw) -> tuple[float, float]:
        """(training, hardware) FLOPs per token averaged over a step's micro-batch lengths; (0, 0) when
        unknown (a step whose FLOPs are unknown counts none, rather than a part)."""
        parts = [(r[7], r[6])] if r[7] is not None else []
        parts += list((r[8] or {}).items())
        total = sum(k for _, k in parts)
        if not total:
            return _NO_FLOPS
        mf = hf = 0.0
        for length, k in parts:
            fpt = self._fpt(length)
            if fpt is None:
                return _NO_FLOPS
            mf += k * fpt[0]
            hf += k * fpt[1]
        return mf / total, hf / total

    def _real_count(self, r: _Raw) -> int | None:
        if not r[9]:
            return r[10]
        try:
            return int(sum(m.read() for m in r[9]))
        except Exception as exc:
            self._error("attention_mask count", exc)
            return None

    @property
    def _last_end_wall(self) -> float | None:
        last = self._last_end_perf
        return None if last is None else self._wall0 + (last - self._perf0)

    def _sample(self, rec: _Resolved) -> StepSample:
        """The public view of a resolved step (unix times; the input wait for MFU-loss attribution)."""
        raw, seconds, (f, h) = rec
        index, end_perf, prev_end, fwd_perf, tokens, seq, real = (
            raw[0],
            raw[3],
            raw[4],
            raw[5],
            raw[6],
            raw[7],
            raw[10],
        )
        shift = self._wall0 - self._perf0
        return StepSample(
            step=index,
            tokens=tokens,
            real_tokens=real,
            seq_len=seq,
            seconds=seconds,
            end_time=shift + end_perf,
            forward_start_time=None if fwd_perf is None else shift + fwd_perf,
            input_wait_seconds=_input_wait(prev_end, fwd_perf),
            model_flops=tokens * f,
            hardware_flops=tokens * h,
            warmup=index < self._warmup,
            pre_backward_seconds=_pre_backward(fwd_perf, raw[11]),
        )

    def _tail(self) -> list[StepSample]:
        """The last resolved steps as samples: enough for the window (``window_steps`` after warm-up)."""
        out: list[StepSample] = []
        live = 0
        for rec in reversed(list(self._resolved_steps)):  # list(): one atomic copy (the hot path appends)
            out.append(self._sample(rec))
            if rec[0][0] >= self._warmup:
                live += 1
                if live >= self._window_steps:
                    break
        out.reverse()
        return out

    def snapshot(self) -> Snapshot:
        """The current figures (resolves completed steps first; safe from any thread)."""
        on_training_thread = threading.get_ident() == self._train_thread
        with self._lock:
            self._resolve(on_training_thread)
            now = time.time()
            samples = self._tail()
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
            loss = self._mfu_loss(window, peak) if mfu is not None else None
            buckets = tuple(zip(STEP_BUCKETS, itertools.accumulate(self._bucket_counts[:-1]), strict=True))
            return Snapshot(
                run=self.run,
                rank=self.rank,
                local_rank=self.local_rank,
                world_size=self.world_size,
                device=self.device_name,
                dtype=self.dtype,
                model=self.model_name,
                params=self.params,
                steps=self._nsteps - self._first_step,
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
                warmup_steps=self._warmup_steps,
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
                mfu_loss=loss,
                sm_clock_ratio=self._clock_ratio,
            )

    def _mfu_loss(self, window: list[StepSample], peak: float | None) -> MfuLoss | None:
        """The window's MFU gap split into causes (figures.attribution): input wait and padding from the
        steps, throttling from the last NVML clock reading, stragglers from the last all-reduce."""
        if not window or peak is None:
            return None
        nan = math.nan
        straggler = None
        world = self._world
        own = [s.pre_backward_seconds for s in window if s.pre_backward_seconds is not None]
        if world is not None and world.max_pre_backward_seconds is not None and own:
            # this rank waited, each step, for the slowest rank's pre-backward work (window means)
            straggler = max(0.0, world.max_pre_backward_seconds - math.fsum(own) / len(own))
        return attribute(
            [s.seconds for s in window],
            peak,
            [s.model_flops for s in window],
            hardware_flops=[s.hardware_flops for s in window],
            input_wait=[nan if s.input_wait_seconds is None else s.input_wait_seconds for s in window],
            straggler_wait=straggler,
            clock_ratio=self._clock_ratio,
            real_fraction=[
                nan if s.real_tokens is None or not s.tokens else s.real_tokens / s.tokens for s in window
            ],
        )

    # --- NVML clock (throttling), read at log ticks and scrapes, never per step ---
    def _read_clock(self) -> None:
        if not self._gpu.available or not self._gpu_indices:
            return
        try:
            self._on_telemetry([(i, self._gpu.telemetry(i)) for i in self._gpu_indices])
        except Exception as exc:
            self._error("NVML clock reading", exc)

    def _on_telemetry(self, readings: list[tuple[int, Any]]) -> None:
        """Keep the lowest SM clock ratio of this rank's GPUs (what the collector or a tick just read)."""
        ratios = [
            r for _, t in readings
            if (r := clock_ratio(t.sm_clock_hz, t.max_sm_clock_hz or self._max_clock_hz())) is not None
        ]  # fmt: skip
        if ratios:
            self._clock_ratio = min(ratios)

    def _max_clock_hz(self) -> float | None:
        """The max SM clock from NVML's device info, read once (a reading without its own max uses it)."""
        if not hasattr(self, "_max_clock"):
            try:
                mhz = self._gpu.device_info(self._gpu_indices[0]).max_sm_clock_mhz
            except Exception:
                mhz = None
            self._max_clock: float | None = mhz * 1e6 if mhz else None
        return self._max_clock

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
        from monitor.hardware.calibrate import load_cached_calibration

        try:
            cached = load_cached_calibration(self.dtype or "fp32", self.device.type)
        except Exception:
            return None
        return cached.flops_per_second if cached is not None and cached.flops_per_second > 0 else None

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
            self.snapshot,
            gpu=self._gpu,
            gpu_indices=self._gpu_indices,
            on_error=self._error,
            on_telemetry=self._on_telemetry,
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
                warmup_steps=self._warmup_steps,
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
        run, rank, warmup = self.run, self.rank, self._warmup
        shift = self._wall0 - self._perf0
        clock = self._clock_ratio  # the NVML reading of this tick: the same for the steps written now
        records = []
        for raw, sec, fpt in todo:  # plain dicts with the schema's StepRecord fields (tested against it)
            tokens, fwd, prev_end = raw[6], raw[5], raw[4]
            model_flops = tokens * fpt[0]
            records.append(
                {
                    "event": "step",
                    "time": shift + raw[3],
                    "run": run,
                    "rank": rank,
                    "step": raw[0],
                    "tokens": tokens,
                    "step_seconds": sec,
                    "model_flops": model_flops,
                    "mfu": model_flops / sec / peak if peak and sec > 0 and model_flops else None,
                    "hardware_flops": tokens * fpt[1],
                    "real_tokens": raw[10],
                    "seq_len": raw[7],
                    "forward_start_time": None if fwd is None else shift + fwd,
                    "input_wait_seconds": _input_wait(prev_end, fwd),
                    "warmup": raw[0] < warmup,
                    "pre_backward_seconds": _pre_backward(fwd, raw[11]),
                    "sm_clock_ratio": clock,
                }
            )
        self._writer.write_dicts(records)

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

    def _warn_suspect(self, mfu: float) -> None:
        self._warn_once(
            "suspect",
            f"MFU {mfu:.3g} is above 1, which is impossible: the peak or "
            f"the FLOPs model is wrong (peak {self.peak_flops:.3g} FLOP/s from {self.peak_source}; "
            f"FLOPs {self._flops_method()}) — pass peak_flops= or spec=",
        )

    def _exchange(self, snap: Snapshot) -> None:
        place = rank_place()
        self.rank, self.world_size = place.rank, place.world_size
        if place.world_size <= 1:
            return
        peak = snap.peak_flops_per_second
        own = [
            x.pre_backward_seconds for x in snap.recent if not x.warmup and x.pre_backward_seconds is not None
        ]
        busy = math.fsum(own) / len(own) if own else 0.0
        sums = {
            "tokens_total": float(snap.tokens_total),
            "model_flops_total": snap.model_flops_total,
            "tokens_per_second": snap.tokens_per_second or 0.0,
            "model_flops_per_second": snap.model_flops_per_second or 0.0,
            "peak": peak or 0.0,
            "known": 1.0 if peak else 0.0,
            "pre_backward_seconds": busy,
            "pre_backward_known": 1.0 if own else 0.0,
            "tokens_rated": 1.0 if snap.tokens_per_second else 0.0,
            "flops_rated": 1.0 if snap.model_flops_per_second else 0.0,
        }
        maxes = {"step_seconds": snap.step_seconds or 0.0, "pre_backward_seconds": busy}
        got = self._reducer.exchange([sums[k] for k in SUM_FIELDS], [maxes[k] for k in MAX_FIELDS])
        if got is None:
            return
        s, m = dict(zip(SUM_FIELDS, got[0], strict=True)), dict(zip(MAX_FIELDS, got[1], strict=True))
        known_all = round(s["known"]) == place.world_size
        busy_all = round(s["pre_backward_known"]) == place.world_size  # every rank measured its pre-backward
        peak_sum = s["peak"] if known_all else None
        # Run-wide rates only once every rank has a windowed rate: a rank still in warm-up would otherwise add
        # 0 to the sums and make the run read slow (no number rather than a wrong one).
        n = place.world_size
        mfps = s["model_flops_per_second"] if round(s["flops_rated"]) == n else None
        tps = s["tokens_per_second"] if round(s["tokens_rated"]) == n else None
        with self._lock:
            self._world = WorldFigures(
                as_of_step=self._nsteps,
                world_size=place.world_size,
                tokens_total=int(s["tokens_total"]),
                model_flops_total=s["model_flops_total"],
                tokens_per_second=tps,
                model_flops_per_second=mfps,
                peak_flops_per_second=peak_sum,
                mfu=utilization(mfps, peak_sum),
                max_step_seconds=m["step_seconds"] if m["step_seconds"] > 0 else None,
                # the slowest rank's pre-backward time, when every rank measured one
                max_pre_backward_seconds=m["pre_backward_seconds"] if busy_all else None,
                mean_pre_backward_seconds=s["pre_backward_seconds"] / place.world_size if busy_all else None,
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
def _inert_monitor() -> MFUMonitor:
    """A monitor whose hooks do nothing: what copies of a monitored model's hooks are bound to."""
    mon = MFUMonitor.__new__(MFUMonitor)
    mon._measuring = True  # the forward hooks return at once
    mon._closed = True  # so does the step hook (and step())
    mon._bwd_perf = None
    return mon


def _grad_output(output: Any) -> Any:
    """The tensor of a forward's output whose gradient arrives first in backward: the loss of a mapping (a
    Hugging Face ModelOutput), else its logits, else the first tensor; None if none is a graph output (a
    tensor with a ``grad_fn``: a fresh one each forward, so its hook goes with it)."""
    if isinstance(output, torch.Tensor):
        # a leaf (a model returning a parameter) would keep every hook ever registered: only graph outputs
        return output if output.grad_fn is not None else None
    if isinstance(output, dict):
        for key in ("loss", "logits"):
            value = output.get(key)
            if isinstance(value, torch.Tensor) and value.grad_fn is not None:
                return value
        values: Any = output.values()
    elif isinstance(output, (tuple, list)):
        values = output
    else:
        return None
    for value in values:
        if isinstance(value, torch.Tensor) and value.grad_fn is not None:
            return value
    return None


def _input_wait(prev_end_perf: float | None, forward_perf: float | None) -> float | None:
    """Host seconds from the previous step's end to this step's first forward: waiting for input."""
    if forward_perf is None or prev_end_perf is None:
        return None
    return max(0.0, forward_perf - prev_end_perf)


def _pre_backward(forward_perf: float | None, backward_perf: float | None) -> float | None:
    """Host seconds from a step's first forward to the start of its last backward (None if not seen)."""
    if forward_perf is None or backward_perf is None or backward_perf < forward_perf:
        return None
    return backward_perf - forward_perf


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
    positive("tick_seconds", kw["tick_seconds"], "pass seconds, e.g. tick_seconds=2", allow_zero=True)
    for name in ("seq_len", "window_steps", "log_every", "token_budget"):
        v = kw[name]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
            raise InputError(name, f"must be a positive integer, got {v!r}", f"pass e.g. {name}=...")
    for name, fix in (
        ("first_step", "pass the index of the run's next optimizer step, e.g. first_step=1000"),
        ("rank", "pass this process's rank, e.g. rank=0"),
    ):
        v = kw[name]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise InputError(name, f"must be a non-negative integer, got {v!r}", fix)
    size = kw["world_size"]
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise InputError("world_size", f"must be a positive integer, got {size!r}", "pass e.g. world_size=8")
    if size is not None and kw["rank"] is not None and kw["rank"] >= size:
        raise InputError(
            "rank", f"{kw['rank']} is not below world_size {size}", "pass 0 <= rank < world_size"
        )
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
        from monitor.model.presets import load_preset

        return load_preset(spec)
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
