"""pipeline/tfx_imports.py: the run imports no standard TFX component, and nothing breaks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_PROBE = """
import json, sys
from pipeline import tfx_imports
assert tfx_imports.lazy_tfx_components()
with tfx_imports.frozen_imports("beam"):
    from pipeline import local, report
    import components.export_servable.executor, components.servable_evaluator.executor
    import components.versioned_pusher.executor
import gc
assert gc.isenabled() and gc.get_freeze_count() > 100_000
assert "tfx.orchestration.beam.beam_dag_runner" in sys.modules
heavy = sorted(m for m in ("tensorflow_model_analysis", "tensorflow_data_validation",
                           "tensorflow_transform", "kubernetes", "nltk",
                           "tfx.types.standard_component_specs") if m in sys.modules)
from tfx.components import Evaluator  # the real package __init__ runs on first use
from tfx.components.evaluator import constants
print(json.dumps({"heavy": heavy, "evaluator": Evaluator.__name__,
                  "blessed": constants.ARTIFACT_PROPERTY_BLESSED_KEY,
                  "tfma": "tensorflow_model_analysis" in sys.modules}))
"""


@pytest.mark.slow
def test_run_imports_skip_standard_components_until_used():
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO, check=True,
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["heavy"] == [], result  # what the launcher and our executors import
    assert result["evaluator"] == "Evaluator" and result["blessed"] == "blessed"
    assert result["tfma"]  # loaded once something asked for a component


def test_lazy_tfx_components_is_a_no_op_once_imported(monkeypatch):
    from pipeline import tfx_imports

    monkeypatch.setitem(sys.modules, "tfx.components", sys.modules.get("tfx.components")
                        or object())
    assert tfx_imports.lazy_tfx_components() is False


def test_frozen_imports_runs_no_collection_and_restores_the_collector():
    import gc

    from pipeline import tfx_imports

    started: list[int] = []

    def count(phase: str, info: dict) -> None:
        if phase == "start":
            started.append(info["generation"])

    gc.callbacks.append(count)
    try:
        with pytest.raises(RuntimeError, match="inside"), tfx_imports.frozen_imports("beam"):
            for _ in range(50_000):  # cyclic garbage: the collector would run many times
                cycle: list = []
                cycle.append(cycle)
            raise RuntimeError("inside")
        assert started == []
        assert gc.isenabled() and gc.get_freeze_count() > 0
    finally:
        gc.callbacks.remove(count)
        gc.unfreeze()
