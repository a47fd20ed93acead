"""OpenAPI 3.1 documents for TF Serving's REST API, generated from signatures.

:func:`version_document` describes one model version: its status, metadata,
``:predict`` and (where a signature is one) ``:classify`` / ``:regress``
endpoints, with JSON Schemas (2020-12, OpenAPI 3.1's dialect) for every
request and response. :func:`merge_documents` joins the documents of several
versions and models into one, adding the paths TF Serving routes to a model's
default version and to its labels.

The request schemas say exactly what TF Serving's JSON decoder
(``tensorflow_serving/util/json_tensor.cc``) accepts, so that a request the
schema rejects is one the server rejects before running the model, and the
other way round:

- ``instances`` (row format): a non-empty list; per item a bare tensor value
  when the signature has one input (``{alias: value}`` objects also work), else
  an object with exactly the input aliases. ``inputs`` (columnar): a bare value
  (one input) or an object that has every alias (other keys are ignored).
  Exactly one of the two. ``signature_name`` is one of the signature keys
  (absent or ``""`` means ``serving_default``). Other top-level keys are ignored.
- Leaves follow ``AddValueToTensor``: any JSON number for float/double (a value
  beyond float32's range becomes +-Infinity), integers in the range TF Serving
  parses for the dtype (``IsInt`` - int32's range - for int8/int16/int32/uint8,
  ``IsInt64``, ``IsUint``, ``IsUint64``), booleans for bool, and for
  ``DT_STRING`` a JSON string (UTF-8 text) or ``{"b64": "<base64>"}`` (bytes).
- **Shapes are not constrained.** TF Serving does not check a request's shapes
  against the signature; the graph does (``x + 2`` accepts any shape, a reshape
  to ``[]`` accepts one element). So a request schema only fixes the dtype and
  the nesting; the declared shape is in ``x-tensor-shape`` (``-1``: any size;
  absent: unknown rank) and in each schema's description, and the examples
  follow it.

What JSON Schema cannot say, and the server still rejects (the schema accepts):
ragged or mixed-depth lists (``[[1, 2], [3]]``), rows of different shapes,
nesting deeper than 32, and ``1.0`` for an integer (JSON Schema treats ``1.0``
as an integer; TF Serving's parser does not). Bodies may contain the
non-standard tokens ``NaN``, ``Infinity`` and ``-Infinity`` for float values,
in requests and in responses, as TF Serving reads (rapidjson's
``kParseNanAndInfFlag``) and writes them; a strict JSON parser refuses them.

The builders need no TensorFlow and no validator library; the readers at the end
(:func:`read_root_document`: a serving root's document, offline) use ``tf.io.gfile``, so a
root may be ``gs://`` or ``s3://``.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from tfserving import classification, json_tensor
from tfserving.json_tensor import SignatureSpec, TensorSpec
from tfserving.status import CODE_NAMES, ServingError

OPENAPI_VERSION = "3.1.0"
JSON_SCHEMA_DIALECT = "https://spec.openapis.org/oas/3.1/dialect/base"
EXTENSION = "x-tfserving"  # machine-readable summary of the described versions

_REF = "#/components/schemas/"
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
# The integers json_tensor.cc's AddValueToTensor accepts per dtype: rapidjson's IsInt for the
# small types (the value is then cast, as TensorProto's int_val is), IsInt64, IsUint, IsUint64.
_REQUEST_INT_RANGE = {
    "DT_INT8": _INT32, "DT_INT16": _INT32, "DT_INT32": _INT32, "DT_UINT8": _INT32,
    "DT_INT64": _INT64, "DT_UINT32": (0, 2**32 - 1), "DT_UINT64": (0, 2**64 - 1),
}
# What TF Serving writes for an output of each integer dtype: the dtype's own range.
_RESPONSE_INT_RANGE = {
    "DT_INT8": (-(2**7), 2**7 - 1), "DT_INT16": (-(2**15), 2**15 - 1), "DT_INT32": _INT32,
    "DT_UINT8": (0, 2**8 - 1), "DT_UINT16": (0, 2**16 - 1), "DT_INT64": _INT64,
    "DT_UINT32": (0, 2**32 - 1), "DT_UINT64": (0, 2**64 - 1),
}
_FLOATS = ("DT_FLOAT", "DT_DOUBLE")
_FEEDABLE = frozenset(_FLOATS) | frozenset(_REQUEST_INT_RANGE) | {"DT_BOOL", "DT_STRING"}
# Standard alphabet, padding optional (absl::Base64Unescape, as json_tensor.cc decodes it).
B64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==?)?|[A-Za-z0-9+/]{3}=?)?$"
_STATES = ["UNKNOWN", "START", "LOADING", "AVAILABLE", "UNLOADING", "END"]
_METHOD_ACTIONS = {classification.CLASSIFY_METHOD: "classify",
                   classification.REGRESS_METHOD: "regress"}
_MAX_GENERATED_ELEMENTS = 64
# TF2's signature for the SavedModel's init op: listed by GetModelMetadata, never callable.
INIT_OP_KEY = "__saved_model_init_op"
GENERATED = "x-generated"  # marks an example made up from the declared shapes
_NONFINITE_NOTE = ("Non-finite values are the tokens NaN, Infinity and -Infinity (not standard "
                   "JSON; TF Serving reads and writes them).")


# ----------------------------------------------------------------------- naming


def _component_name(text: str) -> str:
    """``text`` made a valid component key (OpenAPI allows ``[A-Za-z0-9._-]``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text) or "_"


def model_path(model: str, version: int | None = None, label: str | None = None) -> str:
    """``/v1/models/{model}[/versions/{v}|/labels/{l}]``, percent-encoded."""
    path = f"/v1/models/{quote(model, safe='')}"
    if version is not None:
        path += f"/versions/{version}"
    elif label is not None:
        path += f"/labels/{quote(label, safe='')}"
    return path


def _dtype_name(dtype: str) -> str:
    return json_tensor.type_string(dtype)


def _shape_text(shape: tuple[int, ...] | None) -> str:
    if shape is None:
        return "unknown rank"
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


# ------------------------------------------------------------ shared components


def _leaf(dtype: str, *, request: bool, as_bytes: bool = False) -> dict[str, Any]:
    if dtype in _FLOATS:
        return {"type": "number", "description": f"{_dtype_name(dtype)}. {_NONFINITE_NOTE}"}
    ranges = _REQUEST_INT_RANGE if request else _RESPONSE_INT_RANGE
    if dtype in ranges:
        low, high = ranges[dtype]
        return {"type": "integer", "minimum": low, "maximum": high}
    if dtype == "DT_BOOL":
        return {"type": "boolean"}
    if dtype == "DT_STRING":
        if not request:
            return _ref("b64") if as_bytes else {"type": "string"}
        return {"anyOf": [{"type": "string", "description": "text, sent as UTF-8 bytes"},
                          _ref("b64")]}
    return {}


def _tensor_component(dtype: str, *, request: bool, as_bytes: bool = False) -> str:
    kind = "request" if request else "response"
    return f"tensor.{kind}.{_dtype_name(dtype)}" + (".bytes" if as_bytes else "")


def _add_tensor_components(components: dict[str, Any], dtype: str, *, request: bool,
                           as_bytes: bool = False) -> str:
    """Adds the recursive value schema of ``dtype`` (a leaf or a list of values); its name."""
    name = _tensor_component(dtype, request=request, as_bytes=as_bytes)
    if name not in components:
        if request:
            what = f"A {_dtype_name(dtype)} tensor as TF Serving reads it"
        else:
            what = f"A {_dtype_name(dtype)} tensor as TF Serving writes it"
        if as_bytes:
            what += " (an output whose alias ends in _bytes: base64 objects)"
        components[name] = {
            "description": f"{what}: a value, or a list of values nested once per dimension.",
            "anyOf": [_leaf(dtype, request=request, as_bytes=as_bytes),
                      {"type": "array", "items": _ref(name)}],
        }
    return name


def _shared_components() -> dict[str, Any]:
    scalar = {"anyOf": [{"type": "string"}, _ref("b64"), {"type": "number"},
                        {"type": "boolean"}]}
    return {
        "b64": {
            "type": "object",
            "description": "Binary data (a DT_STRING value), base64-encoded.",
            "required": ["b64"],
            "additionalProperties": False,
            "properties": {"b64": {"type": "string", "contentEncoding": "base64",
                                   "pattern": B64_PATTERN}},
        },
        "Error": {
            "type": "object",
            "description": "Every error: the HTTP status is TF Serving's for the error's code.",
            "required": ["error"],
            "additionalProperties": False,
            "properties": {"error": {"type": "string"}},
        },
        "ModelVersionStatus": {
            "type": "object",
            "required": ["version", "state", "status"],
            "properties": {
                "version": {"type": "string", "pattern": "^[0-9]+$"},
                "state": {"enum": _STATES},
                "status": {
                    "type": "object",
                    "required": ["error_code", "error_message"],
                    "properties": {"error_code": {"enum": sorted(set(CODE_NAMES.values()))},
                                   "error_message": {"type": "string"}},
                },
            },
        },
        "ModelStatus": {
            "type": "object",
            "description": "GetModelStatus: the state of each version, newest first.",
            "required": ["model_version_status"],
            "properties": {"model_version_status": {
                "type": "array", "minItems": 1, "items": _ref("ModelVersionStatus")}},
        },
        "TensorInfo": {
            "type": "object",
            "description": "A signature's input or output (TensorInfo proto as JSON).",
            "required": ["dtype"],
            "properties": {
                "name": {"type": "string"},
                "dtype": {"type": "string", "pattern": "^DT_[A-Z0-9_]+$"},
                "tensor_shape": {
                    "type": "object",
                    "properties": {
                        "dim": {"type": "array", "items": {
                            "type": "object",
                            "properties": {"size": {"type": "string",
                                                    "pattern": "^-?[0-9]+$"},
                                           "name": {"type": "string"}}}},
                        "unknown_rank": {"type": "boolean"},
                    },
                },
            },
        },
        "Example": {
            "type": "object",
            "description": (
                "A tf.Example as JSON: feature name -> value or list of values. Strings and "
                "{\"b64\": ...} are bytes, integers and booleans int64, other numbers float. "
                "The values of one feature must be of one kind (TF Serving rejects [1.5, 2]; "
                "JSON Schema cannot tell 2 from 2.0)."),
            "additionalProperties": {"anyOf": [scalar, {"type": "array", "items": scalar}]},
        },
        "ClassifyResponse": {
            "type": "object",
            "required": ["results"],
            "additionalProperties": False,
            "properties": {"results": {
                "type": "array",
                "description": "Per example, [label, score] per class.",
                "items": {"type": "array", "items": {
                    "type": "array", "prefixItems": [{"type": "string"}, {"type": "number"}],
                    "minItems": 2, "maxItems": 2}}}},
        },
        "RegressResponse": {
            "type": "object",
            "required": ["results"],
            "additionalProperties": False,
            "properties": {"results": {"type": "array", "items": {"type": "number"},
                                       "description": "One value per example."}},
        },
    }


# --------------------------------------------------------------- per signature


def feedable(sig: SignatureSpec) -> str | None:
    """Why ``sig`` cannot be called through the REST ``:predict`` API, or None if it can."""
    if not sig.inputs:
        return "it has no inputs"
    for alias, spec in sig.inputs.items():
        if not spec.dense:
            return f"input '{alias}' is not a dense tensor"
        if spec.dtype not in _FEEDABLE:
            return f"input '{alias}' has dtype {spec.dtype}, which the JSON API cannot feed"
    return None


def _tensor_schema(components: dict[str, Any], spec: TensorSpec, *, request: bool,
                   what: str) -> dict[str, Any]:
    as_bytes = not request and spec.dtype == "DT_STRING" and spec.name.endswith("_bytes")
    schema: dict[str, Any] = {
        "description": (f"{what} '{spec.name}': {_dtype_name(spec.dtype)} "
                        f"{_shape_text(spec.shape)} as the signature declares it"
                        + ("; not checked by TF Serving (the graph decides)" if request else "")
                        + "."),
        "x-tensor-dtype": spec.dtype,
    }
    if spec.shape is not None:
        schema["x-tensor-shape"] = list(spec.shape)
    if spec.dtype in _FEEDABLE or not request:
        schema["$ref"] = _REF + _add_tensor_components(
            components, spec.dtype, request=request, as_bytes=as_bytes)
    return schema


def _named(components: dict[str, Any], specs: Mapping[str, TensorSpec], *, request: bool,
           what: str, exact: bool) -> dict[str, Any]:
    return {
        "type": "object",
        "required": sorted(specs),
        "additionalProperties": not exact,
        "properties": {alias: _tensor_schema(components, spec, request=request, what=what)
                       for alias, spec in sorted(specs.items())},
    }


def _signature_names(key: str) -> dict[str, Any]:
    names = [key] if key != json_tensor.DEFAULT_SIGNATURE else ["", key]
    return {"enum": names, "description": "The signature to run"
            + (" (absent or empty: serving_default)." if len(names) > 1 else ".")}


def _predict_request(components: dict[str, Any], sig: SignatureSpec,
                     examples: list[Any]) -> dict[str, Any]:
    (only_alias, only_spec), *more = sorted(sig.inputs.items())
    named_row = _named(components, sig.inputs, request=True, what="input", exact=True)
    named_columnar = _named(components, sig.inputs, request=True, what="input", exact=False)
    row_text = "Row format: one entry per batch item, stacked on a new first dimension."
    if more:
        row: dict[str, Any] = {"type": "array", "minItems": 1, "items": named_row,
                               "description": row_text}
        columnar: dict[str, Any] = {**named_columnar,
                                    "description": "Columnar format: an object with every "
                                                   "input (other keys are ignored)."}
    else:
        bare = _tensor_schema(components, only_spec, request=True, what="input")
        # Item 0 decides between bare values and named objects; json_tensor.cc then
        # rejects an array that mixes them.
        row = {"description": f"{row_text} Every entry is a bare value, or every entry is "
                              f"{{\"{only_alias}\": value}}.",
               "anyOf": [{"type": "array", "minItems": 1, "items": bare},
                         {"type": "array", "minItems": 1, "items": named_row}]}
        columnar = {"description": f"Columnar format: the value of '{only_alias}', or an "
                                   "object that has it (other keys are ignored).",
                    "anyOf": [bare, named_columnar]}
    schema: dict[str, Any] = {
        "type": "object",
        "description": f"A :predict request for signature '{sig.key}', in row (instances) or "
                       "columnar (inputs) format. Unknown keys are ignored.",
        "properties": {"signature_name": _signature_names(sig.key)},
        "oneOf": [{"title": "row", "required": ["instances"],
                   "properties": {"instances": row}},
                  {"title": "columnar", "required": ["inputs"],
                   "properties": {"inputs": columnar}}],
    }
    if sig.key != json_tensor.DEFAULT_SIGNATURE:
        schema["required"] = ["signature_name"]
    if examples:
        schema["examples"] = examples
    return schema


def _predict_response(components: dict[str, Any], sig: SignatureSpec) -> dict[str, Any]:
    (_, only_spec), *more = sorted(sig.outputs.items())
    if more:
        value: dict[str, Any] = _named(components, sig.outputs, request=False, what="output",
                                       exact=True)
    else:
        value = _tensor_schema(components, only_spec, request=False, what="output")
    return {
        "description": f"The response to a :predict request for signature '{sig.key}'.",
        "oneOf": [
            {"title": "row", "type": "object", "required": ["predictions"],
             "additionalProperties": False,
             "properties": {"predictions": {
                 "type": "array", "items": value,
                 "description": "Row format: one entry per batch item."}}},
            {"title": "columnar", "type": "object", "required": ["outputs"],
             "additionalProperties": False,
             "properties": {"outputs": {**value, "description": "Columnar format."}}},
        ],
    }


def _example_request(components: dict[str, Any], sig: SignatureSpec,
                     action: str) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "description": f"A :{action} request for signature '{sig.key}': tf.Examples, each "
                       "merged over the optional context.",
        "required": ["examples"],
        "properties": {
            "signature_name": _signature_names(sig.key),
            "context": _ref("Example"),
            "examples": {"type": "array", "minItems": 1, "items": _ref("Example")},
        },
    }
    if sig.key != json_tensor.DEFAULT_SIGNATURE:
        schema["required"] = ["examples", "signature_name"]
    return schema


def examples_signature(signatures: Mapping[str, SignatureSpec], key: str, method: str) -> bool:
    """Whether signature ``key`` answers ``:classify`` / ``:regress`` (``method``): TF Serving's
    checks (:func:`tfserving.classification.example_signature`; not the method_name), and
    a DT_STRING input, which the serialized tf.Examples are fed to (Session::Run refuses
    any other dtype)."""
    try:
        alias, _ = classification.example_signature(signatures, key, method)
    except ServingError:
        return False
    return signatures[key].inputs[alias].dtype == "DT_STRING"


def _metadata_schema(model: str, version: int,
                     signatures: Mapping[str, SignatureSpec]) -> dict[str, Any]:
    sig_defs = {}
    for key, sig in signatures.items():
        tensors = {}
        for part in ("inputs", "outputs"):
            specs = getattr(sig, part)
            tensors[part] = {
                "type": "object", "required": sorted(specs),
                "properties": {alias: {"allOf": [_ref("TensorInfo")],
                                       "properties": {"dtype": {"const": spec.dtype}}}
                               for alias, spec in sorted(specs.items())}}
        sig_defs[key] = {"type": "object", "required": ["inputs", "outputs", "method_name"],
                         "properties": {"method_name": {"const": sig.method_name}, **tensors}}
    return {
        "type": "object",
        "description": "GetModelMetadata: the version's signature defs.",
        "required": ["model_spec", "metadata"],
        "properties": {
            "model_spec": {"type": "object", "required": ["name", "version"], "properties": {
                "name": {"const": model}, "version": {"const": str(version)},
                "signature_name": {"type": "string"}}},
            "metadata": {"type": "object", "required": ["signature_def"], "properties": {
                "signature_def": {"type": "object", "required": ["signature_def"], "properties": {
                    "signature_def": {"type": "object", "required": sorted(sig_defs),
                                      "properties": sig_defs}}}}},
        },
    }


# ------------------------------------------------------------------- examples


def request_inputs(request: Mapping[str, Any], sig: SignatureSpec) -> dict[str, Any]:
    """The JSON value of each input in a predict ``request`` for ``sig`` (row entries as lists).

    For finding values in a well-formed request (e.g. which inputs an example sends as
    ``{"b64": ...}``); it does not validate.
    """
    aliases = sorted(sig.inputs)
    if "instances" in request and isinstance(request["instances"], list):
        items = request["instances"]
        if items and all(_is_named(item) for item in items):
            return {a: [item[a] for item in items] for a in aliases if all(a in i for i in items)}
        return {aliases[0]: items} if len(aliases) == 1 else {}
    value = request.get("inputs")
    if _is_named(value):
        return {a: value[a] for a in aliases if a in value}
    return {aliases[0]: value} if len(aliases) == 1 and "inputs" in request else {}


def _is_named(value: Any) -> bool:
    return isinstance(value, dict) and not json_tensor.is_b64_object(value)


def _has_b64(value: Any) -> bool:
    if isinstance(value, dict):
        return json_tensor.is_b64_object(value)
    if isinstance(value, list):
        return any(_has_b64(v) for v in value)
    return False


def example_signature(request: Mapping[str, Any]) -> str:
    """The signature a request names (``serving_default`` when it names none)."""
    name = request.get("signature_name")
    return name if isinstance(name, str) and name else json_tensor.DEFAULT_SIGNATURE


def generated_request(sig: SignatureSpec) -> dict[str, Any] | None:
    """A columnar request of zeros (empty strings, false) shaped as ``sig`` declares.

    Unknown dimensions are 1, unknown ranks scalars; None when ``sig`` cannot be fed or the
    request would be large. Nothing guarantees the graph accepts it.
    """
    if feedable(sig):
        return None
    inputs = {}
    for alias, spec in sorted(sig.inputs.items()):
        shape = [1 if d < 0 else d for d in (spec.shape or ())]
        if math.prod(shape) > _MAX_GENERATED_ELEMENTS:
            return None
        zero: Any = ("" if spec.dtype == "DT_STRING" else False if spec.dtype == "DT_BOOL"
                     else 0.0 if spec.dtype in _FLOATS else 0)
        for size in reversed(shape):
            zero = [copy.deepcopy(zero) for _ in range(size)]
        inputs[alias] = zero
    body: dict[str, Any] = {"inputs": inputs}
    if sig.key != json_tensor.DEFAULT_SIGNATURE:
        body = {"signature_name": sig.key, **body}
    return body


# ------------------------------------------------------------------- documents


def document_examples(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The named example requests of a document's ``:predict`` operations (not generated).

    For building a document again (e.g. for other signatures) with the same examples.
    """
    found: dict[str, Any] = {}
    for path, item in doc.get("paths", {}).items():
        if not path.endswith(":predict"):
            continue
        for operation in item.values():
            content = operation.get("requestBody", {}).get("content", {})
            for name, example in content.get("application/json", {}).get(
                    "examples", {}).items():
                if not example.get(GENERATED) and "value" in example:
                    found.setdefault(name, example["value"])
    return found


_ERROR_RESPONSES = {
    "BadRequest": "Bad request: malformed JSON, a body that does not fit the signature, an "
                  "unknown signature, or inputs the graph rejected (TensorFlow's message).",
    "NotFound": "Unknown model, version or label.",
    "Error": "Any other error (413: body too large, 500, 503, ...).",
}


def _error_responses() -> dict[str, Any]:
    return {"400": {"$ref": "#/components/responses/BadRequest"},
            "404": {"$ref": "#/components/responses/NotFound"},
            "default": {"$ref": "#/components/responses/Error"}}


def _response_components() -> dict[str, Any]:
    return {name: {"description": text, "content": _json_body(_ref("Error"))}
            for name, text in _ERROR_RESPONSES.items()}


def _json_body(schema: dict[str, Any], examples: Mapping[str, Any] | None = None,
               ) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if examples:
        media["examples"] = dict(examples)
    return {"application/json": media}


def _signature_summary(sig: SignatureSpec, examples: Mapping[str, Any]) -> dict[str, Any]:
    sent_b64 = {alias for body in examples.values() if example_signature(body) == sig.key
                for alias, value in request_inputs(body, sig).items() if _has_b64(value)}

    def tensors(specs: Mapping[str, TensorSpec], inputs: bool) -> dict[str, Any]:
        return {alias: {"dtype": spec.dtype,
                        "shape": None if spec.shape is None else list(spec.shape),
                        "bytes": spec.dtype == "DT_STRING" and (
                            alias.endswith("_bytes") or (inputs and alias in sent_b64))}
                for alias, spec in sorted(specs.items())}

    why = feedable(sig)
    return {"method_name": sig.method_name, "predict": why is None,
            **({"not_callable": why} if why else {}),
            "inputs": tensors(sig.inputs, True), "outputs": tensors(sig.outputs, False)}


def version_document(model: str, version: int, signatures: Mapping[str, SignatureSpec], *,
                     examples: Mapping[str, Mapping[str, Any]] | None = None,
                     description: str = "") -> dict[str, Any]:
    """The OpenAPI 3.1 document of one model version.

    ``examples`` maps a name (e.g. the catalog's request file) to a predict request body;
    each becomes an example of its signature (by ``signature_name``). A signature without
    one gets a generated request of zeros (see :func:`generated_request`) where that is small.
    """
    examples = dict(examples or {})
    components = _shared_components()
    prefix = f"{_component_name(model)}.v{version}"
    base = model_path(model, version)
    op_prefix = f"{model}.v{version}"

    callable_sigs = {k: s for k, s in sorted(signatures.items()) if feedable(s) is None}
    media_examples: dict[str, Any] = {}
    predict_branches, response_branches = [], []
    used_names: set[str] = set()
    for key, sig in callable_sigs.items():
        mine = {name: body for name, body in examples.items() if example_signature(body) == key}
        if not mine:
            generated = generated_request(sig)
            if generated is not None:
                mine = {f"{key} (generated)": generated}
                media_examples[f"{key} (generated)"] = {
                    "summary": f"Zeros shaped as signature '{key}' declares (generated)",
                    "value": generated, GENERATED: True}
        for name, body in mine.items():
            if name in examples:
                media_examples[name] = {"summary": f"{name} (signature '{key}')", "value": body}
        sig_name = _component_name(key)
        while sig_name in used_names:
            sig_name += "_"
        used_names.add(sig_name)
        request_name = f"{prefix}.{sig_name}.PredictRequest"
        response_name = f"{prefix}.{sig_name}.PredictResponse"
        components[request_name] = _predict_request(components, sig, list(mine.values()))
        components[response_name] = _predict_response(components, sig)
        predict_branches.append(_ref(request_name))
        response_branches.append(_ref(response_name))

    components[f"{prefix}.Metadata"] = _metadata_schema(model, version, signatures)
    paths: dict[str, Any] = {
        base: {"get": {
            "operationId": f"{op_prefix}.status", "tags": [model],
            "summary": f"Status of {model} version {version}",
            "responses": {"200": {"description": "The version's state.",
                                  "content": _json_body(_ref("ModelStatus"))},
                          **_error_responses()}}},
        base + "/metadata": {"get": {
            "operationId": f"{op_prefix}.metadata", "tags": [model],
            "summary": f"Signature defs of {model} version {version}",
            "responses": {"200": {"description": "The version's signature defs.",
                                  "content": _json_body(_ref(f"{prefix}.Metadata"))},
                          **_error_responses()}}},
    }
    if callable_sigs:
        components[f"{prefix}.PredictRequest"] = {"oneOf": predict_branches}
        components[f"{prefix}.PredictResponse"] = {"anyOf": response_branches}
        paths[base + ":predict"] = {"post": {
            "operationId": f"{op_prefix}.predict", "tags": [model],
            "summary": f"Run a signature of {model} version {version}",
            "description": "Signatures: " + ", ".join(
                f"'{k}' ({_signature_text(s)})" for k, s in callable_sigs.items()) + ".",
            "requestBody": {"required": True, "content": _json_body(
                _ref(f"{prefix}.PredictRequest"), media_examples)},
            "responses": {"200": {"description": "The signature's outputs, in the request's "
                                                 "format.",
                                  "content": _json_body(_ref(f"{prefix}.PredictResponse"))},
                          **_error_responses()}}}
    for method, action in _METHOD_ACTIONS.items():
        sigs = {k: s for k, s in sorted(signatures.items())
                if examples_signature(signatures, k, method)}
        if not sigs:
            continue
        name = f"{prefix}.{action.capitalize()}Request"
        components[name] = {"oneOf": [_example_request(components, s, action)
                                       for s in sigs.values()]}
        response = "ClassifyResponse" if action == "classify" else "RegressResponse"
        paths[f"{base}:{action}"] = {"post": {
            "operationId": f"{op_prefix}.{action}", "tags": [model],
            "summary": f"{action.capitalize()} tf.Examples with {model} version {version}",
            "description": f"Signatures: {', '.join(repr(k) for k in sigs)}.",
            "requestBody": {"required": True, "content": _json_body(_ref(name))},
            "responses": {"200": {"description": "One result per example.",
                                  "content": _json_body(_ref(response))},
                          **_error_responses()}}}

    summary = {"model": model, "version": version,
               "signatures": {k: _signature_summary(s, examples)
                              for k, s in sorted(signatures.items()) if k != INIT_OP_KEY}}
    return {
        "openapi": OPENAPI_VERSION,
        "jsonSchemaDialect": JSON_SCHEMA_DIALECT,
        "info": {"title": f"{model} version {version}", "version": str(version),
                 "description": description or _DESCRIPTION},
        "tags": [{"name": model}],
        "paths": paths,
        "components": {"schemas": components, "responses": _response_components()},
        EXTENSION: {"models": {model: {"versions": {str(version): summary}}}},
    }


def _signature_text(sig: SignatureSpec) -> str:
    def part(specs: Mapping[str, TensorSpec]) -> str:
        return ", ".join(f"{a}: {_dtype_name(s.dtype)} {_shape_text(s.shape)}"
                         for a, s in sorted(specs.items()))
    return f"{part(sig.inputs)} -> {part(sig.outputs)}"


_DESCRIPTION = (
    "TensorFlow Serving's REST API, generated from the models' signatures. Request "
    "schemas accept exactly what TF Serving's JSON decoder accepts: dtype and nesting are "
    "checked, shapes are not (the graph decides; each input's declared shape is in its "
    "description and x-tensor-shape). JSON Schema cannot express equal lengths of sibling "
    "lists, nor tell 1.0 from 1: such requests pass the schema and get a 400. "
    + _NONFINITE_NOTE)


def merge_documents(documents: Iterable[Mapping[str, Any]], *,
                    default_versions: Mapping[str, int] | None = None,
                    labels: Mapping[str, Mapping[str, int]] | None = None,
                    title: str = "TensorFlow Serving models") -> dict[str, Any]:
    """One document for several model versions (e.g. every model a server has).

    ``default_versions`` maps a model to the version TF Serving routes its unversioned paths
    to (``/v1/models/{m}``, ``:predict``, ``/metadata``); ``labels`` maps a model to its
    ``{label: version}``, whose ``/labels/{l}`` paths are added the same way. A model's
    unversioned status path is added whenever it has a version.
    """
    default_versions = dict(default_versions or {})
    labels = {m: dict(v) for m, v in (labels or {}).items()}
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    tags: dict[str, Any] = {}
    models: dict[str, Any] = {}
    for doc in documents:
        for name, schema in doc.get("components", {}).get("schemas", {}).items():
            if name in schemas and schemas[name] != schema:
                raise ValueError(f"documents disagree on schema '{name}'")
            schemas[name] = schema
        for tag in doc.get("tags", []):
            tags.setdefault(tag["name"], tag)
        for path, item in doc.get("paths", {}).items():
            if path in paths and paths[path] != item:
                raise ValueError(f"documents disagree on path '{path}'")
            paths[path] = item
        for model, entry in doc.get(EXTENSION, {}).get("models", {}).items():
            models.setdefault(model, {"versions": {}})["versions"].update(entry["versions"])

    for model, entry in sorted(models.items()):
        versions = entry["versions"]
        default = default_versions.get(model)
        if default is not None:
            entry["default_version"] = default
        if labels.get(model):
            entry["labels"] = labels[model]
        aliases: list[tuple[str, int, str, str]] = []
        if default is not None and str(default) in versions:
            aliases.append((model_path(model), default, model, "the default version"))
        for label, version in sorted(labels.get(model, {}).items()):
            if str(version) in versions:
                aliases.append((model_path(model, label=label), version,
                                f"{model}.labels.{label}", f"label '{label}'"))
        for alias_base, version, op_prefix, via in aliases:
            base = model_path(model, version)
            for path, item in list(paths.items()):
                if path.startswith(base) and path[len(base):] in ("", "/metadata", ":predict",
                                                                 ":classify", ":regress"):
                    suffix = path[len(base):]
                    if alias_base == model_path(model) and suffix == "":
                        continue  # the unversioned status lists every version: below
                    paths[alias_base + suffix] = _renamed(
                        item, f"{op_prefix}.{_operation(suffix)}",
                        f" (as {via})")
        paths[model_path(model)] = {"get": {
            "operationId": f"{model}.status", "tags": [model],
            "summary": f"Status of every version of {model}",
            "responses": {"200": {"description": "Each version's state, newest first.",
                                  "content": _json_body(_ref("ModelStatus"))},
                          **_error_responses()}}}
    return {
        "openapi": OPENAPI_VERSION,
        "jsonSchemaDialect": JSON_SCHEMA_DIALECT,
        "info": {"title": title, "version": "1", "description": _DESCRIPTION},
        "tags": [tags[name] for name in sorted(tags)],
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": schemas, "responses": _response_components()},
        EXTENSION: {"models": models},
    }


def _operation(suffix: str) -> str:
    return {"": "status", "/metadata": "metadata"}.get(suffix, suffix.lstrip(":"))


def _renamed(item: Mapping[str, Any], operation_id: str, note: str) -> dict[str, Any]:
    item = copy.deepcopy(dict(item))
    for operation in item.values():
        operation["operationId"] = operation_id
        operation["summary"] = operation.get("summary", "") + note
    return item


# ------------------------------------------------------------------------- on disk

# Where a published version keeps its document and its blessing report (the pipeline's
# pusher writes both; TF Serving ignores assets.extra/ apart from warmup requests).
DOCUMENT_FILE = "assets.extra/openapi.json"
REPORT_FILE = "assets.extra/report.md"


def stored_examples(version_dir: str) -> dict[str, Any]:
    """The example requests of the version's stored document; {} without a readable one."""
    import tensorflow as tf

    path = f"{version_dir.rstrip('/')}/{DOCUMENT_FILE}"
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            return document_examples(json.loads(f.read()))
    except (tf.errors.OpError, ValueError, AttributeError):
        return {}


def read_version_document(model: str, version: int, version_dir: str) -> dict[str, Any]:
    """The document of a SavedModel on disk, with its stored examples (any filesystem)."""
    from tfserving.saved_model import read_meta_graph, signature_specs

    return version_document(model, version, signature_specs(read_meta_graph(version_dir)),
                            examples=stored_examples(version_dir))


def read_root_document(serving_root: str, model: str | None = None) -> dict[str, Any]:
    """The merged document of a serving root (or of one ``model``), as TF Serving serves it.

    Models and labels come from ``models.config`` (else every model directory); each
    model's unversioned paths go to the newest version its policy serves. Raises
    ValueError naming the model when ``model`` is not in the root.
    """
    import tensorflow as tf

    from tfserving import layout, model_config

    root = serving_root.rstrip("/")
    if not tf.io.gfile.isdir(root):
        raise ValueError(f"serving root {serving_root} is not a directory")
    proto = model_config.read(root)
    if proto is not None:
        configs = model_config.model_configs(proto)
    else:
        configs = [model_config.ModelConfig(name.rstrip("/")) for name in
                   sorted(tf.io.gfile.listdir(root)) if tf.io.gfile.isdir(f"{root}/{name}")
                   and layout.valid_model_name(name.rstrip("/"))]
    if model is not None:
        configs = [c for c in configs if c.name == model]
        if not configs:
            raise ValueError(f"model '{model}' is not in {serving_root} (see its "
                             f"{model_config.CONFIG_FILE} or model directories)")
    docs, defaults, labels = [], {}, {}
    for config in configs:
        model_dir = f"{root}/{config.name}"
        versions = {}
        if tf.io.gfile.isdir(model_dir):
            for name in tf.io.gfile.listdir(model_dir):
                number = layout.parse_version(name.rstrip("/"))
                path = f"{model_dir}/{name.rstrip('/')}"
                if number is not None and tf.io.gfile.exists(f"{path}/saved_model.pb"):
                    versions[number] = path
        served = config.policy.select(versions)
        docs.extend(read_version_document(config.name, v, versions[v]) for v in sorted(served))
        if served:
            defaults[config.name] = max(served)
        labels[config.name] = {k: v for k, v in config.labels.items() if v in served}
    return merge_documents(docs, default_versions=defaults, labels=labels)
