"""Validation of a pipeline config (``config/*.yaml``) before any job starts.

:func:`validate_pipeline_config` reports every schema violation at once, naming each bad key, then
checks every run of the grid as ``cdln train`` would (r <= d, r_hat <= d, memory, ...).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from cdln.pipeline.grid import Grid

# cdln.config (and torch with it) is imported by the functions that need it, so that the schema check and
# the cached per-run check below cost a workflow's parse time no torch import.

# The schema of this checkout (src/cdln/pipeline -> repository root), when the package runs from it.
SCHEMA = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"


def typed_overrides(value: Any) -> Any:
    """Snakemake's ``--config key=value`` reads nested values as strings (``seeds=[0]`` gives ``['0']``):
    each string that reads as an integer, a float or a YAML boolean or null becomes one, at any depth."""
    if isinstance(value, dict):
        return {key: typed_overrides(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [typed_overrides(item) for item in value]
    if not isinstance(value, str):
        return value
    for convert in (int, float):
        try:
            return convert(value)
        except ValueError:
            pass
    return {"true": True, "false": False, "null": None, "~": None}.get(value.lower(), value)


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
    misnamed = _unknown_experiments(config)
    messages, skipped = [], {line.split(":")[0] for line in misnamed}
    for error in jsonschema.Draft202012Validator(schema).iter_errors(config):
        where = ".".join(str(part) for part in error.absolute_path) or "<top level>"
        if where in skipped or where.startswith(tuple(f"{name}." for name in skipped)):
            continue
        if error.validator in ("unevaluatedProperties", "additionalProperties"):
            known = _schema_properties(error.schema, schema)
            unknown = sorted(str(k) for k in error.instance if k not in known)
            if not unknown:
                continue  # only keys a failing branch left unevaluated: their own errors are reported
            messages.append(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(known)}")
            continue
        description = error.schema.get("description") if isinstance(error.schema, dict) else None
        messages.append(f"{where}: {error.message}" + (f" ({description})" if description else ""))
    return sorted(set(misnamed + messages))


def _unknown_experiments(config: dict[str, Any]) -> list[str]:
    """One line per experiment that is neither the paper's nor one on a problem of the user's (a name misspelt,
    most likely); its schema errors are then left out (:func:`pipeline_config_errors`)."""
    from cdln.pipeline.grid import BUILT_IN

    lines = []
    for name, section in (config.get("experiments") or {}).items():
        own = isinstance(section, dict) and ":" in str(section.get("task", "")) and "problem" in section
        if name not in BUILT_IN and not own:
            lines.append(
                f"experiments.{name}: not an experiment of the paper's ({', '.join(BUILT_IN)}); any other name is one "
                "on a problem of your own and needs task: module:Class and problem: FILE (docs/own-problem.md)"
            )
    return lines


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
    from cdln.config import ConfigError, RunConfig, check_run_options

    messages: dict[str, None] = {}
    for name, section in config.get("experiments", {}).items():
        if not isinstance(section, dict) or section.get("enabled", True) is False:
            continue
        for key, value in section.items():  # input data named by the user (null = the default search)
            if (key.endswith("_path") or key.endswith("_dir")) and isinstance(value, str) and not Path(value).exists():
                messages[f"experiments.{name}.{key}: {value} does not exist (give an existing path, or null)"] = None
    grid = Grid(config)
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    for _, run in grid.runs():
        if run.command != "train":
            continue
        problems = [data] if (data := grid.run_data(run)) is not None else []
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
    from cdln.config import ConfigError

    errors = pipeline_config_errors(config, schema_path) or pipeline_run_errors(config, check_memory)
    if errors:
        raise ConfigError(f"invalid config ({len(errors)} error(s)):\n  " + "\n  ".join(errors))


def load_pipeline_config(path: str | Path, schema_path: str | Path | None = SCHEMA) -> dict[str, Any]:
    """A pipeline config file, validated (schema and runs) unless ``schema_path`` is None."""
    import yaml

    from cdln.config import ConfigError

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pipeline config {path} does not exist (e.g. config/config.yaml, config/ci.yaml)")
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict):
        raise ConfigError(f"pipeline config {path} must hold a mapping")
    if schema_path is not None:
        validate_pipeline_config(config, schema_path, check_memory=False)
    return config


def _run_check_key(config: dict[str, Any], check_memory: bool) -> str:
    """What the per-run checks of ``config`` depend on: the config, this package's source, the interpreter
    and this machine's memory (the memory check compares a run's size with it)."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    digest.update(json.dumps([config, check_memory, sys.executable], sort_keys=True, default=str).encode())
    if hasattr(os, "sysconf"):
        digest.update(str(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")).encode())
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def cached_run_errors(config: dict[str, Any], cache_dir: str | Path, check_memory: bool = True) -> list[str]:
    """:func:`pipeline_run_errors` of ``config``, checked in a child interpreter and remembered.

    The per-run checks build every run's :class:`cdln.config.RunConfig`, which imports torch (seconds).
    They run in ``python -m cdln.pipeline.validate`` (this interpreter, this package) so that the caller,
    e.g. Snakemake parsing the workflow, never imports torch; a config that passed leaves a stamp in
    ``cache_dir`` named by :func:`_run_check_key`, so it is not checked again until the config, the
    package's source, the interpreter or the machine's memory changes. Failures are never remembered.
    """
    stamp = Path(cache_dir) / _run_check_key(config, check_memory)
    if stamp.is_file():
        return []
    source = str(Path(__file__).resolve().parents[2])  # src/ (or site-packages): this very package
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "cdln.pipeline.validate", *([] if check_memory else ["--no-memory"])]
    child = subprocess.run(command, input=json.dumps(config), env=env, capture_output=True, text=True, check=False)
    if child.returncode != 0:
        raise RuntimeError(f"the per-run config checks failed to run ({' '.join(command)}):\n{child.stderr[-3000:]}")
    errors = json.loads(child.stdout)
    if not errors:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.touch()
    return errors


def main(argv: list[str] | None = None) -> int:
    """``python -m cdln.pipeline.validate [--no-memory] < config.json``: the per-run errors as a JSON list."""
    argv = sys.argv[1:] if argv is None else argv
    config = json.loads(sys.stdin.read())
    json.dump(pipeline_run_errors(config, check_memory="--no-memory" not in argv), sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
