"""Resolver: closed steps (the capture's tuples) → resolved steps, run totals and the step-duration
histogram, in batches at log ticks and scrapes, under one lock.

A resolved step is ``(raw, seconds, (training, hardware) FLOPs per token)`` (``figures/steps.py``): the hot
path's own tuple is kept as it is (no per-step object built here); ``StepSample`` objects are made only when
someone reads the recent steps.
"""

from __future__ import annotations

import itertools
import math
import threading
from bisect import bisect_left as _bisect_left
from bisect import bisect_right as _bisect_right
from collections import deque
from collections.abc import Callable
from operator import itemgetter, sub
from typing import Any

from monitor.figures.steps import (
    BACKWARD_PERF,
    DOCUMENTS,
    END_PERF,
    FORWARD_PERF,
    MASKS,
    NO_FLOPS,
    OTHER_LENGTHS,
    PREV_END_PERF,
    REAL_TOKENS,
    SEQ_LEN,
    STEP,
    TOKENS,
    RawStep,
    ResolvedStep,
    input_wait,
    pre_backward,
)
from monitor.figures.window import STEP_BUCKETS, StepSample
from monitor.live.flops import FlopsPerToken
from monitor.live.timing import TimerBackend

_prev_marker, _marker = itemgetter(1), itemgetter(2)
_tokens, _seq_len, _other, _masks, _real, _docs = (
    itemgetter(i) for i in (TOKENS, SEQ_LEN, OTHER_LENGTHS, MASKS, REAL_TOKENS, DOCUMENTS)
)


class StepResolver:
    """Resolves the steps waiting in ``pending`` and keeps the run's totals (all under ``lock``).

    ``first_counted_step``: steps below it are warm-up (left out of post-warm-up sums and windows);
    ``keep_for_log``: also keep every resolved step until ``take_unlogged()`` (for the run log)."""

    def __init__(
        self,
        pending: deque[RawStep],
        *,
        flops: FlopsPerToken,
        timer: TimerBackend,
        host_timer: bool,
        first_counted_step: int,
        window_steps: int,
        seq_len: int | None = None,
        on_error: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        self.lock = threading.RLock()
        self.pending = pending
        self.flops = flops
        self.timer = timer
        self.host_timer = host_timer
        self.first_counted_step = first_counted_step
        self.window_steps = window_steps
        self.keep_for_log = False
        self.on_error = on_error
        self.recent: deque[ResolvedStep] = deque(maxlen=max(window_steps, 256))
        self.unlogged: list[ResolvedStep] = []
        self.resolved = 0
        self.tokens_total = 0
        self.real_total = 0
        self.masked_tokens = 0  # tokens of the steps whose real-token count is known
        self.model_flops_total = 0.0
        self.hw_flops_total = 0.0
        self.post_tokens = 0  # sums over the post-warm-up steps (the cumulative MFU)
        self.post_model_flops = 0.0
        self.post_seconds = 0.0
        self.bucket_counts = [0] * (len(STEP_BUCKETS) + 1)  # per bucket, the last one above all bounds
        self.duration_sum = 0.0
        self.last_end_perf: float | None = None
        self.last_seconds: float | None = None
        self.last_seq_len: int | None = seq_len
        self.token_weight = 1  # 0 on ranks whose tokens another rank counts (tensor/pipeline peers)
        # Context parallelism: a rank's position_ids / cu_seq_lens cover a slice of each sequence, not its
        # documents; then only mon.step(documents=...) is priced per document (``warn`` says so once).
        self.sliced_sequences = False
        self.warn: Callable[[str, str], None] | None = None
        self.documents_total = 0  # packed documents of the steps that carried a packing marker
        self.document_tokens_total = 0
        self.last_documents: tuple[int, int] | None = None  # (documents, their tokens) of the last such step

    def note_seq_len(self, seq_len: int) -> None:
        self.last_seq_len = seq_len

    def resolve(self, training_thread: bool) -> None:
        """Resolve the closed steps (call under ``lock``), in batches.

        Per-step work here is done with comprehensions and C builtins: it is the monitor's main cost after
        the hooks. With CUDA events, only steps whose events are complete are taken. A FLOPs model measured
        on the meta device runs the model, so it is measured only on the training thread; until then, a
        scrape leaves steps of an unmeasured sequence length pending.
        """
        pending = self.pending
        if not pending:
            return
        batch: list[RawStep] = list(pending)  # one atomic copy: the training thread may append meanwhile
        cache = self.flops.cache
        override = self.flops.seq_len_override
        if self.flops.measured and not training_thread:
            for i, r in enumerate(batch):
                lengths = [r[SEQ_LEN], *(r[OTHER_LENGTHS] or ())]
                if any(x is not None and (override or x) not in cache for x in lengths):
                    batch = batch[:i]
                    break
        if self.host_timer:  # perf_counter is monotonic: end - start is never negative
            seconds = list(map(sub, map(_marker, batch), map(_prev_marker, batch)))
        else:
            elapsed = self.timer.elapsed
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
        self._add_to_totals(batch, seconds)

    def _add_to_totals(self, batch: list[RawStep], seconds: list[float]) -> None:
        """Resolved steps into the totals, the histogram and the recent steps."""
        total_seconds = math.fsum(seconds)
        lengths = set(map(_seq_len, batch))
        if (
            len(lengths) == 1
            and not any(map(_other, batch))
            and not any(map(_masks, batch))
            and not any(map(_docs, batch))
        ):
            # The common case, in C-level passes: one sequence length, no attention masks.
            (length,) = lengths
            fpt = (self.flops(length) or NO_FLOPS) if length is not None else NO_FLOPS
            tokens = sum(map(_tokens, batch))
            model_flops, hw_flops = tokens * fpt[0], tokens * fpt[1]
            with_real = any(map(_real, batch))
            if batch[0][STEP] >= self.first_counted_step and not with_real and not self.keep_for_log:
                # Only the last steps are kept (the recent-steps deque): build no more than those.
                keep = -(self.recent.maxlen or len(batch))
                records: list[ResolvedStep] = list(zip(batch[keep:], seconds[keep:], itertools.repeat(fpt)))
                post = (tokens, model_flops, total_seconds)
            else:
                records = list(zip(batch, seconds, itertools.repeat(fpt)))
                post = self._post_warmup_sums(records)
        else:
            records = [self._flattened(r, sec) for r, sec in zip(batch, seconds, strict=True)]
            tokens = sum(rec[0][TOKENS] for rec in records)
            model_flops = math.fsum(rec[0][TOKENS] * rec[2][0] for rec in records)
            hw_flops = math.fsum(rec[0][TOKENS] * rec[2][1] for rec in records)
            post = self._post_warmup_sums(records)
            with_real = any(rec[0][REAL_TOKENS] is not None for rec in records)
        self.recent.extend(records)
        if self.keep_for_log:
            self.unlogged.extend(records)
        self.resolved += len(batch)
        self.tokens_total += tokens * self.token_weight
        self.model_flops_total += model_flops
        self.hw_flops_total += hw_flops
        self.post_tokens += post[0]
        self.post_model_flops += post[1]
        self.post_seconds += post[2]
        if with_real:
            given = [
                (rec[0][TOKENS], rec[0][REAL_TOKENS]) for rec in records if rec[0][REAL_TOKENS] is not None
            ]
            self.real_total += sum(x for _, x in given)
            self.masked_tokens += sum(t for t, _ in given)
        self._file_durations(seconds, total_seconds)
        last_raw, last_seconds, _ = records[-1]
        self.last_end_perf = last_raw[END_PERF]
        self.last_seconds = last_seconds
        if last_raw[SEQ_LEN] is not None:
            self.last_seq_len = last_raw[SEQ_LEN]

    def _file_durations(self, seconds: list[float], total: float) -> None:
        """The histogram per bucket (cumulated at snapshot time): a bucket holds the durations d with
        bound[i-1] < d <= bound[i] (Prometheus' "le"). Steps of a batch mostly share one bucket: when the
        shortest and the longest do, that is all; otherwise the count at or below each bound is one bisection
        of the sorted durations."""
        counts = self.bucket_counts
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
        self.duration_sum += total

    def _post_warmup_sums(self, records: list[ResolvedStep]) -> tuple[int, float, float]:
        """(tokens, model FLOPs, seconds) of the steps after warm-up."""
        live = [rec for rec in records if rec[0][STEP] >= self.first_counted_step]
        return (
            sum(rec[0][TOKENS] for rec in live),
            math.fsum(rec[0][TOKENS] * rec[2][0] for rec in live),
            math.fsum(rec[1] for rec in live),
        )

    def _flattened(self, r: RawStep, seconds: float) -> ResolvedStep:
        """A step with several sequence lengths or attention masks as a plain one: all its tokens, the
        token-weighted FLOPs per token of its lengths, its real-token count read now (events complete)."""
        tokens = r[TOKENS] + sum((r[OTHER_LENGTHS] or {}).values())
        fpt = self._step_flops_per_token(r)
        docs = None
        if r[DOCUMENTS]:
            lengths = self._document_lengths(r[DOCUMENTS])
            if lengths:
                docs = (len(lengths), sum(lengths))
                self.documents_total += docs[0]
                self.document_tokens_total += docs[1]
                self.last_documents = docs
                packed = self.flops.packed(lengths)
                if packed is not None:
                    fpt = packed
        flat = (*r[:TOKENS], tokens, r[SEQ_LEN], None, None, self._real_count(r), r[BACKWARD_PERF], docs)
        return flat, seconds, fpt

    def _document_lengths(self, found: list[Any]) -> list[int] | None:
        """The step's document lengths (``mon.step(documents=...)`` replaces what the forwards said)."""
        try:
            explicit = [d for d in found if d.kind == "explicit"]
            if self.sliced_sequences and not explicit:
                if self.warn is not None:
                    self.warn(
                        "cp documents",
                        "packed rows under context parallelism: position_ids / cu_seq_lens of a slice do not "
                        "give the documents' lengths — pass mon.step(documents=[...])"
                        " (per-row FLOPs meanwhile)",
                    )
                return None
            return [n for d in (explicit or found) for n in d.read()]
        except Exception as exc:
            if self.on_error is not None:
                self.on_error("packed documents", exc)
            return None

    def _step_flops_per_token(self, r: RawStep) -> tuple[float, float]:
        """(training, hardware) FLOPs per token averaged over a step's micro-batch lengths; (0, 0) when
        unknown (a step whose FLOPs are unknown counts none, rather than a part)."""
        parts = [(r[SEQ_LEN], r[TOKENS])] if r[SEQ_LEN] is not None else []
        parts += list((r[OTHER_LENGTHS] or {}).items())
        total = sum(k for _, k in parts)
        if not total:
            return NO_FLOPS
        mf = hf = 0.0
        for length, k in parts:
            fpt = self.flops(length)
            if fpt is None:
                return NO_FLOPS
            mf += k * fpt[0]
            hf += k * fpt[1]
        return mf / total, hf / total

    def _real_count(self, r: RawStep) -> int | None:
        masks = r[MASKS]
        if not masks:
            return r[REAL_TOKENS]
        try:
            return int(sum(m.read() for m in masks))
        except Exception as exc:
            if self.on_error is not None:
                self.on_error("attention_mask count", exc)
            return None

    def take_unlogged(self) -> list[ResolvedStep]:
        """The resolved steps not yet handed to the run log (and forget them)."""
        with self.lock:
            todo, self.unlogged = self.unlogged, []
        return todo

    def mfu_cumulative(self, peak: float | None) -> float | None:
        """Model FLOPs over seconds of every post-warm-up step, over the peak (None before any)."""
        from monitor.figures.window import utilization

        if self.post_seconds <= 0 or not self.flops.cache:
            return None
        return utilization(self.post_model_flops / self.post_seconds, peak)

    def samples(self, wall_offset: float) -> list[StepSample]:
        """The last resolved steps as samples: enough for the window (``window_steps`` after warm-up)."""
        out: list[StepSample] = []
        counted = 0
        for rec in reversed(list(self.recent)):  # list(): one atomic copy (the hot path appends)
            out.append(sample_of(rec, wall_offset, self.first_counted_step))
            if rec[0][STEP] >= self.first_counted_step:
                counted += 1
                if counted >= self.window_steps:
                    break
        out.reverse()
        return out


def sample_of(rec: ResolvedStep, wall_offset: float, first_counted_step: int) -> StepSample:
    """The public view of a resolved step (unix times = ``wall_offset`` + perf_counter)."""
    raw, seconds, (f, h) = rec
    index, tokens, fwd = raw[STEP], raw[TOKENS], raw[FORWARD_PERF]
    return StepSample(
        step=index,
        tokens=tokens,
        real_tokens=raw[REAL_TOKENS],
        seq_len=raw[SEQ_LEN],
        seconds=seconds,
        end_time=wall_offset + raw[END_PERF],
        forward_start_time=None if fwd is None else wall_offset + fwd,
        input_wait_seconds=input_wait(raw[PREV_END_PERF], fwd),
        model_flops=tokens * f,
        hardware_flops=tokens * h,
        warmup=index < first_counted_step,
        pre_backward_seconds=pre_backward(fwd, raw[BACKWARD_PERF]),
    )


__all__ = ["StepResolver", "sample_of"]
