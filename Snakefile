"""Replication of Kwon et al. (AISTATS 2024): every figure and table, one command.

Entry point only: configuration, validation, rule files and the top-level targets.
"""

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

min_version("8.0")


# The paper grid, unless config files are given on the command line (`--configfile config/ci.yaml`):
# those then replace it instead of being merged into it (a merge would mix the two grids' panels).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


# Every schema error by its key, then the per-run checks of `cdln train` (r <= d, memory, ...), before
# any job starts; snakemake's validate then fills the schema's defaults. Parsing imports no torch and
# changes no environment variable: the per-run checks (which need torch) run in a child interpreter, once
# per config and source version (stamps in .snakemake/cdln-validated/), and only in the process that plans
# the jobs, not again inside each job (cluster jobs parse this file too).
import sys

sys.path.insert(0, f"{workflow.basedir}/src")  # this checkout's package, installed or not
from snakemake.utils import update_config
from cdln.pipeline.validate import cached_run_errors, pipeline_config_errors, typed_overrides

# `--config seeds=[0]`: Snakemake reads the list's items as strings; give them their types back.
update_config(config, typed_overrides(dict(workflow.config_settings.config)))

_errors = pipeline_config_errors(config, f"{workflow.basedir}/workflow/schemas/config.schema.yaml")
if not _errors and workflow.is_main_process:
    _errors = cached_run_errors(config, ".snakemake/cdln-validated")
if _errors:
    raise WorkflowError(f"invalid config ({len(_errors)} error(s)):\n  " + "\n  ".join(_errors))
validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/claims.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/realdata.smk"
include: "workflow/rules/scaling.smk"
include: "workflow/rules/robustness.smk"
include: "workflow/rules/gallery.smk"


# On a cluster only the rules that train or draw data are submitted (cdln.pipeline.cluster): every other
# rule (tables, plots, claims, notebooks: seconds each) is a local rule, run by Snakemake itself.
workflow.localrules(*(rule.name for rule in workflow.rules if rule.name not in CLUSTER_RULES))


if workflow.is_main_process:
    say_what_is_left_out("start")


onsuccess:
    say_what_is_left_out("end")


onerror:
    say_what_is_left_out("end")


# Every target the data on disk allows; what missing data leaves out is said at start and end.
rule all:
    input:
        TARGETS.files("all"),
    default_target: True
