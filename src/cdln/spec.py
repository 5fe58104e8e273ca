"""What determines a problem instance: :class:`ProblemSpec` and the valid values of its fields.

Beyond the paper (the robustness figure): ``noise`` adds Gaussian noise to MC's observed entries or to
MS's measurements (standard deviation ``noise`` x the RMS of the clean observations); the loss fits the
noisy data and the recovery error is still measured against the clean target. ``spectrum`` sets the
target's singular values: the authors' ``spread`` (and ``top``), ``flat`` (all equal) or ``geometric``
decay with condition number ``condition``; the reshaped spectra keep the spread target's singular
vectors and its Frobenius norm, so errors stay comparable across shapes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

import torch

Task = Literal["mf", "mc", "ms"]
TASKS: tuple[str, ...] = ("mf", "mc", "ms")
SPECTRA: tuple[str, ...] = ("spread", "top", "flat", "geometric")
NOISY_TASKS: tuple[str, ...] = ("mc", "ms")
OPERATOR_DTYPES: tuple[str, ...] = ("float32", "float64")  # MS: the operator's storage (arithmetic: the run's)
CLASS_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")  # a user's problem class, module:Class


@dataclass(frozen=True)
class ProblemSpec:
    """Everything that determines a problem instance: task, shape (d_out, d_in), rank, ``data_seed``, and the
    task's own settings."""

    task: str
    d_out: int
    d_in: int
    rank: int
    data_seed: int = 0
    p: float | None = None  # MC: fraction of observed entries
    m: int | None = None  # MS: number of measurements
    spectrum: str = "spread"
    condition: float | None = None  # spectrum "geometric": largest / smallest singular value, >= 1
    noise: float = 0.0  # MC/MS: noise std relative to the RMS of the clean observations, >= 0
    operator_dtype: str | None = None  # MS: the operator's storage, float32 (None: float32) or float64

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field and its valid range."""
        if self.task not in TASKS and not CLASS_PATH.match(self.task):
            raise ValueError(f"task must be one of {list(TASKS)} or a problem class as module:Class; got {self.task!r}")
        if self.d_out < 1 or self.d_in < 1:
            raise ValueError(f"d must be >= 1; got d_out={self.d_out}, d_in={self.d_in}")
        if not 1 <= self.rank <= min(self.d_out, self.d_in):
            raise ValueError(f"r must be in [1, min(d_out, d_in)] = [1, {min(self.d_out, self.d_in)}]; got {self.rank}")
        if self.spectrum not in SPECTRA:
            raise ValueError(f"spectrum must be one of {list(SPECTRA)}; got {self.spectrum!r}")
        if self.spectrum == "geometric" and (self.condition is None or not self.condition >= 1):
            raise ValueError(f"condition must be >= 1 for spectrum 'geometric'; got {self.condition}")
        if self.spectrum != "geometric" and self.condition is not None:
            raise ValueError(f"condition applies to spectrum 'geometric' only; got it with {self.spectrum!r}")
        if not self.noise >= 0 or not math.isfinite(self.noise):
            raise ValueError(f"noise must be a finite number >= 0; got {self.noise}")
        if self.noise and self.task not in NOISY_TASKS:
            raise ValueError(f"noise applies to tasks {list(NOISY_TASKS)} (observed data); got task {self.task!r}")
        if self.task == "mc" and (self.p is None or not 0.0 < self.p <= 1.0):
            raise ValueError(f"p must be in (0, 1] for task 'mc'; got {self.p}")
        if self.task == "ms" and (self.m is None or self.m < 1):
            raise ValueError(f"m must be >= 1 for task 'ms'; got {self.m}")
        if self.operator_dtype is not None and self.operator_dtype not in OPERATOR_DTYPES:
            raise ValueError(f"operator_dtype must be one of {list(OPERATOR_DTYPES)}; got {self.operator_dtype!r}")
        if self.operator_dtype is not None and self.task != "ms":
            raise ValueError(f"operator_dtype applies to task 'ms' (the sensing operator); got task {self.task!r}")

    @property
    def operator_storage(self) -> torch.dtype:
        """The MS operator's stored dtype (float32 unless ``operator_dtype`` says float64)."""
        return torch.float64 if self.operator_dtype == "float64" else torch.float32

    def operator_bytes(self, dtype: torch.dtype = torch.float64) -> int:
        """Bytes of the largest tensor the problem holds (the MS operator, else the target) in ``dtype``."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        entries = self.d_out * self.d_in
        return itemsize * entries * (self.m if self.task == "ms" else 1)
