"""PyTorch Lightning: ``MFUCallback`` builds an ``MFUMonitor`` from the trainer and feeds it every step.

    import lightning as L
    from integrations.lightning import MFUCallback

    trainer = L.Trainer(precision="bf16-mixed", accumulate_grad_batches=4,
                        callbacks=[MFUCallback(port=9400, log_path="runs/run.jsonl")])
    trainer.fit(module, datamodule)

What it takes from the trainer: the module (parameters, device, ``config`` of a wrapped Hugging Face model for
the FLOPs model), the compute dtype from ``trainer.precision`` ("bf16-mixed" -> bf16, "16-mixed" -> fp16,
"32-true" -> fp32, or tf32 where torch's matmul precision allows it on CUDA), and rank and world size
(checked against ``trainer.global_rank`` / ``trainer.world_size``). Keyword arguments go to ``MFUMonitor``.

Tokens are counted from each training batch's shapes in ``on_train_batch_end`` (every micro-batch, so
``accumulate_grad_batches`` is respected); a step is closed when ``trainer.global_step`` moves, i.e. once per
optimizer step, also under manual optimization. A training step rarely calls the LightningModule's own
``forward``, so the monitor's forward hook cannot be relied on here: the batch is. Validation between steps
(``on_validation_end``) and checkpoint building (``on_save_checkpoint``) call ``monitor.resume()`` so that
they do not count into the next step's time.

Every ``log_every_n_steps`` optimizer steps the monitor's figures go to the trainer's loggers
(``trainer.loggers``: CSV, TensorBoard, W&B, MLflow, ...) with the names Lightning's ``ThroughputMonitor``
uses: ``train/device/mfu``, ``train/device/hfu``, ``train/device/tokens_per_sec``,
``train/device/model_tflops_per_sec``, and for the whole run ``train/mfu``, ``train/tokens_per_sec``
(unknown ones left out).

Works with ``lightning.pytorch`` (preferred) or, when only that is installed, ``pytorch_lightning``; with both
installed, ``PLMFUCallback`` is the same callback for ``pytorch_lightning.Trainer``.
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from types import ModuleType
from typing import Any

from integrations._common import (
    MonitorHolder,
    StepTokens,
    TokensFn,
    build_monitor,
    check_monitor_kwargs,
    count_with,
    find_hf_config,
    lightning_precision_dtype,
)
from monitor.figures.loggers import lightning_names

__all__ = ["MFUCallback"]


def _framework() -> ModuleType:
    """``lightning.pytorch`` when the ``lightning`` package is installed, else ``pytorch_lightning``. An error
    while importing an installed package propagates as it is (it is not a missing package)."""
    for package, module in (("lightning", "lightning.pytorch"), ("pytorch_lightning", "pytorch_lightning")):
        if importlib.util.find_spec(package) is not None:
            return importlib.import_module(module)
    raise ImportError("integrations.lightning needs lightning: pip install 'mfu-monitor[lightning]'")


_pl: Any = _framework()


class _MFUCallbackLogic(MonitorHolder):
    """The callback's behaviour, shared by the ``lightning.pytorch`` and ``pytorch_lightning`` classes."""

    def __init__(self, *, tokens_fn: TokensFn | None = None, **monitor_kwargs: Any) -> None:
        """``tokens_fn(batch)``: tokens in a batch (an int or ``(tokens, seq_len)``) when the batch is not a
        mapping with ``input_ids``, a tuple starting with the ids, or a tensor of ids. Everything else is an
        ``MFUMonitor`` option (``port``, ``log_path``, ``peak_flops``, ``alert_below``, ``spec``, ...)."""
        super().__init__()
        self.monitor_kwargs = check_monitor_kwargs(monitor_kwargs, type(self).__name__)
        self.tokens_fn = tokens_fn
        self._step_tokens = StepTokens()
        self._global_step = 0
        self._warned_uncounted = False

    # --- lifecycle ---
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Build the monitor once the strategy has placed the module and created the optimizers."""
        if self._open:
            return  # one monitor per fit, however many times the hook fires
        spec = None
        if getattr(pl_module, "config", None) is None:
            spec = find_hf_config(pl_module)
        self.monitor = build_monitor(
            pl_module,
            self.monitor_kwargs,
            dtype=lightning_precision_dtype(getattr(trainer, "precision", None)),
            rank=getattr(trainer, "global_rank", None),
            world_size=getattr(trainer, "world_size", None),
            framework="the Lightning trainer",
            spec=spec,
        )
        self._open = True
        self._step_tokens.reset()
        self._global_step = int(trainer.global_step)

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Count this micro-batch; close the step when the optimizer stepped (``global_step`` moved)."""
        mon = self.monitor
        if mon is None or not self._open:
            return
        count = count_with(self.tokens_fn, batch)
        if count is None and not self._warned_uncounted:
            self._warned_uncounted = True
            warnings.warn(
                f"mfu-monitor: cannot count tokens in a batch of type {type(batch).__name__}; steps without "
                "a countable batch use what the module's forward hook counted (nothing unless training_step "
                "calls self(...)) — pass MFUCallback(tokens_fn=lambda batch: number_of_tokens)",
                RuntimeWarning,
                stacklevel=2,
            )
        self._step_tokens.add(count)
        step = int(trainer.global_step)
        if step == self._global_step:
            return  # accumulating: the optimizer has not stepped yet
        self._global_step = step
        acc = self._step_tokens
        if acc.counted:
            mon.step(tokens=acc.tokens, real_tokens=acc.real, seq_len=acc.seq_len)
        else:
            mon.step()  # no batch of this step could be read: the forward hook's count, if any
        acc.reset()
        every = getattr(trainer, "log_every_n_steps", 0) or 0
        if every and step % every == 0:
            self._log_figures(trainer, step)

    def _log_figures(self, trainer: Any, step: int) -> None:
        """The figures to every logger of the trainer (loggers write on rank zero only)."""
        loggers = getattr(trainer, "loggers", None) or []
        figures = lightning_names(self.figures()) if loggers else {}
        if not figures:
            return
        for logger in loggers:
            logger.log_metrics(figures, step=step)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        """Validation ran between steps: the next step's clock starts now (not counted as training)."""
        self._resume()

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        """Lightning calls this while it builds a checkpoint, before writing it (it has no hook after the
        write): the time until here is not counted; the write itself still is."""
        self._resume()

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.close("train_end")

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self.close(f"exception: {type(exception).__name__}")


class MFUCallback(_MFUCallbackLogic, _pl.Callback):
    """Live MFU for a Lightning ``Trainer``: ``Trainer(callbacks=[MFUCallback(port=9400, log_path=...)])``.

    Keyword arguments are ``MFUMonitor`` options; ``tokens_fn`` counts tokens in batches of an unusual shape.
    ``callback.monitor`` is the monitor (``.snapshot()``), ``callback.last_snapshot`` its final figures.
    """


def __getattr__(name: str) -> Any:
    """``PLMFUCallback``: the same callback for ``pytorch_lightning.Trainer`` when both packages are
    installed (each Trainer accepts only its own package's ``Callback``)."""
    if name == "PLMFUCallback":
        pl = importlib.import_module("pytorch_lightning")
        namespace = {"__doc__": MFUCallback.__doc__, "__module__": __name__}
        cls = type("PLMFUCallback", (_MFUCallbackLogic, pl.Callback), namespace)
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
