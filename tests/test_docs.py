"""Every documented example runs, and every relative link and anchor of the docs resolves.

The code blocks of README.md, docs/*.md, config/README.md and resources/README.md run in order, per page, in a
fresh folder: ``python`` blocks in one interpreter each (a page's earlier blocks run first, so a page reads as
one session), ``bash`` blocks line by line: ``cdln`` commands for real, ``snakemake`` commands as dry runs in a
copy of the workflow (they would take minutes to hours), all of them in that copy. A block preceded by
``<!-- file: path -->`` is a file the page has the reader save: it is written there, not run. A block preceded by
``<!-- not run: why -->`` is left out, and must say why (the full replication, a cluster, the network).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, cli_env, pipeline_copy

PAGES = sorted(
    [REPO / "README.md", REPO / "config" / "README.md", REPO / "resources" / "README.md", *(REPO / "docs").glob("*.md")]
)
GALLERY_PAGES = sorted((REPO / "docs" / "gallery").glob("*.md"))
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
NOT_RUN = re.compile(r"<!--\s*not run:\s*(.*?)\s*-->\s*$")
SAVED_AS = re.compile(r"<!--\s*file:\s*(\S+)\s*-->\s*$")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def code_blocks(page: Path) -> list[tuple[str, str, str | None]]:
    """(language, code, why it is not run or None) of every fenced block of ``page``, in order."""
    return [(language, code, skip) for language, code, skip, _ in annotated_blocks(page)]


def annotated_blocks(page: Path) -> list[tuple[str, str, str | None, str | None]]:
    """(language, code, why it is not run or None, the file it is saved as or None) of every fenced block."""
    text = page.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").splitlines()
        skip = NOT_RUN.search(before[-1]) if before else None
        saved = SAVED_AS.search(before[-1]) if before else None
        blocks.append((match[1], match[2], skip[1] if skip else None, saved[1] if saved else None))
    return blocks


def commands(code: str) -> list[str]:
    """A bash block's commands: continuation lines joined, comments and blank lines dropped."""
    joined = code.replace("\\\n", " ")
    return [line.split(" #")[0].strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")]


def run_bash_line(line: str, cwd: Path, workflow: Path) -> subprocess.CompletedProcess:
    words = shlex.split(line)
    program = words[0].removeprefix(".venv/bin/")
    if program == "python" and words[1:3] == ["-m", "cdln"]:
        program, words = "cdln", words[2:]
    env = cli_env()
    if program == "cdln":
        return subprocess.run([sys.executable, "-m", "cdln", *words[1:]], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=600)  # fmt: skip
    if program == "snakemake":  # a dry run: the targets, flags and config files the line names are valid
        dry = [sys.executable, "-m", "snakemake", *words[1:], "--dry-run", "--quiet", "rules"]
        return subprocess.run(dry, cwd=workflow, env=env, capture_output=True, text=True, timeout=600)
    pytest.fail(f"a bash line of the docs runs {program!r}: run only cdln and snakemake, or mark the block not run")


def failures_of_page(page: Path, folder: Path) -> list[str]:
    """Run ``page``'s code blocks in ``folder`` (module docstring); what failed, or []."""
    python_so_far, failed = "", []
    workflow = folder = pipeline_copy(folder)
    for language, code, not_run, saved_as in annotated_blocks(page):
        if not_run is not None:
            if not not_run.strip():
                failed.append("a block marked not run must say why")
            continue
        if saved_as is not None:
            (folder / saved_as).parent.mkdir(parents=True, exist_ok=True)
            (folder / saved_as).write_text(code)
        elif language == "python":
            python_so_far += code + "\n"
            done = subprocess.run([sys.executable, "-c", python_so_far], cwd=folder, env=cli_env(),
                                  capture_output=True, text=True, timeout=600)  # fmt: skip
            if done.returncode != 0:
                failed.append(f"python block failed:\n{code}\n{done.stderr[-3000:]}")
        elif language in ("bash", "sh", "shell"):
            for line in commands(code):
                done = run_bash_line(line, folder, workflow)
                if done.returncode != 0:
                    failed.append(f"`{line}` failed:\n{done.stdout[-1500:]}{done.stderr[-3000:]}")
        elif language not in ("", "text", "yaml", "json", "markdown"):
            failed.append(f"unknown block language {language!r}")
    return failed


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_code_block_runs(page: Path, tmp_path: Path) -> None:
    failed = failures_of_page(page, tmp_path)
    assert not failed, f"{page.relative_to(REPO)}: " + "\n".join(failed)


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of ``page``'s headings: lower case, punctuation dropped, spaces to hyphens."""
    names = set()
    in_code = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if not in_code and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            names.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return names


def broken_links(page: Path) -> list[str]:
    """The relative links and anchors of ``page`` that do not resolve in a clone."""
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target} (no such file in a clone)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no heading #{anchor} in {resolved.name})")
    return broken


@pytest.mark.parametrize("page", PAGES + GALLERY_PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    broken = broken_links(page)
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_the_checks_can_fail(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# A title\n\n[ok](page.md#a-title) [gone](nowhere.md) [bad](page.md#nothing)\n")
    assert broken_links(page) == [
        "nowhere.md (no such file in a clone)",
        "page.md#nothing (no heading #nothing in page.md)",
    ]
    page.write_text("<!-- not run: the network -->\n```bash\ncurl x\n```\n\n```python\nx = 1\n```\n\n"
                    "```python\nraise SystemExit(x + 2)\n```\n")  # fmt: skip
    assert [(language, why) for language, _, why in code_blocks(page)] == [
        ("bash", "the network"),
        ("python", None),
        ("python", None),
    ]
    failed = failures_of_page(page, tmp_path)
    assert len(failed) == 1 and "raise SystemExit(x + 2)" in failed[0]  # the second block saw the first's x
