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
