"""What the framework callbacks share: the compute dtype from a trainer's precision setting, tokens in a batch
from shapes only, the Hugging Face config inside a wrapper module, and building the monitor.

No framework is imported here: ``integrations.hf_trainer`` needs only transformers and
``integrations.lightning`` only lightning. The dtype functions are pure (strings and booleans in, a catalogue
dtype name out); ``batch_tokens`` reads tensor shapes and never touches device memory.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from monitor.errors import InputError
from monitor.figures.loggers import logger_figures

if TYPE_CHECKING:  # pragma: no cover
    from monitor.figures.snapshot import Snapshot
    from monitor.live.monitor import MFUMonitor

# The callbacks set these themselves (from the trainer); a user passing them is a mistake worth naming.
_SET_BY_CALLBACK = ("model", "optimizer")


def check_monitor_kwargs(kwargs: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """The options a callback passes through to ``MFUMonitor``: an InputError for an unknown name, so that a
    typo fails when the callback is built, not when training starts."""
    from monitor.live.monitor import MFUMonitor

    accepted = set(inspect.signature(MFUMonitor.__init__).parameters) - {"self", *_SET_BY_CALLBACK}
    for name in kwargs:
        if name in _SET_BY_CALLBACK:
            raise InputError(name, f"is taken from the trainer by {owner}", f"drop {name}= from {owner}(...)")
        if name not in accepted:
            raise InputError(
                name,
                f"is not an MFUMonitor option ({owner} passes its keyword arguments to MFUMonitor)",
                f"use one of: {', '.join(sorted(accepted))}",
            )
    return dict(kwargs)


# --- the compute dtype a trainer's settings imply -------------------------------------------------------


def hf_args_dtype(*, bf16: bool, fp16: bool, tf32: bool | None) -> str | None:
    """The dtype a ``transformers.TrainingArguments`` run computes its matmuls in.

    ``bf16``/``fp16`` turn on autocast (mixed precision): the matmuls run in that dtype even though the
    parameters stay fp32, so the parameters alone would name the wrong peak. ``tf32=True`` runs fp32 matmuls
    on TF32 tensor cores. None: no flag set, and the monitor reads the parameters (bf16 weights, fp32, or TF32
    when torch's fp32 matmul precision allows it on CUDA).
    """
    if bf16:
        return "bf16"
    if fp16:
        return "fp16"
    if tf32:
        return "tf32"
    return None


# Lightning's precision strings (Trainer(precision=...) as ``trainer.precision`` reports it).
_LIGHTNING_PRECISION: dict[str, str | None] = {
    "bf16-mixed": "bf16",
    "bf16-true": "bf16",
    "bf16": "bf16",
    "16-mixed": "fp16",
    "16-true": "fp16",
    "16": "fp16",
    # fp32 parameters: fp32, or tf32 where torch's fp32 matmul precision allows it on CUDA; the monitor reads
    # that from the parameters and torch (monitor.hardware.dtypes.run_dtype), so leave it to the monitor.
    "32-true": None,
    "32": None,
    "64-true": "fp64",
    "64": "fp64",
    # NVIDIA Transformer Engine: the linear layers run in FP8.
    "transformer-engine": "fp8",
    "transformer-engine-float16": "fp8",
}


def lightning_precision_dtype(precision: object) -> str | None:
    """The dtype of Lightning's ``trainer.precision`` ("bf16-mixed" -> bf16, "16-mixed" -> fp16, "32-true" ->
    None: decided from the parameters, fp32 or tf32). Unknown strings (a custom precision plugin) -> None."""
    if precision is None:
        return None
    return _LIGHTNING_PRECISION.get(str(precision).strip().lower())


def accelerate_dtype(mixed_precision: object) -> str | None:
    """The dtype of ``Accelerator(mixed_precision=...)``: "bf16", "fp16", "fp8"; "no" -> None (the
    parameters decide)."""
    text = str(getattr(mixed_precision, "value", mixed_precision) or "no").strip().lower()
    return {"bf16": "bf16", "fp16": "fp16", "fp8": "fp8"}.get(text)


# --- tokens in a batch (shapes only) ----------------------------------------------------------------------


class BatchCount:
    """Tokens of one batch: ``tokens`` (padding included), ``seq_len`` (None: unknown) and, when an attention
    mask on the host says so, ``real`` (non-padding)."""

    __slots__ = ("real", "seq_len", "tokens")

    def __init__(self, tokens: int, seq_len: int | None, real: int | None = None) -> None:
        self.tokens = tokens
        self.seq_len = seq_len
        self.real = real


def batch_tokens(batch: Any) -> BatchCount | None:
    """Count the tokens of a training batch the way the monitor's forward hook counts a forward call.

    - a mapping (a Hugging Face batch): ``input_ids``, else ``inputs_embeds``, else its first tensor;
    - a tuple or list (``(x, y)``): its first tensor (or the first mapping in it);
    - a tensor: itself.
    Integer ids ``(..., S)`` hold ``numel`` tokens of length S; embeddings ``(..., S, H)`` hold ``numel / H``;
    a floating ``(B, D)`` tensor is B samples of length 1 (monitor.live.tokens.tokens_in). The
    ``attention_mask`` of a mapping gives the non-padding tokens only when it is on the host: summing a
    device tensor here would wait for the device, and the per-step path never does.
    None when nothing in the batch can be counted.
    """
    from monitor.live.tokens import tokens_in

    if isinstance(batch, Mapping):
        kwargs = dict(batch)
        counted = tokens_in((), kwargs)
        if counted is None:
            first = _first_tensor(kwargs.values())
            counted = None if first is None else tokens_in((first,), {})
        if counted is None:
            return None
        return BatchCount(counted[0], counted[1], _host_real_tokens(kwargs.get("attention_mask"), counted[0]))
    if isinstance(batch, (tuple, list)):
        for item in batch:
            if isinstance(item, Mapping):
                return batch_tokens(item)
            if _is_tensor(item):
                return batch_tokens(item)
        return None
    if _is_tensor(batch):
        counted = tokens_in((batch,), {})
        return None if counted is None else BatchCount(counted[0], counted[1])
    return None


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def _first_tensor(values: Any) -> Any:
    for value in values:
        if _is_tensor(value):
            return value
    return None


def _host_real_tokens(mask: Any, tokens: int) -> int | None:
    if mask is None or not _is_tensor(mask) or mask.device.type != "cpu" or mask.numel() != tokens:
        return None
    return int((mask != 0).sum())


class StepTokens:
    """Tokens of the micro-batches since the last optimizer step (gradient accumulation counts each one).

    The step's sequence length for the FLOPs model is the token-weighted mean of the micro-batches' lengths:
    the FLOPs per token at length S is affine in S (6N + 12·L·H·S, PaLM appendix B; the analytic model's
    attention-score term is linear in S), so N tokens at that mean cost the same FLOPs as the micro-batches
    at their own lengths, up to rounding the mean to an integer.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.tokens = 0
        self._length_weighted = 0
        self._length_known = True
        self.real: int | None = 0
        self.batches = 0
        self.counted = 0

    def add(self, count: BatchCount | None) -> None:
        self.batches += 1
        if count is None:
            self.real = None
            return
        self.counted += 1
        self.tokens += count.tokens
        if count.seq_len is None:
            self._length_known = False
        else:
            self._length_weighted += count.tokens * count.seq_len
        if self.real is not None and count.real is not None:
            self.real += count.real
        else:
            self.real = None

    @property
    def seq_len(self) -> int | None:
        if self.tokens <= 0 or not self._length_known:
            return None
        return max(1, round(self._length_weighted / self.tokens))


# --- the model's Hugging Face config ----------------------------------------------------------------------


def find_hf_config(module: Any) -> Any:
    """The Hugging Face config of ``module`` or of the first submodule that has one (a LightningModule
    wrapping ``self.model = AutoModelForCausalLM...``); None when there is none (then the monitor measures
    the FLOPs on the meta device)."""
    modules = module.modules() if hasattr(module, "modules") else [module]
    for sub in modules:
        config = getattr(sub, "config", None)
        if config is not None and hasattr(config, "to_dict") and hasattr(config, "model_type"):
            return config
    return None


# --- building, resuming and closing the monitor -----------------------------------------------------------


class MonitorHolder:
    """What every callback does with its monitor once built: ``resume()`` it after work between steps, and
    ``close()`` it once (later calls return the final snapshot again)."""

    def __init__(self) -> None:
        self.monitor: MFUMonitor | None = None
        self.last_snapshot: Snapshot | None = None
        self._open = False

    def _resume(self) -> None:
        if self._open and self.monitor is not None:
            self.monitor.resume()

    def figures(self) -> dict[str, float]:
        """The figures for the trainer's loggers (``monitor.figures.loggers``: MFU, HFU, tokens/s, model
        TFLOP/s; unknown ones absent); empty while no monitor is open. Never raises: an error is the
        monitor's, counted and reported once, and the trainer logs without the figures."""
        if not self._open or self.monitor is None:
            return {}
        try:
            return logger_figures(self.monitor.snapshot())
        except Exception as exc:
            self.monitor._error("trainer logger figures", exc)
            return {}

    def close(self, reason: str = "closed") -> Snapshot | None:
        """Close the monitor (run log ``run_end``, hooks removed, server stopped); the final snapshot."""
        if self.monitor is None or not self._open:
            return self.last_snapshot
        self._open = False
        self.last_snapshot = self.monitor.close(reason=reason)
        return self.last_snapshot


def build_monitor(
    model: Any,
    options: Mapping[str, Any],
    *,
    dtype: str | None,
    rank: int | None,
    world_size: int | None,
    framework: str,
    spec: Any = None,
) -> MFUMonitor | None:
    """An ``MFUMonitor`` on ``model`` with the user's options; ``dtype`` and ``spec`` fill in only what the
    user did not set. The step is closed by the trainer's event (``mon.step``), not an optimizer hook, so no
    optimizer is attached. A monitor that cannot be built never stops the trainer: one warning with the
    reason, and training goes on unmonitored (None)."""
    from monitor.live.monitor import MFUMonitor

    kwargs = dict(options)
    # the trainer's place, for when torch.distributed is not initialised (the monitor ignores it otherwise)
    if rank is not None and world_size is not None and 0 <= rank < world_size:
        kwargs.setdefault("rank", rank)
        kwargs.setdefault("world_size", world_size)
    if kwargs.get("dtype") is None and dtype is not None:
        kwargs["dtype"] = dtype
    if spec is not None and kwargs.get("spec") is None and kwargs.get("flops_per_token") is None:
        kwargs["spec"] = spec
    try:
        mon = MFUMonitor(model, None, **kwargs)
    except Exception as exc:
        warnings.warn(
            f"mfu-monitor: no monitor for this run ({type(exc).__name__}: {exc}); {framework} trains on "
            "without MFU figures",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    check_world(mon, rank, world_size, framework)
    return mon


def check_world(mon: Any, rank: int | None, world_size: int | None, framework: str) -> None:
    """Warn when the monitor's place (torch.distributed, else RANK/WORLD_SIZE) differs from the trainer's:
    its run-log records and metric labels would name the wrong rank."""
    if rank is None or world_size is None:
        return
    if (mon.rank, mon.world_size) != (rank, world_size):
        warnings.warn(
            f"mfu-monitor: {framework} says rank {rank} of {world_size}, the monitor sees rank {mon.rank} "
            f"of {mon.world_size} (torch.distributed not initialised?): set RANK and WORLD_SIZE in the "
            "environment, or initialise the process group before training",
            RuntimeWarning,
            stacklevel=3,
        )


TokensFn = Callable[[Any], "int | tuple[int, int] | BatchCount | None"]


def count_with(fn: TokensFn | None, batch: Any) -> BatchCount | None:
    """Tokens of ``batch``: the user's ``tokens_fn`` (an int, ``(tokens, seq_len)`` or a BatchCount) when
    given, else :func:`batch_tokens`."""
    if fn is None:
        return batch_tokens(batch)
    got = fn(batch)
    if got is None or isinstance(got, BatchCount):
        return got
    fix = "return the batch's token count (an int) or (tokens, seq_len)"
    if isinstance(got, tuple):
        try:
            tokens, seq_len = (int(x) for x in got)
        except (TypeError, ValueError) as exc:
            raise InputError("tokens_fn", f"returned {got!r}", fix) from exc
        if tokens < 0 or seq_len < 1:
            raise InputError("tokens_fn", f"returned {got!r}: tokens >= 0 and seq_len >= 1 expected", fix)
        return BatchCount(tokens, seq_len)
    if isinstance(got, bool) or not isinstance(got, int) or got < 0:
        raise InputError("tokens_fn", f"returned {got!r}", fix)
    return BatchCount(got, None)
