"""Real data: MovieLens-100K completion (original DLN, C-DLN, AltMin) and the FashionMNIST classifier
(MLP, MLP + DLN block, MLP + C-DLN block). Data never enters the repository: the archive comes from
the configured path, resources/, or a download (see resources/README.md); a missing file fails the
data rule at once with a message saying where to put it (the rest still runs with --keep-going).
Their jobs are trained by rule run_job and their problem files made by rule make_problem.
"""


rule movielens_synthetic_archive:
    """Stand-in archive of the ml-100k format (NOT MovieLens) when the config asks for one."""
    output:
        f"{ROOT}/data/movielens/ml-100k-synthetic.zip",
    log:
        f"{ROOT}/logs/data/movielens/synthetic.log",
    params:
        flags=lambda wc, output: GRID.data_file(output[0]).flags(),
    threads: 1
    group:
        cluster.SHORT_GROUP
    conda:
        CONDA_ENV
    shell:
        "python3 -m cdln movielens-synthetic {params.flags} --out {output} > {log} 2>&1"


rule fashion_mnist_synthetic:
    """Stand-in IDX files of the FashionMNIST format (NOT FashionMNIST) when the config asks for them."""
    output:
        directory(f"{ROOT}/data/fashion-mnist-synthetic"),
    log:
        f"{ROOT}/logs/data/fashion-mnist-synthetic.log",
    params:
        flags=lambda wc, output: GRID.data_file(output[0]).flags(),
    threads: 1
    group:
        cluster.SHORT_GROUP
    conda:
        CONDA_ENV
    shell:
        "python3 -m cdln fashion-mnist-synthetic {params.flags} --out {output} > {log} 2>&1"


rule realdata_table:
    """Curves of every run of a real-data experiment (tidy), its per-run rows and the table of final numbers
    (CSV + Markdown)."""
    input:
        lambda wc: GRID.job_dirs(wc.experiment),
    output:
        curves=f"{ROOT}/tables/{{experiment}}_curves.csv",
        runs=f"{ROOT}/tables/{{experiment}}_runs.csv",
        table=f"{ROOT}/tables/{{experiment}}.csv",
        markdown=f"{ROOT}/tables/{{experiment}}.md",
    log:
        f"{ROOT}/logs/aggregate/{{experiment}}.log",
    wildcard_constraints:
        experiment="movielens|nonlinear",
    params:
        flags=lambda wc: cli_flags({"title": experiment(wc.experiment)["description"]}),
    threads: 1
    conda:
        CONDA_ENV
    shell:
        "python3 -m cdln aggregate {wildcards.experiment} --curves {output.curves} --runs {output.runs} "
        "--table {output.table} "
        "--markdown {output.markdown} {params.flags} {input} > {log} 2>&1"


for _name in ("movielens", "nonlinear"):
    if not experiment_enabled(_name):
        continue

    rule:
        """Held-out error (MovieLens) or test accuracy (FashionMNIST) against iterations and seconds."""
        name:
            f"plot_{_name}"
        input:
            table=f"{ROOT}/tables/{_name}_curves.csv",
            code=[f"{PLOTTING}/realdata.py", STYLE],
        output:
            png=real_data_figure(
                _name,
                f"{ROOT}/figures/fig_{_name}.png",
                caption=f"../report/fig_{_name}.rst",
                category="Real data",
                labels={"figure": f"fig_{_name}"},
            ),
            pdf=f"{ROOT}/figures/fig_{_name}.pdf",
        log:
            f"{ROOT}/logs/figures/fig_{_name}.log",
        params:
            figure=_name,
            flags=cli_flags({"title": figure_title(_name)}),
        threads: 1
        conda:
            CONDA_ENV
        shell:
            "python3 -m cdln plot {params.figure} --table {input.table} --out {output.png} --pdf {output.pdf} "
            "{params.flags} > {log} 2>&1"




rule fig_movielens:
    input:
        target_files("fig_movielens"),


rule fig_nonlinear:
    input:
        target_files("fig_nonlinear"),
