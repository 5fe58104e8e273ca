"""CLI subcommands for the real-data experiments (registered in :mod:`cdln.cli`).

- ``cdln movielens-problem``: ml-100k.zip -> an MC problem file (train mask + held-out ratings)
  that ``cdln train --problem`` trains the original DLN and the C-DLN on.
- ``cdln altmin``: the AltMin baseline on such a problem file -> a run record.
- ``cdln nonlinear``: one FashionMNIST classifier (mlp | dln | cdln) -> a run record.
- ``cdln movielens-synthetic`` / ``cdln fashion-mnist-synthetic``: stand-in files of the same
  formats (NOT the real data), for the reduced CI grid and for checking the pipeline.

Exit codes: 2 bad option, 4 data missing (the message says where to put it), 5 malformed data.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import torch

from cdln.data import DataFormatError, DataUnavailableError
from cdln.progress import add_progress_options, progress_printer

EXIT_BAD_OPTION, EXIT_NO_DATA, EXIT_BAD_DATA = 2, 4, 5


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be an integer >= 1; got {threads}")
        torch.set_num_threads(threads)


def register(commands: argparse._SubParsersAction) -> None:
    """Add the real-data subcommands to the ``cdln`` parser."""
    ml = commands.add_parser("movielens-problem", help="MovieLens-100K -> MC problem file with held-out ratings")
    ml.add_argument("--out", type=Path, required=True, help="problem file (.pt) to write")
    ml.add_argument("--zip-path", type=Path, default=None, help="ml-100k.zip to use (default: RESOURCES/ml-100k.zip)")
    ml.add_argument("--resources", type=Path, default=Path("resources"), help="resources folder (default: resources)")
    ml.add_argument("--no-download", action="store_true", help="fail instead of downloading from GroupLens")
    ml.add_argument("--rank", type=int, default=10, help="target rank r recorded in the problem (C-DLN r_hat = 2r)")
    ml.add_argument("--test-fraction", type=float, default=0.2, help="share of ratings held out, in (0, 1)")
    ml.add_argument("--split-seed", type=int, default=0, help="seed of the train/test split")
    ml.add_argument("--n-users", type=int, default=None, help="keep only the first N users (a small slice)")
    ml.add_argument("--n-items", type=int, default=None, help="keep only the first N items (a small slice)")
    ml.set_defaults(handler=movielens_problem_command)

    syn = commands.add_parser("movielens-synthetic", help="write a stand-in ml-100k.zip (same format; not MovieLens)")
    syn.add_argument("--out", type=Path, required=True, help="zip file to write")
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--n-ratings", type=int, default=100_000)
    syn.set_defaults(handler=movielens_synthetic_command)

    am = commands.add_parser("altmin", help="AltMin (alternating least squares) on an MC problem file")
    am.add_argument("--problem", type=Path, required=True, help="problem file from `cdln movielens-problem`")
    am.add_argument("--out", type=Path, required=True, help="run record directory to write")
    am.add_argument("--k", type=int, default=10, help="rank of the factors, >= 1")
    am.add_argument("--iterations", type=int, default=100, help="ALS sweeps (each solves both factors)")
    am.add_argument("--n-inner", type=int, default=1, help="sweeps between checkpoints")
    am.add_argument("--ridge", type=float, default=1e-6, help="ridge on each least-squares solve, >= 0")
    am.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    am.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    am.add_argument("--threads", type=int, default=None)
    add_progress_options(am)
    am.set_defaults(handler=altmin_command)

    from cdln.nonlinear import MODELS, OPTIMIZERS, NonlinearConfig

    nl = commands.add_parser("nonlinear", help="train one FashionMNIST classifier (mlp, dln or cdln block)")
    nl.add_argument("--out", type=Path, required=True, help="run record directory to write")
    nl.add_argument("--data-dir", type=Path, default=None, help="folder with the four FashionMNIST IDX files")
    nl.add_argument("--resources", type=Path, default=Path("resources"), help="resources folder (default: resources)")
    nl.add_argument("--no-download", action="store_true", help="fail instead of downloading")
    nl.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    nl.add_argument("--threads", type=int, default=None)
    add_progress_options(nl)
    choices = {"model": list(MODELS), "optimizer": list(OPTIMIZERS), "dtype": ["float32", "float64"]}
    for f in dataclasses.fields(NonlinearConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if f.name == "hidden":
            nl.add_argument(flag, type=int, nargs="+", default=default, help=f"trunk widths (default: {default})")
            continue
        kind = {"int": int, "float": float, "int | None": int, "str": str}[f.type]
        nl.add_argument(flag, type=kind, default=default, choices=choices.get(f.name), help=f"(default: {default})")
    nl.set_defaults(handler=nonlinear_command)

    fm = commands.add_parser(
        "fashion-mnist-synthetic", help="write stand-in IDX files (FashionMNIST format; not the data)"
    )
    fm.add_argument("--out", type=Path, required=True, help="folder to write the four .gz IDX files into")
    fm.add_argument("--n-train", type=int, default=2000)
    fm.add_argument("--n-test", type=int, default=500)
    fm.add_argument("--seed", type=int, default=0)
    fm.set_defaults(handler=fashion_mnist_synthetic_command)


def run_handler(args: argparse.Namespace) -> int:
    """Call the subcommand's handler, mapping errors to messages and exit codes."""
    try:
        return args.handler(args)
    except DataUnavailableError as error:
        print(f"cdln: error: {error}", file=sys.stderr)
        return EXIT_NO_DATA
    except DataFormatError as error:
        print(f"cdln: error: malformed data: {error}", file=sys.stderr)
        return EXIT_BAD_DATA
    except (ValueError, FloatingPointError) as error:
        print(f"cdln: error: {error}", file=sys.stderr)
        return EXIT_BAD_OPTION


def movielens_problem_command(args: argparse.Namespace) -> int:
    from cdln.data.movielens import check_archive, completion_problem, locate_ml100k, read_ml100k, slice_ratings
    from cdln.problems import save_problem

    for name in ("n_users", "n_items"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")
    path = locate_ml100k(args.zip_path, args.resources, allow_download=not args.no_download)
    check_archive(path)
    ratings = slice_ratings(read_ml100k(path), args.n_users, args.n_items)
    if not 1 <= args.rank <= min(ratings.n_users, ratings.n_items):
        raise ValueError(f"--rank must be in [1, {min(ratings.n_users, ratings.n_items)}]; got {args.rank}")
    problem = completion_problem(ratings, args.rank, args.test_fraction, args.split_seed)
    save_problem(problem, args.out)
    n_test = int(problem.heldout.sum()) if problem.heldout is not None else 0
    print(
        f"wrote {args.out}: {ratings.n_users} x {ratings.n_items} ratings from {path}, "
        f"{int(problem.mask.sum())} train / {n_test} held out (split seed {args.split_seed})",
        file=sys.stderr,
    )
    return 0


def movielens_synthetic_command(args: argparse.Namespace) -> int:
    from cdln.data.movielens import synthetic_ml100k

    synthetic_ml100k(args.out, seed=args.seed, n_ratings=args.n_ratings)
    print(f"wrote {args.out} (synthetic stand-in, not MovieLens data)", file=sys.stderr)
    return 0


def altmin_command(args: argparse.Namespace) -> int:
    from cdln.altmin import AltMinSettings, altmin, altmin_record
    from cdln.devices import resolve_device, resolve_dtype
    from cdln.problems import Completion, load_problem
    from cdln.records import write_run_record

    _set_threads(args.threads)
    device, dtype = resolve_device(args.device), resolve_dtype(args.dtype)
    problem = load_problem(args.problem)
    if not isinstance(problem, Completion):
        raise ValueError(f"--problem {args.problem} holds a {problem.spec.task!r} problem; AltMin needs 'mc'")
    problem = problem.to(device, dtype)
    settings = AltMinSettings(args.k, args.iterations, args.n_inner, args.ridge)
    curves, _, seconds = altmin(problem, settings, progress=progress_printer("mc/altmin", args))
    record = altmin_record(problem, settings, curves, seconds, device, args.dtype)
    write_run_record(args.out, record, curves.assign(model="altmin", init_seed=0, alpha=1.0))
    member = record["members"][0]
    print(
        f"wrote {args.out}: altmin {settings.iterations} sweeps in {seconds:.2f}s, held-out error "
        f"{member['final_recovery_error']:.4f} (best {member['best_recovery_error']:.4f})",
        file=sys.stderr,
    )
    return 0


def nonlinear_command(args: argparse.Namespace) -> int:
    from cdln.data.fashion_mnist import load_fashion_mnist, locate_fashion_mnist, to_tensors
    from cdln.devices import resolve_device
    from cdln.nonlinear import NonlinearConfig, train_classifier
    from cdln.records import write_run_record

    values: dict[str, Any] = {f.name: getattr(args, f.name) for f in dataclasses.fields(NonlinearConfig)}
    config = NonlinearConfig(**values)
    config.validate()
    _set_threads(args.threads)
    device = resolve_device(args.device)
    files = locate_fashion_mnist(args.data_dir, args.resources, allow_download=not args.no_download)
    train, test = load_fashion_mnist(files)
    data = to_tensors(train, test, torch.device("cpu"), torch.float64)
    progress = progress_printer(f"nonlinear/{config.model}", args)
    record, curves = train_classifier(config, data, device, progress=progress)
    record["data"]["files"] = {stem: str(path) for stem, path in files.items()}
    write_run_record(args.out, record, curves)
    member = record["members"][0]
    print(
        f"wrote {args.out}: {config.model} {config.steps} steps in {record['timing']['seconds']:.2f}s, "
        f"test accuracy {member['final_test_accuracy']:.4f}",
        file=sys.stderr,
    )
    return 0


def fashion_mnist_synthetic_command(args: argparse.Namespace) -> int:
    from cdln.data.fashion_mnist import synthetic_fashion_mnist

    synthetic_fashion_mnist(args.out, args.n_train, args.n_test, args.seed)
    print(f"wrote {args.out} (synthetic stand-in, not FashionMNIST)", file=sys.stderr)
    return 0
