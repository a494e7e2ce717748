"""Parallel layouts: every rank of a run together counts exactly the tokens fed and the model FLOPs of those
tokens; layouts from a real DeviceMesh (torch's in-process fake process group) and from ``parallel=`` dicts;
clear errors; DTensor parameters over dimensions the monitor was not told about."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import pytest
import torch
import torch.distributed as dist

from monitor.errors import InputError
from monitor.parallel.dtensor import mesh_dims_of_parameters, unknown_mesh_dims
from monitor.parallel.layout import (
    ParallelLayout,
    from_mesh,
    from_parallel,
    stage_shares_from_layers,
    validate,
)


def _all_ranks(sizes: dict[str, int], **extra: object) -> list[ParallelLayout]:
    world = math.prod(sizes.values())
    return [from_parallel({**sizes, **extra}, rank=r, world_size=world) for r in range(world)]


@pytest.mark.parametrize(
    "sizes",
    [
        {"dp": 4},
        {"dp": 2, "tp": 2},
        {"dp": 2, "cp": 2, "tp": 2, "pp": 2},
        {"tp": 3, "pp": 2},
        {"dp": 1, "cp": 4},
    ],
)
def test_every_rank_together_counts_the_tokens_fed_and_their_flops(sizes: dict[str, int]) -> None:
    batch_rows, seq = 3, 4096  # each replica's batch: 3 rows of 4096 tokens
    per_token = 7.0e9  # FLOPs per token at the global length (any number: the shares must sum to 1)
    ranks = _all_ranks(sizes)
    assert len({tuple(sorted(r.coords.items())) for r in ranks}) == len(ranks)  # every coordinate once
    replicas = ranks[0].replicas
    assert replicas == sizes.get("dp", 1)
    assert sorted({r.replica_index for r in ranks}) == list(range(replicas))
    tokens = flops = 0.0
    for r in ranks:
        cp = r.size("cp")
        local_seq = seq // cp  # a cp rank holds its slice of every sequence
        local_tokens = batch_rows * local_seq
        assert r.global_seq_len(local_seq) == seq
        tokens += local_tokens * r.token_weight
        flops += r.rank_model_flops(local_tokens, per_token)
    assert tokens == replicas * batch_rows * seq
    assert flops == pytest.approx(replicas * batch_rows * seq * per_token, rel=1e-12)


def test_pipeline_stages_charge_their_layers() -> None:
    layer_flops = [10.0, 10.0, 10.0, 10.0, 10.0]
    shares = stage_shares_from_layers([3, 2], layer_flops, head_flops=10.0)
    assert shares == pytest.approx((0.5, 0.5))
    ranks = _all_ranks({"dp": 2, "pp": 2}, stage_shares=shares)
    assert [r.token_weight for r in ranks] == [1, 1, 0, 0]  # stage 0 of each replica counts
    assert sum(r.flop_share for r in ranks) == pytest.approx(2.0)  # one per replica
    with pytest.raises(InputError, match="pp_layers"):
        stage_shares_from_layers([3, 3], layer_flops)
    with pytest.raises(InputError, match="stage_shares"):
        from_parallel({"pp": 2, "stage_shares": [0.7, 0.7]}, rank=0)


def test_megatron_rank_order_tp_fastest() -> None:
    layout = from_parallel({"tp": 2, "dp": 2, "pp": 2}, rank=5)
    assert layout.coords == {"tp": 1, "dp": 0, "pp": 1}
    assert layout.token_weight == 0 and layout.world_size == 8
    explicit = from_parallel({"tp": 2, "dp": 4, "coords": {"tp": 0, "dp": 3}}, world_size=8)
    assert explicit.replica_index == 3 and explicit.token_weight == 1
    record = from_parallel({"dp": 4, "ep": 2}, rank=1).record()
    assert record["sizes"] == {"dp": 4} and record["expert_parallel"] == 2


@pytest.mark.parametrize(
    ("parallel", "world", "field"),
    [
        ({"dp": 2, "tp": 2}, 8, "parallel"),
        ({"dp": 0}, None, "parallel.dp"),
        ({"tp": 2, "coords": {"tp": 2}}, None, "parallel.coords.tp"),
        ({"tp": 2, "coords": {"cp": 0}}, None, "parallel.coords.cp"),
        ({"dp": 2, "dp_shard": 2}, None, "parallel.dp"),
        ({"model": 2}, None, "'model'"),
        ({"dp_shard_cp": 4}, None, "'dp_shard_cp'"),
        ({"dp": 3, "ep": 2}, None, "parallel.ep"),
        ("tp=2", None, "parallel"),
    ],
)
def test_bad_layouts_name_the_field(parallel: object, world: int | None, field: str) -> None:
    with pytest.raises(InputError, match=field):
        from_parallel(parallel, rank=0, world_size=world)  # type: ignore[arg-type]


@pytest.fixture
def fake_world() -> Iterator[None]:
    """Eight ranks in one process (torch's fake process group): real DeviceMesh and DTensor objects."""
    from torch.testing._internal.distributed.fake_pg import FakeStore

    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    dist.init_process_group("fake", store=FakeStore(), rank=5, world_size=8)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_layout_from_a_torchtitan_style_mesh(fake_world: None) -> None:
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (2, 2, 2), mesh_dim_names=("dp_shard", "cp", "tp"))
    mesh["dp_shard", "cp"]._flatten("dp_shard_cp")
    layout = from_mesh(mesh)
    assert layout.sizes == {"dp_shard": 2, "cp": 2, "tp": 2}
    assert layout.coords == {"dp_shard": 1, "cp": 0, "tp": 1}  # rank 5 = 1·4 + 0·2 + 1
    assert layout.flattened == {"dp_shard_cp": ("dp_shard", "cp")}
    assert layout.replicas == 2 and layout.token_weight == 0 and layout.flop_share == 0.25
    validate(layout, world_size=8)
    flat = init_device_mesh("cpu", (4, 2), mesh_dim_names=("dp_shard_cp", "tp"))
    with pytest.raises(InputError, match="flattened"):
        from_mesh(flat)


def test_dtensor_parameters_over_an_unknown_dimension_warn(fake_world: None) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (4, 2), mesh_dim_names=("dp_shard", "tp"))
    tp_weight = torch.nn.Parameter(distribute_tensor(torch.randn(4, 6), mesh["tp"], [Shard(0)]))
    fsdp_weight = torch.nn.Parameter(distribute_tensor(torch.randn(8, 6), mesh["dp_shard"], [Shard(0)]))
    replicated = torch.nn.Parameter(distribute_tensor(torch.randn(2), mesh["tp"], [Replicate()]))
    params = [
        ("layers.0.q.weight", tp_weight),
        ("layers.0.up.weight", fsdp_weight),
        ("norm.weight", replicated),
    ]
    assert mesh_dims_of_parameters(params) == {"tp": "layers.0.q.weight", "dp_shard": "layers.0.up.weight"}
    warning = unknown_mesh_dims(params, None)
    assert warning is not None and "'tp'" in warning and "mesh=" in warning
    assert unknown_mesh_dims(params[1:], None) is None  # FSDP alone changes no rank's FLOPs per token
    dp_only = from_parallel({"dp_shard": 8}, rank=5)
    assert unknown_mesh_dims(params, dp_only) is not None
    assert unknown_mesh_dims(params, from_mesh(mesh)) is None
    plain = [(n, torch.nn.Parameter(torch.ones(2))) for n in ("a", "b")]
    assert unknown_mesh_dims(itertools.chain(plain), None) is None
