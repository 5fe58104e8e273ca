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
    # Longest first, from the estimated work (cdln.pipeline.cluster.job_priority); problem files share the
    # priority of their jobs (rules make_problem, make_sensing_problem).
    priority: job_priority
    resources:
        gpu=uses_gpu,
        # for a cluster: a short job 10 min and 2 GB, the others 120 min and 8 GB (an MS problem is 1.3 GB)
        runtime=lambda wc: 10 if training_group(wc) else 120,
        mem_mb=lambda wc: 2000 if training_group(wc) else 8000,
    # On a cluster, jobs of seconds share a batch job (common.smk: training_group, profiles/slurm).
    group:
        training_group
    conda:
        CONDA_ENV
    shell:
        # OMP/MKL threads = torch threads = the job's cores, so concurrent jobs never oversubscribe.
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} "
        "python3 -m cdln run-job {params.runs} --threads {threads} --progress-every 30 --out {output} > {log} 2>&1 "
        "|| {{ tail -n 5 {log} >&2; exit 1; }}"
