"""Figures of the synthetic experiments: PNG + PDF under ROOT/figures/, one plot rule per figure kind.

A figure rule depends on its table, its plotting module and the shared style, so restyling reruns
only the plot rules (the tables and runs stay up to date).
"""

ERROR_COLUMNS = ["recovery_error:iteration", "recovery_error:seconds"]  # an experiment on a problem of one's own
# figure target -> (experiment, columns of the curves figure: <error>:<x axis>)
CURVE_FIGURES = {
    "fig_mf": ("mf", ["recovery_error:iteration", "recovery_error:seconds"]),
    "fig_mc": ("mc", ["recovery_error:iteration", "recovery_error:seconds"]),
    "fig_ms": ("ms", ["recovery_error:iteration", "recovery_error:seconds"]),
    "fig_ablation_depth": (
        "ablation_depth",
        ["train_loss:iteration", "recovery_error:iteration", "recovery_error:seconds"],
    ),
    "fig_baselines": ("baselines", ["recovery_error:iteration", "recovery_error:seconds"]),
}


rule plot_error_curves:
    """Error vs iterations and vs seconds, one row per panel (mean over seeds with a min-max band)."""
    input:
        table=f"{ROOT}/tables/{{experiment}}_curves.csv",
        code=[f"{PLOTTING}/error_curves.py", STYLE],
    output:
        png=report(
            f"{ROOT}/figures/fig_{{experiment}}.png",
            caption="../report/fig_error_curves.rst",
            category="Synthetic experiments",
            labels={"figure": "fig_{experiment}"},
        ),
        pdf=f"{ROOT}/figures/fig_{{experiment}}.pdf",
    log:
        f"{ROOT}/logs/figures/fig_{{experiment}}.log",
    wildcard_constraints:
        experiment="|".join([*(name.removeprefix("fig_") for name in CURVE_FIGURES), *GRID.own_experiments]),
    params:
        flags=lambda wc: cli_flags(
            {
                "panels": GRID.panels(wc.experiment),
                "columns": CURVE_FIGURES.get(f"fig_{wc.experiment}", (None, ERROR_COLUMNS))[1],
                "title": figure_title(wc.experiment),
            }
        ),
    threads: 1
    conda:
        CONDA_ENV
    shell:
        "python3 -m cdln plot error-curves --table {input.table} --out {output.png} --pdf {output.pdf} {params.flags} "
        "> {log} 2>&1"


rule plot_ablation_alpha:
    """C-DLN iterations and seconds to tol against alpha; the original DLN as the reference line."""
    input:
        table=f"{ROOT}/tables/ablation_alpha_runs.csv",
        code=[f"{PLOTTING}/ablation_alpha.py", STYLE],
    output:
        png=report(
            f"{ROOT}/figures/fig_ablation_alpha.png",
            caption="../report/fig_ablation_alpha.rst",
            category="Synthetic experiments",
            labels={"figure": "fig_ablation_alpha"},
        ),
        pdf=f"{ROOT}/figures/fig_ablation_alpha.pdf",
    log:
        f"{ROOT}/logs/figures/fig_ablation_alpha.log",
    params:
        flags=lambda wc: cli_flags(
            {"panels": GRID.panels("ablation_alpha")[:1], "title": figure_title("ablation_alpha")}
        ),
    threads: 1
    conda:
        CONDA_ENV
    shell:
        "python3 -m cdln plot ablation-alpha --table {input.table} --out {output.png} --pdf {output.pdf} "
        "{params.flags} > {log} 2>&1"




rule fig_mf:
    input:
        target_files("fig_mf"),


rule fig_mc:
    input:
        target_files("fig_mc"),


rule fig_ms:
    input:
        target_files("fig_ms"),


rule fig_ablation_alpha:
    input:
        target_files("fig_ablation_alpha"),


rule fig_ablation_depth:
    input:
        target_files("fig_ablation_depth"),


rule fig_baselines:
    input:
        target_files("fig_baselines"),


for _own in GRID.own_experiments:  # an experiment on a problem of one's own: its figure and its claims

    rule:
        name:
            f"fig_{_own}"
        input:
            target_files(f"fig_{_own}"),
