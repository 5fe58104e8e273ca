"""One training run: build the problem and the network a :class:`RunConfig` describes, train, record.

:func:`train_run` returns a :class:`RunOutput` (record, curves, snapshots); :func:`run` also writes it
as a run record (:mod:`cdln.records`). Neither changes the config it is given.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cdln.analysis import SpectralSnapshots, stack_snapshots
from cdln.config import DEFAULT_LR, ConfigError, RunConfig
from cdln.data.synthetic import make_problem
from cdln.devices import device_name, resolve_device
from cdln.engine import ProgressFn, TrainResult, TrainSettings, train
from cdln.io import load_problem, read_matrix
from cdln.networks import (
    LinearNetwork,
    burer_monteiro,
    compressed_dln,
    dln_param_count,
    narrow_dln,
    original_dln,
    yaras_dln,
)
from cdln.problems import Completion, Problem
from cdln.records import data_section, make_record, stage_run_record, write_run_record
from cdln.spec import ProblemSpec


@dataclass
class RunOutput:
    """A finished run: its record, its tidy curves and (with snapshots) the analysis arrays."""

    record: dict[str, Any]
    curves: pd.DataFrame
    snapshots: dict[str, np.ndarray] | None = None
    completed: np.ndarray | None = None  # runs on a user's matrix: the end-to-end matrices, (B, d_out, d_in)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays written beside the record as ``<name>.npy``."""
        return {"completed": self.completed} if self.completed is not None else {}

    def stage(self, directory: Path) -> None:
        """The run record's files, written into ``directory`` (a staging folder, renamed into place later)."""
        stage_run_record(directory, self.record, self.curves, self.snapshots, self.arrays())

    def write(self, run_dir: str | Path, force: bool = False) -> Path:
        """Write the run record to ``run_dir`` atomically (with ``completed.npy`` when there is one); an
        existing ``run_dir`` that is not a run record is replaced only with ``force``."""
        return write_run_record(run_dir, self.record, self.curves, self.snapshots, self.arrays(), force)


def build_network(config: RunConfig, problem: Problem) -> LinearNetwork:
    """The network ``config.model`` describes, on the CPU in float64, one member per seed/alpha."""
    d_out, d_in = problem.shape
    seeds = config.init_seed
    if config.model == "original":
        return original_dln(d_out, d_in, config.depth, config.eps, seeds, config.width)
    if config.model == "narrow":
        return narrow_dln(d_out, d_in, config.depth, config.eps, seeds, config.compressed_width)
    if config.model == "bm":
        scale = config.bm_scale if config.bm_scale is not None else config.eps
        return burer_monteiro(d_out, d_in, config.bm_rank or config.r, scale, seeds)
    if config.model == "cdln":
        alphas = [member["alpha"] for member in config.members()]
        return compressed_dln(
            problem.surrogate(), config.compressed_width, config.depth, config.eps, alphas, config.batch
        )
    # Yaras et al.: built from each seed's original DLN and the loss gradient at its initialisation.
    rank = config.compressed_width // 2
    return yaras_dln(problem.loss_grad, d_out, d_in, config.depth, config.eps, seeds, rank, config.gamma, config.width)


def load_run_problem(config: RunConfig) -> tuple[RunConfig, Problem]:
    """The run's problem on the CPU in float64 (its file, or a fresh draw), and the config resolved
    against it: the problem is authoritative for the shape and the rank."""
    config.validate()
    if config.matrix is not None:
        problem = matrix_problem(config)
    elif config.problem is None:
        problem = make_problem(config.problem_spec())
    else:
        problem = load_problem(config.problem)
        if problem.spec.task != config.task:
            held = f"holds a {problem.spec.task!r} problem"
            raise ConfigError(f"--problem {config.problem} {held} but --task is {config.task!r}")
    resolved = config.with_problem(problem.spec)
    if resolved.lr is None:
        lr = matrix_step_size(problem, resolved) if config.matrix is not None else DEFAULT_LR
        resolved = dataclasses.replace(resolved, lr=lr)
    resolved.validate()
    return resolved, problem


def matrix_step_size(problem: Problem, config: RunConfig) -> float:
    """A GD step for a user's matrix, from its scale: about half the largest stable one.

    Near the end of training the loss's curvature along the target's leading direction is about
    ``L s^(2(L-1)/L) / (d_out d_in)`` (``s`` the target's largest singular value, estimated by the surrogate's;
    each of the ``L`` layers carries ``s^(1/L)``), so GD is stable below twice its inverse; this returns its
    inverse, divided by the outer layers' extra step (``alpha``) where they take one."""
    d_out, d_in = problem.shape
    depth = 2 if config.model == "bm" else config.depth
    top = float(torch.linalg.matrix_norm(problem.surrogate(), ord=2))
    alpha = max(config.alpha) if config.model == "cdln" else 1.0
    extra = (2 * alpha + depth - 2) / depth  # the outer layers step at alpha x lr
    return d_out * d_in / (depth * top ** (2 * (depth - 1) / depth) * extra)


def matrix_problem(config: RunConfig) -> Completion:
    """The completion problem of ``config.matrix`` and its ``mask`` (and ``heldout``) files
    (:meth:`~cdln.problems.Completion.from_matrix`); errors name the file."""
    matrix = read_matrix(config.matrix, "--matrix")
    masks = {}
    for name in ("mask", "heldout"):
        path = getattr(config, name)
        if path is None:
            continue
        values = read_matrix(path, f"--{name}")
        if values.shape != matrix.shape:
            raise ConfigError(f"--{name} file {path} has shape {values.shape}; the --matrix is {matrix.shape}")
        if not np.isin(values, (0.0, 1.0)).all():
            meaning = {"mask": "1 = observed, 0 = missing", "heldout": "1 = held out to measure the error"}[name]
            raise ConfigError(f"--{name} file {path} must hold only 0 and 1 ({meaning})")
        masks[name] = torch.from_numpy(values != 0)
    if not masks["mask"].any():
        raise ConfigError(f"--mask file {config.mask} marks no entry as observed")
    try:
        return Completion.from_matrix(torch.from_numpy(matrix), masks["mask"], config.r, masks.get("heldout"))
    except ValueError as error:
        raise ConfigError(f"--matrix {config.matrix}: {error}") from None


def train_run(config: RunConfig, progress: ProgressFn | None = None) -> RunOutput:
    """Validate, build, train: the run's record and curves (a row per member and checkpoint); nothing is written."""
    config, cpu_problem = load_run_problem(config)
    device = resolve_device(config.device)
    network = build_network(config, cpu_problem).to(device, config.torch_dtype)
    problem = cpu_problem.to(device, config.torch_dtype)
    del cpu_problem
    snapshot = SpectralSnapshots(problem) if config.snapshots else None
    result = train(network, problem, settings_of(config), snapshot=snapshot, progress=progress)
    output = run_output(config, problem.spec, network, result, device)
    output.record["data"] = data_section(
        problem=config.problem, matrix=config.matrix, mask=config.mask, heldout=config.heldout
    )
    if config.matrix is not None:
        completed = network.end_to_end()
        output.completed = completed.cpu().numpy()
        assert isinstance(problem, Completion)
        entries = "held-out" if problem.heldout is not None else "observed"
        where = (problem.heldout if problem.heldout is not None else problem.mask).to(completed.dtype)
        errors = torch.linalg.matrix_norm((completed - problem.target) * where) / torch.linalg.matrix_norm(
            problem.target * where
        )
        for member, error in zip(output.record["members"], errors.tolist(), strict=True):
            member["final_relative_error"] = error
        output.record["problem"]["relative_error_entries"] = entries
    return output


RISE_SHARE = 0.05  # a healthy GD run's training loss falls at every checkpoint; rising at this share warns


def loss_health(curves: pd.DataFrame, dtype: torch.dtype) -> dict[int, dict[str, Any]]:
    """Per member: at how many checkpoints the training loss rose (above its rounding floor) of how many, and
    whether it ended above where it started. Rises below ``max(1e-10, (1e3 eps)^2) x`` the first loss are
    rounding at a converged floor, not counted."""
    floor = max(1e-10, (1e3 * torch.finfo(dtype).eps) ** 2)
    health = {}
    for member, frame in curves.groupby("member"):
        loss = frame["train_loss"].to_numpy()
        rose = (loss[1:] > loss[:-1] * (1 + 1e-9)) & (loss[1:] > floor * loss[0])
        health[int(member)] = {
            "loss_rose": int(rose.sum()),
            "checkpoints": len(loss) - 1,
            "loss_ended_above_start": bool(loss[-1] > loss[0]),
        }
    return health


def health_warnings(record: dict[str, Any]) -> list[str]:
    """One line per member whose training loss rose at a large share of checkpoints or ended above its start."""
    lines = []
    lr = record["config"]["lr"]
    for member in record["members"]:
        rose, checkpoints = member.get("loss_rose", 0), member.get("checkpoints", 0)
        share = rose / checkpoints if checkpoints else 0.0
        if share < RISE_SHARE and not member.get("loss_ended_above_start"):
            continue
        ended = " and ended above where it started" if member.get("loss_ended_above_start") else ""
        who = f"member {member['member']}: " if len(record["members"]) > 1 else ""
        lines.append(
            f"{who}the training loss rose at {rose} of {checkpoints} checkpoints ({share:.0%}){ended}; the result is "
            f"not trustworthy: the step size {lr:g} is likely too large for this problem's scale, try --lr {lr / 2:g}"
        )
    return lines


def settings_of(config: RunConfig) -> TrainSettings:
    return TrainSettings(config.lr, config.n_inner, config.max_outer, config.tol)


def run(config: RunConfig, out_dir: str | Path | None = None, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Train one run (see :func:`train_run`) and, if ``out_dir``, write its record; returns the record."""
    output = train_run(config, progress)
    if out_dir is not None:
        output.write(out_dir)
    return output.record


def run_output(
    config: RunConfig, spec: ProblemSpec, network: LinearNetwork, result: TrainResult, device: torch.device
) -> RunOutput:
    """A finished training run: its record and its curves, each row labelled with its member's model,
    init seed and alpha."""
    members = config.members()
    curves = result.curves.assign(
        model=config.model,
        init_seed=[members[m]["init_seed"] for m in result.curves["member"]],
        alpha=[members[m]["alpha"] for m in result.curves["member"]],
    )
    record = training_record(config, spec, network, result, device)
    return RunOutput(record, curves, stack_snapshots(result.snapshots) or None)


def resolved_settings(config: RunConfig, spec: ProblemSpec) -> dict[str, Any]:
    """The run's settings as they ran: the defaults that depend on others (the compressed width 2r, the
    B-M width r and scale eps, the original DLN's width) replaced by their values."""
    settings = asdict(config)
    if config.model in ("cdln", "narrow", "yaras"):
        settings["r_hat"] = config.compressed_width
    if config.model == "bm":
        settings["bm_rank"] = config.bm_rank or config.r
        settings["bm_scale"] = config.bm_scale if config.bm_scale is not None else config.eps
    if config.model in ("original", "yaras"):
        settings["width"] = config.width or max(spec.d_out, spec.d_in)
    return settings


def training_record(
    config: RunConfig, spec: ProblemSpec, network: LinearNetwork, result: TrainResult, device: torch.device
) -> dict[str, Any]:
    """The run record of a GD training run (:func:`cdln.records.make_record`, kind ``train``)."""
    original_params = dln_param_count(spec.d_out, spec.d_in, config.width or max(spec.d_out, spec.d_in), config.depth)
    final = result.curves.groupby("member").last()
    members = config.members()
    health = loss_health(result.curves, config.torch_dtype)
    for entry in members:
        i = entry["member"]
        entry.update(
            **health[i],
            converged=result.converged[i],
            stop_iteration=result.stop_iteration[i],
            stop_seconds=result.stop_seconds[i],
            final_train_loss=float(final.loc[i, "train_loss"]),
            final_recovery_error=float(final.loc[i, "recovery_error"]),
        )
    iterations = int(result.curves["iteration"].max())
    record = make_record(
        "train",
        config=resolved_settings(config, spec),
        problem=asdict(spec),
        members=members,
        parameters={"model": network.n_params(), "original_dln": original_params},
        timing={
            "seconds": result.seconds,
            "warmup_seconds": result.warmup_seconds,
            "iterations": iterations,
            "seconds_per_iteration": result.seconds / max(1, iterations),
            "batch": network.batch,
            "engine_path": result.engine_path,
            "engine_plan": result.engine_plan,  # path, backend, BLAS, sampled kernel, operator pass, override
        },
        device={"type": device.type, "name": device_name(device), "dtype": config.dtype},
    )
    record["warnings"] = health_warnings(record)
    return record
