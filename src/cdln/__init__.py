"""Compressed deep linear networks (C-DLN): problems, networks, a fast GD engine and run records.

Replicates Kwon, Zhang, Song, Balzano, Qu, "Efficient Compression of Overparameterized Deep Models
through Low-Dimensional Learning Dynamics" (AISTATS 2024, arXiv 2311.05061). The public names are
listed in ``__all__`` and in docs/api.md; they are imported on first use, so ``import cdln`` is cheap
(the pipeline's parse never imports torch).
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_HOMES = {
    "cdln.problems": ["Problem", "Factorization", "Completion", "Sensing", "problem_class"],
    "cdln.spec": ["ProblemSpec"],
    "cdln.data.synthetic": ["make_problem"],
    "cdln.networks": [
        "LinearNetwork", "original_dln", "compressed_dln", "narrow_dln", "burer_monteiro", "yaras_dln", "product",
    ],
    "cdln.engine": [
        "TrainSettings", "TrainResult", "DivergenceError", "train", "layer_gradients", "plan_engine",
    ],
    "cdln.config": ["RunConfig", "ConfigError"],
    "cdln.runner": ["RunOutput", "train_run", "run"],
    "cdln.records": ["read_run_record"],
    "cdln.io": ["read_matrix", "save_problem", "load_problem"],
    "cdln.analysis": ["target_factors"],
}  # fmt: skip
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}
__all__ = [name for names in _HOMES.values() for name in names]


def __getattr__(name: str) -> Any:
    if name not in _HOME_OF:
        raise AttributeError(f"module 'cdln' has no attribute {name!r}")
    value = getattr(import_module(_HOME_OF[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
