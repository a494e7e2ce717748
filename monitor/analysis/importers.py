"""Turn other tools' training logs into our JSONL run log (``mfu import``), for ``mfu analyze``.

Each importer reads a log into *intervals*: the optimizer steps between two logged points, with their wall
time, tokens (all devices) and, where the log or the user says, model FLOPs. Tools log every N steps with
figures averaged over the interval, so each interval becomes one step record with ``interval_steps: N`` (an
extra field of the schema); the first logged point only starts the clock unless it is step 1 (its interval
then starts at step 0).

One record stream (rank 0) stands for all ``devices`` of the run: its run_start carries ``devices`` (an extra
field; the analysis multiplies the per-device peak by it), so MFU = FLOPs / (seconds x peak x devices).

Where each figure comes from (the user's flags always win; each choice is written to the run_start as
``flops_source`` / ``peak_source`` / ``time_source``):

- hf-trainer (``trainer_state.json``): time ``train_runtime`` and tokens ``num_input_tokens_seen`` of each
  log entry (both need ``include_num_input_tokens_seen``); FLOPs per token ``total_flos`` / tokens (Hugging
  Face's estimate: 6 x non-embedding parameters, attention not counted); no peak.
- lightning-csv (CSVLogger ``metrics.csv`` with ThroughputMonitor columns): time ``train/time``, tokens
  ``train/lengths`` x world size (world size = ``train/samples_per_sec`` / ``train/device/samples_per_sec``);
  FLOPs per token ``train/device/flops_per_sec`` / ``train/device/items_per_sec``; peak
  ``train/device/flops_per_sec`` / ``train/device/mfu``.
- torchtitan (console log): time from the line timestamps, tokens ``tps`` (per device) x seconds x devices;
  FLOPs per token ``tflops`` / ``tps``; peak from the "Peak FLOPS used for computing MFU" line, else
  ``tflops`` / ``mfu``.
- megatron (console log): time ``elapsed time per iteration (ms)`` x iterations (timestamps add gaps),
  tokens ``consumed samples`` x ``seq_length``, world size and seq_length from the arguments dump; FLOPs
  ``throughput per GPU (TFLOP/s/GPU)`` x world size x seconds; no peak.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import os
import re
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from monitor.errors import InputError
from monitor.schema import RunEnd, RunStart, StepRecord, record_to_json

KINDS = ("hf-trainer", "lightning-csv", "torchtitan", "megatron")


@dataclass(frozen=True)
class ImportOptions:
    run: str | None = None  # run name; default: derived from the file name
    flops_per_token: float | None = None  # training model FLOPs per token (user)
    peak_flops_per_second: float | None = None  # per device (user)
    num_gpus: int | None = None  # devices of the run (user)
    seq_len: int | None = None  # tokens per sample, where the log counts samples
    dtype: str | None = None
    device: str | None = None  # accelerator name, for the record

    def __post_init__(self) -> None:
        for flag, value, fix in (
            ("--flops-per-token", self.flops_per_token, "pass training FLOPs per token, e.g. 6 x params"),
            ("--peak-tflops", self.peak_flops_per_second, "pass the dense peak, e.g. 989 for H100 bf16"),
        ):
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise InputError(flag, f"must be a positive number, got {value}", fix)
        if self.num_gpus is not None and self.num_gpus < 1:
            raise InputError(
                "--num-gpus", f"must be >= 1, got {self.num_gpus}", "pass the run's devices, e.g. 8"
            )
        if self.seq_len is not None and self.seq_len < 1:
            raise InputError(
                "--seq-len", f"must be >= 1, got {self.seq_len}", "pass tokens per sample, e.g. 4096"
            )


@dataclass(frozen=True)
class Interval:
    step: int  # last step of the interval
    span: int  # steps in the interval
    end_time: float  # seconds (unix, or since training began when the log has no clock: see time_source)
    seconds: float  # wall time of the interval
    tokens: float  # over all devices
    flops: float | None = None  # model FLOPs over all devices, when the log states them


@dataclass
class Imported:
    kind: str
    run: str
    intervals: list[Interval]
    devices: int
    flops_per_token: float | None = None
    flops_source: str | None = None
    peak_flops_per_second: float | None = None  # per device
    peak_source: str | None = None
    time_source: str = ""
    seq_len: int | None = None
    notes: list[str] = field(default_factory=list)

    def flops_of(self, interval: Interval) -> float | None:
        """The interval's model FLOPs: the user's FLOPs per token x tokens, else the log's own figure."""
        if self.flops_source == "user" or interval.flops is None:
            return interval.tokens * self.flops_per_token if self.flops_per_token is not None else None
        return interval.flops


def import_log(kind: str, path: str | os.PathLike[str], options: ImportOptions | None = None) -> Imported:
    """Read ``path`` as a log of ``kind`` (one of ``KINDS``)."""
    options = options or ImportOptions()
    readers = {
        "hf-trainer": _hf_trainer,
        "lightning-csv": _lightning_csv,
        "torchtitan": _torchtitan,
        "megatron": _megatron,
    }
    reader = readers.get(kind)
    if reader is None:
        raise InputError("KIND", f"unknown log kind {kind!r}", f"use one of: {', '.join(KINDS)}")
    path = Path(path)
    if path.is_dir():
        candidate = path / {"hf-trainer": "trainer_state.json", "lightning-csv": "metrics.csv"}.get(kind, "")
        if candidate.is_file():
            path = candidate
        else:
            raise InputError("FILE", f"{path} is a directory", "pass the log file itself")
    imported = reader(path, options)
    if not imported.intervals:
        raise InputError(
            "FILE", f"no training intervals found in {path} as a {kind} log", "check the file and the KIND"
        )
    # the user's figures win over the log's
    if options.flops_per_token is not None:
        imported.flops_per_token = options.flops_per_token
        imported.flops_source = "user"
    if options.peak_flops_per_second is not None:
        imported.peak_flops_per_second = options.peak_flops_per_second
        imported.peak_source = "user"
    if imported.flops_per_token is None and all(i.flops is None for i in imported.intervals):
        imported.notes.append("no model FLOPs in the log: pass --flops-per-token or --model/--config for MFU")
    if imported.peak_flops_per_second is None:
        imported.notes.append("no peak FLOP/s in the log: pass --peak-tflops or --gpu for MFU")
    return imported


def to_records(imported: Imported, options: ImportOptions | None = None) -> list[BaseModel]:
    """Our run-log records for an import: run_start, one step record per interval, run_end."""
    options = options or ImportOptions()
    first = imported.intervals[0]
    start_time = first.end_time - first.seconds
    start = RunStart(
        time=start_time,
        run=imported.run,
        rank=0,
        world_size=imported.devices,
        flops_per_token=imported.flops_per_token,
        peak_flops_per_second=imported.peak_flops_per_second,
        device=options.device,
        dtype=options.dtype,
        seq_len=imported.seq_len,
        devices=imported.devices,
        source=imported.kind,
        flops_source=imported.flops_source,
        peak_source=imported.peak_source,
        time_source=imported.time_source,
        notes=imported.notes,
    )
    out: list[BaseModel] = [start]
    capacity = (
        imported.peak_flops_per_second * imported.devices
        if imported.peak_flops_per_second is not None
        else None
    )
    for interval in imported.intervals:
        flops = imported.flops_of(interval)
        mfu = None
        if flops is not None and capacity and interval.seconds > 0:
            mfu = flops / (interval.seconds * capacity)
        out.append(
            StepRecord(
                time=interval.end_time,
                run=imported.run,
                rank=0,
                step=interval.step,
                tokens=round(interval.tokens),
                step_seconds=interval.seconds,
                model_flops=flops if flops is not None else 0.0,
                mfu=mfu,
                interval_steps=interval.span,
            )
        )
    last = imported.intervals[-1]
    out.append(
        RunEnd(
            time=last.end_time,
            run=imported.run,
            rank=0,
            steps=last.step,
            tokens=round(sum(i.tokens for i in imported.intervals)),
            seconds=last.end_time - start_time,
            reason="imported",
        )
    )
    return out


def write_records(records: list[BaseModel], out: str | os.PathLike[str]) -> Path:
    path = Path(out)
    if path.is_dir():
        raise InputError("--out", f"{path} is a directory", "pass a file name such as run.jsonl")
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record_to_json(record), separators=(",", ":"), allow_nan=False) + "\n")
    return path


def _run_name(path: Path, options: ImportOptions, fallback: str) -> str:
    if options.run:
        return options.run
    if path.stem in ("trainer_state", "metrics"):
        # <output_dir>/checkpoint-N/trainer_state.json, <save_dir>/<name>/version_N/metrics.csv
        parts = [p for p in (path.parent.parent.name, path.parent.name) if p]
        return "/".join(parts) or fallback
    return path.stem or fallback


def _devices(options: ImportOptions, from_log: int | None, imported_notes: list[str]) -> int:
    if options.num_gpus is not None:
        if from_log is not None and from_log != options.num_gpus:
            imported_notes.append(f"--num-gpus {options.num_gpus} used; the log says {from_log}")
        return options.num_gpus
    if from_log is not None:
        return from_log
    imported_notes.append("the log does not say how many devices ran: 1 assumed (pass --num-gpus)")
    return 1


# --- Hugging Face Trainer: trainer_state.json
# ----------------------------------------------------------------


def _hf_trainer(path: Path, options: ImportOptions) -> Imported:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(
            "FILE",
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})",
            "pass the Trainer's trainer_state.json",
        ) from exc
    history = state.get("log_history") if isinstance(state, dict) else None
    if not isinstance(history, list):
        raise InputError("log_history", f"missing in {path}", "pass the Trainer's trainer_state.json")
    notes: list[str] = []
    devices = _devices(options, None, notes)
    imported = Imported(
        kind="hf-trainer",
        run=_run_name(path, options, "hf-trainer"),
        intervals=[],
        devices=devices,
        time_source="train_runtime: seconds since training began (no wall clock in trainer_state.json)",
        seq_len=options.seq_len,
        notes=notes,
    )
    # training log entries: they carry "loss" (eval entries carry "eval_loss", the summary "train_loss")
    points = [
        (int(e["step"]), float(e["train_runtime"]), float(e["num_input_tokens_seen"]))
        for e in history
        if isinstance(e, dict)
        and "loss" in e
        and isinstance(e.get("step"), int)
        and isinstance(e.get("train_runtime"), (int, float))
        and isinstance(e.get("num_input_tokens_seen"), (int, float))
    ]
    if points:
        imported.intervals = _intervals_from_cumulative(points)
    else:
        imported.intervals = _hf_summary_interval(history, options, imported)
    total_flos = state.get("total_flos")
    tokens_seen = state.get("num_input_tokens_seen") or (points[-1][2] if points else None)
    if isinstance(total_flos, (int, float)) and total_flos > 0 and tokens_seen:
        imported.flops_per_token = float(total_flos) / float(tokens_seen)
        imported.flops_source = (
            "trainer_state total_flos / num_input_tokens_seen (Hugging Face's estimate: 6 x non-embedding "
            "parameters per token, attention not counted)"
        )
    return imported


def _intervals_from_cumulative(points: list[tuple[int, float, float]]) -> list[Interval]:
    """Intervals from (step, cumulative seconds, cumulative tokens) points; a counter that goes back (a
    resumed run's clock restarts) starts a new session whose first point only restarts the clock."""
    out: list[Interval] = []
    offset = 0.0
    previous: tuple[int, float, float] | None = None
    for step, runtime, tokens in points:
        if previous is None:
            if step == 1:
                out.append(Interval(step, 1, runtime, runtime, tokens))
            previous = (step, runtime, tokens)
            continue
        prev_step, prev_runtime, prev_tokens = previous
        if runtime < prev_runtime or step <= prev_step or tokens < prev_tokens:
            offset += prev_runtime  # a new session: keep time going forward
            previous = (step, runtime, tokens)
            continue
        out.append(
            Interval(step, step - prev_step, offset + runtime, runtime - prev_runtime, tokens - prev_tokens)
        )
        previous = (step, runtime, tokens)
    return out


def _hf_summary_interval(history: list[Any], options: ImportOptions, imported: Imported) -> list[Interval]:
    summary = next((e for e in reversed(history) if isinstance(e, dict) and "train_runtime" in e), None)
    if summary is None or not isinstance(summary.get("step"), int):
        raise InputError(
            "log_history",
            "no per-log train_runtime / num_input_tokens_seen and no final training summary",
            "train with TrainingArguments(include_num_input_tokens_seen=True) so that each log entry carries "
            "its time and tokens",
        )
    runtime = float(summary["train_runtime"])
    if isinstance(summary.get("train_tokens_per_second"), (int, float)):
        tokens = float(summary["train_tokens_per_second"]) * runtime
    elif isinstance(summary.get("train_samples_per_second"), (int, float)) and options.seq_len:
        tokens = float(summary["train_samples_per_second"]) * runtime * options.seq_len
    else:
        raise InputError(
            "--seq-len",
            "trainer_state.json counts samples, not tokens, and has no per-log tokens",
            "pass --seq-len (tokens per sample), or train with include_num_input_tokens_seen=True",
        )
    imported.notes.append("only the run's total is in trainer_state.json: one interval covers the whole run")
    step = int(summary["step"])
    return [Interval(step, step, runtime, runtime, tokens)]


# --- Lightning CSVLogger metrics.csv with ThroughputMonitor columns
# ------------------------------------------


def _lightning_csv(path: Path, options: ImportOptions) -> Imported:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "train/time" not in rows[0]:
        raise InputError(
            "FILE",
            f"{path} has no 'train/time' column",
            "pass the metrics.csv of a run with lightning's ThroughputMonitor callback and CSVLogger",
        )

    def num(row: dict[str, str], key: str) -> float | None:
        value = row.get(key)
        if value in (None, ""):
            return None
        try:
            out = float(value)
        except ValueError:
            return None
        return out if math.isfinite(out) else None

    samples_key = "train/samples"
    lengths_key = "train/lengths"
    logged = [r for r in rows if num(r, "train/time") is not None and num(r, "train/batches") is not None]
    # world size: Lightning writes global rates as the device rate x world size
    worlds = [
        num(r, "train/samples_per_sec") / d  # type: ignore[operator]
        for r in logged
        if (d := num(r, "train/device/samples_per_sec")) and num(r, "train/samples_per_sec") is not None
    ]
    notes: list[str] = []
    from_log = round(statistics.median(worlds)) if worlds else None
    devices = _devices(options, from_log, notes)
    has_lengths = any(num(r, lengths_key) is not None for r in logged)
    if not has_lengths and options.seq_len is None:
        raise InputError(
            "--seq-len",
            "metrics.csv has no train/lengths column (ThroughputMonitor without length_fn), only samples",
            "pass --seq-len (tokens per sample)",
        )
    points = []
    for r in logged:
        batches = num(r, "train/batches")
        count = num(r, lengths_key) if has_lengths else (num(r, samples_key) or 0.0) * (options.seq_len or 0)
        if batches is None or count is None:
            continue
        points.append((int(batches), float(num(r, "train/time") or 0.0), count * devices))
    imported = Imported(
        kind="lightning-csv",
        run=_run_name(path, options, "lightning"),
        intervals=_intervals_from_cumulative(points),
        devices=devices,
        time_source="train/time: seconds since training began (ThroughputMonitor's clock)",
        seq_len=options.seq_len,
        notes=notes,
    )
    ratios = [
        f / i
        for r in logged
        if (f := num(r, "train/device/flops_per_sec")) and (i := num(r, "train/device/items_per_sec"))
    ]
    if ratios:
        imported.flops_per_token = statistics.median(ratios)
        imported.flops_source = (
            "train/device/flops_per_sec / train/device/items_per_sec (the module's flops_per_batch)"
        )
    peaks = [
        f / m
        for r in logged
        if (f := num(r, "train/device/flops_per_sec")) and (m := num(r, "train/device/mfu"))
    ]
    if peaks:
        imported.peak_flops_per_second = statistics.median(peaks)
        imported.peak_source = (
            "train/device/flops_per_sec / train/device/mfu (ThroughputMonitor's available_flops)"
        )
    return imported


# --- torchtitan console log
# ------------------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TITAN_STEP = re.compile(
    r"(?:\[rank(?P<rank>\d+)\]:)?.*?"
    r"(?:(?P<ts>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}[,.]\d{3}).*?)?"
    r"\bstep:\s*(?P<step>\d+)\s+loss:.*?"
    r"\b(?:tps|wps):\s*(?P<tps>[\d,]+(?:\.\d+)?)"
    r"(?:\s+tflops:\s*(?P<tflops>[\d,]+(?:\.\d+)?))?"
    r"(?:\s+mfu:\s*(?P<mfu>[\d.]+)%)?"
)
_TITAN_PEAK = re.compile(r"Peak FLOPS used for computing MFU:\s*(?P<peak>[0-9.eE+-]+)")


def _lines(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            yield _ANSI.sub("", line)


def _torchtitan(path: Path, options: ImportOptions) -> Imported:
    points: dict[int, list[tuple[int, float | None, float, float | None, float | None]]] = {}
    stated_peak = None
    for line in _lines(path):
        if stated_peak is None and (m := _TITAN_PEAK.search(line)):
            stated_peak = float(m["peak"])
            continue
        m = _TITAN_STEP.search(line)
        if m is None or "validate" in line[: m.start("step")]:
            continue
        rank = int(m["rank"]) if m["rank"] else 0
        when = (
            dt.datetime.strptime(m["ts"].replace(",", "."), "%Y-%m-%d %H:%M:%S.%f")
            .replace(tzinfo=dt.timezone.utc)
            .timestamp()
            if m["ts"]
            else None
        )
        tps = float(m["tps"].replace(",", ""))
        tflops = float(m["tflops"].replace(",", "")) if m["tflops"] else None
        mfu = float(m["mfu"]) / 100.0 if m["mfu"] else None
        points.setdefault(rank, []).append((int(m["step"]), when, tps, tflops, mfu))
    if not points:
        return Imported("torchtitan", _run_name(path, options, "torchtitan"), [], 1)
    rank = min(points)
    lines = points[rank]
    notes: list[str] = []
    if len(points) > 1:
        notes.append(f"lines of {len(points)} ranks found; rank {rank}'s figures used")
    if any(when is None for _, when, *_ in lines):
        raise InputError(
            "FILE",
            "torchtitan step lines without timestamps: the interval times are unknown",
            "keep torchtitan's default log format ('[titan] <date> <time>,<ms> - root - INFO - step: ...')",
        )
    devices = _devices(options, None, notes)
    intervals = []
    previous: tuple[int, float] | None = None
    for step, when, tps, tflops, _ in lines:
        assert when is not None
        if previous is None:
            if step == 1:
                notes.append("the first logged step's start is not in the log: its interval is left out")
            previous = (step, when)
            continue
        prev_step, prev_when = previous
        if step <= prev_step or when < prev_when:
            previous = (step, when)  # a restart: the clock starts again
            continue
        seconds = when - prev_when
        flops = tflops * 1e12 * seconds * devices if tflops is not None else None
        intervals.append(Interval(step, step - prev_step, when, seconds, tps * seconds * devices, flops))
        previous = (step, when)
    imported = Imported(
        kind="torchtitan",
        run=_run_name(path, options, "torchtitan"),
        intervals=intervals,
        devices=devices,
        time_source="log line timestamps (local time of the machine, read as UTC)",
        seq_len=options.seq_len,
        notes=notes,
    )
    ratios = [tflops * 1e12 / tps for _, _, tps, tflops, _ in lines if tflops and tps]
    if ratios:
        imported.flops_per_token = statistics.median(ratios)
        imported.flops_source = "tflops / tps of the step lines (torchtitan's num_flops_per_token)"
    if stated_peak:
        imported.peak_flops_per_second = stated_peak
        imported.peak_source = "the log's 'Peak FLOPS used for computing MFU' line"
    else:
        # tflops / mfu; the line with the largest mfu has the smallest relative rounding error
        best = max(((tf, mfu) for *_, tf, mfu in lines if tf and mfu), key=lambda p: p[1], default=None)
        if best is not None:
            imported.peak_flops_per_second = best[0] * 1e12 / best[1]
            imported.peak_source = "tflops / mfu of a step line (rounded as printed)"
    return imported


# --- Megatron-LM console log
# -----------------------------------------------------------------------------------

_MEGATRON_ITER = re.compile(
    r"(?:\[(?P<ts>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})\]\s*)?"
    r"iteration\s+(?P<it>\d+)\s*/\s*\d+\s*\|(?P<fields>.*)$"
)
_MEGATRON_ARG = re.compile(r"^\s*(?P<name>world_size|seq_length)\s\.+\s(?P<value>\d+)\s*$")


def _megatron(path: Path, options: ImportOptions) -> Imported:
    args: dict[str, int] = {}
    rows: list[tuple[int, float | None, dict[str, float]]] = []
    for line in _lines(path):
        if m := _MEGATRON_ARG.match(line):
            args.setdefault(m["name"], int(m["value"]))
            continue
        m = _MEGATRON_ITER.search(line)
        if m is None:
            continue
        fields: dict[str, float] = {}
        for part in m["fields"].split("|"):
            key, sep, value = part.partition(":")
            if not sep:
                continue
            try:
                fields[key.strip()] = float(value.strip().split()[0])
            except (ValueError, IndexError):
                continue
        when = (
            dt.datetime.strptime(m["ts"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.timezone.utc).timestamp()
            if m["ts"]
            else None
        )
        rows.append((int(m["it"]), when, fields))
    notes: list[str] = []
    devices = _devices(options, args.get("world_size"), notes)
    seq_len = options.seq_len or args.get("seq_length")
    if rows and seq_len is None:
        raise InputError(
            "--seq-len",
            "the Megatron log counts samples and does not print seq_length",
            "pass --seq-len (the run's --seq-length)",
        )
    assert seq_len is not None or not rows
    intervals = []
    previous: tuple[int, float, float] | None = None  # iteration, end time, consumed samples
    clock = 0.0
    for it, when, fields in rows:
        elapsed_ms = fields.get("elapsed time per iteration (ms)")
        consumed = fields.get("consumed samples")
        if elapsed_ms is None or consumed is None:
            continue
        if previous is None:
            if it == 1 and consumed > 0:
                seconds = elapsed_ms / 1000.0
                clock = when if when is not None else seconds
                tflops = fields.get("throughput per GPU (TFLOP/s/GPU)")
                flops = tflops * 1e12 * seconds * devices if tflops is not None else None
                intervals.append(Interval(1, 1, clock, seconds, consumed * (seq_len or 0), flops))
            else:
                clock = when if when is not None else 0.0
            previous = (it, clock, consumed)
            continue
        prev_it, prev_clock, prev_consumed = previous
        if it <= prev_it or consumed < prev_consumed:
            clock = when if when is not None else prev_clock
            previous = (it, clock, consumed)
            continue
        span = it - prev_it
        seconds = elapsed_ms / 1000.0 * span
        # the printed average is exact to 0.1 ms; a later timestamp means time outside the timed iterations
        clock = max(prev_clock + seconds, when) if when is not None else prev_clock + seconds
        tflops = fields.get("throughput per GPU (TFLOP/s/GPU)")
        flops = tflops * 1e12 * seconds * devices if tflops is not None else None
        tokens = (consumed - prev_consumed) * (seq_len or 0)
        intervals.append(Interval(it, span, clock, seconds, tokens, flops))
        previous = (it, clock, consumed)
    imported = Imported(
        kind="megatron",
        run=_run_name(path, options, "megatron"),
        intervals=intervals,
        devices=devices,
        time_source="elapsed time per iteration; log timestamps (local time, read as UTC) where gaps show",
        seq_len=seq_len,
        notes=notes,
    )
    flops_total = sum(i.flops for i in intervals if i.flops is not None)
    tokens_total = sum(i.tokens for i in intervals if i.flops is not None)
    if flops_total > 0 and tokens_total > 0:
        imported.flops_per_token = flops_total / tokens_total
        imported.flops_source = (
            "throughput per GPU (TFLOP/s/GPU) x world size x seconds / tokens (Megatron's "
            "num_floating_point_operations, printed to 0.1 TFLOP/s)"
        )
    return imported
