"""Stopping a run cleanly on Ctrl-C or ``kill``: the learner checkpoints, the env workers keep running until closed.

While a :class:`StopRequest` is active, the first SIGINT or SIGTERM is only
recorded; the training loop checks it after each agent step, saves a
checkpoint and stops (``resume=<run_dir>`` continues from there). A second
signal is handled as if no request were active (Ctrl-C raises
``KeyboardInterrupt`` at once, SIGTERM terminates), for a user who does not
want to wait for the save.

A terminal's Ctrl-C reaches every process of the run, env workers included;
:func:`ignoring_stop_signals` makes a worker leave both signals to the learner,
which closes it (a worker whose learner dies sees its pipe close and exits).
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any, Callable

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """A context manager that turns the first SIGINT/SIGTERM into a request to stop after the current step.

    Outside the main thread (where Python cannot install signal handlers) it
    does nothing and no request is ever made.
    """

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None
        self.previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self.handle) for sig in STOP_SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.restore()

    def requested(self) -> bool:
        """Whether a signal has asked the run to stop."""
        return self.signal is not None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signal.Signals(signum)
        self.restore()
        log.warning(
            "%s: saving a checkpoint after the current step, then stopping (again: stop now, unsaved)", self.signal.name
        )

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}


class RunInterrupted(Exception):
    """A run stopped by a signal after saving its checkpoint.

    :param stop_signal: the signal that stopped it
    :param message: where it stopped and how to continue
    """

    def __init__(self, stop_signal: signal.Signals, message: str):
        super().__init__(message)
        self.signal = stop_signal

    @property
    def exit_status(self) -> int:
        """The shell's status for a process ended by the signal (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + int(self.signal)


def ignoring_stop_signals(make_env: Callable[[], Any]) -> Any:
    """Call ``make_env`` in an env worker process after making it ignore SIGINT and SIGTERM."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    return make_env()
