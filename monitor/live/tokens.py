"""Token counting from a forward call's arguments: shapes only on the hot path.

The forward pre-hook reads ``input_ids``, then ``inputs_embeds``, then the first tensor argument, and counts
the tokens it holds from its shape (no device work). The ``attention_mask``, when given, tells the real
(non-padding) tokens; summing it is device work, so the hot path only keeps the mask (CPU) or starts an
asynchronous sum and a non-blocking copy into pinned host memory (CUDA), and the count is read at log time
once the step's end marker is complete.
"""

from __future__ import annotations

from typing import Any

import torch

_Tensor = torch.Tensor


def tokens_in(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[int, int] | None:
    """(tokens, seq_len) in a forward call, from shapes only; None when the call carries no tensor to count.

    - integer ids ``(..., S)`` (``input_ids`` or the first tensor argument): tokens = numel, seq_len = S;
    - embeddings ``(..., S, H)`` (``inputs_embeds``, or a floating first argument with 3+ dims):
      tokens = numel / H;
    - a floating ``(B, D)`` or ``(B,)`` first argument (no sequence axis): B samples of length 1.
    """
    t = kwargs.get("input_ids")
    if t is not None:
        return t.numel(), (t.shape[-1] if t.dim() else 1)
    t = kwargs.get("inputs_embeds")
    if t is not None:
        return _embeds(t)
    for a in args:
        if isinstance(a, _Tensor):
            t = a
            break
    else:
        return None
    if t.is_floating_point():
        if t.dim() >= 3:
            return _embeds(t)
        return (t.shape[0] if t.dim() else 1), 1
    return t.numel(), (t.shape[-1] if t.dim() else 1)


def _embeds(t: _Tensor) -> tuple[int, int]:
    if t.dim() < 2:
        return 1, 1
    return t.numel() // max(1, t.shape[-1]), t.shape[-2]


class DeferredCount:
    """A count of non-padding tokens whose device work was started on the hot path and is read at log time.

    CPU: keeps the mask itself and sums it when read. CUDA: holds a pinned host scalar filled by a
    non-blocking copy issued on the hot path; it is valid once the step's end event (recorded after it) is
    complete.
    """

    __slots__ = ("_host", "_mask")

    def __init__(self, mask: _Tensor) -> None:
        if mask.device.type == "cuda":
            total = mask.sum()
            host = torch.empty((), dtype=total.dtype, pin_memory=True)
            host.copy_(total, non_blocking=True)
            self._host: _Tensor | None = host
            self._mask: _Tensor | None = None
        else:
            self._host = None
            self._mask = mask

    def read(self) -> int:
        """The count (call only at log time; on CUDA only after the step's end marker is complete)."""
        if self._host is not None:
            return int(self._host)
        assert self._mask is not None
        mask = self._mask
        if mask.dtype == torch.bool:
            return int(mask.sum())
        return int((mask != 0).sum())
