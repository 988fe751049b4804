"""Background work that repeats: rollups, plan checks, webhook deliveries."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic:
    """Runs ``fn`` every ``interval`` seconds in a daemon thread until stopped."""

    def __init__(self, name: str, fn: Callable[[], object], interval: float) -> None:
        self.name = name
        self.fn = fn
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.fn()
            except Exception:
                log.exception("%s failed; retrying at the next interval", self.name)
