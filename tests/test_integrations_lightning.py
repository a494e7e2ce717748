"""MFUCallback with the real Lightning Trainer on CPU: a LightningModule wrapping a tiny Llama, gradient
accumulation, micro-batches of two lengths, padding, precision, exceptions; a plain MLP on (x, y) batches.

Expectations are derived independently: tokens and non-padding tokens from the batches fed, FLOPs from
FlopCounterMode per micro-batch, steps from ``trainer.global_step``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lightning")

import lightning.pytorch as L
import torch
from prometheus_client import CollectorRegistry
from test_integrations_models import PEAK, padded_batch, read_log, tiny_llama, training_flops

from integrations.lightning import MFUCallback
from monitor.errors import InputError

BATCH = 2
ACCUM = 2
STEPS = 4
LENGTHS = (16, 24)  # micro-batches alternate between two sequence lengths
VAL_PAUSE = 0.25  # each validation batch takes this much longer (validation is not training time)


def llm_batches(n: int) -> list[dict[str, torch.Tensor]]:
    return [padded_batch(i, BATCH, LENGTHS[i % 2]) for i in range(n)]


class LlamaModule(L.LightningModule):
    """The usual shape: the Hugging Face model is an attribute, training_step calls it (not self.forward)."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.model = tiny_llama()
        self.fail_at = fail_at
        self.val_batches = 0

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.fail_at is not None and batch_idx == self.fail_at:
            raise RuntimeError("boom")
        out: torch.Tensor = self.model(**batch).loss
        return out

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.val_batches += 1
        self.model(**batch)
        time.sleep(VAL_PAUSE)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


class Probe(L.Callback):
    """Reads the registry after each batch (listed after the MFU callback)."""

    def __init__(self, registry: CollectorRegistry, mfu_cb: MFUCallback) -> None:
        self.registry = registry
        self.mfu_cb = mfu_cb
        self.samples: list[dict[str, float | None]] = []

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, i: int) -> None:
        mon = self.mfu_cb.monitor
        assert mon is not None
        labels = {"run": mon.run, "rank": str(mon.rank)}
        names = ("training_steps_total", "training_tokens_total", "training_mfu_ratio")
        self.samples.append({n: self.registry.get_sample_value(n, labels) for n in names})


def make_trainer(callbacks: list[Any], **overrides: Any) -> L.Trainer:
    options: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "max_steps": STEPS,
        "accumulate_grad_batches": ACCUM,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    options.update(overrides)
    return L.Trainer(callbacks=callbacks, **options)


class Batches(torch.utils.data.Dataset[Any]):
    def __init__(self, batches: list[Any]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Any:
        return self.batches[i]


def loader(batches: list[Any]) -> torch.utils.data.DataLoader[Any]:
    """Each item is already a batch (``batch_size=None``), in order."""
    return torch.utils.data.DataLoader(Batches(batches), batch_size=None)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    torch.set_num_threads(1)
    log = tmp_path_factory.mktemp("pl") / "run.jsonl"
    registry = CollectorRegistry()
    cb = MFUCallback(peak_flops=PEAK, registry=registry, log_path=log, warmup_steps=1, run="pl-test")
    probe = Probe(registry, cb)
    module = LlamaModule()
    batches = llm_batches(STEPS * ACCUM + 3)  # more than the run uses: max_steps stops it
    # Validation every 4 training batches runs the model too (without grad): its tokens must not count.
    trainer = make_trainer(
        [cb, probe], val_check_interval=4, limit_val_batches=2, check_val_every_n_epoch=None
    )
    trainer.fit(module, train_dataloaders=loader(batches), val_dataloaders=loader(llm_batches(2)))
    return {
        "cb": cb,
        "probe": probe,
        "log": read_log(log),
        "trainer": trainer,
        "module": module,
        "fed": batches,
    }


def test_one_step_per_optimizer_step(trained: dict[str, Any]) -> None:
    assert trained["trainer"].global_step == STEPS
    assert [s["step"] for s in trained["log"]["step"]] == list(range(STEPS))


def test_tokens_count_every_micro_batch(trained: dict[str, Any]) -> None:
    assert trained["module"].val_batches == 4  # validation ran twice, its batches are not counted
    fed = trained["fed"]
    steps = trained["log"]["step"]
    for k, s in enumerate(steps):
        micro = fed[k * ACCUM : (k + 1) * ACCUM]
        assert s["tokens"] == sum(b["input_ids"].numel() for b in micro)
        assert s["real_tokens"] == sum(int(b["attention_mask"].sum()) for b in micro)
    assert trained["cb"].last_snapshot.tokens_total == sum(
        b["input_ids"].numel() for b in fed[: STEPS * ACCUM]
    )


def test_model_flops_match_flop_counter_per_micro_batch(trained: dict[str, Any]) -> None:
    model = trained["module"].model
    fed = trained["fed"]
    per_len = {s: training_flops(model, padded_batch(0, BATCH, s)) for s in LENGTHS}
    for k, s in enumerate(trained["log"]["step"]):
        micro = fed[k * ACCUM : (k + 1) * ACCUM]
        expected = sum(per_len[b["input_ids"].shape[-1]] for b in micro)
        # one step length (the token-weighted mean, rounded to an integer) stands for both micro-batches
        assert s["model_flops"] == pytest.approx(expected, rel=5e-3)


def test_mfu_present_and_sane(trained: dict[str, Any]) -> None:
    for s in trained["log"]["step"]:
        assert s["mfu"] is not None and 0 < s["mfu"] < 1
    snap = trained["cb"].last_snapshot
    assert snap.mfu is not None and 0 < snap.mfu < 1
    assert snap.flops_method == "analytic (ModelSpec)"  # the wrapped model's config was found


def test_run_log_names_world_dtype_and_end(trained: dict[str, Any]) -> None:
    trainer = trained["trainer"]
    start = trained["log"]["run_start"][0]
    assert (start["rank"], start["world_size"]) == (trainer.global_rank, trainer.world_size)
    assert start["dtype"] == "fp32"  # precision "32-true" on CPU
    assert start["params"] == sum(p.numel() for p in trained["module"].parameters())
    end = trained["log"]["run_end"][0]
    assert end["reason"] == "train_end" and end["steps"] == STEPS


def test_prometheus_samples_move_only_on_optimizer_steps(trained: dict[str, Any]) -> None:
    seen = trained["probe"].samples
    assert [s["training_steps_total"] for s in seen] == [
        float((i + 1) // ACCUM) for i in range(STEPS * ACCUM)
    ]
    fed = trained["fed"]
    tokens_after = [
        float(sum(b["input_ids"].numel() for b in fed[: (i + 1) // ACCUM * ACCUM])) for i in range(len(seen))
    ]
    assert [s["training_tokens_total"] for s in seen] == tokens_after
    assert seen[-1]["training_mfu_ratio"] is not None and 0 < seen[-1]["training_mfu_ratio"] < 1


def test_bf16_mixed_precision_sets_the_dtype() -> None:
    torch.set_num_threads(1)
    cb = MFUCallback(peak_flops=PEAK, registry=CollectorRegistry(), run="pl-bf16")
    trainer = make_trainer([cb], precision="bf16-mixed", max_steps=1, accumulate_grad_batches=1)
    trainer.fit(LlamaModule(), train_dataloaders=loader(llm_batches(2)))
    assert cb.last_snapshot is not None and cb.last_snapshot.dtype == "bf16" and cb.last_snapshot.steps == 1


def test_exception_closes_the_run(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    log = tmp_path / "run.jsonl"
    cb = MFUCallback(peak_flops=PEAK, registry=CollectorRegistry(), log_path=log, run="pl-fail")
    trainer = make_trainer([cb], accumulate_grad_batches=1)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(LlamaModule(fail_at=2), train_dataloaders=loader(llm_batches(5)))
    records = read_log(log)
    assert records["run_end"][0]["reason"] == "exception: RuntimeError"
    assert records["run_end"][0]["steps"] == 2


class Mlp(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_plain_module_counts_samples() -> None:
    """(x, y) float batches: B samples of length 1 each, every micro-batch counted once, although the
    module's own forward (hooked by the monitor) runs too. FLOPs per sample given (FlopCounterMode's)."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(1)
    batches = [(torch.randn(4, 8), torch.randn(4, 1)) for _ in range(6)]
    probe = Mlp()
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.mse_loss(probe(batches[0][0]), batches[0][1]).backward()
    per_sample = counter.get_total_flops() / 4
    cb = MFUCallback(flops_per_token=per_sample, peak_flops=PEAK, registry=CollectorRegistry(), run="pl-mlp")
    make_trainer([cb], max_steps=3).fit(Mlp(), train_dataloaders=loader(batches))
    snap = cb.last_snapshot
    assert snap is not None and snap.steps == 3 and snap.tokens_total == 3 * ACCUM * 4
    assert snap.model_flops_total == pytest.approx(snap.tokens_total * per_sample)


def test_tokens_fn_for_custom_batches() -> None:
    torch.set_num_threads(1)
    batches = [(torch.randn(4, 8), torch.randn(4, 1)) for _ in range(2)]
    cb = MFUCallback(tokens_fn=lambda b: 100, peak_flops=PEAK, registry=CollectorRegistry(), run="pl-fn")
    make_trainer([cb], max_steps=1).fit(Mlp(), train_dataloaders=loader(batches))
    assert cb.last_snapshot is not None and cb.last_snapshot.tokens_total == 100 * ACCUM


class IdsInAList(L.LightningModule):
    """A batch the callback cannot read (a list of python ints), but training_step calls self(ids)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(16, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.emb(ids).sum()
        return out

    def training_step(self, batch: list[list[int]], batch_idx: int) -> torch.Tensor:
        return self(torch.tensor(batch))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_unreadable_batches_fall_back_to_the_forward_hook() -> None:
    torch.set_num_threads(1)
    batches = [[[1, 2, 3], [4, 5, 6]] for _ in range(4)]  # 2 x 3 ids, as nested lists
    cb = MFUCallback(flops_per_token=1.0, peak_flops=PEAK, registry=CollectorRegistry(), run="pl-hook")
    with pytest.warns(RuntimeWarning, match="cannot count tokens"):
        make_trainer([cb], max_steps=2).fit(IdsInAList(), train_dataloaders=loader(batches))
    assert cb.last_snapshot is not None and cb.last_snapshot.tokens_total == 2 * ACCUM * 6


def test_options_checked_when_the_callback_is_built() -> None:
    with pytest.raises(InputError, match="alert_bellow"):
        MFUCallback(alert_bellow=0.3)
    with pytest.raises(InputError, match="model"):
        MFUCallback(model=torch.nn.Linear(2, 2))


def test_pytorch_lightning_package() -> None:
    pl = pytest.importorskip("pytorch_lightning")
    from integrations.lightning import PLMFUCallback

    torch.set_num_threads(1)
    cb = PLMFUCallback(peak_flops=PEAK, registry=CollectorRegistry(), run="ptl")
    assert isinstance(cb, pl.Callback)
    trainer = pl.Trainer(
        accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[cb],
    )  # fmt: skip
    batches = [(torch.randn(4, 8), torch.randn(4, 1)) for _ in range(3)]

    base: Any = pl.LightningModule

    class PlMlp(base):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(8, 1)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer.fit(PlMlp(), train_dataloaders=loader(batches))
    assert cb.last_snapshot is not None and cb.last_snapshot.steps == 2 and cb.last_snapshot.tokens_total == 8


@pytest.mark.slow
def test_two_ranks_ddp_spawn(tmp_path: Path) -> None:
    """Two CPU processes (gloo): each rank's records carry its own rank, the world size 2, and its tokens."""
    log = tmp_path / "run.jsonl"
    cb = MFUCallback(peak_flops=PEAK, log_path=log, run="pl-ddp", warmup_steps=1)
    trainer = make_trainer([cb], devices=2, strategy="ddp_spawn", max_steps=3)
    batches = [padded_batch(i, BATCH, 16) for i in range(16)]
    trainer.fit(LlamaModule(), train_dataloaders=loader(batches))
    records = read_log(log)  # both ranks append to one file
    assert sorted(r["rank"] for r in records["run_start"]) == [0, 1]
    assert {r["world_size"] for r in records["run_start"]} == {2}
    for end in records["run_end"]:
        assert end["steps"] == 3 and end["tokens"] == 3 * ACCUM * BATCH * 16
    assert len(records["step"]) == 2 * 3


def test_validation_between_steps_counts_into_no_step(trained: dict[str, Any]) -> None:
    # validation (2 batches, VAL_PAUSE longer each) ran after step 2, between step records 1 and 2
    steps = trained["log"]["step"]
    assert len(steps) == STEPS
    assert max(s["step_seconds"] for s in steps[1:]) < VAL_PAUSE


def test_figures_reach_the_trainers_loggers(tmp_path: Path) -> None:
    """Every log_every_n_steps optimizer steps, a real CSVLogger's metrics.csv receives MFU and tokens/s under
    the names Lightning's ThroughputMonitor uses."""
    import csv

    torch.set_num_threads(1)
    cb = MFUCallback(peak_flops=PEAK, registry=CollectorRegistry(), warmup_steps=1, run="pl-logs")
    logger = L.loggers.CSVLogger(tmp_path, name="csv")
    trainer = make_trainer([cb], logger=logger, log_every_n_steps=2)
    trainer.fit(LlamaModule(), train_dataloaders=loader(llm_batches(STEPS * ACCUM)))
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/device/mfu")]
    assert [int(r["step"]) for r in rows] == list(range(2, STEPS + 1, 2))
    fpt = cb.last_snapshot.flops_per_token
    for r in rows:
        mfu, tokens_per_sec = float(r["train/device/mfu"]), float(r["train/device/tokens_per_sec"])
        assert 0 < mfu < 1 and float(r["train/mfu"]) == mfu  # one process: the run is the device
        assert float(r["train/tokens_per_sec"]) == tokens_per_sec > 0
        assert float(r["train/device/model_tflops_per_sec"]) == pytest.approx(tokens_per_sec * fpt / 1e12)
