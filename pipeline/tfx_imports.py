"""Start-up costs of a pipeline run that the run does not need (measured in BENCHMARKS.md).

For the command-line process only (``runner.py run``): both functions change process-wide
state, which a library caller (tests, notebooks) should not get as a side effect.

- :func:`lazy_tfx_components`: TFX's launcher imports ``tfx.components.evaluator`` (for two
  constants, ``latest_blessed_model_strategy``), and Python runs the package
  ``tfx/components/__init__.py`` first, which imports every standard component: TFMA,
  TFDV, TensorFlow Transform, the BigQuery and Kubernetes clients, nltk. The run uses none
  of them.
- :func:`frozen_imports`: TensorFlow, TFX, Beam and ML Metadata are imported with the
  garbage collector off, then ``gc.freeze()`` moves the imported objects to the permanent
  generation. The imports allocate about 650,000 long-lived objects and almost no cyclic
  garbage (about 6,000 objects, no measurable memory), yet Python's collector, counting
  allocations, ran 8 full collections over the growing heap during them: about 1.1 s of
  a run's start-up. Frozen, the heap is not walked by later full collections either
  (Python's own, and the ``gc.collect()`` in ``keras.backend.clear_session()`` that every
  export runs): they see only what the run itself allocated.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import sys
import types
from collections.abc import Iterator


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


@contextlib.contextmanager
def frozen_imports(orchestrator: str) -> Iterator[None]:
    """No collections while the block (then ``orchestrator``'s TFX runner) imports; then
    the heap is frozen and the collector back on, whatever happened."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        if orchestrator == "local":
            import tfx.orchestration.local.local_dag_runner  # noqa: F401
        else:
            import tfx.orchestration.beam.beam_dag_runner  # noqa: F401
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
