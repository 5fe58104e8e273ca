"""The claims table as Markdown: the headline, then every claim by section and figure."""

from __future__ import annotations

import pandas as pd

from cdln.pipeline.claims.evaluate import _flag

SECTION_TITLES = {
    "abstract": "The abstract's claims",
    "paper": "The paper's figures",
    "calibrated": "Calibrated claims (reported apart: a threshold or setting was fitted to the same figure)",
    "ours": "Our own claims (figures that are not the paper's)",
}


def headline(table: pd.DataFrame) -> str:
    """'N of M evaluated paper claims hold; J within noise; K not evaluated (why)', the calibrated ones apart,
    and the same for our own claims. Rows within noise or not evaluated are in neither N nor M."""
    holds, calibrated, skipped = table["holds"].astype(bool), _flag(table, "calibrated"), _flag(table, "not_evaluated")
    noisy = _flag(table, "within_noise")
    section = table["section"] if "section" in table else pd.Series("paper", index=table.index)
    paper = section.isin(["abstract", "paper"]) & ~skipped & ~noisy
    counted, ours = paper & ~calibrated, (section == "ours") & ~skipped & ~noisy
    text = (
        f"**{int((holds & counted).sum())} of {int(counted.sum())} evaluated paper claims hold** "
        f"({int((paper & calibrated).sum())} calibrated, reported apart: {int((holds & paper & calibrated).sum())} "
        f"of them hold)"
    )
    if noisy.any():
        text += (
            f"; **{int(noisy.sum())} within noise** (timing rows whose bound lies inside their measure's spread "
            "over seeds: neither hold nor fail)"
        )
    if skipped.any():
        reasons = table.loc[skipped].groupby("figure", sort=False)["not_evaluated"].first()
        why = "; ".join(f"{figure}: {reason}" for figure, reason in reasons.items())
        text += f"; **{int(skipped.sum())} not evaluated** ({why})"
    if ours.any():
        text += f"; {int((holds & ours).sum())} of {int(ours.sum())} of our own claims hold"
    return text + "."


def to_markdown(table: pd.DataFrame, config_name: str) -> str:
    """Every claim, by section then figure: the statement, the paper's value, ours, whether it holds
    (and why not), over what it was measured and on which device."""
    holds, known, skipped = table["holds"].astype(bool), _flag(table, "deviation"), _flag(table, "not_evaluated")
    noisy = _flag(table, "within_noise")
    skipped_or_noisy = skipped | noisy
    holds, known = holds & ~skipped_or_noisy, known & ~skipped_or_noisy
    section = table["section"] if "section" in table else pd.Series("paper", index=table.index)
    group_of = section.where(~(_flag(table, "calibrated") & section.isin(["abstract", "paper"])), "calibrated")
    lines = [
        f"# The paper's claims on this run (config `{config_name}`)",
        "",
        headline(table),
        "",
        f"In all, {int(holds.sum())} of {int((~skipped_or_noisy).sum())} evaluated rows hold; "
        f"{int((~holds & known).sum())} do not and are known deviations, each with its measured reason below; "
        f"{int((~holds & ~known & ~skipped_or_noisy).sum())} do not and are not; {int(noisy.sum())} are within the "
        f"noise of their seconds (the bound inside the measure's spread over seeds, given in `over`); "
        f"{int(skipped.sum())} were not evaluated. "
        "`measured` is computed from this run's tables by the claim's measure (config/claims.yaml); `over` says how "
        "the seeds were combined (a bound on the max, or min, over seeds holds on every seed; *paired* compares the "
        "two networks seed by seed, on the same problem instance); seconds were measured on the device named (with "
        "the engine path, in brackets, that each model's steps ran on).",
        "",
    ]
    for key, title in SECTION_TITLES.items():
        part = table[group_of == key]
        if part.empty:
            continue
        lines += [f"## {title}", ""]
        for figure, group in part.groupby("figure", sort=False):
            lines += [
                f"### {figure}",
                "",
                "| claim | paper | measured | holds | over | calibrated | device |",
                "|---|---|---|---|---|---|---|",
            ]
            for row in group.itertuples():
                verdict = "yes" if row.holds else ("no (known deviation)" if row.deviation else "**no**")
                if isinstance(getattr(row, "within_noise", ""), str) and row.within_noise:
                    verdict = "within noise"
                if isinstance(getattr(row, "not_evaluated", ""), str) and row.not_evaluated:
                    verdict = "not evaluated"
                calibrated = "yes (below)" if row.calibrated else "no"
                cells = [row.claim, row.paper, f"`{row.measured}`", verdict, row.aggregation or "-", calibrated,
                         row.device or "-"]  # fmt: skip
                lines.append("| " + " | ".join(str(cell).replace("|", "/") for cell in cells) + " |")
            for row in group[_flag(group, "calibrated")].itertuples():
                lines.append(f"\n- *{row.id}* (calibrated): {row.calibrated}")
            for row in group[_flag(group, "deviation")].itertuples():
                lines.append(f"\n- *{row.id}*: {row.deviation}")
            skipped_here = group[_flag(group, "not_evaluated")]
            if not skipped_here.empty:
                lines.append(f"\n- not evaluated: {skipped_here['not_evaluated'].iloc[0]}")
            lines.append("")
    return "\n".join(lines) + "\n"
