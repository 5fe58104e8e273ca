"""Claims as data: the claims file's rows, loaded and checked, and the expression evaluator of their measures."""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdln.pipeline.claims.measures import BUILTINS, FUNCTIONS, ClaimError, Tables

PREDICATES = ("above", "below", "at_least", "at_most", "between", "equals")
SECTIONS = ("abstract", "paper", "ours")
CLAIM_KEYS = ("id", "figure", "section", "claim", "paper", "measure", "holds", "absolute", "calibrated", "other_size",
              "hardware", "construction", "deviation")  # fmt: skip
PAPER_GRID = "paper"  # the output_root of the paper grid (config/config.yaml), whose notes may be bare strings
# Placeholders in a note: an expression of the measure language in braces, or {measured}, filled in at evaluation
NOTE_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
# What kind of evidence a row is (column ``category``, from the claim's labels, the first that applies): only
# ``evidence`` rows make the headline's count; the others are counted apart, each under its own name.
CATEGORIES = {
    "evidence": "evidence",
    "calibrated": "calibrated (a threshold or setting fitted to the same figure)",
    "other size": "at another size than the paper's (reported, not evidence)",
    "hardware": "a magnitude in seconds, which depends on the hardware (the paper's, probably a GPU; ours, a CPU)",
    "construction": "fixed by construction (it holds for any run, so it is no evidence)",
}
COLUMNS = [
    "figure",
    "section",
    "id",
    "claim",
    "paper",
    "measured",
    "holds",
    "aggregation",
    "device",
    "calibrated",
    "other_size",  # what differs from the paper's size, where the row runs at another (then not evidence)
    "hardware",  # why the row's magnitude in seconds depends on the hardware (then not evidence)
    "construction",  # why the row holds by construction, whatever the run (then not evidence)
    "category",  # the first of calibrated, other size, hardware that the row is; else evidence
    "measure",
    "deviation",
    "not_evaluated",  # why a row was not evaluated (its data is absent) and the step that would evaluate it
    "within_noise",  # a timing row whose bound lies inside its measure's spread over seeds: neither holds nor fails
]
ID = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@dataclass(frozen=True)
class Claim:
    id: str
    figure: str
    claim: str
    paper: str
    measure: str
    holds: Mapping[str, Any]
    section: str = "paper"
    absolute: bool = False
    calibrated: str | None = None  # what was fitted to the same figure, if anything
    other_size: str | None = None  # what differs from the paper's size, where the row runs at another
    hardware: str | None = None  # why its magnitude in seconds depends on the hardware
    construction: str | None = None  # why it holds by construction, whatever the run
    deviation: str | Mapping[str, str] | None = None  # per grid (output_root); a bare note is the paper grid's

    def note_for(self, grid: str) -> str | None:
        """The known-deviation note written for ``grid`` (the config's ``output_root``), if any: a note says why the
        row fails where it was measured, so on another grid it is no excuse."""
        if isinstance(self.deviation, Mapping):
            return self.deviation.get(grid)
        return self.deviation if grid == PAPER_GRID else None

    @property
    def category(self) -> str:
        """The first of calibrated, other size, hardware that the row is (:data:`CATEGORIES`); else evidence."""
        labels = {"calibrated": self.calibrated, "other size": self.other_size, "hardware": self.hardware,
                  "construction": self.construction}  # fmt: skip
        return next((name for name, label in labels.items() if label), "evidence")

    def bounds(self) -> list[float]:
        """The numbers the predicate compares with."""
        ((_, bound),) = self.holds.items()
        return [float(b) for b in bound] if isinstance(bound, (list, tuple)) else [float(bound)]

    def check(self, value: float) -> bool:
        """Whether ``value`` satisfies this claim's predicate (NaN never does)."""
        if value is None or math.isnan(value):
            return False
        ((kind, bound),) = self.holds.items()
        if kind == "between":
            return bound[0] <= value <= bound[1]
        if kind == "equals":
            return abs(value - bound) <= 1e-12 * max(1.0, abs(bound))
        return {"above": value > bound, "below": value < bound, "at_least": value >= bound, "at_most": value <= bound}[
            kind
        ]

    def calls(self) -> list[tuple[str, list[str]]]:
        """(function, leading name arguments) of every call in the measure (which tables it reads)."""
        return [(node.func.id, [_name(a) for a in node.args]) for node in ast.walk(_parse(self))
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)]  # fmt: skip


def load_claims(path: str | Path) -> list[Claim]:
    """The claims of a claims file, checked: known keys, unique ids, a single known predicate, a measure
    that parses and calls only known functions."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ClaimError(f"claims file {path} does not exist")
    entries = yaml.safe_load(path.read_text())
    if not isinstance(entries, list):
        raise ClaimError(f"{path}: a list of claims is expected")
    claims, ids = [], set()
    for index, entry in enumerate(entries):
        where = f"{path}: claim {entry.get('id', index) if isinstance(entry, dict) else index}"
        if not isinstance(entry, dict):
            raise ClaimError(f"{where}: a mapping is expected")
        unknown = sorted(set(entry) - set(CLAIM_KEYS))
        missing = [key for key in ("id", "figure", "claim", "paper", "measure", "holds") if key not in entry]
        if unknown or missing:
            raise ClaimError(f"{where}: unknown keys {unknown}, missing keys {missing}; valid: {list(CLAIM_KEYS)}")
        if not ID.match(str(entry["id"])) or entry["id"] in ids:
            raise ClaimError(f"{where}: ids must be unique and match {ID.pattern}")
        ids.add(entry["id"])
        holds = entry["holds"]
        if not isinstance(holds, dict) or len(holds) != 1 or next(iter(holds)) not in PREDICATES:
            raise ClaimError(f"{where}: holds must be one of {list(PREDICATES)} with its bound; got {holds!r}")
        if entry.get("section", "paper") not in SECTIONS:
            raise ClaimError(f"{where}: section must be one of {list(SECTIONS)}; got {entry['section']!r}")
        deviation = entry.get("deviation")
        notes = deviation.values() if isinstance(deviation, dict) else [deviation] if deviation else []
        if not all(isinstance(note, str) for note in notes):
            raise ClaimError(f"{where}: deviation must be a note, or a mapping of grid (output_root) -> note")
        for note in notes:
            for expression in NOTE_PLACEHOLDER.findall(note):
                if expression != "measured":
                    try:
                        ast.parse(expression, mode="eval")
                    except SyntaxError:
                        raise ClaimError(f"{where}: the note's placeholder {{{expression}}} does not parse") from None
        claim = Claim(**{key: entry[key] for key in CLAIM_KEYS if key in entry})
        for function, _ in claim.calls():
            if function not in FUNCTIONS and function not in BUILTINS:
                raise ClaimError(
                    f"{where}: unknown function {function!r} in the measure; known: {sorted([*FUNCTIONS, *BUILTINS])}"
                )
        claims.append(claim)
    return claims


def tables_read(claims: list[Claim], figure: str) -> list[str]:
    """File names (under tables/) the claims of ``figure`` read: a figure's claims rule depends on them."""
    files: dict[str, None] = {}
    for claim in claims:
        if claim.figure != figure:
            continue
        for function, names in claim.calls():
            if function in ("first", "final", "paired", "dominance"):
                files[f"{names[0]}_curves.csv"] = None
            if function in ("first", "runs", "crossover", "sweep_rise", "sweep_ratio", "final", "paired", "dominance"):
                files[f"{names[0]}_runs.csv"] = None  # device names, and the runs themselves
            elif function == "finding":
                files[f"{names[0]}_findings.json"] = None
            elif function == "table":
                files[f"{names[0]}.csv"] = None
            elif function in ("by_seed", "per_seed"):
                files[f"{names[0]}_runs.csv"] = None
            elif function == "scaling":
                files["scaling.csv"] = None
            elif function in ("robust", "robust_ratio", "robust_across"):
                files["robustness.csv"] = None
    return list(files)


# ---- evaluation ----


def _parse(claim: Claim) -> ast.Expression:
    try:
        return ast.parse(claim.measure, mode="eval")
    except SyntaxError as error:
        raise ClaimError(f"claim {claim.id}: measure {claim.measure!r} does not parse: {error.msg}") from None


def _name(node: ast.AST) -> str:
    return node.id if isinstance(node, ast.Name) else str(getattr(node, "value", ""))


def _value(node: ast.AST, tables: Tables, claim: Claim) -> Any:
    """Evaluate an allowed expression node: numbers, names (as strings), + - * /, calls."""
    if isinstance(node, ast.Expression):
        return _value(node.body, tables, claim)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)):
        return node.value
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_value(node.operand, tables, claim)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
        left, right = _value(node.left, tables, claim), _value(node.right, tables, claim)
        if isinstance(node.op, ast.Div):
            return left / right if right != 0 else math.nan
        return {ast.Add: left + right, ast.Sub: left - right, ast.Mult: left * right}[type(node.op)]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        args = [_value(arg, tables, claim) for arg in node.args]
        kwargs = {kw.arg: _value(kw.value, tables, claim) for kw in node.keywords}
        if node.func.id in BUILTINS:
            return BUILTINS[node.func.id](*args)
        return FUNCTIONS[node.func.id](tables, *args, **kwargs)
    raise ClaimError(f"claim {claim.id}: {ast.unparse(node)!r} is not allowed in a measure")
