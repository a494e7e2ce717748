"""Documents of packed rows, found in a forward call's arguments without device synchronisation.

A packed row holds several documents one after the other. The forward call says where they start in one of
three ways, looked for in this order:

- ``cu_seq_lens_q`` / ``cu_seq_lens_k`` (transformers' flash-attention varlen keywords; ``cu_seqlens_q`` /
  ``cu_seqlens_k`` are accepted too): cumulative document boundaries ``[0, L₁, L₁+L₂, ...]`` over the
  flattened batch;
- ``position_ids`` ``(B, S)`` (or ``(S,)``) that restart: a document starts wherever a position is not its
  predecessor + 1 (``DataCollatorWithFlattening`` restarts them at 0; the same rule as transformers'
  ``find_packed_sequence_indices``). Rows whose positions run 0..S-1 are one document each;
- an explicit list of lengths (``documents=[20, 30, 14]``), taken as given.

Reading lengths out of a device tensor is a synchronisation, so the hot path only starts the work: on CPU it
keeps the tensor (read at log time); on CUDA it computes the boundary flags on the device and starts a
non-blocking copy into pinned host memory, valid once the step's end marker is complete (as
:class:`monitor.live.tokens.DeferredCount` does for attention masks).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch

_Tensor = torch.Tensor

CU_KEYS = ("cu_seq_lens_q", "cu_seqlens_q", "cu_seq_lens_k", "cu_seqlens_k")


class DeferredDocuments:
    """Document lengths of one forward call, read at log time (never on the step's path)."""

    __slots__ = ("_flags", "_kind", "_lengths", "_repeat", "_tensor")

    def __init__(
        self,
        kind: str,
        tensor: _Tensor | None = None,
        lengths: Sequence[int] | None = None,
        repeat: int = 1,
    ) -> None:
        self._kind = kind  # "cu_seq_lens", "position_ids" or "explicit"
        self._repeat = repeat  # position_ids of one row broadcast over a batch of ``repeat`` rows
        self._lengths = list(lengths) if lengths is not None else None
        self._tensor: _Tensor | None = None
        self._flags: _Tensor | None = None
        if tensor is None:
            return
        if kind == "position_ids":
            tensor = tensor if tensor.dim() == 2 else tensor.reshape(1, -1)
        if tensor.device.type == "cuda":
            if kind == "position_ids":
                # Boundary flags on the device (fixed size: no synchronisation), then an async copy.
                tensor = _starts(tensor).to(torch.uint8)
            host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            host.copy_(tensor, non_blocking=True)
            self._flags = host
        else:
            self._tensor = tensor

    @property
    def kind(self) -> str:
        return self._kind

    def read(self) -> list[int]:
        """Document lengths (log time only; on CUDA only after the step's end marker is complete)."""
        if self._lengths is not None:
            return list(self._lengths)
        if self._kind == "cu_seq_lens":
            bounds = (self._flags if self._flags is not None else self._tensor).tolist()  # type: ignore[union-attr]
            return [int(b - a) for a, b in itertools.pairwise(bounds) if b > a]
        if self._flags is not None:
            flags = self._flags.bool()
        else:
            assert self._tensor is not None
            flags = _starts(self._tensor)
        return lengths_from_starts(flags) * self._repeat


def _starts(positions: _Tensor) -> _Tensor:
    """(B, S) bool: True where a document starts (the first token of a row, or a position that is not its
    predecessor + 1)."""
    first = positions[:, :1] - 1
    return torch.diff(positions, prepend=first, dim=-1) != 1


def lengths_from_starts(starts: _Tensor) -> list[int]:
    """Document lengths of (B, S) start flags, row after row (a row's first token always starts one)."""
    out: list[int] = []
    seq = starts.shape[-1]
    for row in starts.reshape(-1, seq).tolist():
        idx = [i for i, flag in enumerate(row) if flag or i == 0]
        idx.append(seq)
        out.extend(b - a for a, b in itertools.pairwise(idx))
    return out


def documents_in(
    kwargs: dict[str, Any], explicit: Sequence[int] | None = None, rows: int = 1
) -> DeferredDocuments | None:
    """The documents of a forward call, or None when it carries no packing marker (then each row is one
    document, as without packing). ``rows``: the batch's rows (from ``input_ids``), for ``position_ids`` given
    as one row broadcast over the batch. ``position_ids`` count only without an ``attention_mask`` (with one,
    transformers does not split rows into documents either). Shapes and device-side work only: nothing here
    waits for the device."""
    if explicit is not None:
        return DeferredDocuments("explicit", lengths=explicit)
    for key in CU_KEYS:
        t = kwargs.get(key)
        if isinstance(t, _Tensor) and t.dim() == 1 and t.numel() >= 2:
            return DeferredDocuments("cu_seq_lens", tensor=t)
    t = kwargs.get("position_ids")
    if kwargs.get("attention_mask") is not None:
        return None
    if isinstance(t, _Tensor) and t.dim() in (1, 2) and t.numel() > 0 and not t.is_floating_point():
        one_row = t.dim() == 1 or t.shape[0] == 1
        return DeferredDocuments("position_ids", tensor=t, repeat=rows if one_row and rows > 1 else 1)
    return None


def summarize(lengths: Sequence[int]) -> dict[str, float]:
    """Documents and mean document length of a step (what the snapshot, run log and metrics carry)."""
    n = len(lengths)
    return {"documents": float(n), "mean_document_length": (sum(lengths) / n) if n else 0.0}
