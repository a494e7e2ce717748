"""How the embedded engines read a JSON token of the wrong type into a typed column.

    python benchmarks/engine_types.py [--markdown]

`mfu analyze` must count a step record whose ``step`` is ``"5"``, ``1.0`` or ``true`` as a bad value, as
the reference reader (Python's ``json`` module and ``type(...) is int``) does. An engine can read the logs
with typed columns, at its full speed, only if it never silently turns such a token into a number. This
script asks each engine: a two-line NDJSON file (a clean record, then the probe) read with the fields
declared as ``step BIGINT``, ``time DOUBLE``, ``run VARCHAR``; what comes back for the probe's field, an
error, or a crash. Each read runs in its own process, so a crash is reported, not suffered.

Engines: DuckDB's ``read_json`` (``columns=``), Polars' ``read_ndjson`` (``schema=``), PyArrow's
``pyarrow.json.read_json`` (``explicit_schema``); an engine that is not installed is left out
(``pip install 'mfu-monitor[bench]'`` brings all three).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

# a step record as the reference reader requires it, with the three probed fields to fill in
TEMPLATE = (
    '{{"event":"step","run":{run},"rank":0,"step":{step},"time":{time},"tokens":8,"step_seconds":1.0,'
    '"model_flops":48.0}}'
)
VALUES = {"run": '"a"', "step": "1", "time": "1.5"}
CLEAN = TEMPLATE.format(**VALUES)
# (field, token); the reference reader's verdict on each is read from it, not written here
CASES = [
    ("step", "5"),
    ("step", '"5"'),
    ("step", "1.0"),
    ("step", "1.5"),
    ("step", "1e3"),
    ("step", "true"),
    ("time", "5"),
    ("time", '"2.5"'),
    ("time", "true"),
    ("time", "nan"),
    ("run", "5"),
    ("run", '{"a":1}'),
    ("run", "true"),
    (None, "null"),
    ("first", "null"),  # the probe is the file's first line
]

READERS = {
    "duckdb": (
        "import duckdb\n"
        'rows = duckdb.connect().execute("SELECT run, step, time FROM read_json(?, '
        "format='newline_delimited', columns={'run': 'VARCHAR', 'step': 'BIGINT', 'time': 'DOUBLE'})\","
        " [PATH]).fetchall()\n"
        "print(json.dumps([dict(zip(('run', 'step', 'time'), r)) for r in rows]))\n"
    ),
    "polars": (
        "import polars as pl\n"
        "df = pl.read_ndjson(PATH, schema={'run': pl.String, 'step': pl.Int64, 'time': pl.Float64})\n"
        "print(json.dumps(df.rows(named=True)))\n"
    ),
    "pyarrow": (
        "import pyarrow as pa, pyarrow.json as pj\n"
        "schema = pa.schema([('run', pa.string()), ('step', pa.int64()), ('time', pa.float64())])\n"
        "options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior='ignore')\n"
        "print(json.dumps(pj.read_json(PATH, parse_options=options).to_pylist()))\n"
    ),
}


def installed(engine: str) -> bool:
    code = f"import {engine}"
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def version(engine: str) -> str:
    code = f"import {engine}; print({engine}.__version__)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()


def probe(engine: str, path: Path, field: str | None) -> str:
    code = f"import json\nPATH = {str(path)!r}\n" + READERS[engine]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode < 0:
        return f"crash (signal {-out.returncode})"
    if out.returncode != 0:
        return "error"
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    row = rows[0] if field == "first" else rows[-1]
    if field in (None, "first"):
        return "row of nulls" if all(v is None for v in row.values()) else json.dumps(row)
    return json.dumps(row[field])


def reference(path: Path) -> str:
    """What ``monitor.analysis.read`` (the reference reader) makes of the probe: kept, or its skip kind."""
    from monitor.analysis.read import read_logs

    skipped = read_logs([path]).skipped
    return ", ".join(sorted(k for k, n in skipped.items() if n)) or "kept"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    engines = [e for e in READERS if installed(e)]
    header = ["field", "token", "reference reader", *(f"{e} {version(e)}" for e in engines)]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "probe.jsonl"
        for field, token in CASES:
            line = token if field in (None, "first") else TEMPLATE.format(**(VALUES | {field: token}))
            first = field == "first"
            path.write_text(line + "\n" + CLEAN + "\n" if first else CLEAN + "\n" + line + "\n")
            name = "(first line)" if first else field or "(line)"
            rows.append([name, token, reference(path), *(probe(e, path, field) for e in engines)])
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(f"`{c}`" if i == 1 else c for i, c in enumerate(row)) + " |")
    else:
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
