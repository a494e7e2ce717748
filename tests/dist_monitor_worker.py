"""torchrun worker for tests/test_live_distributed.py: two CPU ranks (gloo), each serving its own /metrics.

Usage: torchrun --standalone --nproc_per_node 2 tests/dist_monitor_worker.py BASE_PORT OUT_DIR
Each rank trains a tiny model with a different batch size, then scrapes both ranks' /metrics and writes
what it saw to OUT_DIR/rank<k>.json.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import urllib.request
from pathlib import Path

import torch
import torch.distributed as dist
from prometheus_client.parser import text_string_to_metric_families
from torch import nn

from monitor.live.monitor import MFUMonitor


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=20).read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "le" not in sample.labels and sample.name != "training_run_info":
                values[sample.name] = sample.value
    return values


def main() -> None:
    base_port, out = int(sys.argv[1]), Path(sys.argv[2])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(rank)
    model = nn.Sequential(nn.Embedding(30, 8), nn.Linear(8, 30))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    batch = 2 + rank  # ranks process different token counts
    with MFUMonitor(
        model,
        opt,
        flops_per_token=1000.0,
        peak_flops=1e12 * (1 + rank),  # and have different peaks
        port=base_port,
        log_every=5,
        warmup_steps=1,
        run="dist-test",
        handle_sigterm=False,
        log_path=out / f"run-rank{rank}.jsonl",
    ) as mon:
        for _ in range(20):
            model(torch.randint(0, 30, (batch, 8))).float().mean().backward()
            opt.step()
            opt.zero_grad()
        snap = mon.snapshot()
        dist.barrier()
        seen = {str(r): scrape(base_port + r) for r in range(world)}
        dist.barrier()
    result = {
        "rank": rank,
        "port": mon.port,
        "tokens_total": snap.tokens_total,
        "model_flops_per_second": snap.model_flops_per_second,
        "world": dataclasses.asdict(snap.world) if snap.world else None,
        "scraped": seen,
    }
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
