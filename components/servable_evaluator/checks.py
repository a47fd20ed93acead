"""The checks behind ServableEvaluator: load a SavedModel as a server would, call it, judge it.

``evaluate(saved_model_dir, spec)`` takes ``CatalogEntry.evaluation_spec()`` and returns a
JSON-able report; ``blessed`` is true iff no check failed. The model is loaded and called
exactly as the server (and TF Serving) runs it: ``tfserving.bundle.load_bundle`` (a Session
over the ``serve`` MetaGraph, with its init op and assets) and ``SavedModelBundle.run`` with
the SignatureDef's tensor names, so nothing from the exporting Python process can leak in,
and a model is blessed only if it answers as it will be served. Example requests and responses are
converted by the REST codec the server uses, so an example that passes here is answered
the same way by the server (and by TF Serving, whose JSON rules it follows):
``serving.saved_model.read_meta_graph``/``signature_specs`` read the signature defs,
``serving.json_tensor.parse_json``/``decode_predict`` turn a request into input arrays (row
``instances`` or columnar ``inputs``, ``{"b64": ...}``, dtype rules; shapes are the graph's
to judge, as in TF Serving) and
``serving.json_tensor.predict_response`` gives the response body expectations are compared with.

Decisions:

- The latency budget is compared with the **p50**, not the p99. With the default 10 warm
  calls the p99 is the single slowest call, and on a shared 2-core CI machine one
  descheduled call would reject a good model. Both are recorded.
- Latency times the signature call on ready tensors (not JSON parsing/writing), after one
  warm-up call.
- Every signature the model serves is checked (a served signature is reachable whether the
  catalog lists it or not), plus every expected one (missing ones fail).
- Row format works iff row requests with 1 and 2 copies of one instance are both answered
  with that many predictions; a model that only takes one instance per request (the seed
  MobileNet) is recorded as not row-capable, with the instance counts that worked.
- Float outputs are written as the server (and TF Serving's WriteDecimal) writes them:
  six significant digits when they read back to the same value (float32 ``0.1`` is
  ``0.1``), else nine (float32) or seventeen (double).
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from components.specs import Checks, EvaluationSpec, Example, Expectation
from tfserving import classification, json_tensor, saved_model, warmup
from tfserving.bundle import INIT_OP_SIGNATURE_KEY, SavedModelBundle, load_bundle
from tfserving.json_tensor import encode_b64
from tfserving.status import ServingError, invalid_argument, tf_error_message

__all__ = ["evaluate", "compare_bodies", "ACCEPTED_METHOD_NAMES"]

ACCEPTED_METHOD_NAMES = (json_tensor.PREDICT_METHOD, *classification.METHODS)
DEFAULT_SIGNATURE = json_tensor.DEFAULT_SIGNATURE
GENERATED = "generated"
ROW_TRIAL_SIZES = (1, 2)
SEED = 20240501
SCALAR_INT_VALUE = 3  # e.g. fun_runif(N): a small positive count
_FREE_DIM_SIZE = 2  # for free dimensions other than the batch dimension
_MAX_VALUE_CHARS = 2000
_MAX_DETAIL_CHARS = 300


@dataclasses.dataclass
class _Signature:
    key: str
    fn: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]  # the server's call
    inputs: dict[str, tf.TensorSpec]
    outputs: dict[str, tf.TensorSpec]
    spec: json_tensor.SignatureSpec | None  # as the server reads it; None if not in saved_model.pb

    def call(self, tensors: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Runs the signature as the server does (numpy arrays through the bundle)."""
        outputs = self.fn({alias: t.numpy() for alias, t in tensors.items()})
        return {alias: tf.constant(value) for alias, value in outputs.items()}

    def decode(self, doc: Mapping[str, Any]) -> tuple[str, dict[str, tf.Tensor]]:
        """A request body as the server turns it into input tensors: ``(format, tensors)``."""
        if self.spec is None:
            raise invalid_argument(f"signature '{self.key}' has no SignatureDef in "
                                   "saved_model.pb, so the server cannot serve it")
        fmt, arrays = json_tensor.decode_predict(doc, self.spec)
        return fmt, saved_model.input_tensors(self.spec, arrays)


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


def evaluate(saved_model_dir: str, spec: EvaluationSpec) -> dict[str, Any]:
    """Runs every check on the SavedModel in ``saved_model_dir``; returns the report."""
    settings = spec.checks
    rec = _Recorder()
    report: dict[str, Any] = {
        "servable": spec.name or os.path.basename(os.path.normpath(saved_model_dir)),
        "blessed": False, "reasons": [], "signatures": {}, "checks": rec.checks,
        "latency_ms": {},
    }
    try:
        bundle = load_bundle(saved_model_dir)  # as the server loads a version
        meta_graph = bundle.meta_graph
        specs = saved_model.signature_specs(meta_graph)
    except Exception as e:  # any load failure is a verdict, not a crash
        rec.add("load", None, None, False,
                f"cannot load {saved_model_dir} with tags ['serve']: {_error_text(e)}")
        return _finish(report, rec)
    available = sorted(k for k in meta_graph.signature_def if k != INIT_OP_SIGNATURE_KEY)
    rec.add("load", None, None, True,
            f"loaded with tags ['serve']; signatures: {', '.join(available) or 'none'}")

    by_signature: dict[str, list[Example]] = {}
    for example in spec.examples:
        try:  # the body as the server parses it
            doc = json_tensor.parse_json(json.dumps(example.request).encode())
            key = json_tensor.signature_name(doc) or DEFAULT_SIGNATURE
        except (ServingError, TypeError, ValueError) as e:
            rec.add("call", None, example.path or "example", False,
                    f"request not convertible: {getattr(e, 'message', e)}")
            continue
        by_signature.setdefault(key, []).append(dataclasses.replace(example, request=doc))
    expected = list(dict.fromkeys([*spec.signature_keys, DEFAULT_SIGNATURE]))
    keys = list(dict.fromkeys([*expected, *by_signature, *available]))

    for key in keys:
        if key not in available:
            needed_by = [f"example {e.path}" for e in by_signature.get(key, [])]
            if key in expected:
                needed_by.insert(0, "the catalog's signature keys" if key != DEFAULT_SIGNATURE
                                 else "TF Serving's default signature")
            rec.add("signature", key, None, False,
                    f"signature '{key}' is missing (needed by {', '.join(needed_by)}); "
                    f"the model has: {', '.join(available) or 'none'}")
            continue
        signature_def = meta_graph.signature_def[key]
        sig = _Signature(key=key, fn=functools.partial(bundle.run, key),
                         inputs=_tensor_specs(signature_def.inputs),
                         outputs=_tensor_specs(signature_def.outputs), spec=specs.get(key))
        rec.add("signature", key, None, True, f"signature '{key}' exists")
        entry = _check_structure(sig, meta_graph.signature_def.get(key), rec)
        report["signatures"][key] = entry
        calls: list[_Call] = []
        for example in by_signature.get(key, []):
            call = _run_example(sig, example, settings, rec, report["latency_ms"])
            if call is not None:
                calls.append(call)
        if key not in by_signature:
            calls.extend(_run_generated(sig, settings, rec, report["latency_ms"]))
        entry["formats"] = _check_formats(sig, calls, settings, rec)
    _check_warmup(saved_model_dir, bundle, specs, rec)
    return _finish(report, rec)


def _tensor_specs(infos: Mapping[str, Any]) -> dict[str, tf.TensorSpec]:
    """A SignatureDef's inputs or outputs as TensorSpecs (those with a dtype)."""
    specs = {}
    for alias, info in infos.items():
        if info.dtype == 0:  # DT_INVALID: reported by the structure check
            continue
        shape = (None if info.tensor_shape.unknown_rank
                 else [None if d.size < 0 else d.size for d in info.tensor_shape.dim])
        specs[alias] = tf.TensorSpec(shape, tf.as_dtype(info.dtype), name=alias)
    return specs


def _check_warmup(saved_model_dir: str, bundle: SavedModelBundle,
                  specs: Mapping[str, json_tensor.SignatureSpec], rec: _Recorder) -> None:
    """The warmup file parses and every record runs, as TF Serving requires to load."""
    try:
        logs = warmup.read(saved_model_dir)
        if not logs:
            return
        warmup.replay(logs, bundle.run, specs)
    except Exception as e:  # a failing record is a verdict: TF Serving would not load it
        rec.add("warmup", None, None, False, f"{warmup.FILE_NAME}: {_error_text(e)}")
        return
    rec.add("warmup", None, None, True, f"{len(logs)} warmup request(s) replayed")


# --- loading and structure -------------------------------------------------------------------


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
        served = getattr(sig.spec, side) if sig.spec is not None else {}
        if not specs:
            problems.append(f"the signature has no {side}")
        for alias in sorted(set(specs) | set(infos)):
            what = f"{side[:-1]} '{alias}'"
            info, tensor = infos.get(alias), served.get(alias)
            described: dict[str, Any] = {"dtype": None, "shape": None, "name": None}
            if info is None or tensor is None:
                problems.append(f"{what} is not in the SignatureDef")
            elif not tensor.dense:
                problems.append(f"{what} is a composite ({info.WhichOneof('encoding')}) tensor; "
                                "the REST API feeds and returns dense tensors only")
            else:
                described["name"] = info.name or None
                if not info.name:
                    problems.append(f"{what} has no tensor name")
                if tensor.dtype == "DT_INVALID":
                    problems.append(f"{what} has no dtype")
                else:
                    described["dtype"] = saved_model.tf_dtype(tensor.dtype).name
                if not info.HasField("tensor_shape"):
                    problems.append(f"{what} has no shape")
                elif tensor.shape is None:
                    notes.append(f"{what} has unknown rank")
                else:
                    described["shape"] = [None if d < 0 else d for d in tensor.shape]
            if specs.get(alias) is None:
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


def _response(outputs: Mapping[str, tf.Tensor], fmt: str) -> dict[str, Any]:
    """The response body the server writes for these outputs, as a client parses it."""
    return json_tensor.predict_response(saved_model.output_arrays(outputs), fmt)


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
    if json_tensor.is_b64_object(expected) or json_tensor.is_b64_object(actual):
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
    """The bytes a ``{"b64": ...}`` object or a string stands for (None for anything else)."""
    if json_tensor.is_b64_object(value):
        try:
            return json_tensor.b64decode(value)
        except ServingError:
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


def _run_example(sig: _Signature, example: Example, settings: Checks,
                 rec: _Recorder, latency: dict[str, Any]) -> _Call | None:
    """Calls the signature with one catalog example and checks its expectations."""
    name = example.path or "example"
    request = example.request  # as json_tensor.parse_json returned it
    expect = example.expect
    fmt = json_tensor.ROW if "instances" in request else json_tensor.COLUMNAR
    try:
        fmt, tensors = sig.decode(request)
    except ServingError as e:
        rec.add("call", sig.key, name, False, f"request not convertible ({fmt}): {e.message}")
        return None
    try:
        outputs = sig.call(tensors)
    except Exception as e:  # a model that raises is a verdict
        rec.add("call", sig.key, name, False, f"raised {_error_text(e)}",
                {"error": _shorten(str(e), _MAX_VALUE_CHARS)})
        return None
    try:
        response = _response(outputs, fmt)
    except ServingError as e:
        rec.add("call", sig.key, name, False,
                f"response not writable in {fmt} format: {e.message}")
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


def _run_generated(sig: _Signature, settings: Checks, rec: _Recorder,
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
    sizes: list[int | None] = list(settings.batch_sizes) if free else [None]
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
                        response: Any, expect: Expectation, rec: _Recorder) -> None:
    aliases = sorted(outputs)
    if expect.response is not None:
        if response is None:
            rec.add("expect.response", sig.key, name, False,
                    "no response to compare (see the call check)")
        else:
            tolerance = float(expect.tolerance)
            diffs = compare_bodies(response, expect.response, tolerance)
            rec.add("expect.response", sig.key, name, not diffs,
                    "; ".join(diffs) if diffs else
                    f"matches the expected response (tolerance {tolerance:g})",
                    {"mismatches": diffs, "expected": _small(expect.response)}
                    if diffs else None)
    for key in ("shape", "dtype"):
        if getattr(expect, key) is None:
            continue
        if len(aliases) != 1:
            rec.add(f"expect.{key}", sig.key, name, False,
                    f"expect.{key} needs a single output; the signature has "
                    f"{', '.join(aliases)}")
            continue
        out = outputs[aliases[0]]
        if key == "shape":
            got, want = _shape(out.shape), [int(d) for d in expect.shape]
        else:
            got, want = out.dtype.name, tf.as_dtype(expect.dtype.removeprefix("tf.")).name
        rec.add(f"expect.{key}", sig.key, name, got == want,
                f"output '{aliases[0]}' {key} is {got}" + ("" if got == want else
                                                          f", expected {want}"),
                {"got": got, "expected": want})
    if expect.range is not None:
        lo, hi = (float(v) for v in expect.range)
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
    if expect.vocabulary is not None:
        vocabulary = set(expect.vocabulary)
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
                   outputs: Mapping[str, tf.Tensor], settings: Checks,
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

    if settings.random:
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
                     settings: Checks, rec: _Recorder,
                     latency: dict[str, Any]) -> None:
    """One warm-up, then ``warm_calls`` timed calls; the budget applies to the p50."""
    calls = settings.warm_calls
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
    budget = settings.latency_budget_ms
    if budget is None:
        return
    ok = p50 <= float(budget)
    rec.add("latency", sig.key, name, ok,
            f"p50 {p50:.3f} ms {'within' if ok else 'exceeds'} the budget of {budget:g} ms "
            f"(p99 {p99:.3f} ms, {calls} calls)",
            {"p50": p50, "p99": p99, "budget_ms": budget})


def _check_formats(sig: _Signature, calls: Sequence[_Call], settings: Checks,
                   rec: _Recorder) -> dict[str, dict[str, Any]]:
    """Whether the signature can be served in row and in columnar format."""
    if calls:
        columnar = {"ok": True, "detail": f"a call with {calls[0].source} worked"}
    else:
        columnar = {"ok": False, "detail": "no call worked (see the call checks)"}
    formats = {"row": _row_format(sig, calls), "columnar": columnar}
    for fmt in settings.formats:
        entry = formats.get(fmt)
        if entry is None:
            rec.add(f"format.{fmt}", sig.key, None, False, f"unknown format '{fmt}'")
            continue
        rec.add(f"format.{fmt}", sig.key, None, entry["ok"],
                ("" if entry["ok"] else "required by checks.formats but not possible: ")
                + entry["detail"])
    return formats


def _row_format(sig: _Signature, calls: Sequence[_Call]) -> dict[str, Any]:
    """Row format as TF Serving reads it (json_tensor.cc FillTensorMapFromInstancesList).

    TF Serving stacks the instances on a new leading dimension and lets the graph decide
    whether it takes that shape; it checks no shape against the signature. So nothing is
    ruled out in advance: row requests of 1 and 2 copies of one instance of a call that
    worked (each input's first item, a scalar input as it is) are tried, and row format
    works iff they are answered with 1 and 2 predictions.
    """
    if not sig.inputs:
        return {"ok": False, "detail": "the signature has no inputs to put in instances"}
    if not calls:
        return {"ok": False, "detail": "no call worked (see the call checks)"}
    base = calls[0]
    empty = [a for a, t in base.tensors.items() if t.shape.rank and int(t.shape[0]) == 0]
    if empty:
        return {"ok": False, "detail": f"the inputs of {base.source} have no first instance "
                "to repeat: " + ", ".join(f"{a} {_shape(base.tensors[a].shape)}"
                                           for a in empty)}
    # One instance of the base call, as a client writes it in a row request.
    instance = encode_b64({a: (t if t.shape.rank == 0 else t[0]).numpy()
                           for a, t in base.tensors.items()})
    item = next(iter(instance.values())) if len(instance) == 1 else instance
    scalars = [a for a, t in base.tensors.items() if t.shape.rank == 0]
    worked: list[int] = []
    failures: list[str] = []
    for n in ROW_TRIAL_SIZES:
        try:
            _, tensors = sig.decode({"instances": [item] * n})
            outputs = sig.call(tensors)
            response = _response(outputs, json_tensor.ROW)
        except Exception as e:
            failures.append(f"{n} instance(s): {_error_text(e)}")
            continue
        if len(response["predictions"]) != n:
            failures.append(f"{n} instance(s) gave output(s) " + ", ".join(
                f"{a} {_shape(o.shape)}" for a, o in sorted(outputs.items()))
                + f": {len(response['predictions'])} predictions instead of {n}")
            continue
        worked.append(n)
    if not failures:
        return {"ok": True, "instances_ok": worked, "detail": "1 and 2 instances (from "
                f"{base.source}) were answered with 1 and 2 predictions"}
    only = (f"only {', '.join(map(str, worked))} instance(s) per request work; "
            if worked else "")
    note = (f"input(s) {', '.join(scalars)} are scalars (shape []), which row format feeds "
            "with shape [instances]; " if scalars else "")
    return {"ok": False, "instances_ok": worked, "detail": note + only + "; ".join(failures)}


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
    if isinstance(error, ServingError):  # as the server would answer
        return _shorten(f"{error.code}: {error.message}", _MAX_DETAIL_CHARS)
    lines = tf_error_message(str(error)).splitlines()
    text = " ".join(line.strip() for line in lines
                    if line.strip() and not line.lstrip().startswith("[[")) or repr(error)
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
