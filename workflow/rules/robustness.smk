"""The robustness figure (ours, not the paper's): the C-DLN against the original DLN one factor at a time
away from the mc setting. Its runs train and aggregate like every synthetic experiment's (experiment
``robustness``: train.smk, aggregate.smk); this file makes the figure's table and the figure."""

import dataclasses
import json
import shlex

if experiment_enabled("robustness"):

    rule robustness_table:
        """Per sweep point, model and seed: final and initial error, budget hit, iterations/seconds to the level."""
        input:
            runs=f"{ROOT}/tables/robustness_runs.csv",
            curves=f"{ROOT}/tables/robustness_curves.csv",
        output:
            f"{ROOT}/tables/robustness.csv",
        log:
            f"{ROOT}/logs/aggregate/robustness_table.log",
        params:
            points=shlex.quote(json.dumps([dataclasses.asdict(p) for p in GRID.sweep_points("robustness")])),
            level=experiment("robustness")["level"],
        threads: 1
        conda:
            CONDA_ENV
        shell:
            "python3 -m cdln robustness-table --runs {input.runs} --curves {input.curves} --points {params.points} "
            "--level {params.level} --out {output} > {log} 2>&1"

    rule plot_robustness:
        """Final errors of both networks and original/C-DLN ratios to the level, one column per factor."""
        input:
            table=f"{ROOT}/tables/robustness.csv",
            code=[f"{PLOTTING}/robustness.py", STYLE],
        output:
            png=report(
                f"{ROOT}/figures/fig_robustness.png",
                caption="../report/fig_robustness.rst",
                category="Beyond the paper",
                labels={"figure": "fig_robustness"},
            ),
            pdf=f"{ROOT}/figures/fig_robustness.pdf",
        log:
            f"{ROOT}/logs/figures/fig_robustness.log",
        params:
            title=shlex.quote(figure_title("robustness")),
        threads: 1
        conda:
            CONDA_ENV
        shell:
            "python3 -m cdln plot robustness --table {input.table} --out {output.png} --pdf {output.pdf} "
            "--title {params.title} > {log} 2>&1"


    rule fig_robustness:
        input:
            target_files("fig_robustness"),
