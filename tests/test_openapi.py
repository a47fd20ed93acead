"""OpenAPI documents (``tfserving/openapi.py``): valid, and true to what the server accepts.

- Every document is valid OpenAPI 3.1 (``openapi-spec-validator``).
- The catalog's example requests and the server's real responses validate against their
  schemas (``jsonschema``, 2020-12).
- Generated requests: the schema accepts a request exactly when TF Serving's decoder does.
  Checked against ``tfserving.json_tensor`` (fast, with hypothesis) and against a real server
  over the seed servables (``slow``; the MobileNet is the serving fixtures' stand-in).
  Only requests whose tensors the graph itself accepts are sent to the server
  (``fun_runif`` needs a scalar, the stand-in one JPEG): a shape the graph rejects is a
  400 no JSON Schema can predict, since TF Serving does not check request shapes (see
  the module doc of ``tfserving/openapi.py``).
- A client built from the document alone (paths, examples, ``x-tensor-*`` annotations)
  gets answers that validate against the document.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from tfserving import classification, json_tensor, openapi
from tfserving.json_tensor import SignatureSpec, TensorSpec
from tfserving.status import ServingError

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREDICT = json_tensor.PREDICT_METHOD
DEFAULT = json_tensor.DEFAULT_SIGNATURE
_DOC_URI = "urn:openapi-document"


def _sig(key: str, inputs: dict[str, tuple[str, Any]], outputs: dict[str, tuple[str, Any]],
         method: str = PREDICT) -> SignatureSpec:
    return SignatureSpec(key, method,
                         {a: TensorSpec(a, d, s) for a, (d, s) in inputs.items()},
                         {a: TensorSpec(a, d, s) for a, (d, s) in outputs.items()})


_INIT_OP = _sig(openapi.INIT_OP_KEY, {}, {openapi.INIT_OP_KEY: ("DT_INVALID", None)}, "")
# The seed servables' signatures as the serving fixtures' models declare them (checked in
# test_seed_signatures_match_the_models). The MobileNet stand-in keeps the blog's one-JPEG
# output [1]; the seed's own (output [-1]) is checked in tests/test_seed_mobilenet.py.
SEEDS: dict[str, dict[str, SignatureSpec]] = {
    "sum_two": {DEFAULT: _sig(DEFAULT, {"x": ("DT_FLOAT", (-1, 3))},
                              {"output_0": ("DT_FLOAT", (-1, 3))}), openapi.INIT_OP_KEY: _INIT_OP},
    "fun_runif": {DEFAULT: _sig(DEFAULT, {"N": ("DT_INT32", ())},
                                {"output_0": ("DT_FLOAT", (-1,))}), openapi.INIT_OP_KEY: _INIT_OP},
    "mobilenet_v2_test": {DEFAULT: _sig(DEFAULT, {"input_img": ("DT_STRING", None)},
                                        {"output_0": ("DT_STRING", (1,))}),
                          openapi.INIT_OP_KEY: _INIT_OP},
}
# More shapes of signature: several inputs and outputs, _bytes outputs, every feedable
# dtype, classify/regress (TF Serving's half_plus_two), inputs REST cannot feed, odd keys.
OTHERS: dict[str, dict[str, SignatureSpec]] = {
    "bytes_echo": {DEFAULT: _sig(DEFAULT, {"data": ("DT_STRING", (-1,)),
                                           "times": ("DT_INT32", (-1,))},
                                 {"echo_bytes": ("DT_STRING", (-1,)),
                                  "length": ("DT_INT32", (-1,))})},
    "half_plus_two": {
        DEFAULT: _sig(DEFAULT, {"x": ("DT_FLOAT", (-1,))}, {"y": ("DT_FLOAT", (-1,))}),
        "classify_x_to_y": _sig("classify_x_to_y", {"inputs": ("DT_STRING", (-1,))},
                                {"classes": ("DT_STRING", (-1, 2)),
                                 "scores": ("DT_FLOAT", (-1, 2))}, classification.CLASSIFY_METHOD),
        "regress_x_to_y": _sig("regress_x_to_y", {"inputs": ("DT_STRING", (-1,))},
                               {"outputs": ("DT_FLOAT", (-1, 1))}, classification.REGRESS_METHOD),
    },
    "dtypes": {
        "all types/v1": _sig("all types/v1", {
            "f32": ("DT_FLOAT", (-1,)), "f64": ("DT_DOUBLE", (-1,)), "i8": ("DT_INT8", (-1,)),
            "i16": ("DT_INT16", (-1,)), "i32": ("DT_INT32", (-1,)), "i64": ("DT_INT64", (-1,)),
            "u8": ("DT_UINT8", (-1,)), "u32": ("DT_UINT32", (-1,)),
            "u64": ("DT_UINT64", (-1,)), "b": ("DT_BOOL", (-1,)), "s": ("DT_STRING", (-1,))},
            {"out": ("DT_HALF", (-1,)), "u16": ("DT_UINT16", (-1,))}),
        "half": _sig("half", {"h": ("DT_HALF", (-1,))}, {"y": ("DT_FLOAT", (-1,))}),
        "sparse": SignatureSpec("sparse", PREDICT,
                                {"s": TensorSpec("s", "DT_FLOAT", (-1,), dense=False)},
                                {"y": TensorSpec("y", "DT_FLOAT", (-1,))}),
    },
}


def _catalog_examples() -> dict[str, dict[str, Any]]:
    from pipeline.catalog import load_catalog

    return {s.name: {os.path.basename(e.path): e.request for e in s.examples}
            for s in load_catalog().servables}


CATALOG_EXAMPLES = _catalog_examples()


@functools.cache
def seed_document(model: str, version: int = 1) -> dict[str, Any]:
    """The document of a seed servable, with the catalog's examples (shared: do not modify)."""
    return openapi.version_document(model, version, SEEDS[model],
                                    examples=CATALOG_EXAMPLES.get(model))


# ----------------------------------------------------------------- validation helpers


_VALIDATORS: dict[tuple[int, str], tuple[dict[str, Any], Draft202012Validator]] = {}


def schema_validator(doc: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    """A JSON Schema validator for ``schema`` (a ``$ref`` into ``doc``), resolving in ``doc``."""
    ref = schema["$ref"]
    cached = _VALIDATORS.get((id(doc), ref))
    if cached is None or cached[0] is not doc:
        registry = Registry().with_resource(_DOC_URI, DRAFT202012.create_resource(doc))
        cached = doc, Draft202012Validator({"$ref": _DOC_URI + ref}, registry=registry)
        _VALIDATORS[(id(doc), ref)] = cached
    return cached[1]


def _resolve(doc: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in obj and obj["$ref"].startswith("#/components/responses/"):
        obj = doc["components"]["responses"][obj["$ref"].rsplit("/", 1)[1]]
    return obj


def request_schema(doc: dict[str, Any], path: str) -> dict[str, Any]:
    return doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]


def response_schema(doc: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    responses = doc["paths"][path][method]["responses"]
    response = _resolve(doc, responses.get(str(status)) or responses["default"])
    return response["content"]["application/json"]["schema"]


def parse(body: bytes) -> Any:
    """A body as TF Serving's parser sees it (NaN/Infinity allowed); raises ValueError."""
    return json.loads(body)


def dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def schema_accepts(doc: dict[str, Any], path: str, body: bytes) -> tuple[bool, str]:
    try:
        value = parse(body)
    except ValueError as err:
        return False, f"not JSON: {err}"
    error = next(iter(schema_validator(doc, request_schema(doc, path)).iter_errors(value)), None)
    return error is None, "" if error is None else error.message[:200]


def codec_accepts(signatures: dict[str, SignatureSpec], body: bytes) -> tuple[bool, str]:
    """What the server's decoding does before the graph runs (see serving/http.py)."""
    try:
        doc = json_tensor.parse_json(body)
        key = json_tensor.signature_name(doc) or DEFAULT
        if key not in signatures:
            return False, f"unknown signature {key!r}"
        json_tensor.decode_predict(doc, signatures[key])
    except ServingError as err:
        return False, err.message[:200]
    return True, ""


# TF Serving behaviours the codec may not follow yet (the codec is being aligned with TF
# Serving separately): cases that depend on them are skipped until it does.
def _codec_rejects(sig: SignatureSpec, body: dict[str, Any]) -> bool:
    try:
        json_tensor.decode_predict(body, sig)
    except ServingError:
        return True
    return False


_HALF_PLUS_TWO = OTHERS["half_plus_two"][DEFAULT]
CODEC_LAG = {
    # json_tensor.cc does not compare request shapes with the signature (TF Serving's README
    # sends [1.0, 2.0, 5.0] to half_plus_two, whose x is [-1, 1]).
    "shape": _codec_rejects(_sig(DEFAULT, {"x": ("DT_FLOAT", (-1, 1))}, {}),
                            {"instances": [1.0, 2.0, 5.0]}),
    # AddValueToTensor takes any JSON number for a float (b/181409782).
    "float-range": _codec_rejects(_HALF_PLUS_TWO, {"inputs": [16777217, 1e39]}),
    # IsInt(): int8/int16/uint8 take any int32 (the value is cast).
    "int-range": _codec_rejects(OTHERS["dtypes"]["all types/v1"], {"inputs": {
        "f32": [], "f64": [], "i8": [200], "i16": [], "i32": [], "i64": [], "u8": [],
        "u32": [], "u64": [], "b": [], "s": []}}),
}


def skip_if_codec_lags(tags: set[str]) -> None:
    lagging = sorted(t for t in tags if CODEC_LAG.get(t))
    if lagging:
        pytest.skip(f"tfserving/json_tensor.py does not follow TF Serving yet on: {lagging}")


# -------------------------------------------------------------- generated requests


def _leaf_path(value: Any) -> list[int]:
    path = []
    while isinstance(value, list) and value:
        path.append(0)
        value = value[0]
    return path


def _set(value: Any, path: list[Any], new: Any) -> Any:
    if not path:
        return new
    value = copy.deepcopy(value)
    target = value
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return value


def forms(sig: SignatureSpec, values: dict[str, Any], *, row: bool = True,
          ) -> Iterator[tuple[str, dict[str, Any]]]:
    """The ways to send tensors ``values`` (columnar values per alias) to ``sig``."""
    aliases = sorted(sig.inputs)
    single = len(aliases) == 1
    named_sig = {} if sig.key == DEFAULT else {"signature_name": sig.key}
    if single:
        yield "columnar bare", {**named_sig, "inputs": values[aliases[0]]}
    yield "columnar named", {**named_sig, "inputs": dict(values)}
    lengths = {len(v) if isinstance(v, list) else None for v in values.values()}
    if row and None not in lengths and len(lengths) == 1 and lengths != {0}:
        (n,) = lengths
        if single:
            yield "row bare", {**named_sig, "instances": values[aliases[0]]}
        yield "row named", {**named_sig, "instances": [
            {a: values[a][i] for a in aliases} for i in range(n)]}


def _leaf_cases(dtype: str, graph_safe: bool) -> Iterator[tuple[str, Any, bool, set[str]]]:
    """(label, leaf, valid, tags): leaves to put in place of a valid one."""
    bad_common = [("string", "1"), ("true", True), ("null", None), ("object", {}),
                  ("b64", {"b64": "AAAA"})]
    if dtype == "DT_FLOAT":
        yield from ((f"float {v!r}", v, True, set()) for v in (
            1, -0.0, 1e30, float("nan"), float("inf"), float("-inf")))
        yield "float 2**31 (beyond float32's exact integers)", 2**31, True, {"float-range"}
        yield "float 1e39 (beyond float32: Infinity)", 1e39, True, {"float-range"}
        yield from ((f"float {n}", v, False, set()) for n, v in bad_common)
    elif dtype == "DT_INT32":
        yield from ((f"int {v!r}", v, True, set()) for v in ((3,) if graph_safe else (
            0, 2**31 - 1, -(2**31))))
        yield from ((f"int {v!r}", v, False, set()) for v in (
            1.5, 2**31, -(2**31) - 1, float("nan"), float("inf")))
        yield from ((f"int {n}", v, False, set()) for n, v in bad_common)
    elif dtype == "DT_STRING":
        if not graph_safe:
            yield "string text", "some text", True, set()
            yield "string empty b64", {"b64": ""}, True, set()
        yield from ((f"string {n}", v, False, set()) for n, v in (
            ("number", 5), ("true", True), ("null", None), ("b64 of 1 char", {"b64": "A"}),
            ("b64 number", {"b64": 5}), ("b64 and another key", {"b64": "AAAA", "x": 1}),
            ("b64 with a space", {"b64": "AA AA"}), ("url-safe b64", {"b64": "A-_A"}),
            ("empty object", {})))


def generated_requests(sig: SignatureSpec, values: dict[str, Any], *, graph_safe: bool,
                       row: bool = True) -> Iterator[tuple[str, bytes, bool, set[str]]]:
    """(label, body, schema and server should accept, tags) for signature ``sig``.

    ``values`` are columnar values the graph accepts. With ``graph_safe``, only requests
    whose tensors are those values (or the same shapes with other valid leaves) are valid.
    """
    (first, *_) = sorted(sig.inputs)
    for form, body in forms(sig, values, row=row):
        yield form, dumps(body), True, set()
        yield f"{form}, unknown top-level key", dumps({**body, "extra": [[1], 2]}), True, set()
        key = "inputs" if "inputs" in body else "instances"
        if form.endswith("named"):
            if key == "inputs":
                yield f"{form}, extra key", dumps({**body, key: {**body[key], "zz": 1}}), \
                    True, set()
                missing = {k: v for k, v in body[key].items() if k != first}
                yield f"{form}, missing input", dumps({**body, key: {**missing, "zz": 1}}), \
                    False, set()
            else:
                items = body[key]
                yield f"{form}, extra key", dumps(
                    {**body, key: [{**items[0], "zz": 1}, *items[1:]]}), False, set()
                yield f"{form}, missing input", dumps(
                    {**body, key: [{k: v for k, v in items[0].items() if k != first},
                                   *items[1:]]}), False, set()
                if len(sig.inputs) == 1:
                    mixed = [*items, items[0][first]]
                    yield f"{form}, mixed with a bare value", dumps({**body, key: mixed}), \
                        False, set()
        # One leaf replaced: the first leaf of the first input.
        if key == "inputs":
            base = [key] if form.endswith("bare") else [key, first]
            leaf_path = base + _leaf_path(body[key] if form.endswith("bare")
                                          else body[key][first])
        else:
            base = [key, 0] if form.endswith("bare") else [key, 0, first]
            item = body[key][0] if form.endswith("bare") else body[key][0][first]
            leaf_path = base + _leaf_path(item)
        for label, leaf, valid, tags in _leaf_cases(sig.inputs[first].dtype, graph_safe):
            yield f"{form}, leaf {label}", dumps(_set(body, leaf_path, leaf)), valid, tags

    columnar = {"inputs": dict(values)}
    if sig.key != DEFAULT:
        columnar["signature_name"] = sig.key
    names = ["", DEFAULT] if sig.key == DEFAULT else [sig.key]
    for name in names:
        yield f"signature_name {name!r}", dumps({**columnar, "signature_name": name}), True, \
            set()
    for name in ("nope", 5, None, openapi.INIT_OP_KEY):
        yield f"signature_name {name!r}", dumps({**columnar, "signature_name": name}), False, \
            set()
    row_value = [dict(values)]
    yield "both instances and inputs", dumps({**columnar, "instances": row_value}), False, set()
    yield "neither instances nor inputs", dumps(
        {k: v for k, v in columnar.items() if k != "inputs"}), False, set()
    yield "empty instances", dumps({"instances": []}), False, set()
    yield "instances not a list", dumps({"instances": dict(values)}), False, set()
    for label, text in (("a list", b"[]"), ("a string", b'"x"'), ("a number", b"1"),
                        ("null", b"null"), ("not JSON", b'{"inputs": '), ("empty", b"")):
        yield f"body is {label}", text, False, set()
    if not graph_safe:
        yield "empty columnar list", dumps({"inputs": {a: [] for a in sig.inputs}}), True, \
            {"shape"}


def gap_requests(sig: SignatureSpec) -> Iterator[tuple[str, bytes]]:
    """Requests the schema accepts and the server rejects: what JSON Schema cannot say."""
    (alias, spec), *_ = sorted(sig.inputs.items())
    leaf = {"DT_FLOAT": 1.0, "DT_INT32": 1, "DT_STRING": "a"}[spec.dtype]
    yield "ragged lists", dumps({"inputs": {alias: [[leaf, leaf], [leaf]]}})
    yield "mixed depth", dumps({"inputs": {alias: [[leaf], leaf]}})
    yield "rows of different shapes", dumps({"instances": [{alias: [leaf]},
                                                           {alias: [leaf, leaf]}]})
    if spec.dtype == "DT_INT32":
        yield "1.0 for an integer", dumps({"inputs": {alias: 1.0}})


def _jpeg_b64() -> str:
    return CATALOG_EXAMPLES["mobilenet_v2_test"]["mobilenet_v2_test.json"]["inputs"][0]["b64"]


def graph_values(model: str) -> tuple[dict[str, Any], bool]:
    """Columnar values the seed's graph accepts, and whether row format can feed them."""
    if model == "sum_two":
        return {"x": [[1.0, 2.0, 3.0], [4.0, 5.5, -6.0]]}, True
    if model == "fun_runif":
        return {"N": 3}, False  # a scalar: row format would feed shape [1]
    return {"input_img": [{"b64": _jpeg_b64()}]}, True


def seed_cases() -> Iterator[Any]:
    for model in SEEDS:
        values, row = graph_values(model)
        for label, body, valid, tags in generated_requests(SEEDS[model][DEFAULT], values,
                                                           graph_safe=False, row=row):
            yield pytest.param(model, body, valid, tags, id=f"{model}: {label}")


# ------------------------------------------------------------------------ fast tests


@pytest.mark.parametrize("model", [*SEEDS, *OTHERS])
def test_version_document_is_valid_openapi(model):
    signatures = SEEDS.get(model) or OTHERS[model]
    doc = openapi.version_document(model, 7, signatures,
                                   examples=CATALOG_EXAMPLES.get(model))
    validate_openapi(doc)
    assert doc["openapi"] == "3.1.0"
    paths = set(doc["paths"])
    base = f"/v1/models/{model}/versions/7"
    assert {base, base + "/metadata"} <= paths
    callable_keys = {k for k, s in signatures.items() if openapi.feedable(s) is None}
    assert (base + ":predict" in paths) == bool(callable_keys)
    methods = {s.method_name for s in signatures.values()}  # these fixtures: the same verdict
    assert (base + ":classify" in paths) == (classification.CLASSIFY_METHOD in methods)
    assert (base + ":regress" in paths) == (classification.REGRESS_METHOD in methods)
    summary = doc[openapi.EXTENSION]["models"][model]["versions"]["7"]["signatures"]
    assert openapi.INIT_OP_KEY not in summary
    assert {k for k, s in summary.items() if s["predict"]} == callable_keys


def test_merged_document_routes_default_version_and_labels():
    docs = [seed_document("sum_two", 1), seed_document("sum_two", 2),
            seed_document("fun_runif", 4),
            openapi.version_document("half_plus_two", 1, OTHERS["half_plus_two"])]
    merged = openapi.merge_documents(docs, default_versions={"sum_two": 2, "fun_runif": 4},
                                     labels={"sum_two": {"stable": 1, "canary": 2}})
    validate_openapi(merged)
    paths = merged["paths"]
    assert paths["/v1/models/sum_two:predict"]["post"]["operationId"] == "sum_two.predict"
    assert "v2.PredictRequest" in request_schema(merged, "/v1/models/sum_two:predict")["$ref"]
    assert "v1.PredictRequest" in request_schema(
        merged, "/v1/models/sum_two/labels/stable:predict")["$ref"]
    assert "/v1/models/sum_two/labels/canary/metadata" in paths
    # No default version given: only the versioned paths and the all-versions status.
    assert "/v1/models/half_plus_two:predict" not in paths
    assert "/v1/models/half_plus_two/versions/1:classify" in paths
    assert "/v1/models/half_plus_two" in paths
    operation_ids = [op["operationId"] for item in paths.values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids))
    models = merged[openapi.EXTENSION]["models"]
    assert models["sum_two"]["default_version"] == 2
    assert set(models["sum_two"]["versions"]) == {"1", "2"}
    assert models["sum_two"]["labels"] == {"stable": 1, "canary": 2}


def test_merge_refuses_documents_that_disagree():
    one = seed_document("sum_two", 1)
    other = openapi.version_document("sum_two", 1, SEEDS["fun_runif"])
    with pytest.raises(ValueError, match="disagree"):
        openapi.merge_documents([one, other])


@pytest.mark.parametrize("model", list(CATALOG_EXAMPLES))
def test_catalog_examples_are_the_documents_examples_and_valid(model):
    doc = seed_document(model)
    path = f"/v1/models/{model}/versions/1:predict"
    media = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    assert {k: v["value"] for k, v in media["examples"].items()} == CATALOG_EXAMPLES[model]
    validator = schema_validator(doc, request_schema(doc, path))
    for name, example in CATALOG_EXAMPLES[model].items():
        errors = [e.message for e in validator.iter_errors(example)]
        assert not errors, f"{model} example {name}: {errors}"
    sig_schema = doc["components"]["schemas"][f"{model}.v1.serving_default.PredictRequest"]
    assert sig_schema["examples"] == list(CATALOG_EXAMPLES[model].values())


def test_schemas_encode_dtypes_and_declared_shapes():
    doc = openapi.version_document("dtypes", 1, OTHERS["dtypes"])
    schemas = doc["components"]["schemas"]
    assert schemas["tensor.request.int8"]["anyOf"][0] == {
        "type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
    assert schemas["tensor.request.uint64"]["anyOf"][0]["maximum"] == 2**64 - 1
    assert schemas["tensor.response.uint16"]["anyOf"][0]["maximum"] == 2**16 - 1
    assert schemas["tensor.request.float"]["anyOf"][0]["type"] == "number"
    assert "NaN" in schemas["tensor.request.float"]["anyOf"][0]["description"]
    request = schemas["dtypes.v1.all_types_v1.PredictRequest"]
    columnar = request["oneOf"][1]["properties"]["inputs"]
    assert columnar["properties"]["i64"]["x-tensor-shape"] == [-1]
    assert columnar["properties"]["s"]["x-tensor-dtype"] == "DT_STRING"
    assert request["required"] == ["signature_name"]
    assert request["properties"]["signature_name"]["enum"] == ["all types/v1"]
    summary = doc[openapi.EXTENSION]["models"]["dtypes"]["versions"]["1"]["signatures"]
    assert summary["half"]["not_callable"] == (
        "input 'h' has dtype DT_HALF, which the JSON API cannot feed")
    assert summary["sparse"]["not_callable"] == "input 's' is not a dense tensor"
    echo = openapi.version_document("bytes_echo", 1, OTHERS["bytes_echo"])
    outputs = echo["components"]["schemas"]["bytes_echo.v1.serving_default.PredictResponse"]
    named = outputs["oneOf"][1]["properties"]["outputs"]
    assert named["properties"]["echo_bytes"]["$ref"].endswith("tensor.response.string.bytes")
    assert named["properties"]["length"]["$ref"].endswith("tensor.response.int32")


def test_generated_examples_for_signatures_without_one():
    doc = openapi.version_document("bytes_echo", 1, OTHERS["bytes_echo"])
    media = doc["paths"]["/v1/models/bytes_echo/versions/1:predict"]["post"]["requestBody"]
    examples = media["content"]["application/json"]["examples"]
    assert examples == {"serving_default (generated)": {
        "summary": "Zeros shaped as signature 'serving_default' declares (generated)",
        "value": {"inputs": {"data": [""], "times": [0]}}, openapi.GENERATED: True}}
    assert openapi.generated_request(_sig("big", {"x": ("DT_FLOAT", (-1, 224, 224, 3))},
                                          {"y": ("DT_FLOAT", (-1,))})) is None


def test_bytes_inputs_are_marked_from_the_examples():
    doc = seed_document("mobilenet_v2_test")
    sig = doc[openapi.EXTENSION]["models"]["mobilenet_v2_test"]["versions"]["1"]["signatures"]
    assert sig[DEFAULT]["inputs"]["input_img"] == {"dtype": "DT_STRING", "shape": None,
                                                   "bytes": True}
    assert sig[DEFAULT]["outputs"]["output_0"]["bytes"] is False


@pytest.mark.parametrize(("model", "body", "valid", "tags"), list(seed_cases()))
def test_schema_and_decoder_agree(model, body, valid, tags):
    skip_if_codec_lags(tags)
    doc = seed_document(model)
    path = f"/v1/models/{model}/versions/1:predict"
    by_schema, why = schema_accepts(doc, path, body)
    by_codec, message = codec_accepts(SEEDS[model], body)
    assert (by_schema, by_codec) == (valid, valid), (why, message)


@pytest.mark.parametrize("model", list(SEEDS))
def test_schema_gaps_are_what_the_module_documents(model):
    doc = seed_document(model)
    path = f"/v1/models/{model}/versions/1:predict"
    for label, body in gap_requests(SEEDS[model][DEFAULT]):
        assert schema_accepts(doc, path, body)[0], label
        assert not codec_accepts(SEEDS[model], body)[0], label


def test_several_inputs_and_dtypes_agree_with_the_decoder():
    for model, values in (("bytes_echo", {"data": [{"b64": "aGk="}, "text"], "times": [1, 2]}),
                          ("half_plus_two", {"x": [1.0, 2.0]})):
        doc = openapi.version_document(model, 1, OTHERS[model])
        path = f"/v1/models/{model}/versions/1:predict"
        sig = OTHERS[model][DEFAULT]
        for label, body, valid, tags in generated_requests(sig, values, graph_safe=False):
            if tags & {t for t, lag in CODEC_LAG.items() if lag}:
                continue
            verdicts = (schema_accepts(doc, path, body), codec_accepts(OTHERS[model], body))
            assert (verdicts[0][0], verdicts[1][0]) == (valid, valid), (model, label, verdicts)


_JSON_SCALARS = st.one_of(
    st.integers(-(2**65), 2**65), st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(), st.none(), st.text(max_size=3),
    st.sampled_from([{"b64": "AAAA"}, {"b64": "AAA"}, {"b64": "A"}, {"b64": "AA=="},
                     {"b64": 1}, {}, {"b64": "AAAA", "y": 1}, {"x": 1}]))


@st.composite
def _tensor(draw, declared: tuple[int, ...] | None, leaves: Any) -> Any:
    if declared is None or not CODEC_LAG["shape"]:
        shape = draw(st.lists(st.integers(0, 3), max_size=3))
    else:
        shape = [draw(st.integers(0, 3)) if d < 0 else d for d in declared]

    def build(dims: list[int]) -> Any:
        if not dims:
            return draw(leaves)
        return [build(dims[1:]) for _ in range(dims[0])]
    return build(shape)


def _leaf_strategy(dtype: str) -> Any:
    def fits(v: Any) -> bool:
        if dtype == "DT_FLOAT" and CODEC_LAG["float-range"] and type(v) in (int, float):
            return not (type(v) is int and abs(v) > 2**24) and not (
                type(v) is float and abs(v) != float("inf") and abs(v) > 3.4e38)
        if dtype == "DT_INT32" and type(v) is float and v.is_integer():
            return False  # 1.0: a documented gap
        return True
    return _JSON_SCALARS.filter(fits)


@pytest.mark.parametrize("model", list(SEEDS))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_requests_schema_and_decoder_agree(model, data):
    sig = SEEDS[model][DEFAULT]
    (alias, spec), = sig.inputs.items()
    value = data.draw(_tensor(spec.shape, _leaf_strategy(spec.dtype)))
    wrap = data.draw(st.sampled_from(["bare", "named", "row", "row named"]))
    if wrap.startswith("row"):
        if not isinstance(value, list) or (CODEC_LAG["shape"] and spec.shape == ()):
            return
        body = {"instances": value if wrap == "row" else [{alias: v} for v in value]}
    else:
        body = {"inputs": value if wrap == "bare" else {alias: value}}
    raw = dumps(body)
    doc = seed_document(model)
    by_schema, why = schema_accepts(doc, f"/v1/models/{model}/versions/1:predict", raw)
    by_codec, message = codec_accepts(SEEDS[model], raw)
    if by_schema and not by_codec and ("unexpected size" in message or "level" in message
                                       or "Expecting" in message):
        return  # ragged or mixed depth: a documented gap
    assert by_schema == by_codec, (raw[:300], why, message)


@pytest.mark.parametrize(("action", "key"), [("classify", "classify_x_to_y"),
                                             ("regress", "regress_x_to_y")])
def test_classify_and_regress_requests(action, key):
    doc = openapi.version_document("half_plus_two", 1, OTHERS["half_plus_two"])
    path = f"/v1/models/half_plus_two/versions/1:{action}"
    validator = schema_validator(doc, request_schema(doc, path))
    good = [{"signature_name": key, "examples": [{"x": 1.0}, {"x": [2.0, 3.5]}]},
            {"signature_name": key, "context": {"c": "a"},
             "examples": [{"x": 1, "y": {"b64": "aGk="}, "z": True, "w": []}]}]
    bad = [{"examples": [{"x": 1.0}]},  # serving_default is a predict signature
           {"signature_name": key, "examples": []},
           {"signature_name": key, "examples": {"x": 1.0}},
           {"signature_name": key, "examples": [[1.0]]},
           {"signature_name": key, "examples": [{"x": None}]},
           {"signature_name": key, "examples": [{"x": [[1.0]]}]},
           {"signature_name": key, "examples": [{"x": {"y": 1}}]},
           {"signature_name": key, "context": 5, "examples": [{"x": 1.0}]}]
    sigs = OTHERS["half_plus_two"]
    method = classification.CLASSIFY_METHOD if action == "classify" else \
        classification.REGRESS_METHOD
    for body in good:
        assert validator.is_valid(body), body
        assert classification.example_signature(sigs, key, method)[0] == "inputs"
        assert json_tensor.decode_examples(body, action)
    for body in bad:
        assert not validator.is_valid(body), body
        with pytest.raises(ServingError):
            json_tensor.decode_examples(body, action)
            classification.example_signature(sigs, body.get("signature_name") or DEFAULT,
                                             method)


def test_classify_and_regress_paths_follow_tf_servings_checks():
    """TF Serving classifies/regresses with any signature its checks accept, whatever its
    method_name (classifier.cc / regressor.cc: the method_name check is off by default);
    examples are fed as serialized strings, so the input must be DT_STRING."""
    strings = {"inputs": ("DT_STRING", (-1,))}
    sigs = {"regress_like": _sig("regress_like", strings, {"outputs": ("DT_FLOAT", (-1,))}),
            "scores_like": _sig("scores_like", strings, {"scores": ("DT_FLOAT", (-1, 3))}),
            "float_inputs": _sig("float_inputs", {"inputs": ("DT_FLOAT", (-1,))},
                                 {"outputs": ("DT_FLOAT", (-1,))}, classification.REGRESS_METHOD)}
    doc = openapi.version_document("m", 1, sigs)
    validate_openapi(doc)
    paths = doc["paths"]
    assert "regress_like" in paths["/v1/models/m/versions/1:regress"]["post"]["description"]
    assert "float_inputs" not in paths["/v1/models/m/versions/1:regress"]["post"]["description"]
    assert paths["/v1/models/m/versions/1:classify"]["post"]["description"] == (
        "Signatures: 'scores_like'.")


def test_response_schemas_accept_what_the_encoder_writes():
    import numpy as np

    for model, outputs in (
            ("sum_two", {"output_0": np.array([[3, np.nan, np.inf]], np.float32)}),
            ("mobilenet_v2_test", {"output_0": np.array([b"tabby"], object)}),
            ("bytes_echo", {"echo_bytes": np.array([b"\xff\x00"], object),
                            "length": np.array([2], np.int32)})):
        signatures = SEEDS.get(model) or OTHERS[model]
        doc = openapi.version_document(model, 1, signatures)
        validator = schema_validator(doc, response_schema(
            doc, f"/v1/models/{model}/versions/1:predict", "post", 200))
        for fmt in (json_tensor.ROW, json_tensor.COLUMNAR):
            body = parse(json_tensor.encode_predict(outputs, fmt))
            assert validator.is_valid(body), (model, fmt, body)
            assert not validator.is_valid({"predictions": body, "outputs": body})


# ------------------------------------------------------------------ server tests


@pytest.fixture(scope="module")
def seed_root(tmp_path_factory) -> str:
    """A serving root with the seed servables (version 1 each) published as the pipeline's
    pusher publishes them: with ``assets.extra/openapi.json`` (the catalog's examples)."""
    from components.versioned_pusher.extras import version_files
    from components.versioned_pusher.publish import publish
    from tests import serving_fixtures as sf

    root = str(tmp_path_factory.mktemp("openapi") / "serving")
    for model, source in sf.model_store(*SEEDS).items():
        publish(source, root, model, fingerprint=model, config_base_path="",
                extra_files=lambda version, m=model, s=source: version_files(
                    s, m, version, examples=CATALOG_EXAMPLES[m]))
    return root


@pytest.fixture(scope="module")
def seed_server(seed_root):
    """A real server (``python -m serving``) over :func:`seed_root`."""
    from tests import serving_fixtures as sf

    with sf.running_server(seed_root, "sum_two") as server:
        for model in SEEDS:
            server.wait_ready(model)
        yield server


@pytest.fixture(scope="module")
def http(seed_server):
    import httpx

    with httpx.Client(base_url=seed_server.url, timeout=60) as client:
        yield client


@pytest.mark.slow
def test_seed_signatures_match_the_models():
    from tests import serving_fixtures as sf
    from tfserving.saved_model import read_meta_graph, signature_specs

    for model, path in sf.model_store(*SEEDS).items():
        real = signature_specs(read_meta_graph(path))
        assert set(real) == set(SEEDS[model]), model
        for key, sig in real.items():
            mine = SEEDS[model][key]
            assert (sig.method_name, dict(sig.inputs), dict(sig.outputs)) == (
                mine.method_name, dict(mine.inputs), dict(mine.outputs)), (model, key)


@pytest.mark.slow
@pytest.mark.parametrize("model", list(SEEDS))
def test_server_accepts_exactly_what_the_schema_accepts(http, model):
    doc = seed_document(model)
    path = f"/v1/models/{model}/versions/1:predict"
    ok_validator = schema_validator(doc, response_schema(doc, path, "post", 200))
    error_validator = schema_validator(doc, response_schema(doc, path, "post", 400))
    values, row = graph_values(model)
    cases = list(generated_requests(SEEDS[model][DEFAULT], values, graph_safe=True, row=row))
    cases += [(name, dumps(body), True, set()) for name, body in CATALOG_EXAMPLES[model].items()]
    disagreements, skipped, sent = [], [], 0
    for label, body, valid, tags in cases:
        if any(CODEC_LAG.get(t) for t in tags):
            skipped.append(label)
            continue
        by_schema, why = schema_accepts(doc, path, body)
        response = http.post(path, content=body)
        sent += 1
        answer = parse(response.content)
        if by_schema != valid or (response.status_code == 200) != valid:
            disagreements.append((label, valid, by_schema, why, response.status_code,
                                  response.text[:200]))
        elif valid:
            assert ok_validator.is_valid(answer), (label, answer)
        else:
            assert response.status_code == 400, (label, response.text)
            assert error_validator.is_valid(answer), (label, answer)
    assert sent >= 25
    assert not disagreements, "\n".join(map(str, disagreements))
    if skipped:
        pytest.skip(f"{sent} requests agree; {len(skipped)} not sent ({CODEC_LAG}): {skipped}")


@pytest.mark.slow
def test_real_status_metadata_and_error_responses_validate(http):
    docs = {m: seed_document(m) for m in SEEDS}
    for model, doc in docs.items():
        base = f"/v1/models/{model}/versions/1"
        for path in (base, base + "/metadata"):
            response = http.get(path)
            assert response.status_code == 200, response.text
            validator = schema_validator(doc, response_schema(doc, path, "get", 200))
            errors = [e.message for e in validator.iter_errors(response.json())]
            assert not errors, (path, errors)
    doc = docs["sum_two"]
    for path in ("/v1/models/nope/versions/1", "/v1/models/sum_two/versions/9"):
        response = http.get(path)
        assert response.status_code == 404
        assert schema_validator(doc, response_schema(
            doc, "/v1/models/sum_two/versions/1", "get", 404)).is_valid(response.json())


class DocumentClient:
    """A client made from an OpenAPI document alone: operations by ``operationId``.

    Each call validates the request body against the operation's schema before sending
    it, and the answer against the response the document declares for its status.
    """

    def __init__(self, doc: dict[str, Any], http: Any):
        self.doc = doc
        self.http = http
        self.operations = {op["operationId"]: (path, method, op)
                           for path, item in doc["paths"].items()
                           for method, op in item.items()}

    def examples(self, operation_id: str) -> dict[str, Any]:
        _, _, op = self.operations[operation_id]
        content = op.get("requestBody", {}).get("content", {}).get("application/json", {})
        return {name: example["value"] for name, example in content.get("examples", {}).items()}

    def call(self, operation_id: str, body: Any = None) -> tuple[int, Any]:
        path, method, op = self.operations[operation_id]
        if body is not None:
            schema = op["requestBody"]["content"]["application/json"]["schema"]
            errors = [e.message for e in schema_validator(self.doc, schema).iter_errors(body)]
            if errors:
                raise ValueError(f"{operation_id}: the document rejects the request: {errors}")
        response = self.http.request(method.upper(), path, content=None if body is None
                                     else dumps(body))
        answer = parse(response.content)
        schema = response_schema(self.doc, path, method, response.status_code)
        errors = [e.message for e in schema_validator(self.doc, schema).iter_errors(answer)]
        assert not errors, (operation_id, response.status_code, errors)
        return response.status_code, answer


@pytest.mark.slow
def test_generated_client_calls_every_operation(http):
    doc = http.get("/openapi.json").json()
    validate_openapi(doc)
    client = DocumentClient(doc, http)
    called = 0
    for operation_id, (_, method, _) in client.operations.items():
        if method == "get":
            status, _ = client.call(operation_id)
            assert status == 200, operation_id
            called += 1
        for name, body in client.examples(operation_id).items():
            status, answer = client.call(operation_id, body)
            assert status == 200, (operation_id, name, answer)
            called += 1
    # Per model 4 GETs (status and metadata, versioned and not) and each example sent to
    # :predict twice (versioned and not): sum_two has 2 examples, the others 1.
    assert called == 3 * 4 + 2 * (2 + 1 + 1)
    with pytest.raises(ValueError, match="rejects"):
        client.call("sum_two.predict", {"instances": [["1", 2, 3]]})


@pytest.mark.slow
def test_server_pipeline_and_command_line_documents_agree(http, seed_root):
    """/openapi.json (from the loaded versions), the pusher's files and `runner.py openapi`."""
    import subprocess
    import sys

    served = http.get("/openapi.json").json()
    expected = openapi.merge_documents([seed_document(m) for m in SEEDS],
                                       default_versions={m: 1 for m in SEEDS})
    assert served == json.loads(json.dumps(expected))
    for model in SEEDS:
        with open(os.path.join(seed_root, model, "1", openapi.DOCUMENT_FILE), "rb") as f:
            stored = json.load(f)
        validate_openapi(stored)
        assert stored == json.loads(json.dumps(seed_document(model)))
        assert http.get(f"/v1/models/{model}/versions/1/openapi.json").json() == stored
    printed = subprocess.run(
        [sys.executable, "runner.py", "openapi", "--serving-dir", seed_root],
        cwd=PROJECT, capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(printed.stdout) == served
    one = subprocess.run(
        [sys.executable, "runner.py", "openapi", "--serving-dir", seed_root, "--model", "nope"],
        cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert one.returncode == 2 and "model 'nope' is not in" in one.stderr


@pytest.mark.slow
def test_pusher_files_and_root_document_on_an_object_store():
    """``ram://`` stands in for gs:// and s3://: same tf.io.gfile paths, no rename."""
    import tensorflow as tf

    from components.versioned_pusher.extras import version_files
    from components.versioned_pusher.publish import publish
    from tests import serving_fixtures as sf

    root = f"ram://openapi-test-{os.getpid()}/serving"
    source = sf.model_store("sum_two")["sum_two"]
    report = f"ram://openapi-test-{os.getpid()}/blessing/report.md"
    with tf.io.gfile.GFile(report, "wb") as f:
        f.write(b"# Servable `sum_two`: BLESSED\n")
    try:
        publish(source, root, "sum_two", fingerprint="x", config_base_path="",
                extra_files=lambda version: version_files(
                    source, "sum_two", version, examples=CATALOG_EXAMPLES["sum_two"],
                    report_path=report))
        with tf.io.gfile.GFile(f"{root}/sum_two/1/{openapi.REPORT_FILE}", "rb") as f:
            assert f.read().startswith(b"# Servable `sum_two`: BLESSED")
        doc = openapi.read_root_document(root)
        validate_openapi(doc)
        assert doc == json.loads(json.dumps(openapi.merge_documents(
            [seed_document("sum_two")], default_versions={"sum_two": 1})))
        with pytest.raises(ValueError, match="model 'nope' is not in"):
            openapi.read_root_document(root, model="nope")
    finally:
        with contextlib.suppress(tf.errors.NotFoundError):  # ram:// directories are implicit
            tf.io.gfile.rmtree(f"ram://openapi-test-{os.getpid()}")
