"""The configuration of one training run and its validation (pure: nothing here trains).

``RunConfig`` is what the CLI, YAML files and the Snakemake pipeline all resolve into;
:mod:`cdln.runner` turns one into a run record. Validation happens before any work: every
error names the option, the bad value and what would be valid.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cdln.devices import resolve_device, resolve_dtype
from cdln.networks import MODELS, dln_param_count
from cdln.spec import CLASS_PATH, NOISY_TASKS, OPERATOR_DTYPES, SPECTRA, TASKS, ProblemSpec

DEFAULT_LR = 10.0  # the GD step when none is given (a user's --matrix: derived from its scale instead)
MEMORY_FRACTION = 0.8  # refuse problems needing more than this share of the machine's memory


class ConfigError(ValueError):
    """An invalid configuration value; the message names the option and the valid values."""


def setting(default: Any, help: str, factory: Callable[[], Any] | None = None) -> Any:
    """A :class:`RunConfig` field with its help, the one text `cdln train --help`, the pipeline schema's
    description and config/README.md give for it (tests/test_cli.py keeps the last two equal to it)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class RunConfig:
    """One training run (or a batch of runs sharing shapes: several init seeds or alphas)."""

    task: str = setting(
        "mc",
        f"recovery problem: {', '.join(TASKS)} (factorization, completion, sensing), or a problem class of yours "
        "as module:Class (with a problem file of it)",
    )
    d: int = setting(100, "target size d for a square d x d target")
    d_out: int | None = setting(None, "rows of a rectangular target (overrides --d)")
    d_in: int | None = setting(None, "columns of a rectangular target (overrides --d)")
    r: int = setting(10, "rank of the target, 1 <= r <= min(d_out, d_in)")
    p: float | None = setting(None, "MC: fraction of observed entries, in (0, 1]")
    m: int | None = setting(None, "MS: number of Gaussian measurements, >= 1")
    spectrum: str = setting("spread", f"target singular values: {', '.join(SPECTRA)} (spread = the authors' generator)")
    condition: float | None = setting(None, "spectrum geometric: largest / smallest singular value of the target, >= 1")
    noise: float = setting(
        0.0,
        "MC/MS: std of Gaussian noise on the observed entries or measurements, relative to their RMS, >= 0 (the "
        "recovery error is against the clean target)",
    )
    operator_dtype: str | None = setting(
        None,
        "MS: how the operator is stored, float32 (half the bytes each step reads) or float64 (the authors'); the "
        "arithmetic is in dtype either way (default: float32)",
    )
    data_seed: int = setting(0, "seed of the problem draw (target, mask, operator, noise)")
    problem: str | None = setting(None, "problem file from `cdln make-problem` (overrides the problem options)")
    matrix: str | None = setting(
        None, "MC on your own data: the partly observed matrix, .npy or comma-separated .csv (needs --mask)"
    )
    mask: str | None = setting(None, "the matrix's observed entries: 0/1 in a .npy or .csv of the matrix's shape")
    heldout: str | None = setting(
        None, "optional 0/1 .npy/.csv: entries whose values in --matrix measure the recovery error"
    )
    model: str = setting("original", f"network: {', '.join(MODELS)} (bm = Burer-Monteiro, yaras = Yaras et al. 2024)")
    depth: int = setting(3, "number of layers L >= 2")
    width: int | None = setting(None, "width of the original DLN (default max(d_out, d_in))")
    r_hat: int | None = setting(None, "width of cdln/narrow/yaras networks, >= 1 (default 2r)")
    bm_rank: int | None = setting(None, "Burer-Monteiro width k (default r)")
    bm_scale: float | None = setting(None, "Burer-Monteiro init scale, > 0 (default eps; 1 = an order-one start)")
    eps: float = setting(1e-2, "initialisation scale, > 0")
    lr: float | None = setting(
        None,
        "GD step size eta, > 0 (default: 10; on a matrix of one's own, half the stable step its scale allows, "
        "d_out d_in / (L sigma_1^(2(L-1)/L)), sigma_1 the surrogate's largest singular value)",
    )
    alpha: list[float] = setting(
        None,
        "C-DLN outer-layer step multiplier(s), > 0; several values train as one batched sweep",
        factory=lambda: [1.0],
    )
    gamma: float = setting(0.01, "Yaras et al. outer-layer step multiplier, > 0")
    n_inner: int = setting(100, "GD steps between checkpoints, >= 1")
    max_outer: int = setting(500, "maximum number of checkpoints (iteration budget = n_inner * max_outer)")
    tol: float = setting(0.0, "stop once the training loss is below tol (checked at checkpoints), >= 0")
    init_seed: list[int] = setting(
        None, "initialisation seed(s); several seeds train as one batch", factory=lambda: [0]
    )
    dtype: str = setting("float64", "float64 or float32")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N (auto = CUDA when present)")
    snapshots: bool = setting(False, "record spectral snapshots for the subspace analysis")

    @property
    def shape(self) -> tuple[int, int]:
        return (self.d_out or self.d, self.d_in or self.d)

    @property
    def compressed_width(self) -> int:
        return self.r_hat if self.r_hat is not None else 2 * self.r

    @property
    def torch_dtype(self) -> torch.dtype:
        return resolve_dtype(self.dtype)

    @property
    def batch(self) -> int:
        """Members trained together: one per init seed, or one per alpha of a batched sweep."""
        return max(len(self.alpha), len(self.init_seed))

    def members(self) -> list[dict[str, Any]]:
        """What distinguishes each batch member: its init seed and alpha."""
        seeds = self.init_seed * self.batch if len(self.init_seed) == 1 else self.init_seed
        alphas = self.alpha * self.batch if len(self.alpha) == 1 else self.alpha
        return [{"member": i, "init_seed": seeds[i], "alpha": alphas[i]} for i in range(self.batch)]

    def with_problem(self, spec: ProblemSpec) -> RunConfig:
        """A copy whose problem fields are those of the problem it trains on (a problem file is authoritative)."""
        d = spec.d_out if spec.d_out == spec.d_in else self.d
        return dataclasses.replace(
            self, d=d, d_out=spec.d_out, d_in=spec.d_in, r=spec.rank, p=spec.p, m=spec.m,
            spectrum=spec.spectrum, condition=spec.condition, noise=spec.noise, data_seed=spec.data_seed,
            operator_dtype=spec.operator_dtype,
        )  # fmt: skip

    def problem_spec(self) -> ProblemSpec:
        d_out, d_in = self.shape
        return ProblemSpec(
            self.task, d_out, d_in, self.r, self.data_seed, self.p, self.m, self.spectrum, self.condition, self.noise,
            self.operator_dtype if self.task == "ms" else None,
        )  # fmt: skip

    def validate(self, check_memory: bool = True) -> None:
        """Raise :class:`ConfigError` for the first invalid option, before any work is done."""
        if not CLASS_PATH.match(str(self.task)):
            _choice("task", self.task, TASKS)
        elif self.problem is None:
            raise ConfigError(
                f"--task {self.task} (a problem class of yours) needs --problem: a file of it saved with "
                "cdln.io.save_problem (docs/own-problem.md)"
            )
        _choice("model", self.model, MODELS)
        _choice("spectrum", self.spectrum, SPECTRA)
        if self.spectrum == "geometric" and (not _is_number(self.condition) or not self.condition >= 1):
            raise ConfigError(f"--condition must be a number >= 1 for --spectrum geometric; got {self.condition!r}")
        if self.spectrum != "geometric" and self.condition is not None:
            raise ConfigError(f"--condition applies to --spectrum geometric only; got --spectrum {self.spectrum}")
        if not _is_number(self.noise) or not math.isfinite(self.noise) or self.noise < 0:
            raise ConfigError(f"--noise must be a finite number >= 0; got {self.noise!r}")
        if self.noise and self.task not in NOISY_TASKS:
            raise ConfigError(f"--noise applies to tasks {list(NOISY_TASKS)} (observed data); got --task {self.task}")
        for name in ("d", "r", "n_inner", "max_outer"):
            _integer_at_least(name, getattr(self, name), 1)
        for name in ("d_out", "d_in", "width", "r_hat", "bm_rank", "m"):
            if getattr(self, name) is not None:
                _integer_at_least(name, getattr(self, name), 1)
        _integer_at_least("depth", self.depth, 2)
        self._validate_matrix_files()
        d_out, d_in = self.shape
        if self.r > min(d_out, d_in):
            raise ConfigError(f"--r must be in [1, min(d_out, d_in)] = [1, {min(d_out, d_in)}]; got {self.r}")
        if self.model in ("cdln", "narrow", "yaras") and self.compressed_width > min(d_out, d_in):
            if self.r_hat is None:  # the default: say so, the user never passed --r-hat
                raise ConfigError(
                    f"--r-hat defaults to 2r = {self.compressed_width}, more than min(d_out, d_in) = "
                    f"{min(d_out, d_in)}; pass --r-hat in [1, {min(d_out, d_in)}]"
                )
            raise ConfigError(f"--r-hat must be in [1, {min(d_out, d_in)}]; got {self.compressed_width}")
        for name in ("eps", "gamma"):
            _positive(name, getattr(self, name))
        if self.lr is not None:
            _positive("lr", self.lr)
        if self.bm_scale is not None:
            _positive("bm_scale", self.bm_scale)
        if self.model == "yaras" and self.compressed_width % 2:
            raise ConfigError(f"--r-hat must be even for yaras (2 x its rank); got {self.compressed_width}")
        if not self.alpha:
            raise ConfigError("--alpha needs at least one value")
        for value in self.alpha:
            _positive("alpha", value)
        if not _is_number(self.tol) or not math.isfinite(self.tol) or self.tol < 0:
            raise ConfigError(f"--tol must be a finite number >= 0; got {self.tol!r}")
        if self.p is not None and (not _is_number(self.p) or not 0 < self.p <= 1):
            raise ConfigError(f"--p must be in (0, 1] (fraction of observed entries); got {self.p!r}")
        if self.task == "mc" and self.problem is None and self.matrix is None and self.p is None:
            raise ConfigError("--p must be in (0, 1] for task 'mc'; got None")
        if not isinstance(self.snapshots, bool):
            raise ConfigError(f"--snapshots must be true or false; got {self.snapshots!r}")
        if self.task == "ms" and self.problem is None and self.m is None:
            raise ConfigError("--m (number of measurements, >= 1) is required for task 'ms'")
        if self.operator_dtype is not None:
            _choice("operator_dtype", self.operator_dtype, OPERATOR_DTYPES)
            if self.task != "ms":
                raise ConfigError(f"--operator-dtype applies to --task ms (its operator); got --task {self.task}")
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
            self.check_memory()

    def _validate_matrix_files(self) -> None:
        given = [name for name in ("matrix", "mask", "heldout") if getattr(self, name) is not None]
        if not given:
            return
        if self.matrix is None:
            raise ConfigError(f"--{given[0]} needs --matrix (the partly observed matrix it marks)")
        if self.mask is None:
            raise ConfigError("--matrix needs --mask (its observed entries: 1 = observed, 0 = missing)")
        if self.problem is not None:
            raise ConfigError("give either --problem or --matrix/--mask, not both")
        if self.task != "mc":
            raise ConfigError(f"--matrix/--mask train matrix completion: want --task mc; got --task {self.task}")
        for name in given:
            path = Path(getattr(self, name))
            if not path.is_file():
                raise ConfigError(f"--{name} file {path} does not exist")
            if path.suffix.lower() not in (".npy", ".csv", ".txt"):
                raise ConfigError(
                    f"--{name} file {path} must be .npy, .csv or .txt; got {path.suffix or 'no suffix'!r}"
                )

    def memory_bytes(self) -> tuple[int, int]:
        """Rough peak bytes ``(host, device)`` of the run: problem data and network, with temporaries.

        The problem is drawn in float64 on the host (the MS operator and its stored copy, plus about five
        d_out x d_in matrices for the SVD of the Gaussian draw, the mask's permutation and the loss weights),
        then copied in ``dtype`` to the device (an MS operator stored narrower stays so); the network holds
        weights, prefix products and gradients (about 3x its parameters per batch member).
        """
        spec = self.problem_spec()
        itemsize = resolve_dtype(self.dtype).itemsize
        entries = spec.d_out * spec.d_in
        if self.problem is not None and Path(self.problem).is_file():  # a saved problem: its file size
            stored = Path(self.problem).stat().st_size
            data64, data = stored + 4 * 8 * entries, stored * itemsize // 8 + 4 * itemsize * entries
        else:
            storage = spec.operator_storage if spec.task == "ms" else torch.float64
            data64 = spec.operator_bytes(torch.float64) + spec.operator_bytes(storage) + 5 * 8 * entries
            narrowest = min(storage, resolve_dtype(self.dtype), key=lambda t: torch.empty((), dtype=t).itemsize)
            data = spec.operator_bytes(narrowest) + 4 * itemsize * entries
        d_out, d_in = self.shape
        width = {"original": self.width or max(d_out, d_in), "bm": self.bm_rank or self.r}.get(
            self.model, self.compressed_width
        )
        depth = 2 if self.model == "bm" else self.depth
        network = 3 * self.batch * dln_param_count(d_out, d_in, width, depth) * itemsize
        if self.model == "yaras":  # its init takes the gradient of a full-width DLN, built on the host
            data64 += 2 * dln_param_count(d_out, d_in, max(d_out, d_in), depth) * 8
        return data64 + network, data + network

    def check_memory(self) -> None:
        """Raise :class:`ConfigError` when the run would not fit in host (or device) memory."""
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


FLOAT_FIELDS: tuple[str, ...] = ("p", "eps", "lr", "gamma", "tol", "bm_scale")


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
    is ignored (the file may not exist yet) unless the task is a user's problem class (theirs, there already),
    and the device is taken as the CPU; ``check_memory`` compares the run's size with this machine's memory (turn
    it off when jobs run elsewhere).
    Raises :class:`ConfigError` whose message starts with ``where`` (e.g. ``experiments.mc.panels.r3``).
    """
    values = {k: v for k, v in options.items() if k != "problem"}
    if CLASS_PATH.match(str(options.get("task"))) and options.get("problem") is not None:
        values["problem"] = options["problem"]  # a problem of the user's: their file, there before any job
    values["device"] = "cpu"
    try:
        config = RunConfig.from_dict(values, source=where)
        config.validate(check_memory=check_memory)
    except ConfigError as error:
        message = str(error)
        raise ConfigError(message if message.startswith(where) else f"{where}: {message}") from None
    return config
