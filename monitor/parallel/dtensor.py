"""Parameters sharded over mesh dimensions the monitor was not told about (duck-typed, no torch import).

A DTensor parameter carries ``device_mesh`` (with ``mesh_dim_names``) and ``placements`` (one per mesh
dimension: ``Shard(dim)``, ``Replicate()``, ``Partial()``). A parameter sharded over a ``tp``/``cp``/``pp``
dimension, or any dimension, that the monitor's layout lacks means each rank computes only part of the
model while the monitor would charge it the whole: the fix is to pass the mesh.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from monitor.parallel.layout import ParallelLayout

# Sharding over these splits storage only (FSDP gathers weights before computing): FLOPs per rank unchanged.
DATA_ONLY = (
    "dp",
    "dp_shard",
    "dp_replicate",
    "dp_shard_cp",
    "dp_cp",
    "fsdp",
    "dp_shard_mod_ep",
    "dp_shard_in_ep",
)


def mesh_dims_of_parameters(named_parameters: Iterable[tuple[str, Any]]) -> dict[str, str]:
    """Mesh dimension name -> the first parameter sharded over it (``Shard`` placements only; FSDP2 and
    tensor parallelism both shard; replicated dimensions do not split the work)."""
    found: dict[str, str] = {}
    for name, param in named_parameters:
        mesh = getattr(param, "device_mesh", None)
        placements = getattr(param, "placements", None)
        if mesh is None or placements is None:
            continue
        dims = getattr(mesh, "mesh_dim_names", None) or tuple(f"dim{i}" for i in range(len(placements)))
        for dim, placement in zip(dims, placements, strict=False):
            if type(placement).__name__ in ("Shard", "_StridedShard") and dim not in found:
                found[str(dim)] = name
    return found


def unknown_mesh_dims(
    named_parameters: Iterable[tuple[str, Any]], layout: ParallelLayout | None
) -> str | None:
    """A one-line warning when parameters are sharded over mesh dimensions the layout does not cover (a
    parameter sharded over a data-parallel dimension such as FSDP's ``dp_shard`` is fine: data parallelism
    does not change a rank's FLOPs per token), else None."""
    found = mesh_dims_of_parameters(named_parameters)
    known = set(DATA_ONLY)
    if layout is not None:
        known |= set(layout.sizes) | set(layout.flattened)
        for parts in layout.flattened.values():
            known |= set(parts)
    missing = {d: p for d, p in found.items() if d not in known}
    if not missing:
        return None
    dim, param = next(iter(missing.items()))
    others = f" (and {len(missing) - 1} more dimension(s))" if len(missing) > 1 else ""
    return (
        f"parameters are sharded over mesh dimension {dim!r} (e.g. {param}){others} that the monitor was not "
        "told about, so each rank would be charged the whole model's FLOPs — pass "
        "mesh=<the world DeviceMesh> (or parallel={...}) to MFUMonitor"
    )
