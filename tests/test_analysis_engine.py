"""`mfu analyze` on its engine: many files, folders, globs, compressed logs, bad lines anywhere, --sql and
--parquet; the engine must keep exactly the records and skip counts of the reference reader
(``monitor.analysis.read``)."""

from __future__ import annotations

import gzip
import json
import math
import random
from pathlib import Path

import pytest
import zstandard
from test_analysis_logwriter import RunSpec, records, write_run

from monitor.analysis.engine import LogStore, step_fields
from monitor.analysis.read import read_logs
from monitor.analysis.steps import build_step_table
from monitor.analysis.summary import AnalyzeOptions, analyze
from monitor.cli import main
from monitor.schema import StepRecord


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict, str]:
    code = main(["analyze", *argv, "--json"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if captured.out.strip() else {}), captured.err


def figures(run) -> tuple:
    return (run.steps, run.tokens, run.mfu.median, run.mfu.overall, run.stalls_total)


def test_step_fields_come_from_the_schema() -> None:
    fields = {f.name: f for f in step_fields()}
    for name, info in StepRecord.model_fields.items():
        if name != "event" and info.annotation not in (bool, bool | None):  # flags: not read by the engine
            assert name in fields, name
            assert fields[name].required == info.is_required(), name
    assert fields["step"].kind == "int" and fields["step"].lower == 0
    assert fields["mfu"].required is False and fields["mfu"].default is None  # optional: bad -> unknown


def test_folder_glob_gz_and_zst_read_like_plain_files(tmp_path: Path) -> None:
    spec = RunSpec(world=4)
    plain = analyze([write_run(tmp_path / "all.jsonl", spec)]).analysis.runs[0]
    folder = tmp_path / "ranks"
    folder.mkdir()
    for rank in range(spec.world):
        write_run(folder / f"rank{rank}.jsonl", spec, rank=rank)
    (folder / "notes.txt").write_text("not a log")  # a folder's other files are left alone
    by_folder = analyze([folder]).analysis
    assert len(by_folder.files) == spec.world and by_folder.skipped_total == 0
    by_glob = analyze([str(folder / "rank*.jsonl")]).analysis
    assert [f.path for f in by_glob.files] == [f.path for f in by_folder.files]
    packed = tmp_path / "packed"
    packed.mkdir()
    for rank in range(spec.world):
        data = (folder / f"rank{rank}.jsonl").read_bytes()
        if rank % 2:
            (packed / f"rank{rank}.jsonl.gz").write_bytes(gzip.compress(data))
        else:
            (packed / f"rank{rank}.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    compressed = analyze([packed]).analysis
    for result in (by_folder, by_glob, compressed):
        (run,) = result.runs
        assert run.ranks == spec.world and run.stragglers == plain.stragglers
        assert figures(run) == pytest.approx(figures(plain))


def test_missing_paths_and_empty_patterns_are_one_line_errors(tmp_path: Path, capsys) -> None:
    assert main(["analyze", str(tmp_path / "nothing-*.jsonl")]) == 2
    assert "matches" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["analyze", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no run log" in err


def _large_run(tmp_path: Path, steps: int = 15_000) -> tuple[RunSpec, list[str]]:
    spec = RunSpec(world=8, steps=steps, alerts=0, slow=(10**9, 10**9), stall_before=None)
    return spec, [json.dumps(r, separators=(",", ":")) for r in records(spec)]


def test_bad_line_in_the_middle_of_a_large_file_and_a_torn_last_line(tmp_path: Path, capsys) -> None:
    spec, lines = _large_run(tmp_path)
    middle = len(lines) // 2  # 60,000 lines (about 12 MB) in: past the engine's first read buffers
    lines.insert(middle, '{"time": 1700000000.0, "run": "llama-test", "event": "step", "step": ')
    log = tmp_path / "big.jsonl"
    log.write_text("\n".join(lines) + '\n{"time":1700009999.0,"run":"llama-test","rank":0,"ev')
    code, out, err = run_cli(capsys, str(log))
    assert code == 0
    assert out["skipped"] == {"torn_line": 1, "not_json": 1}
    assert "torn_line" in err and len(err.strip().splitlines()) == 1
    (run,) = out["runs"]
    assert run["steps"] == spec.steps and run["tokens"] == spec.expected_tokens()
    # the same file gzip-compressed: the same counts (the torn line is found in the decompressed text)
    packed = tmp_path / "big.jsonl.gz"
    packed.write_bytes(gzip.compress(log.read_bytes()))
    code, out_gz, _ = run_cli(capsys, str(packed))
    assert out_gz["skipped"] == out["skipped"] and out_gz["runs"][0]["tokens"] == run["tokens"]


HOSTILE = [
    "this is not json",
    "[1, 2, 3]",
    "null",
    "42",
    "",
    "   ",
    '"a string"',
    '{"event": "step", "run": "r", "rank": 0, "time": NaN, "step": 10, "tokens": 1, "step_seconds": 1.0, '
    '"model_flops": 1.0}',
    '{"event": "step", "run": "r", "rank": 0, "time": 6.0, "step": 11, "tokens": 1, "step_seconds": 1.0, '
    '"model_flops": 1.0, "mfu": Infinity}',
    '{"event": "step", "run": "r\\u00e9\\"x", "rank": 0, "time": 6.0, "step": 1, "tokens": 1, '
    '"step_seconds": 1.0, "model_flops": 1.0}',
    '{"event": "st\\u0065p", "run": "r", "rank": 0, "time": 7.0, "step": 12, "tokens": 1, '
    '"step_seconds": 1.0, "model_flops": 1.0}',
]


def _hostile_records() -> list[str]:
    good = {"time": 1.0, "run": "r", "rank": 0, "event": "step", "step": 1, "tokens": 1, "step_seconds": 1.0}
    good["model_flops"] = 1.0
    variants = [
        good,
        dict(good, step=2, time=2.0),
        dict(good, step=2, time=2.0),  # repeated
        dict(good, step=3, time=1.5),  # clock backwards
        dict(good, event=[1]),
        dict(good, run={"a": 1}),
        dict(good, run=5),
        dict(good, step=True),
        dict(good, step=1.0),
        dict(good, step=2**70),
        dict(good, step=2**62),
        dict(good, step=-3),
        dict(good, rank=None),
        dict(good, rank=-1),
        dict(good, tokens="5"),
        dict(good, tokens=True),
        dict(good, tokens=1.5, step=4, time=3.0),  # tokens may be fractional (averaged imports)
        dict(good, tokens=10**30, step=5, time=3.0),
        dict(good, time=None),
        dict(good, step_seconds=-1.0),
        dict(good, model_flops=1e400),
        dict(good, interval_steps=0),
        dict(good, interval_steps=3, step=6, time=3.5),
        dict(good, mfu="high", step=7, time=3.6),  # an optional field of the wrong type: unknown
        dict(good, input_wait_seconds=-1.0, step=8, time=3.7),
        {k: v for k, v in good.items() if k != "tokens"},
        {k: v for k, v in good.items() if k != "event"},
        dict(good, event=None),
        dict(good, event="mystery"),
        {"event": "run_start", "run": ["x"], "time": 1},
        {"event": "run_start", "run": "r", "time": 1, "peak_flops_per_second": 1e12, "world_size": 1},
        {"event": "alert", "run": "r"},
        {"event": "run_end", "run": "r", "time": 9.0, "errors": 0},
    ]
    return [json.dumps(v) for v in variants]


def _clear_step(line: str) -> bool:
    """A step record whose required fields and rank are all there and not null."""
    record = json.loads(line)
    required = ("time", "run", "step", "tokens", "step_seconds", "model_flops", "rank")
    return record.get("event") != "step" or all(record.get(k) is not None for k in required)


@pytest.mark.parametrize("in_memory", [True, False], ids=["records-in-memory", "records-in-file"])
@pytest.mark.parametrize("lines", ["any", "objects", "clear-objects"])
def test_engine_keeps_what_the_reference_reader_keeps(tmp_path: Path, lines: str, in_memory: bool) -> None:
    """Both of the engine's paths: every line a JSON object and no step record with a field missing or null
    (its NDJSON reader, fast), or not (line by line); the records kept in memory or in the database file."""
    log = tmp_path / "hostile.jsonl"
    objects = _hostile_records() + [line for line in HOSTILE if line.startswith("{")]
    if lines == "objects":
        log.write_text("\n".join(objects) + "\n")
    elif lines == "clear-objects":
        log.write_text("\n".join(line for line in objects if _clear_step(line)) + "\n")
    else:
        body = "\n".join(_hostile_records() + HOSTILE) + "\n"
        log.write_bytes(
            body.encode() + b'{"event": "step", "run": "\xff\xfe"}\n{"time": 1'
        )  # bad UTF-8, torn
    reference = read_logs([log])
    with LogStore(in_memory=in_memory) as store:
        store.load([log])
        assert store.fast is (lines == "clear-objects")
        stored = store.con.execute(
            "SELECT temporary FROM duckdb_tables() WHERE table_name = '_lines'"
        ).fetchall()
        assert stored == [(in_memory,)]
        tables = store.step_tables(None)
        (counts,) = store.files
        assert dict(counts.skipped) == dict(reference.files[0].skipped)
        assert counts.records == reference.files[0].records
        assert list(store.runs) == list(reference.runs)
        for name, ref in reference.runs.items():
            ours = store.runs[name]
            assert ours.starts == ref.starts and ours.ends == ref.ends and ours.alerts == ref.alerts
            assert ours.derived_peaks == ref.derived_peaks and ours.files == ref.files
            merged, expected = tables[name], build_step_table(ref)
            assert merged.repeated == expected.repeated
            for column in ("step", "span", "nranks", "slowest_rank"):
                assert getattr(merged, column).tolist() == getattr(expected, column).tolist(), column
            for column in ("time_end", "seconds", "tokens", "flops", "peak"):
                assert getattr(merged, column) == pytest.approx(getattr(expected, column), nan_ok=True)
            query = f"SELECT step, mfu IS NULL FROM steps WHERE run = '{name}' ORDER BY step"
            columns, rows = store.sql(query)
            assert columns == ["step", "(mfu IS NULL)"] and [r[0] for r in rows] == expected.step.tolist()


def _step_line(rank: int, step: int, time: float) -> str:
    return json.dumps(
        {"event": "step", "run": "r", "rank": rank, "step": step, "time": time, "tokens": 8,
         "step_seconds": 1.0, "model_flops": 48.0}
    )  # fmt: skip


@pytest.mark.parametrize(
    ("case", "plain"),
    [
        ("clean", (True, True)),
        ("clock back in a file", (False, True)),
        ("clock back across files", (True, True)),  # each file's clock is its own
        ("step repeated across files", (True, False)),
        ("steps out of order", (True, False)),
    ],
)
def test_ordered_pass_sees_every_drop_whatever_the_chunks(tmp_path: Path, case: str, plain: tuple) -> None:
    """The one ordered pass that spares the searches for clock-backwards and repeated records: a drop that
    falls on any chunk boundary is seen, and the records kept are the reference reader's."""
    # two files, two ranks interleaved, steps 0-3 in file a and 4-7 in file b, times 10 s apart
    lines = {
        name: [(rank, step, 100.0 + 10 * step) for step in steps for rank in (0, 1)]
        for name, steps in (("a", range(4)), ("b", range(4, 8)))
    }
    if case == "clock back in a file":
        lines["b"][5] = (1, 6, 95.0)  # rank 1, step 6 older than its step 5
    elif case == "clock back across files":
        lines["b"] = [(rank, step, time - 100.0) for rank, step, time in lines["b"]]
    elif case == "step repeated across files":
        lines["b"][0] = (0, 3, 145.0)  # rank 0 logs step 3 again after a restart
    elif case == "steps out of order":
        lines["b"][2], lines["b"][4] = (0, 6, 150.0), (0, 5, 160.0)
    paths = []
    for name, rows in lines.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(_step_line(*row) + "\n" for row in rows))
        paths.append(path)
    reference = read_logs(paths)
    with LogStore() as store:
        store.load(paths)
        assert store.fast
        for chunk in (1, 2, 3, 5, 7, 1 << 20):
            assert store._order_is_plain(chunk) == plain, chunk
        table = store.step_tables(None)["r"]
        assert [dict(c.skipped) for c in store.files] == [dict(c.skipped) for c in reference.files]
        assert table.repeated == build_step_table(reference.runs["r"]).repeated
        assert table.step.tolist() == build_step_table(reference.runs["r"]).step.tolist()


def test_ordered_pass_on_random_logs_keeps_the_reference_records(tmp_path: Path) -> None:
    """Random small logs (1-3 files, ranks 0-2, steps and times drawn with repeats and clocks going back): the
    ordered pass answers the same for any chunk size, never passes a log the reference reader drops a record
    of, and the engine keeps exactly the reference reader's records."""
    rng = random.Random(5)
    for trial in range(40):
        paths = []
        for index in range(rng.randint(1, 3)):
            path = tmp_path / f"{trial}-{index}.jsonl"
            rows = [
                (rng.randint(0, 2), rng.randint(0, 8), float(rng.randint(0, 20)))
                for _ in range(rng.randint(0, 12))
            ]
            path.write_text("".join(_step_line(*row) + "\n" for row in rows))
            paths.append(path)
        reference = read_logs(paths)
        with LogStore() as store:
            store.load(paths)
            answers = {store._order_is_plain(chunk) for chunk in (1, 2, 3, 4, 7, 1 << 20)}
            assert len(answers) == 1, trial
            ((clocks, steps),) = answers
            assert not (clocks and reference.skipped.get("clock_backwards")), trial
            assert [dict(c.skipped) for c in store.files] == [dict(c.skipped) for c in reference.files]
            if "r" in reference.runs:
                expected = build_step_table(reference.runs["r"])
                table = store.step_tables(None)["r"]
                assert not (steps and expected.repeated), trial
                assert table.repeated == expected.repeated and table.step.tolist() == expected.step.tolist()


def test_deeply_nested_line_is_a_counted_bad_line(tmp_path: Path, capsys) -> None:
    spec = RunSpec()
    deep_step = dict(records(spec)[-1], deep=json.loads("[" * 500 + "]" * 500))
    deep_step = json.dumps(deep_step).replace("[" * 500, "[" * 50_000).replace("]" * 500, "]" * 50_000)
    nested = ["[" * 100_000 + "]" * 100_000, deep_step]
    log = write_run(tmp_path / "run.jsonl", spec, extra_lines=nested)
    code, out, err = run_cli(capsys, str(log))
    # an array is not a record, however deep; a record nested deeper than the parser goes is not JSON to it
    # (Python's json module raised RecursionError on both)
    assert code == 0 and out["skipped"] == {"not_json": 1, "not_object": 1} and "Traceback" not in err
    assert out["runs"][0]["steps"] == spec.steps
    # the reference reader counts it too, where json.loads raises RecursionError
    deep = tmp_path / "deep.jsonl"
    deep.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    assert read_logs([deep]).skipped == {"not_json": 1}


def test_sql_queries_the_merged_steps_and_parquet_exports_them(tmp_path: Path, capsys) -> None:
    import duckdb

    spec = RunSpec()
    log = write_run(tmp_path / "run.jsonl", spec)
    out_file = tmp_path / "steps.parquet"
    query = "SELECT count(*) AS n, sum(tokens) AS tokens, max(nranks) AS ranks FROM steps"
    code, out, _ = run_cli(capsys, str(log), "--sql", query, "--parquet", str(out_file))
    assert code == 0 and out["columns"] == ["n", "tokens", "ranks"]
    assert out["rows"] == [[spec.steps, spec.expected_tokens(), spec.world]]
    assert out["parquet"] == str(out_file)
    exported = duckdb.sql(f"SELECT step, mfu, run FROM '{out_file}' ORDER BY step").fetchall()
    assert [r[0] for r in exported] == list(range(spec.steps))
    assert exported[20][1] == pytest.approx(spec.expected_step_mfu(20), rel=1e-9)
    # records and run_info
    code, out, _ = run_cli(
        capsys,
        str(log),
        "--sql",
        "SELECT count(*), min(rank), max(rank) FROM records JOIN run_info USING (run, rank)",
    )
    assert out["rows"] == [[spec.steps * spec.world, 0, spec.world - 1]]
    # human output: a table
    assert main(["analyze", str(log), "--sql", "SELECT max(step) AS last FROM steps"]) == 0
    assert "last" in capsys.readouterr().out
    # a bad query: one line naming --sql, exit 2
    assert main(["analyze", str(log), "--sql", "SELECT nope FROM steps"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--sql" in err


def test_memory_limit_is_checked(tmp_path: Path, capsys) -> None:
    log = write_run(tmp_path / "run.jsonl", RunSpec())
    assert main(["analyze", str(log), "--memory-limit", "lots"]) == 2
    assert "--memory-limit" in capsys.readouterr().err
    code, out, _ = run_cli(capsys, str(log), "--memory-limit", "100MB")
    assert code == 0 and out["runs"][0]["steps"] == RunSpec().steps
    # too little for the engine's read buffers: one line naming the flag, not the engine's traceback
    assert main(["analyze", str(log), "--memory-limit", "16MB"]) == 2
    err = capsys.readouterr().err
    assert "--memory-limit" in err and "ran out of memory" in err and "Traceback" not in err


def _with_start(spec: RunSpec, **start_fields: object) -> list[str]:
    out = []
    for r in records(spec):
        if r["event"] == "run_start":
            r.update(start_fields)
        out.append(json.dumps(r))
    return out


def test_impossible_mfu_is_flagged(tmp_path: Path, capsys) -> None:
    spec = RunSpec(straggler=None)
    log = tmp_path / "run.jsonl"
    log.write_text("\n".join(_with_start(spec, peak_flops_per_second=spec.peak / 50)) + "\n")
    code, out, _ = run_cli(capsys, str(log))
    assert code == 0
    run = out["runs"][0]
    assert run["mfu"]["median"] > 1 and run["mfu_suspect"] is True
    assert any("impossible: wrong peak or FLOPs" in note for note in run["notes"])
    assert main(["analyze", str(log)]) == 0
    assert "impossible: wrong peak or FLOPs" in capsys.readouterr().out
    normal = run_cli(capsys, str(write_run(tmp_path / "ok.jsonl", spec)))[1]["runs"][0]
    assert normal["mfu_suspect"] is False


def test_monitor_errors_are_reported_not_read_as_zero_mfu(tmp_path: Path, capsys) -> None:
    spec = RunSpec(straggler=None, alerts=0)
    lines = []
    for r in records(spec):
        if r["event"] == "step":
            r["tokens"], r["model_flops"], r["mfu"] = 0, 0.0, 0.0
        if r["event"] == "run_end":
            r["errors"], r["reason"] = 3, "exit"
        lines.append(json.dumps(r))
    log = tmp_path / "broken.jsonl"
    log.write_text("\n".join(lines) + "\n")
    code, out, _ = run_cli(capsys, str(log))
    assert code == 0
    run = out["runs"][0]
    assert run["monitor_errors"] == 3 * spec.world
    assert run["mfu"]["median"] is None and run["low_mfu_episodes"] == []
    assert any("logged 6 error(s)" in n and "exit" in n for n in run["notes"])
    assert main(["analyze", str(log)]) == 0
    text = capsys.readouterr().out
    assert "error(s)" in text and "unknown (not 0)" in text


def test_default_warmup_is_the_logged_one(tmp_path: Path, capsys) -> None:
    spec = RunSpec()
    log = tmp_path / "run.jsonl"
    log.write_text("\n".join(_with_start(spec, warmup_steps=3)) + "\n")
    run = analyze([log]).analysis.runs[0]
    assert (run.warmup, run.warmup_source, run.warmup_steps, run.measured_from_step) == (3, "log", 3, 3)
    given = analyze([log], AnalyzeOptions(warmup=10)).analysis.runs[0]
    assert (given.warmup, given.warmup_source, given.warmup_steps) == (10, "option", 10)
    plain = analyze([write_run(tmp_path / "plain.jsonl", spec)]).analysis.runs[0]
    assert (plain.warmup, plain.warmup_source) == (10, "default")


def test_control_characters_never_reach_the_terminal(tmp_path: Path, capsys) -> None:
    spec = RunSpec(run="evil\x1b[2J\x1b]0;pwned\x07\rname\u202e")
    lines = _with_start(spec, model="m\x1b[31mred\x9b")
    log = tmp_path / "run.jsonl"
    log.write_text("\n".join(lines) + "\n")
    assert main(["analyze", str(log)]) == 0
    text = capsys.readouterr().out
    assert not any(ch in text for ch in "\x1b\x07\r\x9b\u202e")
    assert "evil[2J]0;pwnednamexx"[:4] in text and "mred" in text.replace("[31m", "")
    # JSON keeps the name as logged (escaped by the JSON encoder)
    code, out, _ = run_cli(capsys, str(log))
    assert code == 0
    assert out["runs"][0]["run"] == spec.run and not math.isnan(out["runs"][0]["tokens"])
