"""References the engine is checked against, apart from the product: the same GD step compiled by JAX
(:mod:`~cdln.reference.jax_loop`, ``cdln bench --sections jax``) and the authors' own code on our instances
(:mod:`~cdln.reference.authors`, ``cdln crosscheck``). Both need the optional JAX (``pip install -e '.[jax]'``),
loaded here, once, in float64.
"""

from __future__ import annotations

import os
from types import ModuleType

import numpy as np

from cdln.problems import Completion, Factorization, Problem, Sensing

INSTALL_HINT = "pip install -e '.[jax]'  (CPU build; the JAX references are optional and skipped without it)"
SINGLE_THREAD_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


class JaxUnavailableError(ImportError):
    """JAX is not installed; the JAX references are skipped."""


def single_thread_jax() -> None:
    """Make a later JAX import single-threaded (with :func:`cdln.bench.timing.pin_to_one_core`)."""
    os.environ.setdefault("XLA_FLAGS", SINGLE_THREAD_XLA_FLAGS)


def jax_available() -> bool:
    """Whether ``import jax`` works."""
    try:
        import jax  # noqa: F401
    except ImportError:
        return False
    return True


def require_jax() -> ModuleType:
    """JAX with float64 enabled, or :class:`JaxUnavailableError` naming the install command.

    For single-thread timings pin the process to one core before JAX creates its CPU client
    (:func:`cdln.bench.timing.pin_to_one_core`) and set ``XLA_FLAGS`` to :data:`SINGLE_THREAD_XLA_FLAGS`."""
    try:
        import jax
    except ImportError as error:
        raise JaxUnavailableError(f"the JAX references need JAX, which is not installed: {INSTALL_HINT}") from error
    jax.config.update("jax_enable_x64", True)
    return jax


def problem_arrays(problem: Problem) -> dict[str, np.ndarray]:
    """A built-in problem's data as float64 numpy arrays: ``target`` (d_out, d_in); MF ``scale`` (the loss
    gradient's factor); MC ``mask`` (d_out, d_in) 0/1, ``observations`` and ``weight`` (mask / n_observed);
    MS ``operator`` (m, d_out*d_in), ``sensing_matrices`` (m, d_out, d_in, its row-major reshape) and
    ``labels`` (m,)."""
    arrays = {"target": problem.target.double().numpy()}
    if isinstance(problem, Factorization):
        arrays["scale"] = np.float64(problem.loss_scale)
    if isinstance(problem, Completion):
        arrays["mask"] = problem.mask.numpy().astype(np.float64)
        arrays["observations"] = problem.observations.double().numpy()
        arrays["weight"] = problem.loss_weights.double().numpy()
    if isinstance(problem, Sensing):
        arrays["operator"] = problem.operator.double().numpy()
        arrays["sensing_matrices"] = arrays["operator"].reshape(-1, *problem.shape)
        arrays["labels"] = problem.measurements.double().numpy()
    return arrays
