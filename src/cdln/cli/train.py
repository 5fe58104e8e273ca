"""Training subcommands, each writing a run record (:mod:`cdln.records`):

- ``cdln train``: gradient descent on a DLN, C-DLN or baseline (:mod:`cdln.runner`);
- ``cdln altmin``: the AltMin baseline on an MC problem file (:mod:`cdln.altmin`);
- ``cdln nonlinear``: one FashionMNIST classifier (:mod:`cdln.nonlinear`);
- ``cdln run-job``: several of the above in one process, one after another (each timed alone),
  written together under one job directory (``<out>/<run name>/``), atomically as a whole. The
  pipeline runs every job of :mod:`cdln.pipeline.grid` this way.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from cdln.altmin import AltMinSettings, altmin, altmin_record
from cdln.cli.common import ExitCode, add_progress_options, add_threads_option, apply_threads, progress_printer
from cdln.config import ConfigError, RunConfig
from cdln.devices import resolve_device, resolve_dtype
from cdln.engine import ProgressFn
from cdln.io import load_problem, load_problem_spec
from cdln.nonlinear import MODELS as CLASSIFIERS
from cdln.nonlinear import OPTIMIZERS, NonlinearConfig, train_classifier
from cdln.outputs import atomic_directory, write_json
from cdln.pipeline.grid import JOB_MANIFEST
from cdln.problems import Completion
from cdln.records import RECORD_FILE, RUN_FILES, data_files, data_section
from cdln.runner import RunOutput, matrix_problem, train_run

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def add_run_config_options(parser: argparse.ArgumentParser, only: set[str] | None = None) -> None:
    """One option per ``RunConfig`` field; defaults are None so YAML values are not overridden."""
    for field in dataclasses.fields(RunConfig):
        if only is not None and field.name not in only:
            continue
        flag = "--" + field.name.replace("_", "-")
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        help_text = field.metadata["help"] + ("" if default is None else f" (default: {default})")
        if field.type == "bool":
            parser.add_argument(flag, action="store_true", default=None, help=help_text)
        elif field.name in ("alpha", "init_seed"):
            kind = float if field.name == "alpha" else int
            parser.add_argument(flag, nargs="+", type=kind, default=None, help=help_text)
        else:
            kind = {"int": int, "float": float, "int | None": int, "float | None": float}.get(field.type, str)
            parser.add_argument(flag, type=kind, default=None, help=help_text)


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """Defaults <- YAML file (``--config``) <- explicit flags."""
    values: dict[str, Any] = {}
    config_file = getattr(args, "config", None)
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError(f"--config file {config_file} does not exist")
        try:
            loaded = yaml.safe_load(config_file.read_text()) or {}
        except yaml.YAMLError as error:
            where = getattr(error, "problem_mark", None)
            line = f" (line {where.line + 1})" if where is not None else ""
            reason = getattr(error, "problem", None) or type(error).__name__
            raise ConfigError(f"--config {config_file} is not valid YAML{line}: {reason}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"--config {config_file} must hold a mapping of option: value")
        values.update(loaded)
    names = {field.name for field in dataclasses.fields(RunConfig)}
    values.update({k: v for k, v in vars(args).items() if k in names and v is not None})
    return RunConfig.from_dict(values, source=str(config_file or "flags"))


# ---- the three kinds of run: options, execution, one-line summary ----


def add_train_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML file whose keys are these options (flags win)")
    add_run_config_options(parser)


# What the runs of one process share (FashionMNIST read once per job): a dict the caller owns, per process.
Loaded = dict[Any, Any]


def execute_train(args: argparse.Namespace, progress: ProgressFn | None, loaded: Loaded) -> RunOutput:
    return train_run(resolve_config(args), progress)


def check_train(args: argparse.Namespace) -> None:
    """Every check of ``train`` that needs no training: the options, and against the problem file's spec."""
    config = resolve_config(args)
    config.validate()
    if config.problem is not None:
        spec = load_problem_spec(config.problem)
        if spec.task != config.task:
            raise ConfigError(f"--problem {config.problem} holds a {spec.task!r} problem but --task is {config.task!r}")
        config.with_problem(spec).validate()
    elif config.matrix is not None:
        config.with_problem(matrix_problem(config).spec).validate()


def summarise_train(output: RunOutput) -> str:
    member, record = output.record["members"][0], output.record
    line = (
        f"{record['config']['model']} stopped at iteration {member['stop_iteration']} after "
        f"{record['timing']['seconds']:.2f}s, recovery error {member['final_recovery_error']:.3e}"
    )
    if "final_relative_error" in member:  # a user's matrix: the error a user reads, on the entries it used
        entries = record["problem"]["relative_error_entries"]
        line += f", relative error on the {entries} entries {member['final_relative_error']:.3g}"
    return "".join([line, *(f"\nwarning: {warning}" for warning in record.get("warnings", []))])


def add_altmin_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--problem", type=Path, required=True, help="MC problem file (e.g. `cdln movielens-problem`)")
    parser.add_argument("--r", type=int, default=10, help="rank of the factors (AltMin's k), >= 1")
    parser.add_argument("--iterations", type=int, default=100, help="ALS sweeps (each solves both factors)")
    parser.add_argument("--n-inner", type=int, default=1, help="sweeps between checkpoints")
    parser.add_argument("--ridge", type=float, default=1e-6, help="ridge on each least-squares solve, >= 0")
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"], help="float64 or float32")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def check_altmin(args: argparse.Namespace) -> None:
    resolve_device(args.device)
    spec = load_problem_spec(args.problem)
    if spec.task != "mc":
        raise ValueError(f"--problem {args.problem} holds a {spec.task!r} problem; AltMin needs 'mc'")
    AltMinSettings(args.r, args.iterations, args.n_inner, args.ridge).validate(spec.d_out, spec.d_in)


def execute_altmin(args: argparse.Namespace, progress: ProgressFn | None, loaded: Loaded) -> RunOutput:
    device, dtype = resolve_device(args.device), resolve_dtype(args.dtype)
    problem = load_problem(args.problem)
    if not isinstance(problem, Completion):
        raise ValueError(f"--problem {args.problem} holds a {problem.spec.task!r} problem; AltMin needs 'mc'")
    problem = problem.to(device, dtype)
    settings = AltMinSettings(args.r, args.iterations, args.n_inner, args.ridge)
    curves, _, seconds = altmin(problem, settings, progress=progress)
    record = altmin_record(problem, settings, curves, seconds, device, args.dtype)
    record["data"] = data_section(problem=args.problem)
    return RunOutput(record, curves.assign(model="altmin", init_seed=0, alpha=1.0))


def summarise_altmin(output: RunOutput) -> str:
    member, record = output.record["members"][0], output.record
    return (
        f"altmin {record['config']['iterations']} sweeps in {record['timing']['seconds']:.2f}s, held-out error "
        f"{member['final_recovery_error']:.4f} (best {member['best_recovery_error']:.4f})"
    )


def add_nonlinear_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=None, help="folder with the four FashionMNIST IDX files")
    parser.add_argument(
        "--resources", type=Path, default=Path("resources"), help="resources folder (default: resources)"
    )
    parser.add_argument("--no-download", action="store_true", help="fail instead of downloading")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    choices = {"model": list(CLASSIFIERS), "optimizer": list(OPTIMIZERS), "dtype": ["float32", "float64"]}
    for field in dataclasses.fields(NonlinearConfig):
        flag = "--" + field.name.replace("_", "-")
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        help_text = field.metadata["help"] + ("" if default is None else f" (default: {default})")
        if field.name == "hidden":
            parser.add_argument(flag, type=int, nargs="+", default=default, help=help_text)
            continue
        kind = {"int": int, "float": float, "int | None": int, "str": str}[field.type]
        if field.name == "batch_size":
            kind = _batch_size
        parser.add_argument(flag, type=kind, default=default, choices=choices.get(field.name), help=help_text)


def _batch_size(text: str) -> int | None:
    """``--batch-size``: a number of examples, or ``full`` (None: the whole training set every step)."""
    if text == "full":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of examples or 'full'; got {text!r}") from None


def nonlinear_config(args: argparse.Namespace) -> NonlinearConfig:
    return NonlinearConfig(**{field.name: getattr(args, field.name) for field in dataclasses.fields(NonlinearConfig)})


def check_nonlinear(args: argparse.Namespace) -> None:
    nonlinear_config(args).validate()
    resolve_device(args.device)


def execute_nonlinear(args: argparse.Namespace, progress: ProgressFn | None, loaded: Loaded) -> RunOutput:
    """One classifier; the data set is read, checked and converted once per process (``loaded``)."""
    from cdln.data.fashion_mnist import load_fashion_mnist, locate_fashion_mnist, to_tensors

    config = nonlinear_config(args)
    config.validate()
    device = resolve_device(args.device)
    files = locate_fashion_mnist(args.data_dir, args.resources, allow_download=not args.no_download)
    key = ("fashion-mnist", tuple(sorted((role, str(path)) for role, path in files.items())))
    if key not in loaded:
        train, test = load_fashion_mnist(files)
        loaded[key] = (to_tensors(train, test, torch.device("cpu"), torch.float64), data_files(**files))
    data, checked = loaded[key]
    record, curves = train_classifier(config, data, device, progress=progress)
    record["data"]["files"] = checked
    return RunOutput(record, curves)


def summarise_nonlinear(output: RunOutput) -> str:
    member, record = output.record["members"][0], output.record
    return (
        f"{record['config']['model']} {record['config']['steps']} steps in {record['timing']['seconds']:.2f}s, "
        f"test accuracy {member['final_test_accuracy']:.4f}"
    )


@dataclasses.dataclass(frozen=True)
class Trainer:
    help: str
    add_options: Callable[[argparse.ArgumentParser], None]
    execute: Callable[[argparse.Namespace, ProgressFn | None, Loaded], RunOutput]
    summarise: Callable[[RunOutput], str]
    check: Callable[[argparse.Namespace], None]  # every check that needs no training (run-job: all runs first)


TRAINERS: dict[str, Trainer] = {
    "train": Trainer("train one run (or a batch) and write its run record", add_train_options, execute_train,
                     summarise_train, check_train),
    "altmin": Trainer("AltMin (alternating least squares) on an MC problem file", add_altmin_options, execute_altmin,
                      summarise_altmin, check_altmin),
    "nonlinear": Trainer("train one FashionMNIST classifier (mlp, dln or cdln block)", add_nonlinear_options,
                         execute_nonlinear, summarise_nonlinear, check_nonlinear),
}  # fmt: skip


def progress_prefix(command: str, args: argparse.Namespace) -> str:
    if command == "train":
        return f"{args.task or 'mc'}/{args.model or 'original'}"
    return "mc/altmin" if command == "altmin" else f"nonlinear/{args.model}"


def train_command(command: str, args: argparse.Namespace) -> int:
    apply_threads(args)
    trainer = TRAINERS[command]
    # --out is claimed and checked before training: nothing of the user's is lost, no training wasted, and a
    # second writer into the same folder fails at once.
    with atomic_directory(args.out, args.force, writes=RUN_FILES) as staging:
        trainer.check(args)
        output = trainer.execute(args, progress_printer(progress_prefix(command, args), args), {})
        output.stage(staging)
    print(f"wrote {args.out}: {trainer.summarise(output)}", file=sys.stderr)
    return ExitCode.OK


# ---- run-job ----


class RunOptionError(ConfigError):
    """A run of a ``cdln run-job`` manifest with an option its command does not take or a value it refuses."""


def _command_parsers() -> dict[str, argparse.ArgumentParser]:
    """Each trainer's own options, as its command line defines them (types, choices, defaults, help)."""
    parsers = {}
    for name, trainer in TRAINERS.items():
        parsers[name] = argparse.ArgumentParser(prog=f"cdln {name}", add_help=False)
        trainer.add_options(parsers[name])
    return parsers


def run_namespace(parser: argparse.ArgumentParser, options: dict[str, Any]) -> argparse.Namespace:
    """The options of one manifest run (``{"lr": 10, "init_seed": [0], ...}``, the command line's names) as its
    command's parsed arguments: the defaults, then each option through its type and choices, as typed."""
    actions = {action.dest: action for action in parser._actions}
    unknown = sorted(set(options) - set(actions))
    if unknown:
        raise RunOptionError(f"unknown option(s) {unknown}; {parser.prog} takes {sorted(actions)}")
    missing = sorted(action.dest for action in parser._actions if action.required and action.dest not in options)
    if missing:
        raise RunOptionError(f"{parser.prog} needs option(s) {missing}")
    namespace = argparse.Namespace(**{action.dest: action.default for action in parser._actions})
    for key, value in options.items():
        action = actions[key]
        values = value if isinstance(value, list) else [value]
        if action.type is not None:
            try:
                values = [action.type(v) if isinstance(v, str) else v for v in values]
            except (TypeError, ValueError, argparse.ArgumentTypeError) as error:
                raise RunOptionError(f"option {key}: {error}") from None
        if action.choices is not None and any(v not in action.choices for v in values):
            raise RunOptionError(f"option {key} must be one of {list(action.choices)}; got {value!r}")
        setattr(namespace, key, values if action.nargs in ("+", "*") else values[0])
    return namespace


@dataclasses.dataclass(frozen=True)
class ManifestRun:
    """One run of a job manifest: trained here (``args``), or read from the run directory ``same_as``."""

    name: str
    command: str
    args: argparse.Namespace | None
    same_as: str | None


def read_manifest(source: str) -> dict[str, Any]:
    """A job manifest (JSON, ``{"runs": [{"name", "command", "options", "same_as"?}, ...]}``) from a file, or
    from standard input for ``-``."""
    where = "standard input" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
        manifest = json.loads(text)
    except FileNotFoundError:
        raise ConfigError(f"--manifest file {source} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"--manifest {where} is not valid JSON ({error})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("runs"), list) or not manifest["runs"]:
        raise ConfigError(f'--manifest {where} must hold {{"runs": [{{"name", "command", "options"}}, ...]}}')
    return manifest


def parse_job(manifest: dict[str, Any], validate: bool = True) -> list[ManifestRun]:
    """A job manifest -> its runs, parsed (and with ``validate``, checked), before any work."""
    parsers, parsed, names = _command_parsers(), [], set()
    for entry in manifest["runs"]:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not RUN_NAME.match(name) or name in names:
            raise ConfigError(f"run name {name!r} must be unique and match {RUN_NAME.pattern}")
        names.add(name)
        command, options = entry.get("command"), entry.get("options", {})
        if command not in TRAINERS:
            raise ConfigError(f"run {name}: command must be one of {list(TRAINERS)}; got {command!r}")
        if not isinstance(options, dict):
            raise ConfigError(f"run {name}: options must be a mapping of option: value")
        same_as = entry.get("same_as")
        if same_as is not None:
            if not (Path(same_as) / RECORD_FILE).is_file():
                raise ConfigError(f"run {name}: same_as {same_as} is not a finished run (train it first)")
            parsed.append(ManifestRun(name, command, None, same_as))
            continue
        try:
            args = run_namespace(parsers[command], options)
            if validate:
                TRAINERS[command].check(args)
        except (ConfigError, ValueError, FileNotFoundError) as error:
            raise ConfigError(f"run {name}: {error}") from None
        parsed.append(ManifestRun(name, command, args, None))
    return parsed


def run_job_command(args: argparse.Namespace) -> int:
    apply_threads(args)
    manifest = read_manifest(args.manifest)
    runs = parse_job(manifest)
    trained = [run for run in runs if run.args is not None]
    loaded: Loaded = {}
    with atomic_directory(args.out, args.force, writes=[JOB_MANIFEST, *(run.name for run in trained)]) as staging:
        for index, run in enumerate(trained, start=1):
            trainer = TRAINERS[run.command]
            prefix = f"{run.name} {index}/{len(trained)}: {progress_prefix(run.command, run.args)}"
            output = trainer.execute(run.args, progress_printer(prefix, args), loaded)
            output.stage(staging / run.name)
            print(f"{args.out}/{run.name}: {trainer.summarise(output)}", file=sys.stderr, flush=True)
        for run in runs:
            if run.same_as is not None:
                print(f"{args.out}/{run.name}: the same run as {run.same_as} (read from there)", file=sys.stderr)
        write_json(staging / JOB_MANIFEST, manifest)
    print(f"wrote {args.out} ({len(trained)} runs trained, {len(runs) - len(trained)} read)", file=sys.stderr)
    return ExitCode.OK


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``train``, ``altmin``, ``nonlinear`` and ``run-job`` to the ``cdln`` parser."""
    for name, trainer in TRAINERS.items():
        parser = commands.add_parser(name, help=trainer.help)
        parser.add_argument("--out", type=Path, required=True, help="run record directory to write")
        parser.add_argument(
            "--force",
            action="store_true",
            help="write into --out beside files cdln did not write (kept; cdln never removes them)",
        )
        add_threads_option(parser)
        add_progress_options(parser)
        trainer.add_options(parser)
        parser.set_defaults(handler=lambda args, name=name: train_command(name, args))
    job = commands.add_parser("run-job", help="train several runs one after another into one job directory")
    job.add_argument("--out", type=Path, required=True, help="job directory to write (one run record per run)")
    job.add_argument(
        "--force",
        action="store_true",
        help="write into --out beside files cdln did not write (kept; cdln never removes them)",
    )
    job.add_argument(
        "--manifest",
        required=True,
        help='the job: a JSON file (\'-\': standard input) {"runs": [{"name": ..., "command": '
        '"train|altmin|nonlinear", "options": {option: value, ...}}, ...]}, option names as the command\'s '
        '(cdln train --help) with _ for -; a run with "same_as": DIR is read from that finished run instead',
    )
    add_threads_option(job)
    add_progress_options(job)
    job.set_defaults(handler=run_job_command)
