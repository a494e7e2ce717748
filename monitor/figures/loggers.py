"""The figures a training framework's loggers receive (W&B, TensorBoard, MLflow, CSV, ...): one flat mapping
of names to numbers, built from a snapshot. Unknown figures are left out, never logged as 0.

Canonical names (``logger_figures``):
  mfu, tokens_per_second: the whole run — all ranks' model FLOP rates over all ranks' peaks, and all ranks'
    tokens/s, from the last all-reduce (under torchrun) or this process's own figures when it is the only one;
  device_mfu, device_hfu, device_tokens_per_second, device_model_tflops_per_second: this rank's device,
    windowed (model TFLOP/s = model FLOP/s / 1e12; HFU counts recomputation, MFU does not).
Each framework's callback renames them to its own habits (``hf_names``, ``lightning_names``).
"""

from __future__ import annotations

from monitor.figures.snapshot import Snapshot

RUN_FIGURES = ("mfu", "tokens_per_second")
DEVICE_FIGURES = ("device_mfu", "device_hfu", "device_tokens_per_second", "device_model_tflops_per_second")


def logger_figures(snap: Snapshot) -> dict[str, float]:
    """This snapshot's figures by canonical name; a figure the monitor does not know is absent."""
    tflops = snap.model_flops_per_second
    device = {
        "device_mfu": snap.mfu,
        "device_hfu": snap.hfu,
        "device_tokens_per_second": snap.tokens_per_second,
        "device_model_tflops_per_second": None if tflops is None else tflops / 1e12,
    }
    if snap.world is not None:
        world = snap.world
        run: dict[str, float | None] = {"mfu": world.mfu, "tokens_per_second": world.tokens_per_second}
    elif snap.world_size == 1:  # one process: the run is this device
        run = {"mfu": snap.mfu, "tokens_per_second": snap.tokens_per_second}
    else:  # several ranks, no all-reduce yet: the run's figures are not known here
        run = {}
    return {name: float(value) for name, value in {**run, **device}.items() if value is not None}


def hf_names(figures: dict[str, float]) -> dict[str, float]:
    """The Hugging Face Trainer's habit: flat snake_case keys beside ``loss`` and ``learning_rate``."""
    return dict(figures)


def lightning_names(figures: dict[str, float], stage: str = "train") -> dict[str, float]:
    """Lightning's ``ThroughputMonitor`` habit: ``train/device/mfu``, ``train/tokens_per_sec``, ..."""
    out: dict[str, float] = {}
    for name, value in figures.items():
        name = name.replace("_per_second", "_per_sec")
        if name.startswith("device_"):
            name = "device/" + name.removeprefix("device_")
        out[f"{stage}/{name}"] = value
    return out
