"""Writes torchtitan.log and megatron.log: console logs in each tool's exact line format, from known figures.

Run from this folder: ``python make_console_samples.py``. The formats follow torchtitan's
``MetricsProcessor.log`` (components/metrics.py; logger format "[titan] %(asctime)s - %(name)s -
%(levelname)s -
%(message)s", colours on) and Megatron-LM's ``training_log`` (training/training.py) with its arguments dump.
The figures the tests expect are the constants below.
"""

from __future__ import annotations

import datetime as dt

# --- torchtitan: Llama 3 8B on 8 H100, local batch 1 x 8192 tokens, log_freq 10
# ---------------------------------
TITAN_GPUS = 8
TITAN_PEAK = 9.890e14  # what torchtitan's get_peak_flops returns for H100 SXM (bf16 dense)
TITAN_FLOPS_PER_TOKEN = 5.8e10
TITAN_LOCAL_TOKENS = 8192  # per device per step
TITAN_TPS = {s: 5200.0 for s in range(1, 101)}
TITAN_TPS.update({s: 1300.0 for s in range(41, 51)})  # a slow stretch: steps 41-50 at a quarter speed
TITAN_T0 = dt.datetime(2025, 3, 1, 12, 0, 0, 0)

RED, GREEN, ORANGE, TURQ, BLUE, CYAN, MAGENTA, RESET = (
    "\033[31m",
    "\033[32m",
    "\033[33m",
    "\033[36m",
    "\033[34m",
    "\033[36m",
    "\033[35m",
    "\033[39m",
)


def titan_lines() -> list[str]:
    def stamp(t: dt.datetime) -> str:
        return t.strftime("%Y-%m-%d %H:%M:%S,") + f"{t.microsecond // 1000:03d}"

    now = TITAN_T0
    out = [
        f"[rank0]:[titan] {stamp(now)} - root - INFO - Starting job: Llama 3 8B training",
        f"[rank0]:[titan] {stamp(now)} - root - INFO - Peak FLOPS used for computing MFU: {TITAN_PEAK:.3e}",
        f"[rank0]:[titan] {stamp(now)} - root - INFO - CUDA memory usage for model: 3.77GiB(3.96%)",
    ]
    logged = [1, *range(10, 101, 10)]
    previous = 0
    for step in logged:
        seconds = sum(TITAN_LOCAL_TOKENS / TITAN_TPS[s] for s in range(previous + 1, step + 1))
        if step == 1:
            seconds += 12.0  # compile time lands in the first interval
        now = now + dt.timedelta(seconds=seconds)
        tps = TITAN_LOCAL_TOKENS * (step - previous) / seconds
        tflops = TITAN_FLOPS_PER_TOKEN * tps / 1e12
        mfu = 100 * TITAN_FLOPS_PER_TOKEN * tps / TITAN_PEAK
        out.append(
            f"[rank0]:[titan] {stamp(now)} - root - INFO - "
            f"{RED}step: {step:2}  {GREEN}loss: {10.0 / step**0.3:7.4f}  {ORANGE}grad_norm: {1.2345:7.4f}  "
            f"{TURQ}memory: 62.41GiB(65.69%)  {BLUE}tps: {round(tps):,}  {CYAN}tflops: {tflops:,.2f}  "
            f"{MAGENTA}mfu: {mfu:.2f}%{RESET}"
        )
        if step == 60:
            message = "Saving the checkpoint (or staging if async is enabled)."
            out.append(f"[rank0]:[titan] {stamp(now)} - root - INFO - {message}")
        previous = step
    out.append(f"[rank0]:[titan] {stamp(now)} - root - INFO - Training completed")
    return out


# --- Megatron-LM: GPT 345M on 8 GPUs, seq 1024, global batch 512, log_interval 10
# ------------------------------
MEG_GPUS = 8
MEG_SEQ = 1024
MEG_GBS = 512
MEG_FLOPS_PER_TOKEN = 2.4e9
MEG_MS = {it: 950.0 for it in range(1, 201)}
MEG_MS.update({it: 3800.0 for it in range(101, 111)})  # iterations 101-110 four times slower
MEG_GAP_BEFORE = 150  # a 40 s checkpoint save between iteration 150's log and iteration 151
MEG_GAP_SECONDS = 40.0
MEG_T0 = dt.datetime(2025, 3, 2, 8, 0, 0)


def megatron_lines() -> list[str]:
    out = [
        "using world size: 8, data-parallel size: 8, context-parallel size: 1, tensor-model-parallel size: 1",
        "------------------------ arguments ------------------------",
    ]
    for name, value in (
        ("global_batch_size", MEG_GBS),
        ("log_interval", 10),
        ("micro_batch_size", 8),
        ("seq_length", MEG_SEQ),
        ("world_size", MEG_GPUS),
    ):
        out.append(f"  {name} {'.' * (48 - len(name))} {value}")
    out.append("-------------------- end of arguments ---------------------")
    now = MEG_T0
    previous = 0
    for it in [1, *range(10, 201, 10)]:
        ms = sum(MEG_MS[i] for i in range(previous + 1, it + 1)) / (it - previous)
        now = now + dt.timedelta(milliseconds=ms * (it - previous))
        if previous == MEG_GAP_BEFORE:
            now = now + dt.timedelta(seconds=MEG_GAP_SECONDS)
        tflops = MEG_FLOPS_PER_TOKEN * MEG_GBS * MEG_SEQ / (ms / 1000 * 1e12 * MEG_GPUS)
        out.append(
            f" [{now.strftime('%Y-%m-%d %H:%M:%S')}] iteration {it:8d}/{200:8d} |"
            f" consumed samples: {it * MEG_GBS:12d} |"
            f" elapsed time per iteration (ms): {ms:.1f} |"
            f" throughput per GPU (TFLOP/s/GPU): {tflops:.1f} |"
            f" learning rate: {1.5e-4:.6E} | global batch size: {MEG_GBS:5d} | lm loss: {7.5 / it**0.1:.6E} |"
            f" loss scale: 1.0 | grad norm: 1.234 | number of skipped iterations:   0 |"
            f" number of nan iterations:   0 |"
        )
        if it == MEG_GAP_BEFORE:
            out.append(f"saving checkpoint at iteration {it:7d} to /checkpoints/gpt345m")
        previous = it
    return out


if __name__ == "__main__":
    with open("torchtitan.log", "w", encoding="utf-8") as f:
        f.write("\n".join(titan_lines()) + "\n")
    with open("megatron.log", "w", encoding="utf-8") as f:
        f.write("\n".join(megatron_lines()) + "\n")
