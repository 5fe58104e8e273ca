"""Subspace analysis of the original DLN: incremental learning, invariant subspaces, alignment.

One original-DLN run per (experiment, task) with spectral snapshots (``cdln train --snapshots``
writes snapshots.npz: spectra, alignments and subspace angles, never full weights), then one
papermill notebook per experiment that reads the run records, draws the figure and states the
findings (also written as JSON for the tests). The executed notebooks are outputs under
ROOT/notebooks/.
"""

rule analysis_train:
    """Train the original DLN on one task with spectral snapshots at every checkpoint."""
    output:
        directory(f"{ROOT}/runs/{{analysis}}/{{task}}_seed{{seed}}"),
    log:
        f"{ROOT}/logs/train/{{analysis}}/{{task}}_seed{{seed}}.log",
    benchmark:
        f"{ROOT}/benchmarks/train/{{analysis}}/{{task}}_seed{{seed}}.tsv"
    wildcard_constraints:
        analysis="|".join(ANALYSIS),
        task="mf|mc|ms",
        seed=r"\d+",
    params:
        cdln=CDLN,
        flags=lambda wc: analysis_train_flags(wc.analysis, wc.task),
    threads: config["threads_per_job"]
    resources:
        gpu=uses_gpu(),
    conda:
        CONDA_ENV
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} "
        "{params.cdln} train {params.flags} --threads {threads} --progress-every 30 --out {output} > {log} 2>&1"


rule analysis_notebook:
    """Execute one analysis notebook with papermill (kernel python3 = this interpreter's ipykernel)."""
    input:
        runs=lambda wc: [analysis_run_dir(wc.analysis, task) for task in analysis_tasks(wc.analysis)],
        notebook=f"{NOTEBOOKS}/{{analysis}}.ipynb",
        style=f"{SCRIPTS}/style.py",
    output:
        png=report(
            f"{ROOT}/figures/fig_{{analysis}}.png",
            caption="../report/fig_analysis.rst",
            category="Subspace analysis",
            labels={"figure": "fig_{analysis}"},
        ),
        pdf=f"{ROOT}/figures/fig_{{analysis}}.pdf",
        findings=f"{ROOT}/tables/{{analysis}}_findings.json",
        notebook=f"{ROOT}/notebooks/{{analysis}}.ipynb",
    log:
        f"{ROOT}/logs/notebooks/{{analysis}}.log",
    wildcard_constraints:
        analysis="|".join(ANALYSIS),
    params:
        papermill=PAPERMILL,
        parameters=lambda wc, output: notebook_parameters(wc.analysis, output),
    threads: 1
    conda:
        CONDA_ENV
    shell:
        # --cwd: the notebook resolves paths against the repository root; MPLBACKEND: no display.
        "OMP_NUM_THREADS=1 MPLBACKEND=Agg {params.papermill} {input.notebook} {output.notebook} -k python3 --cwd . "
        "--no-progress-bar -y {params.parameters} > {log} 2>&1"


for _name in ANALYSIS:
    if experiment_enabled(_name):
        _outputs = analysis_outputs(_name)
        register_target(f"fig_{_name}", [_outputs["png"], _outputs["pdf"], _outputs["findings"], _outputs["notebook"]])


rule fig_incremental:
    input:
        final_targets("fig_incremental"),


rule fig_invariance:
    input:
        final_targets("fig_invariance"),


rule fig_alignment:
    input:
        final_targets("fig_alignment"),
