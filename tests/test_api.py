"""The public API: every name in ``cdln.__all__`` resolves, has a docstring, and docs/api.md lists each one with
its docstring's first paragraph (regenerate the page with ``CDLN_WRITE_API=1 pytest tests/test_api.py``)."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

from conftest import REPO, cli_env

import cdln

PAGE = REPO / "docs" / "api.md"
HEADER = """# The public API

Every name `cdln` exports (`cdln.__all__`), where it lives, and its docstring's first paragraph. This page is
generated from the docstrings (`CDLN_WRITE_API=1 pytest tests/test_api.py`); `tests/test_api.py` fails when it
is out of date. Read the engine in the order `cdln.engine.loop`, `plan`, `torch_step`, `kernels`; a problem of
your own: [own-problem.md](own-problem.md).
"""


def summary(obj) -> str:
    doc = inspect.getdoc(obj) or ""
    return " ".join(doc.split("\n\n")[0].split()).replace("|", "\\|")


def page() -> str:
    lines = [HEADER, "| name | module | what |", "|---|---|---|"]
    for name in cdln.__all__:
        obj = getattr(cdln, name)
        kind = "class" if inspect.isclass(obj) else "function"
        lines.append(f"| `{name}` ({kind}) | `{obj.__module__}` | {summary(obj)} |")
    return "\n".join(lines) + "\n"


def test_every_public_name_resolves_and_has_a_docstring():
    assert len(cdln.__all__) == len(set(cdln.__all__)) > 20
    for name in cdln.__all__:
        assert summary(getattr(cdln, name)), f"{name} has no docstring"


def test_the_api_page_is_up_to_date():
    if os.environ.get("CDLN_WRITE_API"):
        PAGE.write_text(page())
    assert PAGE.read_text() == page(), "docs/api.md is out of date: CDLN_WRITE_API=1 pytest tests/test_api.py"


def test_importing_cdln_imports_no_torch():
    code = "import sys, cdln; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
