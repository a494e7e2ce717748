"""`mfu import`: other tools' logs into our run log, checked against figures known from how each log was made.

Samples (tests/data/analysis/):
- ``lightning_metrics.csv``: written by a real ``lightning.Trainer`` with ``CSVLogger`` and
``ThroughputMonitor``
  (``run_lightning`` below; the device peak patched to 1e11 FLOP/s, since a CPU has none in Lightning's
  table);
- ``hf_trainer_state.json``: written by a real ``transformers.Trainer`` (``run_hf_trainer`` below);
- ``torchtitan.log``, ``megatron.log``: console lines in each tool's exact format from known figures
  (``make_console_samples.py``).
The live tests re-run both tools here, so a format change in an installed version shows up.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from monitor.analysis.importers import ImportOptions, import_log, to_records
from monitor.analysis.summary import AnalyzeOptions, analyze
from monitor.cli import main

DATA = Path(__file__).parent / "data" / "analysis"

# the tiny Lightning model: embedding 64x16, linear 16->64; batches of 4 x 32 tokens
SEQ, BATCH, VOCAB, HIDDEN = 32, 4, 64, 16
LIGHTNING_FLOPS_PER_TOKEN = (
    6 * HIDDEN * VOCAB
)  # 6 x (weights in the matmul) per token: 2 forward + 4 backward
LIGHTNING_PEAK = 1e11


def console_samples() -> Any:
    spec = importlib.util.spec_from_file_location("make_console_samples", DATA / "make_console_samples.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_lightning(out: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import ThroughputMonitor, throughput_monitor
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader, TensorDataset

    torch.set_num_threads(1)
    torch.manual_seed(0)
    # a CPU has no entry in Lightning's peak table: give it one, as a GPU would have
    monkeypatch.setattr(throughput_monitor, "get_available_flops", lambda device, dtype: LIGHTNING_PEAK)

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(VOCAB, HIDDEN)
            self.out = torch.nn.Linear(HIDDEN, VOCAB, bias=False)
            self.flops_per_batch = LIGHTNING_FLOPS_PER_TOKEN * BATCH * SEQ

        def training_step(self, batch: Any, index: int) -> Any:
            (x,) = batch
            return torch.nn.functional.cross_entropy(self.out(self.emb(x)).view(-1, VOCAB), x.view(-1))

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = TensorDataset(torch.randint(0, VOCAB, (BATCH * 40, SEQ)))
    monitor = ThroughputMonitor(
        batch_size_fn=lambda b: b[0].shape[0], length_fn=lambda b: b[0].numel(), window_size=5
    )
    trainer = L.Trainer(
        max_steps=40,
        logger=CSVLogger(str(out), name="tiny"),
        callbacks=[monitor],
        log_every_n_steps=5,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(Tiny(), DataLoader(data, batch_size=BATCH))
    (path,) = out.rglob("metrics.csv")
    return path


def run_hf_trainer(out: Path) -> tuple[Path, int]:
    """A 12-step GPT-2 run logging every 3 steps; returns trainer_state.json and the non-embedding
    parameters."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=64, n_positions=32))

    class Data(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 64

        def __getitem__(self, i: int) -> dict[str, Any]:
            ids = torch.randint(0, 64, (32,), generator=torch.Generator().manual_seed(i))
            return {"input_ids": ids, "labels": ids}

    args = TrainingArguments(
        output_dir=str(out),
        max_steps=12,
        per_device_train_batch_size=4,
        logging_steps=3,
        save_strategy="steps",
        save_steps=12,
        report_to=[],
        include_num_input_tokens_seen=True,
        use_cpu=True,
        disable_tqdm=True,
    )
    Trainer(model=model, args=args, train_dataset=Data()).train()
    embeddings = model.transformer.wte.weight.numel() + model.transformer.wpe.weight.numel()
    non_embedding = sum(p.numel() for p in model.parameters()) - embeddings
    (path,) = out.rglob("trainer_state.json")
    return path, non_embedding


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return [r for r in csv.DictReader(handle) if r.get("train/time")]


def check_lightning(path: Path, tmp_path: Path) -> None:
    rows = csv_rows(path)
    imported = import_log("lightning-csv", path)
    # FLOPs per token and the peak come back exactly from the module's flops_per_batch and the device peak
    assert imported.flops_per_token == pytest.approx(LIGHTNING_FLOPS_PER_TOKEN, rel=1e-9)
    assert imported.peak_flops_per_second == pytest.approx(LIGHTNING_PEAK, rel=1e-9)
    assert imported.devices == 1
    first, last = rows[0], rows[-1]
    tokens = float(last["train/lengths"]) - float(first["train/lengths"])
    seconds = float(last["train/time"]) - float(first["train/time"])
    assert sum(i.tokens for i in imported.intervals) == pytest.approx(tokens)
    assert sum(i.span for i in imported.intervals) == int(last["train/batches"]) - int(first["train/batches"])
    log = tmp_path / "lightning.jsonl"
    assert main(["import", "lightning-csv", str(path), "--out", str(log), "--json"]) == 0
    run = analyze([log], AnalyzeOptions(warmup=0)).analysis.runs[0]
    assert run.tokens == round(tokens)
    assert run.mfu.overall == pytest.approx(LIGHTNING_FLOPS_PER_TOKEN * tokens / (seconds * LIGHTNING_PEAK))


def test_lightning_golden_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    check_lightning(DATA / "lightning_metrics.csv", tmp_path)


def test_lightning_live_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    pytest.importorskip("lightning")
    path = run_lightning(tmp_path / "logs", monkeypatch)
    check_lightning(path, tmp_path)
    if not (DATA / "lightning_metrics.csv").exists():  # pragma: no cover - regenerating the sample
        shutil.copy(path, DATA / "lightning_metrics.csv")


def check_hf(path: Path, non_embedding: int, tmp_path: Path) -> None:
    state = json.loads(path.read_text())
    logs = [e for e in state["log_history"] if "loss" in e]
    imported = import_log("hf-trainer", path)
    # Hugging Face's total_flos counts 6 x non-embedding parameters per token
    assert imported.flops_per_token == pytest.approx(6 * non_embedding, rel=1e-9)
    assert imported.peak_flops_per_second is None
    tokens = logs[-1]["num_input_tokens_seen"] - logs[0]["num_input_tokens_seen"]
    assert sum(i.tokens for i in imported.intervals) == tokens
    assert [i.step for i in imported.intervals] == [e["step"] for e in logs[1:]]
    # with the user's FLOPs model and peak, MFU follows from the log's tokens and runtime
    out = tmp_path / "hf.jsonl"
    code = main(
        [
            "import",
            "hf-trainer",
            str(path),
            "--out",
            str(out),
            "--flops-per-token",
            "1e6",
            "--peak-tflops",
            "1",
        ]
    )
    assert code == 0
    run = analyze([out], AnalyzeOptions(warmup=0)).analysis.runs[0]
    seconds = logs[-1]["train_runtime"] - logs[0]["train_runtime"]
    assert run.steps == logs[-1]["step"] - logs[0]["step"]
    assert run.mfu.overall == pytest.approx(1e6 * tokens / (seconds * 1e12), rel=1e-9)


def test_hf_trainer_golden_sample(tmp_path: Path) -> None:
    facts = json.loads((DATA / "hf_trainer_state.expected.json").read_text())
    check_hf(DATA / "hf_trainer_state.json", facts["non_embedding_params"], tmp_path)


def test_hf_trainer_live_run(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    path, non_embedding = run_hf_trainer(tmp_path / "hf")
    check_hf(path, non_embedding, tmp_path)
    if not (DATA / "hf_trainer_state.json").exists():  # pragma: no cover - regenerating the sample
        shutil.copy(path, DATA / "hf_trainer_state.json")
        (DATA / "hf_trainer_state.expected.json").write_text(
            json.dumps({"non_embedding_params": non_embedding})
        )


def test_hf_trainer_without_per_log_timing_needs_seq_len(tmp_path: Path, capsys) -> None:
    state = {
        "log_history": [
            {"loss": 4.0, "step": 5, "learning_rate": 1e-4, "epoch": 0.1},
            {"train_runtime": 50.0, "train_samples_per_second": 8.0, "step": 10, "train_loss": 4.0},
        ],
        "total_flos": 0,
    }
    path = tmp_path / "trainer_state.json"
    path.write_text(json.dumps(state))
    out = tmp_path / "out.jsonl"
    assert main(["import", "hf-trainer", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--seq-len" in err
    assert main(["import", "hf-trainer", str(path), "--out", str(out), "--seq-len", "128", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["tokens"] == 50 * 8 * 128 and result["steps"] == 10
    assert any("whole run" in note for note in result["notes"])


def test_torchtitan_console_log(tmp_path: Path, capsys) -> None:
    s = console_samples()
    out = tmp_path / "titan.jsonl"
    assert (
        main(["import", "torchtitan", str(DATA / "torchtitan.log"), "--out", str(out), "--num-gpus", "8"])
        == 0
    )
    imported = import_log("torchtitan", DATA / "torchtitan.log", ImportOptions(num_gpus=s.TITAN_GPUS))
    assert imported.peak_flops_per_second == s.TITAN_PEAK  # the log's own line
    assert imported.flops_per_token == pytest.approx(
        s.TITAN_FLOPS_PER_TOKEN, rel=1e-4
    )  # tflops / tps, as printed
    steps = 100 - 1  # the first line (step 1) only starts the clock
    assert sum(i.span for i in imported.intervals) == steps
    expected_tokens = s.TITAN_LOCAL_TOKENS * steps * s.TITAN_GPUS
    assert sum(i.tokens for i in imported.intervals) == pytest.approx(expected_tokens, rel=1e-4)
    run = analyze([out], AnalyzeOptions(warmup=0)).analysis.runs[0]
    assert [(e.start_step, e.end_step) for e in run.low_mfu_episodes] == [(41, 50)]
    expected_mfu = s.TITAN_FLOPS_PER_TOKEN * 5200.0 / s.TITAN_PEAK
    assert run.mfu.median == pytest.approx(expected_mfu, rel=1e-3)


def test_megatron_console_log(tmp_path: Path) -> None:
    s = console_samples()
    out = tmp_path / "meg.jsonl"
    assert (
        main(["import", "megatron", str(DATA / "megatron.log"), "--out", str(out), "--peak-tflops", "989"])
        == 0
    )
    imported = import_log("megatron", DATA / "megatron.log")
    assert imported.devices == s.MEG_GPUS and imported.seq_len == s.MEG_SEQ  # from the arguments dump
    assert sum(i.tokens for i in imported.intervals) == 200 * s.MEG_GBS * s.MEG_SEQ
    assert imported.flops_per_token == pytest.approx(
        s.MEG_FLOPS_PER_TOKEN, rel=2e-3
    )  # TFLOP/s printed to 0.1
    run = analyze([out], AnalyzeOptions(warmup=0, threshold=0.1)).analysis.runs[0]
    assert run.steps == 200
    assert [(e.start_step, e.end_step) for e in run.low_mfu_episodes] == [(101, 110)]
    (stall,) = run.stalls
    assert stall.step == s.MEG_GAP_BEFORE + 10
    assert stall.lost_seconds == pytest.approx(s.MEG_GAP_SECONDS, abs=1.0)  # timestamps have 1 s resolution
    # MFU of a normal iteration: FLOPs per token x tokens per second per GPU / peak
    normal = s.MEG_FLOPS_PER_TOKEN * s.MEG_GBS * s.MEG_SEQ / (0.950 * s.MEG_GPUS * 989e12)
    assert run.mfu.median == pytest.approx(normal, rel=2e-3)


def test_megatron_without_seq_length_asks_for_it(tmp_path: Path, capsys) -> None:
    lines = [line for line in (DATA / "megatron.log").read_text().splitlines() if "seq_length" not in line]
    log = tmp_path / "meg.log"
    log.write_text("\n".join(lines) + "\n")
    assert main(["import", "megatron", str(log), "--out", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--seq-len" in err


def test_user_figures_override_the_log(tmp_path: Path) -> None:
    base = import_log("torchtitan", DATA / "torchtitan.log", ImportOptions(num_gpus=8))
    mine = import_log(
        "torchtitan",
        DATA / "torchtitan.log",
        ImportOptions(num_gpus=8, flops_per_token=1e10, peak_flops_per_second=5e14),
    )
    assert (mine.flops_source, mine.peak_source) == ("user", "user")
    records = [r.model_dump() for r in to_records(mine)]
    steps = [r for r in records if r["event"] == "step"]
    for record, interval in zip(steps, mine.intervals, strict=True):
        assert record["model_flops"] == pytest.approx(interval.tokens * 1e10)
        assert record["mfu"] == pytest.approx(interval.tokens * 1e10 / (interval.seconds * 5e14 * 8))
    assert base.flops_per_token != mine.flops_per_token


def test_flops_from_model_and_peak_from_gpu_name(tmp_path: Path, capsys) -> None:
    presets = pytest.importorskip("monitor.model.presets")
    catalog = pytest.importorskip("monitor.hardware.catalog")
    from monitor.model.flops import flops_per_token

    name = presets.list_presets()[0]
    gpu = catalog.all_accelerators()[0]
    dtype = next(d for d, v in gpu.peaks.items() if v)
    out = tmp_path / "t.jsonl"
    argv = ["import", "torchtitan", str(DATA / "torchtitan.log"), "--out", str(out), "--json"]
    argv += ["--model", name, "--seq-len", "2048", "--gpu", gpu.name, "--dtype", dtype]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["flops_per_token"] == pytest.approx(
        flops_per_token(presets.load_preset(name), 2048).training
    )
    assert result["peak_flops_per_second"] == gpu.peak(dtype)
    assert (
        main(["import", "torchtitan", str(DATA / "torchtitan.log"), "--out", str(out), "--model", name]) == 2
    )
    assert "--seq-len" in capsys.readouterr().err


def test_bad_files_are_one_line_errors(tmp_path: Path, capsys) -> None:
    junk = tmp_path / "junk.log"
    junk.write_text("nothing to see\n")
    out = str(tmp_path / "o.jsonl")
    for kind in ("torchtitan", "megatron", "lightning-csv", "hf-trainer"):
        assert main(["import", kind, str(junk), "--out", out]) == 2, kind
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "error" in err, (kind, err)
    with pytest.raises(SystemExit) as exit_info:
        main(["import", "wandb", str(junk), "--out", out])
    assert exit_info.value.code == 2


def test_lightning_world_size_from_global_over_device_rates(tmp_path: Path) -> None:
    """With 2 devices Lightning writes global rates = device rates x 2; tokens count both devices."""
    with open(DATA / "lightning_metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        if row.get("train/device/samples_per_sec"):
            row["train/samples_per_sec"] = str(2 * float(row["train/device/samples_per_sec"]))
    path = tmp_path / "metrics.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*rows[0].keys(), "train/samples_per_sec"])
        writer.writeheader()
        writer.writerows(rows)
    single = import_log("lightning-csv", DATA / "lightning_metrics.csv")
    double = import_log("lightning-csv", path)
    assert double.devices == 2
    assert sum(i.tokens for i in double.intervals) == 2 * sum(i.tokens for i in single.intervals)
    assert double.flops_per_token == single.flops_per_token


def test_resumed_trainer_run_keeps_time_going_forward(tmp_path: Path) -> None:
    """A resumed Trainer restarts train_runtime at 0: a new session, a new clock; time never goes back."""
    history = [
        {"loss": 1.0, "step": 10, "train_runtime": 10.0, "num_input_tokens_seen": 1000},
        {"loss": 1.0, "step": 20, "train_runtime": 20.0, "num_input_tokens_seen": 2000},
        # resumed from the step-20 checkpoint: the clock restarts, tokens continue from the checkpoint
        {"loss": 1.0, "step": 30, "train_runtime": 12.0, "num_input_tokens_seen": 3000},
        {"loss": 1.0, "step": 40, "train_runtime": 22.0, "num_input_tokens_seen": 4000},
    ]
    path = tmp_path / "trainer_state.json"
    path.write_text(json.dumps({"log_history": history}))
    imported = import_log("hf-trainer", path)
    assert [(i.step, i.seconds, i.tokens) for i in imported.intervals] == [(20, 10.0, 1000), (40, 10.0, 1000)]
    ends = [i.end_time for i in imported.intervals]
    assert ends == sorted(ends) and ends[1] == 20.0 + 22.0


def test_torchtitan_log_of_several_ranks_uses_the_lowest(tmp_path: Path) -> None:
    text = (DATA / "torchtitan.log").read_text()
    both = text + text.replace("[rank0]:", "[rank1]:")
    path = tmp_path / "two.log"
    path.write_text(both)
    imported = import_log("torchtitan", path, ImportOptions(num_gpus=8))
    single = import_log("torchtitan", DATA / "torchtitan.log", ImportOptions(num_gpus=8))
    assert [i.tokens for i in imported.intervals] == [i.tokens for i in single.intervals]
    assert any("rank 0" in note for note in imported.notes)
