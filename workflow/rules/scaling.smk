"""Scaling figure: seconds per iteration and seconds to tol against d, original DLN vs C-DLN, with
a lower bound (the step's FLOPs at the peak GEMM rate; ``cdln bench --scaling``), so O(L d^3) against
O(d^2 r_hat) growth is visible.

The measurement is one job that times its own runs: run it with no other jobs beside it when the
numbers matter (``snakemake fig_scaling --cores 1``); per-run seconds always come from unbatched runs.
"""


rule fig_scaling:
    input:
        target_files("fig_scaling"),


rule scaling_measure:
    """Time one GD iteration (as whole runs do, and its bound) at every d, and train to tol at ``tol_sizes``."""
    output:
        f"{ROOT}/tables/scaling.csv",
    log:
        f"{ROOT}/logs/scaling/scaling_measure.log",
    benchmark:
        f"{ROOT}/benchmarks/scaling/scaling_measure.tsv"
    params:
        # On a GPU the sizes go further (gpu_sizes); one bench call covers every d.
        flags=lambda wc: cli_flags(GRID.scaling_options(gpu=bool(uses_gpu()))),
    threads: config["threads_per_job"]
    resources:
        gpu=uses_gpu,
    conda:
        CONDA_ENV
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} "
        "python3 -m cdln bench --scaling {params.flags} --threads {threads} --out {output} > {log} 2>&1"


rule plot_scaling:
    """Seconds per iteration and seconds to tol against d (log-log), the FLOP bound dashed."""
    input:
        table=f"{ROOT}/tables/scaling.csv",
        code=[f"{PLOTTING}/scaling.py", STYLE],
    output:
        png=report(
            f"{ROOT}/figures/fig_scaling.png",
            caption="../report/fig_scaling.rst",
            category="Performance",
            labels={"figure": "fig_scaling"},
        ),
        pdf=f"{ROOT}/figures/fig_scaling.pdf",
    log:
        f"{ROOT}/logs/figures/fig_scaling.log",
    params:
        flags=lambda wc: cli_flags({"title": figure_title("scaling")}),
    threads: 1
    conda:
        CONDA_ENV
    shell:
        "python3 -m cdln plot scaling --table {input.table} --out {output.png} --pdf {output.pdf} {params.flags} "
        "> {log} 2>&1"
