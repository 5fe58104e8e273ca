"""Every row of config/claims.yaml can fail: for each row, a plausible change of its input tables flips its
verdict (evaluate's verdict, the "within noise" rule included: within noise is neither). The tables are built
for the test from what the rows read (the paper grid's experiments, panels, models, findings and tables),
absolute and timing rows included. Plausible: the two models' runs swapped, a curve or value moved by a few of its
own seeds' spreads, a value scaled by at most 10x, a finding flipped (a boolean) or moved as a real run could
move it. A row with no flipping change is a failure naming the row, so a row added without a way to fail fails
here. Each row's flip is recorded in tests/expected/claims_flips.csv (regenerate with CDLN_WRITE_FLIPS=1), which
the claims table's header counts and links. A row that no plausible change of these tables flips is tried on
the gallery's replication (docs/gallery/tables: the tables a full run's claims were computed from), with the
same changes: a row far from its bound on the test's tables may be near it on a real run's."""

from __future__ import annotations

import ast
import copy
import functools
import gzip
import io
import itertools
import json
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

from cdln.pipeline.claims import FUNCTIONS, Claim, NotApplicable, Tables, judge, load_claims, tables_read
from cdln.pipeline.claims.report import REPLICATION_FLIP

CLAIMS_FILE = REPO / "config" / "claims.yaml"
SEEDS = (0, 1, 2)
ITERATIONS = np.arange(0, 20_001, 200)
ALPHAS = np.arange(0.5, 3.01, 0.25)
DECADES_PER_1000 = {"cdln": 1.0, "original": 0.8, "bm": 0.6, "narrow": 0.7, "yaras": 0.9}  # error's decay
SECONDS_PER_ITERATION = {"cdln": 1e-4, "original": 5e-4, "bm": 2e-4, "narrow": 3e-4, "yaras": 4e-4}
FIXED = {"seed", "alpha", "d", "n_seeds", "factor", "panel", "model"}  # never perturbed
# A value scaled by at most 10x either way, and a curve or value moved by a few of its own seeds' spreads, the
# smallest first: the change recorded for a row is the smallest scale or move of the first value that flips it.
SCALES = tuple(10.0 ** (k / 8) for k in sorted(range(-8, 9), key=lambda k: (abs(k), k)) if k)
SHIFTS = (-1, 1, -2, 2, -3, 3)
LOGARITHMIC = ("error", "loss")  # columns whose seeds spread on a log scale (errors, losses)
FLIPS_FILE = REPO / "tests" / "expected" / "claims_flips.csv"
REPLICATION = REPO / "docs" / "gallery" / "tables"  # a full run's tables, gzipped (cdln.pipeline.gallery)
POINTS = {"robustness.csv": ("factor", "value"), "scaling.csv": ("d",)}  # a table's sweep points, perturbed one by one

Files = dict[str, Any]
Perturbation = tuple[str, Callable[[Files], None]]


def calls(claim: Claim) -> Iterator[tuple[str, list[Any], dict[str, Any]]]:
    """(function, positional arguments, keyword arguments) of each table function the measure calls."""
    for node in ast.walk(ast.parse(claim.measure, mode="eval")):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS:
            value = lambda arg: arg.id if isinstance(arg, ast.Name) else ast.literal_eval(arg)  # noqa: E731
            yield node.func.id, [value(a) for a in node.args], {k.arg: value(k.value) for k in node.keywords}


def error_curve(model: str, seed: int, alpha: float = 1.0) -> np.ndarray:
    decades = DECADES_PER_1000.get(model, 0.5) * (1 + 0.01 * seed) * (alpha if model == "cdln" else 1.0)
    return np.maximum(10.0 ** (-decades * ITERATIONS / 1000), 1e-32)


def model_value(model: str, seed: int = 0) -> float:
    """A model's base value in the real-data, scaling and robustness tables: distinct per model and seed."""
    return 0.5 + 0.1 * (sum(map(ord, model)) % 7) + 0.01 * seed


def build_tables(claims: list[Claim]) -> Files:
    """Tables shaped like the paper grid's with everything ``claims`` read: curves and runs per experiment
    (3 seeds; an alpha sweep where a row reads one), findings, real-data tables, scaling and robustness."""
    runs_of: dict[str, set[tuple[str, str]]] = {}
    run_columns: set[str] = set()
    swept: set[str] = set()
    findings: dict[str, dict[str, set[str]]] = {}
    tables: dict[str, dict[str, set[str]]] = {}
    real_runs: dict[str, dict[str, set[str]]] = {}
    scaling: set[tuple[str, str]] = set()
    robust: dict[tuple[str, float], set[str]] = {}
    for claim in claims:
        for function, args, kwargs in calls(claim):
            if function in ("first", "final", "runs"):
                runs_of.setdefault(args[0], set()).add((args[1], args[2]))
                run_columns.update(args[3:4] if function == "runs" else [])
                swept.update([args[0]] if "alpha" in kwargs else [])
            elif function in ("paired", "dominance"):
                runs_of.setdefault(args[0], set()).update({(args[1], args[2]), (args[1], args[3])})
            elif function in ("crossover", "sweep_rise", "sweep_ratio"):
                runs_of.setdefault(args[0], set()).update({(args[1], "cdln"), (args[1], "original")})
                swept.add(args[0])
            elif function == "finding":
                findings.setdefault(args[0], {}).setdefault(args[1], set()).add(str(args[2]))
            elif function == "table":
                tables.setdefault(args[0], {}).setdefault(args[1], set()).add(args[2])
            elif function == "by_seed":
                for model, column in zip(args[1:3], (args[3], kwargs.get("column_b", args[3])), strict=True):
                    real_runs.setdefault(args[0], {}).setdefault(model, set()).add(column)
            elif function == "per_seed":
                real_runs.setdefault(args[0], {}).setdefault(args[1], set()).add(args[2])
            elif function == "scaling":
                scaling.add((args[0], args[1]))
            elif function == "robust":
                robust.setdefault((args[0], float(args[1])), set()).update({f"{args[2]}:{args[3]}"})
            elif function == "robust_ratio":
                a, b = kwargs.get("a", "original"), kwargs.get("b", "cdln")
                robust.setdefault((args[0], float(args[1])), set()).update({f"{a}:{args[2]}", f"{b}:{args[2]}"})
            elif function == "robust_across":
                for value in args[1:3]:
                    robust.setdefault((args[0], float(value)), set()).add(f"{args[3]}:{args[4]}")
    files: Files = {}
    # every run timed to 2% (its checkpoint intervals' spread): a timing row is within noise only that close
    device = {"device": "cpu", "device_name": "cpu (1 threads)", "engine_path": "native-dense", "seconds_noise": 0.02}
    for experiment, pairs in runs_of.items():
        curves, runs = [], []
        for (panel, model), seed in itertools.product(sorted(pairs), SEEDS):
            for alpha in ALPHAS if experiment in swept and model == "cdln" else [1.0]:
                error = error_curve(model, seed, alpha)
                seconds = ITERATIONS * SECONDS_PER_ITERATION.get(model, 1e-4)
                curves.append(
                    pd.DataFrame(
                        dict(
                            panel=panel,
                            model=model,
                            seed=seed,
                            alpha=alpha,
                            iteration=ITERATIONS,
                            seconds=seconds,
                            train_loss=error / 10,
                            recovery_error=error,
                        )
                    )
                )
                stop = int(np.argmax(error <= 1e-10)) if (error <= 1e-10).any() else len(ITERATIONS) - 1
                runs.append(dict(panel=panel, model=model, seed=seed, alpha=alpha, stop_iteration=ITERATIONS[stop],
                                 stop_seconds=seconds[stop], converged=bool(error[stop] <= 1e-10),
                                 **device))  # fmt: skip
                for column in sorted(run_columns - set(runs[-1])):  # other columns of the runs table, e.g. params_model
                    runs[-1][column] = 1000 * model_value(model, seed)
        curves_frame = pd.concat(curves, ignore_index=True)
        if experiment in swept:  # the curves of a sweep: one alpha per model, as the claims read them
            curves_frame = curves_frame[curves_frame["alpha"] == 1.0]
        files[f"{experiment}_curves.csv"] = curves_frame.drop(columns="alpha").reset_index(drop=True)
        files[f"{experiment}_runs.csv"] = pd.DataFrame(runs)
    for analysis, tasks in findings.items():
        document = {}
        for task, paths in tasks.items():
            entry: dict[str, Any] = {}
            for path in sorted(paths):
                *parents, leaf = path.split("/")
                node = entry
                for key in parents:
                    node = node.setdefault(key, {})
                node[leaf] = 1.0
            document[task] = {"seeds": list(SEEDS), "by_seed": [copy.deepcopy(entry) for _ in SEEDS]}
        files[f"{analysis}_findings.json"] = document
    for name, models in tables.items():
        rows = []
        for model, columns in models.items():
            value = model_value(model)
            row = dict(model=model, n_seeds=3, **device)
            for column in sorted(columns):
                row[column] = value
                base = re.sub(r"_(min|max)$", "", column)
                row.update(
                    {base: value, f"{base}_min": value * 0.99, f"{base}_max": value * 1.01} if base != column else {}
                )
            rows.append(row)
        files[f"{name}.csv"] = pd.DataFrame(rows)
    for name, models in real_runs.items():
        files[f"{name}_runs.csv"] = pd.DataFrame(
            [
                dict(
                    model=model, seed=seed, **device, **{column: model_value(model, seed) for column in sorted(columns)}
                )
                for (model, columns), seed in itertools.product(sorted(models.items()), SEEDS)
            ]  # fmt: skip
        )
    if scaling:
        files["scaling.csv"] = pd.DataFrame(
            [
                dict(
                    model=m,
                    quantity=q,
                    d=d,
                    value=model_value(m) * (d / 100) ** (1.0 if m == "original" else 0.5),
                    **device,
                )
                for m, q in sorted(scaling)
                for d in (100, 400, 1000)
            ]  # fmt: skip
        )
    if robust:
        rows = []
        for (factor, value), wanted in sorted(robust.items()):
            models: dict[str, set[str]] = {}
            for item in sorted(wanted):
                model, column = item.split(":")
                models.setdefault(model, set()).add(column)
            for model, seed in itertools.product(sorted(models), SEEDS):
                rows.append(dict(factor=factor, value=value, model=model, seed=seed, **device,
                                 **{column: model_value(model, seed) for column in sorted(models[model])}))  # fmt: skip
        files["robustness.csv"] = pd.DataFrame(rows)
    return files


def models_of(claim: Claim) -> list[str]:
    names = set()
    for function, args, kwargs in calls(claim):
        if function in ("first", "final", "runs", "table", "robust"):
            names.add(
                args[2] if function in ("first", "final", "runs") else args[1] if function == "table" else args[2]
            )
        elif function in ("paired", "dominance"):
            names.update(args[2:4])
        elif function == "by_seed":
            names.update(args[1:3])
        elif function == "per_seed":
            names.add(args[1])
        elif function == "robust_across":
            names.add(args[3])
        elif function in ("crossover", "sweep_rise", "sweep_ratio"):
            names.update(["cdln", "original"])
        elif function == "scaling":
            names.add(args[0])
        elif function == "robust_ratio":
            names.update([kwargs.get("a", "original"), kwargs.get("b", "cdln")])
    return sorted(names)


def perturbations(claim: Claim, files: Files) -> Iterator[Perturbation]:
    """Named plausible edits of the tables a row reads, each in place on a copy: swap two models; scale one model's
    column (errors, iterations, seconds, accuracies) by at most 10x; move it by a few of its seeds' spreads; flip a
    boolean; move a finding the same ways."""
    read = [name for name in tables_read([claim], claim.figure) if name in files]
    models = models_of(claim)
    for a, b in itertools.combinations(models, 2):
        yield f"swap {a} and {b}", _swap(read, a, b)
    for name in read:
        frame = files[name]
        if not isinstance(frame, pd.DataFrame):
            continue
        fixed = FIXED | ({"value"} if name == "robustness.csv" else set())  # there: the swept factor's value
        read_by_default = {"recovery_error", "value"}  # first/final/dominance's column, scaling's value
        columns = [c for c in frame.columns if c not in fixed and frame[c].dtype.kind in "fib"
                   and (c in read_by_default or re.search(rf"\b{c}\b", claim.measure))]  # fmt: skip
        keys = list(POINTS.get(name, ()))
        points = [None] + (
            [dict(zip(keys, p, strict=True)) for p in frame[keys].drop_duplicates().itertuples(index=False)]
            if keys
            else []
        )
        for model, column, point in itertools.product([*models, None], columns, points):
            who = f"{model or 'every model'}'s {column} in {name}" + (f" at {point}" if point else "")
            if frame[column].dtype.kind == "b":
                yield f"flip {who}", _edit(name, model, column, lambda v: ~v.astype(bool), point)
                continue
            for factor in SCALES:
                yield f"scale {who} by {factor:.3g}", _edit(name, model, column, lambda v, f=factor: v * f, point)
            for shift in SHIFTS:
                yield (f"move {who} by {shift} of its seeds' spreads",
                       _move_by_spreads(name, model, column, shift, point))  # fmt: skip
    read_findings = [
        (f"{args[0]}_findings.json", args[1], str(args[2])) for fn, args, _ in calls(claim) if fn == "finding"
    ]
    leaves = sorted({path.split("/")[-1] for _, _, path in read_findings})
    groups = [("every finding it reads", read_findings)]
    groups += [(f"every finding {leaf}", [t for t in read_findings if t[2].split("/")[-1] == leaf]) for leaf in leaves]
    groups += [(f"finding {target[1]}/{target[2]}", [target]) for target in read_findings]
    for where, targets in groups if read_findings else []:
        yield f"flip {where}", _move_findings(targets, lambda v, spread: 1.0 - v if v in (0.0, 1.0) else v)
        for factor in SCALES:
            yield f"scale {where} by {factor:.3g}", _move_findings(targets, lambda v, spread, f=factor: v * f)
        for shift in SHIFTS:
            yield (f"move {where} by {shift} of its seeds' spreads",
                   _move_findings(targets, lambda v, spread, k=shift: v + k * spread))  # fmt: skip


def _swap(names: list[str], a: str, b: str) -> Callable[[Files], None]:
    def change(files: Files) -> None:
        for name in names:
            if isinstance(files[name], pd.DataFrame) and "model" in files[name]:
                files[name] = files[name].assign(model=files[name]["model"].replace({a: b, b: a}))

    return change


def _edit(
    name: str, model: str | None, column: str, how: Callable[..., Any], point: dict[str, Any] | None = None
) -> Callable[[Files], None]:
    """Change ``column`` of ``model``'s rows (None: every model's), at one sweep ``point`` if given."""

    def change(files: Files) -> None:
        frame = files[name].copy()
        rows = frame["model"] == model if model else pd.Series(True, index=frame.index)
        for key, value in (point or {}).items():
            rows &= frame[key] == value
        if not rows.any():
            return
        takes_rows = how.__code__.co_argcount - len(how.__defaults__ or ()) == 2
        values = how(frame.loc[rows, column], frame.loc[rows]) if takes_rows else how(frame.loc[rows, column])
        if values.dtype.kind == "f":
            frame[column] = frame[column].astype(float)
        frame.loc[rows, column] = values
        files[name] = frame

    return change


def _move_by_spreads(
    name: str, model: str | None, column: str, shift: int, point: dict[str, Any] | None = None
) -> Callable[[Files], None]:
    """Move ``column`` of ``model``'s rows (None: every model's) by ``shift`` times the spread of its seeds at each
    of its points (the standard deviation over seeds of the rows that differ only by seed; errors and losses on
    a log scale)."""

    def change(files: Files) -> None:
        frame = files[name]
        if "seed" not in frame or frame[column].dtype.kind not in "fi":
            return
        frame = frame.copy()
        rows = frame["model"] == model if model else pd.Series(True, index=frame.index)
        for key, value in (point or {}).items():
            rows &= frame[key] == value
        if not rows.any():
            return
        logarithmic = column.endswith(LOGARITHMIC)
        values = frame[column].astype(float)
        scaled = np.log10(values.where(values > 0)) if logarithmic else values
        others = [c for c in frame.columns if c not in (column, "seed") and frame[c].dtype.kind not in "f"]
        spread = scaled.groupby([frame[c] for c in others], dropna=False).transform("std").fillna(0.0)
        moved = scaled + shift * spread
        frame[column] = values.where(~rows, 10.0**moved if logarithmic else moved)
        files[name] = frame

    return change


def _move_findings(
    targets: list[tuple[str, str, str]], how: Callable[[float, float], float]
) -> Callable[[Files], None]:
    """Change each target finding of every seed: ``how(value, spread)``, spread = its standard deviation over seeds."""

    def change(files: Files) -> None:
        for name, task, path in targets:
            document = files[name] = copy.deepcopy(files[name])
            *parents, leaf = path.split("/")
            entries = []
            for entry in document[task]["by_seed"]:
                for key in parents:
                    entry = entry[key]
                entries.append(entry)
            values = [float(entry[leaf]) for entry in entries]
            spread = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            for entry, value in zip(entries, values, strict=True):
                entry[leaf] = how(value, spread)

    return change


def verdict(claim: Claim, files: Files) -> str:
    """The row's verdict on ``files``: ``holds``, ``fails`` or ``within noise`` (neither), or ``not applicable``."""
    try:
        return judge(claim, Tables.in_memory(files)).decided
    except NotApplicable:
        return "not applicable"


def flipping_perturbation(claim: Claim, files: Files) -> str | None:
    """The first plausible change that flips ``claim``'s verdict on ``files`` (holds to fails or fails to holds;
    within noise flips nothing), or None. Single edits first; then two models' same column each scaled by its own
    factor (a row that places two networks at two levels at once)."""
    base = verdict(claim, files)
    if base not in ("holds", "fails"):
        return None
    for name, changes in itertools.chain(((n, [c]) for n, c in perturbations(claim, files)), _pairs(claim, files)):
        perturbed = dict(files)
        for change in changes:
            change(perturbed)
        after = verdict(claim, perturbed)
        if after in ("holds", "fails") and after != base:
            return f"{base} -> {after} with {name}"
    return None


def _pairs(claim: Claim, files: Files) -> Iterator[tuple[str, list[Callable[[Files], None]]]]:
    """Two models' same column each scaled by its own factor (at most 10x)."""
    models = models_of(claim)
    for name in tables_read([claim], claim.figure):
        frame = files.get(name)
        if not isinstance(frame, pd.DataFrame):
            continue
        columns = [c for c in frame.columns if re.search(rf"\b{c}\b", claim.measure) or c == "recovery_error"]
        for column, (a, b) in itertools.product(columns, itertools.combinations(models, 2)):
            if frame[column].dtype.kind not in "fi":
                continue
            for x, y in itertools.product(SCALES, SCALES):
                changes = [_edit(name, a, column, lambda v, f=x: v * f), _edit(name, b, column, lambda v, f=y: v * f)]
                yield f"scale {a}'s {column} in {name} by {x:.3g} and {b}'s by {y:.3g}", changes


CLAIMS = load_claims(CLAIMS_FILE)
FILES = build_tables(CLAIMS)


@functools.cache
def replication_files() -> Files:
    """The gallery replication's tables as the claims read them (name -> DataFrame or findings dict); {} if none."""
    files: Files = {}
    for packed in sorted(REPLICATION.glob("*.gz")) if REPLICATION.is_dir() else []:
        name, raw = packed.name.removesuffix(".gz"), gzip.decompress(packed.read_bytes())
        files[name] = json.loads(raw) if name.endswith(".json") else pd.read_csv(io.BytesIO(raw))
    return files


@functools.cache
def flip_of(claim_id: str) -> str | None:
    """The change that flips the row on the test's tables, else on the replication's (marked so), else None. On the
    replication's, only where the row's verdict there is the gallery's own (the tables are what it was read from)."""
    claim = next(claim for claim in CLAIMS if claim.id == claim_id)
    flip = flipping_perturbation(claim, FILES)
    if flip or not replication_files() or verdict(claim, replication_files()) != gallery_verdicts().get(claim_id):
        return flip
    flip = flipping_perturbation(claim, replication_files())
    return REPLICATION_FLIP + flip if flip else None


@functools.cache
def gallery_verdicts() -> dict[str, str]:
    """Each row's verdict in the gallery's claims table: holds, fails, within noise or not applicable."""
    table = pd.read_csv(REPLICATION.parent / "claims.csv", keep_default_na=False)
    verdicts = {}
    for row in table.itertuples():
        if row.not_evaluated:
            verdicts[row.id] = "not applicable"
        elif row.within_noise:
            verdicts[row.id] = "within noise"
        else:
            verdicts[row.id] = "holds" if str(row.holds) == "True" else "fails"
    return verdicts


def unflipped_in_record() -> set[str]:
    """The rows the record says no plausible change flips (on these tables: the header counts them apart)."""
    if not FLIPS_FILE.is_file():
        return set()
    record = pd.read_csv(FLIPS_FILE, keep_default_na=False)
    return set(record.loc[record["flipped_by"] == "", "id"])


@pytest.mark.parametrize("claim", CLAIMS, ids=[claim.id for claim in CLAIMS])
def test_every_row_can_fail(claim):
    """A row no plausible change flips fails here, unless the record lists it so (then it is an expected failure,
    named in the test report and counted apart in the claims table's header)."""
    if claim.id in unflipped_in_record():
        assert flip_of(claim.id) is None, f"{claim.id} flips now: CDLN_WRITE_FLIPS=1 pytest to record it"
        pytest.xfail("no plausible change of the test's or the replication's tables flips it (tests/expected)")
    assert flip_of(claim.id), f"{claim.id}: no plausible change of its tables flips its verdict"


def flips_record() -> str:
    """Every row's flip as CSV: id, figure, its verdict on the tables the flip was found on (the test's, unless the
    change says the replication's), the change that flips it (empty: none)."""
    rows = []
    for claim in CLAIMS:
        flip = flip_of(claim.id) or ""
        on_replication = flip.startswith(REPLICATION_FLIP)
        base = verdict(claim, replication_files() if on_replication else FILES)  # where the flip was found
        flipped_by = (REPLICATION_FLIP if on_replication else "") + flip.partition(" with ")[2]
        rows.append({"id": claim.id, "figure": claim.figure, "verdict": base, "flipped_by": flipped_by})
    return pd.DataFrame(rows).to_csv(index=False, lineterminator="\n")


def test_the_flips_are_recorded_where_the_claims_table_counts_them():
    """tests/expected/claims_flips.csv is this test's record of each row's flip (the claims table counts and links
    it); regenerate with CDLN_WRITE_FLIPS=1."""
    record = flips_record()
    if os.environ.get("CDLN_WRITE_FLIPS"):
        FLIPS_FILE.write_text(record)
    assert FLIPS_FILE.read_text() == record, "tests/expected/claims_flips.csv is out of date: CDLN_WRITE_FLIPS=1 pytest"


def test_a_row_that_cannot_fail_is_caught():
    constant = Claim(id="constant", figure="fig_mf", claim="c", paper="p", holds={"below": 10},
                     measure="0 * final(mf, r10, cdln) + 1")  # fmt: skip
    files = build_tables([constant])
    assert flipping_perturbation(constant, files) is None
    real = Claim(id="real", figure="fig_mf", claim="c", paper="p", holds={"at_most": 1},
                 measure="paired(mf, r10, cdln, original, final, over=max)")  # fmt: skip
    assert "swap cdln and original" in flipping_perturbation(real, build_tables([real]))


def test_a_row_only_a_million_fold_change_could_flip_is_caught():
    """A bound a million times above both networks' final errors: no plausible change reaches it."""
    probe = Claim(id="probe", figure="fig_mf", claim="c", paper="p", holds={"below": 1},
                  measure="max(final(mf, r10, cdln, over=max), final(mf, r10, original, over=max))")  # fmt: skip
    files = build_tables([probe])
    bound = 1e6 * judge(probe, Tables.in_memory(files)).value
    loose = Claim(id="loose", figure="fig_mf", claim="c", paper="p", holds={"below": bound}, measure=probe.measure)
    assert verdict(loose, files) == "holds" and flipping_perturbation(loose, files) is None
    tight = Claim(
        id="tight", figure="fig_mf", claim="c", paper="p", holds={"below": 3 * bound / 1e6}, measure=probe.measure
    )
    assert flipping_perturbation(tight, files) is not None
