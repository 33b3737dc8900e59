"""SIGINT and SIGTERM: a stop request that long runs honour at a safe point, and SIGTERM
turned into an exception so that cleanup (`finally`, temporary files) always runs."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """A KeyboardInterrupt raised by a signal; `signum` says which (exit code 128 + signum)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def signal_of(exc: KeyboardInterrupt) -> int:
    """The signal behind an interruption: `Stopped`'s own, else SIGINT (Ctrl-C)."""
    return exc.signum if isinstance(exc, Stopped) else signal.SIGINT


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While active, SIGTERM raises `Stopped` on the main thread as Ctrl-C raises
    KeyboardInterrupt, so a terminated run cleans up like an interrupted one."""
    if not _on_main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Stopped(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class StopRequest(threading.Event):
    """Set by the first SIGINT or SIGTERM while `stop_requests` is active; `signum` is it."""

    signum: int = signal.SIGINT

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def stop_requests(request: StopRequest | None = None) -> Iterator[StopRequest]:
    """While active, a first SIGINT or SIGTERM sets the yielded request (the run then finishes
    what it has and ends cleanly); a second one raises `Stopped` at once. Signals arrive on the
    main thread only: elsewhere the request is never set by a signal."""
    request = request if request is not None else StopRequest()
    if not _on_main_thread():
        yield request
        return

    def handler(signum: int, frame: Any) -> None:
        if request.is_set():
            raise Stopped(signum)
        request.signum = signum
        request.set()

    previous = {s: signal.signal(s, handler) for s in _SIGNALS}
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
