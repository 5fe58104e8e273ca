"""Scheduling: the order in which jobs start (longest first), which jobs a cluster runs (profiles/slurm), and
which are short enough to share one batch job.

Every training job gets a priority from its estimated work (:func:`job_priority`), so that on a few cores the
longest jobs start first and the run does not end with one long job alone; a data file gets the highest
priority of the jobs that read it (Snakemake does not pass priorities upstream).

A job group bundles jobs into one cluster job (``group-components: short=N`` in the profile: N connected
sets of them per sbatch), so that seconds-long jobs do not each pay a batch job's submission, start-up and
status-poll latency. Local runs ignore groups. Only jobs estimated short join: the long ones of the paper
grid keep a batch job (and a node) each.
"""

from __future__ import annotations

import math

from cdln.pipeline.grid import Grid, Job

SHORT_GROUP = "short"
# What a cluster runs (training, data files, timing); every other rule is local (seconds each).
CLUSTER_RULES = frozenset(
    {"run_job", "make_problem", "make_sensing_problem", "movielens_synthetic_archive", "fashion_mnist_synthetic",
     "scaling_measure"}
)  # fmt: skip
# Upper bound of a job's estimated work (floating-point operations, see estimated_work) for it to count as
# short: seconds on one core. Every job of config/ci.yaml is below it, and of config/config.yaml only jobs of
# narrow networks (tests/test_targets.py).
SHORT_JOB_WORK = 2e10
SHORT_SENSING_FLOATS = 1e8  # d^2 m of an MS problem drawn in seconds
IMAGE_PIXELS, TRAIN_IMAGES = 28 * 28, 60_000  # FashionMNIST
MOVIELENS_SHAPE = (943, 1682)  # users x items, when the config keeps them all


def estimated_work(grid: Grid, job: Job) -> float | None:
    """A job's floating-point work, from the config alone, each run at its full budget (a run that stops at tol
    costs less): a GD step of a network of width w on a d_out x d_in target costs about 2 L d_out d_in w (the
    C-DLN's w = r_hat, the original DLN's its width, B-M's its rank), an MS step adds 2 m d^2 (the operator pass);
    a classifier step 6 x examples x (pixels x hidden + depth x width^2); an AltMin sweep (d_out + d_in) d_in k^2.
    None when a run's sizes are not in the config; 0 for a job that trains nothing itself."""
    sizes = {k: v for data in grid.job_data(job) for k, v in data.options.items() if v is not None}
    total = 0.0
    for run in job.trained():  # a run another job trains costs this one nothing
        options = {**sizes, **{k: v for k, v in run.options.items() if v is not None}}
        depth = options.get("depth", 3)
        if run.command == "nonlinear":
            batch = TRAIN_IMAGES if options.get("batch_size", "full") == "full" else options["batch_size"]
            hidden = max(options.get("hidden", [0]))
            per_example = IMAGE_PIXELS * hidden + depth * options.get("width", hidden) ** 2
            total += 6 * options.get("steps", 1) * batch * per_example
            continue
        default = MOVIELENS_SHAPE if run.keys.get("experiment") == "movielens" else (None, None)
        d_out, d_in = (
            options.get("n_users", options.get("d", default[0])),
            options.get("n_items", options.get("d", default[1])),
        )
        if d_out is None or d_in is None or run.command not in ("train", "altmin"):
            return None
        if run.command == "altmin":  # a least-squares solve of rank k per row and column per iteration
            total += options.get("iterations", 1) * (d_out + d_in) * d_in * options.get("r", d_in) ** 2
            continue
        model = options.get("model", "original")
        width = {"cdln": options.get("r_hat"), "narrow": options.get("r_hat"), "bm": options.get("bm_rank")}.get(model)
        width = width or options.get("width") or max(d_out, d_in)
        step = 2 * depth * d_out * d_in * width + 2 * options.get("m", 0) * d_out * d_in
        total += options.get("n_inner", 1) * options.get("max_outer", 1) * step
    return total


def job_priority(grid: Grid, experiment: str, job_id: str) -> int:
    """Snakemake priority of a training job: 10 log10 of its estimated work (:func:`estimated_work`), so the
    longest start first; 1 when its sizes are not in the config. Every other rule keeps priority 0."""
    work = estimated_work(grid, grid.job(experiment, job_id))
    return max(1, round(10 * math.log10(work))) if work else 1


def data_priority(grid: Grid, path: str) -> int:
    """A data file's priority: the highest of the jobs that read it (a long job's problem is drawn first)."""
    readers = [job for job in grid.jobs() if path in job.inputs]
    return max((job_priority(grid, job.experiment, job.job_id) for job in readers), default=1)


def short_job(grid: Grid, experiment: str, job_id: str) -> bool:
    """Whether a training job's estimated work is below :data:`SHORT_JOB_WORK` (minutes, not hours)."""
    work = estimated_work(grid, grid.job(experiment, job_id))
    return work is not None and work < SHORT_JOB_WORK


def training_group(grid: Grid, experiment: str, job_id: str) -> str | None:
    """Job group of a training job: :data:`SHORT_GROUP` when it is short (:func:`short_job`), unless it reads runs
    another job trains (that job may depend on the group's problem files, and a group may not be entered twice)."""
    if any(run.same_as for run in grid.job(experiment, job_id).runs):
        return None
    return SHORT_GROUP if short_job(grid, experiment, job_id) else None


def sensing_group(grid: Grid, path: str) -> str | None:
    """MS problems small enough to draw in seconds join :data:`SHORT_GROUP`."""
    options = grid.data_file(path).options
    return SHORT_GROUP if options["d"] ** 2 * options["m"] < SHORT_SENSING_FLOATS else None
