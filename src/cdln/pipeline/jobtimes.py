"""Where a Snakemake run's time went: each job's seconds from the run's own log (``.snakemake/log/*.log``), summed
per workload (``cdln job-times``; the gallery's stamp).

A job's seconds run from the timestamp before its ``rule``/``localrule`` block to the one before its ``Finished
jobid`` line (the log's timestamps are whole seconds). Workloads: MS (its training jobs, the incremental MS run,
its problem files), FashionMNIST, robustness, analysis (the analysis runs and notebooks), the rest.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import pandas as pd

WORKLOADS = ("MS", "FashionMNIST", "robustness", "analysis", "the rest")
_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
_START = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")
_FIELD = re.compile(r"^\s+(jobid|wildcards|output): (.*)$")
_FINISHED = re.compile(r"^Finished jobid: (\d+)")


def read_jobs(log: str | Path) -> pd.DataFrame:
    """One row per job that finished in ``log``: jobid, rule, wildcards, output, start, end, seconds, workload."""
    started: dict[str, dict] = {}
    rows, stamp, current = [], None, None
    for line in Path(log).read_text(errors="replace").splitlines():
        if match := _STAMP.match(line.strip()):
            stamp = datetime.datetime.strptime(" ".join(match[1].split()), "%a %b %d %H:%M:%S %Y")
        elif match := _START.match(line):
            current = {"rule": match[1], "start": stamp, "wildcards": "", "output": ""}
        elif current is not None and (match := _FIELD.match(line)):
            current[match[1]] = match[2]
            if match[1] == "jobid":
                started[match[2]] = current
        elif match := _FINISHED.match(line):
            job = started.pop(match[1], None)
            if job is not None and job["start"] is not None and stamp is not None:
                rows.append({**job, "end": stamp, "seconds": (stamp - job["start"]).total_seconds()})
        elif not line.strip():
            current = None
    frame = pd.DataFrame(rows, columns=["jobid", "rule", "wildcards", "output", "start", "end", "seconds"])
    workloads = [workload(rule, output) for rule, output in zip(frame["rule"], frame["output"], strict=True)]
    return frame.assign(workload=workloads)


def workload(rule: str, output: str) -> str:
    """The workload a job belongs to (:data:`WORKLOADS`), from its rule and output path."""
    if rule == "make_sensing_problem" or "/runs/ms/" in output or "/runs/incremental/ms_" in output:
        return "MS"
    if "nonlinear" in output or "fashion-mnist" in output:
        return "FashionMNIST"
    if "robustness" in output:
        return "robustness"
    if rule == "analysis_notebook" or re.search(r"/runs/(incremental|invariance|alignment)/", output):
        return "analysis"
    return "the rest"


def summary(log: str | Path) -> dict[str, float]:
    """Job-seconds per workload (:data:`WORKLOADS`) and in all (``total``), and the run's wall seconds (``wall``:
    first job's start to last job's end)."""
    jobs = read_jobs(log)
    sums = jobs.groupby("workload")["seconds"].sum()
    out = {name: float(sums.get(name, 0.0)) for name in WORKLOADS}
    wall = (jobs["end"].max() - jobs["start"].min()).total_seconds() if len(jobs) else 0.0
    return {**out, "total": float(jobs["seconds"].sum()), "wall": float(wall)}


def markdown(summaries: dict[str, dict[str, float]]) -> str:
    """A table of job-seconds per workload, one column per named run (e.g. before, after)."""
    names = list(summaries)
    lines = ["| workload | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key in (*WORKLOADS, "total", "wall"):
        label = {"total": "all jobs", "wall": "wall time (first start to last end)"}.get(key, key)
        lines.append(f"| {label} | " + " | ".join(f"{summaries[name][key]:,.0f} s" for name in names) + " |")
    return "\n".join(lines) + "\n"
