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


# Every schema error by its key, then the per-run checks of `cdln train` (r <= d, memory, ...),
# before any job starts; snakemake's validate then fills the schema's defaults.
import sys

sys.path.insert(0, f"{workflow.basedir}/src")  # this checkout's package, installed or not
from cdln.config import ConfigError
from cdln.pipeline.validate import validate_pipeline_config

try:
    validate_pipeline_config(config, f"{workflow.basedir}/workflow/schemas/config.schema.yaml")
except ConfigError as error:
    raise WorkflowError(str(error)) from None
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


rule all:
    input:
        all_final_targets(),
    default_target: True
