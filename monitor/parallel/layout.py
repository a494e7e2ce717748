"""The parallel layout of a run, and what it does to tokens and model FLOPs. Pure, no torch import.

Dimension names are torchtitan's (``ParallelDims``): ``pp``, ``dp_replicate``, ``dp_shard``, ``cp``, ``tp``,
``dp`` for launchers with one data-parallel dimension, and ``ep``. The base dimensions multiply to the world
size; ``dp``, ``dp_shard_cp``, ``dp_cp`` and ``dp_shard_mod_ep`` may also name flattened sub-meshes of them.

What each dimension does (docs/parallelism.md has the table and sources):

- data parallel (``dp_replicate``, ``dp_shard``, ``dp``; ``ep`` when it is a base dimension of the mesh):
  every replica trains on its own batch. The run's tokens are the sum over replicas.
- ``tp``: every tensor-parallel rank of a replica gets the same ``input_ids``; each computes 1/tp of every
  layer's matmuls (Megatron-LM: Shoeybi et al. 2019; Narayanan et al. 2021 count the model FLOPs once per
  replica). Only tp coordinate 0 counts the batch's tokens.
- ``cp``: each context-parallel rank holds 1/cp of every sequence (torchtitan shards the sequence dimension);
  its queries still attend over the whole sequence, so the FLOPs per token are those at the global length
  ``local_len × cp``, and the replica's tokens are the sum over its cp ranks. Each cp rank charges itself
  1/cp of the replica's FLOPs (its slice of every matmul and of attention; torchtitan's round-robin sharding
  balances the causal work).
- ``pp``: a pipeline stage runs its layers on every micro-batch; later stages never see ``input_ids`` (their
  forward gets hidden states of the same tokens). Only stage 0 counts the tokens; each stage charges itself
  its layers' share of the FLOPs (``stage_shares``, from the layer count on each stage, else 1/pp).
- ``ep`` (expert parallel) in the ``parallel=`` form is carved out of the data-parallel (and cp) ranks, as in
  Megatron-LM and torchtitan: each rank keeps its own batch, and the expert matmuls of its tokens run on the
  ranks that hold the experts. Each rank is charged its own tokens' FLOPs: over the run the sum is exact, and
  per rank it is exact on average when routing is balanced (the auxiliary load-balancing loss's goal).

With these, Σ over ranks of the tokens counted = the tokens fed, and Σ over ranks of the model FLOPs charged
= the model FLOPs of those tokens, so run MFU = Σ model-FLOP rates / Σ peaks holds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from monitor.errors import InputError

DATA_DIMS = ("dp_replicate", "dp_shard", "dp")
BASE_DIMS = ("pp", "dp_replicate", "dp_shard", "dp", "cp", "tp", "ep")
# Flattened names torchtitan gives sub-meshes, with the base dimensions they merge.
FLATTENED: dict[str, tuple[str, ...]] = {
    "dp": ("dp_replicate", "dp_shard"),
    "dp_shard_cp": ("dp_shard", "cp"),
    "dp_cp": ("dp_replicate", "dp_shard", "cp"),
    "dp_shard_mod_ep": ("dp_shard",),
    "dp_shard_in_ep": ("dp_shard",),
}
# Megatron-LM's default rank order ("tp-cp-ep-dp-pp"): the first name varies fastest.
MEGATRON_ORDER = ("tp", "cp", "dp", "pp")

_FIX = (
    "name the mesh dimensions dp_replicate, dp_shard, dp, cp, tp, pp, ep (torchtitan's names), "
    "or pass parallel={'dp': ..., 'tp': ..., 'pp': ..., 'cp': ...}"
)


class ParallelLayout(BaseModel):
    """Sizes of the base dimensions (in mesh order), this rank's coordinate on each, and what was flattened.

    ``ep`` in ``sizes`` is a base dimension (its ranks hold different batches, as data parallel);
    ``expert_parallel`` is an expert-parallel degree carved out of the data-parallel ranks (``parallel=``
    form), which does not enter the world size.
    """

    model_config = ConfigDict(frozen=True)

    sizes: dict[str, int]
    coords: dict[str, int]
    flattened: dict[str, tuple[str, ...]] = {}
    expert_parallel: int = 1
    stage_shares: tuple[float, ...] | None = None  # each pipeline stage's share of the model FLOPs
    source: Literal["mesh", "parallel"] = "parallel"

    # --- sizes ---
    def size(self, dim: str) -> int:
        return self.sizes.get(dim, 1)

    def coord(self, dim: str) -> int:
        return self.coords.get(dim, 0)

    @property
    def world_size(self) -> int:
        return math.prod(self.sizes.values())

    @property
    def replicas(self) -> int:
        """Data-parallel replicas: batches trained side by side (``ep`` too when it is a base dimension)."""
        return math.prod(self.size(d) for d in (*DATA_DIMS, "ep"))

    @property
    def replica_index(self) -> int:
        """This rank's replica, 0..replicas-1 (mixed radix over the data dimensions, in mesh order)."""
        index = 0
        for dim in self.sizes:
            if dim in (*DATA_DIMS, "ep"):
                index = index * self.size(dim) + self.coord(dim)
        return index

    # --- what this rank counts ---
    @property
    def token_weight(self) -> int:
        """1 when this rank counts the tokens it is fed toward the run, else 0: one rank per (replica, cp
        slice): tp coordinate 0 of pipeline stage 0. Σ over ranks of fed tokens × weight = the tokens fed."""
        return int(self.coord("tp") == 0 and self.coord("pp") == 0)

    def global_seq_len(self, local_seq_len: int) -> int:
        """The sequence length attention runs over: a cp rank holds 1/cp of each sequence."""
        return local_seq_len * self.size("cp")

    def replica_tokens(self, local_tokens: int) -> int:
        """The tokens of this rank's replica in a step, from the tokens this rank was fed (its cp slice)."""
        return local_tokens * self.size("cp")

    @property
    def stage_share(self) -> float:
        """This rank's pipeline stage's share of the model FLOPs (1/pp unless ``stage_shares`` says)."""
        return self.stage_shares[self.coord("pp")] if self.stage_shares else 1.0 / self.size("pp")

    @property
    def flop_share(self) -> float:
        """This rank's share of its replica's model FLOPs: 1/tp × 1/cp × its stage's share. Σ over a
        replica's ranks = 1."""
        return self.stage_share / (self.size("tp") * self.size("cp"))

    def rank_model_flops(self, local_tokens: int, flops_per_token: float) -> float:
        """Model FLOPs this rank charges itself for a step: its share of its replica's, with
        ``flops_per_token`` taken at :meth:`global_seq_len`."""
        return self.replica_tokens(local_tokens) * flops_per_token * self.flop_share

    def short(self) -> str:
        """The sizes in short, slowest dimension first: ``"dp_shard=2,tp=2"`` (the metrics' label)."""
        return ",".join(f"{d}={n}" for d, n in self.sizes.items())

    def record(self) -> dict[str, Any]:
        """What ``run_start`` records."""
        out: dict[str, Any] = {"sizes": dict(self.sizes), "coords": dict(self.coords), "source": self.source}
        if self.flattened:
            out["flattened"] = {k: list(v) for k, v in self.flattened.items()}
        if self.expert_parallel > 1:
            out["expert_parallel"] = self.expert_parallel
        if self.stage_shares:
            out["stage_shares"] = list(self.stage_shares)
        return out


def _check_int(value: Any, field: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(field, f"must be an integer >= {minimum}, got {value!r}", _FIX)
    return value


def validate(layout: ParallelLayout, world_size: int | None = None, num_layers: int | None = None) -> None:
    """Raise InputError naming the field when the layout cannot be this run's."""
    for dim, size in layout.sizes.items():
        if dim not in BASE_DIMS:
            if dim in FLATTENED:
                raise InputError(
                    f"mesh dimension {dim!r}",
                    f"is a flattened name ({' x '.join(FLATTENED[dim])}) used as a base dimension",
                    "pass the root mesh (its base dimensions) or parallel= with each size",
                )
            raise InputError(f"mesh dimension {dim!r}", "is not a known parallel dimension", _FIX)
        _check_int(size, f"parallel.{dim}", 1)
        c = _check_int(layout.coords.get(dim, 0), f"parallel.coords.{dim}", 0)
        if c >= size:
            raise InputError(
                f"parallel.coords.{dim}", f"is {c}, out of range for size {size}", "use 0..size-1"
            )
    extra = sorted(set(layout.coords) - set(layout.sizes))
    if extra:
        raise InputError(f"parallel.coords.{extra[0]}", "has no size", "give its size too, or leave it out")
    if "dp" in layout.sizes and ("dp_shard" in layout.sizes or "dp_replicate" in layout.sizes):
        raise InputError(
            "parallel.dp", "given with dp_shard/dp_replicate", "use dp alone, or dp_replicate and dp_shard"
        )
    if world_size is not None and layout.world_size != world_size:
        sizes = " x ".join(f"{k}={v}" for k, v in layout.sizes.items()) or "1"
        raise InputError(
            "parallel",
            f"sizes {sizes} multiply to {layout.world_size}, but the world size is {world_size}",
            "give every dimension's size (missing ones are 1)",
        )
    ep = _check_int(layout.expert_parallel, "parallel.ep", 1)
    carrier = math.prod(layout.size(d) for d in (*DATA_DIMS, "cp", "tp"))
    if carrier % ep:
        raise InputError("parallel.ep", f"{ep} does not divide dp x cp x tp = {carrier}", "check the ep size")
    if layout.stage_shares is not None:
        shares = layout.stage_shares
        if len(shares) != layout.size("pp") or any(s < 0 for s in shares) or abs(sum(shares) - 1) > 1e-9:
            raise InputError(
                "parallel.stage_shares",
                f"needs pp={layout.size('pp')} non-negative shares summing to 1, got {list(shares)}",
                "give each stage's share, or the layer count per stage",
            )


def stage_shares_from_layers(
    layers_per_stage: Sequence[int], layer_flops: Sequence[float], head_flops: float = 0.0
) -> tuple[float, ...]:
    """Each pipeline stage's share of the model FLOPs: its layers' FLOPs (``layer_flops[i]`` per token for
    layer i, in order) plus the LM head on the last stage."""
    if sum(layers_per_stage) != len(layer_flops) or any(n < 0 for n in layers_per_stage):
        raise InputError(
            "parallel.pp_layers",
            f"stages hold {sum(layers_per_stage)} layers, the model has {len(layer_flops)}",
            "list every stage's layer count",
        )
    out: list[float] = []
    i = 0
    for n in layers_per_stage:
        out.append(sum(layer_flops[i : i + n]))
        i += n
    out[-1] += head_flops
    total = sum(out) or 1.0
    return tuple(x / total for x in out)


def from_parallel(
    parallel: Mapping[str, Any], *, rank: int | None = None, world_size: int | None = None
) -> ParallelLayout:
    """A layout from a ``parallel=`` dict: sizes (``{"dp": 4, "tp": 2, "pp": 1, "cp": 1, "ep": 1}``), and
    this rank's coordinates as ``coords={...}``, or derived from ``rank`` in Megatron-LM's default order
    (tp fastest, then cp, dp, pp). ``stage_shares`` may be given. ``ep`` is the expert-parallel degree carved
    out of the data-parallel ranks."""
    if not isinstance(parallel, Mapping):
        raise InputError("parallel", f"must be a dict of sizes, got {type(parallel).__name__}", _FIX)
    raw = dict(parallel)
    coords = dict(raw.pop("coords", None) or {})
    shares = raw.pop("stage_shares", None)
    ep = raw.pop("ep", 1)
    sizes = {k: v for k, v in raw.items()}
    order = [d for d in MEGATRON_ORDER if d in sizes] + [d for d in sizes if d not in MEGATRON_ORDER]
    sizes = {d: sizes[d] for d in reversed(order)}  # slowest first, like a mesh
    for dim, size in sizes.items():
        _check_int(size, f"parallel.{dim}", 1)
    if not coords and rank is not None:
        r = _check_int(rank, "rank", 0)
        for dim in order:
            coords[dim] = r % sizes[dim]
            r //= sizes[dim]
    layout = ParallelLayout(
        sizes=sizes,
        coords=coords,
        expert_parallel=ep,
        stage_shares=tuple(shares) if shares is not None else None,
        source="parallel",
    )
    validate(layout, world_size)
    return layout


def from_mesh(mesh: Any, *, stage_shares: Sequence[float] | None = None) -> ParallelLayout:
    """A layout from a torch ``DeviceMesh`` (duck-typed): ``mesh_dim_names``, ``size(i)``,
    ``get_local_rank(i)``; flattened sub-meshes recorded from the root mesh's ``_flatten_mapping``. Pass the
    root (world) mesh, or a sub-mesh holding every dimension that splits the work."""
    names = getattr(mesh, "mesh_dim_names", None)
    if not names:
        raise InputError("mesh", "has no dimension names", _FIX)
    sizes = {str(n): int(mesh.size(i)) for i, n in enumerate(names)}
    coords = {str(n): int(mesh.get_local_rank(i)) for i, n in enumerate(names)}
    flattened: dict[str, tuple[str, ...]] = {}
    try:
        root = mesh._get_root_mesh()
        for name in getattr(root, "_flatten_mapping", {}) or {}:
            flattened[str(name)] = FLATTENED.get(str(name), ())
    except Exception:  # a private API: only what is recorded is lost
        pass
    layout = ParallelLayout(
        sizes=sizes,
        coords=coords,
        flattened=flattened,
        stage_shares=tuple(stage_shares) if stage_shares is not None else None,
        source="mesh",
    )
    validate(layout)
    return layout
