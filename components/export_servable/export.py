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
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import tensorflow as tf

from components.specs import ExportSpec, SignatureDecl, TensorDecl
from tfserving import filesystems, warmup
from tfserving.filesystems import ensure_filesystem
from tfserving.fingerprint import servable_fingerprint
from tfserving.saved_model import read_meta_graph, signature_specs
from tfserving.status import ServingError

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
    ensure_filesystem(export_dir)
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
    args = resolve_args(spec.args, base_dir, spec.assets)
    obj = _call_user_code(name, "constructing the object", lambda: factory(**args))
    for attr, path in spec.assets.items():
        setattr(obj, attr, tf.saved_model.Asset(os.path.join(base_dir, path)))
    signatures = {
        s.key: _call_user_code(name, f"tracing signature '{s.key}'",
                               lambda s=s: _concrete_function(name, obj, s))
        for s in spec.signatures
    }
    root = save_root(obj, list(signatures.values()))
    _call_user_code(name, "saving the SavedModel",
                    lambda: tf.saved_model.save(root, export_dir, signatures=signatures))
    write_warmup_requests(spec, export_dir)
    return describe_saved_model(export_dir)


def write_warmup_requests(spec: ExportSpec, export_dir: str) -> None:
    """The catalog's example requests as TF Serving's warmup file, so the first real request
    to a freshly loaded version (here or in TF Serving) is not the slow one."""
    if not spec.warmup_requests:
        return
    try:
        logs = warmup.logs_from_rest(
            spec.name, signature_specs(read_meta_graph(export_dir)), spec.warmup_requests)
        warmup.write(export_dir, logs)
    except (ServingError, ValueError) as err:
        raise ServableExportError(spec.name, "field 'examples': an example request cannot be "
                                  f"a warmup request: {getattr(err, 'message', err)}") from None


def save_root(obj: Any, functions: Sequence[Any]) -> Any:
    """What to save: ``obj``, or a wrapper that also tracks the variables its signatures read.

    Keras 3 tracks its own ``Variable`` wrappers, not the ``tf.Variable`` inside
    them that a traced function captures. ``tf.saved_model.load`` copes, but TF
    Serving's loader (a Session restoring variables by name, as ``tfserving.bundle``
    does) then fails every call with "Could not find variable ..."
    (keras-team/keras#19274, tensorflow/tensorflow#72963). Keras's own
    ``ExportArchive`` tracks the captured variables beside the model; so does
    this. Objects whose variables are already tracked (a ``tf.Module`` with
    ``tf.Variable`` attributes, the seeds) are saved unchanged.
    """
    try:
        tracked = {id(t) for t in tf.train.TrackableView(obj).descendants()}
    except (TypeError, AttributeError, ValueError):
        return obj  # not trackable: tf.saved_model.save reports it
    missing: list[Any] = []
    for function in functions:
        for variable in getattr(function, "variables", ()):
            if id(variable) not in tracked and all(variable is not m for m in missing):
                missing.append(variable)
    if not missing:
        return obj
    root = tf.__internal__.tracking.AutoTrackable()
    root.servable = obj
    root.variables = missing
    return root


def resolve_args(args: Any, base_dir: str, assets: Mapping[str, str]) -> Any:
    """Constructor arguments with the catalog's path markers made absolute.

    ``{path: FILE}`` becomes ``base_dir/FILE`` and ``{asset: NAME}`` the path of
    the asset NAME, so that user code never resolves a catalog path against the
    current directory (see pipeline/catalog.py).
    """
    if isinstance(args, Mapping):
        if len(args) == 1 and isinstance(args.get("path"), str):
            return os.path.join(base_dir, args["path"])
        if len(args) == 1 and isinstance(args.get("asset"), str):
            return os.path.join(base_dir, assets[args["asset"]])
        return {k: resolve_args(v, base_dir, assets) for k, v in args.items()}
    if isinstance(args, (list, tuple)):
        return [resolve_args(v, base_dir, assets) for v in args]
    return args


def describe_saved_model(export_dir: str) -> dict[str, Any]:
    """Signatures (inputs/outputs with dtype and shape), fingerprints and size."""
    fingerprint = servable_fingerprint(export_dir)
    tf_fingerprint = tf.saved_model.experimental.read_fingerprint(export_dir).singleprint()
    # Through tf.io.gfile: the export dir may be a bucket (os.walk would find nothing there).
    size = sum(tf.io.gfile.stat(filesystems.join(root, f)).length
               for root, _, files in filesystems.walk(export_dir) for f in files)
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
    own_signature = getattr(method, "input_signature", None)
    # A Keras model's `call` is run through the model (`model(inputs)`), as Keras
    # means it to be: calling `call` directly skips the input structure and, for
    # a functional model with declared inputs, fails inside Keras (KeyError).
    whole_model = (_is_keras_model(obj) and method_name in ("call", "__call__")
                   and own_signature is None)
    declared = signature.inputs
    if declared is None and own_signature is not None:
        return method.get_concrete_function()
    if declared is None and whole_model:
        declared = _keras_declared_inputs(obj)
    if declared is None:
        params = _parameters(method)
        example = ", ".join(f"{p}: {{dtype: float32, shape: [null]}}" for p in params) or "..."
        raise ServableExportError(
            name, f"field '{field}.inputs' is needed: method {method_name!r} has no "
            "input_signature, so the SavedModel would have no serving signature and TF Serving "
            f"could not serve it. Add to the catalog entry: `signatures: {{{key}: {{method: "
            f"{method_name}, inputs: {{{example}}}}}}}` (or give the tf.function an "
            "input_signature).")
    specs = [tf.TensorSpec(a.shape, tf.as_dtype(a.dtype), name=a.name) for a in declared]
    if whole_model:
        call, takes = _keras_call(name, field, obj, declared)
        function = tf.function(call, input_signature=specs)
        return _trace(name, field, method_name, declared, takes,
                      function.get_concrete_function)
    if own_signature is not None:
        takes = _describe_specs(own_signature, _parameters(method))
        function = method
    else:
        params = _parameters(method)
        takes = f"it takes ({', '.join(params)})"
        # Declared by name: bind by name when the names are the parameters.
        order = [a.name for a in declared]
        if sorted(order) == sorted(params) and order != params:
            specs = sorted(specs, key=lambda s: params.index(s.name))
        function = method if hasattr(method, "get_concrete_function") else tf.function(method)
    return _trace(name, field, method_name, declared, takes,
                  lambda: function.get_concrete_function(*specs))


def _trace(name: str, field: str, method_name: str, declared: Sequence[TensorDecl], takes: str,
           trace: Callable[[], Any]) -> Any:
    """Traces with the declared inputs; a failure names the field and both specs."""
    try:
        return trace()
    except ServableExportError:
        raise
    except Exception as e:  # noqa: BLE001 - any tracing error is the catalog's or user's
        frames = user_traceback(e)
        raise ServableExportError(
            name, f"field '{field}.inputs': cannot trace {method_name!r} with the declared "
            f"inputs {_describe_decls(declared)}; {takes}. Change the catalog's "
            f"'{field}.inputs' to match (or the function). {type(e).__name__}: "
            f"{_first_lines(str(e))}" + (f"\n{frames}" if frames else "")) from e


def _is_keras_model(obj: Any) -> bool:
    return isinstance(obj, tf.keras.Model)


def _keras_inputs(model: Any) -> tuple[Any, list[Any]]:
    """(input structure, flat input tensors) of a functional/Sequential model; (None, [])
    for a subclassed model, which has no Input layers."""
    try:
        flat = list(model.inputs or [])
    except (AttributeError, ValueError):
        return None, []
    try:
        structure = model.input  # a dict for inputs={"a": ..., "b": ...}
    except (AttributeError, ValueError):
        structure = None
    return structure, flat


def _keras_name(tensor: Any) -> str:
    return str(tensor.name).split(":")[0]


def _keras_declared_inputs(model: Any) -> tuple[TensorDecl, ...] | None:
    """A functional/Sequential model's own inputs, as if declared in the catalog."""
    structure, flat = _keras_inputs(model)
    if not flat:
        return None
    names = list(structure) if isinstance(structure, dict) else [_keras_name(t) for t in flat]
    tensors = [structure[n] for n in names] if isinstance(structure, dict) else flat
    return tuple(TensorDecl(n, tf.as_dtype(t.dtype).name, tuple(t.shape))
                 for n, t in zip(names, tensors, strict=True))


def _keras_call(name: str, field: str, model: Any,
                declared: Sequence[TensorDecl]) -> tuple[Callable[..., Any], str]:
    """A function of the declared tensors (in order) that calls the model with them.

    Functional models get their own input structure (a dict by input name, a
    list in input order, or one tensor); subclassed models get one tensor, the
    ``call`` parameters by name, or a dict by declared name. Returns the
    function and a description of what the model takes, for errors.
    """
    names = [a.name for a in declared]
    structure, flat = _keras_inputs(model)
    if not flat:  # subclassed
        params = [p for p in _parameters(model.call)
                  if p not in ("training", "mask", "args", "kwargs")]
        takes = f"it takes call({', '.join(params)})"
        if len(names) == 1:
            return (lambda x: model(x)), takes
        if params[:len(names)] == names:
            return (lambda *xs: model(*xs)), takes
        return (lambda *xs: model(dict(zip(names, xs, strict=True)))), takes
    own = _keras_declared_inputs(model) or ()
    takes = f"the model's inputs are {_describe_decls(own)}"
    by_name = isinstance(structure, dict) or (
        len(own) > 1 and sorted(names) == sorted(a.name for a in own))
    problem = _mismatch(declared, own, by_name=by_name)
    if problem:
        raise ServableExportError(
            name, f"field '{field}.inputs': the declared inputs {_describe_decls(declared)} do "
            f"not fit the Keras model's inputs {_describe_decls(own)}: {problem}. Change the "
            f"catalog's '{field}.inputs' to match, or remove them to use the model's own.")
    if isinstance(structure, dict):
        return (lambda *xs: model(dict(zip(names, xs, strict=True)))), takes
    if len(own) == 1:
        return (lambda x: model(x)), takes
    order = [a.name for a in own]
    if sorted(names) == sorted(order):  # by name, in the model's order
        return (lambda *xs: model([dict(zip(names, xs, strict=True))[n] for n in order])), takes
    return (lambda *xs: model(list(xs))), takes


def _mismatch(declared: Sequence[TensorDecl], own: Sequence[TensorDecl], by_name: bool) -> str:
    """Why ``declared`` cannot feed inputs ``own`` ('' when it can)."""
    if by_name:
        missing = [a.name for a in own if a.name not in {d.name for d in declared}]
        extra = [d.name for d in declared if d.name not in {a.name for a in own}]
        if missing or extra:
            return ", ".join(filter(None, [
                missing and f"missing {', '.join(missing)}",
                extra and f"unknown {', '.join(extra)}"]))
        pairs = [(d, next(a for a in own if a.name == d.name)) for d in declared]
    else:
        if len(declared) != len(own):
            return f"{len(declared)} declared, the model has {len(own)}"
        pairs = list(zip(declared, own, strict=True))
    for d, a in pairs:
        if d.dtype != a.dtype:
            return f"{d.name} is {d.dtype}, the model's {a.name} is {a.dtype}"
        if not tf.TensorShape(d.shape).is_compatible_with(tf.TensorShape(a.shape)):
            return (f"{d.name} has shape {_shape_text(d.shape)}, the model's {a.name} "
                    f"{_shape_text(a.shape)}")
    return ""


def _shape_text(shape: Sequence[int | None] | None) -> str:
    if shape is None:
        return "[...]"
    return "[" + ", ".join("None" if d is None else str(d) for d in shape) + "]"


def _describe_decls(decls: Sequence[TensorDecl]) -> str:
    return "(" + ", ".join(f"{a.name}: {a.dtype} {_shape_text(a.shape)}" for a in decls) + ")"


def _describe_specs(specs: Sequence[Any], params: Sequence[str]) -> str:
    """A tf.function's input_signature, as the catalog would write it."""
    parts = []
    for i, spec in enumerate(tf.nest.flatten(specs)):
        shape = None if spec.shape.rank is None else spec.shape.as_list()
        label = spec.name or (params[i] if i < len(params) else f"arg{i}")
        parts.append(f"{label}: {spec.dtype.name} {_shape_text(shape)}")
    return "its input_signature is (" + ", ".join(parts) + ")"


def _first_lines(text: str, limit: int = 6) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[:limit]) + ("\n..." if len(lines) > limit else "")


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
        frames = user_traceback(e)
        raise ServableExportError(name, f"failed while {stage}: {type(e).__name__}: {e}"
                                  + (f"\n{frames}" if frames else "")) from e


def user_traceback(error: BaseException) -> str:
    """The traceback of ``error`` without this project's and the libraries' frames.

    '' when no frame is the user's (the error is in the catalog or a library):
    an empty "User traceback" section would only say nothing.
    """
    ours = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if not f.filename.startswith(ours) and "site-packages" not in f.filename
              and not f.filename.startswith("<")
              and "__autograph_generated_file" not in f.filename]
    if not frames:
        return ""
    lines = traceback.format_list(frames)
    lines += traceback.format_exception_only(type(error), error)
    return "User traceback (most recent call last):\n" + "".join(lines).rstrip()


def signatures_json(description: Mapping[str, Any]) -> str:
    """Compact JSON of the signatures, as stored on the Model artifact."""
    return json.dumps(description["signatures"], sort_keys=True, separators=(",", ":"))
