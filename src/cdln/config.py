"""The configuration of one training run, its validation, and the run itself.

``RunConfig`` is the single source of truth that the CLI, YAML files and the Snakemake pipeline
all resolve into; :func:`run` turns it into a run record.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from cdln.analysis import SpectralSnapshots, stack_snapshots
from cdln.devices import device_name, resolve_device, resolve_dtype
from cdln.engine import ProgressFn, TrainResult, TrainSettings, train
from cdln.networks import (
    MODELS,
    LinearNetwork,
    burer_monteiro,
    compressed_dln,
    dln_param_count,
    narrow_dln,
    original_dln,
    random_dln,
    yaras_network,
)
from cdln.problems import SPECTRA, TASKS, Problem, ProblemSpec, load_problem, make_problem
from cdln.records import environment, write_run_record

MEMORY_FRACTION = 0.8  # refuse problems needing more than this share of the machine's memory


class ConfigError(ValueError):
    """An invalid configuration value; the message names the option and the valid values."""


@dataclass
class RunConfig:
    """One training run (or a batch of runs sharing shapes: several init seeds or alphas)."""

    task: str = "mc"
    d: int = 100  # square targets; d_out/d_in override it for rectangular ones
    d_out: int | None = None
    d_in: int | None = None
    r: int = 10
    p: float | None = None
    m: int | None = None
    spectrum: str = "spread"
    data_seed: int = 0
    problem: str | None = None  # a problem file from `cdln make-problem`; overrides the fields above
    model: str = "original"
    depth: int = 3
    width: int | None = None  # original DLN width; default max(d_out, d_in)
    r_hat: int | None = None  # cdln/narrow/yaras width; default 2r
    bm_rank: int | None = None  # Burer-Monteiro k; default r
    eps: float = 1e-2
    lr: float = 10.0
    alpha: list[float] = field(default_factory=lambda: [1.0])
    gamma: float = 0.01
    n_inner: int = 100
    max_outer: int = 500
    tol: float = 0.0
    init_seed: list[int] = field(default_factory=lambda: [0])
    dtype: str = "float64"
    device: str = "auto"
    snapshots: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        return (self.d_out or self.d, self.d_in or self.d)

    @property
    def compressed_width(self) -> int:
        return self.r_hat if self.r_hat is not None else 2 * self.r

    def problem_spec(self) -> ProblemSpec:
        d_out, d_in = self.shape
        return ProblemSpec(self.task, d_out, d_in, self.r, self.data_seed, self.p, self.m, self.spectrum)

    def validate(self) -> None:
        """Raise :class:`ConfigError` for the first invalid option, before any work is done."""
        _choice("task", self.task, TASKS)
        _choice("model", self.model, MODELS)
        _choice("spectrum", self.spectrum, SPECTRA)
        for name in ("d", "r", "n_inner", "max_outer"):
            _integer_at_least(name, getattr(self, name), 1)
        for name in ("d_out", "d_in", "width", "r_hat", "bm_rank", "m"):
            if getattr(self, name) is not None:
                _integer_at_least(name, getattr(self, name), 1)
        _integer_at_least("depth", self.depth, 2)
        d_out, d_in = self.shape
        if self.r > min(d_out, d_in):
            raise ConfigError(f"--r must be in [1, min(d_out, d_in)] = [1, {min(d_out, d_in)}]; got {self.r}")
        if self.model in ("cdln", "narrow", "yaras") and self.compressed_width > min(d_out, d_in):
            raise ConfigError(f"--r-hat must be in [1, {min(d_out, d_in)}]; got {self.compressed_width}")
        for name in ("eps", "lr", "gamma"):
            _positive(name, getattr(self, name))
        if not self.alpha:
            raise ConfigError("--alpha needs at least one value")
        for value in self.alpha:
            _positive("alpha", value)
        if not math.isfinite(self.tol) or self.tol < 0:
            raise ConfigError(f"--tol must be a finite number >= 0; got {self.tol}")
        if self.task == "mc" and self.problem is None and (self.p is None or not 0 < self.p <= 1):
            raise ConfigError(f"--p must be in (0, 1] for task 'mc'; got {self.p}")
        if self.task == "ms" and self.problem is None and self.m is None:
            raise ConfigError("--m (number of measurements, >= 1) is required for task 'ms'")
        if not self.init_seed:
            raise ConfigError("--init-seed needs at least one seed")
        if len(set(self.init_seed)) != len(self.init_seed):
            raise ConfigError(f"--init-seed has duplicate seeds: {self.init_seed}")
        for seed in [*self.init_seed, self.data_seed]:
            if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
                raise ConfigError(f"seeds must be integers >= 0; got {seed!r}")
        if len(self.alpha) > 1 and self.model != "cdln":
            raise ConfigError(f"several --alpha values (a batched sweep) need --model cdln; got {self.model!r}")
        if len(self.alpha) > 1 and len(self.init_seed) > 1:
            raise ConfigError("batch over either --alpha values or --init-seed values, not both")
        if self.problem is not None and not Path(self.problem).is_file():
            raise ConfigError(f"--problem file {self.problem} does not exist")
        _choice("dtype", self.dtype, ("float64", "float32"))
        try:
            resolve_device(self.device)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        self._check_memory()

    def _check_memory(self) -> None:
        needed = self.problem_spec().operator_bytes(resolve_dtype(self.dtype))
        available = _available_memory_bytes()
        if available and needed > MEMORY_FRACTION * available:
            raise ConfigError(
                f"the {self.task} problem needs {needed / 2**30:.1f} GiB for its data alone but only "
                f"{available / 2**30:.1f} GiB is available; reduce --d or --m"
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> RunConfig:
        """Build from a mapping (e.g. YAML), rejecting unknown keys by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {unknown}; valid keys: {sorted(known)}")
        values = dict(values)
        for key in ("alpha", "init_seed"):
            if key in values and not isinstance(values[key], list):
                values[key] = [values[key]]
        return cls(**values)


def _choice(name: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"--{name.replace('_', '-')} must be one of {list(valid)}; got {value!r}")


def _integer_at_least(name: str, value: Any, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"--{name.replace('_', '-')} must be an integer >= {low}; got {value!r}")


def _positive(name: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"--{name.replace('_', '-')} must be a finite number > 0; got {value!r}")


def _available_memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def build_network(config: RunConfig, problem: Problem) -> LinearNetwork:
    """The network ``config.model`` describes, on the CPU in float64, one member per seed/alpha."""
    d_out, d_in = problem.shape
    seeds = config.init_seed
    if config.model == "original":
        return original_dln(d_out, d_in, config.depth, config.eps, seeds, config.width)
    if config.model == "narrow":
        return narrow_dln(d_out, d_in, config.depth, config.eps, seeds, config.compressed_width)
    if config.model == "bm":
        return burer_monteiro(d_out, d_in, config.bm_rank or config.r, config.eps, seeds)
    if config.model == "cdln":
        batch = max(len(config.alpha), len(seeds))
        alpha = config.alpha if len(config.alpha) > 1 else config.alpha * batch
        return compressed_dln(problem.surrogate(), config.compressed_width, config.depth, config.eps, alpha, batch)
    # Yaras et al.: the gradient at the original DLN's initialisation (first init seed).
    reference = random_dln("original", d_out, d_in, max(d_out, d_in), config.depth, config.eps, seeds[:1])
    initial_gradient = problem.loss_grad(reference.end_to_end())[0]
    return yaras_network(initial_gradient, config.compressed_width, config.depth, config.eps, config.gamma, len(seeds))


def member_table(config: RunConfig, batch: int) -> list[dict[str, Any]]:
    """What distinguishes each batch member: its init seed and alpha."""
    seeds = config.init_seed * batch if len(config.init_seed) == 1 else config.init_seed
    alphas = config.alpha * batch if len(config.alpha) == 1 else config.alpha
    return [{"member": i, "init_seed": seeds[i], "alpha": alphas[i]} for i in range(batch)]


def run(config: RunConfig, out_dir: str | Path | None = None, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Validate, build, train and (if ``out_dir``) write the run record; returns the record."""
    config.validate()
    device, dtype = resolve_device(config.device), resolve_dtype(config.dtype)
    cpu_problem = load_problem(config.problem) if config.problem else make_problem(config.problem_spec())
    spec = cpu_problem.spec
    if spec.task != config.task:
        raise ConfigError(f"--problem {config.problem} holds a {spec.task!r} problem but --task is {config.task!r}")
    config.d_out, config.d_in, config.r = spec.d_out, spec.d_in, spec.rank  # the file is authoritative
    config.validate()
    network = build_network(config, cpu_problem).to(device, dtype)
    problem = cpu_problem.to(device, dtype)
    del cpu_problem
    settings = TrainSettings(config.lr, config.n_inner, config.max_outer, config.tol)
    snapshot = SpectralSnapshots(problem) if config.snapshots else None
    result = train(network, problem, settings, snapshot=snapshot, progress=progress)
    record = _record(config, spec, network, result, device)
    if out_dir is not None:
        members = member_table(config, network.batch)
        curves = result.curves.assign(
            model=config.model,
            init_seed=[members[m]["init_seed"] for m in result.curves["member"]],
            alpha=[members[m]["alpha"] for m in result.curves["member"]],
        )
        write_run_record(out_dir, record, curves, stack_snapshots(result.snapshots) or None)
    return record


def _record(
    config: RunConfig, spec: ProblemSpec, network: LinearNetwork, result: TrainResult, device: torch.device
) -> dict[str, Any]:
    d_out, d_in = spec.d_out, spec.d_in
    original_params = dln_param_count(d_out, d_in, config.width or max(d_out, d_in), config.depth)
    final = result.curves.groupby("member").last()
    members = member_table(config, network.batch)
    for entry in members:
        i = entry["member"]
        entry.update(
            converged=result.converged[i],
            stop_iteration=result.stop_iteration[i],
            stop_seconds=result.stop_seconds[i],
            final_train_loss=float(final.loc[i, "train_loss"]),
            final_recovery_error=float(final.loc[i, "recovery_error"]),
        )
    return {
        "config": asdict(config),
        "problem": asdict(spec),
        "members": members,
        "parameters": {"model": network.n_params(), "original_dln": original_params},
        "timing": {
            "seconds": result.seconds,
            "warmup_seconds": result.warmup_seconds,
            "iterations": int(result.curves["iteration"].max()),
            "seconds_per_iteration": result.seconds / max(1, int(result.curves["iteration"].max())),
            "batch": network.batch,
        },
        "device": {"type": device.type, "name": device_name(device), "dtype": config.dtype},
        "environment": environment(),
        "command": sys.argv,
    }
