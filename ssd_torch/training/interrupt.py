"""Stop on SIGINT / SIGTERM without losing the run.

The first signal only sets a :class:`StopFlag`; the trainer looks at it at each step boundary (all ranks agree
through an all-reduce), finishes the step, writes a checkpoint and returns. The tool then prints one line and
exits with ``128 + signal`` (130 for Ctrl-C, 143 for SIGTERM). A second signal aborts at once (a
``KeyboardInterrupt``; a checkpoint being written stays intact, see ``ssd_torch.files.atomic_write``).
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator

__all__ = ["STOP_SIGNALS", "StopFlag", "stop_on_signals", "exit_code"]

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


class StopFlag:
    """Which stop signal arrived first (0: none yet)."""

    def __init__(self) -> None:
        self.signum = 0

    def request(self, signum: int) -> None:
        self.signum = self.signum or int(signum)


def exit_code(signum: int) -> int:
    """The shell's convention for a process ended by signal ``signum``: 128 + signum."""
    return 128 + int(signum)


@contextlib.contextmanager
def stop_on_signals(flag: StopFlag, announce: bool = True) -> Iterator[StopFlag]:
    """Route SIGINT / SIGTERM to ``flag`` while the block runs (main thread only: elsewhere Python cannot
    install handlers, and the block runs unguarded; a signal ignored when the block starts stays ignored).
    ``announce``: write one notice to stderr on the first
    signal, so that nobody presses Ctrl-C again while a long step finishes."""
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    # a signal the process was started to ignore (a background job of a script ignores SIGINT) stays ignored
    previous = {s: h for s in STOP_SIGNALS if (h := signal.getsignal(s)) is not signal.SIG_IGN}

    def restore() -> None:
        for s, handler in previous.items():
            signal.signal(s, handler)

    def handler(signum: int, _frame: object) -> None:
        if flag.signum:
            restore()
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: aborted at once")
        flag.request(signum)
        if announce:  # os.write: safe inside a signal handler, unlike print
            os.write(2, f"{signal.Signals(signum).name}: stopping after this step to write a checkpoint "
                        f"(send it again to abort at once)\n".encode())

    for s in previous:
        signal.signal(s, handler)
    try:
        yield flag
    finally:
        restore()
