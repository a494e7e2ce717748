"""Closing the run on SIGTERM (a scheduler's preemption): the handler closes the monitor (the run log gets its
last steps and a ``run_end``), then hands the signal on — to the previous handler, or to the default action so
the process still terminates. Installed only from the main thread; restored at close."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import Any


class SigtermHandler:
    def __init__(self, close: Callable[[str], Any]) -> None:
        self._close = close
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
        self._close("sigterm")
        if callable(prev):
            prev(signum, frame)
        elif prev == signal.SIG_DFL or prev is None:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
