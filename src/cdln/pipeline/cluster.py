"""Cluster execution (profiles/slurm): which jobs a cluster runs, and which are short enough to share one
batch job.

A job group bundles jobs into one cluster job (``group-components: short=N`` in the profile: N connected
sets of them per sbatch), so that seconds-long jobs do not each pay a batch job's submission, start-up and
status-poll latency. Local runs ignore groups. Only jobs estimated short join: the long ones of the paper
grid keep a batch job (and a node) each.
"""

from __future__ import annotations

import contextlib

from cdln.pipeline.grid import Grid, GridError, Job

SHORT_GROUP = "short"
# What a cluster runs (training, data files, timing); every other rule is local (seconds each).
CLUSTER_RULES = frozenset(
    {"run_job", "make_problem", "make_sensing_problem", "movielens_synthetic_archive", "fashion_mnist_synthetic",
     "scaling_measure"}
)  # fmt: skip
# Upper bound of a job's estimated work (floating-point operations, see estimated_work) for it to count as
# short: seconds on one core. Every job of config/ci.yaml is below it, every training job of config/config.yaml
# above (tests/test_cluster.py).
SHORT_JOB_WORK = 2e10
SHORT_SENSING_FLOATS = 1e8  # d^2 m of an MS problem drawn in seconds
IMAGE_PIXELS = 28 * 28  # FashionMNIST


def estimated_work(grid: Grid, job: Job) -> float | None:
    """A generous estimate of a job's floating-point work, from the config alone: every iteration of every run
    costing a dense step of the original DLN (L d_out d_in width; MS: L d^2 m), every step of a classifier
    L x batch x pixels x width, every AltMin iteration (d_out + d_in) d_in k^2; None when a run's sizes are not
    in the config."""
    sizes = {}
    for path in job.inputs:
        with contextlib.suppress(GridError):  # an input the grid does not make (e.g. a configured archive)
            sizes.update({k: v for k, v in grid.data_file(path).options.items() if v is not None})
    total = 0.0
    for run in job.runs:
        options = {**sizes, **{k: v for k, v in run.options.items() if v is not None}}
        depth = options.get("depth", 3)
        if run.command == "nonlinear" and "steps" in options:
            width = max([*options.get("hidden", []), options.get("width", 0)])
            total += options["steps"] * depth * options.get("batch_size", 1) * IMAGE_PIXELS * width
            continue
        d_out, d_in = options.get("n_users", options.get("d")), options.get("n_items", options.get("d"))
        if d_out is None or run.command not in ("train", "altmin"):
            return None
        if run.command == "altmin":  # a least-squares solve of rank k per row and column per iteration
            total += options.get("iterations", 1) * (d_out + d_in) * d_in * options.get("r", d_in) ** 2
            continue
        iterations = options.get("n_inner", 1) * options.get("max_outer", 1)
        total += iterations * depth * d_out * d_in * options.get("m", options.get("width", d_in))
    return total


def training_group(grid: Grid, experiment: str, job_id: str) -> str | None:
    """Job group of a training job: :data:`SHORT_GROUP` when its estimated work is below :data:`SHORT_JOB_WORK`."""
    work = estimated_work(grid, grid.job(experiment, job_id))
    return SHORT_GROUP if work is not None and work < SHORT_JOB_WORK else None


def sensing_group(grid: Grid, path: str) -> str | None:
    """MS problems small enough to draw in seconds join :data:`SHORT_GROUP`."""
    options = grid.data_file(path).options
    return SHORT_GROUP if options["d"] ** 2 * options["m"] < SHORT_SENSING_FLOATS else None
