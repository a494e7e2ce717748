"""Hugging Face ``Trainer``: ``MFUTrainerCallback`` builds an ``MFUMonitor`` when training begins.

    from transformers import Trainer
    from integrations.hf_trainer import MFUTrainerCallback

    trainer = Trainer(model=model, args=args, train_dataset=ds,
                      callbacks=[MFUTrainerCallback(port=9400, log_path="runs/run.jsonl")])
    trainer.train()

What it takes from the trainer (``on_train_begin``, after the optimizer is created and the model placed): the
model (hooked: its forward pre-hook counts the tokens of every micro-batch, padding from ``attention_mask``;
the FLOPs model comes from ``model.config``), the compute dtype from ``TrainingArguments`` (``bf16`` -> bf16,
``fp16`` -> fp16, ``tf32`` -> tf32; none set: the parameters decide), ``activation_checkpointing`` (or the
older ``gradient_checkpointing``; -> ``recompute="full"``, for HFU), and rank and world size (checked
against ``args.process_index`` / ``args.world_size``). Keyword arguments go to ``MFUMonitor`` and win over
what is taken from the trainer.

A step is closed by ``on_step_end``, which the Trainer calls once per optimizer step, after all
``gradient_accumulation_steps`` micro-batches and also when a mixed-precision scaler skipped the update, so
the monitor's steps equal ``state.global_step``. The optimizer is not hooked (that would close steps twice).
Evaluation and checkpoint saves between steps (``on_evaluate``, ``on_save``) call ``monitor.resume()``: the
next step's time starts after them, so they count neither as step time nor as input wait.
At each of the Trainer's logging steps (``logging_steps``) ``on_log`` adds the monitor's figures to the
Trainer's ``logs`` — ``mfu``, ``tokens_per_second`` (the whole run), ``device_mfu``, ``device_hfu``,
``device_tokens_per_second``, ``device_model_tflops_per_second`` (unknown ones left out) — and to the
entry just added to ``state.log_history``, so every ``report_to`` integration (W&B, TensorBoard, MLflow, ...)
receives them. The Trainer calls its integrations' callbacks before the user's, so when training begins the
callback puts a small companion at the front of the Trainer's callback list whose only event is ``on_log``
(it finds the list on the object that calls ``on_train_begin``, the Trainer's callback handler); every other
event keeps the order the user gave. Evaluation logs (``eval_*``) get no figures.
The Trainer has no exception event: after a crash the monitor closes at interpreter exit (``reason="exit"``),
or call ``callback.close()`` in your own ``finally``.
"""

from __future__ import annotations

import sys
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import CallbackHandler

from integrations._common import MonitorHolder, build_monitor, check_monitor_kwargs, hf_args_dtype
from monitor.figures.loggers import hf_names

__all__ = ["MFUTrainerCallback"]


class MFUTrainerCallback(MonitorHolder, TrainerCallback):
    """Live MFU for a ``transformers.Trainer``: ``Trainer(..., callbacks=[MFUTrainerCallback(port=9400)])``.

    Keyword arguments are ``MFUMonitor`` options (``port``, ``log_path``, ``peak_flops``, ``alert_below``,
    ``spec``, ``run``, ...). ``callback.monitor`` is the monitor (``.snapshot()``), ``callback.last_snapshot``
    its final figures once training ended.
    """

    def __init__(self, **monitor_kwargs: Any) -> None:
        super().__init__()
        self.monitor_kwargs = check_monitor_kwargs(monitor_kwargs, type(self).__name__)
        self._logs_first = False

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: Any = None,
        **kwargs: Any,
    ) -> None:
        if self._open or model is None:
            return  # one monitor per train() call
        options = dict(self.monitor_kwargs)
        # transformers 5 renamed gradient_checkpointing to activation_checkpointing (the old name mirrors it)
        checkpointing = getattr(args, "activation_checkpointing", None) or args.gradient_checkpointing
        if checkpointing and "recompute" not in options:
            # HF gradient checkpointing reruns every decoder layer's forward in backward: hardware FLOPs (HFU)
            # count it; model FLOPs (MFU) never do.
            options["recompute"] = "full"
        self.monitor = build_monitor(
            model,
            options,
            dtype=hf_args_dtype(bf16=bool(args.bf16), fp16=bool(args.fp16), tf32=args.tf32),
            rank=args.process_index,
            world_size=args.world_size,
            framework="the Trainer",
        )
        self._open = True
        self._logs_first = _install_first(_FiguresFirst(self), sys._getframe(1).f_locals.get("self"))

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """One optimizer step done: close it with every micro-batch the forward hook counted since."""
        if self._open and self.monitor is not None:
            self.monitor.step()

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """A logging step: the figures join ``logs``, here when the companion that does it before the
        ``report_to`` integrations could not be installed."""
        if not self._logs_first:
            self.add_figures(state, logs)

    def add_figures(self, state: TrainerState, logs: dict[str, Any] | None) -> None:
        """The monitor's figures into the Trainer's ``logs`` and the log-history entry made from them."""
        if logs is None or any(key.startswith(("eval_", "test_", "predict_")) for key in logs):
            return
        figures = hf_names(self.figures())
        if not figures:
            return
        history = state.log_history
        if history and history[-1].get("step") == state.global_step and logs.keys() <= history[-1].keys():
            history[-1].update(figures)  # the Trainer stored a copy of ``logs`` before calling us
        logs.update(figures)

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Evaluation ran between steps: the next step's clock starts now (not counted as training)."""
        self._resume()

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """A checkpoint was written between steps: the next step's clock starts now."""
        self._resume()

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.close("train_end")


class _FiguresFirst(TrainerCallback):
    """The callback's companion at the front of the Trainer's list: its ``on_log`` adds the figures before
    the ``report_to`` integrations' ``on_log`` hands ``logs`` to W&B, TensorBoard, MLflow, ..."""

    def __init__(self, owner: MFUTrainerCallback) -> None:
        self.owner = owner

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.owner.add_figures(state, logs)


def _install_first(companion: _FiguresFirst, handler: Any) -> bool:
    """Put ``companion`` first in the Trainer's callback list (once per owner); False when ``handler``, the
    object that called ``on_train_begin``, is not the Trainer's ``CallbackHandler``. The handler is iterating
    that list: inserting at its front shifts every element by one, so the element being called now is called
    once more (the owner's ``on_train_begin`` returns at once the second time) and none is skipped."""
    callbacks = getattr(handler, "callbacks", None) if isinstance(handler, CallbackHandler) else None
    if not isinstance(callbacks, list):
        return False
    if not any(isinstance(c, _FiguresFirst) and c.owner is companion.owner for c in callbacks):
        callbacks.insert(0, companion)
    return True
