"""torchrun worker for tests/test_attribution_dist.py: two CPU ranks (gloo, DDP), rank 1 a known straggler.

Usage: torchrun --standalone --nproc_per_node 2 tests/attribution_dist_worker.py OUT_DIR DELAY_SECONDS
Rank 1 sleeps DELAY_SECONDS after each forward, before backward; rank 0 then waits that long in DDP's gradient
all-reduce. Each rank writes its run log and its final snapshot's MFU-loss figures to OUT_DIR.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from monitor.live.monitor import MFUMonitor

STEPS = 30


def main() -> None:
    out, delay = Path(sys.argv[1]), float(sys.argv[2])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = DistributedDataParallel(nn.Sequential(nn.Embedding(64, 32), nn.Linear(32, 64)))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with MFUMonitor(
        model,
        opt,
        flops_per_token=1000.0,
        peak_flops=1e9,
        log_every=5,
        warmup_steps=5,
        window_steps=20,
        run="straggler-test",
        handle_sigterm=False,
        log_path=out / f"rank{rank}.jsonl",
    ) as mon:
        for _ in range(STEPS):
            logits = model(torch.randint(0, 64, (4, 16)))
            if rank == 1:
                time.sleep(delay)  # the straggler: slow work before the gradient synchronisation
            logits.float().pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
        snap = mon.snapshot()
    result = {
        "rank": rank,
        "mfu_loss": snap.mfu_loss.as_dict() if snap.mfu_loss else None,
        "world": dataclasses.asdict(snap.world) if snap.world else None,
        "window_seconds": snap.window_seconds,
        "window_steps": snap.window_steps,
        "pre_backward": [s.pre_backward_seconds for s in snap.recent],
    }
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    # Leave without tearing gloo down: on this torch (2.13, CPU) about one 2-rank DDP run in eight aborts in
    # teardown ("terminate called without an active exception"), with or without the monitor. Everything
    # is written and closed by now.
    os._exit(0)


if __name__ == "__main__":
    main()
