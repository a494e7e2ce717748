"""How fast `mfu analyze` reads big run logs, and with how much memory, beside bare DuckDB and bare Polars.

    python benchmarks/analyze_speed.py [--records 1000000 20000000] [--ranks 8] [--rounds 3]
        [--cluster-ranks 4096 --cluster-steps 2000] [--variants ours duckdb polars pyarrow]

For each ``--records`` size it writes a JSONL run log (``--ranks`` ranks in one file, compact JSON, one
record a line, as ``RunLogWriter`` writes it), then runs, in shuffled order each round and each in a fresh
process:
- ``ours``: ``monitor.analysis.summary.analyze``: every line checked, the whole summary (merge by step,
  distributions, episodes, stalls, ranks, the MFU-loss split, alerts);
- ``duckdb``: DuckDB's ``read_json`` (types inferred), then the bare merge by step (slowest rank's time, sums
  of FLOPs and peaks) and the median per-step MFU after 10 warm-up steps; nothing checked;
- ``polars``: the same with Polars' ``scan_ndjson`` and its streaming engine;
- ``pyarrow``: the same with PyArrow's multithreaded ``pyarrow.json.read_json`` and its compute functions
  (whole log in memory): of the three engines, the one whose typed reads refuse every token of another
  type (``benchmarks/engine_types.py``).
Each child times its work only (its imports come first) and reports its peak resident memory (``ru_maxrss``).
Reported per size: median seconds and peak RSS per variant, and the median over rounds of ours / the faster
bare engine of DuckDB and Polars in the same round (the acceptance figure: at most 1.2).

``--cluster-ranks R --cluster-steps S`` also writes a run of R per-rank files of S steps into a folder and
times ``mfu analyze FOLDER --json`` on it end to end (a fresh process, the CLI as users run it).
Needs duckdb, polars and pyarrow (``pip install 'mfu-monitor[bench]'``). Logs go to ``--dir`` (default: a
temporary folder) and are deleted afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PEAK = 989e12
TOKENS = 8 * 4096
FLOPS = TOKENS * 6 * 8e9  # an 8B-parameter model, 6N per token

CHILD = {
    "ours": (
        "from monitor.analysis.summary import analyze, AnalyzeOptions",
        "r = analyze([PATH], AnalyzeOptions(warmup=10)).analysis.runs[0]\n"
        "check = (r.steps, r.tokens, r.mfu.median)\n",
    ),
    "duckdb": (
        "import duckdb",
        "con = duckdb.connect()\n"
        "q = f'''\n"
        "WITH s AS (SELECT * FROM read_json('{PATH}', format='newline_delimited')),\n"
        "pk AS (SELECT rank, any_value(peak_flops_per_second) AS pk FROM s\n"
        "       WHERE event = 'run_start' GROUP BY rank),\n"
        "g AS (SELECT step, max(step_seconds) AS sec, sum(tokens) AS tok, sum(model_flops) AS fl,\n"
        "      sum(pk) AS p FROM s JOIN pk USING (rank) WHERE event = 'step' GROUP BY step)\n"
        "SELECT count(*), sum(tok),\n"
        "       median(fl / (sec * p)) FILTER (WHERE step >= (SELECT min(step) FROM g) + 10)\n"
        "FROM g'''\n"
        "check = con.execute(q).fetchone()\n",
    ),
    "polars": (
        "import polars as pl",
        "lf = pl.scan_ndjson(PATH, infer_schema_length=1000)\n"
        "pk = (lf.filter(pl.col('event') == 'run_start').group_by('rank')\n"
        "      .agg(pl.col('peak_flops_per_second').first().alias('pk')))\n"
        "g = (lf.filter(pl.col('event') == 'step').join(pk, on='rank').group_by('step')\n"
        "     .agg(pl.col('step_seconds').max().alias('sec'), pl.col('tokens').sum().alias('tok'),\n"
        "          pl.col('model_flops').sum().alias('fl'), pl.col('pk').sum().alias('p')))\n"
        "out = g.select(pl.len(), pl.col('tok').sum(),\n"
        "               (pl.col('fl') / (pl.col('sec') * pl.col('p')))\n"
        "               .filter(pl.col('step') >= pl.col('step').min() + 10).median())\n"
        "check = out.collect(engine='streaming').row(0)\n",
    ),
    "pyarrow": (
        "import numpy as np, pyarrow.compute as pc, pyarrow.json as pj",
        "t = pj.read_json(PATH)\n"
        "pk = (t.filter(pc.equal(t['event'], 'run_start')).group_by('rank')\n"
        "      .aggregate([('peak_flops_per_second', 'max')]))\n"
        "g = (t.filter(pc.equal(t['event'], 'step')).join(pk, 'rank').group_by('step')\n"
        "     .aggregate([('step_seconds', 'max'), ('tokens', 'sum'), ('model_flops', 'sum'),\n"
        "                 ('peak_flops_per_second_max', 'sum')]))\n"
        "step = g['step'].to_numpy()\n"
        "mfu = g['model_flops_sum'].to_numpy() / (g['step_seconds_max'].to_numpy()\n"
        "                                         * g['peak_flops_per_second_max_sum'].to_numpy())\n"
        "check = (g.num_rows, pc.sum(g['tokens_sum']).as_py(), np.median(mfu[step >= step.min() + 10]))\n",
    ),
}
# the acceptance figure compares ours with the faster of these two
BARE = ("duckdb", "polars")

CODE = """
import time, resource, json, sys
{imports}
PATH = sys.argv[1]
t0 = time.perf_counter()
{work}
elapsed = time.perf_counter() - t0
print(json.dumps({{"seconds": elapsed, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "check": [float(x) for x in check]}}))
"""


def _start(rank: int, ranks: int) -> str:
    return json.dumps(
        {
            "time": 1.7e9,
            "run": "bench",
            "rank": rank,
            "event": "run_start",
            "world_size": ranks,
            "model": "llama-8b",
            "params": 8_000_000_000,
            "flops_per_token": 6 * 8e9,
            "peak_flops_per_second": PEAK,
            "device": "NVIDIA H100 80GB HBM3",
            "dtype": "bf16",
            "seq_len": 4096,
            "schema_version": 1,
        },
        separators=(",", ":"),
    )


_STEP = (
    '{{"time":{t!r},"run":"bench","rank":{rank},"event":"step","step":{step},"tokens":' + str(TOKENS) + ","
    '"step_seconds":{secs!r},"model_flops":' + repr(FLOPS) + ',"mfu":{mfu!r}}}'
)


def write_log(path: Path, records: int, ranks: int) -> None:
    """A run with a steady MFU of about 0.45 and some jitter, written as RunLogWriter writes it."""
    rng = random.Random(0)
    steps = records // ranks
    base = FLOPS / (0.45 * PEAK)
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(_start(rank, ranks) + "\n" for rank in range(ranks)))
        t = 1.7e9
        lines = []
        for step in range(steps):
            for rank in range(ranks):
                secs = base * (1 + 0.05 * rng.random())
                lines.append(
                    _STEP.format(t=t + secs, rank=rank, step=step, secs=secs, mfu=FLOPS / (secs * PEAK))
                )
            t += base * 1.05
            if len(lines) >= 100_000:
                f.write("\n".join(lines) + "\n")
                lines = []
        if lines:
            f.write("\n".join(lines) + "\n")


def write_cluster(folder: Path, ranks: int, steps: int) -> None:
    """One file per rank, as a 4,096-GPU run writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1)
    base = FLOPS / (0.45 * PEAK)
    for rank in range(ranks):
        t = 1.7e9
        lines = [_start(rank, ranks)]
        for step in range(steps):
            secs = base * (1 + 0.05 * rng.random())
            lines.append(_STEP.format(t=t + secs, rank=rank, step=step, secs=secs, mfu=FLOPS / (secs * PEAK)))
            t += base * 1.05
        (folder / f"rank{rank:05d}.jsonl").write_text("\n".join(lines) + "\n")


def run_child(name: str, path: Path) -> dict:
    imports, work = CHILD[name]
    code = CODE.format(imports=imports, work=work)
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_size(path: Path, rounds: int, variants: list[str]) -> dict:
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for round_no in range(rounds):
        order = variants[:]
        random.shuffle(order)
        for name in order:
            results[name].append(run_child(name, path))
        print(
            f"  round {round_no + 1}/{rounds}: "
            + ", ".join(f"{v} {results[v][-1]['seconds']:.2f} s" for v in variants),
            flush=True,
        )
    checks = {v: results[v][0]["check"] for v in variants}
    print(f"  same answer (steps, tokens, MFU median): {checks}")
    bare = [v for v in variants if v in BARE]
    ratios = (
        [results["ours"][i]["seconds"] / min(results[v][i]["seconds"] for v in bare) for i in range(rounds)]
        if "ours" in variants and bare
        else []
    )
    row = {
        v: {
            "median_s": statistics.median(r["seconds"] for r in results[v]),
            "min_s": min(r["seconds"] for r in results[v]),
            "max_s": max(r["seconds"] for r in results[v]),
            "peak_rss_mb": max(r["maxrss_mb"] for r in results[v]),
        }
        for v in variants
    }
    if ratios:
        row["ratio"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--ranks", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cluster-ranks", type=int, default=0)
    parser.add_argument("--cluster-steps", type=int, default=2000)
    parser.add_argument("--dir", type=Path, help="where to write the logs (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the logs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(CHILD),
        default=list(CHILD),
        help="which to run (default: all; Polars and PyArrow need more memory than the log's size)",
    )
    args = parser.parse_args()

    folder = args.dir or Path(tempfile.mkdtemp(prefix="mfu-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    print(
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": load}}
    try:
        for records in args.records:
            path = folder / f"run{records}.jsonl"
            if not path.exists():
                write_log(path, records, args.ranks)
            size_mb = path.stat().st_size / 1e6
            print(f"\n{records:,} step records, {args.ranks} ranks, {size_mb:,.0f} MB", flush=True)
            row = bench_size(path, args.rounds, args.variants)
            row["size_mb"] = size_mb
            results[str(records)] = row
            print(f"  {'variant':8} {'median s':>9} {'min s':>7} {'max s':>7} {'peak RSS MB':>12}")
            for name in args.variants:
                r = row[name]
                spread = f"{r['median_s']:9.2f} {r['min_s']:7.2f} {r['max_s']:7.2f}"
                print(f"  {name:8} {spread} {r['peak_rss_mb']:12.0f}")
            ratio = row.get("ratio")
            if ratio:
                print(
                    f"  ours / faster bare engine, same round: median {ratio['median']:.2f} "
                    f"(min {ratio['min']:.2f}, max {ratio['max']:.2f})"
                )
            if not args.keep:
                path.unlink()
        if args.cluster_ranks:
            cluster = folder / "cluster"
            write_cluster(cluster, args.cluster_ranks, args.cluster_steps)
            size_mb = sum(p.stat().st_size for p in cluster.iterdir()) / 1e6
            records = args.cluster_ranks * args.cluster_steps
            shape = f"{args.cluster_ranks:,} files x {args.cluster_steps:,} steps"
            print(f"\ncluster run: {shape} ({records:,} records, {size_mb:,.0f} MB)", flush=True)
            code = (
                "import resource, subprocess, sys, time, json\n"
                "t0 = time.perf_counter()\n"
                "cli = 'import sys; from monitor.cli import main; raise SystemExit(main(sys.argv[1:]))'\n"
                "out = subprocess.run([sys.executable, '-c', cli, 'analyze', sys.argv[1], '--json'],"
                " capture_output=True, text=True, check=True)\n"
                "r = json.loads(out.stdout)['runs'][0]\n"
                "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
                "print(json.dumps({'seconds': time.perf_counter() - t0, 'maxrss_mb': rss,"
                " 'ranks': r['ranks'], 'steps': r['steps'], 'mfu_median': r['mfu']['median'],"
                " 'stragglers': len(r['stragglers'])}))\n"
            )
            started = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", code, str(cluster)], capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f"cluster run failed:\n{out.stderr[-3000:]}")
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row.update(records=records, size_mb=size_mb, wall_s=time.perf_counter() - started)
            results["cluster"] = row
            took = f"{row['seconds']:.1f} s, peak RSS {row['maxrss_mb']:.0f} MB"
            print(f"  mfu analyze FOLDER --json: {took}; {row}")
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(folder, ignore_errors=True)
        elif not args.keep:
            shutil.rmtree(folder / "cluster", ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
