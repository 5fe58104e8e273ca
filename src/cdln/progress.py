"""Progress lines on stderr for the long-running subcommands (train, altmin, nonlinear)."""

from __future__ import annotations

import argparse
import sys
import time


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0; got {text}")
    return value


def add_progress_options(parser: argparse.ArgumentParser) -> None:
    """``--quiet`` and ``--progress-every`` (shared by every long-running subcommand)."""
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument(
        "--progress-every",
        type=_positive_seconds,
        default=1.0,
        metavar="SECONDS",
        help="at most one progress line per SECONDS of wall time (default: 1)",
    )


def progress_printer(prefix: str, args: argparse.Namespace) -> ThrottledProgress | None:
    """The progress callback the options in ``args`` ask for (None with ``--quiet``)."""
    return None if args.quiet else ThrottledProgress(prefix, args.progress_every)


class ThrottledProgress:
    """Progress lines to stderr, at most one per ``interval`` seconds (the first always)."""

    def __init__(self, prefix: str, interval: float = 1.0) -> None:
        self.prefix, self.interval, self._last = prefix, interval, -float("inf")

    def __call__(self, line: str) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval:
            print(f"[{self.prefix}] {line}", file=sys.stderr, flush=True)
            self._last = now
