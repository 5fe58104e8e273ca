"""A machine where numba cannot be imported: the compiled kernels cannot run, and every run takes the torch
path, says so in its record (path and plan), and trains as the torch path does where the kernels exist.
Runs everywhere (no skip): numba is hidden from a fresh interpreter. (No C compiler is ever needed:
tests/test_native.py::test_kernels_compiled_and_loaded_from_the_cache_give_the_same_numbers.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, TINY, cli_env

from cdln.config import RunConfig
from cdln.runner import run

SCRIPT = """
import json, sys
sys.modules["numba"] = None  # import numba raises ImportError
from cdln import native
from cdln.config import RunConfig
from cdln.runner import run
settings = json.loads(sys.argv[1])
record = run(RunConfig(model="cdln", depth=3, n_inner=5, max_outer=4, device="cpu", **settings))
print(json.dumps({"why": native.why_unavailable(), "engine_path": record["timing"]["engine_path"],
                  "plan": record["timing"]["engine_plan"],
                  "errors": [m["final_recovery_error"] for m in record["members"]]}))
"""


@pytest.mark.parametrize("task,engine_path", [("mc", "torch"), ("ms", "torch+torch-two-pass")])
def test_without_numba_runs_take_the_torch_path(monkeypatch, task, engine_path):
    env = {key: value for key, value in cli_env().items() if key != "CDLN_ENGINE"}
    command = [sys.executable, "-c", SCRIPT, json.dumps(TINY[task])]
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout.splitlines()[-1])
    assert "numba is not importable" in got["why"]
    assert got["engine_path"] == engine_path
    assert got["plan"]["backend"].startswith("torch") and "numba" not in got["plan"]["backend"]
    monkeypatch.setenv("CDLN_ENGINE", "torch")  # the same torch path here, numba or not
    record = run(RunConfig(model="cdln", depth=3, n_inner=5, max_outer=4, device="cpu", **TINY[task]))
    assert got["errors"] == [m["final_recovery_error"] for m in record["members"]]
    assert record["timing"]["engine_plan"]["override"] == "torch"
