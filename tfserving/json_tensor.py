"""TF Serving's REST JSON formats: request bodies to arrays, arrays to response bodies.

This follows ``tensorflow_serving/util/json_tensor.cc`` rule for rule, so that
a request this server accepts is one TF Serving accepts, with the same result:

- ``instances`` (row format): a list with one entry per batch item; a plain
  value per item when the signature has one input, an object ``{alias: value}``
  per item otherwise. The inputs are stacked on a new 0th dimension. The
  response is ``{"predictions": [...]}``: one value per item when there is one
  output, one ``{alias: value}`` object per item otherwise.
- ``inputs`` (columnar format): a value (one input) or ``{alias: value}``. The
  response is ``{"outputs": value}`` or ``{"outputs": {alias: value}}``.
- ``{"b64": "..."}`` is binary data for a ``DT_STRING`` tensor; outputs whose
  alias ends in ``_bytes`` are written that way.
- Numbers must fit the dtype exactly (JSON ints beyond 2**24 are refused for
  float32, 1e39 is refused for float32, 1.0 is refused for int32, ...).
- ``:classify`` / ``:regress`` take ``examples`` (+ optional ``context``) as
  JSON objects turned into ``tf.Example`` protos.

It needs numpy and orjson only (TensorFlow is imported lazily, for
``tf.Example`` protos), so it can be tested without loading a model.
Every problem with a request raises :class:`~serving.errors.ServingError`.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from tfserving.status import MAX_ECHO, ServingError, invalid_argument

ROW = "row"
COLUMNAR = "columnar"

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
DEFAULT_SIGNATURE = "serving_default"

# numpy (1.x) arrays have at most 32 dimensions; deeper JSON nesting is refused.
MAX_RANK = 32

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

# DT_* name -> (TF's DataTypeString, numpy dtype, integer range or None).
_DTYPES: dict[str, tuple[str, Any, tuple[int, int] | None]] = {
    "DT_FLOAT": ("float", np.float32, None),
    "DT_DOUBLE": ("double", np.float64, None),
    "DT_INT8": ("int8", np.int8, (-(2**7), 2**7 - 1)),
    "DT_INT16": ("int16", np.int16, (-(2**15), 2**15 - 1)),
    "DT_INT32": ("int32", np.int32, (-(2**31), 2**31 - 1)),
    "DT_INT64": ("int64", np.int64, (_INT64_MIN, _INT64_MAX)),
    "DT_UINT8": ("uint8", np.uint8, (0, 2**8 - 1)),
    "DT_UINT32": ("uint32", np.uint32, (0, 2**32 - 1)),
    "DT_UINT64": ("uint64", np.uint64, (0, 2**64 - 1)),
    "DT_BOOL": ("bool", np.bool_, None),
    "DT_STRING": ("string", object, None),
}
# Largest integer a float type holds exactly (TF Serving's IsLosslessDecimal).
_LOSSLESS_INT = {"DT_FLOAT": 2**24 - 1, "DT_DOUBLE": 2**53 - 1}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a signature: its alias, dtype and shape.

    ``dtype`` is a ``DT_*`` name; ``shape`` is ``None`` for unknown rank, and
    ``-1`` marks an unknown dimension. ``dense`` is False for sparse/composite
    tensors, which the REST API cannot feed.
    """

    name: str
    dtype: str
    shape: tuple[int, ...] | None
    dense: bool = True


@dataclass(frozen=True, eq=False)
class SignatureSpec:
    """A signature def: its key, method name and input/output specs."""

    key: str
    method_name: str
    inputs: Mapping[str, TensorSpec] = field(default_factory=dict)
    outputs: Mapping[str, TensorSpec] = field(default_factory=dict)


def type_string(dtype: str) -> str:
    """TF's DataTypeString for a ``DT_*`` name (``DT_FLOAT`` -> ``float``)."""
    info = _DTYPES.get(dtype)
    if info:
        return info[0]
    return dtype[3:].lower() if dtype.startswith("DT_") else dtype


# --------------------------------------------------------------------------- JSON


def parse_json(body: bytes) -> dict[str, Any]:
    """Parses a request body, which must be a JSON object.

    Like TF Serving (rapidjson with ``kParseNanAndInfFlag``), ``NaN`` and
    ``Infinity`` are accepted as numbers.
    """
    if not body.strip():
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        doc = _parse_nonfinite(body, err)
    if type(doc) is not dict:
        raise invalid_argument(f"JSON Value: {snippet(doc)} Is not object")
    return doc


def _parse_nonfinite(body: bytes, err: Exception) -> Any:
    """Retries with the stdlib parser, which knows NaN/Infinity; else a 400."""
    if b"NaN" in body or b"Infinity" in body:
        try:
            doc = json.loads(body)
            orjson.dumps(doc)  # rejects what orjson would: lone surrogates, over-deep nesting
            return doc
        except (ValueError, RecursionError, TypeError, orjson.JSONEncodeError):
            pass
    raise invalid_argument(f"JSON Parse error: {err}")


def dumps(obj: Any) -> bytes:
    """Serialises a response (numpy arrays allowed) like TF Serving.

    Non-finite floats are written as ``NaN``/``Infinity``/``-Infinity``, as TF
    Serving writes them (orjson would write ``null``).
    """
    try:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError as err:
        raise ServingError("INTERNAL", f"Failed to write response JSON: {err}") from err


def _dumps_nonfinite(obj: Any) -> bytes:
    return json.dumps(_to_python(obj), allow_nan=True, separators=(",", ":")).encode()


def _to_python(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_python(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_python(v) for v in obj]
    if isinstance(obj, (np.ndarray, np.generic)):
        arr = np.asarray(obj)
        if arr.dtype.kind == "f":
            # The shortest text that round-trips at the tensor's precision.
            return np.array(arr.astype(str), dtype=np.float64).tolist()
        return arr.tolist()
    return obj


def json_type(value: Any) -> str:
    """rapidjson's type name of a parsed JSON value, as TF Serving reports it."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def snippet(value: Any, budget: int = MAX_ECHO) -> str:
    """A short JSON rendering of a (possibly huge or deep) value, for errors."""
    out: list[str] = []
    _snip(value, out, [budget], 0)
    text = "".join(out)
    return text if len(text) <= budget else text[:budget] + "..."


def _snip(value: Any, out: list[str], budget: list[int], depth: int) -> None:
    if budget[0] <= 0:
        return
    if depth > 8 and isinstance(value, (dict, list)):
        out.append("...")
        budget[0] -= 3
        return
    if isinstance(value, dict):
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if budget[0] <= 0:
                break
            if i:
                out.append(",")
            text = _scalar_text(key)
            out.append(text + ":")
            budget[0] -= len(text) + 2
            _snip(item, out, budget, depth + 1)
        out.append("}")
    elif isinstance(value, list):
        out.append("[")
        for i, item in enumerate(value):
            if budget[0] <= 0:
                break
            if i:
                out.append(",")
            budget[0] -= 1
            _snip(item, out, budget, depth + 1)
        out.append("]")
    else:
        text = _scalar_text(value)
        out.append(text)
        budget[0] -= len(text)


def _scalar_text(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value[:MAX_ECHO])
    if isinstance(value, float):
        return json.dumps(value)
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        text = str(value)
        return text if len(text) <= 40 else text[:40] + "..."
    return f"<{type(value).__name__}>"


def is_b64_object(value: Any) -> bool:
    """True for ``{"b64": "<string>"}`` (exactly one key)."""
    return type(value) is dict and len(value) == 1 and type(value.get("b64")) is str


def encode_b64(value: Any) -> Any:
    """``value`` with every ``bytes`` replaced by ``{"b64": ...}`` (and arrays as lists)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"b64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        return {key: encode_b64(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_b64(item) for item in value]
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays and scalars
        return encode_b64(value.tolist())
    return value


def decode_b64(value: Any) -> Any:
    """``value`` with every ``{"b64": ...}`` object replaced by its ``bytes``."""
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("b64"), str):
            return base64.b64decode(value["b64"])
        return {key: decode_b64(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode_b64(item) for item in value]
    return value


def _is_named_object(value: Any) -> bool:
    return type(value) is dict and not is_b64_object(value)


def b64decode(value: Any) -> bytes:
    """Decodes a ``{"b64": ...}`` object; padding may be omitted, as in absl."""
    if not is_b64_object(value):
        raise invalid_argument(
            f"JSON Value: {snippet(value)} not formatted correctly for base64 data")
    text = value["b64"]
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument("Unable to base64 decode") from None


def _encode_utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid_argument(f"JSON string {snippet(text)} is not valid UTF-8") from None


# ------------------------------------------------------------------ JSON -> arrays


def json_to_array(value: Any, dtype: str) -> np.ndarray:
    """Converts one JSON value (scalar or nested lists) to an array of ``dtype``."""
    shape = _dense_shape(value)
    leaves = _flatten(value, shape)
    return _leaves_to_array(leaves, dtype).reshape(shape)


def _dense_shape(value: Any) -> list[int]:
    # TF Serving's GetDenseTensorShape: follow the first element of each list.
    shape: list[int] = []
    while type(value) is list:
        shape.append(len(value))
        if len(shape) > MAX_RANK:
            raise invalid_argument(
                f"JSON lists are nested more than {MAX_RANK} levels deep; tensors of rank > "
                f"{MAX_RANK} are not supported")
        if not value:
            break
        value = value[0]
    return shape


def _flatten(value: Any, shape: list[int]) -> list[Any]:
    rank = len(shape)
    level = [value]
    for depth, size in enumerate(shape):
        below: list[Any] = []
        for item in level:
            if type(item) is not list:
                raise invalid_argument(
                    f"JSON Value: {snippet(item)} found at incorrect level: {depth + 1} in the "
                    f"JSON DOM. Expected at level: {rank}")
            if len(item) != size:
                raise invalid_argument(
                    f"Encountered list at unexpected size: {len(item)} at level: {depth} "
                    f"expected size: {size}")
            below.extend(item)
        level = below
    if list in set(map(type, level)):
        raise invalid_argument(f"Encountered list at unexpected level: {rank} expected < {rank}")
    return level


def _type_error(value: Any, dtype: str) -> ServingError:
    return invalid_argument(
        f"JSON Value: {snippet(value)} Type: {json_type(value)} is not of expected type: "
        f"{type_string(dtype)}")


def _lossy_error(value: Any, target: str) -> ServingError:
    return invalid_argument(
        f"Cannot convert JSON value: {snippet(value)} to {target} without loss of precision.")


def _leaves_to_array(leaves: list[Any], dtype: str) -> np.ndarray:
    info = _DTYPES.get(dtype)
    if info is None:
        shown = snippet(leaves[0]) if leaves else "[]"
        raise ServingError("UNIMPLEMENTED",
                           f"Conversion of JSON Value: {shown} to type: {type_string(dtype)}")
    _, np_type, int_range = info
    if not leaves:
        return np.zeros((0,), dtype=np_type)
    types = set(map(type, leaves))

    if dtype == "DT_STRING":
        out = np.empty(len(leaves), dtype=object)
        if types == {str}:
            try:
                out[:] = [s.encode("utf-8") for s in leaves]
            except UnicodeEncodeError:
                raise invalid_argument("JSON string is not valid UTF-8") from None
            return out
        for i, leaf in enumerate(leaves):
            if type(leaf) is str:
                out[i] = _encode_utf8(leaf)
            elif type(leaf) is dict:
                out[i] = b64decode(leaf)
            else:
                raise _type_error(leaf, dtype)
        return out

    if dtype == "DT_BOOL":
        if types != {bool}:
            raise _type_error(next(v for v in leaves if type(v) is not bool), dtype)
        return np.array(leaves, dtype=np.bool_)

    if int_range is not None:
        if types != {int}:
            raise _type_error(next(v for v in leaves if type(v) is not int), dtype)
        low, high = int_range
        if min(leaves) < low or max(leaves) > high:
            raise _type_error(next(v for v in leaves if not low <= v <= high), dtype)
        return np.array(leaves, dtype=np_type)

    # DT_FLOAT / DT_DOUBLE
    if not types <= {int, float}:
        raise _type_error(next(v for v in leaves if type(v) not in (int, float)), dtype)
    target = type_string(dtype)
    if int in types:
        limit = _LOSSLESS_INT[dtype]
        for v in leaves:
            if type(v) is int and not -limit <= v <= limit:
                raise _lossy_error(v, target)
    arr = np.array(leaves, dtype=np.float64)
    if dtype == "DT_FLOAT":
        finite = np.isfinite(arr)
        too_big = finite & (np.abs(np.where(finite, arr, 0.0)) > _FLOAT32_MAX)
        if too_big.any():
            raise _lossy_error(leaves[int(np.argmax(too_big))], target)
        return arr.astype(np.float32)
    return arr


def _check_shape(alias: str, arr: np.ndarray, spec: TensorSpec, signature: str) -> None:
    if spec.shape is None:
        return
    expected = spec.shape
    if arr.ndim != len(expected) or any(
            d >= 0 and d != a for d, a in zip(expected, arr.shape, strict=True)):
        raise invalid_argument(
            f"Input '{alias}' has shape {list(arr.shape)} but signature '{signature}' expects "
            f"{list(expected)} (-1: any size)")


def signature_name(doc: Mapping[str, Any]) -> str:
    """The request's optional ``signature_name`` ("" when absent)."""
    if "signature_name" not in doc:
        return ""
    value = doc["signature_name"]
    if type(value) is not str:
        raise invalid_argument(
            f"JSON Value: {snippet(doc)} not formatted correctly. 'signature_name' key must be "
            "a string value.")
    return value


def decode_predict(doc: Mapping[str, Any], sig: SignatureSpec) -> tuple[str, dict[str, np.ndarray]]:
    """Turns a predict request into ``(format, {alias: array})`` for ``sig``."""
    if not sig.inputs:
        raise invalid_argument(f"Failed to get input map for signature: {sig.key}")
    for alias, spec in sig.inputs.items():
        if not spec.dense:
            raise invalid_argument(
                f"Input '{alias}' of signature '{sig.key}' is not a dense tensor; the REST API "
                "can only feed dense tensors")
    has_instances = "instances" in doc
    has_inputs = "inputs" in doc
    if has_instances and has_inputs:
        raise invalid_argument(
            f"JSON Value: {snippet(doc)} Not formatted correctly expecting only one of 'inputs' "
            "or 'instances' keys to exist ")
    if has_instances:
        tensors = _decode_instances(doc["instances"], sig, doc)
        fmt = ROW
    elif has_inputs:
        tensors = _decode_inputs(doc["inputs"], sig)
        fmt = COLUMNAR
    else:
        raise invalid_argument("Missing 'inputs' or 'instances' key")
    for alias, arr in tensors.items():
        _check_shape(alias, arr, sig.inputs[alias], sig.key)
    return fmt, tensors


def _decode_instances(instances: Any, sig: SignatureSpec,
                      doc: Mapping[str, Any]) -> dict[str, np.ndarray]:
    inputs = sig.inputs
    if type(instances) is not list:
        raise invalid_argument(
            f"JSON Value: {snippet(doc)} Excepting 'instances' to be an list/array")
    if not instances:
        raise invalid_argument(f"JSON Value: {snippet(doc)} No values in 'instances' array")
    if type(instances[0]) is not dict and len(inputs) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map")
    columns: dict[str, list[Any]]
    if _is_named_object(instances[0]):
        columns = {alias: [] for alias in inputs}
        for i, item in enumerate(instances):
            if not _is_named_object(item):
                raise invalid_argument(f"Expecting object but got list at item {i} of input list")
            for key in item:
                if key not in inputs:
                    raise invalid_argument(
                        f"Failed to process element: {i} key: {snippet(key)} of 'instances' "
                        f"list. Error: JSON object: does not have named input: {snippet(key)}")
            if len(item) != len(inputs):
                raise invalid_argument(
                    f"Failed to process element: {i} of 'instances' list. JSON object: "
                    f"{snippet(item)} must only have keys: {','.join(sorted(inputs))}")
            for alias in inputs:
                columns[alias].append(item[alias])
    else:
        if len(inputs) > 1:
            raise invalid_argument(
                "instances is a plain list, but expecting list of objects as multiple input "
                "tensors required as per tensorinfo_map")
        for i, item in enumerate(instances):
            if _is_named_object(item):
                raise invalid_argument(
                    f"Expecting value/list but got object at item {i} of input list")
        columns = {next(iter(inputs)): instances}

    tensors = {}
    for alias, column in columns.items():
        spec = inputs[alias]
        if spec.shape == ():
            raise invalid_argument(
                f"Input '{alias}' of signature '{sig.key}' is a scalar (shape []), so it has no "
                "batch dimension to stack 'instances' on; use the columnar format ('inputs')")
        try:
            tensors[alias] = json_to_array(column, spec.dtype)
        except ServingError as err:
            raise ServingError(
                err.code, f"Failed to process 'instances' for input '{alias}'. Error: {err.message}"
            ) from None
    return tensors


def _decode_inputs(value: Any, sig: SignatureSpec) -> dict[str, np.ndarray]:
    inputs = sig.inputs
    if not _is_named_object(value):
        if len(inputs) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map")
        alias, spec = next(iter(inputs.items()))
        return {alias: json_to_array(value, spec.dtype)}
    tensors = {}
    for alias, spec in inputs.items():
        if alias not in value:
            raise invalid_argument(f"Missing named input: {alias} in 'inputs' object.")
        tensors[alias] = json_to_array(value[alias], spec.dtype)
    return tensors


# ------------------------------------------------------------------ arrays -> JSON


def _json_ready(alias: str, arr: np.ndarray) -> tuple[Any, bool]:
    """An output made serialisable; the flag is True if it has non-finite floats."""
    arr = np.asarray(arr)
    kind = arr.dtype.kind
    if arr.dtype == object or kind in "SU":
        as_b64 = alias.endswith("_bytes")
        flat = arr.ravel()
        converted = np.empty(flat.size, dtype=object)
        if as_b64:
            converted[:] = [{"b64": base64.b64encode(_as_bytes(b)).decode("ascii")} for b in flat]
        else:
            converted[:] = [_as_bytes(b).decode("utf-8", "replace") for b in flat]
        return converted.reshape(arr.shape).tolist(), False
    if arr.dtype.name == "bfloat16":
        arr = arr.astype(np.float32)
        kind = "f"
    if kind not in "biuf":
        raise invalid_argument(f"Failed to write JSON value for tensor type: {arr.dtype.name}")
    nonfinite = kind == "f" and not bool(np.isfinite(arr).all())
    if arr.ndim == 0:
        return arr[()], nonfinite
    return np.ascontiguousarray(arr), nonfinite


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)


def encode_predict(outputs: Mapping[str, np.ndarray], fmt: str) -> bytes:
    """A predict response body for ``outputs`` in the request's format."""
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    values: dict[str, Any] = {}
    nonfinite = False
    for name in names:
        values[name], bad = _json_ready(name, outputs[name])
        nonfinite = nonfinite or bad
    if fmt == ROW:
        batch = 0
        for name in names:
            arr = np.asarray(outputs[name])
            if arr.ndim == 0:
                raise invalid_argument(f"Tensor name: {name} has no shape information ")
            size = arr.shape[0]
            if size < 1:
                raise invalid_argument(f"Tensor name: {name} has invalid batch size: {size}")
            if batch and size != batch:
                raise invalid_argument(
                    f"Tensor name: {name} has inconsistent batch size: {size} expecting: {batch}")
            batch = size
        if len(names) == 1:
            body: dict[str, Any] = {"predictions": values[names[0]]}
        else:
            body = {"predictions": [{n: values[n][i] for n in names} for i in range(batch)]}
    else:
        only = len(names) == 1
        body = {"outputs": values[names[0]] if only else {n: values[n] for n in names}}
    return _dumps_nonfinite(body) if nonfinite else dumps(body)


def predict_response(outputs: Mapping[str, np.ndarray], fmt: str) -> dict[str, Any]:
    """The body :func:`encode_predict` writes, as a client's JSON parser returns it.

    It is those bytes parsed, so floats have the values of the written text
    (float32 ``0.1`` is ``0.1``), non-finite floats are ``nan``/``inf`` and
    strings are as written (``{"b64": ...}`` objects for ``_bytes`` outputs).
    For comparing a response with an expected body without an HTTP round trip
    (the ServableEvaluator does). Errors are those of :func:`encode_predict`.
    """
    return json.loads(encode_predict(outputs, fmt))


# --------------------------------------------------------- classify and regress


def decode_examples(doc: Mapping[str, Any], method: str) -> list[bytes]:
    """Serialised ``tf.Example`` protos for a classify/regress request.

    With a ``context``, each example is serialised after the context, so the
    example's features win (proto merge), as TF Serving does.
    """
    prefix = b""
    if "context" in doc:
        prefix = _make_example(doc["context"]).SerializeToString()
    if "examples" not in doc:
        raise invalid_argument(
            f"JSON Value: {snippet(doc)} When method is {method}, key 'examples' is expected "
            "and was not found")
    examples = doc["examples"]
    if type(examples) is not list:
        raise invalid_argument(
            f"JSON Value: {snippet(doc)} Expecting 'examples' value to be an list/array")
    if not examples:
        raise invalid_argument(f"JSON Value: {snippet(doc)} 'examples' value is an empty array")
    return [prefix + _make_example(item).SerializeToString() for item in examples]


def _make_example(value: Any) -> Any:
    from tensorflow.core.example import example_pb2

    if type(value) is not dict:
        raise invalid_argument(f"Example must be JSON object but got JSON {json_type(value)}")
    example = example_pb2.Example()
    for name, content in value.items():
        _fill_feature(name, content, example.features.feature[name])
    return example


def _fill_feature(name: str, content: Any, feature: Any) -> None:
    items = content if type(content) is list else [content]
    kind = None
    values: list[Any] = []
    for item in items:
        kind_of, converted = _feature_value(name, item)
        if kind is None:
            kind = kind_of
        elif kind != kind_of:
            raise invalid_argument(
                f"Unexpected element type in feature: {snippet(name)} expecting type: {kind}")
        values.append(converted)
    if kind == "bytes":
        feature.bytes_list.value.extend(values)
    elif kind == "float":
        feature.float_list.value.extend(values)
    elif kind == "int64":
        feature.int64_list.value.extend(values)


def _feature_value(name: str, item: Any) -> tuple[str, Any]:
    kind_of = type(item)
    if kind_of is bool:
        return "int64", int(item)
    if kind_of is str:
        return "bytes", _encode_utf8(item)
    if kind_of is dict and is_b64_object(item):
        return "bytes", b64decode(item)
    if kind_of is float:
        if np.isfinite(item) and abs(item) > _FLOAT32_MAX:
            raise _lossy_error(item, "float")
        return "float", item
    if kind_of is int:
        if item > _INT64_MAX:
            raise invalid_argument(
                f"Feature: {snippet(name)} has uint64 element. Only int64 is supported.")
        if item < _INT64_MIN:
            raise _type_error(item, "DT_INT64")
        return "int64", item
    raise invalid_argument(
        f"Feature: {snippet(name)} has element with unexpected JSON type: {json_type(item)}")


def check_example_signature(sig: SignatureSpec, method: str) -> str:
    """Checks that ``sig`` is a classify/regress signature; returns its input alias."""
    expected = CLASSIFY_METHOD if method == "classify" else REGRESS_METHOD
    kind = "classification" if method == "classify" else "regression"
    if sig.method_name != expected:
        raise invalid_argument(
            f"Expected {kind} signature method_name to be {expected}. Was: {sig.method_name}")
    if len(sig.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if "inputs" not in sig.inputs:
        raise invalid_argument(f"No {kind} inputs found in SignatureDef: {sig.key}")
    if sig.inputs["inputs"].dtype != "DT_STRING":
        raise invalid_argument(f"The {kind} input must be a DT_STRING tensor of tf.Examples")
    if method == "classify" and not ({"classes", "scores"} & set(sig.outputs)):
        raise invalid_argument(
            "Expected classification signature outputs to contain at least one of classes or "
            "scores.")
    if method == "regress" and "outputs" not in sig.outputs:
        raise invalid_argument(f"No regression outputs found in SignatureDef: {sig.key}")
    return "inputs"


def encode_classify(outputs: Mapping[str, np.ndarray], batch: int) -> bytes:
    """``{"results": [[[label, score], ...], ...]}`` from classes/scores outputs."""
    classes = outputs.get("classes")
    scores = outputs.get("scores")
    num_classes = None
    if classes is not None:
        classes = np.asarray(classes)
        if classes.dtype != object:
            raise invalid_argument(f"Expected classes Tensor of DT_STRING. Got: {classes.dtype}")
        _check_classify_shape(classes, batch)
        num_classes = classes.shape[1]
    if scores is not None:
        scores = np.asarray(scores)
        if scores.dtype != np.float32:
            raise invalid_argument(f"Expected scores Tensor of DT_FLOAT. Got: {scores.dtype}")
        _check_classify_shape(scores, batch)
        if num_classes is not None and scores.shape[1] != num_classes:
            raise invalid_argument("Tensors class and score should match in dim[1]")
        num_classes = scores.shape[1]
    results = []
    nonfinite = scores is not None and not bool(np.isfinite(scores).all())
    for i in range(batch):
        row = []
        for c in range(num_classes or 0):
            label = "" if classes is None else _as_bytes(classes[i, c]).decode("utf-8", "replace")
            score = np.float32(0.0) if scores is None else scores[i, c]
            row.append([label, score])
        results.append(row)
    if not results:
        raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
    body = {"results": results}
    return _dumps_nonfinite(body) if nonfinite else dumps(body)


def _check_classify_shape(arr: np.ndarray, batch: int) -> None:
    if arr.ndim != 2:
        raise invalid_argument(
            f"Expected Tensor shape: [batch_size num_classes] but got {list(arr.shape)}")
    if arr.shape[0] != batch:
        raise invalid_argument(
            f"Input batch size did not match output batch size: {batch} vs. {arr.shape[0]}")


def encode_regress(outputs: Mapping[str, np.ndarray], batch: int) -> bytes:
    """``{"results": [value, ...]}`` from the ``outputs`` output."""
    values = np.asarray(outputs["outputs"])
    if values.dtype != np.float32:
        raise invalid_argument(f"Expected output Tensor of DT_FLOAT. Got: {values.dtype}")
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise invalid_argument(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
            f"{list(values.shape)}")
    if values.shape[0] != batch:
        raise invalid_argument(
            f"Input batch size did not match output batch size: {batch} vs. {values.shape[0]}")
    if batch == 0:
        raise invalid_argument("Cannot convert empty RegressionResults to JSON")
    flat = np.ascontiguousarray(values.reshape(batch))
    body = {"results": flat}
    return _dumps_nonfinite(body) if not np.isfinite(flat).all() else dumps(body)
