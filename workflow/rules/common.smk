"""Helpers shared by every rule file: paths, tool commands, config access, target registry."""

import shlex
import sys
from pathlib import Path

# Every output of one config lives under its own root, so switching configs never mixes results.
ROOT = f"results/{config['output_root']}"

# Call the tools through the interpreter running Snakemake, so an unactivated venv still works.
PYTHON = shlex.quote(sys.executable)
CDLN = f"{PYTHON} -m cdln"
PAPERMILL = f"{PYTHON} -m papermill"

_FINAL_TARGETS: dict[str, list[str]] = {}


def experiment(name: str) -> dict:
    """The config section of experiment ``name`` (validated by the schema)."""
    return config["experiments"][name]


def experiment_enabled(name: str) -> bool:
    return name in config["experiments"] and config["experiments"][name].get("enabled", True)


def register_target(name: str, files: list[str]) -> None:
    """Add a figure/table's final files to ``rule all`` under the named target ``name``."""
    _FINAL_TARGETS.setdefault(name, []).extend(files)


def final_targets(name: str) -> list[str]:
    return _FINAL_TARGETS.get(name, [])


def all_final_targets() -> list[str]:
    return [f for files in _FINAL_TARGETS.values() for f in files]


def cli_flags(options: dict) -> str:
    """``{"lr": 10, "init_seed": [0, 1]}`` -> ``--lr 10 --init-seed 0 1`` (None values dropped)."""
    parts = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif isinstance(value, (list, tuple)):
            parts.append(flag + " " + " ".join(shlex.quote(str(v)) for v in value))
        else:
            parts.append(f"{flag} {shlex.quote(str(value))}")
    return " ".join(parts)
