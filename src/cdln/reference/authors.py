"""Cross-check: the authors' own code (soominkwon/comp-deep-nets) on our problem instances and settings.

Nothing of theirs lives in this repository. :func:`load_authors_code` imports their modules
(``network.py``, ``loss.py``, ``solver.py``) from a checkout the user names, at run time, with JAX in
float64. Each :class:`Case` is one initial network on one of our problem instances
(:func:`cdln.data.synthetic.make_problem`) with one set of GD settings; :func:`run_case` trains it twice from
the same initial weights, once with their ``solver.train`` (their losses, their autodiff, their optax
update, their discrepant rate ``dlr``) and once with our :func:`cdln.engine.train`, and reads the same
quantities off both curves. Initial weights come either from our builders (:mod:`cdln.networks`, our
init seed stream) or from theirs (``init_net`` with the ``PRNGKey`` chain of their notebooks,
``kwon_compress_network`` with their notebooks' layer merging), so a row says which of init or training
code a difference comes from. The panels' settings are the pipeline grid's (:func:`default_panels` reads
them from the config), so the cross-check runs what the figures run.

Output (:func:`write_table`): ``crosscheck.csv`` with columns ``task, panel, model, quantity,
authors_code, ours, note`` and a markdown rendering ``crosscheck.md``.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import torch

from cdln import outputs as cdln_outputs
from cdln.analysis import first_iteration_reaching
from cdln.data.synthetic import make_problem
from cdln.engine import DivergenceError, TrainSettings, train
from cdln.networks import LinearNetwork, compressed_dln, original_dln, product
from cdln.pipeline.grid import Grid
from cdln.problems import Problem
from cdln.reference import jax_available, problem_arrays, require_jax
from cdln.spec import ProblemSpec

REQUIRED_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "network": ("init_net", "compute_end_to_end", "kwon_compress_network"),
    "loss": ("create_loss", "create_loss_ms", "reconstruction_loss"),
    "solver": ("train",),
}
THEIR_HELPER_MODULES = ("utils", "data", "plot")  # imported by name from inside their modules
JAX_HINT = "pip install -e '.[jax]' (their solver.py imports jax and optax)"
COLUMNS = ["task", "panel", "model", "quantity", "authors_code", "ours", "note"]
TASKS: tuple[str, ...] = ("mf", "mc", "alignment", "alpha", "depth", "ms")
DEFAULT_TASKS: tuple[str, ...] = ("mf", "mc", "alignment", "alpha", "depth")
ALIGNMENT_ITERATIONS = (0, 100, 200, 300, 1000)
ALIGNMENT_LEVEL = 0.99
ProgressFn = Callable[[str], None]


class AuthorsCodeError(ValueError):
    """The authors' checkout is missing, incomplete, or cannot be imported."""


@dataclass
class AuthorsCode:
    """Their functions, loaded from ``path``; ``random`` is the ``jax.random`` their ``network.py`` uses."""

    path: Path
    init_net: Callable[..., list[Any]]
    compute_end_to_end: Callable[[list[Any]], Any]
    kwon_compress_network: Callable[..., tuple[list[Any], list[Any]]]
    create_loss: Callable[..., Callable[[Any], Any]]
    create_loss_ms: Callable[..., Callable[[Any], Any]]
    reconstruction_loss: Callable[[Any], Callable[[Any], Any]]
    train: Callable[..., dict[str, Any]]
    random: Any
    x64: bool


@contextlib.contextmanager
def _their_import_path(path: Path) -> Iterator[None]:
    """``path`` first on ``sys.path`` and their generic module names unbound, restored afterwards."""
    names = (*REQUIRED_FUNCTIONS, *THEIR_HELPER_MODULES)
    saved = {name: sys.modules.pop(name) for name in names if name in sys.modules}
    sys.path.insert(0, str(path))
    try:
        yield
    finally:
        sys.path.remove(str(path))
        for name in names:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


def load_authors_code(path: str | Path) -> AuthorsCode:
    """Import their ``network``, ``loss`` and ``solver`` modules from the checkout at ``path``.

    Raises :class:`AuthorsCodeError` naming ``path`` when it is not a checkout of their repository or a
    function this cross-check calls is missing, and with the install command when JAX (or optax) is not
    installed.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise AuthorsCodeError(
            f"--authors {path}: no such directory; pass a checkout of github.com/soominkwon/comp-deep-nets"
        )
    missing_files = [f"{name}.py" for name in REQUIRED_FUNCTIONS if not (path / f"{name}.py").is_file()]
    if missing_files:
        raise AuthorsCodeError(
            f"--authors {path} is not a checkout of soominkwon/comp-deep-nets: missing {', '.join(missing_files)}"
        )
    x64 = jax_available() and bool(require_jax())  # float64, as their notebooks set it
    modules: dict[str, ModuleType] = {}
    with _their_import_path(path):
        for name in REQUIRED_FUNCTIONS:
            try:
                modules[name] = importlib.import_module(name)
            except ModuleNotFoundError as error:
                if error.name and error.name.split(".")[0] in {"jax", "jaxlib", "optax"}:
                    raise AuthorsCodeError(
                        f"the authors' {path / (name + '.py')} needs {error.name!r}, which is not installed: {JAX_HINT}"
                    ) from None
                raise AuthorsCodeError(f"cannot import {path / (name + '.py')}: {error}") from None
            except Exception as error:
                raise AuthorsCodeError(
                    f"cannot import {path / (name + '.py')}: {type(error).__name__}: {error}"
                ) from None
    functions: dict[str, Any] = {}
    for module_name, function_names in REQUIRED_FUNCTIONS.items():
        for function_name in function_names:
            function = getattr(modules[module_name], function_name, None)
            if not callable(function):
                raise AuthorsCodeError(
                    f"--authors {path}: {module_name}.py has no function {function_name!r} "
                    "(is this a checkout of soominkwon/comp-deep-nets?)"
                )
            functions[function_name] = function
    their_random = getattr(modules["network"], "random", None)
    if their_random is None or not all(hasattr(their_random, f) for f in ("PRNGKey", "split")):
        raise AuthorsCodeError(f"--authors {path}: network.py does not import jax.random as `random`")
    return AuthorsCode(path=path, random=their_random, x64=x64, **functions)


# ---------------------------------------------------------------------------------------------------------------
# Problems, initial networks and the two trainers


@dataclass
class Case:
    """One initial network (``weights``: first layer first, (n_out, n_in) float64 each) on one problem.

    ``outer_scale`` is the discrepant rate alpha of the two outer layers (their ``dlr``); None for the
    original DLN (their notebooks pass no ``dlr`` there).
    """

    task: str
    panel: str
    model: str
    problem: Problem
    weights: list[np.ndarray]
    outer_scale: float | None
    settings: TrainSettings
    note: str = ""
    error_levels: tuple[float, ...] = ()
    alignment: bool = False


@dataclass
class Curves:
    """Checkpoint curves of one run: ``iterations`` (K,), ``train_loss`` (K,), ``recovery_error`` (K,);
    ``alignment_u``/``alignment_v`` (K,) when measured."""

    iterations: np.ndarray
    train_loss: np.ndarray
    recovery_error: np.ndarray
    seconds: float
    alignment_u: np.ndarray | None = None
    alignment_v: np.ndarray | None = None


def their_losses(code: AuthorsCode, problem: Problem) -> dict[str, Callable[[Any], Any]]:
    """Their ``loss_fn_dict`` for our instance, built as their notebooks build it (train and recovery)."""
    arrays = problem_arrays(problem)
    target = arrays["target"]
    if problem.spec.task == "mf":
        return {"train": code.create_loss(target), "test": code.create_loss(target)}
    if problem.spec.task == "mc":
        mask = arrays["mask"]
        return {"train": code.create_loss(target, mask=mask), "test": code.create_loss(target, mask=1 - mask)}
    train_loss = code.create_loss_ms(labels=arrays["labels"], sensing_matrices=arrays["sensing_matrices"])
    return {"train": train_loss, "test": code.reconstruction_loss(target)}


def their_surrogate(problem: Problem) -> np.ndarray:
    """The surrogate their notebooks build the C-DLN from, (d_out, d_in): MF the target, MC
    ``target * mask / p`` (nominal p), MS ``reshape(A^T y) / m``."""
    arrays = problem_arrays(problem)
    if problem.spec.task == "mf":
        return arrays["target"]
    if problem.spec.task == "mc":
        return arrays["target"] * arrays["mask"] / problem.spec.p
    m = arrays["labels"].shape[0]
    return np.tensordot(arrays["labels"], arrays["sensing_matrices"], axes=1) / m


def notebook_init_key(code: AuthorsCode, seed: int, splits_before: int) -> Any:
    """The key their notebooks pass to ``init_net``: ``PRNGKey(seed)`` split ``splits_before`` times for the
    data (target, mask) before the split whose subkey initialises the network."""
    key = code.random.PRNGKey(seed)
    for _ in range(splits_before + 1):
        key, subkey = code.random.split(key)
    return subkey


def their_original_init(
    code: AuthorsCode, problem: Problem, depth: int, eps: float, seed: int, splits_before: int
) -> list[np.ndarray]:
    """Their ``init_net`` (orthogonal, scale ``eps``, width d) with their notebook's key chain."""
    d_out, d_in = problem.shape
    key = notebook_init_key(code, seed, splits_before)
    weights = code.init_net(
        key=key, input_dim=d_in, output_dim=d_out, width=max(d_out, d_in), depth=depth, init_scale=eps
    )
    return [np.asarray(w, dtype=np.float64) for w in weights]


def their_compressed_init(
    code: AuthorsCode, problem: Problem, r_hat: int, depth: int, eps: float, without_eps_at_depth_2: bool = False
) -> list[np.ndarray]:
    """Their C-DLN init: ``kwon_compress_network(surrogate, r_hat, eps, depth)`` merged as their notebooks merge
    it. Depth 3: ``[I_eps V^T, I_eps, U I_eps]``. Depth 2: ``[I_eps V^T, U I_eps]``, or their depth notebook's
    ``factors = [V^T, U]`` (no eps) with ``without_eps_at_depth_2``."""
    layers, factors = code.kwon_compress_network(
        target=their_surrogate(problem), grad_rank=r_hat, init_scale=eps, depth=depth
    )
    layers = [np.asarray(w, dtype=np.float64) for w in layers]  # [V^T, eps I x depth, U]
    if depth == 2 and without_eps_at_depth_2:
        return [np.asarray(w, dtype=np.float64) for w in factors]
    return [layers[1] @ layers[0], *layers[2:-2], layers[-1] @ layers[-2]]


def our_original_init(problem: Problem, depth: int, eps: float, seed: int) -> list[np.ndarray]:
    """Our original DLN (:func:`cdln.networks.original_dln`, init seed ``seed``), layers (n_out, n_in)."""
    d_out, d_in = problem.shape
    return [w[0].numpy() for w in original_dln(d_out, d_in, depth, eps, [seed]).weights]


def our_compressed_init(problem: Problem, r_hat: int, depth: int, eps: float) -> list[np.ndarray]:
    """Our C-DLN (:func:`cdln.networks.compressed_dln` from our surrogate), layers (n_out, n_in)."""
    return [w[0].numpy() for w in compressed_dln(problem.surrogate(), r_hat, depth, eps).weights]


def _alignments(first: np.ndarray, last: np.ndarray, u_star: np.ndarray, v_star: np.ndarray) -> tuple[float, float]:
    """``|<u_{L,1}, u_1*>|`` (top left singular vector of the last layer) and ``|<v_{1,1}, v_1*>|`` (top right
    singular vector of the first layer), the measurement of their fig_power_method notebook."""
    if not (np.isfinite(first).all() and np.isfinite(last).all()):
        return math.nan, math.nan
    u_last = np.linalg.svd(last)[0][:, 0]
    v_first = np.linalg.svd(first)[2][0]
    return abs(float(u_last @ u_star)), abs(float(v_first @ v_star))


def _target_top_vectors(problem: Problem) -> tuple[np.ndarray, np.ndarray]:
    u, _, vh = np.linalg.svd(problem.target.numpy())
    return u[:, 0], vh[0]


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Their ``train`` draws a tqdm bar on stderr; keep it off ours."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def train_with_their_code(code: AuthorsCode, case: Case) -> Curves:
    """Their ``solver.train`` from ``case.weights`` with ``case.settings`` (their notebooks' call)."""
    settings = case.settings
    start = time.perf_counter()
    with _quiet_stderr():
        result = code.train(
            init_weights=[np.array(w) for w in case.weights],
            network_fn=code.compute_end_to_end,
            loss_fn_dict=their_losses(code, case.problem),
            n_outer_loops=settings.max_outer,
            step_size=settings.lr,
            dlr=case.outer_scale,
            tol=settings.tol,
            n_inner_loops=settings.n_inner,
            save_weights=case.alignment,
        )
    train_loss = np.asarray(result["train_loss"], dtype=np.float64)
    curves = Curves(
        iterations=np.arange(len(train_loss)) * settings.n_inner,
        train_loss=train_loss,
        recovery_error=np.asarray(result["test_loss"], dtype=np.float64),
        seconds=time.perf_counter() - start,
    )
    if case.alignment:
        u_star, v_star = _target_top_vectors(case.problem)
        pairs = [_alignments(np.asarray(w[0]), np.asarray(w[-1]), u_star, v_star) for w in result["weights"]]
        curves.alignment_u, curves.alignment_v = (np.array(column) for column in zip(*pairs, strict=True))
    return curves


def train_with_our_engine(case: Case) -> Curves:
    """Our :func:`cdln.engine.train` from ``case.weights`` with ``case.settings`` (float64, CPU)."""
    weights = [torch.from_numpy(np.array(w, dtype=np.float64, copy=True)).unsqueeze(0) for w in case.weights]
    ones = torch.ones(1, dtype=torch.float64)
    scales = [ones.clone() for _ in weights]
    if case.outer_scale is not None:
        scales[0] = scales[-1] = torch.tensor([float(case.outer_scale)], dtype=torch.float64)
    network = LinearNetwork(case.model, weights, scales)
    snapshot = None
    if case.alignment:
        u_star, v_star = _target_top_vectors(case.problem)

        def snapshot(iteration: int, net: LinearNetwork, end_to_end: torch.Tensor) -> dict[str, np.ndarray]:
            u, v = _alignments(net.weights[0][0].numpy(), net.weights[-1][0].numpy(), u_star, v_star)
            return {"alignment_u": np.array(u), "alignment_v": np.array(v)}

    start = time.perf_counter()
    result = train(network, case.problem, case.settings, snapshot=snapshot)
    seconds = time.perf_counter() - start
    curves = result.curves.sort_values("iteration")
    out = Curves(
        iterations=curves["iteration"].to_numpy(),
        train_loss=curves["train_loss"].to_numpy(),
        recovery_error=curves["recovery_error"].to_numpy(),
        seconds=seconds,
    )
    if case.alignment:
        out.alignment_u = np.array([float(snap["alignment_u"]) for snap in result.snapshots])
        out.alignment_v = np.array([float(snap["alignment_v"]) for snap in result.snapshots])
    return out


# ---------------------------------------------------------------------------------------------------------------
# Quantities read off the curves


def first_iteration_below(curves: Curves, values: np.ndarray, level: float) -> float:
    """First checkpoint iteration with ``values <= level``; NaN if none."""
    return float(first_iteration_reaching(curves.iterations, -np.asarray(values), -level)[0])


def first_iteration_at_least(curves: Curves, values: np.ndarray, level: float) -> float:
    """First checkpoint iteration with ``values >= level``; NaN if none."""
    return float(first_iteration_reaching(curves.iterations, values, level)[0])


def value_at(curves: Curves, values: np.ndarray, iteration: int) -> float:
    hits = np.flatnonzero(curves.iterations == iteration)
    return float(values[hits[0]]) if hits.size else math.nan


def quantities(case: Case, curves: Curves) -> dict[str, float]:
    """The numbers a case reports (NaN = not reached within the budget)."""
    s = case.settings
    out: dict[str, float] = {}
    if case.alignment:
        for iteration in ALIGNMENT_ITERATIONS:
            out[f"alignment_u@{iteration}"] = value_at(curves, curves.alignment_u, iteration)
            out[f"alignment_v@{iteration}"] = value_at(curves, curves.alignment_v, iteration)
        out[f"iterations_to_alignment_u>={ALIGNMENT_LEVEL}"] = first_iteration_at_least(
            curves, curves.alignment_u, ALIGNMENT_LEVEL
        )
        out[f"iterations_to_alignment_v>={ALIGNMENT_LEVEL}"] = first_iteration_at_least(
            curves, curves.alignment_v, ALIGNMENT_LEVEL
        )
        return out
    if s.tol > 0:
        out[f"iterations_to_train_loss<{s.tol:g}"] = first_iteration_below(
            curves, curves.train_loss, np.nextafter(s.tol, 0)
        )
    initial = curves.recovery_error[0]
    out["iterations_to_recovery<0.1x_initial"] = first_iteration_below(curves, curves.recovery_error, 0.1 * initial)
    for level in case.error_levels:
        out[f"iterations_to_recovery<={level:g}"] = first_iteration_below(curves, curves.recovery_error, level)
    out["iterations_run"] = float(curves.iterations[-1])
    out["final_train_loss"] = float(curves.train_loss[-1])
    out["final_recovery_error"] = float(curves.recovery_error[-1])
    return out


def run_case(code: AuthorsCode, case: Case, progress: ProgressFn | None = None) -> list[dict[str, Any]]:
    """Train ``case`` with their code and with our engine; one row per quantity."""
    label = f"{case.task}/{case.panel}/{case.model}"
    if progress:
        progress(f"{label}: authors' code, up to {case.settings.max_iterations} iterations ...")
    theirs = train_with_their_code(code, case)
    if progress:
        progress(f"{label}: authors' code done in {theirs.seconds:.1f}s; our engine ...")
    note = case.note
    try:
        ours = train_with_our_engine(case)
    except DivergenceError as error:
        ours, note = None, f"{note}; our engine: {error}"
    if progress:
        progress(f"{label}: our engine done" + (f" in {ours.seconds:.1f}s" if ours else ": diverged"))
    if not np.isfinite(theirs.train_loss[-1]):
        note = f"{note}; authors' code: non-finite training loss (diverged)"
    their_values = quantities(case, theirs)
    our_values = quantities(case, ours) if ours else dict.fromkeys(their_values, math.nan)
    return [
        {
            "task": case.task,
            "panel": case.panel,
            "model": case.model,
            "quantity": name,
            "authors_code": their_values[name],
            "ours": our_values[name],
            "note": note,
        }
        for name in their_values
    ]


# ---------------------------------------------------------------------------------------------------------------
# The experiments (config/config.yaml's settings)


@dataclass(frozen=True)
class Panel:
    """One problem instance and the cases trained on it. ``splits_before``: data splits their notebook
    draws before the init key (1 for MF, 2 for MC, ...); ``alphas``: C-DLN outer rates (one case each)."""

    task: str
    name: str
    spec: ProblemSpec
    depth: int
    eps: float
    r_hat: int
    settings: TrainSettings
    alphas: tuple[float, ...] = (1.0,)
    splits_before: int = 1
    error_levels: tuple[float, ...] = ()
    alignment: bool = False
    original: bool = True
    their_depth2_cdln: bool = False
    cdln: bool = True
    notes: dict[str, str] = field(default_factory=dict)


# The cross-check's panels: task -> (experiment, the grid runs' keys, what only the cross-check sets). The
# settings (problem, depth, eps, r_hat, lr, n_inner, max_outer, tol) are read from the grid's runs of seed 0.
# splits_before: the data splits their notebook draws before the init key; alphas: C-DLN outer rates, one case each.
CROSSCHECK_PANELS: dict[str, list[tuple[str, dict[str, str], dict[str, Any]]]] = {
    "mf": [("mf", {"panel": "r10"}, {"error_levels": (1e-10,)})],
    "mc": [("mc", {"panel": "r10"}, {"splits_before": 2})],
    "alignment": [
        ("alignment", {"task": "mf"}, {"alignment": True, "cdln": False}),
        ("alignment", {"task": "mc"}, {"splits_before": 2, "alignment": True, "cdln": False}),
    ],
    "alpha": [("ablation_alpha", {"panel": "r5"}, {"alphas": (0.5, 1.0, 2.0, 5.0, 9.75), "splits_before": 2})],
    "depth": [
        ("ablation_depth", {"panel": "L2"}, {"splits_before": 2, "their_depth2_cdln": True}),
        ("ablation_depth", {"panel": "L3"}, {"splits_before": 3}),
    ],
    "ms": [("ms", {"panel": "r3"}, {"error_levels": (1e-4,)})],
}


def default_panels(config: dict[str, Any], seed: int = 0, tasks: Sequence[str] = DEFAULT_TASKS) -> list[Panel]:
    """The cross-check's panels for ``tasks``, at the settings of the pipeline ``config``'s grid (data seed
    ``seed``): the original DLN's run of each panel gives the problem and the GD settings, the C-DLN's its
    width and outer rate."""
    unknown = sorted(set(tasks) - set(CROSSCHECK_PANELS))
    if unknown:
        raise ValueError(f"unknown crosscheck task(s) {unknown}; choose from {list(TASKS)}")
    grid = Grid(config)
    panels = []
    for task in tasks:
        for experiment, keys, extra in CROSSCHECK_PANELS[task]:
            runs = {
                run.keys["model"]: run.options | _problem_options(grid, job)
                for job, run in grid.runs(experiment)
                if run.keys.get("seed") == 0 and all(run.keys.get(k) == v for k, v in keys.items())
            }
            if "original" not in runs:
                raise ValueError(f"the config's experiments.{experiment} has no original-DLN run for {keys}")
            original, cdln = runs["original"], runs.get("cdln", {})
            d = original["d"]
            spec = ProblemSpec(original["task"], d, d, original["r"], seed, original.get("p"), original.get("m"))
            settings = TrainSettings(original["lr"], original["n_inner"], original["max_outer"], original["tol"])
            r_hat = cdln.get("r_hat") or 2 * original["r"]
            alphas = tuple(extra.get("alphas", (cdln.get("alpha") or 1.0,)))
            options = {k: v for k, v in extra.items() if k != "alphas"}
            name = keys.get("panel") or keys["task"]
            panels.append(
                Panel(task, name, spec, original["depth"], original["eps"], r_hat, settings, alphas, **options)
            )
    return panels


def _problem_options(grid: Grid, job: Any) -> dict[str, Any]:
    """The problem a job's runs train on: the options of its problem file, or of the run itself (drawn in job)."""
    drawn = {key: value for run in job.runs for key, value in getattr(grid.run_data(run), "options", {}).items()}
    return {key: value for key, value in drawn.items() if key in ("d", "r", "p", "m") and value is not None}


def panel_cases(code: AuthorsCode, panel: Panel, seed: int) -> list[Case]:
    """The cases of ``panel``: the original DLN from our init and from theirs, the C-DLN per alpha (their
    construction; our construction gives the same initial end-to-end matrix, checked in the note)."""
    problem = make_problem(panel.spec)
    common = {"task": panel.task, "panel": panel.name, "problem": problem, "settings": panel.settings}
    common |= {"error_levels": panel.error_levels, "alignment": panel.alignment}
    cases = []
    if panel.original:
        ours = our_original_init(problem, panel.depth, panel.eps, seed)
        theirs = their_original_init(code, problem, panel.depth, panel.eps, seed, panel.splits_before)
        key_note = f"init: their init_net, PRNGKey({seed}) split {panel.splits_before + 1}x as in their notebook"
        cases += [
            Case(model="original (our init)", weights=ours, outer_scale=None,
                 note=f"init: cdln.networks.original_dln, init seed {seed}", **common),
            Case(model="original (their init)", weights=theirs, outer_scale=None, note=key_note, **common),
        ]  # fmt: skip
    if panel.cdln:
        theirs = their_compressed_init(code, problem, panel.r_hat, panel.depth, panel.eps)
        ours = our_compressed_init(problem, panel.r_hat, panel.depth, panel.eps)
        agreement = compare_spectral_inits(problem, theirs, ours)
        note = f"init: their kwon_compress_network (r_hat={panel.r_hat}); {agreement}"
        for alpha in panel.alphas:
            cases.append(
                Case(model=f"cdln alpha={alpha:g} (their init)", weights=theirs, outer_scale=alpha, note=note, **common)
            )
        note = f"init: cdln.networks.compressed_dln (r_hat={panel.r_hat})"
        alpha = panel.alphas[0]
        cases.append(
            Case(model=f"cdln alpha={alpha:g} (our init)", weights=ours, outer_scale=alpha, note=note, **common)
        )
        if panel.their_depth2_cdln:
            factors = their_compressed_init(code, problem, panel.r_hat, 2, panel.eps, without_eps_at_depth_2=True)
            note = "init: their depth notebook's L=2 C-DLN, factors [V^T, U] without eps"
            for alpha in panel.alphas:
                cases.append(
                    Case(model=f"cdln alpha={alpha:g} (their L=2 init)", weights=factors, outer_scale=alpha, note=note,
                         **common)
                )  # fmt: skip
    return cases


def compare_spectral_inits(problem: Problem, theirs: list[np.ndarray], ours: list[np.ndarray]) -> str:
    """How far their C-DLN W(0) is from ours, on the surrogate's numerically nonzero singular directions
    (beyond the surrogate's rank the top-r_hat singular vectors are arbitrary, e.g. MF with r_hat = 2r)."""
    u, s, vh = np.linalg.svd(problem.surrogate().numpy())
    r_hat = theirs[0].shape[0]
    k = min(r_hat, int(np.sum(s > 1e-10 * s[0])))
    project = lambda w: u[:, :k].T @ w @ vh[:k].T  # noqa: E731
    gap = np.abs(project(product(theirs)) - project(product(ours))).max() / np.abs(project(product(ours))).max()
    arbitrary = f"; the other {r_hat - k} directions are arbitrary (surrogate rank {k})" if k < r_hat else ""
    return f"W(0) vs our compressed_dln on the top-{k} surrogate directions: rel. diff {gap:.1e}{arbitrary}"


def settings_note(panel: Panel) -> str:
    s, spec = panel.settings, panel.spec
    shape = f"d={spec.d_out} r={spec.rank}" + (f" p={spec.p:g}" if spec.p else "") + (f" m={spec.m}" if spec.m else "")
    budget = s.max_iterations
    return f"{shape} L={panel.depth} eps={panel.eps:g} eta={s.lr:g} n_inner={s.n_inner} budget={budget} tol={s.tol:g}"


def run_panels(
    code: AuthorsCode, panels: Sequence[Panel], seed: int, progress: ProgressFn | None = None
) -> pd.DataFrame:
    """Every case of every panel through both trainers; the table (columns :data:`COLUMNS`)."""
    rows: list[dict[str, Any]] = []
    for panel in panels:
        if progress:
            progress(f"panel {panel.task}/{panel.name}: {settings_note(panel)}")
        for case in panel_cases(code, panel, seed):
            case = replace(case, note=f"{settings_note(panel)}; {case.note}")
            rows += run_case(code, case, progress)
    return pd.DataFrame(rows, columns=COLUMNS)


# ---------------------------------------------------------------------------------------------------------------
# Output


def _cell(value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "not reached"
    if float(value).is_integer() and abs(value) < 1e9:
        return f"{int(value)}"
    return f"{value:.3g}"


def to_markdown(table: pd.DataFrame, header: str = "") -> str:
    """The table as markdown, one section per task/panel with its settings and init notes below it."""
    lines = [header.rstrip(), ""] if header else []
    for (task, panel), group in table.groupby(["task", "panel"], sort=False):
        lines += [f"## {task} / {panel}", "", "| model | quantity | authors' code | ours |", "|---|---|---:|---:|"]
        for row in group.itertuples(index=False):
            lines.append(f"| {row.model} | {row.quantity} | {_cell(row.authors_code)} | {_cell(row.ours)} |")
        lines.append("")
        for model, note in group.groupby("model", sort=False)["note"].first().items():
            lines.append(f"- {model}: {note}")
        lines.append("")
    return "\n".join(lines)


def write_table(table: pd.DataFrame, out_dir: str | Path, header: str = "") -> tuple[Path, Path]:
    """``out_dir/crosscheck.csv`` and ``out_dir/crosscheck.md``, each written atomically."""
    out_dir = Path(out_dir)
    csv_path = cdln_outputs.write_csv(out_dir / "crosscheck.csv", table)
    md_path = cdln_outputs.write_text(out_dir / "crosscheck.md", to_markdown(table, header))
    return csv_path, md_path


def describe_code(code: AuthorsCode) -> str:
    """Where their code came from: the path and, when git can read it, the commit."""
    import subprocess

    commit = "commit unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "-C", str(code.path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if done.returncode == 0:
            commit = f"commit {done.stdout.strip()}"
    return f"{code.path} ({commit})"
