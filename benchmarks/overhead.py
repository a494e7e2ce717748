"""Per-step overhead of MFUMonitor against a bare loop and Lightning's Throughput, side by side in one run.

    python benchmarks/overhead.py            # about 1-2 minutes on a 2-core machine
    python benchmarks/overhead.py --quick    # a smoke run (seconds)

Method: every variant owns its own model and optimizer; each round runs every
variant for ``--free-steps`` (or ``--real-steps``) steps in a shuffled order; a variant's figure in a round is
its mean step time; the overhead is the median over rounds of (variant - bare) in the same round, so drift and
one slow round cancel.
Two steps: a near-free one (a one-parameter model whose forward returns the parameter) that makes a few µs
visible, and a realistic ~0.4 ms CPU step (a small MLP) to express the cost as a share of a real step.

Variants:
- bare: forward, backward, optimizer step, zero_grad;
- floor: the same with a forward pre-hook that counts tokens and an optimizer post-hook that takes a
  timestamp — what any hook-based monitor costs at least;
- floor without hook dispatch: the same counting done by a wrapper put in place of ``model.forward`` (no
  module hook, so ``Module.__call__`` keeps its fast path) and the same optimizer post-hook — how much of
  the floor is PyTorch's module-hook dispatch;
- mfu-monitor: ``MFUMonitor(model, opt, flops_per_token=..., peak_flops=...)`` — its hooks count tokens and
  stamp the step; rates at its log ticks;
- mfu-monitor + run log: the same, writing every step's record to a JSONL file;
- lightning update+compute: ``Throughput.update(...)`` and ``.compute()`` every step (with the
  ``time.perf_counter()`` call the user makes for it);
- lightning update (compute every 10): Lightning's documented usage.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

Step = Callable[[], None]


class OneParam(nn.Module):
    """The near-free step: one parameter, returned by forward (the batch is only looked at by the hooks)."""

    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(()))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.p


class SmallMLP(nn.Module):
    """A ~0.4 ms CPU training step (one thread): embedding, two linear layers, sum."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(64, width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(self.emb(input_ids)))).sum()


def make_variant(name: str, kind: str, width: int, log_dir: str) -> tuple[Step, Callable[[], None]]:
    """A step function for one variant and a finaliser (closes the monitor)."""
    model: nn.Module = OneParam() if kind == "free" else SmallMLP(width)
    opt = torch.optim.SGD(model.parameters(), lr=1e-6)
    ids = torch.randint(0, 64, (4, 16))
    n_tokens = ids.numel()

    def bare() -> None:
        model(input_ids=ids).backward()
        opt.step()
        opt.zero_grad()

    if name == "bare":
        return bare, lambda: None
    if name.startswith("floor"):
        # The least any hook-based monitor can do: a forward pre-hook that counts tokens and an optimizer
        # post-hook that takes a timestamp.
        counted = [0]
        stamps: list[float] = []

        def pre(module: nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
            counted[0] += kwargs["input_ids"].numel()

        def post(optimizer: Any, args: Any, kwargs: Any) -> None:
            stamps.append(time.perf_counter())
            if len(stamps) > 10_000:
                stamps.clear()

        if "wrapper" in name:
            forward = model.forward

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                counted[0] += kwargs["input_ids"].numel()
                return forward(*args, **kwargs)

            model.forward = wrapper
        else:
            model.register_forward_pre_hook(pre, with_kwargs=True)
        opt.register_step_post_hook(post)
        return bare, lambda: None
    if name.startswith("mfu-monitor"):
        from monitor.live.monitor import MFUMonitor

        kw: dict[str, Any] = {"flops_per_token": 1e6, "peak_flops": 1e15, "handle_sigterm": False}
        if "run log" in name:
            kw["log_path"] = os.path.join(log_dir, f"{kind}.jsonl")
        mon = MFUMonitor(model, opt, **kw)

        def close() -> None:
            mon.close()

        return bare, close
    from lightning.fabric.utilities.throughput import Throughput

    throughput = Throughput(available_flops=1e12, window_size=50)
    t0 = time.perf_counter()
    state = {"i": 0}
    every = 1 if "update+compute" in name else 10

    def lightning() -> None:
        model(input_ids=ids).backward()
        opt.step()
        opt.zero_grad()
        i = state["i"] = state["i"] + 1
        throughput.update(time=time.perf_counter() - t0, batches=i, samples=i * 4, lengths=i * n_tokens)
        if i % every == 0:
            throughput.compute()

    return lightning, lambda: None


VARIANTS = [
    "bare",
    "floor: bare hooks (count + timestamp)",
    "floor without hook dispatch (forward wrapper)",
    "mfu-monitor",
    "mfu-monitor + run log",
    "lightning update+compute",
    "lightning update (compute every 10)",
]


def run(kind: str, rounds: int, steps: int, width: int, seed: int) -> dict[str, list[float]]:
    """Per-round mean step seconds for each variant (interleaved, shuffled order)."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as log_dir:
        made = {name: make_variant(name, kind, width, log_dir) for name in VARIANTS}
        for step, _ in made.values():  # warm-up: imports, allocator, first calls
            for _ in range(max(50, steps // 10)):
                step()
        per_round: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for _ in range(rounds):
            order = VARIANTS[:]
            rng.shuffle(order)
            for name in order:
                step = made[name][0]
                t0 = time.perf_counter()
                for _ in range(steps):
                    step()
                per_round[name].append((time.perf_counter() - t0) / steps)
        for _, close in made.values():
            close()
    return per_round


def summarise(per_round: dict[str, list[float]]) -> list[tuple[str, float, float, float, float]]:
    """(variant, median step µs, median paired overhead µs, its spread (IQR/2) µs, overhead share)."""
    base = per_round["bare"]
    rows = []
    for name in VARIANTS:
        times = per_round[name]
        diffs = [t - b for t, b in zip(times, base, strict=True)]
        q = statistics.quantiles(diffs, n=4) if len(diffs) >= 4 else [min(diffs), 0.0, max(diffs)]
        med_step = statistics.median(times)
        over = statistics.median(diffs)
        share = over / statistics.median(base)
        rows.append((name, med_step * 1e6, over * 1e6, (q[2] - q[0]) / 2 * 1e6, share))
    return rows


def table(title: str, rows: list[tuple[str, float, float, float, float]]) -> str:
    lines = [
        f"**{title}**",
        "",
        "| variant | step (median) | overhead vs bare (median of paired diffs) | ± (IQR/2) | share of step |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, step, over, spread, share in rows:
        lines.append(f"| {name} | {step:.1f} µs | {over:+.2f} µs | {spread:.2f} µs | {share:+.2%} |")
    return "\n".join(lines)


def calibrate_width(target_s: float = 0.4e-3) -> int:
    """The MLP width whose bare step takes about ``target_s`` here."""
    best, best_gap = 64, float("inf")
    for width in (96, 128, 160, 192, 224, 256, 320):
        step, _ = make_variant("bare", "real", width, "")
        for _ in range(30):
            step()
        t0 = time.perf_counter()
        for _ in range(200):
            step()
        dt = (time.perf_counter() - t0) / 200
        if abs(dt - target_s) < best_gap:
            best, best_gap = width, abs(dt - target_s)
    return best


COLD_VARIANTS = ["bare", "floor: bare hooks (count + timestamp)", "mfu-monitor", "lightning update+compute"]


def cold(sizes_mb: tuple[float, ...], steps: int) -> list[tuple[float, dict[str, float]]]:
    """The near-free step's overhead when the loop touches ``mb`` MB of memory between steps.

    A real step streams through its weights, activations and gradients, which evicts the caches that the
    hooks' Python code and data were in; this isolates that effect. Each step is timed alone (the memory
    touching is outside the timed span), the variants take turns step by step, and a variant's figure is its
    median step time minus bare's.
    """
    out = []
    with tempfile.TemporaryDirectory() as log_dir:
        made = {name: make_variant(name, "free", 0, log_dir) for name in COLD_VARIANTS}
        for step, _ in made.values():
            for _ in range(200):
                step()
        for mb in sizes_mb:
            buf = torch.ones(max(1, int(mb * 2**20) // 4))
            times: dict[str, list[float]] = {name: [] for name in COLD_VARIANTS}
            n = steps if mb <= 1 else max(100, steps // int(mb))
            for _ in range(n):
                for name in COLD_VARIANTS:
                    if mb:
                        buf.add_(1.0)  # touch every cache line of the buffer
                    step = made[name][0]
                    t0 = time.perf_counter()
                    step()
                    times[name].append(time.perf_counter() - t0)
            base = statistics.median(times["bare"])
            out.append((mb, {name: (statistics.median(t) - base) * 1e6 for name, t in times.items()}))
        for _, close in made.values():
            close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--free-steps", type=int, default=2000, help="steps/variant/round (near-free)")
    parser.add_argument("--real-steps", type=int, default=300, help="steps/variant/round (~0.4 ms)")
    parser.add_argument("--cold-steps", type=int, default=3000, help="steps/variant (cold-cache table)")
    parser.add_argument("--quick", action="store_true", help="3 rounds of few steps: a smoke run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.free_steps, args.real_steps, args.cold_steps = 3, 200, 30, 200
    torch.set_num_threads(1)
    torch.manual_seed(0)
    started = time.time()
    width = calibrate_width()
    free = summarise(run("free", args.rounds, args.free_steps, width, args.seed))
    real = summarise(run("real", args.rounds, args.real_steps, width, args.seed + 1))
    print(f"# per-step overhead ({args.rounds} interleaved rounds; torch {torch.__version__}, 1 thread, "
          f"{platform.machine()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; "
          f"{time.time() - started:.0f} s)\n")  # fmt: skip
    print(table(f"near-free step ({args.free_steps} steps per variant per round)", free))
    print()
    print(table(f"~0.4 ms step (MLP width {width}, {args.real_steps} steps per variant per round)", real))
    print()
    print(f"**near-free step after touching memory between steps (median of {args.cold_steps} steps each, "
          "variants taking turns step by step; overhead = median step - bare's)**\n")  # fmt: skip
    print("| memory touched between steps | " + " | ".join(COLD_VARIANTS[1:]) + " |")
    print("|---:|" + "---:|" * (len(COLD_VARIANTS) - 1))
    for mb, over in cold((0, 0.25, 1, 4, 16), args.cold_steps):
        print(f"| {mb:g} MB | " + " | ".join(f"{over[name]:+.2f} µs" for name in COLD_VARIANTS[1:]) + " |")
    mon = {r[0]: r for r in free}
    light = mon["lightning update+compute"][2]
    ours = mon["mfu-monitor"][2]
    floor = mon["floor: bare hooks (count + timestamp)"][2]
    wrapped = mon["floor without hook dispatch (forward wrapper)"][2]
    real_share = {r[0]: r for r in real}["mfu-monitor"][4]
    print()
    print(f"mfu-monitor / lightning update+compute overhead (near-free step): {ours / light:.2f}")
    print(f"floor (bare hooks) / lightning update+compute: {floor / light:.2f}; "
          f"mfu-monitor - floor: {ours - floor:+.2f} µs; hook dispatch (floor - wrapper floor): "
          f"{floor - wrapped:+.2f} µs")  # fmt: skip
    real_bare = {r[0]: r for r in real}["bare"][1]
    print(f"mfu-monitor overhead as a share of the ~0.4 ms step: near-free µs / real step = "
          f"{ours / real_bare:.2%} (direct paired measurement: {real_share:+.2%})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
