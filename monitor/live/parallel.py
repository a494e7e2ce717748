"""The run's parallel layout applied to the live figures: which tokens this rank counts toward the run and
what share of its replica's model FLOPs it charges itself (the arithmetic is ``monitor.parallel.layout``).

- tokens: a rank counts the tokens it is fed × its token weight (1 on tensor-parallel coordinate 0 of
  pipeline stage 0, else 0), so Σ over ranks = the tokens fed, each replica's batch once;
- FLOPs: each token fed is charged FLOPs per token at the global sequence length (local × cp) × cp ×
  the rank's FLOP share (1/tp × 1/cp × its stage's share): Σ over a replica's ranks = the replica's FLOPs,
  so the run MFU (Σ model-FLOP rates / Σ peaks) stays right.
"""

from __future__ import annotations

from typing import Any

from monitor.errors import InputError
from monitor.live.flops import FlopsPerToken
from monitor.live.resolver import StepResolver
from monitor.parallel.layout import ParallelLayout, from_mesh, from_parallel, validate


def parallel_layout(
    mesh: Any, parallel: dict[str, Any] | None, *, rank: int, world_size: int
) -> ParallelLayout | None:
    """The layout from ``mesh=`` (a DeviceMesh) or ``parallel=`` (sizes and coordinates), checked against
    the world size; None when neither is given."""
    if mesh is not None and parallel is not None:
        raise InputError("mesh", "given together with parallel=", "pass one of mesh= or parallel=")
    if mesh is not None:
        layout = from_mesh(mesh)
        if world_size > 1 and layout.world_size != world_size:
            raise InputError(
                "mesh",
                f"covers {layout.world_size} ranks ({layout.short()}), but the world size is {world_size}",
                "pass the root (world) DeviceMesh, or parallel= with every dimension's size",
            )
        return layout
    if parallel is not None:
        return from_parallel(parallel, rank=rank, world_size=world_size)
    return None


def apply_layout(layout: ParallelLayout, flops: FlopsPerToken, resolver: StepResolver) -> None:
    """This rank's token weight and FLOP share into the FLOPs model and the resolver."""
    validate(layout)
    flops.seq_scale = layout.size("cp")
    flops.scale = layout.replica_tokens(1) * layout.flop_share
    flops.cache.clear()
    resolver.token_weight = layout.token_weight
    resolver.sliced_sequences = layout.size("cp") > 1


def parallel_record(layout: ParallelLayout | None) -> dict[str, Any] | None:
    """What ``run_start`` records: the layout, this rank's token weight and its FLOP share."""
    if layout is None:
        return None
    return {**layout.record(), "token_weight": layout.token_weight, "flop_share": layout.flop_share}
