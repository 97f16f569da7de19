"""A function run on a worker thread whose outcome is delivered on the GUI thread.

Krita's API and Qt widgets belong to the GUI thread; network calls must not run there.
The owner polls (from a QTimer) and gets exactly one callback once the call is over.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Any

from .controller import ThreadStarter, start_daemon_thread


class BackgroundCall:
    def __init__(
        self,
        function: Callable[[], Any],
        on_result: Callable[[Any], None],
        on_error: Callable[[BaseException], None],
        start_thread: ThreadStarter = start_daemon_thread,
    ) -> None:
        self._on_result = on_result
        self._on_error = on_error
        self._outcome: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        self._done = False

        def work() -> None:
            try:
                self._outcome.put((True, function()))
            except Exception as error:  # noqa: BLE001 - handed to on_error
                self._outcome.put((False, error))

        start_thread(work)

    @property
    def done(self) -> bool:
        return self._done

    def poll(self) -> bool:
        """Deliver the outcome if it arrived; True once delivered. GUI thread only."""
        if self._done:
            return True
        try:
            ok, value = self._outcome.get_nowait()
        except queue.Empty:
            return False
        self._done = True
        if ok:
            self._on_result(value)
        else:
            self._on_error(value)
        return True
