"""Stream JSONL run logs into compact per-run columns, skipping and counting bad lines.

Memory stays bounded by the number of step records, not by the file: each step record becomes seven 8-byte
numbers in ``array`` columns (56 bytes; up to five more for the MFU-loss split's optional fields, once a
record of the run carries them), never a dict kept around. Lines are parsed a chunk at a time (one
``json.loads`` over a bracketed, comma-joined chunk, which halves the parse time of one call per line); a
chunk holding a bad line falls back to one call per line so that the bad line alone is skipped and counted.

Skip kinds (counted per kind, reported once by the caller):
``torn_line`` (the last line of a file, without its newline, that does not parse: a crash mid-write),
``not_json``, ``not_object``, ``missing_field``, ``bad_value`` (wrong type, negative, NaN), ``unknown_event``,
``clock_backwards`` (a step record older than the previous one of the same run and rank in the same file),
``repeated_step`` (a second record for the same run, rank and step: the first one is kept; counted when the
steps are merged, see ``monitor.analysis.steps``).
"""

from __future__ import annotations

import json
import os
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from monitor.schema import AlertRecord, RunEnd, RunStart

SKIP_KINDS = (
    "torn_line",
    "not_json",
    "not_object",
    "missing_field",
    "bad_value",
    "unknown_event",
    "clock_backwards",
    "repeated_step",
)

# Alerts kept per run for the report; the count covers all of them.
MAX_ALERTS_KEPT = 1000
_CHUNK_BYTES = 1 << 20
_NUMBER = frozenset((int, float))
_INT_LIMIT = 1 << 62  # step, rank and span are stored as signed 64-bit integers
_NAN = float("nan")
_INF = float("inf")


@dataclass
class StepColumns:
    """Step records of one run in arrival order, one entry per record, as compact typed arrays."""

    rank: array = field(default_factory=lambda: array("q"))
    step: array = field(default_factory=lambda: array("q"))
    time: array = field(default_factory=lambda: array("d"))
    tokens: array = field(default_factory=lambda: array("d"))
    seconds: array = field(default_factory=lambda: array("d"))
    flops: array = field(default_factory=lambda: array("d"))
    # optimizer steps the record covers (imports of tools that log every N steps); 1 for our own monitor
    span: array = field(default_factory=lambda: array("q"))
    # optional fields for the MFU-loss split (NaN where a record has none): see ``OPTIONAL_FIELDS``. Each
    # stays empty until a record has the field (logs without it cost nothing); it may be shorter than the
    # others, the missing tail being unknown (``optional``).
    input_wait: array = field(default_factory=lambda: array("d"))
    real_tokens: array = field(default_factory=lambda: array("d"))
    hardware_flops: array = field(default_factory=lambda: array("d"))
    sm_clock_ratio: array = field(default_factory=lambda: array("d"))
    pre_backward: array = field(default_factory=lambda: array("d"))

    def __len__(self) -> int:
        return len(self.step)

    def add_optional(self, column: str, values: list[float]) -> None:
        """Append the values of the records just added (NaN = unknown), padding earlier records with NaN."""
        target: array = getattr(self, column)
        if not any(v == v for v in values):  # all NaN
            return
        before = len(self.step) - len(values)
        if len(target) < before:
            target.extend([_NAN] * (before - len(target)))
        target.extend(values)

    def optional(self, column: str) -> np.ndarray:
        """An optional column as float64, as long as the others (NaN where unknown)."""
        raw = np.frombuffer(getattr(self, column), dtype=np.float64)
        if raw.shape[0] == len(self.step):
            return raw
        out = np.full(len(self.step), np.nan)
        out[: raw.shape[0]] = raw
        return out


@dataclass
class RunLog:
    """Everything read for one run: its step columns and its other records."""

    name: str
    files: list[str] = field(default_factory=list)
    columns: StepColumns = field(default_factory=StepColumns)
    starts: dict[int, dict[str, Any]] = field(default_factory=dict)
    ends: dict[int, dict[str, Any]] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    alert_count: int = 0
    # peak per rank derived from a step record's own mfu (model_flops / (step_seconds * mfu)) where no
    # run_start gave one: the writer computed mfu with that peak, so this recovers it exactly
    derived_peaks: dict[int, float] = field(default_factory=dict)


@dataclass
class FileStats:
    path: str
    lines: int = 0
    records: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


@dataclass
class LogSet:
    """The runs found in a set of log files, in order of first appearance, with the skip counts."""

    runs: dict[str, RunLog] = field(default_factory=dict)
    files: list[FileStats] = field(default_factory=list)

    @property
    def skipped(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for stats in self.files:
            total.update(stats.skipped)
        return total


def read_logs(paths: Sequence[str | os.PathLike[str]], *, per_file: bool = False) -> LogSet:
    """Read run logs; records of the same ``run`` name merge across files (one file per rank is the usual
    case).

    With ``per_file`` each file's runs stay apart (named ``file:run``), for comparing two logs of runs that
    share a name. Unreadable files raise ``OSError`` (the CLI turns it into one line); bad lines are skipped
    and counted.
    """
    logs = LogSet()
    for path in paths:
        stats = FileStats(path=str(path))
        logs.files.append(stats)
        prefix = f"{Path(path).name}:" if per_file else ""
        _read_file(Path(path), prefix, logs, stats)
    return logs


def _read_file(path: Path, prefix: str, logs: LogSet, stats: FileStats) -> None:
    last_time: dict[tuple[str, int], float] = {}
    name = str(path)
    with open(path, "rb") as handle:
        while True:
            lines = handle.readlines(_CHUNK_BYTES)
            if not lines:
                break
            stats.lines += len(lines)
            objs = _parse_chunk(lines, stats.skipped)
            if _take_clean_steps(objs, prefix, name, logs, stats, last_time):
                continue
            for obj in objs:
                _take(obj, prefix, name, logs, stats, last_time)


# step-record field -> StepColumns attribute, for the MFU-loss split (monitor.figures.attribution); optional
OPTIONAL_FIELDS: tuple[tuple[str, str], ...] = (
    ("input_wait_seconds", "input_wait"),
    ("real_tokens", "real_tokens"),
    ("hardware_flops", "hardware_flops"),
    ("sm_clock_ratio", "sm_clock_ratio"),
    ("pre_backward_seconds", "pre_backward"),
)


def _optional(value: Any) -> float:
    """A non-negative finite number, else NaN (absent, null, a bool, a string, negative: unknown)."""
    if type(value) in _NUMBER and value >= 0 and value - value == 0:
        return float(value)
    return _NAN


def _optional_column(objs: list[Any], key: str) -> list[float]:
    values = [o.get(key) for o in objs]
    if all(v is None for v in values):
        return [_NAN] * len(values)
    try:
        arr = np.array(values, dtype=np.float64)  # None -> NaN
    except (TypeError, ValueError):
        return [_optional(v) for v in values]
    if any(type(v) is bool for v in values):
        return [_optional(v) for v in values]
    arr[~(arr >= 0) | ~np.isfinite(arr)] = np.nan
    return arr.tolist()


_STEP_FIELDS = itemgetter("event", "run", "rank", "step", "time", "tokens", "step_seconds", "model_flops")
_INT = frozenset((int,))


def _take_clean_steps(
    objs: list[Any],
    prefix: str,
    path: str,
    logs: LogSet,
    stats: FileStats,
    last_time: dict[tuple[str, int], float],
) -> bool:
    """Fast path for a chunk of nothing but valid step records of one run (the common case): columns are
    checked and appended a chunk at a time. Returns False, having changed nothing, for any other chunk, which
    then goes record by record through ``_take`` (the reference: both must keep the same records)."""
    if not objs:
        return True
    try:
        rows = [_STEP_FIELDS(o) for o in objs]
        spans = [o.get("interval_steps", 1) for o in objs]
        events, runs, ranks, steps, times, tokens, seconds, flops = zip(*rows, strict=True)
        if set(events) != {"step"} or len(set(runs)) != 1 or type(runs[0]) is not str:
            return False
    except (KeyError, TypeError, AttributeError):  # not all dicts, a field missing, an unhashable value
        return False
    if not (
        set(map(type, ranks)) <= _INT
        and set(map(type, steps)) <= _INT
        and set(map(type, spans)) <= _INT
        and set(map(type, times)) <= _NUMBER
        and set(map(type, tokens)) <= _NUMBER
        and set(map(type, seconds)) <= _NUMBER
        and set(map(type, flops)) <= _NUMBER
    ):
        return False
    try:
        rank_a = np.array(ranks, dtype=np.int64)
        step_a = np.array(steps, dtype=np.int64)
        span_a = np.array(spans, dtype=np.int64)
    except OverflowError:
        return False
    time_a = np.array(times, dtype=np.float64)
    numbers = np.array((tokens, seconds, flops), dtype=np.float64)
    if (
        (rank_a < 0).any()
        or (step_a < 0).any()
        or (span_a < 1).any()
        or max(int(rank_a.max()), int(step_a.max()), int(span_a.max())) >= _INT_LIMIT  # as ``_take``
        or not np.isfinite(time_a).all()
        or not np.isfinite(numbers).all()
        or (numbers < 0).any()
    ):
        return False
    # clocks: each rank's times must not go back, within the chunk or from the file's previous record
    name = prefix + runs[0]
    order = np.argsort(rank_a, kind="stable")
    r_sorted, t_sorted = rank_a[order], time_a[order]
    same_rank = r_sorted[1:] == r_sorted[:-1]
    if (same_rank & (t_sorted[1:] < t_sorted[:-1])).any():
        return False
    firsts = np.flatnonzero(np.concatenate(([True], ~same_rank)))
    lasts = np.concatenate((firsts[1:] - 1, [r_sorted.shape[0] - 1]))
    for rank, first in zip(r_sorted[firsts].tolist(), t_sorted[firsts].tolist(), strict=True):
        previous = last_time.get((name, rank))
        if previous is not None and first < previous:
            return False
    for rank, last in zip(r_sorted[lasts].tolist(), t_sorted[lasts].tolist(), strict=True):
        last_time[(name, rank)] = last

    log = logs.runs.get(name)
    if log is None:
        log = logs.runs[name] = RunLog(name=name)
    if path not in log.files:
        log.files.append(path)
    cols = log.columns
    cols.rank.extend(ranks)
    cols.step.extend(steps)
    cols.time.extend(time_a.tolist())
    cols.tokens.extend(numbers[0].tolist())
    cols.seconds.extend(numbers[1].tolist())
    cols.flops.extend(numbers[2].tolist())
    cols.span.extend(spans)
    for field_name, column in OPTIONAL_FIELDS:
        cols.add_optional(column, _optional_column(objs, field_name))
    stats.records += len(objs)
    for rank in set(ranks) - log.derived_peaks.keys():
        for o in objs:
            if o["rank"] == rank:
                mfu, secs, flop = o.get("mfu"), o["step_seconds"], o["model_flops"]
                if isinstance(mfu, (int, float)) and 0 < mfu < _INF and secs > 0 and flop > 0:
                    log.derived_peaks[rank] = flop / (secs * mfu)
                    break
    return True


def _parse_chunk(lines: list[bytes], skipped: Counter[str]) -> list[Any]:
    try:
        objs = json.loads(b"[" + b",".join(lines) + b"]")
        if isinstance(objs, list) and len(objs) == len(lines):
            return objs
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError; nesting too deep to parse
        pass
    out = []
    for line in lines:
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except (ValueError, RecursionError):
            # only a file's last line can lack its newline: that is a write cut short
            skipped["torn_line" if not line.endswith(b"\n") else "not_json"] += 1
    return out


def _take(
    obj: Any,
    prefix: str,
    path: str,
    logs: LogSet,
    stats: FileStats,
    last_time: dict[tuple[str, int], float],
) -> None:
    skipped = stats.skipped
    if type(obj) is not dict:
        skipped["not_object"] += 1
        return
    event = obj.get("event")
    if event == "step":
        try:
            run = obj["run"]
            step = obj["step"]
            time = obj["time"]
            tokens = obj["tokens"]
            seconds = obj["step_seconds"]
            flops = obj["model_flops"]
        except KeyError:
            skipped["missing_field"] += 1
            return
        rank = obj.get("rank", 0)
        span = obj.get("interval_steps", 1)
        if (
            type(run) is not str
            or type(step) is not int
            or type(rank) is not int
            or type(span) is not int
            or type(time) not in _NUMBER
            or type(tokens) not in _NUMBER
            or type(seconds) not in _NUMBER
            or type(flops) not in _NUMBER
            or not 0 <= step < _INT_LIMIT
            or not 0 <= rank < _INT_LIMIT
            or not 1 <= span < _INT_LIMIT
            or not (tokens >= 0 and seconds >= 0 and flops >= 0)  # also false for NaN
            or time - time != 0  # NaN or infinity
            or seconds == float("inf")
            or flops == float("inf")
            or tokens == float("inf")
        ):
            skipped["bad_value"] += 1
            return
        name = prefix + run
        key = (name, rank)
        previous = last_time.get(key)
        if previous is not None and time < previous:
            skipped["clock_backwards"] += 1
            return
        last_time[key] = time
        log = logs.runs.get(name)
        if log is None:
            log = logs.runs[name] = RunLog(name=name)
        if (not log.files or log.files[-1] != path) and path not in log.files:
            log.files.append(path)
        cols = log.columns
        cols.rank.append(rank)
        cols.step.append(step)
        cols.time.append(time)
        cols.tokens.append(tokens)
        cols.seconds.append(seconds)
        cols.flops.append(flops)
        cols.span.append(span)
        for field_name, column in OPTIONAL_FIELDS:
            cols.add_optional(column, [_optional(obj.get(field_name))])
        stats.records += 1
        if rank not in log.derived_peaks:
            mfu = obj.get("mfu")
            if isinstance(mfu, (int, float)) and 0 < mfu < _INF and seconds > 0 and flops > 0:
                log.derived_peaks[rank] = flops / (seconds * mfu)
        return
    taken = _take_other(obj, prefix, skipped, logs.runs)
    if taken is None:
        return
    log = logs.runs[taken]
    if path not in log.files:
        log.files.append(path)
    stats.records += 1


def _take_other(obj: Any, prefix: str, skipped: Counter[str], runs: dict[str, RunLog]) -> str | None:
    """A record other than a step (run_start, run_end, alert), checked with the schema's model and kept in
    its run (created if new); returns the run's name, or None when the record is skipped (and counted)."""
    if type(obj) is not dict:
        skipped["not_object"] += 1
        return None
    event = obj.get("event")
    if event is None:
        skipped["missing_field"] += 1
        return None
    if type(event) is not str:
        skipped["bad_value"] += 1
        return None
    model = _OTHER_EVENTS.get(event)
    if model is None:
        skipped["unknown_event"] += 1
        return None
    try:
        record = model.model_validate(obj)
    except ValidationError as exc:
        kinds = {error["type"] for error in exc.errors()}
        skipped["missing_field" if kinds == {"missing"} else "bad_value"] += 1
        return None
    name = prefix + record.run
    log = runs.get(name)
    if log is None:
        log = runs[name] = RunLog(name=name)
    data = record.model_dump(mode="json")
    if isinstance(record, RunStart):
        log.starts.setdefault(record.rank, data)
    elif isinstance(record, RunEnd):
        log.ends[record.rank] = data
    else:
        log.alert_count += 1
        if len(log.alerts) < MAX_ALERTS_KEPT:
            log.alerts.append(data)
    return name


_OTHER_EVENTS: dict[str, type[RunStart] | type[RunEnd] | type[AlertRecord]] = {
    "run_start": RunStart,
    "run_end": RunEnd,
    "alert": AlertRecord,
}
