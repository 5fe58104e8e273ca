"""Command line: ``cdln make-problem`` and ``cdln train`` (``python -m cdln`` works too)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from cdln import bench, realdata_cli
from cdln.config import ConfigError, RunConfig, run
from cdln.engine import DivergenceError
from cdln.networks import MODELS
from cdln.problems import SPECTRA, TASKS, make_problem, save_problem
from cdln.progress import add_progress_options, progress_printer

HELP: dict[str, str] = {
    "task": f"recovery problem: {', '.join(TASKS)} (factorization, completion, sensing)",
    "d": "target size d for a square d x d target",
    "d_out": "rows of a rectangular target (overrides --d)",
    "d_in": "columns of a rectangular target (overrides --d)",
    "r": "rank of the target, 1 <= r <= min(d_out, d_in)",
    "p": "MC: fraction of observed entries, in (0, 1]",
    "m": "MS: number of Gaussian measurements, >= 1",
    "spectrum": f"target singular values: {', '.join(SPECTRA)} (spread = the authors' generator)",
    "data_seed": "seed of the problem draw (target, mask, operator)",
    "problem": "problem file from `cdln make-problem` (overrides the problem options)",
    "model": f"network: {', '.join(MODELS)} (bm = Burer-Monteiro, yaras = Yaras et al. 2024)",
    "depth": "number of layers L >= 2",
    "width": "width of the original DLN (default max(d_out, d_in))",
    "r_hat": "width of cdln/narrow/yaras networks, >= 1 (default 2r)",
    "bm_rank": "Burer-Monteiro width k (default r)",
    "eps": "initialisation scale, > 0",
    "lr": "GD step size eta, > 0",
    "alpha": "C-DLN outer-layer step multiplier(s), > 0; several values train as one batched sweep",
    "gamma": "Yaras et al. outer-layer step multiplier, > 0",
    "n_inner": "GD steps between checkpoints, >= 1",
    "max_outer": "maximum number of checkpoints (iteration budget = n_inner * max_outer)",
    "tol": "stop once the training loss is below tol (checked at checkpoints), >= 0",
    "init_seed": "initialisation seed(s); several seeds train as one batch",
    "dtype": "float64 or float32",
    "device": "auto, cpu, cuda or cuda:N (auto = CUDA when present)",
    "snapshots": "record spectral snapshots for the subspace analysis",
}


def _add_config_options(parser: argparse.ArgumentParser, only: set[str] | None = None) -> None:
    """One option per ``RunConfig`` field; defaults are None so YAML values are not overridden."""
    for field in dataclasses.fields(RunConfig):
        if only is not None and field.name not in only:
            continue
        flag = "--" + field.name.replace("_", "-")
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        help_text = f"{HELP[field.name]} (default: {default})"
        if field.type == "bool":
            parser.add_argument(flag, action="store_true", default=None, help=help_text)
        elif field.name in ("alpha", "init_seed"):
            kind = float if field.name == "alpha" else int
            parser.add_argument(flag, nargs="+", type=kind, default=None, help=help_text)
        else:
            kind = {"int": int, "float": float, "int | None": int, "float | None": float}.get(field.type, str)
            parser.add_argument(flag, type=kind, default=None, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cdln", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train one run (or a batch) and write its run record")
    train.add_argument("--config", type=Path, help="YAML file whose keys are these options (flags win)")
    train.add_argument("--out", type=Path, required=True, help="run record directory to write")
    train.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    add_progress_options(train)
    _add_config_options(train)

    problem = commands.add_parser("make-problem", help="draw a problem instance and save it")
    problem.add_argument("--out", type=Path, required=True, help="problem file (.pt) to write")
    _add_config_options(problem, {"task", "d", "d_out", "d_in", "r", "p", "m", "spectrum", "data_seed"})
    bench.add_parser(commands)
    realdata_cli.register(commands)
    return parser


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """Defaults <- YAML file <- explicit flags."""
    values: dict[str, Any] = {}
    config_file = getattr(args, "config", None)
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError(f"--config file {config_file} does not exist")
        loaded = yaml.safe_load(config_file.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"--config {config_file} must hold a mapping of option: value")
        values.update(loaded)
    names = {field.name for field in dataclasses.fields(RunConfig)}
    values.update({k: v for k, v in vars(args).items() if k in names and v is not None})
    return RunConfig.from_dict(values, source=str(config_file or "flags"))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        return bench.main(args)
    if hasattr(args, "handler"):  # the real-data subcommands
        return realdata_cli.run_handler(args)
    try:
        config = resolve_config(args)
        if args.command == "make-problem":
            spec = config.problem_spec()
            try:
                spec.validate()
            except ValueError as error:
                raise ConfigError(str(error)) from None
            config._check_memory()
            save_problem(make_problem(spec), args.out)
            print(f"wrote {args.out}", file=sys.stderr)
            return 0
        if args.threads is not None:
            if args.threads < 1:
                raise ConfigError(f"--threads must be an integer >= 1; got {args.threads}")
            torch.set_num_threads(args.threads)
        progress = progress_printer(f"{config.task}/{config.model}", args)
        record = run(config, args.out, progress=progress)
    except ConfigError as error:
        print(f"cdln: error: {error}", file=sys.stderr)
        return 2
    except DivergenceError as error:
        print(f"cdln: error: {error}; no record was written", file=sys.stderr)
        return 3
    member = record["members"][0]
    print(
        f"wrote {args.out}: {config.model} stopped at iteration {member['stop_iteration']} "
        f"after {record['timing']['seconds']:.2f}s, recovery error {member['final_recovery_error']:.3e}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
