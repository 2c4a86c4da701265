"""Stop signals for the one-process CLI: SIGTERM (``kill``, ``docker stop``) and SIGHUP (the terminal
closed) take the Ctrl-C path, so a stopped run saves its embedding and ``.resume`` state first."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator

SIGNAL_NAMES = ("SIGTERM", "SIGHUP")  # SIGHUP does not exist on Windows


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def signals_interrupt(say: Callable[[str], None] = _stderr) -> Iterator[None]:
    """Inside, SIGTERM and SIGHUP raise ``KeyboardInterrupt("SIGTERM")`` (or ``"SIGHUP"``) as Ctrl-C
    does. Later ones are only reported, so that the save they asked for can finish. The previous
    handlers come back on exit. Outside the main thread (where Python cannot set handlers) nothing
    changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[str] = []

    def handler(signum: int, _frame) -> None:
        name = signal.Signals(signum).name
        if fired:
            say(f"{name} received while stopping after {fired[0]}: still saving, please wait")
            return
        fired.append(name)
        raise KeyboardInterrupt(name)

    previous = {}
    for name in SIGNAL_NAMES:
        sig = getattr(signal, name, None)
        if sig is not None:
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
