"""Training: one job per (experiment, panel, model, seed), unbatched because its seconds are plotted."""


rule train_synthetic:
    """Train one network on one problem file and write its run record (record.json, curves.csv)."""
    input:
        problem=lambda wc: problem_file(find_run(wc.experiment, wc.panel, wc.model, wc.seed)["settings"], int(wc.seed)),
    output:
        directory(f"{ROOT}/runs/{{experiment}}/{{panel}}/{{model}}_seed{{seed}}"),
    log:
        f"{ROOT}/logs/train/{{experiment}}/{{panel}}/{{model}}_seed{{seed}}.log",
    benchmark:
        f"{ROOT}/benchmarks/train/{{experiment}}/{{panel}}/{{model}}_seed{{seed}}.tsv"
    wildcard_constraints:
        experiment="|".join(SYNTHETIC),
        panel=r"[A-Za-z0-9._-]+",
        model=r"[a-z]+",
        seed=r"\d+",
    params:
        flags=lambda wc: train_flags(find_run(wc.experiment, wc.panel, wc.model, wc.seed)),
    threads: config["threads_per_job"]
    # Ready training jobs go before new problem files, so (temporary) MS operators are consumed and
    # deleted before more are drawn.
    priority: 1
    resources:
        gpu=uses_gpu(),
    conda:
        CONDA_ENV
    shell:
        # OMP/MKL threads = torch threads = the job's cores, so concurrent jobs never oversubscribe.
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} "
        "python3 -m cdln train {params.flags} --problem {input.problem} --threads {threads} --progress-every 30 --out {output} "
        "> {log} 2>&1"
