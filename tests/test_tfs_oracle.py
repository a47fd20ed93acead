"""TF Serving's own REST test cases, replayed over HTTP against this server.

Every HTTP-expressible case of

- ``tensorflow_serving/util/json_tensor_test.cc`` (JSON <-> tensors),
- ``tensorflow_serving/model_servers/http_rest_api_handler_test.cc``,
- ``tensorflow_serving/model_servers/http_rest_api_util_test.cc`` (paths),
- the REST tests of ``tensorflow_serving/model_servers/tensorflow_model_server_test.py``

is a row of :data:`CASES`, citing its source test, sent by a real client to a
real server (``python -m serving`` on 127.0.0.1, through
``tests.serving_fixtures``). The models are those the tests assume: a TF1
``half_plus_two`` as TF Serving's ``saved_model_half_plus_two.py`` writes it
(``tests.tfs_testdata``, served as ``saved_model_half_plus_two_2_versions`` at
version 123 with label ``Version_Label`` and as ``default``), and echo models
whose signatures are exactly the C++ tests' TensorInfo maps
(``tests.tfs_echo_models``).

Success cases compare values as the upstream test does (JSON equality as
rapidjson's ``Document ==``; ``CompareJsonAllValuesAsStrings`` compares the
text of every number; ``EqualsProto`` on a tensor compares its values at the
tensor's dtype; tf.Examples as protos). Error cases expect TF Serving's HTTP
status (``http_server.cc`` ToHTTPStatusCode) and its message substring.

Cases over HTTP where the C++ test checks an internal value: the request's
tensor is echoed back by the model; a non-null-terminated buffer is a body
with bytes after the JSON document (TF Serving stops parsing after it).
Not expressible over HTTP, so not here: ``kPathRegex`` (internal dispatch
table), ``JsonFromResultErrors`` (a model cannot return zero results for
a non-empty ``examples``: the batch-size check comes first) and
``MakeJsonFromTensors.StatusOK`` (no body on success is not an HTTP response).
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import math
import shutil
from typing import Any

import numpy as np
import pytest

from tests import serving_fixtures as sf
from tests.tfs_echo_models import KINDS as ECHO_KINDS
from tests.tfs_echo_models import echo_models

pytestmark = pytest.mark.slow

HPT = "saved_model_half_plus_two_2_versions"  # http_rest_api_handler_test.cc kTestModelName
LABEL = "Version_Label"
RESERVED = "%21%23%24%25%26%27%28%29%2A%2B%2C%2F%3A%3B%3D%3F%40%5B%5D"
RESERVED_DECODED = "!#$%&'()*+,/:;=?@[]"
UINT64_MAX = str(2**64 - 1)
JT = "json_tensor_test.cc"
HANDLER = "http_rest_api_handler_test.cc"
UTIL = "http_rest_api_util_test.cc"
SERVER_PY = "tensorflow_model_server_test.py"


@dataclasses.dataclass(frozen=True)
class Case:
    """One request and what TF Serving answers to it."""

    source: str  # "<upstream file> <TestName>"
    method: str
    path: str
    body: bytes | None
    status: int
    expect: Any = None  # the body (success), compared as `compare` says
    error: str | None = None  # a substring of the error message
    compare: str = "json"  # json | strings | float32 | examples | metadata | text


def body(value: Any) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value).encode()


def predict(source: str, model: str, request: Any, status: int = 200, expect: Any = None,
            error: str | None = None, compare: str = "json", suffix: str = "") -> Case:
    return Case(source, "POST", f"/v1/models/{model}{suffix}:predict", body(request), status,
                expect, error, compare)


def call(source: str, verb: str, model: str, request: Any, status: int = 200,
         expect: Any = None, error: str | None = None, compare: str = "json",
         suffix: str = "") -> Case:
    return Case(source, "POST", f"/v1/models/{model}{suffix}:{verb}", body(request), status,
                expect, error, compare)


def get(source: str, path: str, status: int = 200, expect: Any = None, error: str | None = None,
        compare: str = "json") -> Case:
    return Case(source, "GET", path, None, status, expect, error, compare)


def raw_post(source: str, path: str, status: int, error: str) -> Case:
    return Case(source, "POST", path, b"", status, None, error)


NAN = float("nan")
INF = float("inf")
HPT_STATUS = {"model_version_status": [{"version": "123", "state": "AVAILABLE", "status": {
    "error_code": "OK", "error_message": ""}}]}
INT_3D = [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]]
MULTI4_REQUEST = b"""{"instances": [
    {"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"],
     "float_tensor": [1.0, NaN], "dbl_tensor": [NaN]},
    {"int_tensor": [[7,8],[9,0],[1,2]], "str_tensor": ["baz", "bat"],
     "float_tensor": [2.0, Infinity], "dbl_tensor": [2.0]}]}"""
MULTI5_ITEMS = [
    {"double_scalar_tensor": 8.0, "float_tensor": [1.0], "int_tensor": [[1, 2], [3, 4], [5, 6]],
     "str_tensor": ["foo", "bar"], "str_tensor_bytes": ["hello", "world"]},
    {"double_scalar_tensor": 9.0, "float_tensor": [2.0], "int_tensor": [[7, 8], [9, 0], [1, 2]],
     "str_tensor": ["baz", "bat"], "str_tensor_bytes": ["tf", "serving"]}]
MULTI5_BYTES = [[{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}], [{"b64": "dGY="},
                                                            {"b64": "c2VydmluZw=="}]]
# ClassifyRegressRequestTest requests and the Examples they must become (feature -> values).
NO_CONTEXT = {"examples": [{"names": ["foo", "bar"], "ratings": [8.0, 9.0], "age": 20},
                           {"names": ["baz"], "ratings": 6.0}]}
NO_CONTEXT_EXAMPLES = [
    {"names": ("bytes", [b"foo", b"bar"]), "ratings": ("float", [8.0, 9.0]),
     "age": ("int64", [20])},
    {"names": ("bytes", [b"baz"]), "ratings": ("float", [6.0])}]
WITH_CONTEXT = b"""{
  "signature_name": "custom_signture",
  "context": {"query": "pizza", "location": ["sfo"]},
  "examples": [
    {"names": ["foo", "bar"], "ratings": [8.0, 9.0, NaN, Infinity], "age": 20},
    {"names": ["baz", {"b64": "aGVsbG8="}], "ratings": 6.0, "intboolmix": [1, true, false]},
    {"names": "bar", "ratings": -Infinity}]}"""
_CONTEXT = {"query": ("bytes", [b"pizza"]), "location": ("bytes", [b"sfo"])}
WITH_CONTEXT_EXAMPLES = [  # each example merged over the context, as TF Serving feeds them
    {**_CONTEXT, "names": ("bytes", [b"foo", b"bar"]), "ratings": ("float", [8, 9, NAN, INF]),
     "age": ("int64", [20])},
    {**_CONTEXT, "names": ("bytes", [b"baz", b"hello"]), "ratings": ("float", [6.0]),
     "intboolmix": ("int64", [1, 1, 0])},
    {**_CONTEXT, "names": ("bytes", [b"bar"]), "ratings": ("float", [-INF])}]
EXAMPLE_JSON_ERRORS = [  # ClassifyRegressRequestTest JsonErrors: request, message
    (b'{"signature_name": ["hello"], "examples": [{"names": ["foo", "bar"]}]}',
     "'signature_name' key must be a string"),
    (b'{"context": [{"names": ["foo", "bar"]}]}', "Example must be JSON object"),
    (b'{"examples": {"names": ["foo", "bar"]}}', "list/array"),
    (b'{"examples": [[{"names": ["foo", "bar"]}]]}', "Example must be JSON object"),
    (b'{"examples": [{"names": [10, null]}]}',
     "names has element with unexpected JSON type: Null"),
    (b'{"examples": [{"names": [10, 10.0]}]}', "feature: names expecting type: int64"),
    (b'{"examples": [{"names": [10, {"test": 10}]}]}',
     "names has element with unexpected JSON type: Object"),
    (b'{"examples": [{"names": [[10], 20]}]}',
     "names has element with unexpected JSON type: Array"),
    (b'{"examples": [{"names": [20, 18446744073709551603]}]}', "Only int64_t is supported"),
]
DEEP = 500_000  # json_tensor_test.cc DeeplyNested*: 500000 levels


CASES: list[Case] = [
    # ------------------------------------------------ json_tensor_test.cc: requests -> tensors
    predict(f"{JT} SingleUnnamedTensor", "default_int32",
            {"instances": [[1, 2], [3, 4], [5, 6]]},
            expect={"predictions": [[1, 2], [3, 4], [5, 6]]}),
    predict(f"{JT} DeeplyNestedWellFormed", "default_int32",
            b'{"instances":[1], "nested":' + b"[" * DEEP + b"]" * DEEP + b"}",
            expect={"predictions": [1]}),
    predict(f"{JT} DeeplyNestedMalformed", "default_int32",
            b'{"signature_name":' + b"[" * DEEP + b"]" * DEEP + b"}",
            400, error="key must be a string value"),
    predict(f"{JT} MixedInputForFloatTensor", "default_float",
            b'{"instances": [1, 2.0, 3, 4, 5.003, 0.007, 0.0]}',
            expect={"predictions": [1, 2.0, 3, 4, 5.003, 0.007, 0.0]}, compare="float32"),
    predict(f"{JT} MixedInputForDoubleTensor", "default_double",
            b'{"instances": [1.0, 2, 3, 4, 0.662, 0, 0.0]}',
            expect={"predictions": [1.0, 2, 3, 4, 0.662, 0, 0.0]}),
    predict(f"{JT} FloatTensorWithPrecisionLoss", "default_float",
            b'{"instances": [1435774380]}',
            expect={"predictions": [1435774380]}, compare="float32"),
    predict(f"{JT} FloatTensorWithPrecisionLoss (decimal point)", "default_float",
            b'{"instances": [1435774380.0]}',
            expect={"predictions": [1435774380.0]}, compare="float32"),
    # absl::Substitute("$0", DBL_MAX) writes six significant digits: 1.79769e+308.
    predict(f"{JT} FloatTensorThatExceedsMaxReturnsInf", "default_float",
            b'{ "instances": [1.79769e+308] }', expect={"predictions": [INF]}, compare="float32"),
    predict(f"{JT} FloatTensorThatExceedsMaxReturnsInf (minimum)", "default_float",
            b'{ "instances": [-1.79769e+308] }', expect={"predictions": [-INF]},
            compare="float32"),
    predict(f"{JT} FloatTensorThatExceedsMinReturnsZero", "default_float",
            b'{ "instances": [2.22507e-308] }', expect={"predictions": [0.0]},
            compare="float32"),
    predict(f"{JT} FloatTensorThatExceedsMinReturnsZero (negative)", "default_float",
            b'{ "instances": [-2.22507e-308] }', expect={"predictions": [-0.0]},
            compare="float32"),
    predict(f"{JT} SingleUnnamedTensorWithSignature", "default_int32",
            {"signature_name": "predict_images", "instances": [[1, 2]]},
            expect={"predictions": [[1, 2]]}),
    predict(f"{JT} TensorFromNonNullTerminatedBuffer", "default_int32",
            b'{"instances": [[1,2],[3,4],[5,6]]}X',
            expect={"predictions": [[1, 2], [3, 4], [5, 6]]}),
    predict(f"{JT} SingleUnnamedTensorBase64Scalars", "default_string",
            b'{"instances": [ { "b64" : "aGVsbG8=" }, { "b64": "d29ybGQ=" } ]}',
            expect={"predictions": ["hello", "world"]}),
    predict(f"{JT} SingleUnnamedTensorBase64Lists", "default_string",
            b'{"instances": [ [{ "b64" : "aGVsbG8=" }], [{ "b64": "d29ybGQ=" }] ]}',
            expect={"predictions": [["hello"], ["world"]]}),
    predict(f"{JT} SingleNamedTensorBase64", "default_string",
            b'{"instances": [{"default": [ [{ "b64" : "aGVsbG8=" }], [{ "b64": "d29ybGQ=" }] ]}]}',
            expect={"predictions": [[["hello"], ["world"]]]}),
    predict(f"{JT} MultipleNamedTensor", "multi4", MULTI4_REQUEST, expect={"predictions": [
        {"int_tensor": [[1, 2], [3, 4], [5, 6]], "str_tensor": ["foo", "bar"],
         "float_tensor": [1.0, NAN], "dbl_tensor": [NAN]},
        {"int_tensor": [[7, 8], [9, 0], [1, 2]], "str_tensor": ["baz", "bat"],
         "float_tensor": [2.0, INF], "dbl_tensor": [2.0]}]}),
    predict(f"{JT} SingleUnnamedTensorColumnarFormat", "int_tensor",
            {"inputs": {"int_tensor": [[[1, 2], [3, 4], [5, 6]]]}},
            expect={"outputs": [[[1, 2], [3, 4], [5, 6]]]}),
    predict(f"{JT} SingleUnnamedTensorColumnarFormat (unnamed)", "int_tensor",
            {"inputs": [[[1, 2], [3, 4], [5, 6]]]}, expect={"outputs": [[[1, 2], [3, 4], [5, 6]]]}),
    predict(f"{JT} MultipleNamedTensorColumnarFormat", "multi3",
            {"inputs": {"int_tensor": [[[1, 2], [3, 4], [5, 6]]], "str_tensor": ["foo", "bar"],
                        "bin_tensor": {"b64": "aGVsbG8="}}},
            expect={"outputs": {"int_tensor": [[[1, 2], [3, 4], [5, 6]]],
                                "str_tensor": ["foo", "bar"], "bin_tensor": "hello"}}),
    predict(f"{JT} SingleUnnamedTensorErrors (empty)", "default_int32", b"", 400,
            error="document is empty"),
    predict(f"{JT} SingleUnnamedTensorErrors (signature_name)", "default_int32",
            b'{"signature_name": 5, "instances": [[1,2],[3,4],[5,6,7]]}', 400,
            error="must be a string value"),
    predict(f"{JT} SingleUnnamedTensorErrors (both keys)", "default_int32",
            b'{"instances": [[1,2],[3,4],[5,6,7]], "inputs": [[1,2],[3,4],[5,6,7]]}', 400,
            error="Not formatted correctly"),
    predict(f"{JT} SingleUnnamedTensorErrors (size)", "default_int32",
            b'{"instances": [[1,2],[3,4],[5,6,7]]}', 400, error="Expecting tensor size"),
    predict(f"{JT} SingleUnnamedTensorErrors (shape)", "default_int32",
            b'{"instances": [[1,2],[3,4],[[5,6]]]}', 400, error="Expecting shape"),
    predict(f"{JT} SingleUnnamedTensorErrors (scalar then list)", "default_int32",
            b'{"instances": [1, [1]]}', 400, error="Expecting shape"),
    predict(f"{JT} SingleUnnamedTensorErrors (type)", "default_int32",
            b'{"instances": [[1,2],["a", "b"]]}', 400, error="not of expected type"),
    predict(f"{JT} MultipleNamedTensorErrors (shape)", "multi2",
            b"""{"instances": [{"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"]},
            {"int_tensor": [[[7,8],[9,0],[1,2]]], "str_tensor": ["baz", "bat"]}]}""",
            400, error="Expecting shape"),
    predict(f"{JT} MultipleNamedTensorErrors (size)", "multi2",
            b"""{"instances": [
            {"int_tensor": [[1,2],[3,4],[5,6],[7,8]], "str_tensor": ["foo", "bar"]},
            {"int_tensor": [[7,8],[9,0],[1,2]], "str_tensor": ["baz", "bat"]}]}""",
            400, error="Expecting tensor size"),
    predict(f"{JT} MultipleNamedTensorErrors (object then list)", "multi2",
            b"""{"instances": [{"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"]},
            [1, 20, 30],
            {"int_tensor": [[[7,8],[9,0],[1,2]]], "str_tensor": ["baz", "bat"]}]}""",
            400, error="Expecting object but got list"),
    predict(f"{JT} MultipleNamedTensorErrors (list then object)", "str_tensor",
            b'{"instances": [["baz", "bar"], {"str_tensor": ["baz", "bat"]}]}',
            400, error="Expecting value/list but got object"),
    # ------------------------------------------------ json_tensor_test.cc: tensors -> JSON
    predict(f"{JT} FromJsonSingleTensor (row)", "int_tensor", {"instances": INT_3D},
            expect={"predictions": INT_3D}),
    predict(f"{JT} FromJsonSingleTensor (columnar)", "int_tensor", {"inputs": INT_3D},
            expect={"outputs": INT_3D}),
    predict(f"{JT} FromJsonSingleScalarTensor (row)", "int_tensor",
            {"instances": [1, 2, 3, 4, 5]}, expect={"predictions": [1, 2, 3, 4, 5]}),
    predict(f"{JT} FromJsonSingleScalarTensor (columnar)", "int_tensor",
            {"inputs": [1, 2, 3, 4, 5]}, expect={"outputs": [1, 2, 3, 4, 5]}),
    predict(f"{JT} FromJsonSingleBytesTensor", "str_tensor_bytes",
            {"instances": [["hello", "world"], ["tf", "serving"]]},
            expect={"predictions": MULTI5_BYTES}),
    predict(f"{JT} FromJsonSingleFloatTensorSixDigitPrecision", "default_float",
            b'{"instances": [[9000000, 999999, 0.50000], [0.0003, 0.00003, 555557.5]]}',
            expect={"predictions": [["9e+06", "999999.0", "0.5"], ["0.0003", "3e-05",
                                                                   "555557.5"]]},
            compare="strings"),
    predict(f"{JT} FromJsonSingleFloatTensorNonFinite", "default_float",
            b'{"instances": [[NaN, Infinity], [3, -Infinity]]}',
            expect={"predictions": [["NaN", "Infinity"], ["3.0", "-Infinity"]]},
            compare="strings"),
    # Over HTTP a signature without outputs never reaches MakeJsonFromTensors: TensorFlow's
    # DirectSession::Run refuses a run with nothing to fetch (INVALID_ARGUMENT).
    predict(f"{JT} FromJsonSingleTensorErrors (no outputs)", "no_outputs",
            {"instances": [1]}, 400, error="Must specify at least one target to fetch"),
    predict(f"{JT} FromJsonSingleTensorErrors (complex64)", "complex_out",
            {"instances": [1.0, 2.0]}, 400, error="tensor type: complex64"),
    predict(f"{JT} FromJsonSingleTensorErrors (no shape)", "scalar_out", {"instances": [1]},
            400, error="no shape information"),
    predict(f"{JT} FromJsonMultipleNamedTensors (row)", "multi5", {"instances": MULTI5_ITEMS},
            expect={"predictions": [{**item, "str_tensor_bytes": b64}
                                    for item, b64 in zip(MULTI5_ITEMS, MULTI5_BYTES,
                                                         strict=True)]}),
    predict(f"{JT} FromJsonMultipleNamedTensors (columnar)", "multi5", {"inputs": {
        "int_tensor": INT_3D, "str_tensor": [["foo", "bar"], ["baz", "bat"]],
        "float_tensor": [[1.0], [2.0]], "double_scalar_tensor": [8.0, 9.0],
        "str_tensor_bytes": [["hello", "world"], ["tf", "serving"]]}},
        expect={"outputs": {"double_scalar_tensor": [8.0, 9.0], "float_tensor": [[1.0], [2.0]],
                            "int_tensor": INT_3D,
                            "str_tensor": [["foo", "bar"], ["baz", "bat"]],
                            "str_tensor_bytes": MULTI5_BYTES}}),
    predict(f"{JT} FromJsonMultipleNamedTensorsErrors", "batch_mismatch",
            {"instances": [[1, 2, 3], [4, 5, 6]]}, 400, error="inconsistent batch size"),
    predict(f"{JT} FromJsonSingleZeroBatchTensor", "zero_batch", {"instances": [1]},
            expect={"predictions": []}),
    predict(f"{JT} FromJsonMultipleZeroBatchTensors", "zero_batch2", {"instances": [1]},
            expect={"predictions": []}),
    predict(f"{JT} FromJsonMultipleZeroBatchTensorsErrors", "zero_batch_mismatch",
            {"instances": [1]}, 400, error="inconsistent batch size"),
    # ------------------------------------------------ json_tensor_test.cc: classify/regress
    call(f"{JT} ClassifyRegressRequestTest/ClassificationRequest RequestNoContext", "classify",
         "example_echo", NO_CONTEXT, expect=NO_CONTEXT_EXAMPLES, compare="examples"),
    call(f"{JT} ClassifyRegressRequestTest/RegressionRequest RequestNoContext", "regress",
         "example_echo_regress", NO_CONTEXT, expect={"results": [2.0, 1.0]}),
    call(f"{JT} ClassifyRegressRequestTest/ClassificationRequest "
         "RequestWithContextAndSignature", "classify", "example_echo", WITH_CONTEXT,
         expect=WITH_CONTEXT_EXAMPLES, compare="examples"),
    call(f"{JT} ClassifyRegressRequestTest/RegressionRequest RequestWithContextAndSignature",
         "regress", "example_echo_regress", WITH_CONTEXT, expect={"results": [2.0, 2.0, 1.0]}),
    *(call(f"{JT} ClassifyRegressRequestTest/{kind}Request JsonErrors #{i}", verb, model,
           request, 400, error=message)
      for kind, verb, model in (("Classification", "classify", "example_echo"),
                                ("Regression", "regress", "example_echo_regress"))
      for i, (request, message) in enumerate(EXAMPLE_JSON_ERRORS, 1)),
    call(f"{JT} ClassifyRegressnResultTest JsonFromClassificationResult", "classify",
         "fixed_results", {"examples": [{}, {}]}, expect={"results": [
             [["car", 0.2], ["bike", 0.7], ["bus", 0.1]],
             [["car", 0.7], ["bike", 0.1], ["bus", 0.2]]]}),
    call(f"{JT} ClassifyRegressnResultTest JsonFromRegressionResult", "regress",
         "fixed_results", {"signature_name": "regress_fixed", "examples": [{}, {}, {}]},
         expect={"results": [0.2, 0.9, 1.0]}),
    call(f"{JT} ClassifyRegressnResultTest JsonFromRegressionResultWithNonFinite", "regress",
         "fixed_results", {"signature_name": "regress_nonfinite", "examples": [{}] * 5},
         expect={"results": ["0.2", "Infinity", "1.0", "-Infinity", "NaN"]},
         compare="strings"),
    # MakeJsonFromStatus: the error body is {"error": <message>}, quotes escaped.
    predict(f"{JT} MakeJsonFromTensors.StatusError", "default_int32",
            {"signature_name": "key", "instances": [1]}, 400,
            error='Serving signature name: "key" not found in signature def'),
    # ------------------------------------------------ http_rest_api_handler_test.cc
    get(f"{HANDLER} UnsupportedApiCalls #1, {UTIL} TestParseModelInfoForGet (failure)",
        "/v1/foo", 400, error="Malformed request"),
    raw_post(f"{HANDLER} UnsupportedApiCalls #2, {UTIL} TestParseModelInfoForPost (failure)",
             "/v1/foo", 400, "Malformed request"),
    get(f"{HANDLER} UnsupportedApiCalls #3", "/v1/models", 400, error="Missing model name"),
    get(f"{HANDLER} UnsupportedApiCalls #4", "/v1/models/debug/model_name", 400,
        error="Malformed request"),
    raw_post(f"{HANDLER} UnsupportedApiCalls #5, {UTIL} TestParseModelInfoForPost (failure)",
             "/v1/models", 400, "Malformed request"),
    get(f"{HANDLER} UnsupportedApiCalls #6, {UTIL} TestParseModelInfoForGet (failure)",
        "/v1/models/foo:predict", 400, error="Malformed request"),
    get(f"{HANDLER} UnsupportedApiCalls #7, {UTIL} TestParseModelInfoForGet (failure)",
        "/v1/models/foo/version/50:predict", 400, error="Malformed request"),
    raw_post(f"{HANDLER} UnsupportedApiCalls #8", "/v1/models/foo/version/50:regress", 400,
             "Malformed request"),
    raw_post(f"{HANDLER} UnsupportedApiCalls #9", "/v1/models/foo/versions/HELLO:regress", 400,
             "Malformed request"),
    raw_post(f"{HANDLER} UnsupportedApiCalls #10", f"/v1/models/foo/versions/{UINT64_MAX}:regress",
             400, "Failed to convert version"),
    raw_post(f"{HANDLER} UnsupportedApiCalls #11, {UTIL} TestParseModelInfoForPost (failure)",
             "/v1/models/foo/metadata", 400, "Malformed request"),
    raw_post(f"{HANDLER} UnsupportedApiCalls #12", "/v1/models/foo/label/some_label:regress",
             400, "Malformed request"),
    raw_post(f"{HANDLER} UnsupportedApiCalls #13, {UTIL} TestParseModelInfoForPost (failure)",
             "/v1/models/foo/versions/50/labels/some_label:regress", 400, "Malformed request"),
    raw_post(f"{HANDLER} UnsupportedApiCalls #14", "/v1/models/foo/versions/some_label:regress",
             400, "Malformed request"),
    predict(f"{HANDLER} PredictModelNameVersionErrors #1", "foo", b'{ "instances": [1] }', 404),
    predict(f"{HANDLER} PredictModelNameVersionErrors #2", "foo", b'{ "instances": [1] }', 404,
            suffix="/versions/50"),
    predict(f"{HANDLER} PredictModelNameVersionErrors #3", HPT + "99", b'{ "instances": [1] }',
            404),
    predict(f"{HANDLER} PredictRequestErrors (empty)", HPT, b"", 400,
            error="JSON Parse error: The document is empty"),
    predict(f"{HANDLER} PredictRequestErrors (bad JSON)", HPT, b"instances = [1, 2]", 400,
            error="JSON Parse error: Invalid value"),
    predict(f"{HANDLER} PredictRequestErrors (type)", HPT, b'{ "instances": ["x", "y"] }', 400,
            error="not of expected type: float"),
    predict(f"{HANDLER} PredictRequestErrors (label)", HPT, b'{ "instances": ["x", "y"] }', 400,
            error="Unrecognized servable version label", suffix="/labels/Version_Nonexistent"),
    predict(f"{HANDLER} PredictRequestErrors (signature_name)", HPT,
            b'{ "signature_name": 100 }', 400,
            error="'signature_name' key must be a string value."),
    predict(f"{HANDLER} Predict (latest)", HPT, b'{"instances": [[1.0, 2.0], [3.0, 4.0]]}',
            expect={"predictions": [[2.5, 3.0], [3.5, 4.0]]}),
    predict(f"{HANDLER} Predict (version)", HPT, b'{"instances": [1.0, 2.0]}',
            expect={"predictions": [2.5, 3.0]}, suffix="/versions/123"),
    predict(f"{HANDLER} Predict (label)", HPT, b'{"instances": [1.0, 2.0]}',
            expect={"predictions": [2.5, 3.0]}, suffix=f"/labels/{LABEL}"),
    predict(f"{HANDLER} Predict (signature_name)", HPT,
            b'{"signature_name": "serving_default", "instances": [3.0, 4.0]}',
            expect={"predictions": [3.5, 4.0]}, suffix="/versions/123"),
    predict(f"{HANDLER} Predict (columnar)", HPT,
            b'{"signature_name": "serving_default", "inputs": [3.0, 4.0]}',
            expect={"outputs": [3.5, 4.0]}, suffix="/versions/123"),
    *(call(f"{HANDLER} Regress ({how})", "regress", HPT,
           b'{"signature_name": "regress_x_to_y", "examples": [ { "x": 80.0 } ] }',
           expect={"results": [42]}, suffix=suffix)
      for how, suffix in (("latest", ""), ("version", "/versions/123"),
                          ("label", f"/labels/{LABEL}"))),
    call(f"{HANDLER} Classify (latest)", "classify", HPT,
         b'{"signature_name": "classify_x_to_y", "examples": [ { "x": 20.0 } ] }',
         expect={"results": [[["", 12]]]}),
    call(f"{HANDLER} Classify (label)", "classify", HPT,
         b'{"signature_name": "classify_x_to_y", "examples": [ { "x": 10.0 } ] }',
         expect={"results": [[["", 7]]]}, suffix=f"/labels/{LABEL}"),
    get(f"{HANDLER} GetStatus (all versions)", f"/v1/models/{HPT}", expect=HPT_STATUS),
    get(f"{HANDLER} GetStatus (version)", f"/v1/models/{HPT}/versions/123", expect=HPT_STATUS),
    get(f"{HANDLER} GetStatus (label)", f"/v1/models/{HPT}/labels/{LABEL}", expect=HPT_STATUS),
    get(f"{HANDLER} GetModelMetadata", f"/v1/models/{HPT}/metadata", expect=HPT,
        compare="metadata"),
    # ------------------------------------------------ http_rest_api_util_test.cc
    # ParseModelInfo's decoded names are seen in what the server does with them: an unknown
    # model (404, named in the message), a label resolved before the model (400) where a
    # servable is looked up (metadata); a status request has no servable to look up:
    # GetModelStatus ignores the label (get_model_status_impl.cc) and lists every version.
    get(f"{UTIL} TestParseModelInfoForGet (reserved characters in model name)",
        f"/v1/models/modelname{RESERVED}", 404, error=f"modelname{RESERVED_DECODED}"),
    get(f"{UTIL} TestParseModelInfoForGet (model version)", f"/v1/models/{HPT}/versions/123",
        expect=HPT_STATUS),
    get(f"{UTIL} TestParseModelInfoForGet (labels)", f"/v1/models/{HPT}/labels/latest",
        expect=HPT_STATUS),
    get(f"{UTIL} TestParseModelInfoForGet (labels with reserved characters)",
        f"/v1/models/{HPT}/labels/latest{RESERVED}", expect=HPT_STATUS),
    get(f"{UTIL} TestParseModelInfoForGet (metadata)",
        f"/v1/models/{HPT}/labels/{LABEL}/metadata", expect=HPT, compare="metadata"),
    get(f"{UTIL} TestParseModelInfoForGet (metadata with reserved characters)",
        f"/v1/models/modelname{RESERVED}/labels/latest{RESERVED}/metadata", 400,
        error=f"Unrecognized servable version label: latest{RESERVED_DECODED}"),
    predict(f"{UTIL} TestParseModelInfoForPost (reserved characters in model name)",
            f"modelname{RESERVED}", b'{"instances": [1.0]}', 404,
            error=f"modelname{RESERVED_DECODED}"),
    predict(f"{UTIL} TestParseModelInfoForPost (model version)", HPT, b'{"instances": [1.0]}',
            expect={"predictions": [2.5]}, suffix="/versions/123"),
    predict(f"{UTIL} TestParseModelInfoForPost (labels)", HPT, b'{"instances": [1.0]}', 400,
            error="Unrecognized servable version label: latest", suffix="/labels/latest"),
    predict(f"{UTIL} TestParseModelInfoForPost (labels with reserved characters)", HPT,
            b'{"instances": [1.0]}', 400,
            error=f"Unrecognized servable version label: latest{RESERVED_DECODED}",
            suffix=f"/labels/latest{RESERVED}"),
    predict(f"{UTIL} TestParseModelInfoForPost (reserved characters in labels and name)",
            f"modelname{RESERVED}", b'{"instances": [1.0]}', 400,
            error=f"Unrecognized servable version label: latest{RESERVED_DECODED}",
            suffix=f"/labels/latest{RESERVED}"),
    raw_post(f"{UTIL} TestParseModelInfoForPost (failure: version/)",
             "/v1/models/foo/version/50:predict", 400, "Malformed request"),
    raw_post(f"{UTIL} TestParseModelInfoForPost (failure: versions/string)",
             "/v1/models/foo/versions/string:predict", 400, "Malformed request"),
    raw_post(f"{UTIL} TestParseModelInfoForPost (uint64 version)",
             f"/v1/models/foo/versions/{UINT64_MAX}:predict", 400, "Failed to convert version"),
    # ------------------------------------------------ tensorflow_model_server_test.py (REST)
    call(f"{SERVER_PY} testClassifyREST", "classify", "default",
         {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]},
         expect={"results": [[["", 3.0]]]}),
    call(f"{SERVER_PY} testRegressREST", "regress", "default",
         {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]},
         expect={"results": [3.0]}),
    predict(f"{SERVER_PY} testPredictREST", "default", {"instances": [2.0, 3.0, 4.0]},
            expect={"predictions": [3.0, 3.5, 4.0]}),
    predict(f"{SERVER_PY} testPredictColumnarREST", "default", {"inputs": [2.0, 3.0, 4.0]},
            expect={"outputs": [3.0, 3.5, 4.0]}),
    get(f"{SERVER_PY} testGetStatusREST", "/v1/models/default", expect=HPT_STATUS),
    get(f"{SERVER_PY} testGetModelMetadataREST", "/v1/models/default/metadata",
        expect="default", compare="metadata"),
    get(f"{SERVER_PY} testPrometheusEndpoint", "/monitoring/prometheus/metrics",
        expect="# TYPE", compare="text"),
    # ------------------------------------------------ issue 14 (TF Serving's behaviour)
    predict("TF Serving README / docker guide: half_plus_two quickstart", HPT,
            b'{"instances": [1.0, 2.0, 5.0]}', expect={"predictions": [2.5, 3.0, 4.5]}),
    # The graph decides: a shape the graph refuses is TensorFlow's INVALID_ARGUMENT, a 400.
    predict("predict_util.cc RunPredict: Session::Run status (graph refuses the shape)",
            "matmul", {"instances": [[1.0, 2.0]]}, 400, error="Matrix size-incompatible"),
]

# upstream testdata/saved_model_half_plus_two_2_versions_metadata.json, signature by signature
# (the file was written by TF 1.x, whose tf_example placeholder had an unknown rank).
_DIM = [{"size": "-1", "name": ""}, {"size": "1", "name": ""}]


def _info(name: str) -> dict:
    return {"dtype": "DT_FLOAT", "tensor_shape": {"dim": _DIM, "unknown_rank": False},
            "name": name}


EXPECTED_SIGNATURES = {
    "serving_default": ("tensorflow/serving/predict", {"x": _info("x:0")}, {"y": _info("y:0")}),
    "regress_x2_to_y3": ("tensorflow/serving/regress", {"inputs": _info("x2:0")},
                         {"outputs": _info("y3:0")}),
    "regress_x_to_y": ("tensorflow/serving/regress", None, {"outputs": _info("y:0")}),
    "regress_x_to_y2": ("tensorflow/serving/regress", None, {"outputs": _info("y2:0")}),
    "classify_x_to_y": ("tensorflow/serving/classify", None, {"scores": _info("y:0")}),
}


# ------------------------------------------------------------------------ the server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.tfs_testdata import tfs_models

    base = tmp_path_factory.mktemp("tfs-oracle")
    root = base / "serving"
    half_plus_two = tfs_models("half_plus_two")["half_plus_two"]
    for model in (HPT, "default"):
        shutil.copytree(half_plus_two, root / model / "123")
    for kind, path in echo_models(*ECHO_KINDS).items():
        shutil.copytree(path, root / kind / "1")
    entries = [f'  config {{ name: "{HPT}" base_path: "/models/{HPT}" '
               f'model_platform: "tensorflow"\n'
               f'    version_labels {{ key: "{LABEL}" value: 123 }} }}']
    entries += [f'  config {{ name: "{name}" base_path: "/models/{name}" '
                f'model_platform: "tensorflow" }}' for name in ("default", *ECHO_KINDS)]
    (root / "models.config").write_text("model_config_list {\n" + "\n".join(entries) + "\n}\n")
    with sf.running_server(str(root), HPT) as srv:
        for name in ("default", *ECHO_KINDS):
            srv.wait_ready(name)
        yield srv


def send(server, case: Case) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request(case.method, case.path, body=case.body,
                     headers={"Content-Type": "application/json"} if case.body is not None
                     else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# ------------------------------------------------------------------------ comparisons


def same(actual: Any, expected: Any) -> bool:
    """JSON values equal as rapidjson's ``Document ==`` (numbers by value), NaN equal to NaN."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and actual.keys() == expected.keys() and all(
            same(actual[k], v) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and len(actual) == len(expected) and all(
            same(a, e) for a, e in zip(actual, expected, strict=True))
    if isinstance(expected, bool) or expected is None or isinstance(expected, str):
        return type(actual) is type(expected) and actual == expected
    if isinstance(actual, bool) or not isinstance(actual, (int, float)):
        return False
    return (math.isnan(actual) and math.isnan(expected)) if isinstance(
        expected, float) and math.isnan(expected) else actual == expected


def same_float32(actual: Any, expected: Any) -> bool:
    """Numbers compared as float32 values (EqualsProto on a DT_FLOAT tensor's float_val)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and actual.keys() == expected.keys() and all(
            same_float32(actual[k], v) for k, v in expected.items())
    a, e = np.asarray(actual, dtype=np.float32), np.asarray(expected, dtype=np.float32)
    return a.shape == e.shape and bool(np.all((a == e) | (np.isnan(a) & np.isnan(e))))


def numbers_as_strings(data: bytes) -> Any:
    """The body with every number as its text (CompareJsonAllValuesAsStrings)."""
    return json.loads(data, parse_float=str, parse_int=str, parse_constant=str)


def example_features(label: str) -> dict[str, tuple[str, list]]:
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example.FromString(base64.urlsafe_b64decode(label + "=" * (-len(label)
                                                                                       % 4)))
    features = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        features[name] = (kind.replace("_list", ""), list(getattr(feature, kind).value))
    return features


def same_examples(actual: dict[str, tuple[str, list]],
                  expected: dict[str, tuple[str, list]]) -> bool:
    if actual.keys() != expected.keys():
        return False
    for name, (kind, values) in expected.items():
        got_kind, got = actual[name]
        if got_kind != kind or len(got) != len(values):
            return False
        if kind == "float":
            if not same_float32(got, values):  # MessageDifferencer: approximate, NaN equal
                return False
        elif got != values:
            return False
    return True


def check_metadata(doc: dict, model: str) -> None:
    assert doc["model_spec"] == {"name": model, "signature_name": "", "version": "123"}
    signatures = doc["metadata"]["signature_def"]["signature_def"]
    assert set(EXPECTED_SIGNATURES) <= set(signatures)
    for key, (method, inputs, outputs) in EXPECTED_SIGNATURES.items():
        sig = signatures[key]
        assert sig["method_name"] == method, key
        assert sig["outputs"] == outputs, key
        assert sig.get("defaults", {}) == {}, key
        if inputs is not None:
            assert sig["inputs"] == inputs, key
        else:  # tf_example: a string placeholder
            assert sig["inputs"]["inputs"]["dtype"] == "DT_STRING"
            assert sig["inputs"]["inputs"]["name"] == "tf_example:0"


def check(case: Case, status: int, data: bytes) -> None:
    shown = data[:600].decode("utf-8", "replace")
    assert status == case.status, f"{case.source}: HTTP {status}, expected {case.status}: {shown}"
    if status != 200:
        doc = json.loads(data)
        assert set(doc) == {"error"} and isinstance(doc["error"], str), shown
        if case.error is not None:
            assert case.error in doc["error"], f"{case.source}: {doc['error']!r}"
        return
    if case.compare == "text":
        assert case.expect in data.decode(), shown
        return
    if case.compare == "strings":
        assert numbers_as_strings(data) == case.expect, shown
        return
    doc = json.loads(data)
    if case.compare == "json":
        assert same(doc, case.expect), f"{case.source}: {shown}"
    elif case.compare == "float32":
        assert same_float32(doc, case.expect), f"{case.source}: {shown}"
    elif case.compare == "examples":
        results = doc["results"]
        assert len(results) == len(case.expect), shown
        for row, expected in zip(results, case.expect, strict=True):
            (label, score), = row
            assert score == 0.0 and same_examples(example_features(label), expected), (
                f"{case.source}: {example_features(label)}")
    elif case.compare == "metadata":
        check_metadata(doc, case.expect)
    else:
        raise AssertionError(f"unknown comparison {case.compare}")


# ------------------------------------------------------------------------ the tests


@pytest.mark.parametrize("case", CASES, ids=[c.source for c in CASES])
def test_tf_serving_case(server, case):
    status, data = send(server, case)
    check(case, status, data)


def test_ported_case_count():
    """How many TF Serving REST cases are replayed here, by upstream file."""
    by_file: dict[str, int] = {}
    for case in CASES:
        first = case.source.split(" ", 1)[0]
        upstream = first if first.endswith((".cc", ".py")) else case.source.split(":")[0]
        by_file[upstream] = by_file.get(upstream, 0) + 1
    print(f"\n{len(CASES)} TF Serving REST cases replayed over HTTP: " + ", ".join(
        f"{name} {count}" for name, count in sorted(by_file.items())))
    assert len({c.source for c in CASES}) == len(CASES), "every case has its own name"
    assert len(CASES) >= 120


def test_case_models_exist():
    """Every model a case names is served by the fixture (typos would only give 404s)."""
    served = {HPT, "default", *ECHO_KINDS}
    for case in CASES:
        if case.path.startswith("/v1/models/") and case.status != 404:
            name = case.path[len("/v1/models/"):].split("/")[0].split(":")[0]
            assert name in served or "%" in name or name in ("foo", "debug", ""), case.source


def test_every_case_cites_an_upstream_test():
    sources = (JT, HANDLER, UTIL, SERVER_PY, "TF Serving README", "predict_util.cc")
    for case in CASES:
        assert case.source.startswith(sources), case.source
