"""Start-up costs of a pipeline run that the run does not need (measured in BENCHMARKS.md).

For the command-line process only (``runner.py run``): both functions change process-wide
state, which a library caller (tests, notebooks) should not get as a side effect.

- :func:`lazy_tfx_components`: TFX's launcher imports ``tfx.components.evaluator`` (for two
  constants, ``latest_blessed_model_strategy``), and Python runs the package
  ``tfx/components/__init__.py`` first, which imports every standard component: TFMA,
  TFDV, TensorFlow Transform, the BigQuery and Kubernetes clients, nltk. The run uses none
  of them.
- :func:`settle_heap`: once TensorFlow, TFX, Beam and ML Metadata are imported, one full
  collection, then ``gc.freeze()``: the imported objects move to the permanent generation,
  so later full collections (Python's own, and the ``gc.collect()`` in
  ``keras.backend.clear_session()`` that every export runs) walk only what the run itself
  allocated instead of the whole import heap.
"""

from __future__ import annotations

import gc
import importlib.util
import sys
import types


def lazy_tfx_components() -> bool:
    """Registers ``tfx.components`` as a package whose ``__init__`` runs on first use.

    Its submodules import as usual (``tfx.components.evaluator.constants`` does not need
    the package's ``__init__``); any attribute of the package itself (``from
    tfx.components import Evaluator``) runs the real ``__init__`` first, so nothing that
    uses it breaks. Returns False (and changes nothing) if ``tfx.components`` is already
    imported or cannot be found.
    """
    if "tfx.components" in sys.modules:
        return False
    spec = importlib.util.find_spec("tfx.components")
    if spec is None or spec.origin is None or not spec.submodule_search_locations:
        return False

    class _LazyPackage(types.ModuleType):
        def __getattr__(self, name: str) -> object:
            if name.startswith("__"):
                raise AttributeError(name)
            del type(self).__getattr__  # from now on an ordinary module
            with open(spec.origin, encoding="utf-8") as f:
                code = compile(f.read(), spec.origin, "exec")
            exec(code, self.__dict__)  # noqa: S102 - the package's own __init__
            return getattr(self, name)

    module = _LazyPackage("tfx.components")
    module.__file__ = spec.origin
    module.__spec__ = spec
    module.__path__ = list(spec.submodule_search_locations)
    module.__package__ = "tfx.components"
    sys.modules["tfx.components"] = module
    return True


def settle_heap(orchestrator: str) -> None:
    """Imports ``orchestrator``'s TFX runner, collects once, and freezes the heap."""
    if orchestrator == "local":
        import tfx.orchestration.local.local_dag_runner  # noqa: F401
    else:
        import tfx.orchestration.beam.beam_dag_runner  # noqa: F401
    gc.collect()
    gc.freeze()
