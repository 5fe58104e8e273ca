"""The gallery: a full replication's figures, claims table and summary, copied into a tracked folder
(``docs/gallery/``) with a stamp saying what made them, so that a newcomer sees every figure before a run. The
tables the claims were computed from go beside them, gzipped (``tables/``: a referee can recompute any row, and
tests/test_claims_can_fail.py tries its plausible changes on them). The HTML report (megabytes: every figure
inlined) is regenerated, not tracked: ``snakemake --report``.

The stamp (``stamp.json``, and its first lines in ``README.md`` there) holds the commit the runs were made with
and whether the checkout had uncommitted changes (from the run records), the date, the machine (cores, GPU or
none), the elapsed time of the Snakemake run that built the default target, and the library versions.
"""

from __future__ import annotations

import contextlib
import datetime
import gzip
import json
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from cdln.outputs import atomic_directory, json_default

STAMP = "stamp.json"
RUN_LOG = "run.snakemake.log"  # the Snakemake log of the run the gallery shows
TABLES = "tables"  # the run's tables the claims read, each gzipped (<name>.gz)
LOG_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{6})\.\d+\.snakemake\.log$")


def run_elapsed(log_dir: str | Path) -> dict[str, Any] | None:
    """Start, end and seconds of the latest Snakemake run (``.snakemake/log``) that built the default target
    (its log names ``rule all`` / ``localrule all``): the start from the log's name, the end from its last write;
    and its job-seconds per workload (:func:`cdln.pipeline.jobtimes.summary`)."""
    from cdln.pipeline import jobtimes

    logs = sorted(Path(log_dir).glob("*.snakemake.log"), reverse=True)
    for log in logs:
        match = LOG_NAME.match(log.name)
        if not match or not re.search(r"^(local)?rule all:", log.read_text(errors="replace"), flags=re.M):
            continue
        start = datetime.datetime.strptime(match.group(1), "%Y-%m-%dT%H%M%S")
        end = datetime.datetime.fromtimestamp(log.stat().st_mtime)
        return {
            "start": start.isoformat(),
            "end": end.isoformat(timespec="seconds"),
            "seconds": int((end - start).total_seconds()),
            "log": log.name,
            "job_seconds": {key: round(value) for key, value in jobtimes.summary(log).items()},
        }
    return None


def _machine() -> dict[str, Any]:
    gpus = []
    if shutil.which("nvidia-smi"):
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
        gpus = [line for line in listed.stdout.splitlines() if line.strip()] if listed.returncode == 0 else []
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").is_file():
        names = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), flags=re.M)
        cpu = names[0] if names else cpu
    return {"cores": os.cpu_count(), "cpu": cpu, "gpu": gpus or "none", "platform": platform.platform()}


def _record_environment(root: Path) -> dict[str, Any]:
    """The environment (versions, git commit) of the run records under ``root``: every record must agree on the
    commit, else the gallery would mix code versions."""
    environments = [json.loads(path.read_text())["environment"] for path in sorted(root.glob("runs/**/record.json"))]
    if not environments:
        raise ValueError(f"{root} holds no run records: run the replication first")
    commits = {json.dumps(env.get("git"), sort_keys=True) for env in environments}
    if len(commits) > 1:
        raise ValueError(f"the run records under {root} come from {len(commits)} code versions: {sorted(commits)}")
    return environments[0]


def refusal(gallery: str | None, output_root: str, replication: list[str]) -> str | None:
    """Why ``snakemake gallery`` cannot copy now (None when it can): the config has no gallery (the reduced grid),
    or the files of the default target (``replication``) are not all there; says how long a replication takes."""
    if not gallery:
        return (
            f"the gallery shows the paper grid's replication; this config ({output_root}) has none: run it without "
            "--configfile"
        )
    missing = [path for path in replication if not Path(path).exists()]
    if not missing:
        return None
    last = ""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        stamp = json.loads((Path(gallery) / STAMP).read_text())
        last = f" (the last took {stamp['run']['seconds'] // 60} min on {stamp['machine']['cores']} cores)"
    return (
        f"it copies a finished replication, and {len(missing)} of its {len(replication)} files are missing (e.g. "
        f"{missing[0]}): run the replication first, `snakemake --cores all`{last}, then this"
    )


def make_gallery(root: str | Path, out: str | Path, log_dir: str | Path = ".snakemake/log") -> dict[str, Any]:
    """Copy ``root``'s figures (PNG), claims table and summary into the folder ``out`` and write the stamp; returns
    it. The folder is replaced whole, atomically, when it holds only an earlier gallery (what cdln wrote there);
    any other file there is refused by name."""
    root, out = Path(root), Path(out)
    required = [root / "tables" / "claims.md", root / "tables" / "claims.csv", root / "tables" / "summary.md"]
    missing = [str(path) for path in required if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"the gallery needs a finished replication; missing {missing}")
    environment = _record_environment(root)
    sources = [*sorted((root / "figures").glob("*.png")), *required]
    stamp = {
        "commit": environment.get("git", {}).get("commit"),
        "dirty": environment.get("git", {}).get("dirty"),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "run": run_elapsed(log_dir),
        "versions": {key: value for key, value in environment.items() if key != "git"},
        "files": [source.name for source in sources],
    }
    with atomic_directory(out, what="the gallery folder") as staging:
        for source in sources:
            shutil.copyfile(source, staging / source.name)
            if source.suffix == ".md":  # a link out of the run's folder (a tracked record) must hold from here too
                text = source.read_text()
                (staging / source.name).write_text(repoint_links(text, source.parent, out, root))
        (staging / TABLES).mkdir()
        for table in claim_tables(root):
            # mtime=0: the same table gives the same bytes, so an unchanged table is no change in git
            with gzip.GzipFile(staging / TABLES / f"{table.name}.gz", "wb", mtime=0) as packed:
                packed.write(table.read_bytes())
        if stamp["run"]:  # the run's own log: its job-seconds can be recomputed (cdln job-times)
            shutil.copyfile(Path(log_dir) / stamp["run"]["log"], staging / RUN_LOG)
        (staging / STAMP).write_text(json.dumps(stamp, indent=2, sort_keys=True, default=json_default) + "\n")
        (staging / "README.md").write_text(stamp_markdown(stamp))
    return stamp


def claim_tables(root: Path) -> list[Path]:
    """The tables of the run at ``root`` that claims read (``tables/*.csv`` and ``*.json``), without the claims
    table and the summary themselves."""
    tables = [*sorted((root / "tables").glob("*.csv")), *sorted((root / "tables").glob("*.json"))]
    return [table for table in tables if not table.name.startswith(("claims", "summary", "."))]


def repoint_links(text: str, source_dir: Path, out: Path, root: Path) -> str:
    """``text`` (Markdown read from ``source_dir``) with each relative link to a file outside ``root`` made relative
    to ``out`` instead; links inside ``root`` stay (the gallery copies what they point at beside them)."""

    def repoint(match: re.Match[str]) -> str:
        target = match[2]
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            return match[0]
        path, _, anchor = target.partition("#")
        resolved = (source_dir / path).resolve()
        if resolved.is_relative_to(root.resolve()) or not resolved.exists():
            return match[0]
        moved = os.path.relpath(resolved, out.resolve()) + (f"#{anchor}" if anchor else "")
        return f"{match[1]}({moved})"

    return re.sub(r"(!?\[[^\]]*\])\(([^)\s]+)\)", repoint, text)


def job_seconds_line(run: dict[str, Any]) -> str:
    """The stamp's line of job-seconds per workload, with the command that recomputes them from the run's log."""
    sums = ", ".join(f"{key} {value:,}" for key, value in run["job_seconds"].items() if key != "wall")
    return f"- job-seconds: {sums} ([the run's log]({RUN_LOG}): `cdln job-times {RUN_LOG}`)"


def stamp_markdown(stamp: dict[str, Any]) -> str:
    run = stamp["run"] or {}
    minutes = f"{run['seconds'] // 60} min {run['seconds'] % 60} s" if run else "unknown"
    machine = stamp["machine"]
    gpu = machine["gpu"] if isinstance(machine["gpu"], str) else "; ".join(machine["gpu"])
    figures = [name for name in stamp["files"] if name.endswith(".png")]
    lines = [
        "# Gallery: a full replication's figures and claims",
        "",
        "Made by `snakemake gallery` from the results of `snakemake --cores all` (the README's first command);",
        "regenerate both to refresh it. Nothing here is edited by hand.",
        "",
        f"- commit: `{stamp['commit']}`" + (" (with uncommitted changes)" if stamp["dirty"] else ""),
        f"- date: {stamp['date']}; the Snakemake run took {minutes}",
        *([job_seconds_line(run)] if run.get("job_seconds") else []),
        f"- machine: {machine['cores']} cores ({machine['cpu']}), GPU: {gpu}",
        "- versions: " + ", ".join(f"{key} {value}" for key, value in stamp["versions"].items() if key != "platform"),
        "",
        "[Claims table](claims.md) · [summary](summary.md) · [the tables the claims read](tables/) (gzip) · the "
        "HTML report: `snakemake --report results/paper/report.html` after the run",
        "",
        *(f"![{name}]({name})" for name in figures),
    ]
    return "\n".join(lines) + "\n"
