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
The Trainer has no exception event: after a crash the monitor closes at interpreter exit (``reason="exit"``),
or call ``callback.close()`` in your own ``finally``.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from integrations._common import MonitorHolder, build_monitor, check_monitor_kwargs, hf_args_dtype

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

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """One optimizer step done: close it with every micro-batch the forward hook counted since."""
        if self._open and self.monitor is not None:
            self.monitor.step()

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
