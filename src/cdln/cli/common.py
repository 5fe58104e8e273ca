"""What every ``cdln`` subcommand shares: exit codes, the errors they map from, common options."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from enum import IntEnum

import torch

from cdln.config import ConfigError
from cdln.data import DataFormatError, DataUnavailableError
from cdln.engine import DivergenceError
from cdln.outputs import check_output_file
from cdln.pipeline.grid import GridError
from cdln.progress import ThrottledProgress


class ExitCode(IntEnum):
    """Exit status of every subcommand (argparse's own usage errors also exit 2)."""

    OK = 0
    CHECK_FAILED = 1  # a check ran and found violations (check-regression, claims)
    BAD_OPTION = 2  # invalid option or config value; nothing was done
    DIVERGED = 3  # training produced a non-finite loss; no record was written
    NO_DATA = 4  # a data set is missing; the message says where to put it
    BAD_DATA = 5  # a data file is malformed
    INTERRUPTED = 130  # Ctrl-C (SIGINT); every output is atomic, so nothing was written


Handler = Callable[[argparse.Namespace], int]


def writes_files(parser: argparse.ArgumentParser, *dests: str) -> None:
    """Mark options of ``parser`` as files the subcommand writes: each is checked before any work, and one that
    exists but was not written by cdln is refused (:func:`cdln.outputs.check_output_file`)."""
    parser.set_defaults(output_files=dests)


def check_output_files(args: argparse.Namespace) -> None:
    for dest in getattr(args, "output_files", ()):
        if getattr(args, dest, None) is not None:
            check_output_file(getattr(args, dest), f"--{dest.replace('_', '-')}")


def run_handler(args: argparse.Namespace) -> int:
    """Call the subcommand's handler, turning the library's errors into a message and an exit code."""
    try:
        check_output_files(args)
        return int(args.handler(args))
    except DivergenceError as error:
        return fail(f"{error}; no record was written", ExitCode.DIVERGED)
    except DataUnavailableError as error:
        return fail(str(error), ExitCode.NO_DATA)
    except DataFormatError as error:
        return fail(f"malformed data: {error}", ExitCode.BAD_DATA)
    except (ConfigError, GridError, ValueError, FileNotFoundError) as error:
        return fail(str(error), ExitCode.BAD_OPTION)
    except KeyboardInterrupt:
        return fail("interrupted; nothing written", ExitCode.INTERRUPTED)


def fail(message: str, code: ExitCode) -> int:
    print(f"cdln: error: {message}", file=sys.stderr)
    return code


def positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0; got {text}")
    return value


def add_threads_option(parser: argparse.ArgumentParser, default: int | None = None) -> None:
    parser.add_argument(
        "--threads",
        type=int,
        default=default,
        help=f"CPU threads for torch (default: {default or 'all the machine has'}); set OMP_NUM_THREADS to the same;"
        " 1 per process when several run at once",
    )


def apply_threads(args: argparse.Namespace) -> None:
    """``torch.set_num_threads(args.threads)`` after checking it (before any work)."""
    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be an integer >= 1; got {threads}")
        torch.set_num_threads(threads)


def add_progress_options(parser: argparse.ArgumentParser) -> None:
    """``--quiet`` and ``--progress-every`` (every long-running subcommand)."""
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument(
        "--progress-every",
        type=positive_seconds,
        default=1.0,
        metavar="SECONDS",
        help="at most one progress line per SECONDS of wall time (default: 1)",
    )


def progress_printer(prefix: str, args: argparse.Namespace) -> ThrottledProgress | None:
    """The progress callback the options in ``args`` ask for (None with ``--quiet``)."""
    return None if args.quiet else ThrottledProgress(prefix, args.progress_every)
