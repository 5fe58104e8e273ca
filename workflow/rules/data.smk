"""Data files: problem instances (targets, masks, sensing operators, MovieLens splits), one file per
parameter set and data seed, made by the ``cdln`` subcommand the grid names for each."""


rule make_problem:
    """A problem file: synthetic MF/MC draws (``cdln make-problem``) or a MovieLens split
    (``cdln movielens-problem``); the grid gives the command and its flags."""
    input:
        lambda wc: GRID.data_file(f"{ROOT}/data/{wc.family}/{wc.name}.pt").inputs,
    output:
        f"{ROOT}/data/{{family}}/{{name}}.pt",
    log:
        f"{ROOT}/logs/data/{{family}}/{{name}}.log",
    wildcard_constraints:
        family="mf|mc|movielens",
        name=r"[A-Za-z0-9._-]+",
    params:
        command=lambda wc, output: GRID.data_file(output[0]).command,
        flags=lambda wc, output: GRID.data_file(output[0]).flags(),
    threads: 1
    priority: data_priority(None)
    group:
        cluster.SHORT_GROUP
    conda:
        CONDA_ENV
    shell:
        # On failure (e.g. the MovieLens archive is missing) show the message, not just the log's path.
        "OMP_NUM_THREADS={threads} python3 -m cdln {params.command} {params.flags} --out {output} > {log} 2>&1 "
        "|| {{ tail -n 5 {log} >&2; exit 1; }}"


rule make_sensing_problem:
    """MS problem: target, operator A (d*d*m float32: 0.64 GB at d=200, m=4000) and measurements.

    temp(): deleted once every job on it has finished, so operators never pile up on disk. Drawn with the
    priority of the jobs that read it: MS jobs are the longest of the grid, and starting them early shortens the
    run."""
    output:
        temp(f"{ROOT}/data/ms/{{name}}.pt"),
    log:
        f"{ROOT}/logs/data/ms/{{name}}.log",
    wildcard_constraints:
        name=r"[A-Za-z0-9._-]+",
    params:
        flags=lambda wc, output: GRID.data_file(output[0]).flags(),
    threads: 1
    priority: data_priority("ms")
    resources:
        mem_mb=lambda wc: 2000 if sensing_group(wc) else 8000,  # for a cluster; the largest is 0.64 GB
    group:
        sensing_group
    conda:
        CONDA_ENV
    shell:
        "OMP_NUM_THREADS={threads} python3 -m cdln make-problem {params.flags} --out {output} > {log} 2>&1"
