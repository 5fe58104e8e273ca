"""Scaling figure: seconds per iteration and seconds to tol against d, original DLN vs C-DLN, with
the matmul roofline (``cdln bench --scaling``), so O(L d^3) against O(d^2 r_hat) growth is visible.

The measurement is one job that times its own runs: run it with no other jobs beside it when the
numbers matter (``snakemake fig_scaling --cores 1``); per-run seconds always come from unbatched runs.
"""


if experiment_enabled("scaling"):
    register_target("fig_scaling", [f"{ROOT}/figures/fig_scaling.png", f"{ROOT}/figures/fig_scaling.pdf"])


rule fig_scaling:
    input:
        final_targets("fig_scaling"),


rule scaling_measure:
    """Time one GD iteration (engine and roofline) at every d, and train to tol at ``tol_sizes``."""
    output:
        f"{ROOT}/tables/scaling.csv",
    log:
        f"{ROOT}/logs/scaling/scaling_measure.log",
    benchmark:
        f"{ROOT}/benchmarks/scaling/scaling_measure.tsv"
    params:
        # On a GPU the sizes go further (gpu_sizes); one bench call covers every d.
        flags=lambda wc: cli_flags(
            {
                "sizes": experiment("scaling").get("gpu_sizes" if uses_gpu() else "sizes", experiment("scaling")["sizes"]),
                **{k: experiment("scaling")[k] for k in ("tol_sizes", "r", "r_hat", "p", "lr", "n_inner", "max_outer", "tol")},
                "device": config["device"],
                "dtypes": [config["dtype"]],
            }
        ),
    threads: config["threads_per_job"]
    resources:
        gpu=uses_gpu(),
    conda:
        CONDA_ENV
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} "
        "python3 -m cdln bench --scaling {params.flags} --threads {threads} --out {output} > {log} 2>&1"


rule scaling_plot:
    """Seconds per iteration and seconds to tol against d (log-log), roofline dashed."""
    input:
        table=f"{ROOT}/tables/scaling.csv",
        script=f"{SCRIPTS}/scaling_plot.py",
        style=f"{SCRIPTS}/style.py",
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
        flags=lambda wc: cli_flags(
            {"title": f"{experiment('scaling')['description']}  [config: {config['output_root']}]"}
        ),
    threads: 1
    conda:
        CONDA_ENV
    shell:
        "python3 {input.script} --table {input.table} --png {output.png} --pdf {output.pdf} {params.flags} "
        "> {log} 2>&1"
