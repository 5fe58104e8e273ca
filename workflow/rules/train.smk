"""Training: one job per (experiment, job id) of the grid; a job trains its runs one after another in
one process (each timed alone) and writes ROOT/runs/<experiment>/<job>/<run>/ atomically as a whole, with its
manifest (job.json). A run of equal settings to one another job trains is listed there as ``same_as`` that run
(cdln.pipeline.grid: each run trains once) and the job depends on that job."""


rule run_job:
    """Train every run of one job of the grid (``cdln run-job``: its manifest, each run's options as JSON)."""
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
        manifest=lambda wc: job_manifest(wc.experiment, wc.job),
    threads: config["threads_per_job"]
    # Longest first, from the estimated work (cdln.pipeline.cluster.job_priority); problem files share the
    # priority of their jobs (rules make_problem, make_sensing_problem).
    priority: job_priority
    resources:
        gpu=uses_gpu,
        # locally one MS job at a time (profiles/default: memory_bus=1): its steps stream the operator, and two
        # of them on one memory bus take about twice as long each
        memory_bus=streams_operator,
        # for a cluster: a short job 10 min and 2 GB, the others 120 min and 8 GB (an MS problem is 0.64 GB)
        runtime=lambda wc: 10 if short_training(wc) else 120,
        mem_mb=lambda wc: 2000 if short_training(wc) else 8000,
    # On a cluster, jobs of seconds share a batch job (common.smk: training_group, profiles/slurm).
    group:
        training_group
    conda:
        CONDA_ENV
    shell:
        # OMP/MKL threads = torch threads = the job's cores, so concurrent jobs never oversubscribe.
        "printf '%s' {params.manifest} | OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} "
        "python3 -m cdln run-job --manifest - --threads {threads} --progress-every 30 --out {output} > {log} 2>&1 "
        "|| {{ tail -n 5 {log} >&2; exit 1; }}"
