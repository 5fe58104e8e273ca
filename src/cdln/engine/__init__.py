"""Full-batch gradient descent on deep linear networks, with closed-form layer gradients.

Read in this order: :mod:`~cdln.engine.loop` (the one training loop), :mod:`~cdln.engine.plan` (the one
decision: which step runs), :mod:`~cdln.engine.torch_step` (the reference step, any problem, any device),
:mod:`~cdln.engine.kernels` (the compiled CPU steps for MF and MC, and MS's operator pass).
"""

from cdln.engine.loop import DivergenceError, ProgressFn, SnapshotFn, TrainResult, TrainSettings, train
from cdln.engine.plan import EnginePlan, plan_engine
from cdln.engine.torch_step import Workspace, layer_gradients

__all__ = [
    "DivergenceError", "EnginePlan", "ProgressFn", "SnapshotFn", "TrainResult", "TrainSettings", "Workspace",
    "gd_steps", "layer_gradients", "plan_engine", "train",
]  # fmt: skip


def gd_steps(weights, neg_steps, problem, n_steps: int, path: str | None = None) -> None:
    """Take ``n_steps`` GD steps of one network's stacked ``weights`` in place on the path the plan picks,
    or on ``path`` (an engine override: ``torch``, ``native-dense``, ...); ``neg_steps[l]`` = -(lr x step
    multiplier), shape (B, 1, 1)."""
    plan_engine(weights, problem, path).stepper(problem, weights).run(weights, neg_steps, n_steps)
