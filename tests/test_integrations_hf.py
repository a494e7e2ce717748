"""MFUTrainerCallback with the real transformers Trainer on CPU: a tiny Llama, gradient accumulation, padding.

Expectations are derived independently: tokens from the dataset itself (and the Trainer's own
``num_input_tokens_seen``), non-padding tokens from the attention masks, FLOPs from FlopCounterMode, steps
from ``state.global_step``; Prometheus values from a fresh registry read while training runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")

import torch
from prometheus_client import CollectorRegistry
from test_integrations_models import PEAK, padded_batch, padded_sample, read_log, tiny_llama, training_flops
from transformers import Trainer, TrainerCallback, TrainingArguments

from integrations.hf_trainer import MFUTrainerCallback
from monitor.errors import InputError

SEQ = 16
BATCH = 2
ACCUM = 3
STEPS = 4
SAMPLES = STEPS * ACCUM * BATCH  # one epoch is exactly the run: every sample is fed once


class Samples(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __len__(self) -> int:
        return SAMPLES

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return padded_sample(i, SEQ)


class Probe(TrainerCallback):
    """Reads the registry after each step (listed after the MFU callback, so its step is closed)."""

    def __init__(self, registry: CollectorRegistry, mfu_cb: MFUTrainerCallback) -> None:
        self.registry = registry
        self.mfu_cb = mfu_cb
        self.samples: list[dict[str, float | None]] = []

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        mon = self.mfu_cb.monitor
        assert mon is not None
        labels = {"run": mon.run, "rank": str(mon.rank)}
        names = ("training_steps_total", "training_tokens_total", "training_real_tokens_total",
                 "training_mfu_ratio", "training_peak_flops_per_second")  # fmt: skip
        self.samples.append({n: self.registry.get_sample_value(n, labels) for n in names})


class SlowEvaluation(TrainerCallback):
    """An evaluation that takes EVAL_PAUSE longer (listed before the MFU callback, whose on_evaluate then
    restarts the step clock)."""

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        time.sleep(EVAL_PAUSE)


EVAL_PAUSE = 0.5


def _args(tmp_path: Path, **overrides: Any) -> TrainingArguments:
    options: dict[str, Any] = {
        "output_dir": str(tmp_path / "out"),
        "per_device_train_batch_size": BATCH,
        "gradient_accumulation_steps": ACCUM,
        "max_steps": STEPS,
        "report_to": [],
        "use_cpu": True,
        "save_strategy": "no",
        "logging_strategy": "no",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "include_num_input_tokens_seen": "all",
    }
    options.update(overrides)
    return TrainingArguments(**options)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("hf")
    registry = CollectorRegistry()
    log = tmp / "run.jsonl"
    cb = MFUTrainerCallback(peak_flops=PEAK, registry=registry, log_path=log, warmup_steps=1, run="hf-test")
    probe = Probe(registry, cb)
    model = tiny_llama()
    args = _args(tmp, eval_strategy="steps", eval_steps=2, per_device_eval_batch_size=4)
    # Evaluation after steps 2 and 4 runs the model too (under no_grad): its tokens must not count.
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Samples(),
        eval_dataset=Samples(),
        callbacks=[SlowEvaluation(), cb, probe],
    )
    trainer.train()
    return {"cb": cb, "probe": probe, "log": read_log(log), "trainer": trainer, "model": model}


def test_steps_equal_optimizer_steps(trained: dict[str, Any]) -> None:
    steps = trained["log"]["step"]
    assert trained["trainer"].state.global_step == STEPS
    assert [s["step"] for s in steps] == list(range(STEPS))
    assert trained["cb"].last_snapshot.steps == STEPS


def test_evaluation_between_steps_counts_into_no_step(trained: dict[str, Any]) -> None:
    # evaluation (EVAL_PAUSE longer) ran after step 2, i.e. between step records 1 and 2
    steps = trained["log"]["step"]
    assert max(s["step_seconds"] for s in steps[1:]) < EVAL_PAUSE / 2
    assert all((s["input_wait_seconds"] or 0.0) < EVAL_PAUSE / 2 for s in steps)


def test_tokens_count_every_micro_batch(trained: dict[str, Any]) -> None:
    evaluations = [h for h in trained["trainer"].state.log_history if "eval_loss" in h]
    assert len(evaluations) == 2  # evaluation ran after steps 2 and 4; its batches are not counted
    steps = trained["log"]["step"]
    assert [s["tokens"] for s in steps] == [ACCUM * BATCH * SEQ] * STEPS
    # The Trainer's own count (a device sync per micro-batch we never make) agrees.
    assert sum(s["tokens"] for s in steps) == trained["trainer"].state.num_input_tokens_seen == SAMPLES * SEQ


def test_real_tokens_from_attention_masks(trained: dict[str, Any]) -> None:
    expected = sum(int(padded_sample(i, SEQ)["attention_mask"].sum()) for i in range(SAMPLES))
    assert expected < SAMPLES * SEQ  # the data has padding
    assert sum(s["real_tokens"] for s in trained["log"]["step"]) == expected
    assert trained["log"]["run_end"][0]["tokens"] == SAMPLES * SEQ


def test_model_flops_match_flop_counter(trained: dict[str, Any]) -> None:
    batch = padded_batch(0, BATCH, SEQ)
    per_token = training_flops(trained["model"], batch) / batch["input_ids"].numel()
    for s in trained["log"]["step"]:
        assert s["model_flops"] == pytest.approx(s["tokens"] * per_token, rel=1e-9)


def test_mfu_present_and_sane(trained: dict[str, Any]) -> None:
    for s in trained["log"]["step"]:
        assert s["mfu"] is not None and 0 < s["mfu"] < 1
        assert s["mfu"] == pytest.approx(s["model_flops"] / s["step_seconds"] / PEAK)
    snap = trained["cb"].last_snapshot
    assert snap.mfu is not None and 0 < snap.mfu < 1


def test_run_log_names_the_trainer_world_and_dtype(trained: dict[str, Any]) -> None:
    args = trained["trainer"].args
    start = trained["log"]["run_start"][0]
    assert (start["rank"], start["world_size"]) == (args.process_index, args.world_size)
    assert start["dtype"] == "fp32"  # no bf16/fp16/tf32 flag and fp32 parameters
    assert start["peak_flops_per_second"] == PEAK
    assert start["params"] == sum(p.numel() for p in trained["model"].parameters())
    assert start["run"] == "hf-test"
    end = trained["log"]["run_end"][0]
    assert end["reason"] == "train_end" and end["steps"] == STEPS


def test_prometheus_samples_during_training(trained: dict[str, Any]) -> None:
    seen = trained["probe"].samples
    assert [s["training_steps_total"] for s in seen] == [float(i + 1) for i in range(STEPS)]
    per_step = ACCUM * BATCH * SEQ
    assert [s["training_tokens_total"] for s in seen] == [float((i + 1) * per_step) for i in range(STEPS)]
    last = seen[-1]
    assert last["training_real_tokens_total"] == sum(s["real_tokens"] for s in trained["log"]["step"])
    assert last["training_peak_flops_per_second"] == PEAK
    assert last["training_mfu_ratio"] is not None and 0 < last["training_mfu_ratio"] < 1
    assert seen[0]["training_mfu_ratio"] is None  # only a warm-up step yet: no windowed MFU


def test_monitor_closed_and_unhooked_after_training(trained: dict[str, Any]) -> None:
    model = trained["model"]
    mon = trained["cb"].monitor
    before = mon.snapshot().tokens_total
    with torch.enable_grad():
        model(input_ids=torch.zeros(1, SEQ, dtype=torch.long))
    assert mon.snapshot().tokens_total == before  # hooks removed at on_train_end
    assert trained["cb"].close() is trained["cb"].last_snapshot  # closing twice is harmless


def test_bf16_training_arguments_set_the_dtype(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    cb = MFUTrainerCallback(peak_flops=PEAK, registry=CollectorRegistry(), run="hf-bf16")
    args = _args(tmp_path, bf16=True, max_steps=1, gradient_accumulation_steps=1)
    Trainer(model=tiny_llama(), args=args, train_dataset=Samples(), callbacks=[cb]).train()
    snap = cb.last_snapshot
    assert snap is not None and snap.dtype == "bf16" and snap.steps == 1


def test_train_begin_twice_builds_one_monitor(tmp_path: Path) -> None:
    from transformers import TrainerControl, TrainerState

    cb = MFUTrainerCallback(peak_flops=PEAK, registry=CollectorRegistry(), run="hf-once")
    args, state, control = _args(tmp_path), TrainerState(), TrainerControl()
    model = tiny_llama()
    cb.on_train_begin(args, state, control, model=model)
    first = cb.monitor
    cb.on_train_begin(args, state, control, model=model)
    assert cb.monitor is first
    cb.on_train_end(args, state, control, model=model)
    assert cb.last_snapshot is not None and cb.last_snapshot.steps == 0


def test_options_checked_when_the_callback_is_built() -> None:
    with pytest.raises(InputError, match="peak_flop"):
        MFUTrainerCallback(peak_flop=1e12)
    with pytest.raises(InputError, match="optimizer"):
        MFUTrainerCallback(optimizer=object())


def test_gradient_checkpointing_counts_recompute_in_hfu_only(tmp_path: Path) -> None:
    """Hardware FLOPs with HF gradient checkpointing lie between what FlopCounterMode counts with it on
    (PyTorch's checkpoint stops recomputing once the last saved tensor backward needs is rebuilt) and
    training + one more full forward; model FLOPs (MFU) stay those without recomputation."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(1)
    batch = padded_batch(0, BATCH, SEQ)
    tokens = batch["input_ids"].numel()
    probe = tiny_llama()
    with FlopCounterMode(display=False) as forward_only, torch.no_grad():
        probe(input_ids=batch["input_ids"])
    plain = training_flops(probe, batch) / tokens
    probe.train()
    getattr(probe, "activation_checkpointing_enable", probe.gradient_checkpointing_enable)()
    checkpointed = training_flops(probe, batch) / tokens
    upper = plain + forward_only.get_total_flops() / tokens

    cb = MFUTrainerCallback(peak_flops=PEAK, registry=CollectorRegistry(), run="hf-gc", warmup_steps=0)
    name = "activation_checkpointing"  # transformers 5's name for gradient_checkpointing
    if name not in TrainingArguments.__dataclass_fields__:
        name = "gradient_checkpointing"
    args = _args(tmp_path, max_steps=2, gradient_accumulation_steps=1, **{name: True})
    Trainer(model=tiny_llama(), args=args, train_dataset=Samples(), callbacks=[cb]).train()
    snap = cb.last_snapshot
    assert snap is not None and snap.flops_per_token is not None and snap.hardware_flops_per_token is not None
    assert snap.flops_per_token == pytest.approx(plain, rel=1e-9)
    assert plain < checkpointed <= snap.hardware_flops_per_token <= upper
    assert snap.hfu is not None and snap.mfu is not None and snap.hfu > snap.mfu


class LogRecorder(TrainerCallback):
    """Stands where the ``report_to`` integrations stand (before the user's callbacks) and keeps what its
    ``on_log`` receives, as W&B or TensorBoard would."""

    def __init__(self) -> None:
        self.logs: list[dict[str, Any]] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        self.logs.append(dict(logs or {}))


def test_figures_reach_the_trainers_loggers_and_log_history(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    cb = MFUTrainerCallback(peak_flops=PEAK, registry=CollectorRegistry(), warmup_steps=1, run="hf-logs")
    recorder = LogRecorder()
    args = _args(
        tmp_path, logging_strategy="steps", logging_steps=2, eval_strategy="steps", eval_steps=2,
        per_device_eval_batch_size=4,
    )  # fmt: skip
    trainer = Trainer(
        model=tiny_llama(),
        args=args,
        train_dataset=Samples(),
        eval_dataset=Samples(),
        callbacks=[recorder, cb],
    )
    trainer.train()
    train_logs = [logs for logs in recorder.logs if "loss" in logs]
    assert [len(train_logs)] == [STEPS // 2]  # logging steps 2 and 4, each with the figures
    fpt = cb.last_snapshot.flops_per_token
    for logs in train_logs:
        assert 0 < logs["mfu"] < 1 and logs["mfu"] == logs["device_mfu"]  # one process: the run is the device
        assert logs["tokens_per_second"] == logs["device_tokens_per_second"] > 0
        assert logs["device_model_tflops_per_second"] == pytest.approx(
            logs["device_tokens_per_second"] * fpt / 1e12, rel=1e-9
        )
        assert logs["device_hfu"] == pytest.approx(logs["device_mfu"])  # no recomputation
    assert not any("mfu" in logs for logs in recorder.logs if "eval_loss" in logs)
    history = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["mfu"] for h in history] == [logs["mfu"] for logs in train_logs]
    # the user's own order of callbacks is kept for every other event
    assert trainer.callback_handler.callbacks.index(recorder) < trainer.callback_handler.callbacks.index(cb)


def tiny_phi() -> Any:
    """A family without an analytic FLOPs model (Phi-1/2: parallel attention and MLP, partial rotary)."""
    from transformers import PhiConfig, PhiForCausalLM

    config = PhiConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, max_position_embeddings=128)  # fmt: skip
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    return PhiForCausalLM(config)


def test_a_family_without_an_analytic_model_is_measured(tmp_path: Path) -> None:
    """Trainer.train() with a Phi model: the monitor measures its FLOPs (one warning says so) instead of
    stopping the run; the FLOPs equal FlopCounterMode's."""
    torch.set_num_threads(1)
    log = tmp_path / "phi.jsonl"
    cb = MFUTrainerCallback(peak_flops=PEAK, registry=CollectorRegistry(), log_path=log, warmup_steps=1)
    model = tiny_phi()

    class PhiSamples(Samples):
        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            ids = torch.randint(0, 64, (SEQ,), generator=torch.Generator().manual_seed(i))
            return {"input_ids": ids, "labels": ids.clone()}

    args = _args(tmp_path, max_steps=2, gradient_accumulation_steps=1)
    Trainer(model=model, args=args, train_dataset=PhiSamples(), callbacks=[cb]).train()
    snap = cb.last_snapshot
    assert snap is not None and snap.steps == 2 and snap.flops_method is not None
    assert "measured" in snap.flops_method
    batch = {"input_ids": torch.randint(0, 64, (BATCH, SEQ))}
    per_token = training_flops(model, batch) / batch["input_ids"].numel()
    steps = read_log(log)["step"]
    assert [s["model_flops"] for s in steps] == pytest.approx(
        [s["tokens"] * per_token for s in steps], rel=1e-9
    )
    assert all(s["mfu"] is not None for s in steps)


def test_a_monitor_that_cannot_be_built_never_stops_the_trainer(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    cb = MFUTrainerCallback(spec={"model_type": "no-such-family"}, registry=CollectorRegistry())
    args = _args(tmp_path, max_steps=2, gradient_accumulation_steps=1)
    trainer = Trainer(model=tiny_llama(), args=args, train_dataset=Samples(), callbacks=[cb])
    with pytest.warns(RuntimeWarning, match="no monitor for this run.*no-such-family"):
        trainer.train()
    assert trainer.state.global_step == 2 and cb.monitor is None and cb.last_snapshot is None
