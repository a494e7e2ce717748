"""FLOPs per token of a monitored run, per sequence length, computed once per length at log time.

The source is decided once by the run setup (``live/setup.py``): a number given by the user (``fixed``), the
analytic model of a ``ModelSpec`` (``spec``), or a measurement of the model on the meta device
(``measured``: it runs the model, so only on the training thread, with the capture's hooks paused).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

FLOPS_METHODS = {
    "fixed": "given (flops_per_token)",
    "spec": "analytic (ModelSpec)",
    "measured": "measured (meta)",
}


@dataclass(frozen=True)
class FlopsSource:
    """Where FLOPs per token come from: ``kind`` is fixed | spec | measured; ``value`` the number or spec."""

    kind: str
    value: Any = None

    @property
    def method(self) -> str:
        return FLOPS_METHODS[self.kind]


class FlopsPerToken:
    """(training, hardware) FLOPs per token at a sequence length, cached per length.

    ``on_error`` is told about a failing model (which is then dropped: FLOPs become unknown, never wrong);
    ``pause_hooks(bool)`` brackets a measurement, so the monitor's own forward hook does not count it.
    """

    def __init__(
        self,
        source: FlopsSource | None,
        *,
        model: Any = None,
        seq_len_override: int | None = None,
        causal: bool = False,
        recompute: Any = False,
        on_error: Callable[[str, BaseException], None] | None = None,
        pause_hooks: Callable[[bool], None] | None = None,
    ) -> None:
        self.source = source
        self.model = model
        self.seq_len_override = seq_len_override
        self.causal = causal
        self.recompute = recompute
        self.cache: dict[int, tuple[float, float]] = {}
        self.on_error = on_error
        self.pause_hooks = pause_hooks
        self._packed: Any = None  # PackedFlopsModel, built on the first packed step
        # Parallel layouts: FLOPs per token this rank charges itself for each token it is fed =
        # FLOPs per token at (local length × seq_scale) × scale, scale = cp × its share of its replica's
        # model FLOPs (monitor.parallel.layout: 1/tp × 1/cp × its pipeline stage's share).
        self.scale = 1.0
        self.seq_scale = 1

    @property
    def method(self) -> str | None:
        return None if self.source is None else self.source.method

    @property
    def measured(self) -> bool:
        return self.source is not None and self.source.kind == "measured"

    @property
    def fixed(self) -> bool:
        return self.source is not None and self.source.kind == "fixed"

    def __call__(self, seq_len: int | None, *, measure: bool = True) -> tuple[float, float] | None:
        """(training, hardware) FLOPs per token at ``seq_len`` (the override when given); None if unknown,
        or when it must be measured and ``measure`` is False (not on the training thread)."""
        if self.seq_len_override:
            seq_len = self.seq_len_override
        if seq_len is None or self.source is None:
            return None
        cached = self.cache.get(seq_len)
        if cached is not None:
            return cached
        kind, value = self.source.kind, self.source.value
        local, seq_len = seq_len, seq_len * self.seq_scale
        try:
            if kind == "fixed":
                result = (value, value)
            elif kind == "spec":
                from monitor.model.flops import flops_per_token

                f = flops_per_token(
                    value, seq_len, causal=self.causal, recompute=self.recompute, frozen=self._frozen(value)
                )
                result = (f.training, f.hardware)
            else:
                if not measure:
                    return None
                result = self._measure(seq_len)
        except Exception as exc:
            if self.on_error is not None:
                self.on_error("FLOPs model", exc)
            self.source = None
            return None
        if self.scale != 1.0:
            result = (result[0] * self.scale, result[1] * self.scale)
        self.cache[local] = result
        return result

    def packed(self, lengths: list[int]) -> tuple[float, float] | None:
        """(training, hardware) FLOPs per token of a step of packed documents of these lengths, attention
        priced per document (Σ Lᵢ², windows and the causal option per document: monitor.model.packing);
        None when the FLOPs come from a given number or a measurement (then the row convention stays)."""
        if self.source is None or self.source.kind != "spec" or not lengths:
            return None
        try:
            if self._packed is None:
                from monitor.model.packing import PackedFlopsModel

                spec = self.source.value
                self._packed = PackedFlopsModel(
                    spec, causal=self.causal, recompute=self.recompute, frozen=self._frozen(spec)
                )
            step = self._packed.step(lengths)
        except Exception as exc:
            if self.on_error is not None:
                self.on_error("packed FLOPs model", exc)
            return None
        return step.training / step.tokens * self.scale, step.hardware / step.tokens * self.scale

    def _measure(self, seq_len: int) -> tuple[float, float]:
        from monitor.model.measure import measure_module

        if self.pause_hooks is not None:
            self.pause_hooks(True)  # the monitor's own forward hook must not count the measurement's forward
        try:
            f = measure_module(self.model, seq_len)
        finally:
            if self.pause_hooks is not None:
                self.pause_hooks(False)
        extra = 0.0
        if self.recompute in (True, "full"):
            extra = f.forward  # full recomputation runs the forward once more
        return f.training, f.training + extra

    def _frozen(self, spec: Any) -> list[str] | None:
        """Frozen parameters, seen from ``requires_grad``, as the FLOPs model's canonical names."""
        if self.model is None:
            return None
        names = [n for n, p in self.model.named_parameters() if not p.requires_grad]
        if not names:
            return None
        from monitor.model.flops import frozen_from_param_names

        return frozen_from_param_names(spec, names)
