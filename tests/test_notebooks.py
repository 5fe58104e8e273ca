"""The analysis notebooks: stored clean with one parameters cell, and their findings on the CI grid.

The findings tests train the reduced grid's analysis jobs (config/ci.yaml, seconds) in process and
check the paper's claims with the same package functions the notebooks call; the slow test
executes each notebook with papermill on such runs, as the pipeline does.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import nbformat
import pytest
import yaml
from conftest import run_experiment

from cdln.analysis import alignment_findings, incremental_findings, invariance_findings
from cdln.pipeline.grid import Grid
from cdln.records import read_snapshots

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("incremental", "invariance", "alignment")
# What the pipeline injects (papermill -y, workflow/rules/common.smk): the notebooks declare exactly these.
PARAMETERS = {"run_dirs", "figure_png", "figure_pdf", "findings_json", "title"}


def load_notebook(name: str) -> nbformat.NotebookNode:
    return nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stored_without_outputs(name):
    nb = load_notebook(name)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, f"{name}.ipynb has no code"
    for cell in code:
        assert cell.outputs == [], f"{name}.ipynb stores outputs; clear them before committing"
        assert cell.execution_count is None, f"{name}.ipynb stores execution counts"
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_has_one_parameters_cell(name):
    nb = load_notebook(name)
    tagged = [cell for cell in nb.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{name}.ipynb needs exactly one cell tagged 'parameters'"
    assert tagged[0].cell_type == "code"
    tree = ast.parse(tagged[0].source)
    names = {target.id for node in tree.body if isinstance(node, ast.Assign) for target in node.targets}
    assert names == PARAMETERS
    assert all(isinstance(node, ast.Assign) for node in tree.body), "only assignments in the parameters cell"
    defaults = {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body}
    assert defaults["figure_png"] == f"results/paper/figures/fig_{name}.png"
    assert set(defaults["run_dirs"]) <= {"mf", "mc", "ms"}


@pytest.fixture(scope="module")
def ci_runs(tmp_path_factory) -> dict[str, dict[str, list[Path]]]:
    """Every analysis job of the reduced grid (config/ci.yaml, about a second each), run as the pipeline
    runs it, in a temporary directory: experiment -> task -> run directory per seed."""
    root = tmp_path_factory.mktemp("ci_analysis")
    config = yaml.safe_load((REPO / "config" / "ci.yaml").read_text())
    runs: dict[str, dict[str, list[Path]]] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        for name in NOTEBOOKS:
            run_experiment(config, name)
            runs[name] = {
                task: [root / path for path in paths] for task, paths in Grid(config).analysis_run_dirs(name).items()
            }
    assert set(runs["incremental"]) == {"mf", "mc", "ms"}
    assert all(len(paths) == len(config["seeds"]) for tasks in runs.values() for paths in tasks.values())
    return runs


def rank_of(run_dir: Path) -> int:
    return json.loads((run_dir / "record.json").read_text())["config"]["r"]


def test_ci_incremental_learning(ci_runs):
    """On every seed: exactly r values are learned, largest first (in distinct checkpoints), their vectors aligned."""
    for task, run_dir in [(task, path) for task, paths in ci_runs["incremental"].items() for path in paths]:
        r = rank_of(run_dir)
        f = incremental_findings(read_snapshots(run_dir), r)
        assert f["n_learned"] == r and f["learned_are_leading"], (task, f)
        assert f["learned_in_decreasing_order"] and f["n_distinct_learning_times"] == r, (task, f["half_times"])
        assert f["learned_one_at_a_time"] and f["n_grown"] >= r, (task, f["half_times"])
        assert f["min_final_alignment_learned"] > 0.999, task
        assert f["max_final_alignment_unlearned"] < 1e-3, task


def test_ci_invariant_subspaces(ci_runs):
    """MF: the middle subspaces stay put (to rounding) while the top-r ones rotate; in every task
    the layers' change ends within a 2r-dimensional subspace up to a small remainder."""
    mf_run = ci_runs["invariance"]["mf"][0]
    mf = invariance_findings(read_snapshots(mf_run), rank_of(mf_run))
    assert mf["max_middle_angle"] < 1e-8
    assert mf["min_final_top_angle"] > 0.1
    assert mf["max_n_moved_svals"] <= 2 * mf["rank"] and mf["max_n_moved_middle_svals"] == 0
    assert mf["max_change_outside_2r_vs_initial"] < 1e-6
    for task, run_dir in [(task, paths[0]) for task, paths in ci_runs["invariance"].items()]:
        f = invariance_findings(read_snapshots(run_dir), rank_of(run_dir))
        assert f["max_final_change_leakage"] < 0.02, (task, f["max_final_change_leakage"])


def test_ci_outer_layers_align_before_convergence(ci_runs):
    for task, run_dir in [(task, path) for task, paths in ci_runs["alignment"].items() for path in paths]:
        f = alignment_findings(read_snapshots(run_dir))
        record = json.loads((run_dir / "record.json").read_text())
        assert record["members"][0]["converged"], task
        for key in ("top_left_last", "top_right_first"):
            assert f[key]["final"] > 0.999, (task, key)
            assert f[key]["initial"] < 0.9, (task, key)
            assert f[key]["iteration_0.99"] < f["last_iteration"], (task, key)


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes_with_papermill(name, ci_runs, tmp_path):
    papermill = pytest.importorskip("papermill")
    parameters = {
        "run_dirs": {task: [str(path) for path in paths] for task, paths in ci_runs[name].items()},
        "figure_png": str(tmp_path / "fig.png"),
        "figure_pdf": str(tmp_path / "fig.pdf"),
        "findings_json": str(tmp_path / "findings.json"),
        "title": name,
    }
    executed = tmp_path / f"{name}.ipynb"
    papermill.execute_notebook(
        str(REPO / "notebooks" / f"{name}.ipynb"),
        str(executed),
        parameters=parameters,
        kernel_name="python3",
        cwd=str(REPO),
        progress_bar=False,
    )
    assert (tmp_path / "fig.png").stat().st_size > 10_000 and (tmp_path / "fig.pdf").is_file()
    findings = json.loads((tmp_path / "findings.json").read_text())
    assert set(findings) == set(ci_runs[name])
    for task, paths in ci_runs[name].items():  # every seed's findings, in seed order
        assert findings[task]["seeds"] == [int(path.parent.name.split("_seed")[1]) for path in paths]
        assert len(findings[task]["by_seed"]) == len(paths)
    outputs = [out for cell in nbformat.read(executed, as_version=4).cells for out in cell.get("outputs", [])]
    assert any("text/markdown" in out.get("data", {}) for out in outputs), "the findings cell rendered nothing"
