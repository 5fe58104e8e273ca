"""The claims table as Markdown: the headline, then every claim by section and figure.

Every count is computed from the table's per-row columns (``section``, ``category``, ``holds``,
``within_noise``, ``not_evaluated``): :func:`tally` is the one place that counts, so the headline and the
table below it cannot disagree, and a test recomputes them from ``claims.csv``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from cdln.pipeline.claims.evaluate import _flag
from cdln.pipeline.claims.spec import CATEGORIES

# A row's place in the report: its section, except that the paper's rows that are not evidence have their own.
GROUP_TITLES = {
    "abstract": "The abstract's claims",
    "paper": "The paper's figures",
    "calibrated": "Counted apart: calibrated claims (a threshold or setting was fitted to the same figure)",
    "other size": "Counted apart: claims run at another size than the paper's (reported, not evidence)",
    "hardware": "Counted apart: magnitudes in seconds, which depend on the hardware (the paper's GPU, our CPU)",
    "construction": "Counted apart: claims that hold by construction (no evidence either way)",
    "ours": "Our own claims (figures that are not the paper's)",
}
SIDES = {"paper": ("abstract", "paper"), "ours": ("ours",)}


def _category(table: pd.DataFrame) -> pd.Series:
    if "category" in table:
        return table["category"].fillna("").replace("", "evidence").astype(str)
    return pd.Series("evidence", index=table.index)


def tally(table: pd.DataFrame, side: str) -> dict[str, tuple[int, int]]:
    """For the paper's claims (``side`` = paper: the abstract's and the figures') or ours: category -> (rows that
    hold, rows evaluated), plus ``within noise`` and ``not evaluated`` -> (0, rows). Decided rows only count
    under their category."""
    section = table["section"] if "section" in table else pd.Series("paper", index=table.index)
    rows = section.isin(SIDES[side])
    skipped, noisy = _flag(table, "not_evaluated") & rows, _flag(table, "within_noise") & rows
    decided = rows & ~skipped & ~noisy
    holds, category = table["holds"].astype(bool), _category(table)
    counts = {
        name: (int((holds & decided & (category == name)).sum()), int((decided & (category == name)).sum()))
        for name in CATEGORIES
    }
    return {**counts, "within noise": (0, int(noisy.sum())), "not evaluated": (0, int(skipped.sum()))}


def headline(table: pd.DataFrame) -> str:
    """'N of M paper claims hold', where M counts the evidence only; then, apart, each other category's count,
    the rows within noise and not evaluated (why); then the same for our own claims."""
    parts = []
    for side, noun in (("paper", "paper claims"), ("ours", "of our own claims")):
        counts = tally(table, side)
        if sum(n for _, n in counts.values()) == 0:
            continue
        held, evaluated = counts["evidence"]
        text = f"**{held} of {evaluated} {noun} hold**" if side == "paper" else f"{held} of {evaluated} {noun} hold"
        apart = [
            f"{name}: {h} of {n} hold"
            for name, (h, n) in counts.items()
            if name in CATEGORIES and name != "evidence" and n
        ]
        if apart:
            text += " (evidence only; counted apart, " + "; ".join(apart) + ")"
        if counts["within noise"][1]:
            text += f"; **{counts['within noise'][1]} within noise** (a timing bound inside the run's own timing noise)"
        if counts["not evaluated"][1]:
            section = table["section"] if "section" in table else pd.Series("paper", index=table.index)
            skipped = _flag(table, "not_evaluated") & section.isin(SIDES[side])
            reasons = table.loc[skipped].groupby("figure", sort=False)["not_evaluated"].first()
            why = "; ".join(f"{figure}: {reason}" for figure, reason in reasons.items())
            text += f"; **{counts['not evaluated'][1]} not evaluated** ({why})"
        parts.append(text)
    return ". ".join(parts) + "."


REPLICATION_FLIP = "on the replication's tables: "  # the record's mark of a flip found on the gallery's tables


def coverage_line(flips: Path, ids: list[str], markdown: Path) -> str:
    """How many of the table's rows a plausible change of their tables flips, counted from the record
    tests/test_claims_can_fail.py keeps (``flips``: id, figure, verdict, flipped_by), linked from ``markdown``."""
    link = os.path.relpath(flips, markdown.parent)
    if not flips.is_file():
        return f"Falsifiability: not measured ({flips} is missing; tests/test_claims_can_fail.py writes it)."
    record = pd.read_csv(flips, keep_default_na=False).set_index("id")
    known = [row for row in ids if row in record.index]
    changes = [str(record.loc[row, "flipped_by"]) for row in known]
    flipped = sum(bool(change) for change in changes)
    on_replication = sum(change.startswith(REPLICATION_FLIP) for change in changes)
    stale = f"; {len(ids) - len(known)} rows are not in the record (rerun that test)" if len(known) < len(ids) else ""
    return (
        f"Falsifiability: a plausible change (the two networks swapped, a value moved by a few seeds' spreads or "
        f"scaled by at most 10x, a finding flipped) of tables shaped like the paper grid's, or else of the gallery "
        f"replication's own tables ({on_replication} rows), flips **{flipped} of {len(known)}** rows; the other "
        f"{len(known) - flipped} were not shown able to fail (tests/test_claims_can_fail.py; [each row's change, or "
        f"none]({link})){stale}."
    )


def to_markdown(table: pd.DataFrame, config_name: str, coverage: str | None = None) -> str:
    """Every claim, by section then figure: the statement, the paper's value, ours, whether it holds (and why
    not), what it counts as, over what it was measured and on which device. ``coverage``: what the every-row
    falsifiability test measured (a line, with its record), stated under the headline."""
    holds, known, skipped = table["holds"].astype(bool), _flag(table, "deviation"), _flag(table, "not_evaluated")
    noisy = _flag(table, "within_noise")
    undecided = skipped | noisy
    holds, known = holds & ~undecided, known & ~undecided
    section = table["section"] if "section" in table else pd.Series("paper", index=table.index)
    category = _category(table)
    group_of = section.where(~(section.isin(SIDES["paper"]) & (category != "evidence")), category)
    lines = [f"# The paper's claims on this run (config `{config_name}`)", "", headline(table), ""]
    if coverage:
        lines += [coverage, ""]
    lines += [
        f"In all, {int(holds.sum())} of {int((~undecided).sum())} decided rows hold; "
        f"{int((~holds & known).sum())} do not and are known deviations, each with its measured reason below; "
        f"{int((~holds & ~known & ~undecided).sum())} do not and are not; {int(noisy.sum())} are within the "
        f"timing noise of the run that decides them; {int(skipped.sum())} were not evaluated. "
        "`measured` is computed from this run's tables by the claim's measure (config/claims.yaml); `over` says how "
        "the seeds were combined (a bound on the max, or min, over seeds holds on every seed; *paired* compares the "
        "two networks seed by seed, on the same problem instance); seconds were measured on the device named (with "
        "the engine path, in brackets, that each model's steps ran on).",
        "",
    ]
    for key, title in GROUP_TITLES.items():
        part = table[group_of == key]
        if part.empty:
            continue
        lines += [f"## {title}", ""]
        for figure, group in part.groupby("figure", sort=False):
            lines += [
                f"### {figure}",
                "",
                "| claim | paper | measured | holds | over | counted as | device |",
                "|---|---|---|---|---|---|---|",
            ]
            for row, kind in zip(group.itertuples(), _category(group), strict=True):
                verdict = "yes" if row.holds else ("no (known deviation)" if row.deviation else "**no**")
                if isinstance(getattr(row, "within_noise", ""), str) and row.within_noise:
                    verdict = "within noise"
                if isinstance(getattr(row, "not_evaluated", ""), str) and row.not_evaluated:
                    verdict = "not evaluated"
                cells = [row.claim, row.paper, f"`{row.measured}`", verdict, row.aggregation or "-",
                         kind if kind == "evidence" else f"{kind} (below)", row.device or "-"]  # fmt: skip
                lines.append("| " + " | ".join(str(cell).replace("|", "/") for cell in cells) + " |")
            labels = (("calibrated", "calibrated"), ("other size", "other_size"), ("hardware", "hardware"),
                      ("construction", "construction"))  # fmt: skip
            for label, column in labels:
                for row in group[_flag(group, column)].itertuples():
                    lines.append(f"\n- *{row.id}* ({label}): {getattr(row, column)}")
            for row in group[_flag(group, "deviation")].itertuples():
                lines.append(f"\n- *{row.id}*: {row.deviation}")
            skipped_here = group[_flag(group, "not_evaluated")]
            if not skipped_here.empty:
                lines.append(f"\n- not evaluated: {skipped_here['not_evaluated'].iloc[0]}")
            lines.append("")
    return "\n".join(lines) + "\n"
