"""The HTML report: self-contained, escaped, and rendering with its plots in a real headless browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_analysis_logwriter import RunSpec, write_run

from monitor.analysis.report import CSP
from monitor.cli import main

EVIL = "<script>alert(1)</script>"
DATA = Path(__file__).parent / "data" / "analysis"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    evil = write_run(folder / "evil.jsonl", RunSpec(run=EVIL, world=4, straggler=3))
    out = folder / "report.html"
    assert (
        main(["analyze", str(DATA / "two_ranks.jsonl"), str(evil), "--warmup", "2", "--html", str(out)]) == 0
    )
    return out


def test_report_is_self_contained_and_escaped(report: Path) -> None:
    text = report.read_text(encoding="utf-8")
    assert "<script" not in text.lower()  # the report has no script at all, so the run name cannot add one
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert f'content="{CSP}"' in text
    # nothing is fetched from anywhere: every image is inline, no stylesheet or script links
    sources = re.findall(r'\b(?:src|href)="([^"]*)"', text)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    # plots: one timeline per run, where the peak went (the MFU-loss bars), the step-time distribution, the
    # ranks comparison
    assert len(sources) == 2 + 3
    assert "Where the peak went" in text


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ]
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.skipif(
    _chromium() is None, reason="Debian chromium not installed (CI installs it: apt-get install chromium)"
)
def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    binary = _chromium()
    assert binary is not None
    # A probe page: the report with a script appended that records, after load, what the browser made of it.
    # The report's CSP forbids all scripts, so the probe copy drops that one meta tag (and only it).
    text = report.read_text(encoding="utf-8")
    probe = text.replace(f'<meta http-equiv="Content-Security-Policy" content="{CSP}">', "")
    assert probe != text
    probe = probe.replace(
        "</body>",
        "<script>window.addEventListener('load', function () {"
        " var p = document.createElement('pre'); p.id = 'probe';"
        " p.textContent = JSON.stringify({"
        "  widths: Array.from(document.images).map(function (i) { return i.naturalWidth; }),"
        "  complete: Array.from(document.images).every(function (i) { return i.complete; }),"
        "  scripts: document.scripts.length,"
        # '<\\/script>': a literal end tag would close this script element
        "  shown: document.body.textContent.indexOf('<script>alert(1)<\\/script>') >= 0,"
        "  tables: document.querySelectorAll('table').length });"
        " document.body.appendChild(p); });</script></body>",
    )
    page = tmp_path / "probe.html"
    page.write_text(probe, encoding="utf-8")
    dumped = _run_chromium(
        binary, tmp_path / "profile1", "--virtual-time-budget=2000", "--dump-dom", page.as_uri()
    )
    match = re.search(r'<pre id="probe">(.*?)</pre>', dumped.stdout, re.S)
    assert match, f"no probe output; chromium said: {dumped.stderr[-2000:]}"
    found = json.loads(match.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
    assert found["complete"] and len(found["widths"]) == 5
    assert all(width > 0 for width in found["widths"]), found  # every plot decoded
    assert found["scripts"] == 1  # only the probe: the run name stayed text
    assert found["shown"]  # ... and is shown as the literal text
    assert found["tables"] >= 3

    # the report itself (CSP on) renders: a screenshot that is not blank
    shot = tmp_path / "shot.png"
    _run_chromium(
        binary, tmp_path / "profile2", "--window-size=1200,2400", f"--screenshot={shot}", report.as_uri()
    )
    assert shot.exists() and shot.stat().st_size > 10_000
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))
    assert pixels.shape[0] >= 2000 and pixels.shape[1] >= 1000
    colours = np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50  # text, tables and plot colours, not an empty page
