"""Result subcommands: run records -> tables -> figures and checks (what the pipeline's rules call).

- ``cdln aggregate {synthetic|movielens|nonlinear}``: job directories -> tidy tables;
- ``cdln summary``: per-run tables -> the summary table (CSV + Markdown);
- ``cdln check-regression``: a summary table against committed expectations (exit 1 on violations);
- ``cdln robustness-table``: the robustness sweep's runs -> its figure's table (:mod:`cdln.pipeline.robustness`);
- ``cdln plot <figure>``: a table -> PNG + PDF, in the one figure style;
- ``cdln claims {evaluate|gather|check}``: the paper's claims on a run's tables (:mod:`cdln.pipeline.claims`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from cdln.cli.common import ExitCode, writes_files
from cdln.outputs import write_csv, write_text
from cdln.pipeline import aggregate, realdata, regression, summary

PLOTS = ("error-curves", "ablation-alpha", "movielens", "nonlinear", "scaling", "robustness")
# Each plot, the figure targets it draws and the table it reads (tables/ of the run's root), and the columns it
# needs of it: checked first, so that a wrong table gets one line naming the table to pass.
PLOT_TABLES = {
    "error-curves": ("fig_mf fig_mc fig_ms fig_ablation_depth fig_baselines", "<experiment>_curves.csv",
                     {"panel", "model", "seed", "iteration", "seconds", "recovery_error", "train_loss", "r", "depth",
                      "r_hat", "bm_rank"}),
    "ablation-alpha": ("fig_ablation_alpha", "ablation_alpha_runs.csv", {"panel", "model", "alpha", "converged"}),
    "movielens": ("fig_movielens", "movielens_curves.csv", {"model", "seed", "iteration", "seconds"}),
    "nonlinear": ("fig_nonlinear", "nonlinear_curves.csv", {"model", "seed", "iteration", "seconds", "test_accuracy"}),
    "scaling": ("fig_scaling", "scaling.csv", {"d", "model", "quantity", "value", "converged", "dtype"}),
    "robustness": ("fig_robustness", "robustness.csv", {"factor", "value", "model", "seed", "relative_error"}),
}  # fmt: skip


def read_table(path: Path, what: str, **options: Any) -> pd.DataFrame:
    """The CSV table the user named (``what``: the flag); one line naming it when it is missing or not a table."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        return pd.read_csv(path, **options)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        reason = "not text" if isinstance(error, UnicodeDecodeError) else " ".join(str(error).split())[:100]
        raise ValueError(f"{what} {path} is not a CSV table ({reason})") from None


def aggregate_command(args: argparse.Namespace) -> int:
    if args.experiment == "synthetic":
        curves, runs = aggregate.collect(args.job_dirs, args.reach_error)
        write_csv(args.curves, curves)
        write_csv(args.table, runs)
        print(f"wrote {args.curves} ({len(curves)} rows) and {args.table} ({len(runs)} runs)", file=sys.stderr)
        return ExitCode.OK
    curves, runs, table, markdown = realdata.tables(args.experiment, args.job_dirs, args.title)
    write_csv(args.curves, curves)
    write_csv(args.table, table)
    if args.runs is not None:
        write_csv(args.runs, runs)
    if args.markdown is not None:
        write_text(args.markdown, markdown)
    print(table.to_string(), file=sys.stderr)
    return ExitCode.OK


def summary_command(args: argparse.Namespace) -> int:
    runs = pd.concat([read_table(path, "runs table") for path in args.runs], ignore_index=True)
    if args.reference_model not in set(runs["model"]):
        models = sorted(set(runs["model"]))
        raise ValueError(f"--reference-model {args.reference_model!r} has no runs; models: {models}")
    table = summary.summarise(runs, args.reference_model)
    write_csv(args.csv, table, float_format="%.6g")
    markdown = summary.to_markdown(table, args.config_name, args.reference_model)
    write_text(args.markdown, markdown + summary.real_data_sections(args.real_data))
    print(f"wrote {args.csv} and {args.markdown} ({len(table)} rows)", file=sys.stderr)
    return ExitCode.OK


def check_regression_command(args: argparse.Namespace) -> int:
    if not args.summary.is_file():
        raise FileNotFoundError(f"--summary {args.summary} does not exist; run the reduced grid first")
    table = read_table(args.summary, "--summary")
    if args.write_expected:
        write_text(args.expected, regression.expected_file_text(table, str(args.summary)))
        print(f"wrote {args.expected}", file=sys.stderr)
        return ExitCode.OK
    if not args.expected.is_file():
        raise FileNotFoundError(f"--expected {args.expected} does not exist")
    expected = yaml.safe_load(args.expected.read_text())
    violations = regression.check(table, expected)
    n_checks = len(expected["rows"]) + len(expected.get("faster", []))
    if violations:
        print(f"REGRESSION: {len(violations)} violation(s) of {args.expected} by {args.summary}:", file=sys.stderr)
        for violation in violations:
            print(str(violation), file=sys.stderr)
        return ExitCode.CHECK_FAILED
    print(f"OK: {args.summary} matches {args.expected} ({n_checks} rows/claims checked)", file=sys.stderr)
    return ExitCode.OK


def robustness_table_command(args: argparse.Namespace) -> int:
    from cdln.pipeline.grid import SWEEP_FACTORS, SweepPoint
    from cdln.pipeline.robustness import table

    points = []
    for entry in json.loads(args.points):
        if entry.get("factor") not in SWEEP_FACTORS:
            raise ValueError(f"--points: unknown factor in {entry}; factors: {list(SWEEP_FACTORS)}")
        points.append(SweepPoint(entry["factor"], float(entry["value"]), entry["panel"], entry.get("runs", {})))
    for path in (args.runs, args.curves):
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist (make it with `cdln aggregate synthetic`)")
    frame = table(read_table(args.runs, "--runs"), read_table(args.curves, "--curves"), points, args.level)
    write_csv(args.out, frame)
    print(f"wrote {args.out} ({len(frame)} rows, {len(points)} sweep points)", file=sys.stderr)
    return ExitCode.OK


def plot_command(args: argparse.Namespace) -> int:
    from cdln.plotting import ablation_alpha, error_curves, robustness, scaling, style
    from cdln.plotting import realdata as realdata_plots

    targets, expected, columns = PLOT_TABLES[args.figure]
    if not args.table.is_file():
        raise FileNotFoundError(f"--table {args.table} does not exist (cdln plot {args.figure} reads {expected})")
    table = read_table(args.table, "--table")
    missing = sorted(columns - set(table.columns))
    if missing:
        raise ValueError(
            f"--table {args.table} lacks the column(s) {missing} of cdln plot {args.figure} ({targets}): "
            f"pass its {expected}"
        )
    title = args.title or args.figure
    if args.figure in ("error-curves", "ablation-alpha") and not args.panels:
        raise ValueError(f"cdln plot {args.figure} needs --panels (the config's panel names)")
    if args.figure == "error-curves":
        columns = [error_curves.parse_column(spec) for spec in args.columns]
        figure = error_curves.plot(table, args.panels, columns, title)
    elif args.figure == "ablation-alpha":
        figure = ablation_alpha.plot(table, args.panels[0], title)
    elif args.figure == "movielens":
        figure = realdata_plots.plot_movielens(table, title)
    elif args.figure == "nonlinear":
        figure = realdata_plots.plot_nonlinear(table, title)
    elif args.figure == "robustness":
        figure = robustness.plot(table, title)
    else:
        figure = scaling.plot(scaling.check_table(table, args.table), title)
    style.save_figure(figure, args.out, args.pdf)
    print(f"wrote {args.out}" + (f" and {args.pdf}" if args.pdf else ""), file=sys.stderr)
    return ExitCode.OK


def gallery_command(args: argparse.Namespace) -> int:
    from cdln.pipeline.gallery import make_gallery

    stamp = make_gallery(args.root, args.out, args.log_dir)
    print(f"wrote {args.out}: {len(stamp['files'])} files, commit {stamp['commit']}", file=sys.stderr)
    return ExitCode.OK


def job_times_command(args: argparse.Namespace) -> int:
    from cdln.pipeline import jobtimes

    missing = [str(log) for log in args.logs if not log.is_file()]
    if missing:
        raise FileNotFoundError(f"no Snakemake log {missing} (runs write them to .snakemake/log/)")
    names = args.names or [log.name for log in args.logs]
    if len(names) != len(args.logs):
        raise ValueError(f"--names gives {len(names)} names for {len(args.logs)} logs")
    print(jobtimes.markdown({name: jobtimes.summary(log) for name, log in zip(names, args.logs, strict=True)}), end="")
    return ExitCode.OK


def register(commands: argparse._SubParsersAction) -> None:
    """Add the result subcommands to the ``cdln`` parser."""
    agg = commands.add_parser("aggregate", help="job directories of one experiment -> tidy tables")
    agg.add_argument("experiment", choices=["synthetic", "movielens", "nonlinear"], help="kind of experiment")
    agg.add_argument("--curves", type=Path, required=True, help="tidy curves table (.csv) to write")
    agg.add_argument("--table", type=Path, required=True, help="per-run (synthetic) or final-numbers table to write")
    agg.add_argument("--markdown", type=Path, default=None, help="real data: the table as Markdown")
    agg.add_argument("--runs", type=Path, default=None, help="real data: the per-run rows (one per model and seed)")
    agg.add_argument("--reach-error", type=float, default=None, help="synthetic: recovery error for reach_* columns")
    agg.add_argument("--title", default=None, help="real data: the data set's label")
    agg.add_argument("job_dirs", type=Path, nargs="+", help="job directories (runs/<experiment>/<job>)")
    writes_files(agg, "curves", "table", "markdown", "runs")
    agg.set_defaults(handler=aggregate_command)

    summ = commands.add_parser("summary", help="per-run tables -> the summary table (CSV + Markdown)")
    summ.add_argument("--csv", type=Path, required=True, help="the summary table (.csv) to write")
    summ.add_argument("--markdown", type=Path, required=True, help="the summary table as Markdown (.md) to write")
    summ.add_argument("--reference-model", default="original", help="speed-up = its seconds / a model's")
    summ.add_argument("--config-name", default="?", help="output root of the config that made the runs")
    summ.add_argument("--real-data", type=Path, nargs="*", default=[], help="real-data Markdown tables to append")
    summ.add_argument("runs", type=Path, nargs="+", help="per-run tables from `cdln aggregate synthetic`")
    writes_files(summ, "csv", "markdown")
    summ.set_defaults(handler=summary_command)

    check = commands.add_parser("check-regression", help="a summary table against committed expected values")
    check.add_argument("--summary", type=Path, required=True, help="summary.csv from `cdln summary`")
    check.add_argument("--expected", type=Path, required=True, help="expected values (YAML)")
    check.add_argument("--write-expected", action="store_true", help="write --expected from --summary and exit")
    check.set_defaults(handler=check_regression_command)

    robust = commands.add_parser("robustness-table", help="the robustness sweep's runs -> its figure's table")
    robust.add_argument("--runs", type=Path, required=True, help="robustness_runs.csv (cdln aggregate synthetic)")
    robust.add_argument("--curves", type=Path, required=True, help="robustness_curves.csv")
    robust.add_argument(
        "--points",
        required=True,
        help='the sweep points as JSON: [{"factor": "p", "value": 0.1, "panel": "p_0p1", "runs": {model: panel}}, ...]',
    )
    robust.add_argument("--level", type=float, required=True, help="recovery error level, a fraction of the initial")
    robust.add_argument("--out", type=Path, required=True, help="robustness.csv to write")
    writes_files(robust, "out")
    robust.set_defaults(handler=robustness_table_command)

    mapping = "; ".join(f"{name}: {targets} (reads {table})" for name, (targets, table, _) in PLOT_TABLES.items())
    plot = commands.add_parser(
        "plot",
        help="one figure (PNG and PDF) from its table",
        description=f"Plots and their figure targets: {mapping}.",
    )
    plot.add_argument("figure", choices=PLOTS, help="which plot (see above for the figure targets each draws)")
    plot.add_argument("--table", type=Path, required=True, help="the figure's table (curves, runs or scaling CSV)")
    plot.add_argument("--out", type=Path, required=True, help="the figure as PNG")
    plot.add_argument("--pdf", type=Path, default=None, help="also the figure as PDF")
    plot.add_argument("--title", default=None, help="the figure's title (default: the plot's name)")
    plot.add_argument(
        "--panels", nargs="+", default=None, help="required by error-curves and ablation-alpha: the panels, in order"
    )
    plot.add_argument(
        "--columns",
        nargs="+",
        default=["recovery_error:iteration", "recovery_error:seconds"],
        help="error-curves: <error>:<x> per column, e.g. recovery_error:iteration recovery_error:seconds",
    )
    writes_files(plot, "out", "pdf")
    plot.set_defaults(handler=plot_command)

    gallery = commands.add_parser("gallery", help="a finished replication's figures and claims -> a tracked folder")
    gallery.add_argument("--root", type=Path, required=True, help="the replication's results (results/paper)")
    gallery.add_argument("--out", type=Path, required=True, help="the gallery folder (docs/gallery)")
    gallery.add_argument("--log-dir", type=Path, default=Path(".snakemake/log"), help="Snakemake's run logs")
    gallery.set_defaults(handler=gallery_command)

    times = commands.add_parser("job-times", help="a Snakemake run's job-seconds per workload, from its log")
    times.add_argument("logs", type=Path, nargs="+", help="Snakemake logs (.snakemake/log/*.snakemake.log)")
    times.add_argument("--names", nargs="+", default=None, help="a column name per log (default: the file names)")
    times.set_defaults(handler=job_times_command)
    register_claims(commands)


def claims_command(args: argparse.Namespace) -> int:
    from cdln.pipeline import claims

    if args.action == "evaluate":
        rules = claims.load_claims(args.claims)
        figures = sorted({rule.figure for rule in rules})
        if args.figure not in figures:
            raise ValueError(f"--figure {args.figure!r} has no claims in {args.claims}; its figures: {figures}")
        panels = json.loads(args.panels) if args.panels else {}
        table = claims.evaluate(rules, args.figure, args.table_dir, panels, args.absolute, args.timing, args.grid)
        write_csv(args.out, table)
        print(f"wrote {args.out}: {int(table['holds'].sum())} of {len(table)} claims hold", file=sys.stderr)
        return ExitCode.OK
    if args.action == "gather":
        frames = [
            read_table(path, "claims table", keep_default_na=False, dtype={"measured": str}) for path in args.tables
        ]
        if args.not_evaluated:
            if args.claims is None:
                raise ValueError("--not-evaluated needs --claims (the rows of the figure come from it)")
            rules = claims.load_claims(args.claims)
            frames += [
                claims.not_evaluated(rules, figure, reason, args.absolute) for figure, reason in args.not_evaluated
            ]
        table = pd.concat(frames, ignore_index=True).reindex(columns=claims.COLUMNS, fill_value="")
        table["holds"] = table["holds"].astype(str) == "True"
        write_csv(args.csv, table)
        coverage = claims.coverage_line(args.flips, list(table["id"]), args.markdown) if args.flips else None
        write_text(args.markdown, claims.to_markdown(table, args.config_name, coverage))
        print(
            f"wrote {args.csv} and {args.markdown}: {int(table['holds'].sum())} of {len(table)} hold", file=sys.stderr
        )
        return ExitCode.OK
    table = read_table(args.table, "--table", keep_default_na=False, dtype={"measured": str})
    if table.empty:
        raise ValueError(f"--table {args.table} holds no claims: a check over nothing proves nothing")
    table["holds"] = table["holds"].astype(str) == "True"
    failed = claims.violations(table)
    if len(failed):
        print(
            f"CLAIMS: {len(failed)} of {len(table)} claim(s) do not hold (and are not known deviations):",
            file=sys.stderr,
        )
        for row in failed.itertuples():
            print(f"  {row.figure:<20} {row.id:<36} measured {row.measured:<12} {row.claim}", file=sys.stderr)
        return ExitCode.CHECK_FAILED
    print(f"OK: every claim of {args.table} holds or is a known deviation ({len(table)} claims)", file=sys.stderr)
    return ExitCode.OK


def register_claims(commands: argparse._SubParsersAction) -> None:
    claims = commands.add_parser("claims", help="the paper's claims on this run's tables (config/claims.yaml)")
    actions = claims.add_subparsers(dest="action", required=True)
    evaluate = actions.add_parser("evaluate", help="one figure's claims -> CSV (figure, claim, paper, measured, holds)")
    evaluate.add_argument("--claims", type=Path, required=True, help="claims file (config/claims.yaml)")
    evaluate.add_argument("--figure", required=True, help="the figure whose claims to evaluate, e.g. fig_mf")
    evaluate.add_argument(
        "--table-dir", type=Path, required=True, help="the run's tables folder (results/<root>/tables)"
    )
    evaluate.add_argument("--out", type=Path, required=True, help="CSV to write")
    evaluate.add_argument("--panels", default=None, help="JSON: experiment -> {paper panel: this grid's panel}")
    evaluate.add_argument(
        "--absolute", action="store_true", help="also the claims with the paper's absolute thresholds"
    )
    evaluate.add_argument("--timing", action="store_true", help="also the claims that read seconds")
    evaluate.add_argument(
        "--grid", default="paper", help="the grid the tables come from (its output_root): whose deviation notes apply"
    )
    writes_files(evaluate, "out")
    gather = actions.add_parser("gather", help="per-figure claim CSVs -> one CSV and one Markdown table")
    gather.add_argument("--csv", type=Path, required=True, help="every claim in one table (.csv) to write")
    gather.add_argument("--markdown", type=Path, required=True, help="the claims table as Markdown (.md) to write")
    gather.add_argument("--config-name", default="?", help="output root of the config that made the runs")
    gather.add_argument(
        "--flips", type=Path, default=None, help="tests/expected/claims_flips.csv: the rows' falsifiability, counted"
    )
    gather.add_argument("tables", type=Path, nargs="+", help="per-figure claim CSVs")
    gather.add_argument("--claims", type=Path, default=None, help="claims file (for --not-evaluated)")
    gather.add_argument(
        "--not-evaluated",
        nargs=2,
        action="append",
        default=[],
        metavar=("FIGURE", "WHY"),
        help="a figure whose claims cannot be evaluated on this run, and why (repeatable); its rows are listed apart",
    )
    gather.add_argument("--absolute", action="store_true", help="with --not-evaluated: the absolute claims too")
    writes_files(gather, "csv", "markdown")
    check = actions.add_parser("check", help="exit 1 when a claim does not hold and is not a known deviation")
    check.add_argument("--table", type=Path, required=True, help="claims.csv (or one figure's)")
    claims.set_defaults(handler=claims_command)
