"""The ``cdln`` command line (``python -m cdln`` works too).

Every subcommand is registered by one module and dispatched the same way: its parser sets a
``handler``; :func:`cdln.cli.common.run_handler` calls it and maps the library's errors to the exit
codes of :class:`cdln.cli.common.ExitCode`.

- training (:mod:`cdln.cli.train`): ``train``, ``altmin``, ``nonlinear``, ``run-job``;
- data (:mod:`cdln.cli.data`): ``make-problem``, ``movielens-problem``, ``movielens-synthetic``,
  ``fashion-mnist-synthetic``;
- results (:mod:`cdln.cli.results`): ``aggregate``, ``summary``, ``check-regression``, ``plot``;
- performance (:mod:`cdln.cli.bench`, the benchmark itself in :mod:`cdln.bench`): ``bench``;
- cross-check (:mod:`cdln.cli.crosscheck`): ``crosscheck`` (the authors' code on our instances).
"""

from __future__ import annotations

import argparse
import os
import sys

from cdln import __version__
from cdln.cli import bench, crosscheck, data, results, train
from cdln.cli.common import run_handler


def build_parser() -> argparse.ArgumentParser:
    description = "Compressed deep linear networks: train, plot, check the paper's claims (python -m cdln works too)."
    parser = argparse.ArgumentParser(prog="cdln", description=description)
    parser.add_argument("--version", action="version", version=f"cdln {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (train, data, results, crosscheck, bench):
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    # A problem class named module:Class is imported from where cdln runs, the `cdln` script as `python -m cdln`
    # (which puts the working directory first); appended, so a module of the user's never shadows a library.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    return run_handler(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
