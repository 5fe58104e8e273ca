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

    def validate(self, check_memory: bool = True) -> None:
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
        if not _is_number(self.tol) or not math.isfinite(self.tol) or self.tol < 0:
            raise ConfigError(f"--tol must be a finite number >= 0; got {self.tol!r}")
        if self.p is not None and (not _is_number(self.p) or not 0 < self.p <= 1):
            raise ConfigError(f"--p must be in (0, 1] (fraction of observed entries); got {self.p!r}")
        if self.task == "mc" and self.problem is None and self.p is None:
            raise ConfigError("--p must be in (0, 1] for task 'mc'; got None")
        if not isinstance(self.snapshots, bool):
            raise ConfigError(f"--snapshots must be true or false; got {self.snapshots!r}")
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
        if check_memory:
            self._check_memory()

    def memory_bytes(self) -> tuple[int, int]:
        """Rough peak bytes ``(host, device)`` of the run: problem data and network, with temporaries.

        The problem is drawn in float64 on the host (the MS operator, plus about five d_out x d_in
        matrices for the SVD of the Gaussian draw, the mask's permutation and the loss weights), then
        copied in ``dtype`` to the device; the network holds weights, prefix products and gradients
        (about 3x its parameters per batch member).
        """
        spec = self.problem_spec()
        itemsize = resolve_dtype(self.dtype).itemsize
        entries = spec.d_out * spec.d_in
        if self.problem is not None and Path(self.problem).is_file():  # a saved problem: its file size
            stored = Path(self.problem).stat().st_size
            data64, data = stored + 4 * 8 * entries, stored * itemsize // 8 + 4 * itemsize * entries
        else:
            data64 = spec.operator_bytes(torch.float64) + 5 * 8 * entries
            data = spec.operator_bytes(resolve_dtype(self.dtype)) + 4 * itemsize * entries
        d_out, d_in = self.shape
        width = {"original": self.width or max(d_out, d_in), "bm": self.bm_rank or self.r}.get(
            self.model, self.compressed_width
        )
        depth = 2 if self.model == "bm" else self.depth
        batch = max(len(self.alpha), len(self.init_seed))
        network = 3 * batch * dln_param_count(d_out, d_in, width, depth) * itemsize
        if self.model == "yaras":  # its init takes the gradient of a full-width DLN, built on the host
            data64 += 2 * dln_param_count(d_out, d_in, max(d_out, d_in), depth) * 8
        return data64 + network, data + network

    def _check_memory(self) -> None:
        host, device_bytes = self.memory_bytes()
        what = f"the {self.task} problem" + (f" with m = {self.m} measurements" if self.task == "ms" else "")
        available = _available_memory_bytes()
        if available and host > MEMORY_FRACTION * available:
            raise ConfigError(
                f"{what} and the {self.model} network need about {host / 2**30:.1f} GiB of memory but only "
                f"{available / 2**30:.1f} GiB is available; reduce --d or --m"
            )
        device = resolve_device(self.device)
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if device_bytes > MEMORY_FRACTION * free:
                raise ConfigError(
                    f"{what} and the {self.model} network need about {device_bytes / 2**30:.1f} GiB on {device} "
                    f"but only {free / 2**30:.1f} GiB is free there; reduce --d or --m, or use --device cpu"
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
        # YAML 1.1 (PyYAML) reads exponents without a dot, e.g. ``lr: 1e-2``, as strings.
        for key in FLOAT_FIELDS:
            if key in values:
                values[key] = _maybe_float(values[key])
        if "alpha" in values:
            values["alpha"] = [_maybe_float(v) for v in values["alpha"]]
        return cls(**values)


FLOAT_FIELDS: tuple[str, ...] = ("p", "eps", "lr", "gamma", "tol")


def _maybe_float(value: Any) -> Any:
    """``"1e-2"`` -> 0.01; anything else unchanged (validation then names the bad value)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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


def check_run_options(options: dict[str, Any], where: str, check_memory: bool = True) -> RunConfig:
    """Validate one run's options as ``cdln train`` would, without reading files or probing devices.

    For parse-time checks of a whole grid (e.g. the Snakefile, before any job starts): ``problem``
    is ignored (the file may not exist yet) and the device is taken as the CPU; ``check_memory``
    compares the run's size with this machine's memory (turn it off when jobs run elsewhere).
    Raises :class:`ConfigError` whose message starts with ``where`` (e.g. ``experiments.mc.panels.r3``).
    """
    values = {k: v for k, v in options.items() if k != "problem"}
    values["device"] = "cpu"
    try:
        config = RunConfig.from_dict(values, source=where)
        config.validate(check_memory=check_memory)
    except ConfigError as error:
        message = str(error)
        raise ConfigError(message if message.startswith(where) else f"{where}: {message}") from None
    return config


def pipeline_config_errors(config: dict[str, Any], schema_path: str | Path) -> list[str]:
    """Every violation of the pipeline schema, one line each: ``dotted.key: problem (description)``.

    Unlike the single error ``snakemake.utils.validate`` shows, this reports all of them and names
    the bad key itself: with ``unevaluatedProperties: false`` a failing ``allOf`` branch makes every
    key of its object "unevaluated", which hides the real error (e.g. ``lr: -1``) behind a list of
    valid keys; those keys are filtered out here, leaving only the truly unknown ones.
    """
    import jsonschema
    import yaml

    schema = yaml.safe_load(Path(schema_path).read_text())
    messages = []
    for error in jsonschema.Draft202012Validator(schema).iter_errors(config):
        where = ".".join(str(part) for part in error.absolute_path) or "<top level>"
        if error.validator in ("unevaluatedProperties", "additionalProperties"):
            known = _schema_properties(error.schema, schema)
            unknown = sorted(str(k) for k in error.instance if k not in known)
            if not unknown:
                continue  # only keys a failing branch left unevaluated: their own errors are reported
            messages.append(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(known)}")
            continue
        description = error.schema.get("description") if isinstance(error.schema, dict) else None
        messages.append(f"{where}: {error.message}" + (f" ({description})" if description else ""))
    return sorted(set(messages))


def _schema_properties(node: dict[str, Any], root: dict[str, Any]) -> set[str]:
    """Property names a schema node declares, through ``allOf`` and local ``$ref`` (``#/$defs/x``)."""
    names = set(node.get("properties", {}))
    if isinstance(node.get("additionalProperties"), dict):
        return names | {"*"}
    for sub in node.get("allOf", []):
        names |= _schema_properties(sub, root)
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        names |= _schema_properties(target, root)
    return names


def pipeline_run_errors(config: dict[str, Any], check_memory: bool = True) -> list[str]:
    """Cross-field checks JSON Schema cannot express (r <= d, r_hat <= d, p with mc, ...), and that
    input paths an experiment names (keys ending in ``_path`` or ``_dir``, when not null) exist.

    Every experiment section with a ``task`` and ``panels`` (shared settings, overridden per panel,
    one run per model) or with ``tasks`` keyed mf/mc/ms (analysis runs of the original DLN) is
    resolved into the options of its runs and checked with :func:`check_run_options`; keys that are
    not ``cdln train`` options are ignored, and other sections (real data, scaling) are left alone.
    """
    fields = {f.name for f in dataclasses.fields(RunConfig)} - {"problem", "device", "init_seed", "data_seed"}
    messages = []
    for name, section in config.get("experiments", {}).items():
        if not isinstance(section, dict) or section.get("enabled", True) is False:
            continue
        for key, value in section.items():  # input data named by the user (null = the default search)
            if (key.endswith("_path") or key.endswith("_dir")) and isinstance(value, str) and not Path(value).exists():
                messages.append(f"experiments.{name}.{key}: {value} does not exist (give an existing path, or null)")
        shared = {k: v for k, v in section.items() if k in fields}
        groups = []
        panels = section.get("panels") if section.get("task") in TASKS else None
        for panel, overrides in (panels or {}).items():
            for model in section.get("models") or ["original"]:
                groups.append((f"experiments.{name}.panels.{panel} ({model})", {**shared, **overrides, "model": model}))
        tasks = section.get("tasks") if isinstance(section.get("tasks"), dict) else {}
        for task, overrides in tasks.items():
            if task not in TASKS or not isinstance(overrides, dict):
                continue
            options = {**shared, **overrides, "task": task, "model": "original"}
            groups.append((f"experiments.{name}.tasks.{task}", options))
        for where, options in groups:
            options = {k: v for k, v in options.items() if k in fields}
            try:
                check_run_options(options, where, check_memory)
            except ConfigError as error:
                messages.append(str(error))
    return messages


def validate_pipeline_config(config: dict[str, Any], schema_path: str | Path, check_memory: bool = True) -> None:
    """Raise :class:`ConfigError` listing every violation of a pipeline config: the schema's, then
    (if the schema holds) the cross-field checks of every run. Meant for parse time, before any job."""
    errors = pipeline_config_errors(config, schema_path) or pipeline_run_errors(config, check_memory)
    if errors:
        raise ConfigError(f"invalid config ({len(errors)} error(s)):\n  " + "\n  ".join(errors))


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
