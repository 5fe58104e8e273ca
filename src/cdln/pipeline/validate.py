"""Validation of a pipeline config (``config/*.yaml``) before any job starts.

:func:`validate_pipeline_config` reports every schema violation at once, naming each bad key, then
checks every run of the grid as ``cdln train`` would (r <= d, r_hat <= d, memory, ...).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from cdln.config import ConfigError, RunConfig, check_run_options
from cdln.pipeline.grid import Grid

# The schema of this checkout (src/cdln/pipeline -> repository root), when the package runs from it.
SCHEMA = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"


def pipeline_config_errors(config: dict[str, Any], schema_path: str | Path) -> list[str]:
    """Every violation of the pipeline schema, one line each: ``dotted.key: problem (description)``.

    Unlike the single error ``snakemake.utils.validate`` shows, this reports all of them and names
    the bad key itself: with ``unevaluatedProperties: false`` a failing ``allOf`` branch makes every
    key of its object "unevaluated", which hides the real error (e.g. ``lr: -1``) behind a list of
    valid keys; those keys are filtered out here, leaving only the truly unknown ones.
    """
    import jsonschema
    import yaml

    schema = yaml.safe_load(Path(schema_path).read_text())
    messages = []
    for error in jsonschema.Draft202012Validator(schema).iter_errors(config):
        where = ".".join(str(part) for part in error.absolute_path) or "<top level>"
        if error.validator in ("unevaluatedProperties", "additionalProperties"):
            known = _schema_properties(error.schema, schema)
            unknown = sorted(str(k) for k in error.instance if k not in known)
            if not unknown:
                continue  # only keys a failing branch left unevaluated: their own errors are reported
            messages.append(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(known)}")
            continue
        description = error.schema.get("description") if isinstance(error.schema, dict) else None
        messages.append(f"{where}: {error.message}" + (f" ({description})" if description else ""))
    return sorted(set(messages))


def _schema_properties(node: dict[str, Any], root: dict[str, Any]) -> set[str]:
    """Property names a schema node declares, through ``allOf`` and local ``$ref`` (``#/$defs/x``)."""
    names = set(node.get("properties", {}))
    if isinstance(node.get("additionalProperties"), dict):
        return names | {"*"}
    for sub in node.get("allOf", []):
        names |= _schema_properties(sub, root)
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        names |= _schema_properties(target, root)
    return names


def pipeline_run_errors(config: dict[str, Any], check_memory: bool = True) -> list[str]:
    """Cross-field checks JSON Schema cannot express (r <= d, r_hat <= d, p with mc, memory, ...), and
    that input paths an experiment names (keys ending in ``_path`` or ``_dir``, when not null) exist.

    Every ``cdln train`` run of the grid whose problem is synthetic (drawn by the run or by
    ``cdln make-problem``) is checked with :func:`cdln.config.check_run_options`, with its problem's
    settings; each distinct message is reported once, prefixed by the config location of the run.
    """
    messages: dict[str, None] = {}
    for name, section in config.get("experiments", {}).items():
        if not isinstance(section, dict) or section.get("enabled", True) is False:
            continue
        for key, value in section.items():  # input data named by the user (null = the default search)
            if (key.endswith("_path") or key.endswith("_dir")) and isinstance(value, str) and not Path(value).exists():
                messages[f"experiments.{name}.{key}: {value} does not exist (give an existing path, or null)"] = None
    grid = Grid(config)
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    for job, run in grid.runs():
        if run.command != "train":
            continue
        problems = [grid.data_file(path) for path in job.inputs]
        if any(problem.command != "make-problem" for problem in problems):
            continue  # real data: its shape is known only once the data is read
        options = {key: value for problem in problems for key, value in problem.options.items()}
        options.update(run.options)
        try:
            values = {k: v for k, v in options.items() if k in fields and v is not None}
            check_run_options(values, run.where, check_memory)
        except ConfigError as error:
            messages[str(error)] = None
    return list(messages)


def validate_pipeline_config(config: dict[str, Any], schema_path: str | Path, check_memory: bool = True) -> None:
    """Raise :class:`ConfigError` listing every violation of a pipeline config: the schema's, then
    (if the schema holds) the cross-field checks of every run. Meant for parse time, before any job."""
    errors = pipeline_config_errors(config, schema_path) or pipeline_run_errors(config, check_memory)
    if errors:
        raise ConfigError(f"invalid config ({len(errors)} error(s)):\n  " + "\n  ".join(errors))


def load_pipeline_config(path: str | Path, schema_path: str | Path | None = SCHEMA) -> dict[str, Any]:
    """A pipeline config file, validated (schema and runs) unless ``schema_path`` is None."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pipeline config {path} does not exist (e.g. config/config.yaml, config/ci.yaml)")
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict):
        raise ConfigError(f"pipeline config {path} must hold a mapping")
    if schema_path is not None:
        validate_pipeline_config(config, schema_path, check_memory=False)
    return config
