"""torchrun worker for tests/test_prometheus_e2e.py: a tiny real model, DDP (gloo, CPU), under MFUMonitor.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/dist_prom_worker.py \
        --run-id NAME --base-port P --file-sd-dir DIR --log-dir DIR --stop-file PATH

Steps are paced to a fixed period so that the run's throughput, and so its MFU, is known in advance:
model FLOP/s per rank = flops_per_token x tokens_per_step / period. The peak handed to the monitor is inflated
to hold MFU at --target-mfu (below TrainingMFULow's 25%). Rank 0 writes these figures to LOG_DIR/plan.json.
Every rank serves /metrics on base port + LOCAL_RANK and writes a file_sd target into --file-sd-dir.
With --fake-gpu-watts W, each rank's monitor reads a fake NVML device (the one thing tests may fake, behind
monitor.hardware.nvml.GpuBackend) drawing a constant W watts, so that the GPU dashboard's queries have data
and energy per token is known: world_size x W / tokens per second.
The run stops, on every rank at the same step, once --stop-file exists (or after --max-seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from monitor.hardware.nvml import DeviceInfo, Telemetry, TensorActivity

VOCAB, DIM, SEQ, BATCH = 64, 32, 16, 4


class ConstantPowerGpu:
    """A GpuBackend whose devices draw constant power: each energy counter grows ``watts`` joules a second."""

    available = True
    reason = ""

    def __init__(self, watts: float) -> None:
        self.watts = watts
        self.start = time.time()

    def device_count(self) -> int:
        return 8

    def device_info(self, index: int) -> DeviceInfo:
        return DeviceInfo(index=index, name="Fake GPU (constant power)")

    def telemetry(self, index: int) -> Telemetry:
        return Telemetry(
            utilization_ratio=0.5,
            memory_used_bytes=2**30,
            power_watts=self.watts,
            energy_joules=self.watts * (time.time() - self.start),
            sm_clock_hz=1.5e9,
            max_sm_clock_hz=2.0e9,
            temperature_celsius=60.0,
        )

    def tensor_activity(self, index: int) -> TensorActivity:
        return TensorActivity(any_ratio=0.5, hmma_ratio=0.5, imma_ratio=0.0, dfma_ratio=0.0)


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DIM)
        self.mlp = nn.Sequential(nn.Linear(DIM, 4 * DIM), nn.GELU(), nn.Linear(4 * DIM, DIM))
        self.head = nn.Linear(DIM, VOCAB)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(input_ids)
        return self.head(h + self.mlp(h))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--base-port", type=int, required=True)
    parser.add_argument("--file-sd-dir", required=True)
    parser.add_argument("--log-dir", required=True)
    parser.add_argument("--stop-file", required=True)
    parser.add_argument("--period", type=float, default=0.1, help="seconds per step")
    parser.add_argument("--target-mfu", type=float, default=0.1)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--fake-gpu-watts", type=float, default=0.0, help="0: no GPU telemetry")
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(0)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))

    model = TinyLM()
    # Training FLOPs per token: 6 N (Kaplan et al. 2020, eq. 2.1: forward 2N + backward 4N), N = all params.
    flops_per_token = 6.0 * sum(p.numel() for p in model.parameters())
    tokens_per_step = BATCH * SEQ
    # Peak per device chosen so that model FLOP/s / peak = target MFU at the paced step rate.
    peak = flops_per_token * tokens_per_step / args.period / args.target_mfu
    if rank == 0:
        plan = {
            "flops_per_token": flops_per_token,
            "tokens_per_step": tokens_per_step,
            "period": args.period,
            "peak_flops": peak,
            "target_mfu": args.target_mfu,
            "world_size": dist.get_world_size(),
            "gpu_watts": args.fake_gpu_watts,
        }
        Path(args.log_dir, "plan.json").write_text(json.dumps(plan), encoding="utf-8")

    ddp = DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()

    from monitor import MFUMonitor

    gpu = {}
    if args.fake_gpu_watts > 0:
        gpu = {"gpu_backend": ConstantPowerGpu(args.fake_gpu_watts), "gpu_index": local_rank}
    stop = torch.zeros(1)
    with MFUMonitor(
        ddp,
        optimizer=opt,
        run=args.run_id,
        port=args.base_port,
        file_sd_dir=args.file_sd_dir,
        log_path=os.path.join(args.log_dir, f"rank{rank}.jsonl"),
        peak_flops=peak,
        flops_per_token=flops_per_token,
        seq_len=SEQ,
        **gpu,
    ):
        start = next_step = time.perf_counter()
        while True:
            ids = torch.randint(VOCAB, (BATCH, SEQ))
            logits = ddp(ids)
            loss = loss_fn(logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            # All ranks stop at the same step (a DDP collective must not be left waiting).
            stop[0] = float(os.path.exists(args.stop_file) or time.perf_counter() - start > args.max_seconds)
            dist.all_reduce(stop, op=dist.ReduceOp.MAX)
            if stop[0] > 0:
                break
            next_step = max(next_step + args.period, time.perf_counter())
            time.sleep(max(0.0, next_step - time.perf_counter()))
    dist.barrier()
    # Leave without tearing gloo down: on this torch (2.13, CPU) about one 2-rank DDP run in eight aborts in
    # teardown ("terminate called without an active exception"), with or without the monitor. The monitor
    # closed (run log written, file_sd target removed) when its with-block ended.
    os._exit(0)


if __name__ == "__main__":
    main()
