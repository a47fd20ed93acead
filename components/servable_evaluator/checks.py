"""The checks behind ServableEvaluator: load a SavedModel as a server would, call it, judge it.

``evaluate(saved_model_dir, spec)`` takes ``Servable.evaluation_spec()`` and returns a
JSON-able report; ``blessed`` is true iff no check failed. The model is loaded with
``tf.saved_model.load(dir, tags=["serve"])`` and only ``.signatures[key]`` is called, so
nothing from the exporting Python process can leak in. Requests and responses go through
the TF Serving REST JSON shapes (row ``instances``/``predictions``, columnar
``inputs``/``outputs``, ``{"b64": ...}`` for binary strings).

Decisions:

- The latency budget is compared with the **p50**, not the p99. With the default 10 warm
  calls the p99 is the single slowest call, and on a shared 2-core CI machine one
  descheduled call would reject a good model. Both are recorded.
- Latency times the signature call on ready tensors (not JSON parsing/writing), after one
  warm-up call.
- Every signature the model serves is checked (a served signature is reachable whether the
  catalog lists it or not), plus every expected one (missing ones fail).
- Row format works iff 1 and 2 stacked copies of one instance are both answered with that
  many predictions; a model that only takes one instance per request (the seed MobileNet)
  is recorded as not row-capable, with the instance counts that worked.
- Float outputs are written with the shortest decimal that round-trips their own precision
  (float32 ``0.1`` is ``0.1``, not ``0.10000000149011612``), so exact expectations work.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from components.servable_evaluator.report import render_markdown

__all__ = ["evaluate", "render_markdown", "request_to_tensors", "outputs_to_response",
           "compare_bodies", "RequestError", "ResponseError", "ACCEPTED_METHOD_NAMES"]

PREDICT_METHOD = "tensorflow/serving/predict"
ACCEPTED_METHOD_NAMES = (PREDICT_METHOD, "tensorflow/serving/classify",
                         "tensorflow/serving/regress")
DEFAULT_SIGNATURE = "serving_default"
GENERATED = "generated"
ROW_TRIAL_SIZES = (1, 2)
SEED = 20240501
SCALAR_INT_VALUE = 3  # e.g. fun_runif(N): a small positive count
_FREE_DIM_SIZE = 2  # for free dimensions other than the batch dimension
_MAX_VALUE_CHARS = 2000
_MAX_DETAIL_CHARS = 300
_DEFAULT_CHECKS = {"random": False, "formats": [], "latency_budget_ms": None,
                   "warm_calls": 10, "batch_sizes": [1, 3]}


class RequestError(ValueError):
    """A REST request body cannot be turned into the signature's input tensors."""


class ResponseError(ValueError):
    """Signature outputs cannot be written as a REST response in the requested format."""


@dataclasses.dataclass
class _Signature:
    key: str
    fn: Callable[..., Mapping[str, tf.Tensor]]
    inputs: dict[str, tf.TensorSpec]
    outputs: dict[str, tf.TensorSpec]

    def call(self, tensors: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return dict(self.fn(**tensors))


@dataclasses.dataclass
class _Call:
    """A successful call: where its inputs came from, the inputs and the outputs."""

    source: str
    tensors: dict[str, tf.Tensor]
    outputs: dict[str, tf.Tensor]


class _Recorder:
    def __init__(self) -> None:
        self.checks: list[dict[str, Any]] = []

    def add(self, name: str, signature: str | None, example: str | None, passed: bool,
            detail: str, values: Mapping[str, Any] | None = None) -> bool:
        self.checks.append({"name": name, "signature": signature, "example": example,
                            "passed": bool(passed), "detail": detail,
                            "values": _jsonable(dict(values or {}))})
        return passed

    def reasons(self) -> list[str]:
        reasons = []
        for c in self.checks:
            if c["passed"]:
                continue
            where = "/".join(p for p in (c["signature"], c["example"]) if p)
            reasons.append(f"{where + ': ' if where else ''}{c['name']}: "
                           f"{_shorten(c['detail'], _MAX_DETAIL_CHARS)}")
        return reasons


def evaluate(saved_model_dir: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """Runs every check on the SavedModel in ``saved_model_dir``; returns the report."""
    settings = {**_DEFAULT_CHECKS, **{k: v for k, v in (spec.get("checks") or {}).items()
                                      if v is not None or k == "latency_budget_ms"}}
    rec = _Recorder()
    report: dict[str, Any] = {
        "servable": spec.get("name") or os.path.basename(os.path.normpath(saved_model_dir)),
        "blessed": False, "reasons": [], "signatures": {}, "checks": rec.checks,
        "latency_ms": {},
    }
    try:
        signature_defs = _read_signature_defs(saved_model_dir)
        loaded = tf.saved_model.load(saved_model_dir, tags=["serve"])
    except Exception as e:  # any load failure is a verdict, not a crash
        rec.add("load", None, None, False,
                f"cannot load {saved_model_dir} with tags ['serve']: {_error_text(e)}")
        return _finish(report, rec)
    available = list(loaded.signatures.keys())
    rec.add("load", None, None, True,
            f"loaded with tags ['serve']; signatures: {', '.join(available) or 'none'}")

    examples = list(spec.get("examples") or [])
    by_signature: dict[str, list[Mapping[str, Any]]] = {}
    for example in examples:
        key = (example.get("request") or {}).get("signature_name") or DEFAULT_SIGNATURE
        by_signature.setdefault(key, []).append(example)
    expected = list(dict.fromkeys([*(spec.get("signature_keys") or []), DEFAULT_SIGNATURE]))
    keys = list(dict.fromkeys([*expected, *by_signature, *available]))

    for key in keys:
        if key not in available:
            needed_by = [f"example {e.get('path')}" for e in by_signature.get(key, [])]
            if key in expected:
                needed_by.insert(0, "the catalog's signature keys" if key != DEFAULT_SIGNATURE
                                 else "TF Serving's default signature")
            rec.add("signature", key, None, False,
                    f"signature '{key}' is missing (needed by {', '.join(needed_by)}); "
                    f"the model has: {', '.join(available) or 'none'}")
            continue
        fn = loaded.signatures[key]
        sig = _Signature(key=key, fn=fn, inputs=dict(fn.structured_input_signature[1]),
                         outputs=dict(fn.structured_outputs))
        rec.add("signature", key, None, True, f"signature '{key}' exists")
        entry = _check_structure(sig, signature_defs.get(key), rec)
        report["signatures"][key] = entry
        calls: list[_Call] = []
        for example in by_signature.get(key, []):
            call = _run_example(sig, example, settings, rec, report["latency_ms"])
            if call is not None:
                calls.append(call)
        if key not in by_signature:
            calls.extend(_run_generated(sig, settings, rec, report["latency_ms"]))
        entry["formats"] = _check_formats(sig, calls, settings, rec)
    return _finish(report, rec)


# --- loading and structure -------------------------------------------------------------------


def _read_signature_defs(saved_model_dir: str) -> dict[str, Any]:
    """SignatureDefs of the 'serve' MetaGraph, read from saved_model.pb as TF Serving does."""
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    pb = os.path.join(saved_model_dir, "saved_model.pb")
    pbtxt = os.path.join(saved_model_dir, "saved_model.pbtxt")
    if os.path.isfile(pb):
        with open(pb, "rb") as f:
            saved_model.ParseFromString(f.read())
    elif os.path.isfile(pbtxt):
        with open(pbtxt, encoding="utf-8") as f:
            text_format.Parse(f.read(), saved_model)
    else:
        raise FileNotFoundError(f"no saved_model.pb in {saved_model_dir}")
    graphs = [g for g in saved_model.meta_graphs if "serve" in g.meta_info_def.tags]
    if not graphs:
        tags = [list(g.meta_info_def.tags) for g in saved_model.meta_graphs]
        raise ValueError(f"no MetaGraph tagged 'serve' (tags: {tags})")
    return dict(graphs[0].signature_def)


def _check_structure(sig: _Signature, signature_def: Any, rec: _Recorder) -> dict[str, Any]:
    """Method name and named/typed/shaped inputs and outputs; returns the report entry."""
    method = signature_def.method_name if signature_def is not None else ""
    rec.add("method_name", sig.key, None, method in ACCEPTED_METHOD_NAMES,
            f"method_name is '{method}'" + ("" if method in ACCEPTED_METHOD_NAMES else
                                            f"; TF Serving needs one of "
                                            f"{', '.join(ACCEPTED_METHOD_NAMES)}"),
            {"method_name": method})
    entry: dict[str, Any] = {"inputs": {}, "outputs": {}, "method_name": method, "formats": {}}
    problems: list[str] = []
    notes: list[str] = []
    for side, specs in (("inputs", sig.inputs), ("outputs", sig.outputs)):
        infos = getattr(signature_def, side) if signature_def is not None else {}
        if not specs:
            problems.append(f"the signature has no {side}")
        for alias in sorted(set(specs) | set(infos)):
            what = f"{side[:-1]} '{alias}'"
            info = infos.get(alias) if alias in infos else None
            spec = specs.get(alias)
            described: dict[str, Any] = {"dtype": None, "shape": None, "name": None}
            if info is None:
                problems.append(f"{what} is not in the SignatureDef")
            elif info.WhichOneof("encoding") != "name":
                problems.append(f"{what} is a composite ({info.WhichOneof('encoding')}) tensor; "
                                "the REST API feeds and returns dense tensors only")
            else:
                described["name"] = info.name or None
                if not info.name:
                    problems.append(f"{what} has no tensor name")
                if info.dtype == 0:
                    problems.append(f"{what} has no dtype")
                else:
                    described["dtype"] = tf.as_dtype(info.dtype).name
                if not info.HasField("tensor_shape"):
                    problems.append(f"{what} has no shape")
                elif info.tensor_shape.unknown_rank:
                    notes.append(f"{what} has unknown rank")
                else:
                    described["shape"] = [None if d.size < 0 else d.size
                                          for d in info.tensor_shape.dim]
            if spec is None:
                problems.append(f"{what} is missing from the loaded signature")
            entry[side][alias] = described
    detail = "; ".join(problems) if problems else (
        f"inputs {', '.join(entry['inputs'])}; outputs {', '.join(entry['outputs'])}: "
        "all named, typed and shaped")
    if notes:
        detail += " (" + "; ".join(notes) + ")"
    rec.add("structure", sig.key, None, not problems, detail,
            {"unknown_rank": notes} if notes else None)
    return entry


# --- requests and responses ----------------------------------------------------------------


def request_to_tensors(inputs: Mapping[str, tf.TensorSpec],
                       request: Mapping[str, Any]) -> dict[str, tf.Tensor]:
    """Converts a TF Serving REST request body to input tensors (dtypes from ``inputs``)."""
    if not isinstance(request, Mapping) or ("instances" in request) == ("inputs" in request):
        raise RequestError("the body needs exactly one of 'instances' (row) or 'inputs' "
                           "(columnar)")
    aliases = list(inputs)
    if not aliases:
        raise RequestError("the signature has no inputs")
    if "instances" in request:
        instances = request["instances"]
        if not isinstance(instances, list) or not instances:
            raise RequestError("'instances' must be a non-empty list")
        columns: dict[str, list[Any]] = {a: [] for a in aliases}
        for i, instance in enumerate(instances):
            if len(aliases) == 1 and not _is_named(instance, aliases):
                columns[aliases[0]].append(instance)
                continue
            if not isinstance(instance, Mapping) or _is_b64(instance):
                raise RequestError(f"instance {i} must be an object keyed by input name "
                                   f"({', '.join(aliases)}) for a signature with several inputs")
            _check_names(instance, aliases, f"instance {i}")
            for alias in aliases:
                columns[alias].append(instance[alias])
        values: Mapping[str, Any] = columns
    else:
        raw = request["inputs"]
        if len(aliases) == 1 and not _is_named(raw, aliases):
            values = {aliases[0]: raw}
        else:
            if not isinstance(raw, Mapping) or _is_b64(raw):
                raise RequestError("'inputs' must be an object keyed by input name "
                                   f"({', '.join(aliases)}) for a signature with several inputs")
            _check_names(raw, aliases, "'inputs'")
            values = raw
    return {alias: _to_tensor(alias, inputs[alias], values[alias]) for alias in aliases}


def _is_b64(value: Any) -> bool:
    return isinstance(value, Mapping) and list(value) == ["b64"]


def _is_named(value: Any, aliases: Sequence[str]) -> bool:
    """Whether a single-input value is written as an object keyed by the input name."""
    return isinstance(value, Mapping) and not _is_b64(value) and list(value) == list(aliases)


def _check_names(value: Mapping[str, Any], aliases: Sequence[str], where: str) -> None:
    missing = [a for a in aliases if a not in value]
    unknown = [k for k in value if k not in aliases]
    if missing or unknown:
        raise RequestError(f"{where}: " + "; ".join(
            ([f"missing input(s) {', '.join(missing)}"] if missing else [])
            + ([f"unknown input(s) {', '.join(map(str, unknown))}"] if unknown else []))
            + f" (the signature's inputs: {', '.join(aliases)})")


def _to_tensor(alias: str, spec: tf.TensorSpec, value: Any) -> tf.Tensor:
    if spec.dtype == tf.string:
        array = np.array(_to_bytes(alias, value), dtype=object)
        if any(not isinstance(v, bytes) for v in array.flat):
            raise RequestError(f"input '{alias}': values are ragged (lists of unequal length)")
        tensor = tf.constant(array, dtype=tf.string)
    else:
        try:
            array = np.asarray(value)
        except ValueError as e:
            raise RequestError(f"input '{alias}': values are ragged: {e}") from e
        if array.dtype.kind not in "biuf" and array.size:
            raise RequestError(f"input '{alias}' is {spec.dtype.name}; got non-numeric "
                               f"values ({_shorten(json.dumps(_jsonable(value)), 80)})")
        if spec.dtype.is_integer and array.dtype.kind == "f" and np.any(array != np.round(array)):
            raise RequestError(f"input '{alias}' is {spec.dtype.name}; got fractional values")
        if spec.dtype == tf.bool and array.dtype.kind != "b" and array.size:
            raise RequestError(f"input '{alias}' is bool; got {array.dtype} values")
        tensor = tf.cast(tf.constant(array), spec.dtype)
    if not tensor.shape.is_compatible_with(spec.shape):
        raise RequestError(f"input '{alias}' has shape {_shape(tensor.shape)} but the "
                           f"signature accepts {_shape(spec.shape)}")
    return tensor


def _to_bytes(alias: str, value: Any) -> Any:
    if isinstance(value, list):
        return [_to_bytes(alias, v) for v in value]
    if _is_b64(value):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, TypeError) as e:
            raise RequestError(f"input '{alias}': bad base64: {e}") from e
    if isinstance(value, str):
        return value.encode("utf-8")
    raise RequestError(f"input '{alias}' is a string input; got {value!r} (send text or "
                       "{\"b64\": ...})")


def outputs_to_response(outputs: Mapping[str, tf.Tensor], fmt: str) -> dict[str, Any]:
    """Writes output tensors as a TF Serving REST response body in ``fmt`` (row/columnar)."""
    aliases = sorted(outputs)
    if not aliases:
        raise ResponseError("the signature returned no outputs")
    if fmt == "columnar":
        if len(aliases) == 1:
            return {"outputs": _to_json(aliases[0], outputs[aliases[0]])}
        return {"outputs": {a: _to_json(a, outputs[a]) for a in aliases}}
    sizes = {}
    for alias in aliases:
        if outputs[alias].shape.rank in (None, 0):
            raise ResponseError(f"output '{alias}' is a scalar; row format needs a leading "
                                "batch dimension on every output")
        sizes[alias] = int(outputs[alias].shape[0])
    if len(set(sizes.values())) > 1:
        raise ResponseError("outputs have different leading (batch) dimensions: "
                            + ", ".join(f"{a}={n}" for a, n in sizes.items()))
    columns = {a: _to_json(a, outputs[a]) for a in aliases}
    count = sizes[aliases[0]]
    if len(aliases) == 1:
        return {"predictions": columns[aliases[0]]}
    return {"predictions": [{a: columns[a][i] for a in aliases} for i in range(count)]}


def _to_json(alias: str, tensor: tf.Tensor) -> Any:
    dtype = tensor.dtype
    array = tensor.numpy()
    if dtype == tf.string:
        return _bytes_to_json(alias, array.tolist())
    if dtype.is_complex:
        raise ResponseError(f"output '{alias}' is {dtype.name}; the REST API has no JSON form "
                            "for complex numbers")
    if dtype.is_floating and dtype.size < 8:
        # Shortest decimal that round-trips the output's own precision (as TF Serving).
        return array.astype(np.float32).astype(str).astype(np.float64).tolist()
    return array.tolist()


def _bytes_to_json(alias: str, value: Any) -> Any:
    if isinstance(value, list):
        return [_bytes_to_json(alias, v) for v in value]
    if not alias.endswith("_bytes"):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return {"b64": base64.b64encode(value).decode("ascii")}


def compare_bodies(actual: Any, expected: Any, tolerance: float, path: str = "",
                   limit: int = 5) -> list[str]:
    """Differences between two REST bodies: numbers within ``tolerance`` (abs), rest exact."""
    found: list[str] = []
    _compare(actual, expected, tolerance, path or "$", found, limit)
    return found


def _compare(actual: Any, expected: Any, tol: float, path: str, found: list[str],
             limit: int) -> None:
    if len(found) >= limit:
        return
    if _is_b64(expected) or _is_b64(actual):
        a, e = _as_bytes(actual), _as_bytes(expected)
        if a is None or e is None or a != e:
            found.append(f"{path}: got {_brief(actual)}, expected {_brief(expected)}")
    elif isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            found.append(f"{path}: got {_kind(actual)} {_brief(actual)}, expected an object "
                         f"with keys {sorted(expected)}")
            return
        if sorted(actual) != sorted(expected):
            found.append(f"{path}: got keys {sorted(actual)}, expected {sorted(expected)}")
            return
        for key in expected:
            _compare(actual[key], expected[key], tol, f"{path}.{key}", found, limit)
    elif isinstance(expected, list):
        if not isinstance(actual, list):
            found.append(f"{path}: got {_kind(actual)} {_brief(actual)}, expected a list of "
                         f"{len(expected)}")
            return
        if len(actual) != len(expected):
            found.append(f"{path}: got {len(actual)} elements, expected {len(expected)} "
                         f"(shape {_json_shape(actual)} vs {_json_shape(expected)})")
            return
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _compare(a, e, tol, f"{path}[{i}]", found, limit)
    elif _is_number(expected):
        if not _is_number(actual):
            found.append(f"{path}: got {_kind(actual)} {_brief(actual)}, expected number "
                         f"{expected}")
        elif not (actual == expected or abs(actual - expected) <= tol):
            found.append(f"{path}: got {_brief(actual)}, expected {expected} "
                         f"(tolerance {tol:g})")
    elif type(actual) is not type(expected) or actual != expected:
        found.append(f"{path}: got {_kind(actual)} {_brief(actual)}, expected "
                     f"{_kind(expected)} {_brief(expected)}")


def _as_bytes(value: Any) -> bytes | None:
    if _is_b64(value):
        try:
            return base64.b64decode(value["b64"])
        except (binascii.Error, TypeError):
            return None
    return value.encode("utf-8") if isinstance(value, str) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    if _is_number(value):
        return "number"
    return {bool: "bool", str: "string", list: "list", dict: "object",
            type(None): "null"}.get(type(value), type(value).__name__)


def _json_shape(value: Any) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return shape


# --- calls and checks ----------------------------------------------------------------------


def _run_example(sig: _Signature, example: Mapping[str, Any], settings: Mapping[str, Any],
                 rec: _Recorder, latency: dict[str, Any]) -> _Call | None:
    """Calls the signature with one catalog example and checks its expectations."""
    name = str(example.get("path") or "example")
    request = example.get("request") or {}
    expect = example.get("expect") or {}
    fmt = "row" if isinstance(request, Mapping) and "instances" in request else "columnar"
    try:
        tensors = request_to_tensors(sig.inputs, request)
    except RequestError as e:
        rec.add("call", sig.key, name, False, f"request not convertible ({fmt}): {e}")
        return None
    try:
        outputs = sig.call(tensors)
    except Exception as e:  # a model that raises is a verdict
        rec.add("call", sig.key, name, False, f"raised {_error_text(e)}",
                {"error": _shorten(str(e), _MAX_VALUE_CHARS)})
        return None
    try:
        response = outputs_to_response(outputs, fmt)
    except ResponseError as e:
        rec.add("call", sig.key, name, False, f"response not writable in {fmt} format: {e}")
        response = None
    else:
        rec.add("call", sig.key, name, True, f"{fmt} request answered: "
                + ", ".join(f"{a} {o.dtype.name} {_shape(o.shape)}"
                            for a, o in sorted(outputs.items())),
                {"format": fmt, "response": _small(response)})
    _check_expectations(sig, name, outputs, response, expect, rec)
    _check_outputs(sig, name, tensors, outputs, settings, rec)
    _measure_latency(sig, name, name, tensors, settings, rec, latency)
    return _Call(source=f"example {name}", tensors=tensors, outputs=outputs)


def _run_generated(sig: _Signature, settings: Mapping[str, Any], rec: _Recorder,
                   latency: dict[str, Any]) -> list[_Call]:
    """Calls a signature that has no example with inputs generated from its TensorSpecs."""
    strings = [a for a, s in sig.inputs.items() if s.dtype == tf.string]
    if strings:
        rec.add("generated_inputs", sig.key, GENERATED, False,
                f"signature '{sig.key}' has string input(s) {', '.join(strings)} and no "
                "example; string inputs are not guessed: add an `examples:` entry with a "
                "request file to the catalog")
        return []
    batched = bool(sig.inputs) and all(
        s.shape.rank is not None and s.shape.rank >= 1 and s.shape[0] is None
        for s in sig.inputs.values())
    free = any(s.shape.rank and s.shape[0] is None for s in sig.inputs.values())
    sizes: list[int | None] = list(settings["batch_sizes"]) if free else [None]
    rng = np.random.default_rng(SEED)
    calls = []
    for batch in sizes:
        label = f"batch {batch}" if batch is not None else "fixed shapes"
        tensors = {a: _generate(s, batch, rng) for a, s in sig.inputs.items()}
        try:
            outputs = sig.call(tensors)
        except Exception as e:
            rec.add("call", sig.key, GENERATED, False,
                    f"{label}: raised {_error_text(e)} (inputs were generated from the "
                    "TensorSpecs; add a catalog example if the signature needs real values)",
                    {"batch_size": batch, "error": _shorten(str(e), _MAX_VALUE_CHARS)})
            continue
        rec.add("call", sig.key, GENERATED, True, f"{label}: answered "
                + ", ".join(f"{a} {o.dtype.name} {_shape(o.shape)}"
                            for a, o in sorted(outputs.items())),
                {"batch_size": batch,
                 "inputs": {a: _shape(t.shape) for a, t in tensors.items()}})
        _check_outputs(sig, GENERATED, tensors, outputs, settings, rec, label,
                       batched=batched)
        if not calls:
            _measure_latency(sig, GENERATED, f"{GENERATED}:{sig.key}", tensors, settings,
                             rec, latency)
        calls.append(_Call(source=f"generated inputs ({label})", tensors=tensors,
                           outputs=outputs))
    return calls


def _generate(spec: tf.TensorSpec, batch: int | None, rng: np.random.Generator) -> tf.Tensor:
    if spec.shape.rank is None:
        shape: list[int] = []
    else:
        shape = [(batch if i == 0 and batch is not None else _FREE_DIM_SIZE)
                 if d is None else d for i, d in enumerate(spec.shape.as_list())]
    dtype = spec.dtype
    if dtype.is_integer:
        value = (np.full(shape, SCALAR_INT_VALUE) if not shape
                 else rng.integers(0, 5, size=shape))
    elif dtype == tf.bool:
        value = rng.integers(0, 2, size=shape).astype(bool)
    elif dtype.is_complex:
        value = rng.uniform(size=shape) + 1j * rng.uniform(size=shape)
    else:
        value = rng.uniform(size=shape)
    return tf.cast(tf.constant(value), dtype)


def _check_expectations(sig: _Signature, name: str, outputs: Mapping[str, tf.Tensor],
                        response: Any, expect: Mapping[str, Any], rec: _Recorder) -> None:
    aliases = sorted(outputs)
    if expect.get("response") is not None:
        if response is None:
            rec.add("expect.response", sig.key, name, False,
                    "no response to compare (see the call check)")
        else:
            tolerance = float(expect.get("tolerance") or 0.0)
            diffs = compare_bodies(response, expect["response"], tolerance)
            rec.add("expect.response", sig.key, name, not diffs,
                    "; ".join(diffs) if diffs else
                    f"matches the expected response (tolerance {tolerance:g})",
                    {"mismatches": diffs, "expected": _small(expect["response"])}
                    if diffs else None)
    for key in ("shape", "dtype"):
        if expect.get(key) is None:
            continue
        if len(aliases) != 1:
            rec.add(f"expect.{key}", sig.key, name, False,
                    f"expect.{key} needs a single output; the signature has "
                    f"{', '.join(aliases)}")
            continue
        out = outputs[aliases[0]]
        if key == "shape":
            got, want = _shape(out.shape), [int(d) for d in expect["shape"]]
        else:
            got, want = out.dtype.name, tf.as_dtype(str(expect["dtype"]).removeprefix("tf.")).name
        rec.add(f"expect.{key}", sig.key, name, got == want,
                f"output '{aliases[0]}' {key} is {got}" + ("" if got == want else
                                                          f", expected {want}"),
                {"got": got, "expected": want})
    if expect.get("range") is not None:
        lo, hi = (float(v) for v in expect["range"])
        numeric = [a for a in aliases if outputs[a].dtype.is_integer
                   or outputs[a].dtype.is_floating]
        if not numeric:
            rec.add("expect.range", sig.key, name, False,
                    f"no numeric output to check against [{lo:g}, {hi:g})")
        else:
            bad = []
            values: dict[str, Any] = {}
            for a in numeric:
                arr = outputs[a].numpy().astype(np.float64)
                inside = (arr >= lo) & (arr < hi)
                outside = int(arr.size - np.count_nonzero(inside))
                values[a] = {"min": float(np.min(arr)) if arr.size else None,
                             "max": float(np.max(arr)) if arr.size else None,
                             "outside": outside}
                if outside:
                    bad.append(f"{outside} of {arr.size} values of '{a}' outside "
                               f"[{lo:g}, {hi:g}) (min {values[a]['min']:g}, "
                               f"max {values[a]['max']:g})")
            rec.add("expect.range", sig.key, name, not bad, "; ".join(bad) or
                    f"all values of {', '.join(numeric)} in [{lo:g}, {hi:g})", values)
    if expect.get("vocabulary") is not None:
        vocabulary = set(expect["vocabulary"])
        strings = [a for a in aliases if outputs[a].dtype == tf.string]
        if not strings:
            rec.add("expect.vocabulary", sig.key, name, False,
                    "no string output to check against the vocabulary")
        else:
            unknown: list[str] = []
            seen: list[str] = []
            for a in strings:
                for v in outputs[a].numpy().flatten().tolist():
                    text = v.decode("utf-8", errors="replace")
                    seen.append(text)
                    if text not in vocabulary and text not in unknown:
                        unknown.append(text)
            rec.add("expect.vocabulary", sig.key, name, not unknown,
                    (f"{len(unknown)} value(s) not in the vocabulary: "
                     + ", ".join(repr(u) for u in unknown[:5])) if unknown else
                    f"all {len(seen)} value(s) are in the vocabulary ({len(vocabulary)} entries)",
                    {"values": seen[:20], "unknown": unknown[:20]})


def _check_outputs(sig: _Signature, name: str, tensors: Mapping[str, tf.Tensor],
                   outputs: Mapping[str, tf.Tensor], settings: Mapping[str, Any],
                   rec: _Recorder, label: str = "", batched: bool | None = None) -> None:
    """Finite floats, batch dimension, determinism."""
    prefix = f"{label}: " if label else ""
    bad = {}
    for a, out in sorted(outputs.items()):
        if out.dtype.is_floating or out.dtype.is_complex:
            arr = out.numpy()
            arr = arr.astype(np.complex128 if out.dtype.is_complex else np.float64)
            nan, inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
            if nan or inf:
                bad[a] = {"nan": nan, "inf": inf, "size": int(arr.size)}
    rec.add("finite", sig.key, name, not bad, prefix + ("; ".join(
        f"output '{a}' has {v['nan']} NaN and {v['inf']} Inf of {v['size']} values"
        for a, v in bad.items()) if bad else "all floating outputs are finite"), bad)

    if batched is None:
        batched = bool(sig.inputs) and all(
            s.shape.rank is not None and s.shape.rank >= 1 and s.shape[0] is None
            for s in sig.inputs.values())
    if batched:
        sizes = {int(t.shape[0]) for t in tensors.values()}
        if len(sizes) == 1:
            batch = sizes.pop()
            wrong = {a: _shape(o.shape) for a, o in sorted(outputs.items())
                     if o.shape.rank in (None, 0) or int(o.shape[0]) != batch}
            rec.add("batch_dim", sig.key, name, not wrong, prefix + (
                f"input batch is {batch} but output(s) have shape "
                + ", ".join(f"{a} {s}" for a, s in wrong.items()) if wrong else
                f"every output's leading dimension is the batch size {batch}"),
                {"batch_size": batch, "wrong": wrong})

    if settings.get("random"):
        rec.add("deterministic", sig.key, name, True,
                prefix + "skipped: checks.random is true", {"skipped": True})
        return
    try:
        again = sig.call(tensors)
    except Exception as e:
        rec.add("deterministic", sig.key, name, False,
                f"{prefix}the second identical call raised {_error_text(e)}")
        return
    differ = [a for a in sorted(outputs) if a not in again
              or not _same(outputs[a].numpy(), again[a].numpy())]
    rec.add("deterministic", sig.key, name, not differ, prefix + (
        f"two identical calls gave different {', '.join(differ)}; declare "
        "`checks: {random: true}` if the servable is random by design" if differ else
        "two identical calls gave identical outputs"))


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def _measure_latency(sig: _Signature, name: str, key: str, tensors: Mapping[str, tf.Tensor],
                     settings: Mapping[str, Any], rec: _Recorder,
                     latency: dict[str, Any]) -> None:
    """One warm-up, then ``warm_calls`` timed calls; the budget applies to the p50."""
    calls = int(settings.get("warm_calls") or _DEFAULT_CHECKS["warm_calls"])
    try:
        sig.call(tensors)
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            sig.call(tensors)
            times.append((time.perf_counter() - start) * 1000.0)
    except Exception as e:
        rec.add("latency", sig.key, name, False, f"a timed call raised {_error_text(e)}")
        return
    p50, p99 = (float(np.percentile(times, q)) for q in (50, 99))
    latency[key] = {"p50": round(p50, 4), "p99": round(p99, 4), "calls": calls}
    budget = settings.get("latency_budget_ms")
    if budget is None:
        return
    ok = p50 <= float(budget)
    rec.add("latency", sig.key, name, ok,
            f"p50 {p50:.3f} ms {'within' if ok else 'exceeds'} the budget of {budget:g} ms "
            f"(p99 {p99:.3f} ms, {calls} calls)",
            {"p50": p50, "p99": p99, "budget_ms": budget})


def _check_formats(sig: _Signature, calls: Sequence[_Call], settings: Mapping[str, Any],
                   rec: _Recorder) -> dict[str, dict[str, Any]]:
    """Whether the signature can be served in row and in columnar format."""
    if calls:
        columnar = {"ok": True, "detail": f"a call with {calls[0].source} worked"}
    else:
        columnar = {"ok": False, "detail": "no call worked (see the call checks)"}
    formats = {"row": _row_format(sig, calls), "columnar": columnar}
    for fmt in settings.get("formats") or []:
        entry = formats.get(fmt)
        if entry is None:
            rec.add(f"format.{fmt}", sig.key, None, False, f"unknown format '{fmt}'")
            continue
        rec.add(f"format.{fmt}", sig.key, None, entry["ok"],
                ("" if entry["ok"] else "required by checks.formats but not possible: ")
                + entry["detail"])
    return formats


def _row_format(sig: _Signature, calls: Sequence[_Call]) -> dict[str, Any]:
    scalars = [a for a, s in sig.inputs.items() if s.shape.rank == 0]
    if not sig.inputs:
        return {"ok": False, "detail": "the signature has no inputs to put in instances"}
    if scalars:
        return {"ok": False, "detail": f"input(s) {', '.join(scalars)} are scalars (shape []); "
                "row format stacks instances along a new leading dimension"}
    if not calls:
        return {"ok": False, "detail": "no call worked (see the call checks)"}
    base = calls[0]
    leading = {a: (None if t.shape.rank == 0 else int(t.shape[0]))
               for a, t in base.tensors.items()}
    if None in leading.values() or 0 in leading.values() or len(set(leading.values())) > 1:
        return {"ok": False, "detail": f"the inputs of {base.source} share no leading "
                "instance dimension: " + ", ".join(
                    f"{a} {_shape(t.shape)}" for a, t in base.tensors.items())}
    instance = {a: t[0] for a, t in base.tensors.items()}
    worked: list[int] = []
    failures: list[str] = []
    for n in ROW_TRIAL_SIZES:
        tensors = {a: tf.stack([t] * n) for a, t in instance.items()}
        wrong_in = [f"{a} {_shape(t.shape)} vs {_shape(sig.inputs[a].shape)}"
                    for a, t in tensors.items()
                    if not t.shape.is_compatible_with(sig.inputs[a].shape)]
        if wrong_in:
            failures.append(f"{n} instance(s): the signature does not accept "
                            + ", ".join(wrong_in))
            continue
        try:
            outputs = sig.call(tensors)
            response = outputs_to_response(outputs, "row")
        except Exception as e:
            failures.append(f"{n} instance(s): {_error_text(e)}")
            continue
        wrong_out = [f"{a} {_shape(o.shape)}" for a, o in sorted(outputs.items())
                     if int(o.shape[0]) != n]
        if wrong_out or len(response["predictions"]) != n:
            failures.append(f"{n} instance(s) gave output(s) " + ", ".join(wrong_out)
                            + f" instead of {n} predictions")
            continue
        worked.append(n)
    if not failures:
        return {"ok": True, "instances_ok": worked, "detail": "1 and 2 instances (from "
                f"{base.source}) were answered with 1 and 2 predictions"}
    only = (f"only {', '.join(map(str, worked))} instance(s) per request work; "
            if worked else "")
    return {"ok": False, "instances_ok": worked, "detail": only + "; ".join(failures)}


# --- helpers -------------------------------------------------------------------------------


def _finish(report: dict[str, Any], rec: _Recorder) -> dict[str, Any]:
    report["reasons"] = rec.reasons()
    report["blessed"] = bool(rec.checks) and all(c["passed"] for c in rec.checks)
    return _jsonable(report)


def _shape(shape: Any) -> list[int | None] | None:
    shape = tf.TensorShape(shape)
    return None if shape.rank is None else shape.as_list()


def _error_text(error: BaseException) -> str:
    """The informative lines of a (TF) exception, without graph-node noise."""
    kept = []
    for line in str(error).splitlines():
        line = line.strip()
        if (not line or line == "Graph execution error:" or line.startswith("Detected at node")
                or line == "<stack traces unavailable>" or line.startswith("[[")):
            continue
        kept.append(line)
    text = " ".join(kept) or repr(error)
    return _shorten(f"{type(error).__name__}: {text}", _MAX_DETAIL_CHARS)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _brief(value: Any) -> str:
    return _shorten(json.dumps(_jsonable(value)), 60)


def _small(value: Any) -> Any:
    """``value`` if its JSON is short, else a truncated JSON preview string."""
    text = json.dumps(_jsonable(value))
    return value if len(text) <= _MAX_VALUE_CHARS else _shorten(text, _MAX_VALUE_CHARS)


def _jsonable(value: Any) -> Any:
    """Strict-JSON-able copy: numpy scalars unwrapped, NaN/Inf as strings, bytes as b64."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value
