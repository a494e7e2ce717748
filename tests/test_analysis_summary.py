"""`mfu analyze` over realistic logs: expectations come from the log writer's spec, not from our own
output."""

from __future__ import annotations

import json
import math
import tracemalloc
from pathlib import Path

import pytest
from test_analysis_logwriter import RunSpec, records, write_run

from monitor.analysis.read import read_logs
from monitor.analysis.summary import AnalyzeOptions, analyze
from monitor.cli import main
from monitor.errors import InputError

DATA = Path(__file__).parent / "data" / "analysis"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict, str]:
    code = main(["analyze", *argv, "--json"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if captured.out.strip() else {}), captured.err


def test_steps_per_index_tokens_over_ranks_and_contract_keys(tmp_path: Path, capsys) -> None:
    spec = RunSpec()
    log = write_run(tmp_path / "run.jsonl", spec)
    code, out, err = run_cli(capsys, str(log))
    assert code == 0 and err == ""
    (run,) = out["runs"]
    assert run["steps"] == spec.steps  # per step index, not 2 x per rank record
    assert run["tokens"] == spec.expected_tokens()  # summed over both ranks
    assert set(run["mfu"]) >= {"median", "mean", "p10", "p90"}
    assert isinstance(run["below_threshold_seconds"], float)
    assert {"start_step", "end_step"} <= set(run["low_mfu_episodes"][0])


def test_mfu_after_warmup_uses_slowest_rank_time(tmp_path: Path) -> None:
    spec = RunSpec()
    result = analyze([write_run(tmp_path / "run.jsonl", spec)], AnalyzeOptions(warmup=10))
    run = result.analysis.runs[0]
    measured = range(10, spec.steps)
    assert run.warmup_steps == 10 and run.measured is not None and run.measured.steps == len(measured)
    # overall MFU: sum of FLOPs over sum of (slowest rank's time x sum of peaks), steps 10..99 only
    flops = sum(spec.world * spec.tokens_per_rank * spec.flops_per_token for _ in measured)
    capacity = sum(spec.step_seconds(s) * spec.world * spec.peak for s in measured)
    assert run.mfu.overall == pytest.approx(flops / capacity, rel=1e-9)
    assert run.mfu.median == pytest.approx(spec.expected_step_mfu(20), rel=1e-9)
    # the 20 s compile step is left out: the longest measured step is a slow-episode step
    assert run.step_seconds.max == pytest.approx(spec.step_seconds(45), rel=1e-9)
    tokens = spec.world * spec.tokens_per_rank * len(measured)
    assert run.tokens_per_second.overall == pytest.approx(
        tokens / sum(spec.step_seconds(s) for s in measured)
    )


def test_mfu_is_ratio_of_sums_not_mean_of_ratios(tmp_path: Path) -> None:
    # rank 1 sits on a device with twice the peak: per-rank MFUs differ, the run's MFU is the ratio of the
    # sums
    spec = RunSpec(straggler=None, peaks={1: 2e12}, slow=(1000, 1000), stall_before=None, alerts=0)
    run = analyze([write_run(tmp_path / "run.jsonl", spec)], AnalyzeOptions(warmup=1)).analysis.runs[0]
    flops = spec.world * spec.tokens_per_rank * spec.flops_per_token
    expected = flops / (spec.base_seconds * (1e12 + 2e12))
    per_rank = [spec.tokens_per_rank * spec.flops_per_token / (spec.base_seconds * p) for p in (1e12, 2e12)]
    assert run.mfu.median == pytest.approx(expected, rel=1e-9)
    assert not math.isclose(expected, sum(per_rank) / 2, rel_tol=1e-3)


def test_low_mfu_episode_and_time_below_threshold(tmp_path: Path) -> None:
    spec = RunSpec()
    run = analyze([write_run(tmp_path / "run.jsonl", spec)]).analysis.runs[0]
    lo, hi = spec.slow
    assert [(e.start_step, e.end_step) for e in run.low_mfu_episodes] == [(lo, hi)]
    episode = run.low_mfu_episodes[0]
    assert episode.steps == hi - lo + 1
    assert episode.seconds == pytest.approx(sum(spec.step_seconds(s) for s in range(lo, hi + 1)))
    assert episode.mean_mfu == pytest.approx(spec.expected_step_mfu(lo))
    assert run.below_threshold_seconds == pytest.approx(episode.seconds)
    assert run.below_threshold_steps == hi - lo + 1
    # a higher threshold than every step's MFU puts all measured step time below it
    all_below = analyze([tmp_path / "run.jsonl"], AnalyzeOptions(threshold=0.9)).analysis.runs[0]
    assert all_below.measured is not None
    assert all_below.below_threshold_seconds == pytest.approx(all_below.measured.step_seconds)
    assert all_below.low_mfu_episodes_total == 1


def test_stall_found_between_steps(tmp_path: Path) -> None:
    spec = RunSpec()
    run = analyze([write_run(tmp_path / "run.jsonl", spec)]).analysis.runs[0]
    (stall,) = run.stalls
    assert stall.step == spec.stall_before and stall.previous_step == spec.stall_before - 1
    assert stall.lost_seconds == pytest.approx(spec.stall_seconds, rel=1e-6)
    assert run.stall_lost_seconds == pytest.approx(spec.stall_seconds, rel=1e-6)
    # the idle gap counts against wall-clock MFU only
    assert run.mfu.wall is not None and run.mfu.overall is not None and run.mfu.wall < run.mfu.overall


def test_straggler_rank_named(tmp_path: Path) -> None:
    spec = RunSpec(world=4, straggler=2, straggler_factor=1.3)
    run = analyze([write_run(tmp_path / "run.jsonl", spec)]).analysis.runs[0]
    assert run.stragglers == [2]
    slowest = {r.rank: r.slowest_share for r in run.rank_stats}
    assert slowest[2] == pytest.approx(1.0)
    relative = {r.rank: r.relative_step_time for r in run.rank_stats}
    assert relative[2] == pytest.approx(1.3)
    healthy = analyze([write_run(tmp_path / "ok.jsonl", RunSpec(world=4, straggler=None))]).analysis.runs[0]
    assert healthy.stragglers == []


def test_ranks_in_separate_files_merge_by_step(tmp_path: Path) -> None:
    spec = RunSpec()
    files = [write_run(tmp_path / f"rank{r}.jsonl", spec, rank=r) for r in range(spec.world)]
    merged = analyze(files).analysis.runs
    single = analyze([write_run(tmp_path / "all.jsonl", spec)]).analysis.runs
    assert len(merged) == 1 and merged[0].ranks == spec.world
    assert merged[0].steps == single[0].steps and merged[0].tokens == single[0].tokens
    assert merged[0].mfu.overall == pytest.approx(single[0].mfu.overall)


def test_several_runs_side_by_side(tmp_path: Path, capsys) -> None:
    a = write_run(tmp_path / "a.jsonl", RunSpec(run="baseline"))
    b = write_run(tmp_path / "b.jsonl", RunSpec(run="faster", base_seconds=0.5, straggler=None))
    code, out, _ = run_cli(capsys, str(a), str(b))
    assert code == 0
    assert [r["run"] for r in out["runs"]] == ["baseline", "faster"]
    assert out["runs"][1]["tokens_per_second"]["overall"] > out["runs"][0]["tokens_per_second"]["overall"]
    # the human table shows both runs as columns
    assert main(["analyze", str(a), str(b)]) == 0
    text = capsys.readouterr().out
    assert "baseline" in text and "faster" in text


def test_same_run_name_in_two_files_kept_apart_with_per_file(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a.jsonl", RunSpec())
    b = write_run(tmp_path / "b.jsonl", RunSpec())
    assert len(analyze([a, b]).analysis.runs) == 1  # same run and ranks: the repeats are dropped
    apart = analyze([a, b], AnalyzeOptions(per_file=True)).analysis.runs
    assert [r.run for r in apart] == ["a.jsonl:llama-test", "b.jsonl:llama-test"]


def test_bad_lines_skipped_counted_one_warning(tmp_path: Path, capsys) -> None:
    spec = RunSpec()
    recs = records(spec)
    at = next(i for i, r in enumerate(recs) if r["event"] == "step" and r["step"] == 50 and r["rank"] == 0)
    step50 = recs[at]
    missing = {k: v for k, v in step50.items() if k != "tokens"}
    backwards = dict(step50, step=51, time=spec.t0 + 1.0)  # older than rank 0's previous record
    bad = [
        "this is not json",
        json.dumps(step50),  # the same record written twice: a repeated step
        json.dumps(missing),
        json.dumps(backwards),
        json.dumps(dict(step50, step=-3)),  # bad value
        json.dumps(dict(step50, event="mystery")),
        "[1, 2, 3]",
        "",
    ]
    lines = [json.dumps(r) for r in recs]
    lines[at + 1 : at + 1] = bad
    log = tmp_path / "run.jsonl"
    log.write_text("\n".join(lines) + '\n{"time":1700009999.0,"run":"llama-test","rank":0,"event":"st')
    code, out, err = run_cli(capsys, str(log))
    assert code == 0
    assert out["skipped"] == {
        "torn_line": 1,
        "not_json": 1,
        "not_object": 1,
        "missing_field": 1,
        "bad_value": 1,
        "unknown_event": 1,
        "clock_backwards": 1,
        "repeated_step": 1,
    }
    assert out["skipped_total"] == 8
    warnings = [line for line in err.splitlines() if line.strip()]
    assert len(warnings) == 1 and "warning" in warnings[0] and "torn_line" in warnings[0]
    clean = analyze([write_run(tmp_path / "clean.jsonl", spec)]).analysis.runs[0]
    assert out["runs"][0]["tokens"] == clean.tokens and out["runs"][0]["steps"] == clean.steps


def test_peak_unknown_gives_null_mfu_until_given(tmp_path: Path, capsys) -> None:
    spec = RunSpec(straggler=None)
    lines = []
    for r in records(spec):
        if r["event"] == "run_start":
            r["peak_flops_per_second"] = None
        if r["event"] == "step":
            r["mfu"] = None
        lines.append(json.dumps(r))
    log = tmp_path / "nopeak.jsonl"
    log.write_text("\n".join(lines) + "\n")
    code, out, _ = run_cli(capsys, str(log))
    run = out["runs"][0]
    assert code == 0 and run["mfu"]["median"] is None and run["below_threshold_seconds"] is None
    assert any("--peak-tflops" in note for note in run["notes"])
    assert run["tokens_per_second"]["overall"] is not None  # throughput needs no peak
    code, out, _ = run_cli(capsys, str(log), "--peak-tflops", "1")
    assert out["runs"][0]["mfu"]["median"] == pytest.approx(spec.expected_step_mfu(20))


def test_peak_recovered_from_step_mfu_without_run_start(tmp_path: Path) -> None:
    # a log read from the middle (rotated): no run_start, but each step carries its mfu
    spec = RunSpec(straggler=None)
    lines = [json.dumps(r) for r in records(spec) if r["event"] == "step" and r["step"] >= 30]
    log = tmp_path / "tail.jsonl"
    log.write_text("\n".join(lines) + "\n")
    run = analyze([log], AnalyzeOptions(warmup=0)).analysis.runs[0]
    assert run.first_step == 30
    assert run.mfu.median == pytest.approx(spec.expected_step_mfu(60), rel=1e-9)


def test_alerts_counted(tmp_path: Path) -> None:
    run = analyze([write_run(tmp_path / "run.jsonl", RunSpec(alerts=1))]).analysis.runs[0]
    assert run.alerts.count == 1 and run.alerts.firing == 1
    assert run.alerts.items[0]["message"].startswith("MFU 12.5%")


def test_warmup_longer_than_run_reports_no_figures(tmp_path: Path) -> None:
    run = analyze(
        [write_run(tmp_path / "r.jsonl", RunSpec(steps=5))], AnalyzeOptions(warmup=10)
    ).analysis.runs[0]
    assert run.steps == 5 and run.mfu.median is None
    assert any("--warmup" in note for note in run.notes)


def test_bad_input_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("hello\nworld\n")
    assert main(["analyze", str(garbage)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no run records" in err
    log = write_run(tmp_path / "run.jsonl", RunSpec())
    assert main(["analyze", str(log), "--threshold", "25"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--threshold" in err
    assert main(["analyze", str(tmp_path / "missing.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(InputError, match="--warmup"):
        AnalyzeOptions(warmup=-1)


def test_golden_sample_log() -> None:
    """tests/data/analysis/two_ranks.jsonl: 2 ranks x 30 steps written by hand-checked numbers (see
    README)."""
    run = analyze([DATA / "two_ranks.jsonl"], AnalyzeOptions(warmup=2)).analysis.runs[0]
    facts = json.loads((DATA / "two_ranks.expected.json").read_text())
    assert run.steps == facts["steps"]
    assert run.tokens == facts["tokens"]
    assert [(e.start_step, e.end_step) for e in run.low_mfu_episodes] == [tuple(x) for x in facts["episodes"]]
    assert run.mfu.median == pytest.approx(facts["mfu_median"], rel=1e-6)
    assert [s.step for s in run.stalls] == facts["stall_steps"]
    assert run.stragglers == facts["stragglers"]


def test_reader_keeps_compact_columns(tmp_path: Path) -> None:
    """Streaming: each extra step record costs a few dozen bytes (compact arrays), far below a kept dict (~1
    KB)."""

    def peak_bytes(steps: int) -> tuple[int, int]:
        log = write_run(tmp_path / f"log{steps}.jsonl", RunSpec(steps=steps, alerts=0))
        tracemalloc.start()
        logs = read_logs([log])
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return peak, len(logs.runs["llama-test"].columns)

    small_peak, small_n = peak_bytes(5_000)
    large_peak, large_n = peak_bytes(25_000)
    assert large_n - small_n == 40_000
    # 7 columns x 8 bytes = 56 B a record, plus the arrays' growth slack; the chunk being parsed is a constant
    per_record = (large_peak - small_peak) / (large_n - small_n)
    assert per_record < 150, f"{per_record:.0f} bytes per record"


def test_log_of_a_real_monitor_run(tmp_path: Path) -> None:
    """The live MFUMonitor writes the log; analyze must find every optimizer step and every token fed."""
    torch = pytest.importorskip("torch")
    from monitor.live.monitor import MFUMonitor

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(32, 8), torch.nn.Linear(8, 32))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    log = tmp_path / "live.jsonl"
    steps, batch, seq, fpt = 25, 4, 16, 1000.0
    with MFUMonitor(model, opt, flops_per_token=fpt, peak_flops=1e9, log_path=log, run="live", log_every=5):
        for _ in range(steps):
            x = torch.randint(0, 32, (batch, seq))
            loss = torch.nn.functional.cross_entropy(model(x).view(-1, 32), x.view(-1))
            loss.backward()
            opt.step()
            opt.zero_grad()
    result = analyze([log], AnalyzeOptions(warmup=0))
    assert result.analysis.skipped_total == 0
    run = result.analysis.runs[0]
    assert run.steps == steps and run.tokens == steps * batch * seq
    (table,) = result.tables
    assert float(table.flops.sum()) == pytest.approx(fpt * steps * batch * seq)
    assert run.mfu.overall == pytest.approx(fpt * steps * batch * seq / (float(table.seconds.sum()) * 1e9))


def test_chunk_fast_path_keeps_the_same_records_as_record_by_record(tmp_path: Path, monkeypatch) -> None:
    from monitor.analysis import read

    spec = RunSpec(world=4, steps=3000, alerts=0)
    recs = records(spec)
    lines = [json.dumps(r) for r in recs]
    # a second run whose rank 2 clock jumps back mid-file: the chunk holding it goes record by record
    other = [dict(r, run="other") for r in recs if r["event"] == "step" and r["step"] < 2000]
    other[3000]["time"] = spec.t0
    lines += [json.dumps(r) for r in other]
    log = tmp_path / "mixed.jsonl"
    log.write_text("\n".join(lines) + "\n")
    taken = []
    original = read._take_clean_steps
    monkeypatch.setattr(
        read, "_take_clean_steps", lambda *a, **k: taken.append(original(*a, **k)) or taken[-1]
    )
    fast = read.read_logs([log])
    assert True in taken and False in taken  # both paths ran
    monkeypatch.setattr(read, "_take_clean_steps", lambda *args, **kwargs: False)
    slow = read.read_logs([log])
    assert fast.skipped == slow.skipped == {"clock_backwards": 1}
    for name in ("llama-test", "other"):
        a, b = fast.runs[name], slow.runs[name]
        for column in ("rank", "step", "time", "tokens", "seconds", "flops", "span"):
            assert getattr(a.columns, column) == getattr(b.columns, column), (name, column)
        assert a.derived_peaks == b.derived_peaks and a.files == b.files


def test_hostile_values_are_counted_not_crashed_on(tmp_path: Path) -> None:
    good = {
        "time": 1.0,
        "run": "r",
        "rank": 0,
        "event": "step",
        "step": 1,
        "tokens": 1,
        "step_seconds": 1.0,
        "model_flops": 1.0,
    }
    hostile = [
        dict(good, event=[1]),  # unhashable event
        dict(good, run={"a": 1}),  # unhashable run
        dict(good, step=True),  # a bool is not a step index
        dict(good, step=2**70),  # does not fit 64 bits
        dict(good, tokens="5"),
        dict(good, time=float("inf")),
        dict(good, step_seconds=-1.0),
        {"event": "run_start", "run": ["x"], "time": 1},
    ]
    log = tmp_path / "hostile.jsonl"
    log.write_text("\n".join(json.dumps(r) for r in [good, *hostile]) + "\n")
    logs = read_logs([log])
    assert dict(logs.skipped) == {"bad_value": len(hostile)}
    assert len(logs.runs["r"].columns) == 1


def test_step_index_limit_is_the_same_on_both_read_paths(tmp_path: Path) -> None:
    """A step index of 2**62 and above (the reader's int64 limit) is a bad value whether its chunk holds
    only step records (the fast path) or others too (record by record)."""
    step = {"event": "step", "run": "r", "rank": 0, "time": 1.0, "tokens": 1, "step_seconds": 1.0}
    alone = [dict(step, step=0, model_flops=1.0), dict(step, step=2**62, time=2.0, model_flops=1.0)]
    mixed = [{"event": "alert", "run": "r"}, *alone]  # an invalid alert: this chunk goes record by record
    for name, lines in (("alone", alone), ("mixed", mixed)):
        log = tmp_path / f"{name}.jsonl"
        log.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
        logs = read_logs([log])
        assert logs.skipped["bad_value"] == 1, name
        assert len(logs.runs["r"].columns) == 1, name
