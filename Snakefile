"""Replication of Kwon et al. (AISTATS 2024): every figure and table, one command.

Entry point only: configuration, validation, rule files and the top-level targets.
"""

from snakemake.utils import min_version, validate

min_version("8.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
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
