"""Capture: the hooks and ``mon.step`` — timestamps and token counts on the training thread, nothing else.

The per-step path (a forward pre-hook and an optimizer step post-hook) only reads tensor shapes, takes a host
timestamp or records a CUDA event, and appends one plain tuple (laid out as ``figures/steps.py`` names it) to
``pending``. Everything else happens at log ticks, which this unit only schedules: every ``log_every`` steps
(the same steps on every rank, so collectives line up) and, on one process, every ``tick_seconds``.
Every hook body is guarded: an error is handed to ``on_error`` and training goes on.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from types import FrameType
from typing import Any

import torch

from monitor.errors import InputError
from monitor.live.compile_compat import CompiledInputs
from monitor.live.distributed import initialized as dist_initialized
from monitor.live.documents import DeferredDocuments, documents_in
from monitor.live.timing import HostTimer, TimerBackend
from monitor.live.tokens import DeferredCount, tokens_in

_MAX_PENDING = 1000  # steps waiting for a log tick on one process before one is forced
FORWARDS_WITHOUT_STEP = 1000  # micro-batches in one step before the monitor says no step seems to close
_grad_enabled = torch.is_grad_enabled
_perf = time.perf_counter
_is_compiling = torch.compiler.is_compiling
_PACKING_KEYS = ("position_ids", "cu_seq_lens_q", "cu_seqlens_q", "cu_seq_lens_k", "cu_seqlens_k")


class StepCapture:
    """Counts tokens per forward and closes a step at each optimizer step (or ``step()`` by hand).

    ``pending`` receives the closed steps; ``on_tick(reduce)`` is called when a log tick is due (``reduce``:
    an all-reduce across ranks belongs to it); ``on_error(where, exc)`` gets every error of a hook.
    ``seq_len_hint()`` gives the last known sequence length, for ``step(tokens=n)`` without ``seq_len``.
    """

    def __init__(
        self,
        *,
        timer: TimerBackend,
        first_step: int,
        log_every: int,
        tick_seconds: float,
        seq_len_override: int | None,
        on_tick: Callable[[bool], None],
        on_error: Callable[[str, BaseException], None],
        on_seq_len: Callable[[int], None],
        seq_len_hint: Callable[[], int | None],
    ) -> None:
        self.timer = timer
        self.host_timer = isinstance(timer, HostTimer)
        self.perf0 = _perf()
        self.wall0 = time.time()
        self.start_marker = self.perf0 if self.host_timer else timer.mark()
        self.paused = False  # while True (the FLOPs model measuring the model), the forward hooks return
        # A pipeline stage (pp > 1) until the first log tick: forwards inside the schedule's metadata
        # inference (its first step runs the stage once more to learn shapes) are not counted
        self.pipeline_inference = False
        self.closed = False
        self.log_every = log_every
        self.tick_seconds = tick_seconds
        self.seq_len_override = seq_len_override
        self.on_tick = on_tick
        self.on_error = on_error
        self.on_seq_len = on_seq_len
        self.seq_len_hint = seq_len_hint
        self.pending: deque[tuple[Any, ...]] = deque()
        self.next_index = first_step  # the next step's index (a resumed run continues its numbering)
        self.countdown = log_every - first_step % log_every  # steps to the next multiple of log_every
        self.next_tick = self.perf0 + tick_seconds
        # The step under way.
        self.prev_marker: Any = None
        self.prev_end_perf: float | None = None
        self.fwd_perf: float | None = None
        self.bwd_perf: float | None = None  # start of the step's last backward (host timer only)
        self.tok = 0  # tokens of this step at sequence length self.seq
        self.seq: int | None = None
        self.other: dict[int, int] | None = None  # micro-batches of other lengths (rare)
        self.masks: list[DeferredCount] | None = None
        self.docs: list[DeferredDocuments] | None = None  # packed rows' documents, read at log time
        self.next_real: int | None = None  # real tokens given to step() by hand
        self.monitor_seconds = 0.0  # time the log ticks took on the training thread
        self.forwards = 0  # forward passes after the step's first (micro-batches), reset when a step closes
        self.on_warn: Callable[[str, str], None] = lambda key, message: None
        # Forward calls seen inside compiled frames (torch.compile), counted at the step's end.
        self.compiled = CompiledInputs()

    # --- hooks ---
    def forward_pre_hook(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Forward pre-hook: shapes only (tokens, sequence length), a mask kept for later, a timestamp.

        Kept lean (benchmarks/overhead.py): the common call (``input_ids=`` on the step's first forward, no
        mask) reads two shape facts and sets four attributes; the rest goes to ``_count_other_forward``."""
        if self.paused or not _grad_enabled():  # evaluation (no_grad) is not training throughput
            return None
        if self.pipeline_inference and in_pipeline_inference():
            return None  # a pipeline schedule's shape inference, not training
        if _is_compiling():
            # Inside a compiled frame only traceable work (no clock, no try): keep the input references,
            # counted at the step's end (live/compile_compat.py).
            self.compiled.stash(args, kwargs)
            return None
        try:
            if self.fwd_perf is None:
                self.fwd_perf = now = _perf()
                if self.prev_marker is None:  # the very first step starts at its first forward
                    self.prev_marker = now if self.host_timer else self.timer.mark()
            ids = kwargs.get("input_ids")
            if ids is None or self.tok or "attention_mask" in kwargs or "position_ids" in kwargs:
                self._count_other_forward(ids, args, kwargs)
                return None
            shape = ids.shape
            self.tok = ids.numel()
            self.seq = shape[-1] if shape else 1
            if len(kwargs) > 1 and any(k in kwargs for k in _PACKING_KEYS):
                self._note_documents(kwargs, shape[0] if len(shape) > 1 else 1)
        except Exception as exc:
            self.on_error("forward hook", exc)
        return None

    def _count_other_forward(self, ids: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """The forward pre-hook's other cases: no ``input_ids`` (embeddings, a positional tensor), a further
        micro-batch of the step (gradient accumulation, maybe of another length), an attention mask."""
        self.forwards += 1
        if self.forwards == FORWARDS_WITHOUT_STEP:
            self.on_warn(
                "no step",
                f"{FORWARDS_WITHOUT_STEP} forward passes and no optimizer step closed: the optimizer given "
                "is not the one whose step() runs (pass that one), or the loop has none (call mon.step() "
                "after each step)",
            )
        if ids is not None:
            shape = ids.shape
            n, s = ids.numel(), (shape[-1] if shape else 1)
        else:
            counted = tokens_in(args, kwargs)
            if counted is None:
                return
            n, s = counted
        if self.tok and s != self.seq:  # a micro-batch of another length in the same step
            other = self.other if self.other is not None else {}
            other[s] = other.get(s, 0) + n
            self.other = other
        else:
            self.seq = s
            self.tok += n
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() == 2 and mask.numel() == n:
            if self.masks is None:
                self.masks = []
            self.masks.append(DeferredCount(mask))
        if any(k in kwargs for k in _PACKING_KEYS):
            self._note_documents(kwargs, n // s if s else 1)

    def _note_documents(self, kwargs: dict[str, Any], rows: int) -> None:
        """The forward's packed documents (position_ids restarting, varlen keywords), read at log time."""
        found = documents_in(kwargs, None, rows=rows)
        if found is not None:
            if self.docs is None:
                self.docs = []
            self.docs.append(found)

    def _count_compiled(self) -> None:
        """The forward calls stashed inside compiled frames, counted as the eager hook counts them (their
        first forward's timestamp is lost: the step starts at the previous step's end)."""
        for args, kwargs in self.compiled.drain():
            ids = kwargs.get("input_ids")
            if ids is None or self.tok or "attention_mask" in kwargs or "position_ids" in kwargs:
                self._count_other_forward(ids, args, kwargs)
            else:
                shape = ids.shape
                self.tok = ids.numel()
                self.seq = shape[-1] if shape else 1
                if any(k in kwargs for k in _PACKING_KEYS):
                    self._note_documents(kwargs, shape[0] if len(shape) > 1 else 1)

    def forward_post_hook(self, module: Any, args: Any, output: Any) -> None:
        """Forward post-hook: a hook on the output's gradient marks when this forward's backward starts."""
        if not _grad_enabled() or self.paused or _is_compiling():
            return None
        if self.pipeline_inference and in_pipeline_inference():
            return None
        try:
            tensor = _grad_output(output)
            if tensor is not None:
                tensor.register_hook(self._backward_started)
        except Exception as exc:
            self.on_error("forward post-hook", exc)
        return None

    def _backward_started(self, grad: Any) -> None:
        self.bwd_perf = _perf()
        return None

    def optimizer_step_hook(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        """Optimizer step post-hook: closes the step (all micro-batches since the last one).

        The hot path, kept inline: one clock read (or event record), one tuple appended, counters reset."""
        try:
            now = _perf()
            if self.closed:
                return
            if self.compiled.calls:
                self._count_compiled()
            prev = self.prev_marker
            if prev is None:
                prev = self.start_marker
            n = self.next_index
            marker = now if self.host_timer else self.timer.mark()
            self.pending.append(
                (
                    n,
                    prev,
                    marker,
                    now,
                    self.prev_end_perf,
                    self.fwd_perf,
                    self.tok,
                    self.seq,
                    self.other,
                    self.masks,
                    self.next_real,
                    self.bwd_perf,
                    self.docs,
                )
            )  # fmt: skip  (the field order of figures/steps.py)
            self.prev_marker = marker
            self.prev_end_perf = now
            self.fwd_perf = self.bwd_perf = self.other = self.masks = self.docs = None
            self.tok = self.forwards = 0
            self.next_index = n + 1
            # One countdown to the next multiple of log_every and one clock comparison, instead of a modulo.
            c = self.countdown - 1
            if c and now < self.next_tick:
                self.countdown = c
                return
            if c:  # a tick by time between multiples of log_every
                self.countdown = c
                self._tick(False)
                return
            self.countdown = self.log_every
            # Same steps on every rank: the all-reduce lines up. On one process, a tick is due only by time
            # or when many steps wait (batches amortise a tick's fixed cost).
            if dist_initialized():
                self._tick(True)
            elif now >= self.next_tick or len(self.pending) >= _MAX_PENDING:
                self._tick(False)
        except Exception as exc:
            self.on_error("optimizer hook", exc)

    def _tick(self, reduce: bool) -> None:
        """A log tick, run in the step hook right after the step closed. Its own time (resolving steps, the
        sinks, the all-reduce) lies between this step's end and the next step's first forward, where input
        wait is measured: it is the monitor's time, not the input pipeline's, so input wait starts after it
        (the time stays in the next step's duration, where it was spent, and shows as unexplained)."""
        start = _perf()
        self.next_tick = start + self.tick_seconds
        self.on_tick(reduce)
        done = _perf()
        self.monitor_seconds += done - start
        if self.prev_end_perf is not None and self.fwd_perf is None:
            self.prev_end_perf = done

    # --- by hand ---
    def step(
        self,
        tokens: int | None = None,
        *,
        real_tokens: int | None = None,
        seq_len: int | None = None,
        documents: list[int] | None = None,
    ) -> None:
        """Close a step by hand (see ``MFUMonitor.step``). A bad argument is the caller's bug: it raises
        ``InputError`` here, before anything is counted, so the run's figures stay as they were."""
        check_step_arguments(tokens, real_tokens, seq_len)
        if real_tokens is not None and tokens is None:
            counted = self.tok + sum((self.other or {}).values())
            if real_tokens > counted:
                raise InputError(
                    "real_tokens", f"{real_tokens} non-padding tokens is more than the {counted} tokens the "
                    "forward hook counted this step", "pass real_tokens <= the step's tokens, or tokens= too",
                )  # fmt: skip
        if documents is not None:
            from monitor.model.packing import flatten_lengths

            lengths = flatten_lengths(documents)  # InputError naming ``documents`` on bad input
            self.docs = [DeferredDocuments("explicit", lengths=lengths)]
        try:
            if tokens is not None:
                s = seq_len or self.seq_len_override or self.seq_len_hint() or 1
                self.tok, self.seq, self.other, self.masks = tokens, s, None, None
                self.compiled.drain()  # the count given by hand replaces what the hooks saw
                if seq_len:
                    self.on_seq_len(seq_len)  # a run_start written later carries it
            self.next_real = real_tokens
            self.optimizer_step_hook(None, None, None)
            self.next_real = None
        except Exception as exc:
            self.on_error("step()", exc)

    def resume(self) -> None:
        """The next step's clock starts now (see ``MFUMonitor.resume``); nothing while a step is under way."""
        try:
            if self.closed or self.fwd_perf is not None or self.tok or self.prev_marker is None:
                return  # mid-step, or before the first step (which starts at its first forward anyway)
            now = _perf()
            self.prev_marker = now if self.host_timer else self.timer.mark()
            self.prev_end_perf = now
        except Exception as exc:
            self.on_error("resume()", exc)

    # --- copies of a monitored model ---
    def __deepcopy__(self, memo: dict[int, Any]) -> StepCapture:
        """``copy.deepcopy(model)`` (an EMA or teacher copy) copies the model's hooks, bound to a copy of this
        capture: that copy is inert — its hooks return at once — so the copy's steps are not counted as this
        run's, and copying does not fail on the monitor's lock, server or files."""
        return inert_capture()

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        """Pickling a monitored model (``torch.save(model)``) stores inert hooks, as ``__deepcopy__``."""
        return inert_capture, ()


# What torch.distributed.pipelining's stages call to infer shapes at a schedule's first step (by release).
_PIPELINE_INFERENCE = frozenset(("_forward_metadata_inference", "_shape_inference"))


def in_pipeline_inference(depth: int = 24) -> bool:
    """Whether a pipeline stage's shape inference is running this forward (a walk up the caller frames;
    only asked on pipeline stages, only until the first log tick)."""
    frame: FrameType | None = sys._getframe(2)
    for _ in range(depth):
        if frame is None:
            return False
        if frame.f_code.co_name in _PIPELINE_INFERENCE:
            return True
        frame = frame.f_back
    return False


def check_step_arguments(tokens: Any, real_tokens: Any, seq_len: Any) -> None:
    """``mon.step``'s arguments: whole numbers, ``tokens`` and ``real_tokens`` non-negative, ``seq_len``
    positive, and no more real (non-padding) tokens than tokens; ``InputError`` naming the argument if not."""

    def whole(name: str, value: Any, least: int, fix: str) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            kind = "non-negative" if least == 0 else "positive"
            raise InputError(name, f"must be a {kind} integer, got {value!r}", fix)

    whole("tokens", tokens, 0, "pass mon.step(tokens=n), n the tokens this rank processed in the step")
    whole("real_tokens", real_tokens, 0, "pass the step's non-padding tokens, or leave real_tokens out")
    whole("seq_len", seq_len, 1, "pass the step's sequence length, e.g. seq_len=4096, or leave it out")
    if real_tokens is not None and tokens is not None and real_tokens > tokens:
        raise InputError(
            "real_tokens", f"{real_tokens} non-padding tokens is more than the step's {tokens} tokens",
            "pass real_tokens <= tokens (the non-padding part of the tokens processed)",
        )  # fmt: skip


def inert_capture() -> StepCapture:
    """A capture whose hooks do nothing: what copies of a monitored model's hooks are bound to."""
    cap = StepCapture.__new__(StepCapture)
    cap.paused = True  # the forward hooks return at once
    cap.closed = True  # so does the step hook (and step())
    cap.bwd_perf = None
    cap.fwd_perf = None
    cap.tok = 0
    cap.prev_marker = None
    cap.seq_len_override = None
    cap.next_real = None
    cap.seq_len_hint = lambda: None
    cap.on_seq_len = lambda n: None
    cap.on_error = lambda where, exc: None
    return cap


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
