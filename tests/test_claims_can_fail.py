"""Every row of config/claims.yaml can fail: for each row, some perturbation of its input tables flips its
verdict. The tables are built for the test from what the rows read (the paper grid's experiments, panels,
models, findings and tables), absolute and timing rows included; a row with no flipping perturbation is a
failure naming the row, so a row added without a way to fail fails here."""

from __future__ import annotations

import ast
import copy
import functools
import itertools
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

from cdln.pipeline.claims import FUNCTIONS, Claim, Tables, load_claims, measure, tables_read

CLAIMS_FILE = REPO / "config" / "claims.yaml"
SEEDS = (0, 1, 2)
ITERATIONS = np.arange(0, 20_001, 200)
ALPHAS = np.arange(0.5, 3.01, 0.25)
DECADES_PER_1000 = {"cdln": 1.0, "original": 0.8, "bm": 0.6, "narrow": 0.7, "yaras": 0.9}  # error's decay
SECONDS_PER_ITERATION = {"cdln": 1e-4, "original": 5e-4, "bm": 2e-4, "narrow": 3e-4, "yaras": 4e-4}
FIXED = {"seed", "alpha", "d", "n_seeds", "factor", "panel", "model"}  # never perturbed
FACTORS = (0.9, 1.1, *(10.0 ** (k / 8) for k in range(-48, 49) if k), 1e-20, 1e20, 1e-30, 1e30)
POWERS = tuple(10.0 ** (k / 8) for k in range(-16, 9) if k)  # errors raised to a power: their decades scaled
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
    device = {"device": "cpu", "device_name": "cpu (1 threads)", "engine_path": "native-dense"}
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
                for column in run_columns - set(runs[-1]):  # other columns of the runs table, e.g. params_model
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
            for column in columns:
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
                dict(model=model, seed=seed, **device, **{column: model_value(model, seed) for column in columns})
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
            for item in wanted:
                model, column = item.split(":")
                models.setdefault(model, set()).add(column)
            for model, seed in itertools.product(sorted(models), SEEDS):
                rows.append(dict(factor=factor, value=value, model=model, seed=seed, **device,
                                 **{column: model_value(model, seed) for column in models[model]}))  # fmt: skip
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
    """Named edits of the tables a row reads, each in place on a copy: swap two models, scale one model's
    column (errors, iterations, seconds, accuracies) up or down, tilt a sweep's column with alpha, move a
    finding, flip a boolean."""
    read = [name for name in tables_read([claim], claim.figure) if name in files]
    models = models_of(claim)
    constants = sorted({*claim.bounds(), 0.0, 1.0, *_constants(claim)})
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
            for factor in FACTORS if point is None else FACTORS[2::4]:
                yield f"scale {who} by {factor:g}", _edit(name, model, column, lambda v, f=factor: v * f, point)
            for power in POWERS if column.endswith(("error", "loss")) else ():
                yield f"raise {who} to {power:.3g}", _edit(name, model, column, lambda v, q=power: v**q, point)
            for constant in constants:
                yield f"set {who} to {constant:g}", _edit(name, model, column, lambda v, c=constant: v * 0 + c, point)
            if "alpha" in frame and point is None:
                for power in (-4, 4):
                    yield (f"tilt {who} by alpha^{power}",
                           _edit(name, model, column, lambda v, rows, p=power: v * rows["alpha"] ** p))  # fmt: skip
        if name.endswith(("_curves.csv", "_runs.csv")):
            continue
        for (a, b), column in itertools.product(itertools.permutations(models, 2), columns):
            yield f"copy {b}'s {column} to {a} in {name}", _copy(name, a, b, column)
    read_findings = [
        (f"{args[0]}_findings.json", args[1], str(args[2])) for fn, args, _ in calls(claim) if fn == "finding"
    ]
    changes = [(f"x {f:g}", lambda v, f=f: v * f) for f in FACTORS] + [
        (f"to {c:g}", lambda v, c=c: c) for c in constants
    ]
    leaves = sorted({path.split("/")[-1] for _, _, path in read_findings})
    groups = [("every finding it reads", read_findings)]
    groups += [(f"every finding {leaf}", [t for t in read_findings if t[2].split("/")[-1] == leaf]) for leaf in leaves]
    groups += [(f"finding {target[1]}/{target[2]}", [target]) for target in read_findings]
    for (label, change), (where, targets) in itertools.product(changes, groups if read_findings else []):
        yield f"move {where} {label}", _move_findings(targets, change)


def _constants(claim: Claim) -> list[float]:
    """The numbers a measure compares against (``abs(x - 6000)``), outside its calls' arguments."""
    tree = ast.parse(claim.measure, mode="eval")
    inside = {id(n) for call in ast.walk(tree) if isinstance(call, ast.Call) and call.func.id in FUNCTIONS
              for arg in [*call.args, *call.keywords] for n in ast.walk(arg)}  # fmt: skip
    return [float(n.value) for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, (int, float))
            and id(n) not in inside]  # fmt: skip


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


def _copy(name: str, a: str, b: str, column: str) -> Callable[[Files], None]:
    """Give model ``a`` model ``b``'s ``column`` (row for row, in the table's order)."""

    def change(files: Files) -> None:
        frame = files[name].copy()
        rows_a, rows_b = frame["model"] == a, frame["model"] == b
        if rows_a.sum() == rows_b.sum() > 0:
            frame.loc[rows_a, column] = frame.loc[rows_b, column].to_numpy()
            files[name] = frame

    return change


def _move_findings(targets: list[tuple[str, str, str]], how: Callable[[float], float]) -> Callable[[Files], None]:
    def change(files: Files) -> None:
        for name, task, path in targets:
            document = files[name] = copy.deepcopy(files[name])
            for entry in document[task]["by_seed"]:
                *parents, leaf = path.split("/")
                for key in parents:
                    entry = entry[key]
                entry[leaf] = how(float(entry[leaf]))

    return change


def verdict(claim: Claim, files: Files) -> bool:
    value = measure(claim, Tables.in_memory(files))
    return claim.check(value) if not math.isnan(value) else False


def flipping_perturbation(claim: Claim, files: Files) -> str | None:
    """The first perturbation that flips ``claim``'s verdict on ``files``, or None. Single edits first; then
    two models' same column changed each by its own factor or power (a row that places two networks at two
    levels at once)."""
    base = verdict(claim, files)
    for name, changes in itertools.chain(((n, [c]) for n, c in perturbations(claim, files)), _pairs(claim, files)):
        perturbed = dict(files)
        for change in changes:
            change(perturbed)
        if verdict(claim, perturbed) != base:
            return f"{'holds' if base else 'fails'} -> {'fails' if base else 'holds'} with {name}"
    return None


def _pairs(claim: Claim, files: Files) -> Iterator[tuple[str, list[Callable[[Files], None]]]]:
    """Two models' same column each raised to its own power (errors), then each scaled by its own factor."""
    factors = [10.0 ** (k / 8) for k in range(-16, 17) if k]
    models = models_of(claim)
    for op in ("raise", "scale"):
        for name in tables_read([claim], claim.figure):
            frame = files.get(name)
            if not isinstance(frame, pd.DataFrame):
                continue
            columns = [c for c in frame.columns if re.search(rf"\b{c}\b", claim.measure) or c == "recovery_error"]
            for column, (a, b) in itertools.product(columns, itertools.combinations(models, 2)):
                if frame[column].dtype.kind not in "fi" or (op == "raise" and not column.endswith(("error", "loss"))):
                    continue
                grid = POWERS if op == "raise" else factors
                for x, y in itertools.product(grid, grid):
                    how = (lambda v, q=x: v**q, lambda v, q=y: v**q) if op == "raise" else (
                        lambda v, f=x: v * f, lambda v, f=y: v * f)  # fmt: skip
                    yield (f"{op} {a}'s {column} in {name} by {x:.3g} and {b}'s by {y:.3g}",
                           [_edit(name, a, column, how[0]), _edit(name, b, column, how[1])])  # fmt: skip


CLAIMS = load_claims(CLAIMS_FILE)
FILES = build_tables(CLAIMS)


@functools.cache
def flip_of(claim_id: str) -> str | None:
    return flipping_perturbation(next(claim for claim in CLAIMS if claim.id == claim_id), FILES)


@pytest.mark.parametrize("claim", CLAIMS, ids=[claim.id for claim in CLAIMS])
def test_every_row_can_fail(claim):
    assert flip_of(claim.id), f"{claim.id}: no perturbation of its tables flips its verdict"


def test_the_claims_file_states_its_measured_coverage():
    flipped = sum(flip_of(claim.id) is not None for claim in CLAIMS)
    stated = re.search(
        r"Coverage, measured by tests/test_claims_can_fail.py: (\d+) of (\d+) rows", CLAIMS_FILE.read_text()
    )
    assert stated, "config/claims.yaml's header states no measured coverage"
    assert (int(stated[1]), int(stated[2])) == (flipped, len(CLAIMS))


def test_a_row_that_cannot_fail_is_caught():
    constant = Claim(id="constant", figure="fig_mf", claim="c", paper="p", holds={"below": 10},
                     measure="0 * final(mf, r10, cdln) + 1")  # fmt: skip
    files = build_tables([constant])
    assert flipping_perturbation(constant, files) is None
    real = Claim(id="real", figure="fig_mf", claim="c", paper="p", holds={"at_most": 1},
                 measure="paired(mf, r10, cdln, original, final, over=max)")  # fmt: skip
    assert "swap cdln and original" in flipping_perturbation(real, build_tables([real]))
