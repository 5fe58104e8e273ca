"""The gallery (config ``gallery``, the paper grid only): a finished replication's figures, claims table and
summary copied into a tracked folder with a stamp (commit, date, machine, elapsed time, versions).

`snakemake gallery` only copies: without a finished replication (or on a grid without a gallery) it says so in
one line before anything starts, instead of starting the replication (cdln.pipeline.gallery.refusal)."""

if workflow.is_main_process and "gallery" in sys.argv[1:]:
    from cdln.pipeline.gallery import refusal

    _why = refusal(config.get("gallery"), config["output_root"], TARGETS.files("all"))
    if _why:
        print(f"snakemake gallery: {_why}", file=sys.stderr)
        sys.exit(1)


if "gallery" in config:

    localrules:
        gallery,

    rule gallery:
        """Copy the default target's figures and tables into the gallery folder."""
        input:
            claims=f"{ROOT}/tables/claims.md",
            everything=TARGETS.files("all"),
        output:
            stamp=f"{config['gallery']}/stamp.json",
        log:
            f"{ROOT}/logs/gallery.log",
        params:
            root=lambda wc, input: Path(input.claims).parent.parent,
            folder=lambda wc, output: Path(output.stamp).parent,
        conda:
            CONDA_ENV
        shell:
            "python3 -m cdln gallery --root {params.root} --out {params.folder} > {log} 2>&1"
