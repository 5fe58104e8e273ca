"""Aggregation: job directories -> one tidy table per figure (ROOT/tables/*.csv), and the summary table."""


rule aggregate_synthetic:
    """Curves of every run of one synthetic experiment (tidy) and one row per run."""
    input:
        lambda wc: GRID.job_dirs(wc.experiment),
    output:
        curves=f"{ROOT}/tables/{{experiment}}_curves.csv",
        runs=f"{ROOT}/tables/{{experiment}}_runs.csv",
    log:
        f"{ROOT}/logs/aggregate/{{experiment}}.log",
    wildcard_constraints:
        experiment="|".join(CURVE_EXPERIMENTS),
    params:
        flags=lambda wc: cli_flags({"reach_error": GRID.reach_error(wc.experiment)}),
    threads: 1
    conda:
        CONDA_ENV
    shell:
        "python3 -m cdln aggregate synthetic --curves {output.curves} --table {output.runs} {params.flags} {input} > {log} 2>&1"


if experiment_enabled("summary"):

    rule summary_table:
        """Per synthetic configuration: parameters, iterations/seconds to tol, final errors, speed-up."""
        input:
            runs=[f"{ROOT}/tables/{name}_runs.csv" for name in experiment("summary")["experiments"]],
            real_data=TARGETS.summary_real_data_tables(experiment("summary").get("real_data", [])),
        output:
            csv=report(
                f"{ROOT}/tables/summary.csv",
                caption="../report/summary.rst",
                category="Summary",
                labels={"table": "summary (CSV)"},
            ),
            markdown=f"{ROOT}/tables/summary.md",
        log:
            f"{ROOT}/logs/aggregate/summary.log",
        params:
            flags=cli_flags({"reference_model": experiment("summary")["reference_model"], "config_name": config["output_root"]}),
        threads: 1
        conda:
            CONDA_ENV
        shell:
            "python3 -m cdln summary --csv {output.csv} --markdown {output.markdown} {params.flags} "
            "--real-data {input.real_data} -- {input.runs} > {log} 2>&1"

