"""Ctrl-C during training: held back while a step's update runs."""

from __future__ import annotations

import contextlib
import signal
import threading

__all__ = ["SigintGuard"]


class SigintGuard:
    """Ctrl-C (SIGINT) held back while a step's update runs, so it is never half done.

    `with SigintGuard() as guard:` installs one handler for a whole run (a handler per step would
    cost two `signal.signal` calls each); `guard.held()` marks the update. An interrupt outside
    it goes to the previous handler at once (`KeyboardInterrupt` by default), one inside it
    right after. Signals reach only the main thread; elsewhere, or under a handler installed
    outside Python, the guard does nothing.
    """

    def __init__(self):
        self.previous = self.pending = None
        self.holding = False

    def __enter__(self) -> SigintGuard:
        main = threading.current_thread() is threading.main_thread()
        if main and signal.getsignal(signal.SIGINT) is not None:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None

    def _handle(self, signum, frame) -> None:
        if self.holding:
            self.pending = frame
        else:
            self._forward(frame)

    def _forward(self, frame) -> None:
        if callable(self.previous):
            self.previous(signal.SIGINT, frame)
        elif self.previous == signal.SIG_DFL:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.raise_signal(signal.SIGINT)

    @contextlib.contextmanager
    def held(self):
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
            frame, self.pending = self.pending, None
            if frame is not None:
                self._forward(frame)
