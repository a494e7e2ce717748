"""How fast `mfu analyze` reads a big run log, and with how much memory, beside pandas.read_json(lines=True).

    python benchmarks/analyze_speed.py [--records 1000000] [--ranks 8] [--rounds 15]

Writes a JSONL run log of ``--records`` step records (``--ranks`` ranks, as ``RunLogWriter`` writes them:
compact JSON, one record a line), then runs, in shuffled order each round and each in a fresh process:
- ``ours``: ``monitor.analysis.summary.analyze`` (streaming read, merge by step, the whole summary);
- ``pandas_read``: ``pandas.read_json(path, lines=True)`` alone (no analysis at all);
- ``pandas_summary``: read_json, then the core of the same summary (merge ranks by step, per-step MFU,
  its median and p10/p90).
Each child times its work only (its imports come first) and reports its peak resident memory
(``ru_maxrss``) and that after its imports, so the growth is the work's own. Reported: medians and the
spread over rounds, and the median of the paired differences (variant - ours) per round.
Needs pandas (``pip install pandas``), which the package itself does not use.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# name -> (imports, timed work); the work must set `check`
CHILD = {
    "ours": (
        "from monitor.analysis.summary import analyze, AnalyzeOptions",
        "r = analyze([PATH], AnalyzeOptions(warmup=10)).analysis.runs[0]\n"
        "check = (r.steps, r.tokens, r.mfu.median)\n",
    ),
    "pandas_read": (
        "import pandas as pd",
        "df = pd.read_json(PATH, lines=True)\ncheck = (len(df),)\n",
    ),
    "pandas_summary": (
        "import pandas as pd, numpy as np",
        "df = pd.read_json(PATH, lines=True)\n"
        "peak = df[df.event == 'run_start'].set_index('rank')['peak_flops_per_second']\n"
        "s = df[df.event == 'step'].copy()\n"
        "s['peak'] = s['rank'].map(peak)\n"
        "g = s.groupby('step').agg(sec=('step_seconds', 'max'), tok=('tokens', 'sum'),\n"
        "                          fl=('model_flops', 'sum'), pk=('peak', 'sum'))\n"
        "g = g[g.index >= g.index.min() + 10]\n"
        "mfu = g.fl / (g.sec * g.pk)\n"
        "check = (len(g) + 10, int(s.tokens.sum()), float(np.median(mfu)))\n",
    ),
}

CODE = """
import time, resource, json, sys
{imports}
PATH = sys.argv[1]
base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
{work}
elapsed = time.perf_counter() - t0
print(json.dumps({{"seconds": elapsed, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "base_mb": base_mb, "check": [float(x) for x in check]}}))
"""


def write_log(path: Path, records: int, ranks: int) -> None:
    """A run with a steady MFU of about 0.45 and some jitter, written like RunLogWriter does."""
    rng = random.Random(0)
    peak = 989e12
    tokens = 8 * 4096
    flops = tokens * 6 * 8e9  # an 8B-parameter model, 6N per token
    steps = records // ranks
    with open(path, "w", encoding="utf-8") as f:
        for rank in range(ranks):
            start = {
                "time": 1.7e9,
                "run": "bench",
                "rank": rank,
                "event": "run_start",
                "world_size": ranks,
                "model": "llama-8b",
                "params": 8_000_000_000,
                "flops_per_token": 6 * 8e9,
                "peak_flops_per_second": peak,
                "device": "NVIDIA H100 80GB HBM3",
                "dtype": "bf16",
                "seq_len": 4096,
                "schema_version": 1,
            }
            f.write(json.dumps(start, separators=(",", ":")) + "\n")
        t = 1.7e9
        for step in range(steps):
            base = flops / (0.45 * peak)
            for rank in range(ranks):
                secs = base * (1 + 0.05 * rng.random())
                rec = {
                    "time": t + secs,
                    "run": "bench",
                    "rank": rank,
                    "event": "step",
                    "step": step,
                    "tokens": tokens,
                    "step_seconds": secs,
                    "model_flops": flops,
                    "mfu": flops / (secs * peak),
                }
                f.write(json.dumps(rec, separators=(",", ":")) + "\n")
            t += base * 1.05


def run_child(name: str, path: Path) -> dict:
    imports, work = CHILD[name]
    code = CODE.format(imports=imports, work=work)
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--ranks", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--keep", type=Path, help="write the log here and keep it")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="mfu-bench-"))
    path = args.keep or folder / "run.jsonl"
    write_log(path, args.records, args.ranks)
    size_mb = path.stat().st_size / 1e6
    print(
        f"log: {args.records:,} step records, {args.ranks} ranks, {size_mb:.0f} MB; "
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )

    variants = ["ours", "pandas_read", "pandas_summary"]
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for round_no in range(args.rounds):
        order = variants[:]
        random.shuffle(order)
        for name in order:
            results[name].append(run_child(name, path))
        print(
            f"round {round_no + 1}/{args.rounds}: "
            + ", ".join(f"{v} {results[v][-1]['seconds']:.2f} s" for v in variants),
            flush=True,
        )

    ours_check = results["ours"][0]["check"]
    pandas_check = results["pandas_summary"][0]["check"]
    print(f"\nsame answer: ours (steps, tokens, MFU median) = {ours_check}; pandas = {pandas_check}")
    print(f"{'variant':16} {'median s':>9} {'min s':>7} {'max s':>7} {'peak RSS MB':>12} {'growth MB':>10}")
    for name in variants:
        secs = [r["seconds"] for r in results[name]]
        rss = statistics.median(r["maxrss_mb"] for r in results[name])
        base = statistics.median(r["base_mb"] for r in results[name])
        print(
            f"{name:16} {statistics.median(secs):9.2f} {min(secs):7.2f} {max(secs):7.2f} "
            f"{rss:12.0f} {rss - base:10.0f}"
        )
    for name in ("pandas_read", "pandas_summary"):
        diffs = [p["seconds"] - o["seconds"] for p, o in zip(results[name], results["ours"], strict=True)]
        ratios = [p["seconds"] / o["seconds"] for p, o in zip(results[name], results["ours"], strict=True)]
        print(
            f"{name} - ours: median paired difference {statistics.median(diffs):+.2f} s "
            f"(ratio {statistics.median(ratios):.2f}x; spread {min(diffs):+.2f} .. {max(diffs):+.2f} s)"
        )
    if not args.keep:
        path.unlink()
        folder.rmdir()


if __name__ == "__main__":
    main()
