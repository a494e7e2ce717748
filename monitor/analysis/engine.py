"""Run logs read, checked and merged by an embedded analytical engine (DuckDB): any number of files, in
parallel on every core, out of core with bounded memory (docs/analysis.md, "Speed and memory").

One pass reads every line of every file as text (plain, gzip ``.gz`` or zstd ``.zst``), parses it once with
the engine's JSON functions and classifies it; a bad line is counted and skipped, never an error. The
classification is that of the reference reader ``monitor.analysis.read`` (its docstring lists the skip
kinds), and the step record's fields, types and limits come from ``monitor.schema.StepRecord``: a required
field (or one with a default) that is absent, of the wrong type, outside its declared bounds or not finite
makes the record a ``missing_field`` / ``bad_value``; an optional field (default null) that is any of these
is unknown (NULL). Records are kept in a database in a private temporary folder (deleted on close): in a
temporary table when the logs take at most half the engine's memory limit, else in a table of the database
file, compressed; sorts, windows and aggregations spill to that folder past the limit, so the memory used
stays under that limit whatever the size of the logs.

Tables and views (``LogStore.sql``, ``mfu analyze --sql``):
- ``steps``: the merged step table, one row per run and step index (``STEP_COLUMNS``);
- ``records``: the step records kept (one per run, rank and step), with every field of the schema;
- ``run_info``: one row per run and rank with ``run_start``'s fields (model, device, peak, ...).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import tempfile
import types
import typing
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from glob import glob, has_magic
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from monitor.analysis.read import RunLog, _take_other
from monitor.analysis.steps import StepTable, peaks_by_rank
from monitor.errors import InputError
from monitor.schema import StepRecord

# Suffixes a directory is searched for (recursively); compressed logs are read as they are.
LOG_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json", ".json.gz", ".json.zst", ".log")
COMPRESSED_SUFFIXES = (".gz", ".zst")  # the engine reads them as they are; Python decompresses
_INT_LIMIT = 1 << 62  # step, rank and span are signed 64-bit integers

# Step-record fields the reader uses that the schema may not (yet) declare: (type, default, lower bound,
# lower bound inclusive). A declaration in ``monitor.schema.StepRecord`` wins.
_READER_FIELDS: dict[str, tuple[str, Any, float | None, bool]] = {
    "interval_steps": ("int", 1, 1, True),  # optimizer steps a record covers (imports log every N steps)
    "input_wait_seconds": ("num", None, 0, True),
    "real_tokens": ("num", None, 0, True),
    "hardware_flops": ("num", None, 0, True),
    "sm_clock_ratio": ("num", None, 0, True),
    "pre_backward_seconds": ("num", None, 0, True),
}
# Integer fields the reader has always accepted as any number (imports average tokens over an interval).
_ANY_NUMBER = frozenset({"tokens"})


@dataclass(frozen=True)
class FieldSpec:
    """One field of the step record as the engine checks it."""

    name: str
    kind: str  # "int", "num" or "str"
    required: bool
    default: Any  # None: optional (a bad value is unknown); else a bad value makes the record bad
    lower: float | None = None
    lower_inclusive: bool = True
    upper: float | None = None
    upper_inclusive: bool = True

    @property
    def strict(self) -> bool:
        return self.required or self.default is not None


def _base_kind(annotation: Any) -> str | None:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if annotation is bool:
        return None
    if annotation is int:
        return "int"
    if annotation is float:
        return "num"
    if annotation is str:
        return "str"
    return None


def step_fields() -> list[FieldSpec]:
    """The step record's scalar fields, their types and bounds, from ``monitor.schema.StepRecord`` (plus
    ``_READER_FIELDS`` the schema does not declare)."""
    out: list[FieldSpec] = []
    for name, info in StepRecord.model_fields.items():
        kind = _base_kind(info.annotation)
        if name == "event" or kind is None:
            continue
        if name in _ANY_NUMBER:
            kind = "num"
        spec: dict[str, Any] = {}
        for meta in info.metadata:
            for attr, key, inclusive in (("ge", "lower", True), ("gt", "lower", False),
                                         ("le", "upper", True), ("lt", "upper", False)):  # fmt: skip
                value = getattr(meta, attr, None)
                if value is not None:
                    spec[key] = float(value)
                    spec[f"{key}_inclusive"] = inclusive
        default = None if info.is_required() else info.get_default()
        out.append(FieldSpec(name, kind, info.is_required(), default, **spec))
    declared = {f.name for f in out}
    for name, (kind, default, lower, inclusive) in _READER_FIELDS.items():
        if name not in declared:
            out.append(FieldSpec(name, kind, False, default, lower, inclusive))
    return out


def expand_paths(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files to read: each path as given, a directory's run logs (recursively, sorted), a glob's matches
    (sorted). Raises ``OSError`` for a file that does not exist, ``InputError`` for a glob or directory that
    holds no log."""
    out: list[Path] = []
    for raw in paths:
        text = os.fspath(raw)
        path = Path(text)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(LOG_SUFFIXES)
            )
            if not found:
                raise InputError(
                    "LOG", f"{text}: no run log in this folder ({', '.join(LOG_SUFFIXES)})", "pass the files"
                )
            out.extend(found)
        elif not path.exists() and has_magic(text):
            matches = sorted(Path(p) for p in glob(text, recursive=True) if Path(p).is_file())
            if not matches:
                raise InputError("LOG", f"{text}: no file matches this pattern", "check the pattern")
            out.extend(matches)
        else:
            if not path.is_file():
                if path.exists():
                    raise InputError("LOG", f"{text}: not a file", "pass a run log or a folder of them")
                raise FileNotFoundError(2, "No such file or directory", text)
            out.append(path)
    return out


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_JSON_INTS = "('UBIGINT', 'BIGINT')"
_JSON_NUMBERS = "('UBIGINT', 'BIGINT', 'DOUBLE')"


def _valid(f: FieldSpec, value: str, jtype: str) -> str:
    """SQL condition that a field present in a record is of its type, finite and within its bounds; ``value``
    is its typed value, ``jtype`` its JSON type as ``json_type`` names it."""
    if f.kind == "str":
        return f"{jtype} = 'VARCHAR'"
    if f.kind == "int":
        conds = [f"{jtype} IN {_JSON_INTS}", f"{value} IS NOT NULL", f"abs({value}) < {_INT_LIMIT}"]
    else:
        conds = [f"{jtype} IN {_JSON_NUMBERS}", f"isfinite({value})"]
    if f.lower is not None:
        conds.append(f"{value} {'>=' if f.lower_inclusive else '>'} {f.lower!r}")
    if f.upper is not None:
        conds.append(f"{value} {'<=' if f.upper_inclusive else '<'} {f.upper!r}")
    return "(" + " AND ".join(conds) + ")"


def _other_fields() -> list[str]:
    """Fields of run_start, run_end and alert records: those the schema declares, and those the analysis reads
    that it may not (yet) declare."""
    from monitor.schema import AlertRecord, RunEnd, RunStart

    names: list[str] = []
    for model in (RunStart, RunEnd, AlertRecord):
        names.extend(n for n in model.model_fields if n not in names)
    names.extend(n for n in ("devices", "warmup_steps") if n not in names)
    return names


def _sql_type(f: FieldSpec) -> str:
    return {"int": "BIGINT", "num": "DOUBLE", "str": "VARCHAR"}[f.kind]


def _default_sql(f: FieldSpec) -> str:
    if f.kind == "str":
        return _sql_str(str(f.default))
    return repr(f.default) if f.kind == "num" else str(int(f.default))


@dataclass
class FileCounts:
    path: str
    lines: int = 0
    records: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


# the MFU-loss split's optional fields (``monitor.figures.attribution``)
SPLIT_FIELDS = (
    "input_wait_seconds",
    "real_tokens",
    "hardware_flops",
    "sm_clock_ratio",
    "pre_backward_seconds",
)
STEP_COLUMNS = (
    ("run", "run name"),
    ("step", "step index (the last optimizer step the row covers)"),
    ("span", "optimizer steps the row covers (1 unless imported from a tool that logs every N steps)"),
    ("time_end", "unix seconds the step ended (latest rank)"),
    ("seconds", "step wall time: the slowest rank's step_seconds"),
    ("tokens", "tokens, sum over ranks"),
    ("model_flops", "model FLOPs, sum over ranks"),
    ("peak", "sum of the reporting ranks' peak FLOP/s (NULL if any is unknown)"),
    ("nranks", "ranks that reported the step"),
    ("slowest_rank", "rank with the longest step_seconds (the lowest such rank)"),
    ("mfu", "model_flops / (seconds x peak); NULL where the peak is unknown or seconds is 0"),
)


class LogStore:
    """Logs loaded into a private DuckDB database; ``close()`` (or ``with``) deletes it."""

    def __init__(
        self, memory_limit: str | None = None, threads: int | None = None, in_memory: bool | None = None
    ) -> None:
        """``in_memory``: keep the records in a temporary table (True) or in the database file, compressed
        (False); by default, in memory when the logs take at most half the engine's memory limit."""
        self.in_memory = in_memory

        self.folder = Path(tempfile.mkdtemp(prefix="mfu-analyze-"))
        config: dict[str, str | bool | int | float | list[str]] = {
            "preserve_insertion_order": True,  # a table's rowid is then the line's place in the input
            "temp_directory": str(self.folder / "spill"),
        }
        if threads:
            config["threads"] = threads
        if memory_limit:
            config["memory_limit"] = memory_limit
        self.con = duckdb.connect(str(self.folder / "logs.duckdb"), config=config)
        self.con.execute("SET enable_progress_bar = false")  # nothing on the user's terminal
        self.fields = step_fields()
        self.files: list[FileCounts] = []
        self.runs: dict[str, RunLog] = {}
        self.repeated: dict[str, int] = {}
        self.ranks: dict[str, set[int]] = {}
        self.split_fields: dict[str, list[str]] = {}

    def __enter__(self) -> LogStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.con.close()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _memory_limit(self) -> float:
        """The engine's memory limit in bytes, as it reports it (e.g. ``1.8 GiB``)."""
        row = self.con.execute("SELECT current_setting('memory_limit')").fetchone()
        text = str(row[0]) if row else ""
        match = re.fullmatch(r"([\d.]+)\s*([KMGTP]?)(i?)B", text.strip())
        if not match:
            return float("inf")  # no limit
        number, prefix, binary = match.groups()
        return float(number) * (1024 if binary else 1000) ** " KMGTP".index(prefix or " ")

    # --- loading ---------------------------------------------------------------------------------------
    def load(self, paths: Sequence[Path], per_file: bool = False) -> None:
        """Read, parse and classify every line of ``paths`` (one pass, in parallel), then the records."""
        self.paths = [str(p) for p in paths]
        self.files = [FileCounts(path=p) for p in self.paths]
        fields = self.fields
        # each line is parsed twice by the engine, both vectorised: once into typed values
        # (``json_transform``), once for the JSON type of each field (``json_type``), which tells an integer
        # from a float, a string or a bool exactly as the reference reader does
        struct = (
            "{" + ", ".join(['"event": "VARCHAR"', *(f'"{f.name}": "{_sql_type(f)}"' for f in fields)]) + "}"
        )
        json_paths = "[" + ", ".join(["'$.event'", *(_sql_str(f"$.{f.name}") for f in fields)]) + "]"
        jtype = {f.name: f'"t_{f.name}"' for f in fields}
        value = {f.name: f'"v_{f.name}"' for f in fields}
        unpack = ", ".join(
            [f't[{i + 2}] AS {jtype[f.name]}, x."{f.name}" AS {value[f.name]}' for i, f in enumerate(fields)]
        )
        missing = " OR ".join(f"{jtype[f.name]} IS NULL" for f in fields if f.required) or "false"
        checks = []
        for f in fields:
            if f.strict:
                valid = _valid(f, value[f.name], jtype[f.name])
                checks.append(valid if f.required else f"({jtype[f.name]} IS NULL OR {valid})")
        good = " AND ".join(checks) or "true"
        # the fast path reads a JSON null as absent: a step record missing a required field or its rank may
        # hold a null there instead (a bad value), which only the line-by-line path tells apart
        ambiguous = (
            " OR ".join(
                f"{jtype[f.name]} IS NULL" for f in fields if f.required or (f.strict and f.name == "rank")
            )
            or "false"
        )
        # plain boolean columns first (vectorised), then one CASE over them
        step_kind = (
            "CASE WHEN has_missing THEN 'missing_field' WHEN NOT all_good THEN 'bad_value' ELSE 'step' END"
        )
        blank = "line IS NULL OR trim(line, ' \t\r\n\f\v') = ''"
        # (the fast path has no line text: each of its lines is a JSON object)
        is_object = "CASE WHEN line IS NULL THEN true ELSE json_type(coalesce(fixed, line)) = 'OBJECT' END"
        kind = f"""CASE
            WHEN invalid THEN (CASE WHEN {blank} THEN 'blank' WHEN json_valid(line) THEN 'not_object'
                                    ELSE 'not_json' END)
            WHEN t_event IS NULL THEN (CASE WHEN {is_object} THEN 'missing_field' ELSE 'not_object' END)
            WHEN t_event = 'NULL' THEN 'missing_field'
            WHEN t_event <> 'VARCHAR' THEN 'bad_value'
            WHEN event = 'step' AND nulls_unknown AND ({ambiguous}) THEN 'recheck'
            WHEN event = 'step' THEN {step_kind}
            WHEN event IN ('run_start', 'run_end', 'alert') THEN 'other'
            ELSE 'unknown_event' END"""
        cols = []
        for f in fields:
            out = value[f.name]
            if f.strict and not f.required:
                out = f"coalesce({out}, {_default_sql(f)})"
            elif not f.strict:
                out = f"CASE WHEN {_valid(f, out, jtype[f.name])} THEN {out} END"
            cols.append(f'{out} AS "{f.name}"')  # read only where kind = 'step'
        prefixes = "[" + ", ".join(_sql_str(f"{Path(p).name}:") for p in self.paths) + "]"
        name = f"list_extract({prefixes}, f + 1) || v_run" if per_file else "v_run"
        files = "[" + ", ".join(_sql_str(p) for p in self.paths) + "]"

        def tail(line: str) -> str:
            return f"""
            checked AS (
                SELECT *, ({missing}) AS has_missing, coalesce(({good}), false) AS all_good FROM unpacked),
            classified AS (SELECT *, {kind} AS kind FROM checked)
            SELECT f, kind, {name} AS name, {", ".join(cols)},
                CASE WHEN kind = 'other' THEN {line} END AS line
            FROM classified"""

        # records that fit in half the engine's memory stay in a temporary table (in memory, fastest); more
        # go to the database file, compressed: less disk than a spilled temporary table and less memory (at
        # 20 M records 0.4 GB on disk and 1.6 GB peak memory, against 1.6 GB and 2.4 GB)
        in_memory = self.in_memory
        if in_memory is None:
            in_memory = _input_bytes(paths) <= self._memory_limit() / 2
        table = "TEMP TABLE" if in_memory else "TABLE"
        self.fast = True
        try:
            # fast path: the engine's own NDJSON reader, each field as its JSON text, for logs whose every
            # line is a JSON object; a line it cannot tell exactly is a 'recheck' (then the next path)
            self.con.execute(f"CREATE {table} _lines AS {self._fast_select(files, name)}")
            if self.con.execute("SELECT count(*) FROM _lines WHERE kind = 'recheck'").fetchone() != (0,):
                raise duckdb.InvalidInputException("a line only the line-by-line path tells exactly")
        except (duckdb.InvalidInputException, duckdb.ConversionException):
            # a line that is not a JSON object somewhere: every line as text, parsed and classified one by one
            self.fast = False
            self.con.execute("DROP TABLE IF EXISTS _lines")
            source = self._lines(files, struct, json_paths, unpack)
            self.con.execute(f"CREATE {table} _lines AS WITH {source}, {tail('line')}")
        self._count_lines()
        self._accept()
        self._others(per_file)
        self._describe_runs()

    def _lines(self, files: str, struct: str, json_paths: str, unpack: str) -> str:
        """The line-by-line source: ``unpacked`` (f, line, fixed, invalid, event, t_event, t_/v_ per
        field)."""
        # Python's json module reads NaN and Infinity, which JSON does not have: such a line is read with
        # them as null (unknown), which every check treats as the reference reader treats NaN and Infinity
        fixed = "regexp_replace(line, '-?\\bInfinity\\b|\\bNaN\\b', 'null', 'g')"
        return f"""
            src AS (
                SELECT file_index::INTEGER AS f, line FROM read_csv({files}, columns={{'line': 'VARCHAR'}},
                    delim='\\x01', quote='', escape='', header=false, auto_detect=false, strict_mode=false,
                    max_line_size=16777216, ignore_errors=true, store_rejects=true)),
            first AS (SELECT f, line, try(json_transform(line, '{struct}')) AS x0 FROM src),
            second AS (
                SELECT f, line, x0, CASE WHEN x0 IS NULL AND regexp_matches(line, 'NaN|Infinity')
                    THEN {fixed} END AS fixed
                FROM first),
            parsed AS (
                SELECT f, line, fixed, coalesce(x0, try(json_transform(fixed, '{struct}'))) AS x,
                    CASE WHEN x0 IS NOT NULL THEN json_type(line, {json_paths})
                         WHEN fixed IS NOT NULL THEN try(json_type(fixed, {json_paths})) END AS t
                FROM second),
            unpacked AS (
                SELECT f, line, fixed, x IS NULL AS invalid, false AS nulls_unknown, x.event AS event,
                    t[1] AS t_event, {unpack}
                FROM parsed)"""

    def _fast_select(self, files: str, name: str) -> str:
        """The fast path's query: DuckDB's NDJSON reader, each field read as its JSON text (a JSON null and a
        missing field both NULL), the same columns as the line-by-line path. Each field's value is its text
        cast to the field's type: a cast that fails is a token of another type (a string, a bool, an object),
        an integer field's text with a point or an exponent is a float (the reader writes every float with
        one). A line it cannot tell exactly is kind 'recheck': a step record with a required field or its
        rank NULL (null or missing?), a line with no field the reader knows (``null``, ``{}``?), a token
        such as ``nan`` or ``inf`` that the engine reads and Python's json module does not. ``line`` (for
        run_start, run_end and alert records) is rebuilt from the fields the schema declares for them. Fails
        (an engine error) on any line that is not a JSON object."""
        keys = ["event", *(f.name for f in self.fields)]
        for key in _other_fields():
            if key not in keys:
                keys.append(key)
        columns = "{" + ", ".join(f"{_sql_str(k)}: 'JSON'" for k in keys) + "}"
        text = {k: f'"k_{i}"' for i, k in enumerate(keys)}
        raw = ", ".join(f'"{k}"::VARCHAR AS {text[k]}' for k in keys)
        # a finite value or a token Python's json module reads (NaN, Infinity and overflowing numbers are
        # bad values to both); a text that is none of these is an engine-only literal such as nan or inf
        python_literal = "'NaN', 'Infinity', '-Infinity'"

        def engine_only(t: str) -> str:
            as_double = f"TRY_CAST({t} AS DOUBLE)"
            return (
                f"({as_double} IS NOT NULL AND NOT isfinite({as_double}) AND {t} NOT IN ({python_literal})"
                f" AND NOT regexp_matches({t}, '^-?[0-9]'))"
            )

        values, oks, checks, cols = [], [], [], []
        for f in self.fields:
            t, v, ok = text[f.name], f'"v_{f.name}"', f'"ok_{f.name}"'
            if f.kind == "str":
                value = (
                    f"CASE WHEN left({t}, 1) = '\"' THEN (CASE WHEN contains({t}, '\\') "
                    f"THEN json_extract_string({t}, '$') ELSE {t}[2:-2] END) END"
                )
                is_ok = f"{v} IS NOT NULL"
            elif f.kind == "int":
                value = f"TRY_CAST({t} AS BIGINT)"
                point = f"contains({t}, '.') OR contains({t}, 'e') OR contains({t}, 'E')"
                is_ok = f"({v} IS NOT NULL AND NOT ({point}))"
            else:
                value = f"TRY_CAST({t} AS DOUBLE)"
                is_ok = f"coalesce(isfinite({v}), false)"
            values.append(f"{value} AS {v}")
            oks.append(f"{is_ok} AS {ok}")
            bounds = []
            if f.kind == "int":
                bounds.append(f"abs({v}) < {_INT_LIMIT}")
            if f.lower is not None:
                bounds.append(f"{v} {'>=' if f.lower_inclusive else '>'} {f.lower!r}")
            if f.upper is not None:
                bounds.append(f"{v} {'<=' if f.upper_inclusive else '<'} {f.upper!r}")
            valid = " AND ".join([ok, *bounds])
            if f.strict:
                checks.append(f"({t} IS NULL OR ({valid}))")
            out = v
            if f.strict and not f.required:
                out = f"coalesce({v}, {_default_sql(f)})"
            elif not f.strict:
                out = f"CASE WHEN {valid} THEN {v} END"
            cols.append(f'{out} AS "{f.name}"')  # read only where kind = 'step'
        step_texts = [text[f.name] for f in self.fields]
        well_typed = " AND ".join(f'({text[f.name]} IS NULL OR "ok_{f.name}")' for f in self.fields)
        odd = " OR ".join(engine_only(t) for t in [text["event"], *step_texts])
        ambiguous = " OR ".join(
            f"{text[f.name]} IS NULL" for f in self.fields if f.required or (f.strict and f.name == "rank")
        )
        empty = f"coalesce({', '.join(text.values())}) IS NULL"
        event = text["event"]
        event_value = (
            f"CASE WHEN left({event}, 1) = '\"' THEN (CASE WHEN contains({event}, '\\') "
            f"THEN json_extract_string({event}, '$') ELSE {event}[2:-2] END) END"
        )
        # the cheap tests first: a clean step record costs a few boolean columns
        kind = f"""CASE
            WHEN {event} = '"step"' AND NOT ({ambiguous}) AND well_typed
                THEN (CASE WHEN all_good THEN 'step' ELSE 'bad_value' END)
            WHEN {odd} THEN 'recheck'
            WHEN {event} IS NULL THEN (CASE WHEN {empty} THEN 'recheck' ELSE 'missing_field' END)
            WHEN left({event}, 1) <> '"' THEN 'bad_value'
            WHEN {event} = '"step"' AND ({ambiguous}) THEN 'recheck'
            WHEN {event} = '"step"' THEN (CASE WHEN all_good THEN 'step' ELSE 'bad_value' END)
            WHEN {event_value} IN ('run_start', 'run_end', 'alert') THEN 'other'
            ELSE 'unknown_event' END"""
        pairs = ", ".join(
            f"CASE WHEN {text[k]} IS NOT NULL THEN {_sql_str(json.dumps(k) + ':')} || {text[k]} END"
            for k in keys
        )
        return f"""
            WITH src AS (
                SELECT file_index::INTEGER AS f, {raw}
                FROM read_json({files}, format='newline_delimited', columns={columns},
                               maximum_object_size=16777216)),
            typed AS (SELECT *, {", ".join(values)} FROM src),
            checked AS (
                SELECT *, {", ".join(oks)} FROM typed),
            classified AS (
                SELECT *, ({well_typed}) AS well_typed, coalesce(({" AND ".join(checks) or "true"}), false)
                    AS all_good
                FROM checked),
            kinds AS (SELECT *, {kind} AS kind FROM classified)
            SELECT f, kind, {name} AS name, {", ".join(cols)},
                CASE WHEN kind = 'other' THEN '{{' || concat_ws(',', {pairs}) || '}}' END AS line
            FROM kinds"""

    def _count_lines(self) -> None:
        rows = self.con.execute(
            "SELECT f, kind, count(*) FROM _lines GROUP BY ALL ORDER BY f, kind"
        ).fetchall()
        last_kind = dict(
            self.con.execute(
                "SELECT f, kind FROM _lines WHERE rowid IN (SELECT max(rowid) FROM _lines GROUP BY f)"
            ).fetchall()
        )
        for f, kind, n in rows:
            stats = self.files[f]
            stats.lines += n
            if kind not in ("blank", "step", "other"):
                stats.skipped[kind] += n
        rejects = (
            []
            if self.fast
            else self.con.execute(
                "SELECT s.file_path, e.line FROM reject_errors e JOIN reject_scans s USING (scan_id, file_id)"
            ).fetchall()
        )
        reject_lines: dict[int, list[int]] = {}
        by_path: dict[str, list[int]] = {}
        for i, p in enumerate(self.paths):
            by_path.setdefault(p, []).append(i)
        for path, line in rejects:
            index = by_path.get(path, [0])[0]
            reject_lines.setdefault(index, []).append(int(line))
        for index, stats in enumerate(self.files):
            lines = reject_lines.get(index, [])
            stats.lines += len(lines)
            last_is_reject = bool(lines) and max(lines) == stats.lines
            stats.skipped["not_json"] += len(lines)
            # only a file's last line can lack its newline: a not-JSON last line without one is a torn write
            if (last_is_reject or last_kind.get(index) == "not_json") and not _ends_with_newline(
                Path(stats.path)
            ):
                stats.skipped["not_json"] -= 1
                stats.skipped["torn_line"] += 1
            for kind in [k for k, v in stats.skipped.items() if not v]:
                del stats.skipped[kind]

    def _accept(self) -> None:
        """The step records kept (``_records``): those whose clock does not go back (per file, run and rank)
        and the first of each (run, rank, step). One ordered pass (``_order_is_plain``) usually proves there
        is nothing to drop; the drops are searched in SQL only where it does not."""
        self.con.execute("CREATE TEMP TABLE _dropped (seq BIGINT, why VARCHAR, f INTEGER)")
        clocks_plain, steps_plain = self._order_is_plain()
        if not clocks_plain:
            self.con.execute("""
                INSERT INTO _dropped
                SELECT seq, 'clock_backwards', f FROM (
                    SELECT rowid AS seq, f, time, max(time) OVER (PARTITION BY f, hash(name), rank
                        ORDER BY rowid ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before
                    FROM _lines WHERE kind = 'step')
                WHERE time < before
            """)
        clocks = not clocks_plain and self.con.execute("SELECT count(*) FROM _dropped").fetchone() != (0,)
        kept = "kind = 'step'" + (
            " AND rowid NOT IN (SELECT seq FROM _dropped WHERE why = 'clock_backwards')" if clocks else ""
        )
        repeats = (
            (0,)
            if steps_plain
            else self.con.execute(
                f"SELECT count(*) - count(DISTINCT (name, rank, step)) FROM _lines WHERE {kept}"
            ).fetchone()
        )
        if repeats != (0,):
            self.con.execute(f"""
                INSERT INTO _dropped
                WITH kept AS (SELECT rowid AS seq, name, rank, step FROM _lines WHERE {kept}),
                repeated AS (SELECT name, rank, step FROM kept GROUP BY ALL HAVING count(*) > 1)
                SELECT seq, 'repeated_step', NULL FROM (
                    SELECT seq, row_number() OVER (PARTITION BY name, rank, step ORDER BY seq) AS n
                    FROM kept SEMI JOIN repeated USING (name, rank, step))
                WHERE n > 1
            """)
        names = ", ".join(f'"{f.name}"' for f in self.fields)
        self.con.execute(
            f"CREATE VIEW _accepted AS SELECT rowid AS seq, f, name, {names} FROM _lines WHERE {kept}"
        )
        repeated = (
            " WHERE seq NOT IN (SELECT seq FROM _dropped WHERE why = 'repeated_step')"
            if repeats != (0,)
            else ""
        )
        self.con.execute(f"CREATE VIEW _records AS SELECT * EXCLUDE (seq, f) FROM _accepted{repeated}")
        steps = dict(
            self.con.execute("SELECT f, count(*) FROM _lines WHERE kind = 'step' GROUP BY f").fetchall()
        )
        backwards = dict(
            self.con.execute(
                "SELECT f, count(*) FROM _dropped WHERE why = 'clock_backwards' GROUP BY f"
            ).fetchall()
        )
        for index, stats in enumerate(self.files):
            stats.records += steps.get(index, 0) - backwards.get(index, 0)
            if backwards.get(index):
                stats.skipped["clock_backwards"] += backwards[index]
        self.repeated = dict(
            self.con.execute("""
                SELECT l.name, count(*) FROM _dropped d JOIN _lines l ON l.rowid = d.seq
                WHERE d.why = 'repeated_step' GROUP BY l.name
            """).fetchall()
        )

    def _order_is_plain(self, chunk: int = 1 << 20) -> tuple[bool, bool]:
        """One pass over the step records in file order, a chunk of lines at a time (bounded memory), for
        the two tests that usually prove nothing is to be dropped: (every record's time is at least that of
        the record before it of the same file, run and rank; every record's step is above that of the record
        before it of the same run and rank, whatever the file). Both hold for a log written by one monitor
        per rank; a False only means the exact searches must run.

        Records are grouped by a 64-bit key of (run, rank) (a hash of the run name mixed with the rank):
        records of two groups that share a key are checked as one sequence, which holds only if each of the
        two does, so a clash can cost time, never a record. The clock test takes each file's lines to come as
        one block (the reader keeps the files' order); it fails if they do not."""
        rows = self.con.execute("SELECT coalesce(max(rowid) + 1, 0) FROM _lines").fetchone()
        total = int(rows[0]) if rows else 0
        carry: dict[int, tuple[int, float, int]] = {}  # group -> (file, time, step) of its latest record
        clocks, steps = True, True
        last_file = -1
        for lo in range(0, total, chunk):
            data = self.con.execute(
                "SELECT hash(name) AS n, rank, f, time, step FROM _lines "
                "WHERE kind = 'step' AND rowid >= ? AND rowid < ?",  # in file order (insertion order kept)
                [lo, lo + chunk],
            ).fetchnumpy()
            names = np.asarray(data["n"], dtype=np.uint64)
            if names.shape[0] == 0:
                continue
            ranks = np.asarray(data["rank"], dtype=np.int64)
            files = np.asarray(data["f"], dtype=np.int64)
            if files[0] < last_file or (files[1:] < files[:-1]).any():
                clocks = False  # a file's lines not in one block: leave it to the exact search
            last_file = int(files[-1])
            key = names ^ (ranks.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))  # wraps: a mix, not a sum
            if (names == names[0]).all() and int(ranks.max()) < 1 << 16:
                order = np.argsort(ranks.astype(np.uint16), kind="stable")  # one run: by rank (a radix sort)
            else:
                order = np.argsort(key, kind="stable")  # by group, each group in file order
            g, f = key[order], files[order]
            t = np.asarray(data["time"], dtype=np.float64)[order]
            st = np.asarray(data["step"], dtype=np.int64)[order]
            same = g[1:] == g[:-1]
            if (same & (f[1:] == f[:-1]) & (t[1:] < t[:-1])).any():
                clocks = False
            if (same & (st[1:] <= st[:-1])).any():
                steps = False
            starts = np.flatnonzero(np.concatenate(([True], ~same)))
            ends = np.concatenate((starts[1:] - 1, [g.shape[0] - 1]))
            for group, first, last in zip(g[starts].tolist(), starts.tolist(), ends.tolist(), strict=True):
                before = carry.get(group)
                if before is not None:
                    if before[0] == f[first] and t[first] < before[1]:
                        clocks = False
                    if st[first] <= before[2]:
                        steps = False
                carry[group] = (int(f[last]), float(t[last]), int(st[last]))
            if not clocks and not steps:
                break
        return clocks, steps

    def _others(self, per_file: bool) -> None:
        """run_start, run_end and alert records (a few per rank), checked by the schema's models in order."""
        order: dict[str, int] = {}
        files_of: dict[str, list[tuple[int, int]]] = {}
        # one pass over the records kept: each run's first record per file, its ranks, the peak per rank
        # derived from the first record with an mfu, and the split's optional fields present
        derivable = "mfu > 0 AND step_seconds > 0 AND model_flops > 0"
        counts = ", ".join(f'count("{c}")' for c in SPLIT_FIELDS)
        derived: dict[tuple[str, int], tuple[int, float]] = {}
        self.ranks_seen: dict[str, set[int]] = {}
        self.split_counts: dict[str, list[int]] = {}
        for run, f, rank, first, first_derivable, peak, *known in self.con.execute(f"""
            SELECT name, f, rank, min(seq), min(seq) FILTER (WHERE {derivable}),
                arg_min(model_flops / (step_seconds * mfu), seq) FILTER (WHERE {derivable}), {counts}
            FROM _accepted GROUP BY name, f, rank
        """).fetchall():
            if run not in order or first < order[run]:
                order[run] = first
            files_of.setdefault(run, []).append((first, f))
            self.ranks_seen.setdefault(run, set()).add(int(rank))
            total = self.split_counts.setdefault(run, [0] * len(SPLIT_FIELDS))
            self.split_counts[run] = [a + b for a, b in zip(total, known, strict=True)]
            if first_derivable is not None:
                key = (run, int(rank))
                if key not in derived or first_derivable < derived[key][0]:
                    derived[key] = (first_derivable, peak)
        self.derived = [(run, rank, peak) for (run, rank), (_, peak) in derived.items()]
        logs: dict[str, RunLog] = {}
        cursor = self.con.execute("SELECT rowid, f, line FROM _lines WHERE kind = 'other' ORDER BY rowid")
        while True:
            batch = cursor.fetchmany(10_000)
            if not batch:
                break
            for seq, f, line in batch:
                stats = self.files[f]
                try:
                    obj = json.loads(line)
                except (ValueError, RecursionError):
                    stats.skipped["not_json"] += 1
                    continue
                prefix = f"{Path(stats.path).name}:" if per_file else ""
                name = _take_other(obj, prefix, stats.skipped, logs)
                if name is None:
                    continue
                stats.records += 1
                if name not in order or seq < order[name]:
                    order[name] = seq
                files_of.setdefault(name, []).append((seq, f))
        for name in sorted(order, key=order.__getitem__):
            log = logs.get(name) or RunLog(name=name)
            seen: list[str] = []
            for _, f in sorted(files_of.get(name, [])):
                if self.paths[f] not in seen:
                    seen.append(self.paths[f])
            log.files = seen
            self.runs[name] = log
        for name, rank, peak in self.derived:
            self.runs[name].derived_peaks[int(rank)] = float(peak)

    def _describe_runs(self) -> None:
        self.ranks = {name: set(log.starts) for name, log in self.runs.items()}
        for name, ranks in self.ranks_seen.items():
            self.ranks[name].update(ranks)
        counts = ", ".join(f'count("{c}")' for c in SPLIT_FIELDS)
        known_by_name: dict[str, list[int]] = dict(self.split_counts)
        if self.repeated:  # the records kept differ from those accepted only by repeats
            for run, *known in self.con.execute(
                f"SELECT name, {counts} FROM _records GROUP BY name"
            ).fetchall():
                known_by_name[run] = known
        for run, known in known_by_name.items():
            self.split_fields[run] = [c for c, n in zip(SPLIT_FIELDS, known, strict=True) if n]

    # --- the merge ------------------------------------------------------------------------------------------
    def step_tables(self, peak_override: float | None) -> dict[str, StepTable]:
        """Merge each run's records by step index (``monitor.analysis.steps`` conventions) and create the
        ``steps`` view."""
        self.con.execute("CREATE OR REPLACE TEMP TABLE _peaks (name VARCHAR, rank BIGINT, peak DOUBLE)")
        self.rank_peaks = {name: peaks_by_rank(log, peak_override) for name, log in self.runs.items()}
        rows = [(name, rank, peak) for name, peaks in self.rank_peaks.items() for rank, peak in peaks.items()]
        if rows:
            self.con.executemany("INSERT INTO _peaks VALUES (?, ?, ?)", rows)
        self.con.execute("""
            CREATE OR REPLACE TEMP TABLE _steps AS
            SELECT r.name AS run, step, max(interval_steps) AS span, max(time) AS time_end,
                max(step_seconds) AS seconds, sum(tokens) AS tokens, sum(model_flops) AS model_flops,
                CASE WHEN count(p.peak) = count(*) THEN sum(p.peak) END AS peak, count(*) AS nranks,
                arg_max(r.rank, (step_seconds, -r.rank)) AS slowest_rank
            FROM _records r LEFT JOIN _peaks p ON p.name = r.name AND p.rank = r.rank
            GROUP BY r.name, step ORDER BY r.name, step
        """)
        self.con.execute("""
            CREATE OR REPLACE VIEW steps AS SELECT *,
                CASE WHEN seconds * peak > 0 THEN model_flops / (seconds * peak) END AS mfu FROM _steps
        """)
        out: dict[str, StepTable] = {}
        for name in self.runs:
            # one run at a time, without its name (a column of strings costs more to fetch than the rest);
            # the table is stored in step order
            data = self.con.execute(
                "SELECT step, span, time_end, seconds, tokens, model_flops, coalesce(peak, 'NaN'::DOUBLE) "
                "AS peak, nranks, slowest_rank FROM _steps WHERE run = ?",
                [name],
            ).fetchnumpy()

            def col(key: str, dtype: Any, data: dict[str, Any] = data) -> np.ndarray:
                return np.ascontiguousarray(np.asarray(data[key]), dtype=dtype)

            out[name] = StepTable(
                step=col("step", np.int64),
                span=col("span", np.int64),
                time_end=col("time_end", np.float64),
                seconds=col("seconds", np.float64),
                tokens=col("tokens", np.float64),
                flops=col("model_flops", np.float64),
                peak=col("peak", np.float64),
                nranks=col("nranks", np.int64),
                slowest_rank=col("slowest_rank", np.int64),
                repeated=int(self.repeated.get(name, 0)),
                rank_peaks=self.rank_peaks[name],
            )
        return out

    def rank_figures(self, name: str) -> list[tuple[int, int, float, float]]:
        """(rank, records, median step_seconds, mean step_seconds) per rank of a run, by rank."""
        return [
            (int(r), int(n), float(med), float(mean))
            for r, n, med, mean in self.con.execute(
                "SELECT rank, count(*), quantile_cont(step_seconds, 0.5), avg(step_seconds) FROM _records "
                "WHERE name = ? GROUP BY rank ORDER BY rank",
                [name],
            ).fetchall()
        ]

    def record_chunks(self, name: str, bounds: Sequence[tuple[int, int]]) -> Iterator[dict[str, np.ndarray]]:
        """The run's records sorted by step then rank, a slice ``[start, stop)`` at a time: ``rank``,
        ``model_flops``, ``tokens`` and the split's optional fields present in the run (NaN = unknown)."""
        known = self.split_fields.get(name, [])
        cols = ", ".join(["rank", "model_flops", "tokens", *(f'"{c}"' for c in known)])
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE run_records AS SELECT {cols} FROM _records WHERE name = ? "
            "ORDER BY step, rank",
            [name],
        )
        for start, stop in bounds:
            data = self.con.execute(
                f"SELECT {cols} FROM run_records WHERE rowid >= ? AND rowid < ?", [start, stop]
            ).fetchnumpy()
            out = {}
            for key, values in data.items():
                arr = np.ma.filled(np.ma.asarray(values, dtype=np.float64), np.nan)
                out[key] = np.asarray(arr, dtype=np.int64) if key == "rank" else arr
            yield out

    def tensor_figures(
        self, name: str, from_step: int
    ) -> tuple[int, float | None, float | None, float | None, int]:
        """The run's step records from ``from_step`` on that carry a GPM tensor-activity reading: (their
        count, median and mean tensor activity, median MFU, how many have an MFU above their tensor activity
        by more than the check's margin)."""
        from monitor.figures.tensor_activity import MARGIN

        row = self.con.execute(
            "SELECT count(*), median(tensor_active), avg(tensor_active), median(mfu), "
            "count(*) FILTER (WHERE mfu > tensor_active + ?) FROM _records "
            "WHERE name = ? AND step >= ? AND tensor_active IS NOT NULL",
            [MARGIN, name, from_step],
        ).fetchone()
        assert row is not None
        n, median, mean, mfu, above = row
        return int(n), median, mean, mfu, int(above)

    # --- queries ------------------------------------------------------------------------------------------
    def sql(self, query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run a query over the ``steps``, ``records`` and ``run_info`` views; returns (columns, rows)."""
        self._views()
        try:
            cursor = self.con.execute(query)
        except Exception as exc:  # the engine's own error, as one line
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError("--sql", message, "query the views steps, records and run_info") from None
        columns = [d[0] for d in cursor.description] if cursor.description else []
        return columns, cursor.fetchall()

    def export_parquet(self, out: str | os.PathLike[str]) -> Path:
        self._views()
        target = Path(out)
        self.con.execute(
            f"COPY (SELECT * FROM steps ORDER BY run, step) TO {_sql_str(str(target))} "
            "(FORMAT parquet, COMPRESSION zstd)"
        )
        return target

    def _views(self) -> None:
        info = (
            "model",
            "device",
            "dtype",
            "world_size",
            "peak_flops_per_second",
            "flops_per_token",
            "seq_len",
        )
        rows = [
            (name, rank, *(start.get(key) for key in info))
            for name, log in self.runs.items()
            for rank, start in sorted(log.starts.items())
        ]
        self.con.execute(
            "CREATE OR REPLACE TABLE run_info (run VARCHAR, rank BIGINT, model VARCHAR, device VARCHAR, "
            "dtype VARCHAR, world_size BIGINT, peak_flops_per_second DOUBLE, flops_per_token DOUBLE, "
            "seq_len BIGINT)"
        )
        if rows:
            self.con.executemany("INSERT INTO run_info VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        self.con.execute(
            "CREATE OR REPLACE VIEW records AS SELECT * EXCLUDE (name, run), name AS run FROM _records"
        )


def _input_bytes(paths: Sequence[Path]) -> int:
    """The logs' size as read: a compressed log counted ten times its file size (JSON logs compress about as
    much; only a choice of storage depends on it)."""
    total = 0
    for path in map(Path, paths):
        size = path.stat().st_size
        total += size * 10 if path.name.lower().endswith(COMPRESSED_SUFFIXES) else size
    return total


def _ends_with_newline(path: Path) -> bool:
    """Whether the file's (decompressed) content ends with a newline; only asked when its last line is bad."""
    name = path.name.lower()
    if not name.endswith(COMPRESSED_SUFFIXES):
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() == 0:
                return True
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"
    import zstandard

    last = b"\n"
    with gzip.open(path, "rb") if name.endswith(".gz") else zstandard.open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            last = chunk[-1:]
    return last == b"\n"
