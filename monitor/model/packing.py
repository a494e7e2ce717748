"""Model FLOPs of packed rows: attention charged per document (Σ Lᵢ²), not per row (S²).

A packed row holds several documents one after the other (``DataCollatorWithFlattening``, torchtitan's and
Megatron's packing). What the model needs for it is what it needs for each document run on its own: the
matmuls of the projections, MLP and LM head cost the same per token whatever the packing, and attention costs
each query the keys of its own document only. So a document of L tokens costs exactly
``L × flops_per_token(spec, L)`` (same ``causal``, window and recompute options), and a packed step costs the
sum over its documents.

Convention (see docs/flops.md, "Packed sequences"):
- **model FLOPs** (MFU) are per document: Σᵢ Lᵢ × FLOPs per token at length Lᵢ, the causal option and sliding
  windows applied inside each document. This is what FlopCounterMode counts when the documents are run one by
  one (eager attention), and what flash-attention's varlen kernels (``cu_seq_lens_q``/``cu_seq_lens_k``)
  compute.
- **hardware FLOPs** (HFU) are the model FLOPs plus recomputation, per document as well. A kernel that
  computes the whole S×S matrix of the row and masks the other documents' keys away (eager or SDPA attention
  with a block-diagonal mask, which transformers builds from ``position_ids`` restarting at 0 when no 2-D
  ``attention_mask`` is passed) does more arithmetic than that; masked-out work is not counted, as for the
  causal option.

Every FLOPs count is linear in each layer's attended keys (:func:`monitor.model.flops.count_flops`), so
:class:`PackedFlopsModel` walks the model once per distinct window (at most a few times) when built and then
prices any step by arithmetic: cheap enough for a log tick.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from pydantic import BaseModel, ConfigDict

from monitor.errors import InputError
from monitor.model.flops import (
    Recompute,
    _normalize_recompute,
    _training_setup,
    attended_keys,
    count_flops,
)
from monitor.model.spec import ModelSpec


class StepFlops(BaseModel):
    """Model and hardware FLOPs of one step's tokens (forward + backward), and what they were priced on."""

    model_config = ConfigDict(frozen=True)

    forward: float
    training: float  # model FLOPs (MFU)
    hardware: float  # with recomputation (HFU)
    tokens: int
    documents: int


class PackedFlopsModel:
    """Prices steps made of documents of given lengths for one model and one set of FLOPs conventions.

    ``flops(L) = base + Σ_w slope_w × attended_keys(L, w, causal)`` per token, with one slope per distinct
    per-layer window ``w`` (``None`` = no window): exact, as the graph walk is linear in each layer's keys.
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        causal: bool = False,
        sliding_window: bool | None = None,
        recompute: bool | Recompute = False,
        frozen: Iterable[str] | None = None,
        adapters: Mapping[str, int] | None = None,
    ) -> None:
        mode = _normalize_recompute(recompute)
        windowed = causal if sliding_window is None else sliding_window
        _, trainable, adapter_ranks = _training_setup(spec, frozen, adapters)
        self.causal = causal
        self._windows: list[int | None] = [
            spec.window(layer) if windowed else None for layer in range(spec.num_layers)
        ]
        # Base: every layer charged zero keys. Slope of a window group: one key on that group's layers.
        base = count_flops(spec, lambda layer: 0.0, mode, trainable, adapter_ranks)
        self._base = (base[0], base[1], base[2])
        self._slopes: dict[int | None, tuple[float, float, float]] = {}
        for w in dict.fromkeys(self._windows):
            unit = [1.0 if lw == w else 0.0 for lw in self._windows]
            ones = count_flops(spec, unit.__getitem__, mode, trainable, adapter_ranks)
            self._slopes[w] = (ones[0] - base[0], ones[1] - base[1], ones[2] - base[2])

    def per_token(self, length: int) -> tuple[float, float, float]:
        """(forward, training, hardware) FLOPs per token of a document of ``length`` tokens."""
        f, t, h = self._base
        for w, (sf, st, sh) in self._slopes.items():
            k = attended_keys(length, w, self.causal)
            f, t, h = f + sf * k, t + st * k, h + sh * k
        return f, t, h

    def step(self, documents: Sequence[int] | Sequence[Sequence[int]]) -> StepFlops:
        """FLOPs of a step whose documents have these lengths (flat, or one list per row: same result)."""
        lengths = flatten_lengths(documents)
        f = t = h = 0.0
        for n, count in _counts(lengths).items():
            pf, pt, ph = self.per_token(n)
            f, t, h = f + pf * n * count, t + pt * n * count, h + ph * n * count
        return StepFlops(forward=f, training=t, hardware=h, tokens=sum(lengths), documents=len(lengths))


def packed_step_flops(
    spec: ModelSpec,
    documents: Sequence[int] | Sequence[Sequence[int]],
    *,
    causal: bool = False,
    sliding_window: bool | None = None,
    recompute: bool | Recompute = False,
    frozen: Iterable[str] | None = None,
    adapters: Mapping[str, int] | None = None,
) -> StepFlops:
    """Model (``training``) and hardware FLOPs of a step of documents with these lengths (one-off use; build a
    :class:`PackedFlopsModel` once to price many steps)."""
    model = PackedFlopsModel(
        spec,
        causal=causal,
        sliding_window=sliding_window,
        recompute=recompute,
        frozen=frozen,
        adapters=adapters,
    )
    return model.step(documents)


def flatten_lengths(
    documents: Sequence[int] | Sequence[Sequence[int]], field: str = "documents"
) -> list[int]:
    """Document lengths as one flat list of positive ints (or one list per row); InputError otherwise."""
    out: list[int] = []
    for item in documents:
        items = item if isinstance(item, (list, tuple)) else (item,)
        for n in items:
            if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
                raise InputError(
                    field,
                    f"document lengths must be positive integers, got {n!r}",
                    "pass e.g. documents=[20, 30, 14]",
                )
            out.append(n)
    if not out:
        raise InputError(field, "no document lengths", "pass e.g. documents=[20, 30, 14], or leave it out")
    return out


def attention_share(model: PackedFlopsModel, lengths: Sequence[int], row_len: int) -> dict[str, float]:
    """Training FLOPs of the same tokens priced per document and per row of ``row_len`` (S²): how much the
    per-row convention over-charges a packed step (``ratio`` = per row / per document)."""
    per_doc = model.step(list(lengths)).training
    tokens = sum(lengths)
    per_row = model.per_token(row_len)[1] * tokens
    return {"per_document": per_doc, "per_row": per_row, "ratio": per_row / per_doc}


def _counts(lengths: list[int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for n in lengths:
        out[n] = out.get(n, 0) + 1
    return out
