"""Builds a servable from its catalog entry and writes it as a SavedModel.

Kept apart from the TFX executor so that the same code runs in the component,
in the plain-script benchmark baseline, and in tests.
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import json
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import tensorflow as tf

from components.specs import ExportSpec, SignatureDecl
from tfserving.fingerprint import servable_fingerprint
from tfserving.saved_model import read_meta_graph

_module_counter = itertools.count()


class ServableExportError(RuntimeError):
    """User code or the catalog entry of one servable cannot be exported."""

    def __init__(self, servable: str, message: str):
        self.servable = servable
        super().__init__(f"servable '{servable}': {message}")


def export_servable(spec: ExportSpec, base_dir: str, export_dir: str) -> dict[str, Any]:
    """Exports the servable described by ``spec``.

    Returns the description of the written SavedModel: its signatures,
    fingerprint and size. Raises ServableExportError naming the servable,
    with the user's traceback when user code fails.
    """
    name = spec.name
    module = _import_user_module(name, os.path.join(base_dir, spec.module), base_dir)
    factory = getattr(module, spec.object, None)
    if not callable(factory):
        public = sorted(k for k, v in vars(module).items()
                        if callable(v) and not k.startswith("_")
                        and getattr(v, "__module__", None) == module.__name__)
        raise ServableExportError(name, f"field 'object': {spec.object!r} is not a class or "
                                  f"function in {spec.module} (found: {', '.join(public)})")
    # Keras numbers layer and model names per process; a fresh session keeps
    # the exported graph, and so its fingerprint, the same run after run.
    tf.keras.backend.clear_session()
    obj = _call_user_code(name, "constructing the object", lambda: factory(**spec.args))
    for attr, path in spec.assets.items():
        setattr(obj, attr, tf.saved_model.Asset(os.path.join(base_dir, path)))
    signatures = {
        s.key: _call_user_code(name, f"tracing signature '{s.key}'",
                               lambda s=s: _concrete_function(name, obj, s))
        for s in spec.signatures
    }
    _call_user_code(name, "saving the SavedModel",
                    lambda: tf.saved_model.save(obj, export_dir, signatures=signatures))
    return describe_saved_model(export_dir)


def describe_saved_model(export_dir: str) -> dict[str, Any]:
    """Signatures (inputs/outputs with dtype and shape), fingerprints and size."""
    fingerprint = servable_fingerprint(export_dir)
    tf_fingerprint = tf.saved_model.experimental.read_fingerprint(export_dir).singleprint()
    size = sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(export_dir) for f in files)
    return {"signatures": saved_model_signatures(export_dir), "fingerprint": fingerprint,
            "tf_fingerprint": tf_fingerprint, "size_bytes": size}


def saved_model_signatures(export_dir: str) -> dict[str, Any]:
    """The serving signatures of a SavedModel, read from its proto (no loading)."""
    graph = read_meta_graph(export_dir)

    def tensors(infos):
        return {alias: {"dtype": tf.dtypes.as_dtype(info.dtype).name,
                        "shape": None if info.tensor_shape.unknown_rank
                        else [d.size if d.size >= 0 else None for d in info.tensor_shape.dim]}
                for alias, info in sorted(infos.items())}

    return {key: {"method_name": sig.method_name, "inputs": tensors(sig.inputs),
                  "outputs": tensors(sig.outputs)}
            for key, sig in sorted(graph.signature_def.items())
            if not key.startswith("__")}


def _concrete_function(name: str, obj: Any, signature: SignatureDecl):
    key, method_name = signature.key, signature.method
    field = f"signatures.{key}"
    method = getattr(obj, method_name, None)
    if method is None:
        methods = sorted(m for m in dir(type(obj)) if not m.startswith("_")
                         and callable(getattr(type(obj), m, None)))[:20]
        raise ServableExportError(name, f"field '{field}.method': {type(obj).__name__} has no "
                                  f"method {method_name!r} (some methods: {', '.join(methods)})")
    declared = signature.inputs
    if declared is not None:
        specs = [tf.TensorSpec(a.shape, tf.as_dtype(a.dtype), name=a.name) for a in declared]
        function = method if hasattr(method, "get_concrete_function") else tf.function(method)
        return function.get_concrete_function(*specs)
    if getattr(method, "input_signature", None) is not None:
        return method.get_concrete_function()
    keras_inputs = _keras_input_specs(obj, method_name)
    if keras_inputs is not None:
        return tf.function(lambda *xs: obj(xs[0] if len(xs) == 1 else list(xs)),
                           input_signature=keras_inputs).get_concrete_function()
    params = _parameters(method)
    example = ", ".join(f"{p}: {{dtype: float32, shape: [null]}}" for p in params) or "..."
    raise ServableExportError(
        name, f"field '{field}.inputs' is needed: method {method_name!r} has no "
        "input_signature, so the SavedModel would have no serving signature and TF Serving "
        f"could not serve it. Add to the catalog entry: `signatures: {{{key}: {{method: "
        f"{method_name}, inputs: {{{example}}}}}}}` (or give the tf.function an "
        "input_signature).")


def _keras_input_specs(obj: Any, method_name: str) -> list[tf.TensorSpec] | None:
    """Input specs of a functional/Sequential Keras model called as a whole."""
    if method_name not in ("__call__", "call") or not isinstance(obj, tf.keras.Model):
        return None
    try:
        inputs = obj.inputs
    except (AttributeError, ValueError):
        return None
    if not inputs:
        return None
    return [tf.TensorSpec(t.shape, tf.as_dtype(t.dtype), name=t.name.split(":")[0])
            for t in inputs]


def _parameters(method: Any) -> list[str]:
    function = getattr(method, "python_function", method)
    try:
        return [p for p in inspect.signature(function).parameters if p != "self"]
    except (TypeError, ValueError):
        return []


def _import_user_module(name: str, path: str, base_dir: str):
    # A fresh module object per export: a re-run in the same process (tests,
    # notebooks) must see edited code, never a stale sys.modules entry.
    module_name = f"_servable_{name.replace('-', '_').replace('.', '_')}_{next(_module_counter)}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ServableExportError(name, f"field 'module': cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    added = [p for p in (os.path.dirname(path), base_dir) if p not in sys.path]
    sys.path[:0] = added
    try:
        _call_user_code(name, f"importing {os.path.relpath(path, base_dir)}",
                        lambda: spec.loader.exec_module(module))
    finally:
        for p in added:
            sys.path.remove(p)
    return module


def _call_user_code(name: str, stage: str, action: Callable[[], Any]) -> Any:
    try:
        return action()
    except ServableExportError:
        raise
    except Exception as e:  # noqa: BLE001 - any user error is reported, with its traceback
        raise ServableExportError(name, f"failed while {stage}: {type(e).__name__}: {e}\n"
                                  f"{user_traceback(e)}") from e


def user_traceback(error: BaseException) -> str:
    """The traceback of ``error`` without this project's and the libraries' frames."""
    ours = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if not f.filename.startswith(ours) and "site-packages" not in f.filename
              and not f.filename.startswith("<")]
    lines = traceback.format_list(frames)
    lines += traceback.format_exception_only(type(error), error)
    return "User traceback (most recent call last):\n" + "".join(lines).rstrip()


def signatures_json(description: Mapping[str, Any]) -> str:
    """Compact JSON of the signatures, as stored on the Model artifact."""
    return json.dumps(description["signatures"], sort_keys=True, separators=(",", ":"))
