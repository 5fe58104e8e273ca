"""Progress lines on stderr for long-running work (training, benchmarks), throttled."""

from __future__ import annotations

import sys
import time


def time_left(seconds: float, done: int, total: int) -> str:
    """``"~1m23s left"``: the time ``total - done`` more units take at the rate so far (``"left ?"`` before any)."""
    if done <= 0 or seconds <= 0:
        return "left ?"
    left = round(seconds / done * max(0, total - done))
    return f"~{left // 60}m{left % 60:02d}s left" if left >= 60 else f"~{left}s left"


class ThrottledProgress:
    """Progress lines to stderr, at most one per ``interval`` seconds (the first always)."""

    def __init__(self, prefix: str, interval: float = 1.0) -> None:
        self.prefix, self.interval, self._last = prefix, interval, -float("inf")

    def __call__(self, line: str) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval:
            print(f"[{self.prefix}] {line}", file=sys.stderr, flush=True)
            self._last = now
