"""Problem instances (targets, masks, sensing operators), one file per parameter set and data seed."""


rule make_problem:
    """MF/MC problem: the target (and the MC mask), drawn with data seed ``seed``."""
    output:
        f"{ROOT}/data/{{task}}/d{{d}}_r{{r}}_{{extra}}_seed{{seed}}.pt",
    log:
        f"{ROOT}/logs/data/{{task}}/d{{d}}_r{{r}}_{{extra}}_seed{{seed}}.log",
    wildcard_constraints:
        task="mf|mc",
        d=r"\d+",
        r=r"\d+",
        extra=r"full|p[0-9.]+",
        seed=r"\d+",
    params:
        flags=lambda wc: cli_flags(
            {
                "task": wc.task,
                "d": int(wc.d),
                "r": int(wc.r),
                "p": float(wc.extra[1:]) if wc.extra.startswith("p") else None,
                "data_seed": int(wc.seed),
            }
        ),
    threads: 1
    conda:
        CONDA_ENV
    shell:
        "OMP_NUM_THREADS={threads} python3 -m cdln make-problem {params.flags} --out {output} > {log} 2>&1"


rule make_sensing_problem:
    """MS problem: target, operator A (d*d*m floats: 1.3 GB at d=200, m=4000) and measurements.

    temp(): deleted once every run on it has finished, so operators never pile up on disk."""
    output:
        temp(f"{ROOT}/data/ms/d{{d}}_r{{r}}_m{{m}}_seed{{seed}}.pt"),
    log:
        f"{ROOT}/logs/data/ms/d{{d}}_r{{r}}_m{{m}}_seed{{seed}}.log",
    wildcard_constraints:
        d=r"\d+",
        r=r"\d+",
        m=r"\d+",
        seed=r"\d+",
    params:
        flags=lambda wc: cli_flags(
            {"task": "ms", "d": int(wc.d), "r": int(wc.r), "m": int(wc.m), "data_seed": int(wc.seed)}
        ),
    threads: 1
    conda:
        CONDA_ENV
    shell:
        "OMP_NUM_THREADS={threads} python3 -m cdln make-problem {params.flags} --out {output} > {log} 2>&1"
