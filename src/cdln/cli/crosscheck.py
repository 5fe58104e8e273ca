"""``cdln crosscheck``: the authors' own code on our problem instances and settings (:mod:`cdln.reference.authors`).

Their code is imported at run time from the checkout ``--authors`` names; nothing of it is copied here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from cdln.cli.common import ExitCode, add_progress_options
from cdln.pipeline.validate import load_pipeline_config
from cdln.reference.authors import (
    DEFAULT_TASKS,
    TASKS,
    default_panels,
    describe_code,
    load_authors_code,
    run_panels,
    write_table,
)

HELP = (
    "train the authors' code (a checkout of soominkwon/comp-deep-nets on GitHub) and our engine from the same "
    "initial weights on our problem instances, and write DIR/crosscheck.csv and DIR/crosscheck.md. "
    f"Default tasks: {' '.join(DEFAULT_TASKS)} (~5 minutes on one core); 'ms' (d=200, m=4000, a 1.3 GB operator in "
    "their code) is opt-in: over 2 s per GD step on one core with their code (measured), i.e. hours per model."
)


def crosscheck_command(args: argparse.Namespace) -> int:
    code = load_authors_code(args.authors)
    panels = default_panels(load_pipeline_config(args.config), args.seed, args.tasks)
    start = time.monotonic()

    def progress(line: str) -> None:
        if not args.quiet:
            print(f"[crosscheck {time.monotonic() - start:7.1f}s] {line}", file=sys.stderr, flush=True)

    progress(f"authors' code: {describe_code(code)}; tasks {' '.join(args.tasks)}, seed {args.seed}")
    table = run_panels(code, panels, args.seed, progress)
    header = (
        "# Cross-check: the authors' code vs our engine\n\n"
        f"Authors' code: {describe_code(code)}, JAX float64: {code.x64}. Seed {args.seed} (data seed and init seed).\n"
        "Each row trains the same initial weights on the same problem instance "
        "(cdln.data.synthetic.make_problem) twice: "
        "'authors' code' = their solver.train with their loss functions and dlr; 'ours' = cdln.engine.train. "
        "Iterations are counted at checkpoints (every n_inner steps); 'not reached' = not within the budget."
    )
    csv_path, md_path = write_table(table, args.out, header)
    progress(f"wrote {csv_path} and {md_path} ({len(table)} rows)")
    return ExitCode.OK


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``crosscheck`` to the ``cdln`` parser."""
    parser = commands.add_parser(
        "crosscheck", help="run the authors' code on our instances beside ours", description=HELP
    )
    parser.add_argument("--authors", required=True, metavar="PATH", help="checkout of soominkwon/comp-deep-nets")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for crosscheck.csv and crosscheck.md")
    parser.add_argument(
        "--tasks", nargs="+", choices=TASKS, default=list(DEFAULT_TASKS), help="which comparisons (default: all but ms)"
    )
    parser.add_argument("--seed", type=int, default=0, help="data and init seed (default: 0)")
    parser.add_argument(
        "--config", type=Path, default=Path("config/config.yaml"), help="pipeline config whose settings the panels use"
    )
    add_progress_options(parser)
    parser.set_defaults(handler=crosscheck_command)
