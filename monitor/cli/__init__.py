"""The `mfu` command line: parses arguments, calls the library, formats results. No logic lives here.

Each subcommand is a module ``monitor/cli/cmd_<name>.py`` with ``register(subparsers)``; it sets ``run``
as the parser default, a function ``(args) -> int``. Known bad input (``InputError``, pydantic validation,
unreadable files) becomes one line on stderr and exit code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
from collections.abc import Sequence
from typing import NoReturn

from monitor import __version__
from monitor.errors import InputError, describe_validation_error


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line, naming the flag and pointing at --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mfu", description="Model FLOPs utilization: live monitor, calculators, analysis.")
    parser.add_argument("--version", action="version", version=f"mfu-monitor {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    package = importlib.import_module(__name__)
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("cmd_"):
            importlib.import_module(f"{__name__}.{info.name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"mfu {args.command}"
    try:
        code = int(args.run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below, not at interpreter exit
        return code
    except BrokenPipeError:
        # The reader went away (`mfu analyze --json | head`): stop quietly. Point stdout at /dev/null so
        # that the interpreter's last flush at exit does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:
        if args.debug:
            raise
        message = _one_line(exc)
        if message is None:
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _one_line(exc: BaseException) -> str | None:
    """The one-line message for an error caused by the user's input; None for a bug (re-raised)."""
    from pydantic import ValidationError

    if isinstance(exc, InputError):
        return str(exc)
    if isinstance(exc, ValidationError):
        return describe_validation_error(exc)
    if isinstance(exc, FileNotFoundError):
        return f"{exc.filename}: no such file — check the path"
    if isinstance(exc, IsADirectoryError):
        return f"{exc.filename}: is a directory — pass a file"
    if isinstance(exc, PermissionError):
        return f"{exc.filename}: permission denied — choose a path you can read or write"
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON ({exc.msg} at line {exc.lineno}) — pass a JSON file"
    return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
