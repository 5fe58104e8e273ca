"""A machine without a C compiler: the native kernels cannot be built, and every run takes the torch path,
says so in its record, and trains as the torch path does where the kernels exist. Runs everywhere (no
skip): the compiler is hidden from a fresh interpreter by an empty ``PATH`` and an empty build cache."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, TINY, cli_env

from cdln import native
from cdln.config import RunConfig
from cdln.runner import run

SCRIPT = """
import json, sys
from cdln import native
from cdln.config import RunConfig
from cdln.runner import run
settings = json.loads(sys.argv[1])
record = run(RunConfig(model="cdln", depth=3, n_inner=5, max_outer=4, device="cpu", **settings))
print(json.dumps({"why": native.why_unavailable(), "engine_path": record["timing"]["engine_path"],
                  "errors": [m["final_recovery_error"] for m in record["members"]]}))
"""


@pytest.mark.parametrize("task,engine_path", [("mc", "torch"), ("ms", "torch+torch-two-pass")])
def test_without_a_compiler_runs_take_the_torch_path(tmp_path, monkeypatch, task, engine_path):
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    env = {key: value for key, value in cli_env().items() if key not in ("CC", "CDLN_NATIVE", "CDLN_ENGINE_PATH")}
    env.update(PATH=str(empty_bin), CDLN_CACHE_DIR=str(tmp_path / "cache"))
    command = [sys.executable, "-c", SCRIPT, json.dumps(TINY[task])]
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout.splitlines()[-1])
    no_compiler = "no C compiler found (set $CC, or install gcc or clang)"
    assert got["why"] == (native.why_unavailable() or no_compiler)  # this machine's own reason comes first
    assert got["engine_path"] == engine_path
    monkeypatch.setenv("CDLN_NATIVE", "0")  # the same torch path here, compiler or not
    record = run(RunConfig(model="cdln", depth=3, n_inner=5, max_outer=4, device="cpu", **TINY[task]))
    assert got["errors"] == [m["final_recovery_error"] for m in record["members"]]
