"""``cdln bench``: the command line of the engine's benchmark (:mod:`cdln.bench`), and of the scaling figure's
measurement (``--scaling``)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from cdln.bench import DEFAULT_CONFIG, SECTIONS, run_benchmark
from cdln.bench.scaling import scaling
from cdln.bench.timing import pin_to_one_core
from cdln.cli.common import ExitCode, add_threads_option, apply_threads, writes_files
from cdln.devices import device_name, resolve_device
from cdln.outputs import write_csv
from cdln.reference import single_thread_jax


def bench_command(args: argparse.Namespace) -> int:
    from cdln.pipeline.validate import load_pipeline_config

    apply_threads(args)
    resolve_device(args.device)
    if args.scaling:
        tol_settings = dict(lr=args.lr, n_inner=args.n_inner, max_outer=args.max_outer, tol=args.tol)
        rows = scaling(
            args.sizes or [100, 200, 400, 1000, 2000],
            args.device,
            args.dtypes[0],
            r=args.r,
            r_hat=args.r_hat,
            p=args.p,
            tol_sizes=args.tol_sizes,
            tol_settings=tol_settings,
        )
        if args.out is not None:
            device = device_name(resolve_device(args.device))
            write_csv(args.out, pd.DataFrame(rows).assign(device=device, dtype=args.dtypes[0]), float_format="%.17g")
        return ExitCode.OK
    config = load_pipeline_config(args.config)
    if "jax" in args.sections and args.threads == 1:  # a single-thread comparison: JAX on one core too
        single_thread_jax()
        pin_to_one_core()
    sizes, ms_sizes = args.sizes or (100, 400, 1000, 2000), args.ms_sizes or (100, 200)
    run_benchmark(config, args.device, args.sections, sizes, ms_sizes, args.dtypes, args.out)
    return ExitCode.OK


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``cdln bench`` to the ``cdln`` parser."""
    bench = commands.add_parser("bench", help="benchmark the GD engine (docs/performance.md)")
    bench.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="pipeline config the settings come from")
    bench.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    add_threads_option(bench, default=1)
    bench.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS, help="what to run (all)")
    bench.add_argument("--sizes", nargs="+", type=int, default=None, help="d for MF/MC (default 100 400 1000 2000)")
    bench.add_argument("--ms-sizes", nargs="+", type=int, default=None, help="d for MS, m = 20d (default 100 200)")
    bench.add_argument(
        "--dtypes", nargs="+", default=["float64", "float32"], choices=["float64", "float32"], help="dtypes to time"
    )
    bench.add_argument("--out", type=Path, default=None, help="write the results here (JSON; CSV with --scaling)")
    scaling_options = bench.add_argument_group("--scaling (the pipeline's scaling figure)")
    scaling_options.add_argument("--scaling", action="store_true", help="seconds per iteration / to tol against d")
    scaling_options.add_argument("--tol-sizes", nargs="+", type=int, default=[], help="d values timed to tol")
    scaling_options.add_argument("--lr", type=float, default=10.0, help="step size at d = 100, scaled by (d/100)^2")
    scaling_options.add_argument("--n-inner", type=int, default=100, help="GD steps between checkpoints")
    scaling_options.add_argument("--max-outer", type=int, default=500, help="maximum number of checkpoints")
    scaling_options.add_argument("--tol", type=float, default=1e-12, help="training-loss tolerance")
    scaling_options.add_argument("--r", type=int, default=10, help="target rank")
    scaling_options.add_argument("--r-hat", type=int, default=20, help="C-DLN width")
    scaling_options.add_argument("--p", type=float, default=0.3, help="MC observed fraction")
    writes_files(bench, "out")
    bench.set_defaults(handler=bench_command)
