"""Real data: MovieLens-100K completion (original DLN, C-DLN, AltMin) and the FashionMNIST classifier
(MLP, MLP + DLN block, MLP + C-DLN block). Data never enters the repository: the archive comes from
the configured path, resources/, or a download (see resources/README.md); a missing file fails the
data rule at once with a message saying where to put it (the rest still runs with --keep-going).
"""

RESOURCES = "resources"
REALDATA_STYLE = f"{SCRIPTS}/style.py"

# ---------------------------------------------------------------------------------------------
# MovieLens-100K
# ---------------------------------------------------------------------------------------------
if experiment_enabled("movielens"):
    ML = experiment("movielens")
    ML_MODELS = ("original", "cdln", "altmin")
    ML_SEEDS = ML.get("seeds") or config["seeds"]  # split seeds (= DLN init seeds)
    ML_RUNS = [f"{ROOT}/runs/movielens/{m}_seed{s}" for m in ML_MODELS for s in ML_SEEDS]
    ML_SYNTHETIC_ZIP = f"{ROOT}/data/movielens/ml-100k-synthetic.zip"

    rule movielens_synthetic_archive:
        """Stand-in archive of the ml-100k format (NOT MovieLens) when the config asks for one."""
        output:
            ML_SYNTHETIC_ZIP,
        log:
            f"{ROOT}/logs/data/movielens/synthetic.log",
        threads: 1
        conda:
            CONDA_ENV
        shell:
            "python3 -m cdln movielens-synthetic --out {output} --seed 0 > {log} 2>&1"

    rule movielens_problem:
        """ml-100k.zip -> MC problem: ratings matrix, training mask, held-out mask (split seed ``seed``)."""
        input:
            [ML_SYNTHETIC_ZIP] if ML.get("synthetic") else [],
        output:
            f"{ROOT}/data/movielens/split{{seed}}.pt",
        log:
            f"{ROOT}/logs/data/movielens/split{{seed}}.log",
        wildcard_constraints:
            seed=r"\d+",
        params:
            flags=lambda wc, input: cli_flags(
                {
                    "zip_path": input[0] if ML.get("synthetic") else ML.get("zip_path"),
                    "resources": RESOURCES,
                    "no_download": not ML.get("download", True),
                    "rank": ML["r"],
                    "test_fraction": ML["test_fraction"],
                    "split_seed": int(wc.seed),
                    "n_users": ML.get("n_users"),
                    "n_items": ML.get("n_items"),
                }
            ),
        threads: 1
        conda:
            CONDA_ENV
        shell:
            # On failure (e.g. the archive is missing) show the message, not just the log's path.
            "OMP_NUM_THREADS={threads} python3 -m cdln movielens-problem {params.flags} --out {output} > {log} 2>&1 "
            "|| {{ cat {log} >&2; exit 1; }}"

    rule movielens_train_dln:
        """Original DLN or C-DLN on the MovieLens problem (held-out error recorded as recovery_error)."""
        input:
            problem=f"{ROOT}/data/movielens/split{{seed}}.pt",
        output:
            directory(f"{ROOT}/runs/movielens/{{model}}_seed{{seed}}"),
        log:
            f"{ROOT}/logs/train/movielens/{{model}}_seed{{seed}}.log",
        benchmark:
            f"{ROOT}/benchmarks/train/movielens/{{model}}_seed{{seed}}.tsv"
        wildcard_constraints:
            model="original|cdln",
            seed=r"\d+",
        params:
            flags=lambda wc: cli_flags(
                {
                    "task": "mc",
                    "model": wc.model,
                    "depth": ML["depth"],
                    "width": ML["width"] if wc.model == "original" else None,
                    "r_hat": ML["r_hat"] if wc.model == "cdln" else None,
                    "alpha": ML["alpha"] if wc.model == "cdln" else None,
                    "eps": ML["eps"],
                    "lr": ML["lr"],
                    "n_inner": ML["n_inner"],
                    "max_outer": ML["max_outer"],
                    "tol": 0.0,
                    "init_seed": int(wc.seed),
                    "dtype": config["dtype"],
                    "device": config["device"],
                }
            ),
        threads: config["threads_per_job"]
        resources:
            gpu=uses_gpu(),
        conda:
            CONDA_ENV
        shell:
            "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} "
            "python3 -m cdln train {params.flags} --problem {input.problem} --threads {threads} --progress-every 30 --out {output} "
            "> {log} 2>&1"

    rule movielens_train_altmin:
        """AltMin (alternating least squares, rank k) on the training ratings."""
        input:
            problem=f"{ROOT}/data/movielens/split{{seed}}.pt",
        output:
            directory(f"{ROOT}/runs/movielens/altmin_seed{{seed}}"),
        log:
            f"{ROOT}/logs/train/movielens/altmin_seed{{seed}}.log",
        benchmark:
            f"{ROOT}/benchmarks/train/movielens/altmin_seed{{seed}}.tsv"
        wildcard_constraints:
            seed=r"\d+",
        params:
            flags=cli_flags(
                {
                    "k": ML["altmin"]["k"],
                    "iterations": ML["altmin"]["iterations"],
                    "ridge": ML["altmin"]["ridge"],
                    "dtype": config["dtype"],
                    "device": config["device"],
                }
            ),
        threads: config["threads_per_job"]
        resources:
            gpu=uses_gpu(),
        conda:
            CONDA_ENV
        shell:
            "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} "
            "python3 -m cdln altmin {params.flags} --problem {input.problem} --threads {threads} --progress-every 30 --out {output} "
            "> {log} 2>&1"

    rule movielens_table:
        """Curves of every MovieLens run (tidy) and the table of final numbers (CSV + Markdown)."""
        input:
            runs=ML_RUNS,
            script=f"{SCRIPTS}/realdata_tables.py",
        output:
            curves=f"{ROOT}/tables/movielens_curves.csv",
            table=f"{ROOT}/tables/movielens.csv",
            markdown=f"{ROOT}/tables/movielens.md",
        log:
            f"{ROOT}/logs/aggregate/movielens.log",
        params:
            flags=cli_flags({"title": ML["description"]}),
        threads: 1
        conda:
            CONDA_ENV
        shell:
            "python3 {input.script} movielens --curves {output.curves} --table {output.table} "
            "--markdown {output.markdown} {params.flags} {input.runs} > {log} 2>&1"

    rule fig_movielens_plot:
        """Held-out error against iterations and seconds, three methods (mean over split seeds, min-max band)."""
        input:
            curves=f"{ROOT}/tables/movielens_curves.csv",
            script=f"{SCRIPTS}/realdata_movielens_plot.py",
            style=REALDATA_STYLE,
        output:
            png=real_data_figure(
                "movielens",
                f"{ROOT}/figures/fig_movielens.png",
                caption="../report/fig_movielens.rst",
                category="Real data",
                labels={"figure": "fig_movielens"},
            ),
            pdf=f"{ROOT}/figures/fig_movielens.pdf",
        log:
            f"{ROOT}/logs/figures/fig_movielens.log",
        params:
            flags=cli_flags({"title": f"{ML['description']}  [config: {config['output_root']}]"}),
        threads: 1
        conda:
            CONDA_ENV
        shell:
            "python3 {input.script} --curves {input.curves} --png {output.png} --pdf {output.pdf} {params.flags} "
            "> {log} 2>&1"

    register_target(
        "fig_movielens",
        [
            f"{ROOT}/figures/fig_movielens.png",
            f"{ROOT}/figures/fig_movielens.pdf",
            f"{ROOT}/tables/movielens.csv",
            f"{ROOT}/tables/movielens.md",
        ],
    )

    rule fig_movielens:
        input:
            final_targets("fig_movielens"),


# ---------------------------------------------------------------------------------------------
# FashionMNIST: MLP, MLP + DLN block, MLP + C-DLN block
# ---------------------------------------------------------------------------------------------
if experiment_enabled("nonlinear"):
    NL = experiment("nonlinear")
    NL_SEEDS = NL.get("seeds") or config["seeds"]
    NL_RUNS = [f"{ROOT}/runs/nonlinear/{m}_seed{s}" for m in NL["models"] for s in NL_SEEDS]
    NL_SYNTHETIC_DIR = f"{ROOT}/data/fashion-mnist-synthetic"
    NL_KEYS = (
        "hidden", "depth", "width", "r_hat", "eps", "alpha", "optimizer", "lr", "momentum", "batch_size",
        "steps", "eval_every", "surrogate_batch", "train_subset", "test_subset", "dtype",
    )

    rule fashion_mnist_synthetic:
        """Stand-in IDX files of the FashionMNIST format (NOT FashionMNIST) when the config asks for them."""
        output:
            directory(NL_SYNTHETIC_DIR),
        log:
            f"{ROOT}/logs/data/fashion-mnist-synthetic.log",
        threads: 1
        conda:
            CONDA_ENV
        shell:
            "python3 -m cdln fashion-mnist-synthetic --out {output} --n-train 2000 --n-test 500 --seed 0 > {log} 2>&1"

    rule nonlinear_train:
        """One classifier (mlp | dln | cdln) on FashionMNIST; test accuracy every eval_every steps."""
        input:
            [NL_SYNTHETIC_DIR] if NL.get("synthetic") else [],
        output:
            directory(f"{ROOT}/runs/nonlinear/{{model}}_seed{{seed}}"),
        log:
            f"{ROOT}/logs/train/nonlinear/{{model}}_seed{{seed}}.log",
        benchmark:
            f"{ROOT}/benchmarks/train/nonlinear/{{model}}_seed{{seed}}.tsv"
        wildcard_constraints:
            model="mlp|dln|cdln",
            seed=r"\d+",
        params:
            flags=lambda wc, input: cli_flags(
                {
                    "model": wc.model,
                    "init_seed": int(wc.seed),
                    "data_dir": input[0] if NL.get("synthetic") else NL.get("data_dir"),
                    "resources": RESOURCES,
                    "no_download": not NL.get("download", True),
                    "device": config["device"],
                    **{key: NL.get(key) for key in NL_KEYS},
                }
            ),
        threads: config["threads_per_job"]
        resources:
            gpu=uses_gpu(),
        conda:
            CONDA_ENV
        shell:
            "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} "
            "python3 -m cdln nonlinear {params.flags} --threads {threads} --progress-every 30 --out {output} > {log} 2>&1 "
            "|| {{ tail -n 5 {log} >&2; exit 1; }}"

    rule nonlinear_table:
        """Curves of every FashionMNIST run (tidy) and the table of final numbers (CSV + Markdown)."""
        input:
            runs=NL_RUNS,
            script=f"{SCRIPTS}/realdata_tables.py",
        output:
            curves=f"{ROOT}/tables/nonlinear_curves.csv",
            table=f"{ROOT}/tables/nonlinear.csv",
            markdown=f"{ROOT}/tables/nonlinear.md",
        log:
            f"{ROOT}/logs/aggregate/nonlinear.log",
        params:
            flags=cli_flags({"title": NL["description"]}),
        threads: 1
        conda:
            CONDA_ENV
        shell:
            "python3 {input.script} nonlinear --curves {output.curves} --table {output.table} "
            "--markdown {output.markdown} {params.flags} {input.runs} > {log} 2>&1"

    rule fig_nonlinear_plot:
        """Test accuracy against iterations and seconds, three models (mean over seeds, min-max band)."""
        input:
            curves=f"{ROOT}/tables/nonlinear_curves.csv",
            script=f"{SCRIPTS}/realdata_nonlinear_plot.py",
            style=REALDATA_STYLE,
        output:
            png=real_data_figure(
                "nonlinear",
                f"{ROOT}/figures/fig_nonlinear.png",
                caption="../report/fig_nonlinear.rst",
                category="Real data",
                labels={"figure": "fig_nonlinear"},
            ),
            pdf=f"{ROOT}/figures/fig_nonlinear.pdf",
        log:
            f"{ROOT}/logs/figures/fig_nonlinear.log",
        params:
            flags=cli_flags({"title": f"{NL['description']}  [config: {config['output_root']}]"}),
        threads: 1
        conda:
            CONDA_ENV
        shell:
            "python3 {input.script} --curves {input.curves} --png {output.png} --pdf {output.pdf} {params.flags} "
            "> {log} 2>&1"

    register_target(
        "fig_nonlinear",
        [
            f"{ROOT}/figures/fig_nonlinear.png",
            f"{ROOT}/figures/fig_nonlinear.pdf",
            f"{ROOT}/tables/nonlinear.csv",
            f"{ROOT}/tables/nonlinear.md",
        ],
    )

    rule fig_nonlinear:
        input:
            final_targets("fig_nonlinear"),
