"""Job-seconds per workload from a Snakemake run's own log (``cdln job-times``, the gallery's stamp)."""

from __future__ import annotations

from cdln.cli import main
from cdln.pipeline import jobtimes

LOG = """Building DAG of jobs...
[Mon Dec  7 04:46:01 2026]
localrule run_job:
    output: results/paper/runs/ms/r5_seed0
    jobid: 12
    wildcards: experiment=ms, job=r5_seed0

[Mon Dec  7 04:46:01 2026]
localrule run_job:
    output: results/paper/runs/robustness/p_0p2
    jobid: 7
    wildcards: experiment=robustness, job=p_0p2

[Mon Dec  7 04:46:31 2026]
Finished jobid: 7 (Rule: run_job)
1 of 3 steps (33%) done

[Mon Dec  7 04:46:31 2026]
localrule analysis_notebook:
    output: results/paper/figures/fig_incremental.png, results/paper/notebooks/incremental.ipynb
    jobid: 3

[Mon Dec  7 04:46:41 2026]
Finished jobid: 3 (Rule: analysis_notebook)
[Mon Dec  7 04:50:01 2026]
Finished jobid: 12 (Rule: run_job)
3 of 3 steps (100%) done
"""


def test_job_seconds_are_read_per_job_and_summed_per_workload(tmp_path, capsys):
    log = tmp_path / "2026-12-07T044558.1.snakemake.log"
    log.write_text(LOG)
    jobs = jobtimes.read_jobs(log).set_index("jobid")
    assert jobs.loc["12", "seconds"] == 240 and jobs.loc["7", "seconds"] == 30 and jobs.loc["3", "seconds"] == 10
    assert dict(jobs["workload"]) == {"12": "MS", "7": "robustness", "3": "analysis"}
    summary = jobtimes.summary(log)
    assert (summary["MS"], summary["total"], summary["wall"], summary["the rest"]) == (240, 280, 240, 0)
    assert main(["job-times", str(log), "--names", "after"]) == 0
    out = capsys.readouterr().out
    assert "| workload | after |" in out and "| MS | 240 s |" in out and "| all jobs | 280 s |" in out


def test_the_performance_page_shows_what_the_logs_give():
    """docs/performance.md's job-seconds table is the output of the command above it, on the committed logs."""
    import re
    import shlex

    from conftest import REPO

    page = (REPO / "docs" / "performance.md").read_text()
    match = re.search(r"<!-- job-times: cdln job-times (.*?) -->\n\n(\|.*?\n)\n", page, flags=re.S)
    assert match, "docs/performance.md has no job-times table"
    args = shlex.split(match[1])
    names = args[args.index("--names") + 1 :]
    logs = [REPO / arg for arg in args[: args.index("--names")]]
    assert match[2] == jobtimes.markdown({n: jobtimes.summary(log) for n, log in zip(names, logs, strict=True)})
