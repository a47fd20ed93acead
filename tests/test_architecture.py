"""The dependency direction: runner -> pipeline -> components -> tfserving; runner -> serving.

``tfserving/`` (TF Serving's contract) imports nothing else of the project;
``components/`` and ``pipeline/`` never import the server. Checked twice: on
the source (every import statement, lazy ones included) and in a real process
(importing the pipeline loads no server or HTTP library).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("tfserving", "components", "pipeline", "serving")
# package -> project packages it may import (itself included)
ALLOWED = {
    "tfserving": {"tfserving"},
    "components": {"components", "tfserving"},
    "pipeline": {"pipeline", "components", "tfserving"},
    "serving": {"serving", "tfserving"},
}


def _project_imports(path: str) -> set[str]:
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update(n.split(".")[0] for n in names if n.split(".")[0] in
                     (*PACKAGES, "runner", "servables", "bench", "tests"))
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_downstream(package):
    wrong = []
    for dirpath, _, files in os.walk(os.path.join(REPO, package)):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                for imported in sorted(_project_imports(path) - ALLOWED[package]):
                    wrong.append(f"{os.path.relpath(path, REPO)} imports {imported}")
    assert not wrong, "\n".join(wrong)


def test_importing_the_pipeline_loads_no_server_code():
    code = ("import sys\n"
            "import pipeline.pipeline, pipeline.local, pipeline.kubeflow, pipeline.report\n"
            "import components.export_servable.executor, components.servable_evaluator.executor\n"
            "import components.versioned_pusher.executor\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('serving', 'httpx', 'starlette', 'uvicorn'))\n"
            "print(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"the pipeline imported: {out.stdout.strip()}"
