"""The CLI's output in pipes and files: lines kept whole, a closed pipe ends the command quietly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from monitor.cli._output import console

ROOT = Path(__file__).resolve().parents[1]


def test_plain_lines_are_not_wrapped_when_not_on_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    path = "runs/" + "a-long-folder-name/" * 10 + "run.jsonl"
    console().print(f"run log: {path} (8 device(s))")
    out = capsys.readouterr().out
    assert out == f"run log: {path} (8 device(s))\n"  # one line, 200+ characters


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv",
    [["scaling", "--compute", "1e24", "--json"], ["flops", "--model", "llama-2-7b", "--seq-len", "2048"]],
)
def test_a_closed_pipe_ends_the_command_quietly(argv: list[str]) -> None:
    """`mfu ... | head -c 10`: the reader has gone when the command writes; no BrokenPipeError traceback."""
    script = (
        "import os, sys\n"
        "r, w = os.pipe(); os.close(r); os.dup2(w, 1)  # stdout: a pipe nobody reads any more\n"
        "from monitor.cli import main\n"
        f"sys.exit(main({argv!r}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def _mfu(*argv: str) -> subprocess.CompletedProcess[str]:
    mfu = Path(sys.executable).parent / "mfu"
    return subprocess.run([str(mfu), *argv], capture_output=True, text=True, timeout=120, cwd=ROOT)


def _a_log(tmp_path: Path) -> Path:
    import json

    log = tmp_path / "run.jsonl"
    lines = [{"event": "run_start", "time": 0.0, "run": "r", "rank": 0, "peak_flops_per_second": 1e12}]
    lines += [{"event": "step", "time": float(i + 1), "run": "r", "rank": 0, "step": i, "tokens": 100,
               "step_seconds": 1.0, "model_flops": 1e11, "mfu": 0.1} for i in range(20)]  # fmt: skip
    log.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return log


@pytest.mark.slow
@pytest.mark.parametrize(
    ("flag", "target", "says"),
    [
        ("--html", "/dev/full", "cannot write /dev/full"),
        ("--html", "{tmp}/no-such-folder/r.html", "does not exist"),
        ("--parquet", "{tmp}", "is a folder"),
        ("--html", "{log}", "is also the input"),
    ],
)
def test_analyze_outputs_that_cannot_be_written(tmp_path: Path, flag: str, target: str, says: str) -> None:
    log = _a_log(tmp_path)
    proc = _mfu("analyze", str(log), flag, target.format(tmp=tmp_path, log=log))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and flag in proc.stderr and says in proc.stderr, proc.stderr
    assert log.read_text().count("\n") == 21  # the input is untouched


@pytest.mark.slow
def test_import_refuses_to_overwrite_its_input_and_names_a_full_disk(tmp_path: Path) -> None:
    source = ROOT / "tests" / "data" / "analysis"
    sample = next(p for p in sorted(source.iterdir()) if p.name.startswith("torchtitan"))
    copy = tmp_path / sample.name
    copy.write_bytes(sample.read_bytes())
    proc = _mfu("import", "torchtitan", str(copy), "--out", str(copy), "--flops-per-token", "1e9")
    assert proc.returncode == 2 and "is also the input" in proc.stderr and "--out" in proc.stderr
    assert copy.read_bytes() == sample.read_bytes()
    proc = _mfu("import", "torchtitan", str(copy), "--out", "/dev/full", "--flops-per-token", "1e9")
    assert proc.returncode == 2 and "cannot write /dev/full" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_the_peak_table_shows_every_figure_whole_in_a_pipe() -> None:
    proc = _mfu("hardware")
    assert proc.returncode == 0
    row = next(line for line in proc.stdout.splitlines() if "H100 SXM" in line)
    assert "1978.9" in row and "…" not in row  # fp8 and int8 were cut to "1978…" at 80 columns
