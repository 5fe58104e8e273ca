"""Subspace analysis of the original DLN: incremental learning, invariant subspaces, alignment.

One original-DLN run per (experiment, task) with spectral snapshots (jobs of the grid, trained by
rule run_job: ``cdln train --snapshots`` writes snapshots.npz: spectra, alignments and subspace
angles, never full weights), then one papermill notebook per experiment that reads the run records,
draws the figure and states the findings (also written as JSON for the tests). The executed
notebooks are outputs under ROOT/notebooks/.
"""

rule analysis_notebook:
    """Execute one analysis notebook with papermill (kernel python3 = this interpreter's ipykernel)."""
    input:
        jobs=lambda wc: GRID.job_dirs(wc.analysis),
        notebook="notebooks/{analysis}.ipynb",
        style=STYLE,
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
        parameters=lambda wc, output: notebook_parameters(wc.analysis, output),
    threads: 1
    conda:
        CONDA_ENV
    shell:
        # --cwd: the notebook resolves paths against the repository root; MPLBACKEND: no display.
        "OMP_NUM_THREADS=1 MPLBACKEND=Agg python3 -m papermill {input.notebook} {output.notebook} -k python3 --cwd . "
        "--no-progress-bar -y {params.parameters} > {log} 2>&1"




rule fig_incremental:
    input:
        target_files("fig_incremental"),


rule fig_invariance:
    input:
        target_files("fig_invariance"),


rule fig_alignment:
    input:
        target_files("fig_alignment"),
