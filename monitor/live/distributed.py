"""Run-level figures under torchrun: one all-reduce at log intervals (never per step), user's process group.

Every rank calls ``exchange`` at the same step indices (a multiple of the log interval), so the collectives
line up. On a CPU-capable backend (gloo, or a "cpu:gloo,cuda:nccl" group) the reduce runs on CPU tensors and
its result is used at once. On NCCL alone it runs on device tensors asynchronously and its result is copied
non-blocking into pinned host memory; it is read at a later interval once an event after the copy reports
complete — no synchronisation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RankPlace:
    rank: int
    local_rank: int
    world_size: int


def rank_place() -> RankPlace:
    """This process's place: torch.distributed when initialised, else torchrun's environment, else 0/0/1."""
    env_rank = int(os.environ.get("RANK", "0") or 0)
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    dist = _dist()
    if dist is not None:
        return RankPlace(dist.get_rank(), local, dist.get_world_size())
    return RankPlace(env_rank, local, world)


def initialized() -> bool:
    """Whether torch.distributed is up (cheap: called at every log tick)."""
    return _is_initialized()


def _is_initialized() -> bool:
    global _is_initialized
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return False
    if not dist.is_available():
        return False
    _is_initialized = dist.is_initialized  # bind once: later calls go straight to torch
    return bool(dist.is_initialized())


def _dist() -> Any:
    """torch.distributed when available and initialised, else None."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return None
    if dist.is_available() and dist.is_initialized():
        return dist
    return None


# Layout of the reduced vectors (the monitor fills and reads them by these names).
SUM_FIELDS = (
    "tokens_total",
    "model_flops_total",
    "tokens_per_second",
    "model_flops_per_second",
    "peak",
    "known",
    "pre_backward_seconds",
    "pre_backward_known",
    "tokens_rated",
    "flops_rated",
)
MAX_FIELDS = ("step_seconds", "pre_backward_seconds")


class Reducer:
    """Sums and maxima of a few floats over all ranks, issued at log intervals."""

    def __init__(self, group: Any = None) -> None:
        self.group = group
        self._pending: Any = None  # (event, host_sum, host_max) on the asynchronous path

    def exchange(self, sums: list[float], maxes: list[float]) -> tuple[list[float], list[float]] | None:
        """Issue a reduce of this rank's values; return the newest completed result (maybe an older one)."""
        dist = _dist()
        if dist is None:
            return None
        import torch

        backend = str(dist.get_backend(self.group))
        if "gloo" in backend or "mpi" in backend or "ucc" in backend:
            s = torch.tensor(sums, dtype=torch.float64)
            m = torch.tensor(maxes, dtype=torch.float64)
            dist.all_reduce(s, op=dist.ReduceOp.SUM, group=self.group)
            dist.all_reduce(m, op=dist.ReduceOp.MAX, group=self.group)
            return s.tolist(), m.tolist()
        return self._exchange_async(dist, torch, sums, maxes)

    def _exchange_async(self, dist: Any, torch: Any, sums: list[float], maxes: list[float]) -> Any:
        result = None
        if self._pending is not None and self._pending[0].query():
            _, hs, hm = self._pending
            result = (hs.tolist(), hm.tolist())
            self._pending = None
        if self._pending is None:
            device = torch.device("cuda", torch.cuda.current_device())
            # Pinned host -> device copies are asynchronous; a pageable source would make the host wait.
            s = torch.tensor(sums, dtype=torch.float64).pin_memory().to(device, non_blocking=True)
            m = torch.tensor(maxes, dtype=torch.float64).pin_memory().to(device, non_blocking=True)
            dist.all_reduce(s, op=dist.ReduceOp.SUM, group=self.group, async_op=True).wait()  # stream-ordered
            dist.all_reduce(m, op=dist.ReduceOp.MAX, group=self.group, async_op=True).wait()
            hs = torch.empty(s.shape, dtype=s.dtype, pin_memory=True)
            hm = torch.empty(m.shape, dtype=m.dtype, pin_memory=True)
            hs.copy_(s, non_blocking=True)
            hm.copy_(m, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._pending = (event, hs, hm)
        return result
