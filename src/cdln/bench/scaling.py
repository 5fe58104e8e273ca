"""The scaling experiment (figure ``fig_scaling``): seconds per iteration, engine and roofline, and
seconds to tol against d, for the original DLN and the C-DLN on MC."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cdln.bench.kernels import Case, bench_case, repeats_for
from cdln.bench.runs import run_config
from cdln.config import RunConfig
from cdln.devices import resolve_device


def scaling(
    sizes: Sequence[int],
    device_spec: str = "auto",
    dtype: str = "float64",
    task: str = "mc",
    r: int = 10,
    r_hat: int = 20,
    p: float = 0.3,
    tol_sizes: Sequence[int] = (),
    tol_settings: dict | None = None,
    echo: Callable[[str], None] = print,
) -> list[dict]:
    """Seconds per iteration (engine and roofline) against d for the original DLN and the C-DLN, and
    seconds to tol (``tol_settings``: RunConfig fields, lr given for d = 100 and scaled by (d/100)^2 so
    that the per-entry step is the same at every d) for d in ``tol_sizes``.

    Returns tidy rows: d, model, quantity (seconds_per_iteration | roofline_seconds |
    seconds_to_tol | iterations_to_tol), value, converged.
    """
    device = resolve_device(device_spec)
    rows: list[dict] = []
    problems: dict = {}
    for d in sizes:
        for model in ("original", "cdln"):
            step = (tol_settings or {}).get("lr", 10.0) * (d / 100) ** 2
            case = Case(task, d, model, dtype, 20 * d if task == "ms" else None, r=r, r_hat=r_hat, p=p, lr=step)
            target_seconds, repeats = repeats_for(case)
            res = bench_case(case, problems, device, target_seconds, repeats)
            for quantity, key in (("seconds_per_iteration", "us_per_iteration"), ("roofline_seconds", "roofline_us")):
                rows.append(dict(d=d, model=model, quantity=quantity, value=res[key] / 1e6))
            echo(f"d={d:5d} {model:8} {res['us_per_iteration']:12.1f} us/iter (roofline {res['roofline_us']:.1f} us)")
    problems.clear()
    settings = dict(tol_settings or {})
    base_lr = settings.pop("lr", 10.0)
    for d in tol_sizes:
        for model in ("original", "cdln"):
            config = RunConfig(
                task=task,
                d=d,
                r=r,
                r_hat=r_hat,
                p=p if task == "mc" else None,
                model=model,
                dtype=dtype,
                device=str(device),
                m=20 * d if task == "ms" else None,
                lr=base_lr * (d / 100) ** 2,
                **settings,
            )
            config.validate()
            _, (member,) = run_config(config, device)
            for quantity, key in (("seconds_to_tol", "stop_seconds"), ("iterations_to_tol", "stop_iteration")):
                value = float(member[key])
                rows.append(dict(d=d, model=model, quantity=quantity, value=value, converged=member["converged"]))
            echo(
                f"d={d:5d} {model:8} to tol: {member['stop_seconds']:.2f} s, {member['stop_iteration']} iterations, "
                f"converged {member['converged']}"
            )
    for row in rows:
        row.setdefault("converged", True)
    return rows
