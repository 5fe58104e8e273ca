"""Helpers shared by all the .smk files (paths, tool commands, config access, target registry)."""

import os
import shlex
import sys
from pathlib import Path

import yaml

# Every output of one config lives under its own root, so switching configs never mixes results.
ROOT = f"results/{config['output_root']}"

# Shell commands call `python3` by name. The directory of the interpreter running Snakemake goes first
# on PATH, so an unactivated venv still works (and --use-conda jobs, whose env is activated inside the
# job, get the conda env's python3); src/ goes on PYTHONPATH, so `python3 -m cdln` runs this checkout's
# package under any interpreter that has its dependencies (e.g. the conda env in envs/).
os.environ.update(
    PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    PYTHONPATH=os.pathsep.join(p for p in [str(Path(workflow.basedir) / "src"), os.environ.get("PYTHONPATH", "")] if p),
)
PYTHON = "python3"
CDLN = "python3 -m cdln"
PAPERMILL = "python3 -m papermill"
# conda users: `snakemake --use-conda` (path relative to workflow/rules/, where every rule file lives)
CONDA_ENV = "../../envs/cdln.yaml"

_FINAL_TARGETS: dict[str, list[str]] = {}


def experiment(name: str) -> dict:
    """The config section of experiment ``name`` (validated by the schema)."""
    return config["experiments"][name]


def experiment_enabled(name: str) -> bool:
    return name in config["experiments"] and config["experiments"][name].get("enabled", True)


def register_target(name: str, files: list[str]) -> None:
    """Add a figure/table's final files to ``rule all`` under the named target ``name``."""
    _FINAL_TARGETS.setdefault(name, []).extend(files)


def final_targets(name: str) -> list[str]:
    return _FINAL_TARGETS.get(name, [])


def all_final_targets() -> list[str]:
    return [f for files in _FINAL_TARGETS.values() for f in files]


def cli_flags(options: dict) -> str:
    """``{"lr": 10, "init_seed": [0, 1]}`` -> ``--lr 10 --init-seed 0 1`` (None values dropped)."""
    parts = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = f"--{key.replace('_', '-')}"
        if value is True:
            parts.append(flag)
        elif isinstance(value, (list, tuple)):
            values = " ".join(shlex.quote(str(v)) for v in value)
            parts.append(f"{flag} {values}")
        else:
            parts.append(f"{flag} {shlex.quote(str(value))}")
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------
# Synthetic experiments (mf, mc, ms, ablation_alpha, ablation_depth): runs, problem files, flags.
# ---------------------------------------------------------------------------------------------

SYNTHETIC = ("mf", "mc", "ms", "ablation_alpha", "ablation_depth")
# Keys of an experiment section that are training settings (shared, overridden per panel).
RUN_KEYS = ("task", "d", "r", "p", "m", "depth", "r_hat", "bm_rank", "eps", "lr", "alpha", "n_inner", "max_outer", "tol")
# Scripts run as `{PYTHON} <path>` from the working directory (the repository root).
SCRIPTS = "workflow/scripts"


def uses_gpu() -> int:
    """1 when training jobs will claim a GPU (device cuda, or auto with CUDA visible), else 0.

    ``auto`` is resolved from CUDA_VISIBLE_DEVICES / nvidia-smi, not by importing torch, so that
    parsing the workflow stays fast; set ``device: cuda`` to be explicit (e.g. on SLURM)."""
    device = config["device"]
    if device.startswith("cuda"):
        return 1
    if device == "auto":
        import os
        import shutil

        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            return int(visible.strip() not in ("", "-1"))
        return int(shutil.which("nvidia-smi") is not None)
    return 0


def alpha_values(sweep: dict) -> list[float]:
    """start, start + step, ..., stop (inclusive, rounded to 6 decimals to avoid float drift)."""
    count = int(round((sweep["stop"] - sweep["start"]) / sweep["step"])) + 1
    return [round(sweep["start"] + i * sweep["step"], 6) for i in range(count)]


def fmt_number(value: float) -> str:
    """A number as it appears in file names: 0.3 -> 0.3, 2.0 -> 2, 1e-12 -> 1e-12."""
    return f"{value:g}"


def synthetic_runs(name: str) -> list[dict]:
    """Every run of synthetic experiment ``name``: dicts with experiment, panel, model, seed,
    run_id (= ``<panel>/<model>_seed<seed>``) and the resolved training settings."""
    section = experiment(name)
    shared = {k: section[k] for k in RUN_KEYS if k in section}
    alphas = alpha_values(section["alpha_sweep"]) if "alpha_sweep" in section else None
    runs = []
    for panel, overrides in section["panels"].items():
        settings = {**shared, **overrides}
        for model in section["models"]:
            if alphas is not None and model == "cdln" and section.get("batch_alphas", False):
                # One job trains every alpha as a batch (shared wall time: see README, Batched sweeps).
                variants = [(f"{panel}_alphabatch", {**settings, "alpha": alphas})]
            elif alphas is not None and model == "cdln":
                variants = [(f"{panel}_alpha{fmt_number(a)}", {**settings, "alpha": a}) for a in alphas]
            else:
                variants = [(panel, settings)]
            for panel_id, values in variants:
                for seed in config["seeds"]:
                    runs.append(
                        {
                            "experiment": name,
                            "panel": panel_id,
                            "model": model,
                            "seed": seed,
                            "run_id": f"{panel_id}/{model}_seed{seed}",
                            "settings": values,
                        }
                    )
    return runs


def find_run(experiment_name: str, panel: str, model: str, seed: int | str) -> dict:
    for run in synthetic_runs(experiment_name):
        if run["panel"] == panel and run["model"] == model and run["seed"] == int(seed):
            return run
    raise ValueError(f"no run {experiment_name}/{panel}/{model}_seed{seed} in the config")


def problem_file(settings: dict, seed: int) -> str:
    """The problem file a run trains on, keyed by every parameter of the draw and the data seed."""
    task, d, r = settings["task"], settings["d"], settings["r"]
    extra = {"mf": "full", "mc": f"p{fmt_number(settings.get('p', 0))}", "ms": f"m{settings.get('m', 0)}"}[task]
    return f"{ROOT}/data/{task}/d{d}_r{r}_{extra}_seed{seed}.pt"


def run_dir(run: dict) -> str:
    return f"{ROOT}/runs/{run['experiment']}/{run['run_id']}"


def run_dirs(name: str) -> list[str]:
    return [run_dir(run) for run in synthetic_runs(name)]


def train_flags(run: dict) -> str:
    """Explicit ``cdln train`` flags of one run (everything but --problem/--out/--threads)."""
    s = run["settings"]
    model = run["model"]
    options = {
        "task": s["task"],
        "model": model,
        "depth": s.get("depth"),
        "eps": s.get("eps"),
        "lr": s["lr"],
        "n_inner": s["n_inner"],
        "max_outer": s["max_outer"],
        "tol": s["tol"],
        "init_seed": run["seed"],
        "r_hat": s.get("r_hat") if model in ("cdln", "narrow", "yaras") else None,
        "bm_rank": s.get("bm_rank") if model == "bm" else None,
        "alpha": s.get("alpha") if model == "cdln" else None,
        "dtype": config["dtype"],
        "device": config["device"],
    }
    return cli_flags(options)


def reach_error(name: str) -> float | None:
    """The recovery error for the 'reach' columns of experiment ``name`` (config: summary.reach_error)."""
    if "summary" not in config["experiments"]:
        return None
    return config["experiments"]["summary"].get("reach_error", {}).get(name)


def figure_files(name: str) -> list[str]:
    """PNG and PDF of figure ``name`` under ROOT/figures/."""
    return [f"{ROOT}/figures/{name}.png", f"{ROOT}/figures/{name}.pdf"]


def figure_title(name: str) -> str:
    """Figure title: the experiment's description and the config (output root) that made it."""
    return f"{experiment(name)['description']}  [config: {config['output_root']}]"


# ---- subspace analysis (analysis.smk) ----

ANALYSIS = ("incremental", "invariance", "alignment")
NOTEBOOKS = "notebooks"


def analysis_tasks(name: str) -> list[str]:
    return list(experiment(name)["tasks"])


def analysis_run_dir(name: str, task: str) -> str:
    return f"{ROOT}/runs/{name}/{task}_seed{experiment(name).get('seed', 0)}"


def analysis_train_flags(name: str, task: str) -> str:
    """``cdln train`` flags of one analysis run, from the experiment's section of the config."""
    section = experiment(name)
    settings = section["tasks"][task]
    seed = section.get("seed", 0)
    return cli_flags(
        {
            "task": task,
            "model": "original",
            "d": settings["d"],
            "r": settings.get("r", section["r"]),
            "p": settings.get("p"),
            "m": settings.get("m"),
            "depth": section["depth"],
            "eps": section["eps"],
            "lr": settings["lr"],
            "n_inner": settings["n_inner"],
            "max_outer": settings["max_outer"],
            "tol": settings["tol"],
            "data_seed": seed,
            "init_seed": seed,
            "device": config["device"],
            "dtype": config["dtype"],
            "snapshots": True,
        }
    )


def analysis_outputs(name: str) -> dict[str, str]:
    return {
        "png": f"{ROOT}/figures/fig_{name}.png",
        "pdf": f"{ROOT}/figures/fig_{name}.pdf",
        "findings": f"{ROOT}/tables/{name}_findings.json",
        "notebook": f"{ROOT}/notebooks/{name}.ipynb",
    }


def notebook_parameters(name: str, outputs) -> str:
    """The notebook's parameters as one shell-quoted YAML document for ``papermill -y``."""
    values = {
        "run_dirs": {task: analysis_run_dir(name, task) for task in analysis_tasks(name)},
        "figure_png": outputs.png,
        "figure_pdf": outputs.pdf,
        "findings_json": outputs.findings,
        "title": experiment(name).get("description", name),
    }
    return shlex.quote(yaml.safe_dump(values, default_flow_style=True, sort_keys=False, width=10**6).strip())


# ---- real data in the summary table (aggregate.smk) ----

def real_data_present(name: str) -> bool:
    """Whether experiment ``name``'s data set is on disk now (or made synthetically by the pipeline).

    The summary table only waits for real-data tables whose data is present, so a missing
    MovieLens archive never blocks it (the real-data rule itself still fails loudly).
    """
    section = experiment(name)
    if section.get("synthetic", False):
        return True
    if name == "movielens":
        return any(path and Path(path).exists() for path in (section.get("zip_path"), "resources/ml-100k.zip"))
    from cdln.data import DataUnavailableError
    from cdln.data.fashion_mnist import locate_fashion_mnist

    try:
        locate_fashion_mnist(section.get("data_dir"), "resources", allow_download=False)
    except DataUnavailableError:
        return False
    return True


def real_data_figure(name: str, path: str, **report_args):
    """``path`` marked for the report while experiment ``name``'s data is present (or the figure exists).

    Without the data the figure is left out of ``snakemake --report`` instead of failing the report.
    """
    if real_data_present(name) or Path(path).exists():
        return report(path, **report_args)
    return path


def summary_real_data_tables() -> list[str]:
    names = experiment("summary").get("real_data", [])
    return [f"{ROOT}/tables/{name}.md" for name in names if experiment_enabled(name) and real_data_present(name)]
