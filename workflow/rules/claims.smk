"""The paper's claims on this run: each figure's target also writes the claims its tables support
(ROOT/tables/claims/<figure>.csv, :meth:`cdln.pipeline.targets.Targets.files`), so rerunning one figure
rechecks its claims; ``claims_table`` gathers them all into tables/claims.csv and tables/claims.md (part of
the default target and the report)."""


rule claims_figure:
    """One figure's claims, evaluated on its tables (figure, claim, paper, measured, holds, device)."""
    input:
        claims=CLAIMS_FILE or [],
        tables=lambda wc: [f"{ROOT}/tables/{name}" for name in tables_read(CLAIMS, wc.figure)],
    output:
        f"{ROOT}/tables/claims/{{figure}}.csv",
    log:
        f"{ROOT}/logs/claims/{{figure}}.log",
    wildcard_constraints:
        figure=r"fig_[a-z_]+",
    params:
        tables=lambda wc, output: Path(output[0]).parent.parent,
        flags=claims_flags() if CLAIMS_FILE else "",
    threads: 1
    conda:
        CONDA_ENV
    shell:
        "python3 -m cdln claims evaluate --claims {input.claims} --figure {wildcards.figure} --table-dir {params.tables} "
        "{params.flags} --out {output} > {log} 2>&1"


if CLAIMS:

    rule claims_table:
        """Every figure's claims in one table (CSV for the report, Markdown to read)."""
        input:
            tables=[f"{ROOT}/tables/claims/{figure}.csv" for figure in TARGETS.evaluated_claim_figures()],
            flips=FLIPS_RECORD,  # the rows' falsifiability (tests/test_claims_can_fail.py), counted in the header
        output:
            csv=report(
                f"{ROOT}/tables/claims.csv",
                caption="../report/claims.rst",
                category="Claims",
                labels={"table": "claims (CSV)"},
            ),
            markdown=f"{ROOT}/tables/claims.md",
        log:
            f"{ROOT}/logs/claims/claims.log",
        params:
            flags=cli_flags({"config_name": config["output_root"], "claims": CLAIMS_FILE,
                             "absolute": config["claims"].get("absolute", True)}),
            flips=cli_flags({"flips": FLIPS_RECORD[0] if FLIPS_RECORD else None}),
            not_evaluated=" ".join(
                f"--not-evaluated {figure} {shlex.quote(why)}"
                for figure, why in TARGETS.left_out().items()
                if figure in TARGETS.claim_figures
            ),
        threads: 1
        conda:
            CONDA_ENV
        shell:
            "python3 -m cdln claims gather --csv {output.csv} --markdown {output.markdown} {params.flips} "
            "{params.flags} {params.not_evaluated} {input.tables} > {log} 2>&1"

    rule claims:
        input:
            target_files("claims_table"),
