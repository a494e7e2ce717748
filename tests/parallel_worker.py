"""torchrun worker for tests/test_parallel_dist.py: one tiny transformer trained on the same global batches by
one rank, by FSDP2 (dp_shard=2) x tensor parallel (tp=2) on four ranks, and by a 2-stage pipeline.

Usage: torchrun --standalone --nproc_per_node N tests/parallel_worker.py MODE OUT_DIR
MODE: single (1 rank), fsdp_tp (4 ranks), pp (2 ranks). Each rank writes OUT_DIR/MODE-rank<k>.json with, per
step, the tokens its forward hook saw (shapes only, as the monitor counts them), the matmul FLOPs it ran
(FlopCounterMode; not under the pipeline schedule, whose autograd.grad backward FlopCounterMode's module hooks
break), and its parallel layout's token weight and FLOP share. Under tensor parallelism FlopCounterMode counts
DTensor operations at their global shapes: each tp rank reports its whole replica's FLOPs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from monitor.live.tokens import tokens_in
from monitor.parallel.layout import ParallelLayout, from_mesh, from_parallel

VOCAB, HIDDEN, HEADS, FFN, LAYERS = 64, 32, 4, 48, 4
ROWS, SEQ, STEPS = 4, 16, 3  # the global batch: 4 rows of 16 tokens, 3 steps
MONITOR_EPOCHS = 4  # the monitored FSDP2 x tp run trains the 3 batches 4 times over


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(HIDDEN, HIDDEN, bias=False) for _ in range(4))
        self.up, self.down = nn.Linear(HIDDEN, FFN, bias=False), nn.Linear(FFN, HIDDEN, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        d = HIDDEN // HEADS
        q, k, v = (t(x).view(b, s, -1, d).transpose(1, 2) for t in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, s, -1)
        x = x + self.o(a)
        return x + self.down(F.gelu(self.up(x)))


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        self.layers = nn.ModuleDict({str(i): Block() for i in range(LAYERS)})
        self.head = nn.Linear(HIDDEN, VOCAB, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Token ids on the first pipeline stage (or without a pipeline), hidden states on later stages."""
        if self.embed is not None:
            x = self.embed(x)
        for block in self.layers.values():
            x = block(x)
        return self.head(x) if self.head is not None else x


def batches() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randint(0, VOCAB, (ROWS, SEQ + 1), generator=gen) for _ in range(STEPS)]


class Seen:
    """What a forward pre-hook sees: the tokens of each call, from shapes (as the monitor counts them)."""

    def __init__(self, module: nn.Module) -> None:
        self.tokens = 0
        module.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        counted = tokens_in(args, kwargs)
        if counted is not None and torch.is_grad_enabled():
            self.tokens += counted[0]


def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, VOCAB).float(), target.reshape(-1))


def run_single() -> tuple[ParallelLayout, list[dict[str, float]]]:
    torch.manual_seed(0)
    model = Model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    seen = Seen(model)
    out = []
    for batch in batches():
        ids, target = batch[:, :-1], batch[:, 1:]
        with FlopCounterMode(display=False) as fc:
            loss_fn(model(ids), target).backward()
        opt.step()
        opt.zero_grad()
        out.append({"tokens": seen.tokens, "flops": float(fc.get_total_flops())})
        seen.tokens = 0
    return from_parallel({"dp": 1}, rank=0, world_size=1), out


def run_fsdp_tp() -> tuple[ParallelLayout, list[dict[str, float]]]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp_shard", "tp"))
    layout = from_mesh(mesh)
    torch.manual_seed(0)
    model = Model()
    plan = {"q": ColwiseParallel(), "k": ColwiseParallel(), "v": ColwiseParallel(), "o": RowwiseParallel()}
    plan |= {"up": ColwiseParallel(), "down": RowwiseParallel()}
    for block in model.layers.values():
        parallelize_module(block, mesh["tp"], plan)
        fully_shard(block, mesh=mesh["dp_shard"])
    fully_shard(model, mesh=mesh["dp_shard"])
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    seen = Seen(model)
    replica = layout.coord("dp_shard")
    rows = ROWS // layout.replicas
    out = []
    for batch in batches():
        mine = batch[replica * rows : (replica + 1) * rows]  # each dp replica its own rows; tp peers the same
        ids, target = mine[:, :-1], mine[:, 1:]
        with FlopCounterMode(display=False) as fc:
            loss_fn(model(ids), target).backward()
        opt.step()
        opt.zero_grad()
        out.append({"tokens": seen.tokens, "flops": float(fc.get_total_flops())})
        seen.tokens = 0
    return layout, out


def run_monitor(out_dir: Path) -> tuple[ParallelLayout, list[dict[str, float]]]:
    """FSDP2 x tp under MFUMonitor(mesh=...): what the run log, the snapshot and the world figures say,
    against the wall clock. FLOPs per token given: the one-rank FlopCounterMode truth."""
    import time

    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    from monitor.live.monitor import MFUMonitor

    torch.manual_seed(0)
    plain = Model()
    ids = torch.randint(0, VOCAB, (1, SEQ))
    with FlopCounterMode(display=False) as fc:
        loss_fn(plain(ids), ids).backward()
    fpt = float(fc.get_total_flops()) / SEQ
    mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp_shard", "tp"))
    layout = from_mesh(mesh)
    torch.manual_seed(0)
    model = Model()
    plan = {"q": ColwiseParallel(), "k": ColwiseParallel(), "v": ColwiseParallel(), "o": RowwiseParallel()}
    plan |= {"up": ColwiseParallel(), "down": RowwiseParallel()}
    for block in model.layers.values():
        parallelize_module(block, mesh["tp"], plan)
        fully_shard(block, mesh=mesh["dp_shard"])
    fully_shard(model, mesh=mesh["dp_shard"])
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    rank = dist.get_rank()
    peak = 1e9
    # The global batches MONITOR_EPOCHS times over; the first step (FSDP's lazy init, the first all-gathers)
    # is a warm-up step for the monitor and outside the wall clock, so both time the same steps.
    steps = batches() * MONITOR_EPOCHS
    mon = MFUMonitor(
        model, opt, mesh=mesh, flops_per_token=fpt, peak_flops=peak, warmup_steps=1, log_every=len(steps),
        window_steps=100, window_seconds=1e6, handle_sigterm=False, run="tp",
        log_path=str(out_dir / f"monitor-rank{rank}.jsonl"),
    )  # fmt: skip
    replica = layout.coord("dp_shard")
    rows = ROWS // layout.replicas
    dist.barrier()
    t0 = 0.0
    for i, batch in enumerate(steps):
        mine = batch[replica * rows : (replica + 1) * rows]
        loss_fn(model(mine[:, :-1]), mine[:, 1:]).backward()
        opt.step()
        opt.zero_grad()
        if i == 0:
            t0 = time.perf_counter()  # the end of the warm-up step
    wall = time.perf_counter() - t0
    snap = mon.snapshot()
    mon.close()
    world = snap.world
    out = [{
        "tokens": snap.tokens_total, "flops": snap.model_flops_total, "wall": wall, "fpt": fpt, "peak": peak,
        "steps_run": len(steps),
        "world_mfu": world.mfu if world is not None and world.mfu is not None else float("nan"),
        "world_tokens": world.tokens_total if world is not None else -1,
        "mfu": snap.mfu, "loss": snap.mfu_loss.as_dict() if snap.mfu_loss is not None else None,
    }]  # fmt: skip
    return layout, out


def run_pp(out_dir: Path) -> tuple[ParallelLayout, list[dict[str, float]]]:
    from torch.distributed.pipelining import PipelineStage, ScheduleGPipe

    from monitor.live.monitor import MFUMonitor

    rank = dist.get_rank()
    layers_per_stage = [LAYERS // 2, LAYERS - LAYERS // 2]
    torch.manual_seed(0)
    model = Model()
    if rank == 0:
        for i in range(layers_per_stage[0], LAYERS):
            del model.layers[str(i)]
        model.head = None  # type: ignore[assignment]
    else:
        for i in range(layers_per_stage[0]):
            del model.layers[str(i)]
        model.embed = None  # type: ignore[assignment]
    # Stage shares from the layer FLOPs: every block costs the same; the LM head is on the last stage.
    block = 2 * (4 * HIDDEN * HIDDEN + 2 * HIDDEN * FFN) + 2 * 2 * HIDDEN * SEQ  # fwd FLOPs/token (full S×S)
    head = 2 * HIDDEN * VOCAB
    from monitor.parallel.layout import stage_shares_from_layers

    shares = stage_shares_from_layers(layers_per_stage, [float(block)] * LAYERS, float(head))
    layout = from_parallel({"pp": 2, "stage_shares": list(shares)}, rank=rank, world_size=2)
    stage = PipelineStage(model, rank, 2, torch.device("cpu"))
    schedule = ScheduleGPipe(stage, n_microbatches=2, loss_fn=loss_fn)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    seen = Seen(model)
    log = out_dir / f"pp-monitor-rank{rank}.jsonl"
    mon = MFUMonitor(
        model, opt, parallel={"pp": 2, "stage_shares": list(shares)}, flops_per_token=1.0, peak_flops=1e12,
        warmup_steps=0, log_path=log, handle_sigterm=False,
    )  # fmt: skip
    out = []
    for batch in batches():
        ids, target = batch[:, :-1], batch[:, 1:]
        # No FlopCounterMode here: its module backward hooks clash with the schedule's autograd.grad.
        if rank == 0:
            schedule.step(ids)
        else:
            schedule.step(target=target)
        opt.step()
        opt.zero_grad()
        out.append({"tokens": seen.tokens, "flops": float("nan")})
        seen.tokens = 0
    mon.close()
    return layout, out


def main() -> None:
    mode, out_dir = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    if mode == "monitor":
        layout, steps = run_monitor(out_dir)
    else:
        layout, steps = {"single": run_single, "fsdp_tp": run_fsdp_tp, "pp": lambda: run_pp(out_dir)}[mode]()
    record = {
        "rank": rank,
        "world_size": dist.get_world_size(),
        "layout": layout.record(),
        "token_weight": layout.token_weight,
        "flop_share": layout.flop_share,
        "replica_tokens": [layout.replica_tokens(int(s["tokens"])) for s in steps],
        "steps": steps,
    }
    monitor_log = out_dir / f"{mode}-monitor-rank{rank}.jsonl"
    if monitor_log.exists():
        lines = [json.loads(line) for line in monitor_log.read_text().splitlines()]
        record["monitor_steps"] = [r for r in lines if r["event"] == "step"]
    (out_dir / f"{mode}-rank{rank}.json").write_text(json.dumps(record))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
