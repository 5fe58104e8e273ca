"""The error-curve figure's statistics over seeds (cdln.plotting.error_curves.mean_curve)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cdln.plotting.error_curves import mean_curve


def test_mean_curve_is_the_geometric_mean_and_range_over_the_seeds_at_each_checkpoint() -> None:
    # Seed 0 reaches iterations 0, 10, 20; seed 1 stops at tol after 10, so iteration 20 has one seed.
    curves = pd.DataFrame({
        "seed": [0, 0, 0, 1, 1],
        "iteration": [0, 10, 20, 0, 10],
        "seconds": [0.0, 1.0, 2.0, 0.0, 3.0],
        "recovery_error": [1.0, 1e-2, 1e-4, 4.0, 1e-6],
        "train_loss": [2.0, 0.0, 1e-5, 8.0, 1e-3],  # an exact zero is clipped at 1e-300 before the log
    })  # fmt: skip
    stats = mean_curve(curves).set_index("iteration")
    assert list(stats.index) == [0, 10, 20]
    assert stats["n"].tolist() == [2, 2, 1]
    assert stats["seconds"].tolist() == [0.0, 2.0, 2.0]
    assert stats["recovery_error_mean"].tolist() == pytest.approx([2.0, 1e-4, 1e-4])
    assert stats.loc[10, "train_loss_mean"] == pytest.approx(np.sqrt(1e-300 * 1e-3))
    assert stats.loc[10, ["recovery_error_min", "recovery_error_max"]].tolist() == [1e-6, 1e-2]
    assert stats.loc[0, ["train_loss_min", "train_loss_max"]].tolist() == [2.0, 8.0]
