"""SIGTERM (a scheduler's preemption). Where the signal ends the process (no handler of the program's own:
the default action), the monitor closes first — the run log gets its last steps and a ``run_end`` — and the
signal then takes its default action. Where the program has a handler of its own (a graceful shutdown that
may train a few more steps and save a checkpoint) or ignores the signal, the monitor keeps counting: it only
asks for its steps to be written and flushed at the next step, and the run closes at exit (``run_end`` reason
``sigterm``); the program's handler is then called. Installed only from the main thread; restored at close."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import Any


class SigtermHandler:
    def __init__(self, close: Callable[[str], Any], keep_going: Callable[[], Any]) -> None:
        self._close = close
        self._keep_going = keep_going
        self._prev: Any = None
        self.installed = False

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            self._prev = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, self._on_sigterm)
            self.installed = True
        except (ValueError, OSError):
            self.installed = False

    def restore(self) -> None:
        if not self.installed:
            return
        try:
            if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
                signal.signal(signal.SIGTERM, self._prev)
        except (ValueError, OSError):
            pass
        self.installed = False

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        prev = self._prev
        if callable(prev) or prev == signal.SIG_IGN:
            self._keep_going()  # the process trains on: count on, close at exit
            if callable(prev):
                prev(signum, frame)
            return
        self._close("sigterm")
        if prev == signal.SIG_DFL or prev is None:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
