"""Training: one job per (experiment, job id) of the grid; a job trains its runs one after another in
one process (each timed alone) and writes ROOT/runs/<experiment>/<job>/<run>/ atomically as a whole."""


rule run_job:
    """Train every run of one job of the grid (``cdln run-job``: explicit flags per run)."""
    input:
        lambda wc: GRID.job(wc.experiment, wc.job).inputs,
    output:
        directory(f"{ROOT}/runs/{{experiment}}/{{job}}"),
    log:
        f"{ROOT}/logs/runs/{{experiment}}/{{job}}.log",
    benchmark:
        f"{ROOT}/benchmarks/runs/{{experiment}}/{{job}}.tsv"
    wildcard_constraints:
        experiment="|".join(GRID.experiments),
        job=r"[A-Za-z0-9._-]+",
    params:
        runs=lambda wc: GRID.job(wc.experiment, wc.job).arguments(),
    threads: config["threads_per_job"]
    # Ready jobs go before MF/MC problem files; MS problem files share this priority (rule
    # make_sensing_problem), so the longest jobs start first.
    priority: 1
    resources:
        gpu=uses_gpu(),
    conda:
        CONDA_ENV
    shell:
        # OMP/MKL threads = torch threads = the job's cores, so concurrent jobs never oversubscribe.
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} "
        "python3 -m cdln run-job {params.runs} --threads {threads} --progress-every 30 --out {output} > {log} 2>&1 "
        "|| {{ tail -n 5 {log} >&2; exit 1; }}"
