"""The run grid: a pipeline config -> every job, run and data file of every experiment.

This is the one place that expands ``config/*.yaml`` into work. The Snakemake rules, the config
validation, the CLI and the tests all ask it, so a setting reaches a run by one path only:
config section -> :class:`Run` options -> ``cdln <command> --flags`` -> the library.

- A :class:`Run` is one training run: the ``cdln`` subcommand that trains it (train, altmin,
  nonlinear), that subcommand's options, and the keys the tables know it by.
- A :class:`Job` is what one process does: the runs that share one problem instance (one problem
  file, one data seed), trained one after another and each timed alone. It writes
  ``<root>/runs/<experiment>/<job_id>/<run name>/`` (a run record per run), atomically as a whole.
- A :class:`DataFile` is a problem file or a stand-in data set, and the ``cdln`` subcommand that
  makes it.

A sweep section (``sweeps``, the robustness figure) varies one factor at a time around its shared
settings: each value becomes a panel ``<factor>_<value>`` (``.`` written ``p``: ``p_0p15``), and the
points where every factor is at its shared value are one panel, ``base``.

Names: synthetic jobs are ``<panel>_seed<seed>`` holding runs ``<model>`` (``cdln_alpha<a>`` in an
alpha sweep, ``cdln_alphabatch`` when its alphas train as one batch), or with ``job_per_panel`` one job
``<panel>`` holding ``<model>_seed<seed>`` (one process start-up per panel instead of per seed); analysis jobs
``<task>_seed<seed>`` holding ``original``; real-data jobs ``seed<seed>`` holding one run per model.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SYNTHETIC = ("mf", "mc", "ms", "ablation_alpha", "ablation_depth", "baselines", "robustness")
ANALYSIS = ("incremental", "invariance", "alignment")
REAL_DATA = ("movielens", "nonlinear")
BUILT_IN = (*SYNTHETIC, *ANALYSIS, *REAL_DATA, "scaling", "summary")  # any other experiment is on a user's problem
OWN_PANEL = "main"  # the one panel of an experiment on a user's problem (its runs: main_seed<s>/<model>)
# Keys of a synthetic section that are run settings (shared by its panels, overridden per panel).
RUN_KEYS = (
    "task", "d", "r", "p", "m", "depth", "r_hat", "bm_rank", "bm_scale", "eps", "lr", "alpha", "gamma", "n_inner",
    "max_outer", "tol", "noise", "spectrum", "condition", "operator_dtype",
)  # fmt: skip
# Problem settings beyond the paper's, with the values that leave a problem (and its file name) as the paper's.
PROBLEM_EXTRAS = {"noise": 0, "spectrum": "spread", "condition": None, "operator_dtype": "float32"}
EXTRA_NAMES = {"operator_dtype": "op"}  # a name's shorter spelling of a key: ``_opfloat64``
# Factors a sweep section may vary, one at a time (the robustness figure).
SWEEP_FACTORS = ("r_hat_ratio", "p", "noise", "condition", "d")
# Widths that belong to some models only.
COMPRESSED_MODELS = ("cdln", "narrow", "yaras")
# The FashionMNIST classifier's settings a nonlinear section passes on (`cdln nonlinear --help`).
NONLINEAR_KEYS = (
    "hidden", "depth", "width", "r_hat", "eps", "alpha", "init_scale", "alpha_layer", "optimizer", "lr", "momentum",
    "batch_size", "steps", "eval_every", "surrogate_batch", "train_subset", "test_subset", "dtype",
)  # fmt: skip
RESOURCES = "resources"  # where users put data sets (resources/README.md)
JOB_MANIFEST = "job.json"  # in every job directory: its runs, in the order they ran, and their options
STOP_KEYS = ("tol", "max_outer")  # where a run stops: a run that stops earlier is a prefix of one that goes on


def fmt_number(value: float) -> str:
    """A number as it appears in names: 0.3 -> 0.3, 2.0 -> 2, 1e-12 -> 1e-12."""
    return f"{value:g}"


def alpha_values(sweep: Mapping[str, float]) -> list[float]:
    """start, start + step, ..., stop (inclusive, rounded to 6 decimals against float drift)."""
    count = int(round((sweep["stop"] - sweep["start"]) / sweep["step"])) + 1
    return [round(sweep["start"] + i * sweep["step"], 6) for i in range(count)]


def cli_flags(options: Mapping[str, Any]) -> str:
    """``{"lr": 10, "init_seed": [0, 1], "snapshots": True}`` -> ``--lr 10 --init-seed 0 1 --snapshots``.

    The CLI's convention (``--name-with-dashes``); None and False are left out.
    """
    parts = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = f"--{key.replace('_', '-')}"
        if value is True:
            parts.append(flag)
        elif isinstance(value, (list, tuple)):
            parts.append(f"{flag} {' '.join(shlex.quote(str(v)) for v in value)}")
        else:
            parts.append(f"{flag} {shlex.quote(str(value))}")
    return " ".join(parts)


@dataclass(frozen=True)
class Run:
    """One training run: ``cdln <command>`` with ``options`` (its settings, by the command's option names),
    known to the tables by ``keys``. ``same_as``: the run directory of the run that trains it (equal settings,
    trained once by an earlier job), which this one reads, stopped at its own ``tol`` and budget."""

    name: str
    command: str
    options: Mapping[str, Any]
    keys: Mapping[str, Any] = field(default_factory=dict)
    where: str = ""  # the config location that defines it, for error messages
    same_as: str | None = None

    def manifest(self) -> dict[str, Any]:
        """The run as a job manifest lists it (``cdln run-job --manifest``): name, command, its options that are
        set, and ``same_as`` when another job trains it."""
        options = {key: value for key, value in self.options.items() if value is not None}
        entry = {"name": self.name, "command": self.command, "options": options}
        return {**entry, "same_as": self.same_as} if self.same_as else entry


@dataclass(frozen=True)
class Job:
    """The runs one process trains (one after another), written under ``directory``."""

    experiment: str
    job_id: str
    runs: tuple[Run, ...]
    root: str
    inputs: tuple[str, ...] = ()

    @property
    def directory(self) -> str:
        return f"{self.root}/runs/{self.experiment}/{self.job_id}"

    def run_dir(self, run: Run) -> str:
        return f"{self.directory}/{run.name}"

    def run_dirs(self) -> list[str]:
        return [self.run_dir(run) for run in self.runs]

    def manifest(self) -> dict[str, Any]:
        """The job as ``cdln run-job --manifest`` reads it (and writes it back, as ``job.json``)."""
        return {"runs": [run.manifest() for run in self.runs]}

    def trained(self) -> list[Run]:
        """The runs this job trains (the others are read from the jobs that train them)."""
        return [run for run in self.runs if run.same_as is None]


@dataclass(frozen=True)
class DataFile:
    """A file (or folder) ``cdln <command> <options> --out <path>`` makes."""

    path: str
    command: str
    options: Mapping[str, Any]
    temporary: bool = False  # deleted once every job that reads it is done (MS operators)
    inputs: tuple[str, ...] = ()

    def flags(self) -> str:
        return cli_flags(self.options)


class GridError(ValueError):
    """A job, run or file that the config does not define; the message lists what it does define."""


class Grid:
    """Every job, run and data file a (schema-validated) pipeline config asks for."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config
        root = config["output_root"]  # a name under results/, or an absolute folder (the schema allows no other)
        self.root = root.rstrip("/") if root.startswith("/") else f"results/{root}"
        self._data: dict[str, DataFile] = {}
        self._jobs: dict[str, dict[str, Job]] = {}
        self._measured_in: dict[str, dict[tuple[str, str], str]] = {}  # sweep: (panel, model) -> panel that ran it
        expanders = {
            **dict.fromkeys(SYNTHETIC, self._synthetic_jobs),
            **dict.fromkeys(ANALYSIS, self._analysis_jobs),
            "movielens": self._movielens_jobs,
            "nonlinear": self._nonlinear_jobs,
            **dict.fromkeys(self.own_experiments, self._own_jobs),
        }
        for name, expand in expanders.items():
            if self.enabled(name):
                self._jobs[name] = {job.job_id: job for job in expand(name)}
        self._train_each_run_once()

    # ---- queries ----

    def section(self, name: str) -> Mapping[str, Any]:
        return self.config["experiments"][name]

    def enabled(self, name: str) -> bool:
        sections = self.config.get("experiments", {})
        return name in sections and sections[name].get("enabled", True) is not False

    @property
    def own_experiments(self) -> list[str]:
        """Enabled experiments on a problem of the user's (any name but the built-in ones), in config order."""
        return [name for name in self.config.get("experiments", {}) if name not in BUILT_IN and self.enabled(name)]

    @property
    def experiments(self) -> list[str]:
        """Enabled experiments that train runs, in config order of the families above."""
        return list(self._jobs)

    def jobs(self, experiment: str | None = None) -> list[Job]:
        names = self.experiments if experiment is None else [experiment]
        return [job for name in names for job in self._jobs_of(name).values()]

    def job(self, experiment: str, job_id: str) -> Job:
        jobs = self._jobs_of(experiment)
        if job_id not in jobs:
            raise GridError(f"experiments.{experiment} defines no job {job_id!r}; its jobs: {sorted(jobs)}")
        return jobs[job_id]

    def runs(self, experiment: str | None = None) -> list[tuple[Job, Run]]:
        return [(job, run) for job in self.jobs(experiment) for run in job.runs]

    def panels(self, experiment: str) -> list[str]:
        """A synthetic experiment's panels, in config order (one figure row each)."""
        return list(dict.fromkeys(run.keys["panel"] for _, run in self.runs(experiment)))

    def run_dirs(self, experiment: str) -> list[str]:
        return [job.run_dir(run) for job, run in self.runs(experiment)]

    def job_dirs(self, experiment: str) -> list[str]:
        return [job.directory for job in self.jobs(experiment)]

    def data_files(self) -> list[DataFile]:
        return list(self._data.values())

    def job_data(self, job: Job) -> list[DataFile]:
        """The data files ``job`` reads (its other inputs are the jobs that train runs it reads)."""
        return [self._data[path] for path in job.inputs if path in self._data]

    def run_data(self, run: Run) -> DataFile | None:
        """The problem file ``run`` trains on (whichever job trains it), or None (drawn in the job, real data)."""
        path = run.options.get("problem")
        return self._data.get(path) if isinstance(path, str) else None

    def data_file(self, path: str) -> DataFile:
        if path not in self._data:
            raise GridError(f"the config makes no data file {path!r}; it makes: {sorted(self._data)}")
        return self._data[path]

    def analysis_run_dirs(self, name: str) -> dict[str, list[str]]:
        """Task -> run directories of an analysis experiment, one per seed in seed order (the notebook's
        ``run_dirs``): where each run was trained."""
        out: dict[str, list[str]] = {}
        for job, run in self.runs(name):
            out.setdefault(run.keys["task"], []).append(run.same_as or job.run_dir(run))
        return out

    def run_identity(self, run: Run) -> str:
        """What determines a run's training, as one string: its command and options, the problem file replaced by
        the settings that draw it (a file and a draw in the job are the same problem), without where it stops
        (``tol``, ``max_outer``) and what it records (``snapshots``)."""
        options = {key: value for key, value in run.options.items() if key not in (*STOP_KEYS, "snapshots")}
        if isinstance(options.get("problem"), str) and options["problem"] in self._data:
            data = self._data[options.pop("problem")]
            options.update({key: value for key, value in data.options.items() if key != "task"})
        # a problem setting at its default is the same problem whether spelt out (the schema fills defaults) or not
        options = {key: value for key, value in options.items()
                   if value is not None and not (key in PROBLEM_EXTRAS and value == PROBLEM_EXTRAS[key])}  # fmt: skip
        return json.dumps({"command": run.command, **options}, sort_keys=True, default=str)

    def notebook_parameters(self, name: str, png: str, pdf: str, findings: str) -> dict[str, Any]:
        """The parameters of analysis ``name``'s notebook (papermill): its runs, its outputs, its title."""
        title = self.section(name).get("description", name)
        return {"run_dirs": self.analysis_run_dirs(name), "figure_png": png, "figure_pdf": pdf,
                "findings_json": findings, "title": title}  # fmt: skip

    def reach_error(self, name: str) -> float | None:
        """The recovery error of experiment ``name``'s 'reach' columns (``summary.reach_error``), if any."""
        if not self.enabled("summary"):
            return None
        return self.section("summary").get("reach_error", {}).get(name)

    def scaling_options(self, gpu: bool) -> dict[str, Any]:
        """``cdln bench --scaling`` options of the scaling section (``gpu_sizes`` when jobs use a GPU)."""
        section = self.section("scaling")
        sizes = section.get("gpu_sizes", section["sizes"]) if gpu else section["sizes"]
        keys = ("tol_sizes", "r", "r_hat", "p", "lr", "n_inner", "max_outer", "tol")
        return {
            "sizes": sizes,
            **{key: section[key] for key in keys},
            "device": self.config["device"],
            "dtypes": [self.config["dtype"]],
        }

    def _jobs_of(self, experiment: str) -> dict[str, Job]:
        if experiment not in self._jobs:
            raise GridError(f"no enabled experiment {experiment!r} trains runs; those that do: {self.experiments}")
        return self._jobs[experiment]

    def _add_data(self, data: DataFile) -> str:
        known = self._data.setdefault(data.path, data)
        if known != data:  # two sections ask for one file with different contents: a naming bug
            raise GridError(f"{data.path} is asked for with two different settings: {known} and {data}")
        return data.path

    def _seeds(self, section: Mapping[str, Any]) -> list[int]:
        return list(section.get("seeds") or self.config["seeds"])

    def _train_each_run_once(self) -> None:
        """Runs of equal settings (:meth:`run_identity`) train once. The first of the longest (lowest ``tol``,
        then largest budget) trains, with snapshots if any of them records them; the others read it as
        ``same_as`` and depend on its job: an aggregated (synthetic) run stopped at its own ``tol`` and budget
        (a prefix of the trained run's checkpoints), an analysis run only when it stops where the trained run
        does (its notebook reads the whole run)."""
        groups: dict[str, list[tuple[str, str, int]]] = {}
        for experiment, jobs in self._jobs.items():
            for job_id, job in jobs.items():
                for index, run in enumerate(job.runs):
                    if run.command == "train":
                        groups.setdefault(self.run_identity(run), []).append((experiment, job_id, index))
        for places in groups.values():
            runs = [self._jobs[e][j].runs[i] for e, j, i in places]
            left = sorted(range(len(runs)), key=lambda k: (runs[k].options["tol"], -runs[k].options["max_outer"], k))
            while len(left) > 1:  # the longest left trains; those it cannot stand for go on to the next round
                owner, candidates = left[0], left[1:]
                borrowers = [k for k in candidates if self._can_read(places[k][0], runs[k], runs[owner])]
                left = [k for k in candidates if k not in borrowers]
                if borrowers:
                    self._share(places[owner], runs[owner], [(places[k], runs[k]) for k in borrowers])
        for jobs in self._jobs.values():  # a job that trains nothing needs no problem file
            for job_id, job in jobs.items():
                if not job.trained():
                    own_data = tuple(path for path in job.inputs if path in self._data)
                    jobs[job_id] = dataclasses.replace(job, inputs=tuple(p for p in job.inputs if p not in own_data))
        self._data = {
            path: data for path, data in self._data.items()
            if any(path in job.inputs for jobs in self._jobs.values() for job in jobs.values())
            or any(path in d.inputs for d in self._data.values())
        }  # fmt: skip

    @staticmethod
    def _can_read(experiment: str, run: Run, trained: Run) -> bool:
        """Whether ``run`` can be read from ``trained`` (equal settings but for where they stop): it stops no
        later, and its experiment's reader either stops it (aggregated) or it stops where ``trained`` does."""
        mine, theirs = run.options, trained.options
        if mine["tol"] < theirs["tol"] or mine["max_outer"] > theirs["max_outer"]:
            return False
        return experiment not in ANALYSIS or all(mine[key] == theirs[key] for key in STOP_KEYS)

    def _share(self, owner: tuple[str, str, int], trained: Run, borrowers: list[tuple[tuple[str, str, int], Run]]):
        """Train ``trained`` (at ``owner``) once, with snapshots if a borrower records them; each borrower reads it
        (``same_as``) and its job depends on the trained run's job."""
        experiment, job_id, index = owner
        owner_job = self._jobs[experiment][job_id]
        if any(run.options.get("snapshots") for _, run in borrowers):
            trained = dataclasses.replace(trained, options={**trained.options, "snapshots": True})
            self._replace_run(experiment, job_id, index, trained)
        for (e, j, i), run in borrowers:
            self._replace_run(e, j, i, dataclasses.replace(run, same_as=owner_job.run_dir(trained)))
            job = self._jobs[e][j]
            if owner_job.directory not in job.inputs:
                self._jobs[e][j] = dataclasses.replace(job, inputs=(*job.inputs, owner_job.directory))

    def _replace_run(self, experiment: str, job_id: str, index: int, run: Run) -> None:
        job = self._jobs[experiment][job_id]
        runs = list(job.runs)
        runs[index] = run
        self._jobs[experiment][job_id] = dataclasses.replace(job, runs=tuple(runs))

    # ---- synthetic experiments: panels x models x seeds ----

    def sweep_points(self, experiment: str) -> list[SweepPoint]:
        """Every (factor, value) of a sweep section, with the panel whose run measures each model there."""
        reads = self._measured_in.get(experiment, {})
        return [
            dataclasses.replace(point, runs={model: reads.get((point.panel, model), point.panel) for model in models})
            for point in sweep_points(self.section(experiment), f"experiments.{experiment}")
            for models in [self.section(experiment)["models"]]
        ]

    def _synthetic_jobs(self, name: str) -> Iterable[Job]:
        section = self.section(name)
        shared = {key: section[key] for key in RUN_KEYS if key in section}
        alphas = alpha_values(section["alpha_sweep"]) if "alpha_sweep" in section else None
        panels = section["panels"] if "sweeps" not in section else sweep_panels(section, f"experiments.{name}")
        # A sweep point that leaves a model's run unchanged (the original DLN when only r_hat moves) reads
        # the run of the panel that trained it first instead of training it again.
        trained: dict[tuple[str, str], str] = {}
        measured_in = self._measured_in.setdefault(name, {})
        per_panel = bool(section.get("job_per_panel", False))
        for panel, overrides in panels.items():
            panel_models = overrides.get("model_settings", {})
            settings = {key: value for key, value in {**shared, **overrides}.items() if key != "model_settings"}
            panel_runs: list[Run] = []
            panel_inputs: list[str] = []
            for seed in self.config["seeds"]:
                data = self._synthetic_problem(settings, seed)
                # draw_in_job: each run draws its (cheap) problem itself, from the same data seed, instead
                # of reading a file that a job of its own would make (a process start-up saved per problem).
                in_job = bool(section.get("draw_in_job", False))
                problem = data.options if in_job else self._add_data(data)
                runs = []
                for model in section["models"]:
                    model_settings = {
                        **settings,
                        **section.get("model_settings", {}).get(model, {}),
                        **panel_models.get(model, {}),
                    }
                    for suffix, alpha in self._alpha_variants(section, model, model_settings, alphas):
                        options = self._train_options(model_settings, model, seed, alpha, problem)
                        if "sweeps" in section:
                            first = trained.setdefault((model + suffix, repr(sorted(options.items()))), panel)
                            if first != panel:
                                measured_in[(panel, model)] = first
                                continue
                        keys = {"experiment": name, "panel": panel, "model": model, "seed": seed}
                        where = f"experiments.{name}.panels.{panel} ({model})"
                        runs.append(Run(model + suffix, "train", options, keys, where))
                inputs = () if in_job else (problem,)
                if per_panel:  # one process for the panel's seeds: <panel>/<model>_seed<s>
                    panel_runs += [dataclasses.replace(run, name=f"{run.name}_seed{seed}") for run in runs]
                    panel_inputs += [path for path in inputs if path not in panel_inputs]
                elif runs:
                    yield Job(name, f"{panel}_seed{seed}", tuple(runs), self.root, inputs)
            if panel_runs:
                yield Job(name, panel, tuple(panel_runs), self.root, tuple(panel_inputs))

    def _own_jobs(self, name: str) -> Iterable[Job]:
        """An experiment on the user's problem (its ``module:Class`` task and problem file): each model on that one
        problem, one job per seed (the networks' init seed), panel :data:`OWN_PANEL`."""
        section = self.section(name)
        settings = {key: section[key] for key in RUN_KEYS if key in section}
        for seed in self.config["seeds"]:
            runs = []
            for model in section["models"]:
                model_settings = {**settings, **section.get("model_settings", {}).get(model, {})}
                options = self._train_options(
                    model_settings, model, seed, model_settings.get("alpha"), section["problem"]
                )
                keys = {"experiment": name, "panel": OWN_PANEL, "model": model, "seed": seed}
                runs.append(Run(model, "train", options, keys, f"experiments.{name} ({model})"))
            yield Job(name, f"{OWN_PANEL}_seed{seed}", tuple(runs), self.root, (section["problem"],))

    @staticmethod
    def _alpha_variants(
        section: Mapping[str, Any], model: str, settings: Mapping[str, Any], alphas: list[float] | None
    ) -> list[tuple[str, float | list[float] | None]]:
        """(run-name suffix, alpha) per run of ``model``: one run, one per swept alpha, or one batch."""
        if model != "cdln":
            return [("", None)]
        if alphas is None:
            return [("", settings.get("alpha"))]
        if section.get("batch_alphas", False):
            return [("_alphabatch", alphas)]
        return [(f"_alpha{fmt_number(a)}", a) for a in alphas]

    def _synthetic_problem(self, settings: Mapping[str, Any], seed: int) -> DataFile:
        task, d, r = settings["task"], settings["d"], settings["r"]
        draw = {"mf": "full", "mc": f"p{fmt_number(settings.get('p', 0))}", "ms": f"m{settings.get('m', 0)}"}[task]
        options = {"task": task, "d": d, "r": r, "p": settings.get("p"), "m": settings.get("m"), "data_seed": seed}
        if task != "mc":
            options["p"] = None
        if task != "ms":
            options["m"] = None
        # Beyond the paper's problems: only a non-default value enters the options and the file name.
        for key, default in PROBLEM_EXTRAS.items():
            if settings.get(key, default) != default and (key != "operator_dtype" or task == "ms"):
                value = options[key] = settings[key]
                draw += f"_{EXTRA_NAMES.get(key, key)}{value if isinstance(value, str) else fmt_number(value)}"
        path = f"{self.root}/data/{task}/d{d}_r{r}_{draw}_seed{seed}.pt"
        return DataFile(path, "make-problem", options, temporary=task == "ms")

    def _train_options(
        self, settings: Mapping[str, Any], model: str, seed: int, alpha: Any, problem: str | Mapping[str, Any]
    ) -> dict[str, Any]:
        """``cdln train`` options of a synthetic run: its problem is a file (whose shape and rank it reads) or,
        drawn in the job, that file's ``cdln make-problem`` options."""
        drawn = {} if isinstance(problem, str) else {k: v for k, v in problem.items() if k != "task"}
        return {
            "task": settings["task"],
            "model": model,
            "depth": settings.get("depth"),
            "eps": settings.get("eps"),
            "lr": settings["lr"],
            "n_inner": settings["n_inner"],
            "max_outer": settings["max_outer"],
            "tol": settings["tol"],
            "init_seed": seed,
            "r_hat": settings.get("r_hat") if model in COMPRESSED_MODELS else None,
            "bm_rank": settings.get("bm_rank") if model == "bm" else None,
            "bm_scale": settings.get("bm_scale") if model == "bm" else None,
            "gamma": settings.get("gamma") if model == "yaras" else None,
            "alpha": alpha,
            "dtype": self.config["dtype"],
            "device": self.config["device"],
            "problem": problem if isinstance(problem, str) else None,
            **drawn,
        }

    # ---- subspace analysis: one original-DLN run with snapshots per task ----

    def _analysis_jobs(self, name: str) -> Iterable[Job]:
        section = self.section(name)
        for task, settings in section["tasks"].items():
            yield from (self._analysis_job(name, section, task, settings, seed) for seed in self._seeds(section))

    def _analysis_job(
        self, name: str, section: Mapping[str, Any], task: str, settings: Mapping[str, Any], seed: int
    ) -> Job:
        options = {
            "task": task,
            "model": "original",
            "d": settings["d"],
            "r": settings.get("r", section["r"]),
            "p": settings.get("p"),
            "m": settings.get("m"),
            "operator_dtype": settings.get("operator_dtype") if task == "ms" else None,
            "depth": section["depth"],
            "eps": section["eps"],
            "lr": settings["lr"],
            "n_inner": settings["n_inner"],
            "max_outer": settings["max_outer"],
            "tol": settings["tol"],
            "data_seed": seed,
            "init_seed": seed,
            "device": self.config["device"],
            "dtype": self.config["dtype"],
            "snapshots": True,
        }
        keys = {"experiment": name, "task": task, "model": "original", "seed": seed}
        run = Run("original", "train", options, keys, f"experiments.{name}.tasks.{task}")
        return Job(name, f"{task}_seed{seed}", (run,), self.root)

    # ---- real data ----

    def _movielens_jobs(self, name: str) -> Iterable[Job]:
        section = self.section(name)
        archive_inputs: tuple[str, ...] = ()
        zip_path = section.get("zip_path")
        if section.get("synthetic", False):
            archive = DataFile(f"{self.root}/data/movielens/ml-100k-synthetic.zip", "movielens-synthetic", {"seed": 0})
            zip_path = self._add_data(archive)
            archive_inputs = (zip_path,)
        for seed in self._seeds(section):
            other = any(section.get(key, False) for key in ("synthetic", "accept_other_ratings"))  # a stand-in is other
            problem = DataFile(
                f"{self.root}/data/movielens/split{seed}.pt",
                "movielens-problem",
                {
                    "zip_path": zip_path,
                    "resources": RESOURCES,
                    "no_download": not section.get("download", True),
                    "accept_other_ratings": other,
                    "r": section["r"],
                    "test_fraction": section["test_fraction"],
                    "split_seed": seed,
                    "n_users": section.get("n_users"),
                    "n_items": section.get("n_items"),
                },
                inputs=archive_inputs,
            )
            path = self._add_data(problem)
            dln = {key: section[key] for key in ("depth", "eps", "lr", "n_inner", "max_outer")}
            device = {"dtype": self.config["dtype"], "device": self.config["device"]}
            dln_dtype = section.get("dtype", device["dtype"])  # AltMin keeps the global dtype
            trained = {"tol": 0.0, "init_seed": seed, **device, "dtype": dln_dtype, "problem": path}
            options = {
                "original": ("train", {"task": "mc", "model": "original", "width": section["width"], **dln, **trained}),
                "cdln": (
                    "train",
                    {
                        "task": "mc",
                        "model": "cdln",
                        "r_hat": section["r_hat"],
                        "alpha": section["alpha"],
                        **dln,
                        **trained,
                    },
                ),
                "altmin": (
                    "altmin",
                    {
                        "r": section["altmin"]["k"],
                        **{k: section["altmin"][k] for k in ("iterations", "ridge")},
                        **device,
                        "problem": path,
                    },
                ),
            }
            keys = {"experiment": name, "seed": seed}
            runs = tuple(
                Run(model, command, values, {**keys, "model": model}, f"experiments.{name}")
                for model, (command, values) in options.items()
            )
            yield Job(name, f"seed{seed}", runs, self.root, (path,))

    def _nonlinear_jobs(self, name: str) -> Iterable[Job]:
        section = self.section(name)
        protocol = section.get("protocol")
        if protocol is not None:  # a named protocol's settings replace the section's
            protocols = section.get("protocols", {})
            if protocol not in protocols:
                known = sorted(protocols)
                raise GridError(f"experiments.{name}.protocol: {protocol!r} is not in its protocols {known}")
            section = {**section, **protocols[protocol]}
        data_dir, inputs = section.get("data_dir"), ()
        if section.get("synthetic", False):
            standin = DataFile(
                f"{self.root}/data/fashion-mnist-synthetic",
                "fashion-mnist-synthetic",
                {"n_train": 2000, "n_test": 500, "seed": 0},
            )
            data_dir = self._add_data(standin)
            inputs = (data_dir,)
        for seed in self._seeds(section):
            runs = []
            for model in section["models"]:
                settings = {**section, **section.get("model_settings", {}).get(model, {})}
                options = {
                    "model": model,
                    "init_seed": seed,
                    "data_dir": data_dir,
                    "resources": RESOURCES,
                    "no_download": not section.get("download", True),
                    "device": self.config["device"],
                    **{key: settings.get(key) for key in NONLINEAR_KEYS},
                }
                keys = {"experiment": name, "model": model, "seed": seed}
                runs.append(Run(model, "nonlinear", options, keys, f"experiments.{name}"))
            yield Job(name, f"seed{seed}", tuple(runs), self.root, inputs)


# ---- the run-directory naming above, read back (tables are keyed by it) ----


@dataclass(frozen=True)
class SweepPoint:
    """One value of one swept factor, its panel, and the panel whose run measures each model there
    (``runs``: its own panel unless the same run was trained for an earlier panel)."""

    factor: str
    value: float
    panel: str
    runs: Mapping[str, str] = field(default_factory=dict)


def _sweep_overrides(section: Mapping[str, Any], factor: str, value: float, where: str) -> dict[str, Any]:
    """The run settings that put ``factor`` at ``value`` (the others at the section's shared values)."""
    if factor == "r_hat_ratio":
        r_hat = value * section["r"]
        if r_hat < 1 or abs(r_hat - round(r_hat)) > 1e-9:
            width = f"{value} x r = {r_hat} is not a width >= 1 (r = {section['r']})"
            raise GridError(f"{where}.sweeps.r_hat_ratio: {width}")
        return {"r_hat": int(round(r_hat))}
    if factor == "condition":
        return {"spectrum": "geometric", "condition": value}
    return {factor: value}


def _panel_name(factor: str, value: float) -> str:
    return f"{factor}_{fmt_number(value).replace('.', 'p').replace('-', 'm').replace('+', '')}"


def sweep_points(section: Mapping[str, Any], where: str) -> list[SweepPoint]:
    """Every (factor, value) of ``section["sweeps"]`` with its panel (``base`` where nothing changes)."""
    shared = {key: section[key] for key in RUN_KEYS if key in section}
    points = []
    for factor, values in section["sweeps"].items():
        if factor not in SWEEP_FACTORS:
            raise GridError(f"{where}.sweeps: unknown factor {factor!r}; factors: {list(SWEEP_FACTORS)}")
        for value in values:
            overrides = _sweep_overrides(section, factor, value, where)
            unchanged = all(shared.get(key, PROBLEM_EXTRAS.get(key)) == v for key, v in overrides.items())
            points.append(SweepPoint(factor, value, "base" if unchanged else _panel_name(factor, value)))
    return points


def sweep_panels(section: Mapping[str, Any], where: str) -> dict[str, dict[str, Any]]:
    """Panel -> run settings of a sweep section, ``base`` first: each point's override, then its
    ``point_settings``."""
    panels: dict[str, dict[str, Any]] = {"base": {}}  # first: the points that leave a model's run unchanged read it
    for point in sweep_points(section, where):
        base = point.panel == "base"
        panels[point.panel] = {} if base else _sweep_overrides(section, point.factor, point.value, where)
    extra = section.get("point_settings", {})
    unknown = sorted(set(extra) - set(panels))
    if unknown:
        raise GridError(f"{where}.point_settings: unknown panel(s) {unknown}; the sweep's panels: {list(panels)}")
    return {panel: {**overrides, **extra.get(panel, {})} for panel, overrides in panels.items()}


_SYNTHETIC_JOB = re.compile(r"^(?P<panel>.+)_seed(?P<seed>\d+)$")
_SYNTHETIC_RUN = re.compile(r"^(?P<model>[a-z]+)(?:_alpha(?P<alpha>[0-9.e+-]+|batch))?(?:_seed(?P<seed>\d+))?$")


def synthetic_run_keys(run_dir: str | Path) -> dict[str, Any]:
    """``.../runs/<experiment>/<panel>_seed<seed>/<model>[_alpha<a>|_alphabatch]`` (or, for a job per panel,
    ``.../<panel>/<model>[...]_seed<seed>``) -> experiment, panel, panel_id (``<panel>_alpha<a>`` for a swept
    alpha, ``<panel>_alphabatch`` for a batch), model, seed."""
    run_dir = Path(run_dir)
    job, run = _SYNTHETIC_JOB.match(run_dir.parent.name), _SYNTHETIC_RUN.match(run_dir.name)
    if run is not None and run["seed"] is not None:
        panel, seed = run_dir.parent.name, run["seed"]
    elif job is not None and run is not None:
        panel, seed = job["panel"], job["seed"]
    else:
        raise ValueError(f"{run_dir}: not a synthetic run directory (<panel>_seed<seed>/<model>[_alpha<a>])")
    return {
        "experiment": run_dir.parent.parent.name,
        "panel": panel,
        "panel_id": panel if run["alpha"] is None else f"{panel}_alpha{run['alpha']}",
        "model": run["model"],
        "seed": int(seed),
    }


def real_data_seed(run_dir: str | Path) -> int:
    """The seed of a real-data run, ``.../runs/<experiment>/seed<seed>/<model>``."""
    match = re.fullmatch(r"seed(\d+)", Path(run_dir).parent.name)
    if match is None:
        raise ValueError(f"{run_dir}: not a real-data run directory (seed<seed>/<model>)")
    return int(match[1])
