"""The paper's claims, checked against our result tables on every run.

Each claim is written once, as data (``config/claims.yaml``): the figure it belongs to, what the paper
states and the value its figure shows, a ``measure`` (an expression over our tables) and a ``holds``
predicate on that measure. :func:`evaluate` computes every claim of one figure from that figure's
tables; :func:`to_markdown` gathers them. Nothing measured is typed in: ``measured`` is always the
expression's value on the tables of this run.

Measures are arithmetic (``+ - * /``, numbers, ``min``, ``max``, ``abs``, ``log10``) over these functions, whose
bare-word arguments are names (``first(mf, r10, cdln, 1e-10)``). ``over`` says how seeds are combined:
``mean``, ``min``, ``max`` (the worst seed, for a bound that must hold on every seed) or ``gmean``.

- ``first(experiment, panel, model, level, x=iteration, column=recovery_error, over=mean)``: per seed,
  the first checkpoint's ``x`` (iteration or seconds) at which ``column`` <= ``level``; NaN when a seed
  never gets there. From ``<experiment>_curves.csv``.
- ``final(experiment, panel, model, column=recovery_error, over=max)``: each seed's last value.
- ``runs(experiment, panel, model, column, over=mean, alpha=None)``: a column of ``<experiment>_runs.csv``
  (stop_iteration, stop_seconds, converged, ...), optionally at one alpha (a number, min, max or all).
- ``paired(experiment, panel, model_a, model_b, quantity, level=None, x=iteration, column=recovery_error,
  over=min)``: per seed, ``model_a``'s quantity over ``model_b``'s on the same problem instance:
  ``first`` (needs ``level``), ``final``, or a runs-table column (``stop_iteration``, ``stop_seconds``).
- ``dominance(experiment, panel, model_a, model_b, floor=1e-10)``: the largest ratio of ``model_a``'s
  recovery error to ``model_b``'s over every checkpoint both runs reached and every seed, counting only
  checkpoints where both errors are above ``floor`` times their value at iteration 0 (below that the
  ratio compares rounding, not learning); the row's ``over`` names the seed and iteration of the worst
  ratio and how many checkpoints are above 1.
- ``crossover(experiment, panel, column=stop_iteration, over=max)``: per seed, the alpha from which the C-DLN
  needs less of ``column`` than that seed's original DLN at every larger swept alpha, interpolated linearly
  between the last swept alpha where it needs more and the next (NaN when there is no crossing inside the
  sweep: the C-DLN faster at every alpha, or never faster), combined ``over`` seeds.
- ``sweep_rise(experiment, panel, column=stop_iteration, over=max)``: per seed, the largest rise of the
  C-DLN's ``column`` from one swept alpha to the next (at most 0 when it never rises as alpha grows).
- ``sweep_ratio(experiment, panel, column=stop_iteration, over=min)``: per seed, the C-DLN's ``column`` at the
  smallest swept alpha over its value at the largest.
- ``finding(analysis, task, path, over=max)``: a value of ``<analysis>_findings.json``, per seed
  (``by_seed``), combined ``over`` seeds; ``path`` (quoted) is ``/``-separated
  (``top_left_last/iteration_0.99``); true/false count as 1/0.
- ``table(name, model, column)``: a real-data table's value (``movielens.csv``, ``nonlinear.csv``: means
  over seeds, with ``<column>_min``/``_max``).
- ``by_seed(name, model_a, model_b, column, op=ratio, over=min, column_b=column)``: per seed (or split), a
  real-data run's ``column`` of ``model_a`` against ``model_b``'s ``column_b`` (``<name>_runs.csv``, the same
  seed): ``ratio`` (a / b), ``difference`` (a - b) or ``gap`` (|a - b|).
- ``per_seed(name, model, column, over=max)``: a real-data run's ``column`` (``<name>_runs.csv``), one value
  per seed (split), combined ``over`` them.
- ``scaling(model, quantity, d=max)``: a value of ``scaling.csv`` at one d (a number, min or max).
- ``robust(factor, value, model, column, over=max)``: a column of ``robustness.csv`` (the robustness
  figure's sweeps, :mod:`cdln.pipeline.robustness`) at one swept value, combined over seeds.
- ``robust_ratio(factor, value, column, over=min, a=original, b=cdln)``: per seed, model ``a``'s column
  over model ``b``'s at one swept value (e.g. ``level_seconds``: the speed-up to the figure's level).
- ``robust_across(factor, value_a, value_b, model, column, over=min)``: per seed, a model's column at one swept
  value over its value at another.

Predicates: ``above``, ``below``, ``at_least``, ``at_most``, ``between: [low, high]``, ``equals`` (to
1e-12 relative; true counts as 1). A NaN measure never holds.

Every row says over what it was measured (``aggregation``: e.g. "min over 3 seeds (paired)"), whether
its threshold or settings were fitted to the same figure (``calibrated``: such rows are reported apart
and not counted in the headline), and its ``section``: ``abstract`` (the abstract's own claims),
``paper`` (a figure's) or ``ours`` (claims of figures that are not the paper's).

A grid other than the paper's maps the paper's panel names to its own (``claims.panels`` of its
config; ``null`` for a paper panel it does not have): a claim about an unmapped panel does not apply
there, a panel missing from the map is an error naming the claim (a typo must not pass silently), and
claims marked ``absolute`` (thresholds read off the paper's figures, meaningful at the paper's sizes
only) apply only where the config sets ``claims.absolute``. Claims that read seconds name the device
those seconds were measured on and, in brackets, the engine path each model's steps took (the runs
tables' ``engine_path``); a grid whose config sets ``claims.timing: false`` (the reduced CI grid, whose
runs take milliseconds on a shared machine) leaves them out. A row that reads seconds also states its
measure's spread over seeds (:func:`spread`); when it fails but its bound lies inside the range its runs' own
timing noise allows (each run's seconds at either end of its checkpoint intervals' spread), it reads "within
noise", neither holds nor fails (:func:`judge`). A claim known not to reproduce carries its
measured reason (``deviation``): it is still evaluated and reported, and :func:`violations` does not
count it.
"""

from cdln.pipeline.claims.evaluate import Verdict, evaluate, format_value, judge, measure, not_evaluated, violations
from cdln.pipeline.claims.measures import BUILTINS, FUNCTIONS, ClaimError, NotApplicable, Tables
from cdln.pipeline.claims.noise import spread
from cdln.pipeline.claims.report import coverage_line, headline, to_markdown
from cdln.pipeline.claims.spec import CLAIM_KEYS, COLUMNS, SECTIONS, Claim, load_claims, tables_read

__all__ = [
    "BUILTINS", "CLAIM_KEYS", "COLUMNS", "FUNCTIONS", "SECTIONS", "Claim", "ClaimError", "NotApplicable", "Tables",
    "Verdict", "coverage_line", "evaluate", "format_value", "headline", "judge", "load_claims", "measure",
    "not_evaluated", "spread", "tables_read", "to_markdown", "violations",
]  # fmt: skip
