"""RunConfig validation: every bad value is rejected before any work, naming the option and valid values.

The schema side (the pipeline's config.yaml validated by workflow/schemas/config.schema.yaml) is at
the bottom of this file.
"""

from __future__ import annotations

import re

import pytest

import cdln.config
import cdln.runner
from cdln.config import ConfigError, RunConfig

GOOD = dict(task="mc", d=10, r=2, p=0.5, model="cdln", depth=3, lr=5.0, n_inner=10, max_outer=5, device="cpu")

# (overrides of GOOD, regex the message must match: the option's name and its valid values)
BAD_RUN_CONFIGS = [
    ({"lr": -1.0}, r"--lr must be a finite number > 0; got -1"),
    ({"lr": 0.0}, r"--lr must be a finite number > 0"),
    ({"lr": float("nan")}, r"--lr must be a finite number > 0"),
    ({"lr": "fast"}, r"--lr must be a finite number > 0; got 'fast'"),
    ({"eps": 0}, r"--eps must be a finite number > 0"),
    ({"gamma": -0.01}, r"--gamma must be a finite number > 0"),
    ({"alpha": [1.0, -2.0]}, r"--alpha must be a finite number > 0; got -2"),
    ({"alpha": []}, r"--alpha needs at least one value"),
    ({"r": 11}, r"--r must be in \[1, min\(d_out, d_in\)\] = \[1, 10\]; got 11"),
    ({"r": 0}, r"--r must be an integer >= 1; got 0"),
    ({"r": 2.5}, r"--r must be an integer >= 1; got 2.5"),
    ({"d": "10"}, r"--d must be an integer >= 1; got '10'"),
    ({"d_in": 0}, r"--d-in must be an integer >= 1"),
    ({"r_hat": 0}, r"--r-hat must be an integer >= 1; got 0"),
    ({"r_hat": 11}, r"--r-hat must be in \[1, 10\]; got 11"),
    ({"p": 0.0}, r"--p must be in \(0, 1\]"),
    ({"p": 1.5}, r"--p must be in \(0, 1\]"),
    ({"p": -0.2}, r"--p must be in \(0, 1\]"),
    ({"p": None}, r"--p must be in \(0, 1\]"),
    ({"p": "half"}, r"--p must be in \(0, 1\]"),
    ({"task": "ms", "m": None}, r"--m .* is required for task 'ms'"),
    ({"task": "ms", "m": 0}, r"--m must be an integer >= 1"),
    ({"depth": 1}, r"--depth must be an integer >= 2; got 1"),
    ({"depth": 0}, r"--depth must be an integer >= 2"),
    ({"n_inner": 0}, r"--n-inner must be an integer >= 1"),
    ({"max_outer": -5}, r"--max-outer must be an integer >= 1"),
    ({"tol": -1e-9}, r"--tol must be a finite number >= 0"),
    ({"tol": "tiny"}, r"--tol must be a finite number >= 0"),
    ({"task": "mx"}, r"--task must be one of \['mf', 'mc', 'ms'\]; got 'mx'"),
    ({"model": "resnet"}, r"--model must be one of \['original', 'cdln', 'narrow', 'bm', 'yaras'\]; got 'resnet'"),
    ({"spectrum": "bumpy"}, r"--spectrum must be one of \['spread', 'top', 'flat', 'geometric'\]"),
    ({"spectrum": "geometric"}, r"--condition must be a number >= 1 for --spectrum geometric"),
    ({"condition": 10.0}, r"--condition applies to --spectrum geometric only"),
    ({"noise": -1.0}, r"--noise must be a finite number >= 0"),
    ({"task": "mf", "noise": 0.1}, r"--noise applies to tasks \['mc', 'ms'\]"),
    ({"dtype": "float16"}, r"--dtype must be one of \['float64', 'float32'\]"),
    ({"device": "tpu"}, r"--device must be one of auto, cpu, cuda, cuda:N; got 'tpu'"),
    ({"init_seed": []}, r"--init-seed needs at least one seed"),
    ({"init_seed": [1, 2, 1]}, r"--init-seed has duplicate seeds: \[1, 2, 1\]"),
    ({"init_seed": [-1]}, r"seeds must be integers >= 0; got -1"),
    ({"data_seed": 1.5}, r"seeds must be integers >= 0; got 1.5"),
    ({"alpha": [1.0, 2.0], "model": "original"}, r"several --alpha values .* need --model cdln"),
    ({"alpha": [1.0, 2.0], "init_seed": [0, 1]}, r"either --alpha values or --init-seed values"),
    ({"problem": "/nonexistent/problem.pt"}, r"--problem file /nonexistent/problem.pt does not exist"),
    ({"snapshots": "yes"}, r"--snapshots must be true or false"),
]


@pytest.mark.parametrize("overrides,message", BAD_RUN_CONFIGS, ids=[str(o) for o, _ in BAD_RUN_CONFIGS])
def test_bad_run_config_is_rejected_before_any_work(monkeypatch, tmp_path, overrides, message):
    def no_work(*args, **kwargs):
        raise AssertionError("a problem was built before the config was validated")

    monkeypatch.setattr(cdln.runner, "make_problem", no_work)
    monkeypatch.setattr(cdln.runner, "load_problem", no_work)
    config = RunConfig.from_dict({**GOOD, **overrides})
    with pytest.raises(ConfigError, match=message):
        cdln.runner.run(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    assert list(tmp_path.iterdir()) == []


def test_the_good_config_is_valid():
    RunConfig.from_dict(GOOD).validate()  # guards the list above: each failure is due to its override


def test_unknown_keys_are_named_with_the_valid_keys():
    with pytest.raises(ConfigError, match=r"run.yaml: unknown key\(s\) \['learning_rate'\]; valid keys: \["):
        RunConfig.from_dict({**GOOD, "learning_rate": 1.0}, source="run.yaml")


def test_scalar_seed_and_alpha_are_promoted_to_lists():
    config = RunConfig.from_dict({**GOOD, "init_seed": 3, "alpha": 2.0})
    assert config.init_seed == [3] and config.alpha == [2.0]


@pytest.mark.parametrize("key,text,value", [("lr", "1e-2", 0.01), ("tol", "1e-12", 1e-12), ("eps", "1e-3", 1e-3)])
def test_yaml_style_exponent_strings_are_numbers(key, text, value):
    """PyYAML reads ``1e-2`` (no dot) as a string; such values must still be accepted as numbers."""
    config = RunConfig.from_dict({**GOOD, key: text})
    config.validate()
    assert getattr(config, key) == value


def test_memory_refusal_names_the_size_needed(monkeypatch):
    monkeypatch.setattr(cdln.runner, "make_problem", lambda *a: (_ for _ in ()).throw(AssertionError("built")))
    # The MS operator's float64 draw alone at d = 2000, m = 100,000 is 8 * 4e6 * 1e5 bytes = 2980.2 GiB, its
    # float32 copy half that: 4470.3 GiB at the draw's peak.
    config = RunConfig(task="ms", d=2000, r=5, m=100_000, model="cdln", device="cpu")
    with pytest.raises(
        ConfigError,
        match=r"m = 100000 measurements .* need about ([0-9.]+) GiB of memory but only "
        r".* GiB is available; reduce --d or --m",
    ) as info:
        cdln.runner.run(config)
    needed = float(re.search(r"need about ([0-9.]+) GiB", str(info.value)).group(1))
    assert 4470.3 <= needed < 4480


def test_memory_check_counts_the_float64_draw_and_the_network(monkeypatch):
    # MS operator 8 * 1e4 * 1e4 bytes = 0.745 GiB drawn, 0.373 GiB stored (float32): ~1.12 GiB at the draw's peak;
    # on the device the float32 operator, in a float64 run too.
    config = RunConfig(task="ms", d=100, r=5, m=10_000, model="cdln", device="cpu")
    host, device = config.memory_bytes()
    assert 12 * 10_000 * 100**2 < host < 1.05 * 12 * 10_000 * 100**2
    assert 4 * 10_000 * 100**2 < device < 1.05 * 4 * 10_000 * 100**2
    monkeypatch.setattr(cdln.config, "_available_memory_bytes", lambda: 2**31)  # 1.6 GiB usable
    config.validate()
    monkeypatch.setattr(cdln.config, "_available_memory_bytes", lambda: 2**30)
    with pytest.raises(ConfigError, match=r"need about 1\.1 GiB of memory but only 1\.0 GiB"):
        config.validate()
    # the authors' float64 storage: the operator twice on the host, once in float64 on the device
    host64, device64 = RunConfig(task="ms", d=100, r=5, m=10_000, operator_dtype="float64").memory_bytes()
    assert host64 > 16 * 10_000 * 100**2 and device64 > 8 * 10_000 * 100**2
    # A wide original DLN is counted too: 3 * 4 layers * 3000^2 * 8 bytes = 0.8 GiB, plus the target.
    big = RunConfig(task="mf", d=3000, r=5, model="original", depth=4, device="cpu")
    assert big.memory_bytes()[0] > 3 * 4 * 3000**2 * 8
    monkeypatch.setattr(cdln.config, "_available_memory_bytes", lambda: 2**30)
    with pytest.raises(ConfigError, match=r"the mf problem and the original network need about"):
        big.validate()


def test_device_memory_is_checked_for_cuda(monkeypatch):
    """Runs without a GPU: pretend the device is CUDA with 1 GiB free."""
    import torch

    monkeypatch.setattr(cdln.config, "resolve_device", lambda spec: torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2**30, 2**34))
    config = RunConfig(task="ms", d=100, r=5, m=40_000, model="cdln", device="cuda")  # 1.5 GiB operator (float32)
    with pytest.raises(ConfigError, match=r"need about 1\.5 GiB on cuda:0 but only 1\.0 GiB is free there"):
        config.check_memory()
    RunConfig(task="ms", d=100, r=5, m=10_000, model="cdln", device="cuda").check_memory()  # 0.37 GiB fits


def test_check_run_options_prefixes_where_and_skips_files_and_devices():
    from cdln.config import check_run_options

    ok = {"task": "mc", "d": 24, "r": 3, "p": 0.4, "model": "cdln", "lr": 10, "device": "cuda",
          "problem": "results/ci/data/not_made_yet.pt"}  # fmt: skip
    assert check_run_options(ok, "experiments.mc.panels.r3").r == 3
    with pytest.raises(ConfigError, match=r"^experiments\.mc\.panels\.r3: --r must be in \[1, min\(d_out, d_in\)\]"):
        check_run_options({**ok, "r": 30}, "experiments.mc.panels.r3")
    with pytest.raises(ConfigError, match=r"^experiments\.mc: unknown key\(s\) \['lrate'\]"):
        check_run_options({**ok, "lrate": 1}, "experiments.mc")


# ================================================================ pipeline config (schema + per-run)

import copy  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import yaml  # noqa: E402
from conftest import REPO  # noqa: E402

from cdln.pipeline.grid import Grid  # noqa: E402
from cdln.pipeline.validate import pipeline_config_errors, validate_pipeline_config  # noqa: E402

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
PAPER = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def _first(mapping: dict) -> str:
    return next(iter(mapping))


def _set(config: dict, path: list, value) -> None:
    for key in path[:-1]:
        config = config[key]
    config[path[-1]] = value


def _panel(name: str) -> list:
    return ["experiments", name, "panels", _first(PAPER["experiments"][name]["panels"])]


# (path in config/config.yaml, bad value, regex the message must match: the dotted key and valid values)
BAD_PIPELINE_CONFIGS = [
    (["threads_per_job"], "two", r"^threads_per_job: 'two' is not of type 'integer'"),
    (["threads_per_job"], 0, r"^threads_per_job: 0 is less than the minimum of 1"),
    (["seeds"], [], r"^seeds: \[\] should be non-empty"),
    (["seeds"], [0, 1, 0], r"^seeds: \[0, 1, 0\] has non-unique elements"),
    (["seeds"], [-1], r"^seeds\.0: -1 is less than the minimum of 0"),
    (["seeds"], "0", r"^seeds: '0' is not of type 'array'"),
    (["dtype"], "float16", r"^dtype: 'float16' is not one of \['float64', 'float32'\]"),
    (["device"], "gpu", r"^device: 'gpu' does not match"),
    (["learning_rate"], 1.0, r"^<top level>: unknown key\(s\) \['learning_rate'\]; valid keys: \[.*'seeds'"),
    (["experiments", "fig_magic"], {}, r"^experiments.fig_magic: not an experiment of the paper's \(mf, mc, .*"
     r"needs task: module:Class and problem: FILE"),
    (["experiments", "Mine"], {"task": "a:B", "problem": "x.pt", "depth": 3, "eps": 0.01, "lr": 1, "n_inner": 1,
                               "max_outer": 1, "tol": 0, "models": ["cdln"]}, r"^experiments: 'Mine' does not match"),
    (["experiments", "mc", "lr"], -1, r"^experiments\.mc\.lr: -1 is less than or equal to the minimum of 0"),
    (["experiments", "mc", "lr"], 0, r"^experiments\.mc\.lr: 0 is less than or equal to the minimum of 0"),
    (["experiments", "mc", "lr"], "fast", r"^experiments\.mc\.lr: 'fast' is not of type 'number'"),
    (["experiments", "mc", "eps"], -0.01, r"^experiments\.mc\.eps: -0\.01 is less than or equal to the minimum of 0"),
    (["experiments", "mc", "p"], 1.5, r"^experiments\.mc\.p: 1\.5 is greater than the maximum of 1"),
    (["experiments", "mc", "p"], 0, r"^experiments\.mc\.p: 0 is less than or equal to the minimum of 0"),
    (["experiments", "mc", "depth"], 1, r"^experiments\.mc\.depth: 1 is less than the minimum of 2"),
    (["experiments", "mc", "n_inner"], 2.5, r"^experiments\.mc\.n_inner: 2\.5 is not of type 'integer'"),
    (["experiments", "mc", "task"], "mx", r"^experiments\.mc\.task: 'mx' is not one of \['mf', 'mc', 'ms'\]"),
    (["experiments", "ms", "m"], 0, r"^experiments\.ms\.m: 0 is less than the minimum of 1"),
    (["experiments", "mc", "models"], ["original", "resnet"], r"^experiments\.mc\.models\.1: 'resnet' is not one of"),
    (["experiments", "mc", "models"], [], r"^experiments\.mc\.models: \[\] should be non-empty"),
    (["experiments", "mc", "lrate"], 1, r"^experiments\.mc: unknown key\(s\) \['lrate'\]; valid keys: \[.*'lr'"),
    ([*_panel("mf"), "r_hat"], 0, r"^experiments\.mf\.panels\.\w+\.r_hat: 0 is less than the minimum of 1"),
    ([*_panel("mc"), "r"], 0, r"^experiments\.mc\.panels\.\w+\.r: 0 is less than the minimum of 1"),
    ([*_panel("mc"), "lr"], -5, r"^experiments\.mc\.panels\.\w+\.lr: -5 is less than or equal to the minimum of 0"),
    (["experiments", "mc", "panels"], {}, r"^experiments\.mc\.panels: \{\} should be non-empty"),
    (["experiments", "ablation_alpha", "alpha_sweep", "step"], 0, r"alpha_sweep\.step: 0 is less than or equal to"),
    (["experiments", "summary", "experiments"], ["nope"], r"^experiments\.summary\.experiments\.0: 'nope' is not"),
    (["experiments", "incremental", "tasks", "mc", "p"], 2, r"^experiments\.incremental\.tasks\.mc\.p: 2 is greater"),
    # Cross-field: valid for the schema, rejected by the per-run checks (the same as `cdln train`'s).
    ([*_panel("mc"), "r"], PAPER["experiments"]["mc"]["d"] + 1,
     r"^experiments\.mc\.panels\.\w+ \(\w+\): --r must be in \[1, min"),
    ([*_panel("mf"), "r_hat"], PAPER["experiments"]["mf"]["d"] + 1,
     r"^experiments\.mf\.panels\.\w+ \(cdln\): --r-hat must be in"),
    (["experiments", "ms", "m"], 10**9,
     r"^experiments\.ms\.panels\.\w+ \(\w+\): the ms problem with m = 1000000000 .* need about"),
    (["experiments", "movielens", "zip_path"], "/nonexistent/ml-100k.zip",
     r"^experiments\.movielens\.zip_path: /nonexistent/ml-100k\.zip does not exist \(give an existing path, or null\)"),
    (["experiments", "nonlinear", "data_dir"], "/nonexistent/fashion",
     r"^experiments\.nonlinear\.data_dir: /nonexistent/fashion does not exist"),
    (["output_root"], "..", r"^output_root: '\.\.' is not valid .*a name .* or an absolute folder"),  # the repo root
    (["output_root"], "a/b", r"^output_root: 'a/b' is not valid"),
]  # fmt: skip


def test_an_absolute_output_root_is_its_own_folder(tmp_path):
    config = yaml.safe_load((REPO / "config" / "ci.yaml").read_text()) | {"output_root": str(tmp_path / "out")}
    validate_pipeline_config(config, SCHEMA)
    assert Grid(config).root == str(tmp_path / "out")


def test_both_shipped_configs_are_valid():
    for name in ("config.yaml", "ci.yaml"):
        validate_pipeline_config(yaml.safe_load((REPO / "config" / name).read_text()), SCHEMA)


@pytest.mark.parametrize(
    "path,value,message",
    BAD_PIPELINE_CONFIGS,
    ids=[".".join(map(str, p)) + f"={v!r}" for p, v, _ in BAD_PIPELINE_CONFIGS],
)
def test_bad_pipeline_config_is_rejected_naming_the_key(path, value, message):
    config = copy.deepcopy(PAPER)
    _set(config, path, value)
    with pytest.raises(ConfigError) as info:
        validate_pipeline_config(config, SCHEMA)
    lines = str(info.value).splitlines()
    assert re.fullmatch(r"invalid config \((\d+) error\(s\)\):", lines[0]), str(info.value)
    assert int(lines[0].split("(")[1].split()[0]) == len(lines) - 1
    for line in lines[1:]:  # one error, or the same error for each run of the experiment
        assert re.search(message, line.strip()), line


def test_all_schema_errors_are_reported_at_once():
    config = copy.deepcopy(PAPER)
    config["experiments"]["mc"]["lr"] = -1
    config["experiments"]["ms"]["depth"] = 1
    config["seeds"] = []
    errors = pipeline_config_errors(config, SCHEMA)
    assert [e.split(":")[0] for e in errors] == ["experiments.mc.lr", "experiments.ms.depth", "seeds"]


def _snakemake_dry_run(tmp_path, config: dict) -> subprocess.CompletedProcess:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", str(path)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize(
    "path,value,key",
    [
        (["experiments", "mc", "lr"], -1, "experiments.mc.lr"),
        ([*_panel("mc"), "r"], PAPER["experiments"]["mc"]["d"] + 1, "experiments.mc.panels."),
    ],
)
def test_snakemake_rejects_a_bad_config_at_parse_time(tmp_path, path, value, key):
    """The Snakefile validates before building the DAG: the message names the key, no job is planned."""
    config = copy.deepcopy(PAPER)
    config["output_root"] = "pytest_bad_config"
    _set(config, path, value)
    result = _snakemake_dry_run(tmp_path, config)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert key in output, output[-2000:]
    assert "Job stats" not in output and not (REPO / "results" / "pytest_bad_config").exists()


def test_memory_check_can_be_left_to_the_jobs():
    config = copy.deepcopy(PAPER)
    config["experiments"]["ms"]["m"] = 10**9
    validate_pipeline_config(config, SCHEMA, check_memory=False)  # e.g. jobs run on bigger nodes
    with pytest.raises(ConfigError, match="need about"):
        validate_pipeline_config(config, SCHEMA)


def test_memory_of_a_saved_problem_is_taken_from_its_file(tmp_path):
    """With --problem the spec's own fields (d, m) may be absent: the file's size stands in for the data."""
    from cdln.data.synthetic import make_problem
    from cdln.io import save_problem
    from cdln.spec import ProblemSpec

    path = tmp_path / "ms.pt"
    save_problem(make_problem(ProblemSpec("ms", 6, 6, 1, m=2000)), path)
    config = RunConfig(task="ms", problem=str(path), model="cdln", r=1, d=6, device="cpu")  # m not given
    host, _ = config.memory_bytes()
    assert host >= path.stat().st_size >= 4 * 2000 * 36  # the float32 operator
    config.validate()


def test_a_misspelt_experiment_is_one_line_beside_other_errors():
    config = copy.deepcopy(PAPER)
    config["experiments"]["mcc"] = {"task": "mc", "d": 10}
    config["experiments"]["mc"]["magic"] = 1
    errors = pipeline_config_errors(config, SCHEMA)
    assert len(errors) == 2, errors
    assert errors[0].startswith("experiments.mc: unknown key(s) ['magic']")
    assert errors[1].startswith("experiments.mcc: not an experiment of the paper's")
