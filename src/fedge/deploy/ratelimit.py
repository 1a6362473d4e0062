"""Refusals logged rate-limited, so that a flood of bad requests cannot flood the server's log."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

BURST = 5
"""Refusals of one kind logged in full per log window; the rest are counted in its summary line."""


class RefusalLog:
    """Refusals logged rate-limited: per kind (event, method, code) the first :data:`BURST` of
    each ``window_s`` in full, then one ``event=refused_summary`` line with the counts.

    An attacker's requests therefore cost a bounded number of log lines per window, and the
    summary still says how many were refused and why.
    """

    def __init__(self, logger: logging.Logger, window_s: float = 10.0, burst: int = BURST) -> None:
        self.logger, self.window_s, self.burst = logger, window_s, burst
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._timer: threading.Timer | None = None

    def refused(self, method: str, code: str, reason: str, *, event: str = "refused", **fields: Any) -> None:
        kind = f"{event}:{method}:{code}"
        with self._lock:
            if self._timer is None:
                self._timer = threading.Timer(self.window_s, self._flush)
                self._timer.daemon = True
                self._timer.start()
            n = self._counts[kind] = self._counts.get(kind, 0) + 1
        if n <= self.burst:
            extra = "".join(f" {k}={v}" for k, v in fields.items())
            self.logger.warning("event=%s method=%s code=%s%s reason=%r", event, method, code, extra, reason)

    def close(self) -> None:
        """Log the pending window's summary now (the server is stopping), so none is logged after it stopped."""
        with self._lock:
            timer = self._timer
        if timer is not None:
            timer.cancel()
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            counts, self._counts, self._timer = self._counts, {}, None
        if any(n > self.burst for n in counts.values()):
            self.logger.warning(
                "event=refused_summary window_s=%g count=%d logged=%d by_kind=%s",
                self.window_s,
                sum(counts.values()),
                sum(min(n, self.burst) for n in counts.values()),
                json.dumps(counts, sort_keys=True),
            )
