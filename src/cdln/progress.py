"""Progress lines on stderr for long-running work (training, benchmarks), throttled."""

from __future__ import annotations

import sys
import time


class ThrottledProgress:
    """Progress lines to stderr, at most one per ``interval`` seconds (the first always)."""

    def __init__(self, prefix: str, interval: float = 1.0) -> None:
        self.prefix, self.interval, self._last = prefix, interval, -float("inf")

    def __call__(self, line: str) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval:
            print(f"[{self.prefix}] {line}", file=sys.stderr, flush=True)
            self._last = now
