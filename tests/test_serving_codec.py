"""Unit tests of the REST JSON codec (no TensorFlow model, no server).

The rules are TF Serving's (``tensorflow_serving/util/json_tensor.cc``); where a
test pins one of them, it names the upstream test or code it comes from.
``tests/test_tfs_oracle.py`` replays TF Serving's own test cases over HTTP.
"""

from __future__ import annotations

import base64
import json
import math
import random

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfserving import classification
from tfserving import json_tensor as jt
from tfserving.json_tensor import decode_b64, encode_b64
from tfserving.status import ServingError

ADDER = jt.SignatureSpec(
    "serving_default", jt.PREDICT_METHOD,
    {"x": jt.TensorSpec("x", "DT_FLOAT", (-1, 3))},
    {"output_0": jt.TensorSpec("output_0", "DT_FLOAT", (-1, 3))})
RUNIF = jt.SignatureSpec(
    "serving_default", jt.PREDICT_METHOD, {"N": jt.TensorSpec("N", "DT_INT32", ())},
    {"output_0": jt.TensorSpec("output_0", "DT_FLOAT", (-1,))})
IMAGE = jt.SignatureSpec(
    "serving_default", jt.PREDICT_METHOD,
    {"input_img": jt.TensorSpec("input_img", "DT_STRING", None)},
    {"output_0": jt.TensorSpec("output_0", "DT_STRING", (1,))})
TWO = jt.SignatureSpec(
    "serving_default", jt.PREDICT_METHOD,
    {"data": jt.TensorSpec("data", "DT_STRING", (-1,)),
     "times": jt.TensorSpec("times", "DT_INT32", (-1,))},
    {"echo_bytes": jt.TensorSpec("echo_bytes", "DT_STRING", (-1,))})
SIGNATURES = (ADDER, RUNIF, IMAGE, TWO)


def error_of(fn, *args) -> ServingError:
    with pytest.raises(ServingError) as info:
        fn(*args)
    return info.value


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize("body,fragment", [
    # json_tensor_test.cc SingleUnnamedTensorErrors / http_rest_api_handler_test.cc
    # PredictRequestErrors, and rapidjson's GetParseError_En wording for the rest.
    (b"", "JSON Parse error: The document is empty"),
    (b"   ", "JSON Parse error: The document is empty. at offset: 3"),
    (b"]", "The document is empty. at offset: 0"),
    (b"instances = [1, 2]", "JSON Parse error: Invalid value. at offset: 0"),
    (b'{"a": [1,]}', "Invalid value. at offset: 9"),
    (b'{"a": 1,}', "Missing a name for object member."),
    (b'{"a" 1}', "Missing a colon after a name of object member."),
    (b'{"a": 1 "b": 2}', "Missing a comma or '}' after an object member."),
    (b"[1 2]", "Missing a comma or ']' after an array element."),
    (b'{"a": "x', "Missing a closing quotation mark in string."),
    (b'{"a": "\\x"}', "Invalid escape character in string."),
    (b'{"a": "\\u12G4"}', "Incorrect hex digit after \\u escape in string."),
    (b'{"a": "\\ud800"}', "The surrogate pair in string is invalid."),
    (b'{"a": 1.}', "Miss fraction part in number."),
    (b'{"a": 1e}', "Miss exponent in number."),
    (b'{"a": 1e400}', "Number too big to be stored in double."),
    (b'{"a": tru}', "Invalid value."),
    (b'{"a": "\x01"}', "Invalid encoding in string."),
    # Deliberate difference: the body must be UTF-8 (TF Serving copies the bytes through).
    (b'{"a": "\xff"}', "Invalid encoding in string."),
    (b"[1]", "JSON Value: [1] Is not object"),
    (b'"x"', "Is not object"),
    (b"null", "Is not object"),
])
def test_parse_errors_in_rapidjson_wording(body, fragment):
    err = error_of(jt.parse_json, body)
    assert err.http_status == 400
    assert fragment in err.message


def test_parse_accepts_nan_and_infinity_tokens():
    # rapidjson's kParseNanAndInfFlag (json_tensor.cc ParseJson): NaN, Inf, Infinity, signed.
    doc = jt.parse_json(b'{"inputs": [NaN, Infinity, -Infinity, Inf, -Inf, -NaN]}')
    values = doc["inputs"]
    assert math.isnan(values[0]) and math.isnan(values[5])
    assert values[1:5] == [math.inf, -math.inf, math.inf, -math.inf]


def test_parse_stops_after_the_document():
    # kParseStopWhenDoneFlag: text after the top-level value is not read.
    assert jt.parse_json(b'{"instances": [1]} trailing') == {"instances": [1]}
    assert jt.parse_json('{"é": 1, "instances": [NaN]}} ]]'.encode())["instances"][0] != 0


def test_deeply_nested_unknown_key_is_ignored():
    # json_tensor_test.cc DeeplyNestedWellFormed: 500000 levels in an unknown key, 200.
    body = b'{"instances":[1], "nested":' + b"[" * 500000 + b"]" * 500000 + b"}"
    assert jt.parse_json(body) == {"instances": [1]}
    objects = b'{"x": ' + b'{"a": [' * 3000 + b"1" + b"]}" * 3000 + b', "inputs": [2]}'
    assert jt.parse_json(objects) == {"inputs": [2]}


def test_deeply_nested_signature_name_is_a_type_error():
    # json_tensor_test.cc DeeplyNestedMalformed.
    body = b'{"signature_name":' + b"[" * 500000 + b"]" * 500000 + b"}"
    doc = jt.parse_json(body)
    assert "key must be a string value" in error_of(jt.signature_name, doc).message


def test_deep_nesting_errors_are_found():
    err = error_of(jt.parse_json, b'{"x": ' + b"[" * 3000 + b"}" * 3000 + b"}")
    assert "Invalid value." in err.message
    err = error_of(jt.parse_json, b'{"x": ' + b"[" * 3000 + b"1" + b"]" * 2999 + b"}")
    assert "Missing a comma or ']' after an array element." in err.message
    err = error_of(jt.parse_json, b'{"x": ' + b"[" * 3000 + b"1 2" + b"]" * 3000 + b"}")
    assert "Missing a comma or ']'" in err.message


def test_deep_tensor_is_refused_without_recursion():
    doc = jt.parse_json(b'{"instances": ' + b"[" * 100000 + b"]" * 100000 + b"}")
    err = error_of(jt.decode_predict, doc, ADDER)
    assert err.http_status == 400 and "nested more than 32 levels" in err.message


def test_signature_name_must_be_a_string():
    assert jt.signature_name({}) == ""
    assert jt.signature_name({"signature_name": "s"}) == "s"
    err = error_of(jt.signature_name, {"signature_name": 100})
    assert "'signature_name' key must be a string value." in err.message


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) |
    st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) |
    st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=25)


@settings(max_examples=300, deadline=None, database=None)
@given(doc=st.dictionaries(st.sampled_from(["instances", "inputs", "signature_name", "x",
                                            "examples", "é"]), JSON_VALUES, max_size=4),
       indent=st.booleans())
def test_rapidjson_path_reads_what_orjson_reads(doc, indent):
    """The fallback parser agrees with orjson on every document orjson reads."""
    body = json.dumps(doc, indent=2 if indent else None, ensure_ascii=False).encode()
    expected = {k: v for k, v in orjson.loads(body).items() if k in jt.REQUEST_KEYS}
    assert jt._parse_rapidjson(body) == expected


@settings(max_examples=300, deadline=None, database=None)
@given(doc=JSON_VALUES, seed=st.integers(0, 2**32))
def test_rapidjson_path_refuses_what_orjson_refuses(doc, seed):
    """Mutated documents: whatever orjson refuses (but for rapidjson's extensions) is a 400."""
    rng = random.Random(seed)
    body = bytearray(json.dumps({"x": doc, "instances": [1]}).encode())
    for _ in range(rng.randint(1, 3)):
        body[rng.randrange(len(body))] = rng.choice(b'[]{}",:0 .e-\\ntu')
    try:
        orjson.loads(bytes(body))
        ok = True
    except orjson.JSONDecodeError as err:
        if "after document" in str(err) or b"Inf" in body or b"NaN" in body:
            return
        ok = False
    try:
        jt._parse_rapidjson(bytes(body))
    except ServingError as err:
        assert not ok and err.http_status == 400
    else:
        assert ok


FLAT_VALUES = st.lists(st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) |
                       st.text(max_size=6) | st.booleans() | st.none(), min_size=40, max_size=120)


@settings(max_examples=200, deadline=None, database=None)
@given(doc=JSON_VALUES | FLAT_VALUES | st.lists(FLAT_VALUES, max_size=3),
       seed=st.integers(0, 2**32), mutate=st.booleans())
def test_deep_skipped_values_are_checked_as_orjson_checks_them(doc, seed, mutate):
    """A value under 1100 levels of an unknown key goes through the skipping validator
    (runs of openers and of closers, flat arrays checked by orjson, plain stepping): it is
    accepted exactly when orjson accepts it on its own."""
    rng = random.Random(seed)
    inner = bytearray(json.dumps(doc).encode())
    if mutate:
        for _ in range(rng.randint(1, 2)):
            inner[rng.randrange(len(inner))] = rng.choice(b'[]{}",:0 .e-\\ntu')
    try:
        orjson.loads(bytes(inner))
        ok = True
    except orjson.JSONDecodeError:
        if b"Inf" in inner or b"NaN" in inner:
            return
        ok = False
    body = (b'{"instances": [1], "x": ' + b'[{"k": ' * 600 + bytes(inner) + b"}]" * 600
            + b', "inputs": 2}')
    try:
        doc = jt.parse_json(body)
    except ServingError as err:
        assert not ok and err.http_status == 400 and "JSON Parse error" in err.message
    else:
        assert ok and doc == {"instances": [1], "inputs": 2}


# ---------------------------------------------------------------- JSON -> arrays


def test_json_to_array_dtypes():
    arr = jt.json_to_array([[1, 2.5], [3, 4]], "DT_FLOAT")
    assert arr.dtype == np.float32 and arr.shape == (2, 2)
    assert jt.json_to_array(7, "DT_INT64").shape == ()
    assert jt.json_to_array([True, False], "DT_BOOL").tolist() == [True, False]
    assert jt.json_to_array([2**64 - 1], "DT_UINT64").tolist() == [2**64 - 1]
    strings = jt.json_to_array(["héllo", {"b64": base64.b64encode(b"\x00\xff").decode()}],
                               "DT_STRING")
    assert strings.tolist() == ["héllo".encode(), b"\x00\xff"]
    assert jt.json_to_array([[], []], "DT_FLOAT").shape == (2, 0)
    assert jt.json_to_array({"b64": "aGVsbG8"}, "DT_STRING").tolist() == b"hello"  # no padding


def test_numbers_convert_as_tf_serving_converts_them():
    # json_tensor_test.cc FloatTensorWithPrecisionLoss (b/181409782: no lossless check).
    assert jt.json_to_array([1435774380], "DT_FLOAT").tolist() == [np.float32(1435774380)]
    assert jt.json_to_array([2**24 + 1, 2**53 + 1], "DT_FLOAT").dtype == np.float32
    assert jt.json_to_array([2**53 + 1], "DT_DOUBLE").tolist() == [float(2**53)]
    # FloatTensorThatExceedsMaxReturnsInf / ...MinReturnsZero (rapidjson GetFloat is a cast).
    assert jt.json_to_array([1.79769e308, -1.79769e308], "DT_FLOAT").tolist() == [
        math.inf, -math.inf]
    assert jt.json_to_array([2.22507e-308], "DT_FLOAT").tolist() == [0.0]
    # MixedInputForFloatTensor / MixedInputForDoubleTensor: ints and floats mix.
    assert jt.json_to_array([1, 2.0, 5.003], "DT_DOUBLE").tolist() == [1.0, 2.0, 5.003]
    # AddValueToTensor: int8/int16/uint8 take any int32 (rapidjson IsInt), narrowed as C does.
    assert jt.json_to_array([300, -1], "DT_UINT8").tolist() == [44, 255]
    assert jt.json_to_array([-129], "DT_INT8").tolist() == [127]
    nan = jt.json_to_array([float("nan"), float("inf")], "DT_FLOAT")
    assert np.isnan(nan[0]) and np.isinf(nan[1])


@pytest.mark.parametrize("value,dtype,fragment", [
    (["a"], "DT_FLOAT", 'JSON Value: "a" Type: String is not of expected type: float'),
    ([True], "DT_FLOAT", "Type: True is not of expected type: float"),
    ([1.0], "DT_INT32", "JSON Value: 1.0 Type: Number is not of expected type: int32"),
    ([2**31], "DT_INT32", "is not of expected type: int32"),
    ([2**31], "DT_UINT8", "is not of expected type: uint8"),
    ([-1], "DT_UINT64", "is not of expected type: uint64"),
    ([2**32], "DT_UINT32", "is not of expected type: uint32"),
    ([2**63], "DT_INT64", "is not of expected type: int64"),
    ([1], "DT_BOOL", "is not of expected type: bool"),
    ([1], "DT_STRING", "is not of expected type: string"),
    ([{"a": 1}], "DT_FLOAT", "Type: Object is not of expected type: float"),
    ([None], "DT_FLOAT", "Type: Null"),
    ([[1, 2], [3]], "DT_FLOAT", "Encountered list at unexpected size: 1 at level: 1"),
    ([[1, 2], 3], "DT_FLOAT", "JSON Value: 3 found at incorrect level: 2"),
    ([1, [2]], "DT_FLOAT", "Encountered list at unexpected level: 1 expected < 1"),
    ([{"b64": "!!!"}], "DT_STRING", "Unable to base64 decode"),
    ([{"b64": 1}], "DT_STRING", "not formatted correctly for base64 data"),
    ([{"b64": "AA", "x": 1}], "DT_STRING", "not formatted correctly for base64 data"),
    # FillTensorProto goes depth first: the first bad value in document order is reported.
    ([[1, "a"], [2]], "DT_INT32", 'JSON Value: "a" Type: String'),
])
def test_json_to_array_rejects(value, dtype, fragment):
    err = error_of(jt.json_to_array, value, dtype)
    assert err.http_status == 400
    assert fragment in err.message


def test_unsupported_dtype_is_unimplemented():
    err = error_of(jt.json_to_array, [1.0], "DT_HALF")
    assert err.code == "UNIMPLEMENTED" and "Conversion of JSON Value: 1.0 to type: half" in (
        err.message)


def test_deep_nesting_is_refused():
    value: list = [1.0]
    for _ in range(100):
        value = [value]
    assert "nested more than" in error_of(jt.json_to_array, value, "DT_FLOAT").message


# ---------------------------------------------------------------- predict requests


def test_row_and_columnar_formats():
    fmt, tensors = jt.decode_predict({"instances": [[1, 2, 3], [4, 5, 6]]}, ADDER)
    assert fmt == jt.ROW and tensors["x"].shape == (2, 3)
    fmt, tensors = jt.decode_predict({"inputs": {"x": [[1, 2, 3]]}}, ADDER)
    assert fmt == jt.COLUMNAR and tensors["x"].shape == (1, 3)
    fmt, tensors = jt.decode_predict({"instances": [{"x": [1, 2, 3]}]}, ADDER)
    assert tensors["x"].tolist() == [[1, 2, 3]]
    _, tensors = jt.decode_predict({"inputs": 5}, RUNIF)
    assert tensors["N"].shape == () and tensors["N"].dtype == np.int32
    _, tensors = jt.decode_predict(
        {"instances": [{"data": "a", "times": 1}, {"data": {"b64": "AP8="}, "times": 2}]}, TWO)
    assert tensors["data"].tolist() == [b"a", b"\x00\xff"] and tensors["times"].tolist() == [1, 2]
    _, tensors = jt.decode_predict({"inputs": {"b64": "AP8="}}, IMAGE)
    assert tensors["input_img"].shape == ()
    # 'inputs' keys that are not inputs are ignored (FillTensorMapFromInputsMap).
    _, tensors = jt.decode_predict({"inputs": {"data": ["a"], "times": [1], "zz": 1}}, TWO)
    assert set(tensors) == {"data", "times"}


def test_shapes_are_not_checked_against_the_signature():
    # TF Serving's FillPredictRequestFromJson reads only dtypes from the TensorInfo map; the
    # graph decides. Issue 14: {"instances": [1.0, 2.0, 5.0]} to half_plus_two ([-1, 1]).
    _, tensors = jt.decode_predict({"instances": [[1, 2]]}, ADDER)
    assert tensors["x"].shape == (1, 2)
    _, tensors = jt.decode_predict({"inputs": [1, 2, 3]}, ADDER)
    assert tensors["x"].shape == (3,)
    _, tensors = jt.decode_predict({"instances": [3]}, RUNIF)
    assert tensors["N"].shape == (1,)


@pytest.mark.parametrize("doc,sig,fragment", [
    ({"instances": [[1, 2, 3]], "inputs": [[1, 2, 3]]}, ADDER,
     "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist"),
    ({"signature_name": "serving_default"}, ADDER, "Missing 'inputs' or 'instances' key"),
    ({"instances": []}, ADDER, "No values in 'instances' array"),
    ({"instances": {"x": 1}}, ADDER, "Expecting 'instances' to be an list/array"),
    ({"instances": ["a"]}, TWO, "instances is a plain list"),
    ({"instances": [{"b64": "AA=="}]}, TWO, "instances is a plain list"),
    ({"inputs": ["a"]}, TWO, "inputs is a plain value/list"),
    ({"inputs": {"data": ["a"]}}, TWO, "Missing named input: times in 'inputs' object."),
    ({"instances": [{"data": "a", "times": 1, "zz": 1}]}, TWO,
     "Failed to process element: 0 key: zz of 'instances' list. Error: INVALID_ARGUMENT: "
     "JSON object: does not have named input: zz"),
    ({"instances": [{"data": "a"}]}, TWO,
     "Failed to process element: 0 of 'instances' list. JSON object: {\"data\":\"a\"} keys "
     "must be equal to: data,times"),
    ({"instances": [{"data": "a", "times": 1}, ["b", 2]]}, TWO,
     "Expecting object but got list at item 1 of input list"),
    ({"instances": [[1, 2, 3], {"x": [1, 2, 3]}]}, ADDER,
     "Expecting value/list but got object at item 1 of input list"),
    # json_tensor_test.cc SingleUnnamedTensorErrors.
    ({"instances": [[1, 2], [3, 4], [5, 6, 7]]}, ADDER,
     "Failed to process element: 2 of 'instances' list. Error: INVALID_ARGUMENT: Expecting "
     "tensor size: 2 but got: 3"),
    ({"instances": [[1, 2], [3, 4], [[5, 6]]]}, ADDER, "Expecting shape [2] but got: [1,2]"),
    ({"instances": [1, [1]]}, ADDER, "Expecting shape [] but got: [1]"),
    ({"instances": [[1, 2], ["a", "b"]]}, ADDER, "not of expected type"),
    # json_tensor_test.cc MultipleNamedTensorErrors.
    ({"instances": [{"data": ["a"], "times": [1]}, {"data": [["b"]], "times": [2]}]}, TWO,
     "Failed to process element: 1 key: data of 'instances' list. Error: INVALID_ARGUMENT: "
     "Expecting shape [1] but got: [1,1]"),
    ({"instances": [{"data": ["a", "b"], "times": [1]}, {"data": ["c"], "times": [2]}]}, TWO,
     "Expecting tensor size: 2 but got: 1"),
])
def test_predict_request_errors(doc, sig, fragment):
    err = error_of(jt.decode_predict, doc, sig)
    assert err.http_status == 400
    assert fragment in err.message


def test_unimplemented_dtype_in_rows_is_a_400():
    # AddInstanceItem's error goes through InvalidArgument("... Error: ", status.ToString()).
    half = jt.SignatureSpec("s", jt.PREDICT_METHOD, {"h": jt.TensorSpec("h", "DT_HALF", None)})
    err = error_of(jt.decode_predict, {"instances": [1.0]}, half)
    assert err.http_status == 400 and "Error: UNIMPLEMENTED: Conversion of JSON" in err.message
    assert error_of(jt.decode_predict, {"inputs": [1.0]}, half).http_status == 501
    # No value to convert: TF Serving feeds an empty tensor of the input's dtype (and the
    # session checks dtypes), so the empty array has it too.
    for dtype, expected in (("DT_HALF", "float16"), ("DT_BFLOAT16", "bfloat16"),
                            ("DT_COMPLEX64", "complex64")):
        sig = jt.SignatureSpec("s", jt.PREDICT_METHOD, {"h": jt.TensorSpec("h", dtype, None)})
        _, arrays = jt.decode_predict({"inputs": [[]]}, sig)
        assert arrays["h"].dtype.name == expected and arrays["h"].shape == (1, 0)


def test_signature_without_inputs():
    empty = jt.SignatureSpec("init", "", {}, {})
    assert "Failed to get input map" in error_of(jt.decode_predict, {"inputs": 1}, empty).message


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() |
    st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) |
    st.dictionaries(st.sampled_from(["x", "N", "data", "times", "b64", "inputs", "instances",
                                     "input_img", "zz"]), children, max_size=3),
    max_leaves=20)


@settings(max_examples=400, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(["instances", "inputs"]), value=JSON,
       sig=st.sampled_from(SIGNATURES))
def test_decode_predict_never_crashes(key, value, sig):
    """Any JSON either decodes to arrays of the signature's dtypes or is a ServingError."""
    try:
        fmt, tensors = jt.decode_predict({key: value}, sig)
    except ServingError as err:
        assert 400 <= err.http_status < 500
        return
    for alias, arr in tensors.items():
        assert isinstance(arr, np.ndarray)
        dtype = sig.inputs[alias].dtype
        assert arr.dtype == (object if dtype == "DT_STRING" else jt._DTYPES[dtype][1])


# ---------------------------------------------------------------- responses


def reference_text(value: float, double: bool = False) -> str:
    """WriteDecimal (json_tensor.cc), written plainly: the slow, obvious version."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    text = format(value, "g")
    reads_back = float(text) == value if double else np.float32(text) == np.float32(value)
    if not reads_back:
        text = format(value, ".17g" if double else ".9g")
    return text if "." in text or "e" in text else text + ".0"


def test_float_formatting_is_tf_servings():
    # json_tensor_test.cc FromJsonSingleFloatTensorSixDigitPrecision.
    out = {"float_tensor": np.array([[9000000, 999999, 0.5], [0.0003, 0.00003, 555557.5]],
                                    np.float32)}
    assert jt.encode_predict(out, jt.ROW) == (
        b'{"predictions":[[9e+06,999999.0,0.5],[0.0003,3e-05,555557.5]]}')
    assert jt.float_texts(np.float32([0.1, 0.3, 1 / 3, -0.0, 1e-45, 3.4028235e38])) == [
        "0.1", "0.3", "0.333333343", "-0.0", "1.4013e-45", "3.40282347e+38"]
    assert jt.float_texts(np.float64([0.1, 1 / 3, 2.0**60])) == [
        "0.1", "0.33333333333333331", "1.152921504606847e+18"]


@settings(max_examples=200, deadline=None, database=None)
@given(values=st.lists(st.floats(width=32), max_size=50))
def test_float_texts_match_the_plain_rule(values):
    arr = np.array(values, dtype=np.float32)
    texts = jt.float_texts(arr)
    assert texts == [reference_text(float(v)) for v in arr]
    for text, v in zip(texts, arr, strict=True):
        assert np.isnan(v) or np.float32(json.loads(text)) == v


def test_float_texts_on_random_bit_patterns():
    rng = np.random.default_rng(14)
    arr = rng.integers(0, 2**32, size=20000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    short = np.float32([float(format(v, "g")) for v in rng.uniform(-1e6, 1e6, 5000)])
    arr = np.concatenate([arr, short])
    expected = [reference_text(float(v)) for v in arr]
    assert jt.float_texts(arr) == expected
    # Small arrays take a plain loop instead of array arithmetic: same texts.
    assert [t for i in range(0, 4000, 8) for t in jt.float_texts(arr[i:i + 8])] == expected[:4000]
    doubles = np.concatenate([rng.integers(0, 2**63, size=2000, dtype=np.int64).view(np.float64),
                              np.float64([0.1, 1 / 3, 2.0**60, 1e22, 123456.0, -0.0])])
    expected = [reference_text(float(v), double=True) for v in doubles]
    assert jt.float_texts(doubles) == expected
    assert [t for i in range(0, 2000, 8) for t in jt.float_texts(doubles[i:i + 8])] == (
        expected[:2000])


def _reference_json(value: np.ndarray) -> str:
    """A float32 tensor as JSON, built plainly from reference_text."""
    if value.ndim == 0:
        return reference_text(float(value))
    return "[" + ",".join(_reference_json(item) for item in value) + "]"


@pytest.mark.parametrize("shape", [(40,), (7, 3001), (3, 5, 2200), (17000, 1), (2, 1, 1, 9000)])
def test_large_float32_tensors_are_written_as_the_plain_rule(shape):
    """Large float32 tensors take the vectorised writer (chunks of json_tensor._CHUNK values,
    whose bounds fall inside rows here): the same text as the rule applied value by value."""
    rng = np.random.default_rng(sum(shape))
    bits = rng.integers(0, 2**32, size=shape, dtype=np.uint64).astype(np.uint32)
    arr = np.where(rng.random(shape) < 0.5, bits.view(np.float32),
                   np.float32(rng.standard_normal(shape)))
    arr.flat[::97] = 0.0
    arr.flat[1::89] = -0.0
    arr.flat[2::83] = np.inf
    arr.flat[3::79] = np.nan
    assert arr.size > jt._SMALL_FLOATS
    expected = _reference_json(arr)
    assert jt._tensor_json("y", arr, rows=False) == [expected.encode()]
    assert jt._tensor_json("y", arr, rows=True) == [_reference_json(row).encode() for row in arr]
    assert jt.float_texts(arr) == [reference_text(float(v)) for v in arr.ravel()]


def test_encode_row_and_columnar():
    out = {"output_0": np.array([[0.1, 3.0], [1e-7, 2.5]], dtype=np.float32)}
    assert jt.encode_predict(out, jt.ROW) == b'{"predictions":[[0.1,3.0],[1e-07,2.5]]}'
    assert jt.encode_predict(out, jt.COLUMNAR) == b'{"outputs":[[0.1,3.0],[1e-07,2.5]]}'
    two = {"b": np.array([1, 2], dtype=np.int64),
           "a_bytes": np.array([b"\x00", b"z"], dtype=object)}
    row = json.loads(jt.encode_predict(two, jt.ROW))
    assert row == {"predictions": [{"a_bytes": {"b64": "AA=="}, "b": 1},
                                   {"a_bytes": {"b64": "eg=="}, "b": 2}]}
    col = json.loads(jt.encode_predict(two, jt.COLUMNAR))
    assert col == {"outputs": {"a_bytes": [{"b64": "AA=="}, {"b64": "eg=="}], "b": [1, 2]}}
    scalar = {"output_0": np.array(b"label", dtype=object)}
    assert jt.encode_predict(scalar, jt.COLUMNAR) == b'{"outputs":"label"}'


def test_encode_multiple_named_tensors():
    # json_tensor_test.cc FromJsonMultipleNamedTensors.
    tensors = {
        "int_tensor": np.arange(12, dtype=np.int32).reshape(2, 3, 2) % 10,
        "str_tensor": np.array([[b"foo", b"bar"], [b"baz", b"bat"]], dtype=object),
        "float_tensor": np.float32([[1.0], [2.0]]),
        "double_scalar_tensor": np.float64([8.0, 9.0]),
        "str_tensor_bytes": np.array([[b"hello", b"world"], [b"tf", b"serving"]], dtype=object),
    }
    row = json.loads(jt.encode_predict(tensors, jt.ROW))
    assert row["predictions"][1] == {
        "double_scalar_tensor": 9.0, "float_tensor": [2.0],
        "int_tensor": [[6, 7], [8, 9], [0, 1]], "str_tensor": ["baz", "bat"],
        "str_tensor_bytes": [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}]}
    columnar = json.loads(jt.encode_predict(tensors, jt.COLUMNAR))["outputs"]
    assert columnar["double_scalar_tensor"] == [8.0, 9.0]
    assert columnar["str_tensor_bytes"][0] == [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}]


def test_encode_nonfinite_like_tf_serving():
    # json_tensor_test.cc FromJsonSingleFloatTensorNonFinite.
    out = {"y": np.array([np.nan, np.inf, -np.inf, 0.1], dtype=np.float32)}
    assert jt.encode_predict(out, jt.COLUMNAR) == b'{"outputs":[NaN,Infinity,-Infinity,0.1]}'


def test_encode_zero_batch():
    # json_tensor_test.cc FromJsonSingleZeroBatchTensor / FromJsonMultipleZeroBatchTensors.
    assert jt.encode_predict({"i": np.zeros((0, 2), np.int32)}, jt.ROW) == b'{"predictions":[]}'
    two = {"s": np.zeros((0, 1, 2), object), "f": np.zeros((0, 3, 4), np.float32)}
    assert jt.encode_predict(two, jt.ROW) == b'{"predictions":[]}'
    assert jt.encode_predict({"f": np.zeros((2, 0), np.float32)}, jt.COLUMNAR) == (
        b'{"outputs":[[],[]]}')


@pytest.mark.parametrize("outputs,fragment", [
    # json_tensor_test.cc FromJsonSingleTensorErrors, FromJsonMultipleNamedTensorsErrors,
    # FromJsonMultipleZeroBatchTensorsErrors.
    ({}, "Cannot convert empty tensor map to JSON"),
    ({"tensor": np.complex64([1, 2])}, "Failed to write JSON value for tensor type: complex64"),
    ({"tensor": np.float16([1])}, "tensor type: half"),
    ({"tensor": np.uint16([1])}, "tensor type: uint16"),
    ({"tensor": np.int32(1)}, "Tensor name: tensor has no shape information "),
    ({"a": np.zeros((2, 3), np.int32), "b": np.zeros((1, 3), object)},
     "Tensor name: b has inconsistent batch size: 1 expecting: 2"),
    ({"a": np.zeros((0, 2), np.int32), "b": np.zeros((1, 2), object)},
     "inconsistent batch size"),
])
def test_encode_row_errors(outputs, fragment):
    err = error_of(jt.encode_predict, outputs, jt.ROW)
    assert err.http_status == 400 and fragment in err.message


def test_encode_columnar_scalars_and_empty_unwritable():
    assert jt.encode_predict({"y": np.array(1.0, dtype=np.float32)}, jt.COLUMNAR) == (
        b'{"outputs":1.0}')
    for scalar, text in ((np.int64(600_000), b"600000"), (np.bool_(True), b"true"),
                         (np.uint64(2**64 - 1), b"18446744073709551615"),
                         (np.array(b"x", dtype=object), b'"x"')):
        assert jt.encode_predict({"y": np.asarray(scalar)}, jt.COLUMNAR) == (
            b'{"outputs":' + text + b"}")
    assert jt.encode_predict({"a": np.int32(1), "b": np.float64(0.5)}, jt.COLUMNAR) == (
        b'{"outputs":{"a":1,"b":0.5}}')
    # TF Serving fails on a type only when it writes a value of it.
    assert jt.encode_predict({"c": np.zeros((0,), np.complex64)}, jt.COLUMNAR) == (
        b'{"outputs":[]}')


def test_predict_response_is_the_encoded_body_parsed():
    out = {"score": np.array([0.1, np.nan], dtype=np.float32),
           "label": np.array([b"cat", b"\xff"], dtype=object),
           "raw_bytes": np.array([b"ok", b"\xff"], dtype=object)}
    row = jt.predict_response(out, jt.ROW)["predictions"]
    assert row[0] == {"label": "cat", "raw_bytes": {"b64": "b2s="}, "score": 0.1}
    assert row[1]["label"] == "\ufffd" and row[1]["raw_bytes"] == {"b64": "/w=="}
    assert np.isnan(row[1]["score"])
    columnar = jt.predict_response({"n": np.array([[1, 2]], np.int64)}, jt.COLUMNAR)
    assert columnar == {"outputs": [[1, 2]]}
    assert jt.predict_response({"y": np.array(2.5, np.float32)}, jt.COLUMNAR) == {
        "outputs": 2.5}


def test_classify_and_regress_encoding():
    # json_tensor_test.cc JsonFromClassificationResult / JsonFromRegressionResult(WithNonFinite),
    # over the outputs as tfserving.classification checks them (PostProcess*Result).
    outputs = {"classes": np.array([[b"car", b"bike", b"bus"]] * 2, dtype=object),
               "scores": np.float32([[0.2, 0.7, 0.1], [0.7, 0.1, 0.2]])}
    classes, scores = classification.classification_arrays(outputs, 2)
    assert jt.classify_json(classes, scores, 2) == (
        b'{"results":[[["car",0.2],["bike",0.7],["bus",0.1]],'
        b'[["car",0.7],["bike",0.1],["bus",0.2]]]}')
    # Without scores (or classes) the proto's defaults are written: 0.0 (or "").
    assert jt.classify_json(None, scores[:1, :2], 1) == b'{"results":[[["",0.2],["",0.7]]]}'
    assert jt.classify_json(classes[:1, :1], None, 1) == b'{"results":[[["car",0.0]]]}'
    values = classification.regression_values(
        {"outputs": np.float32([0.2, np.inf, 1.0, -np.inf, np.nan])}, 5)
    assert jt.regress_json(values) == b'{"results":[0.2,Infinity,1.0,-Infinity,NaN]}'
    values = classification.regression_values({"outputs": np.float32([[42.0]])}, 1)
    assert jt.regress_json(values) == b'{"results":[42.0]}'
    err = error_of(classification.regression_values, {"outputs": np.zeros((1, 2), np.float32)}, 1)
    assert "[batch_size] or [batch_size, 1]" in err.message
    # JsonFromResultErrors.
    assert "empty RegressionResults" in error_of(
        jt.regress_json, np.zeros((0,), np.float32)).message
    assert "empty ClassificationResults" in error_of(
        jt.classify_json, None, np.zeros((0, 1), np.float32), 0).message


def test_examples_from_json():
    from tensorflow.core.example import example_pb2

    serialized = jt.decode_examples(
        {"context": {"c": "ctx", "x": 1.0},
         "examples": [{"x": 2.5, "n": [1, 2], "flag": True, "raw": {"b64": "AP8="}}, {},
                      {"x": 1e300, "mix": [1, True, False], "big": [2**64 + 5]}]},
        "classify")
    first, second, third = (example_pb2.Example.FromString(s) for s in serialized)
    features = first.features.feature
    assert features["x"].float_list.value == [2.5]
    assert features["n"].int64_list.value == [1, 2]
    assert features["flag"].int64_list.value == [1]
    assert features["raw"].bytes_list.value == [b"\x00\xff"]
    assert features["c"].bytes_list.value == [b"ctx"]
    assert second.features.feature["x"].float_list.value == [1.0]
    # GetFloat is a cast: beyond float32's range is Infinity (no precision check).
    assert third.features.feature["x"].float_list.value == [math.inf]
    # json_tensor_test.cc RequestWithContextAndSignature: "intboolmix": [1, true, false].
    assert third.features.feature["mix"].int64_list.value == [1, 1, 0]
    assert third.features.feature["big"].float_list.value == [np.float32(2**64 + 5)]


@pytest.mark.parametrize("doc,fragment", [
    # json_tensor_test.cc ClassifyRegressRequestTest JsonErrors, and json_tensor.cc wording.
    ({}, "When method is classify, key 'examples' is expected and was not found"),
    ({"context": [{"names": ["foo", "bar"]}]}, "Example must be JSON object"),
    ({"examples": {"names": ["foo", "bar"]}}, "Expecting 'examples' value to be an list/array"),
    ({"examples": [[{"names": ["foo", "bar"]}]]}, "Example must be JSON object"),
    ({"examples": []}, "'examples' value is an empty array"),
    ({"examples": [1]}, "Example must be JSON object but got JSON Number"),
    ({"examples": [{"names": [10, None]}]}, "names has element with unexpected JSON type: Null"),
    ({"examples": [{"names": [10, 10.0]}]}, "feature: names expecting type: int64"),
    ({"examples": [{"names": [10, {"test": 10}]}]},
     "names has element with unexpected JSON type: Object"),
    ({"examples": [{"names": [[10], 20]}]}, "names has element with unexpected JSON type: Array"),
    ({"examples": [{"names": [20, 18446744073709551603]}]}, "Only int64_t is supported"),
    # The kind is checked before the value (AddValueToFeature).
    ({"examples": [{"x": [1, {"b64": "!!"}]}]}, "feature: x expecting type: int64"),
])
def test_example_errors(doc, fragment):
    err = error_of(jt.decode_examples, doc, "regress")
    assert err.http_status == 400 and fragment in err.message


def test_example_signature_checks():
    # classifier.cc / regressor.cc: Get*SignatureDef, then PreProcess*; the method_name is
    # checked only with --enable_signature_method_name_check (off by default).
    inputs = {"inputs": jt.TensorSpec("inputs", "DT_STRING", None)}
    regress = jt.SignatureSpec("r", classification.REGRESS_METHOD, inputs,
                               {"outputs": jt.TensorSpec("outputs", "DT_FLOAT", (-1, 1))})
    as_predict = jt.SignatureSpec("p", jt.PREDICT_METHOD, inputs, regress.outputs)
    sigs = {"serving_default": ADDER, "r": regress, "p": as_predict}
    check = classification.example_signature
    assert check(sigs, "r", classification.REGRESS_METHOD) == ("inputs", ("outputs",))
    assert check(sigs, "p", classification.REGRESS_METHOD) == ("inputs", ("outputs",))
    with pytest.raises(ServingError, match="No signature was found with the name: nope"):
        check(sigs, "nope", classification.CLASSIFY_METHOD)
    with pytest.raises(ServingError, match="No classification inputs found in SignatureDef"):
        check(sigs, "serving_default", classification.CLASSIFY_METHOD)
    with pytest.raises(ServingError, match='at least one of "classes" or "scores"'):
        check(sigs, "r", classification.CLASSIFY_METHOD)


# ---------------------------------------------------------------- client helpers


def test_client_b64_helpers():
    value = {"a": b"\x00\xff", "b": [bytearray(b"z"), "text", 1.5], "c": np.array([1, 2])}
    encoded = encode_b64(value)
    assert encoded == {"a": {"b64": "AP8="}, "b": [{"b64": "eg=="}, "text", 1.5], "c": [1, 2]}
    assert decode_b64(encoded) == {"a": b"\x00\xff", "b": [b"z", "text", 1.5], "c": [1, 2]}
