"""Unit tests of the REST JSON codec (no TensorFlow, no server)."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


def test_parse_json_errors_are_400():
    for body in (b"", b"   ", b"instances = [1, 2]", b"[1, 2]", b"3", b'"x"', b"null",
                 b"[" * 5000, b'{"a": "\\ud800"}'):
        err = error_of(jt.parse_json, body)
        assert err.http_status == 400, body
    assert "The document is empty" in error_of(jt.parse_json, b"").message
    assert "Is not object" in error_of(jt.parse_json, b"[1]").message


def test_parse_json_accepts_nan_and_infinity_like_tf_serving():
    doc = jt.parse_json(b'{"inputs": [NaN, Infinity, -Infinity]}')
    assert np.isnan(doc["inputs"][0]) and doc["inputs"][1:] == [float("inf"), float("-inf")]


def test_signature_name_must_be_a_string():
    assert jt.signature_name({}) == ""
    assert jt.signature_name({"signature_name": "s"}) == "s"
    err = error_of(jt.signature_name, {"signature_name": 100})
    assert "'signature_name' key must be a string value." in err.message


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


@pytest.mark.parametrize("value,dtype,fragment", [
    (["a"], "DT_FLOAT", 'JSON Value: "a" Type: String is not of expected type: float'),
    ([True], "DT_FLOAT", "Type: True is not of expected type: float"),
    ([1.0], "DT_INT32", "is not of expected type: int32"),
    ([2**31], "DT_INT32", "is not of expected type: int32"),
    ([300], "DT_UINT8", "is not of expected type: uint8"),
    ([-1], "DT_UINT64", "is not of expected type: uint64"),
    ([1], "DT_BOOL", "is not of expected type: bool"),
    ([1], "DT_STRING", "is not of expected type: string"),
    ([{"a": 1}], "DT_FLOAT", "Type: Object is not of expected type: float"),
    ([None], "DT_FLOAT", "Type: Null"),
    ([2**24], "DT_FLOAT", "to float without loss of precision"),
    ([1e39], "DT_FLOAT", "to float without loss of precision"),
    ([2**53], "DT_DOUBLE", "to double without loss of precision"),
    ([[1, 2], [3]], "DT_FLOAT", "Encountered list at unexpected size: 1 at level: 1"),
    ([[1, 2], 3], "DT_FLOAT", "found at incorrect level: 2"),
    ([1, [2]], "DT_FLOAT", "Encountered list at unexpected level: 1 expected < 1"),
    ([{"b64": "!!!"}], "DT_STRING", "Unable to base64 decode"),
    ([{"b64": 1}], "DT_STRING", "not formatted correctly for base64 data"),
    ([{"b64": "AA", "x": 1}], "DT_STRING", "not formatted correctly for base64 data"),
])
def test_json_to_array_rejects(value, dtype, fragment):
    err = error_of(jt.json_to_array, value, dtype)
    assert err.http_status == 400
    assert fragment in err.message


def test_unsupported_dtype_is_unimplemented():
    assert error_of(jt.json_to_array, [1.0], "DT_HALF").code == "UNIMPLEMENTED"


def test_deep_nesting_is_refused():
    value: list = [1.0]
    for _ in range(100):
        value = [value]
    assert "nested more than" in error_of(jt.json_to_array, value, "DT_FLOAT").message


def test_nonfinite_floats_are_accepted():
    arr = jt.json_to_array([float("nan"), float("inf")], "DT_FLOAT")
    assert np.isnan(arr[0]) and np.isinf(arr[1])


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


@pytest.mark.parametrize("doc,sig,fragment", [
    ({"instances": [[1, 2, 3]], "inputs": [[1, 2, 3]]}, ADDER, "only one of 'inputs' or"),
    ({"signature_name": "serving_default"}, ADDER, "Missing 'inputs' or 'instances' key"),
    ({"instances": []}, ADDER, "No values in 'instances' array"),
    ({"instances": {"x": 1}}, ADDER, "to be an list/array"),
    ({"instances": [[1, 2]]}, ADDER, "has shape [1, 2] but signature 'serving_default' expects"),
    ({"inputs": [1, 2, 3]}, ADDER, "has shape [3]"),
    ({"instances": [3]}, RUNIF, "use the columnar format"),
    ({"inputs": [3]}, RUNIF, "has shape [1]"),
    ({"instances": ["a"]}, TWO, "instances is a plain list"),
    ({"instances": [{"b64": "AA=="}]}, TWO, "instances is a plain list"),
    ({"inputs": ["a"]}, TWO, "inputs is a plain value/list"),
    ({"inputs": {"data": ["a"]}}, TWO, "Missing named input: times in 'inputs' object."),
    ({"instances": [{"data": "a", "times": 1, "zz": 1}]}, TWO, "does not have named input: \"zz\""),
    ({"instances": [{"data": "a"}]}, TWO, "must only have keys: data,times"),
    ({"instances": [{"data": "a", "times": 1}, ["b", 2]]}, TWO, "Expecting object but got list"),
    ({"instances": [[1, 2, 3], {"x": [1, 2, 3]}]}, ADDER, "Expecting value/list but got object"),
])
def test_predict_request_errors(doc, sig, fragment):
    err = error_of(jt.decode_predict, doc, sig)
    assert err.http_status == 400
    assert fragment in err.message


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
    """Any JSON either decodes to arrays that fit the signature or is a ServingError."""
    try:
        fmt, tensors = jt.decode_predict({key: value}, sig)
    except ServingError as err:
        assert 400 <= err.http_status < 500
        return
    for alias, arr in tensors.items():
        spec = sig.inputs[alias]
        assert isinstance(arr, np.ndarray)
        assert spec.shape is None or arr.ndim == len(spec.shape)


# ---------------------------------------------------------------- responses


def test_encode_row_and_columnar():
    out = {"output_0": np.array([[0.1, 3.0], [1e-7, 2.5]], dtype=np.float32)}
    assert jt.encode_predict(out, jt.ROW) == b'{"predictions":[[0.1,3.0],[1e-7,2.5]]}'
    assert jt.encode_predict(out, jt.COLUMNAR) == b'{"outputs":[[0.1,3.0],[1e-7,2.5]]}'
    two = {"b": np.array([1, 2], dtype=np.int64),
           "a_bytes": np.array([b"\x00", b"z"], dtype=object)}
    row = json.loads(jt.encode_predict(two, jt.ROW))
    assert row == {"predictions": [{"a_bytes": {"b64": "AA=="}, "b": 1},
                                   {"a_bytes": {"b64": "eg=="}, "b": 2}]}
    col = json.loads(jt.encode_predict(two, jt.COLUMNAR))
    assert col == {"outputs": {"a_bytes": [{"b64": "AA=="}, {"b64": "eg=="}], "b": [1, 2]}}
    scalar = {"output_0": np.array(b"label", dtype=object)}
    assert jt.encode_predict(scalar, jt.COLUMNAR) == b'{"outputs":"label"}'


def test_encode_nonfinite_like_tf_serving():
    out = {"y": np.array([np.nan, np.inf, -np.inf, 0.1], dtype=np.float32)}
    assert jt.encode_predict(out, jt.COLUMNAR) == b'{"outputs":[NaN,Infinity,-Infinity,0.1]}'


def test_encode_row_needs_a_common_batch_dimension():
    scalar = {"y": np.array(1.0, dtype=np.float32)}
    assert "has no shape information" in error_of(jt.encode_predict, scalar, jt.ROW).message
    ragged = {"a": np.zeros(2, np.float32), "b": np.zeros(3, np.float32)}
    assert "inconsistent batch size" in error_of(jt.encode_predict, ragged, jt.ROW).message
    assert jt.encode_predict(scalar, jt.COLUMNAR) == b'{"outputs":1.0}'


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
    scalar = {"y": np.array(1.0, dtype=np.float32)}
    assert "no shape information" in error_of(jt.predict_response, scalar, jt.ROW).message


def test_classify_and_regress_encoding():
    outputs = {"classes": np.array([[b"pos", b"neg"]], dtype=object),
               "scores": np.array([[0.75, 0.25]], dtype=np.float32)}
    assert json.loads(jt.encode_classify(outputs, 1)) == {
        "results": [[["pos", 0.75], ["neg", 0.25]]]}
    assert json.loads(jt.encode_regress({"outputs": np.array([[42.0]], np.float32)}, 1)) == {
        "results": [42.0]}
    err = error_of(jt.encode_regress, {"outputs": np.zeros((1, 2), np.float32)}, 1)
    assert "[batch_size] or [batch_size, 1]" in err.message


def test_examples_from_json():
    from tensorflow.core.example import example_pb2

    serialized = jt.decode_examples(
        {"context": {"c": "ctx", "x": 1.0},
         "examples": [{"x": 2.5, "n": [1, 2], "flag": True, "raw": {"b64": "AP8="}}, {}]},
        "classify")
    first, second = (example_pb2.Example.FromString(s) for s in serialized)
    features = first.features.feature
    assert features["x"].float_list.value == [2.5]
    assert features["n"].int64_list.value == [1, 2]
    assert features["flag"].int64_list.value == [1]
    assert features["raw"].bytes_list.value == [b"\x00\xff"]
    assert features["c"].bytes_list.value == [b"ctx"]
    assert second.features.feature["x"].float_list.value == [1.0]


@pytest.mark.parametrize("doc,fragment", [
    ({}, "key 'examples' is expected and was not found"),
    ({"examples": {}}, "Expecting 'examples' value to be an list/array"),
    ({"examples": []}, "'examples' value is an empty array"),
    ({"examples": [1]}, "Example must be JSON object but got JSON Number"),
    ({"examples": [{"x": [1, 2.5]}]}, "Unexpected element type in feature: \"x\""),
    ({"examples": [{"x": None}]}, "unexpected JSON type: Null"),
    ({"examples": [{"x": [[1]]}]}, "unexpected JSON type: Array"),
    ({"examples": [{"x": 2**64 - 1}]}, "has uint64 element"),
    ({"examples": [{"x": 1e300}]}, "without loss of precision"),
])
def test_example_errors(doc, fragment):
    err = error_of(jt.decode_examples, doc, "classify")
    assert err.http_status == 400 and fragment in err.message


def test_example_signature_checks():
    with pytest.raises(ServingError, match="method_name to be tensorflow/serving/classify"):
        jt.check_example_signature(ADDER, "classify")
    regress = jt.SignatureSpec(
        "r", jt.REGRESS_METHOD, {"inputs": jt.TensorSpec("inputs", "DT_STRING", None)},
        {"outputs": jt.TensorSpec("outputs", "DT_FLOAT", (-1, 1))})
    assert jt.check_example_signature(regress, "regress") == "inputs"
    with pytest.raises(ServingError, match="method_name to be tensorflow/serving/classify"):
        jt.check_example_signature(regress, "classify")


# ---------------------------------------------------------------- client helpers


def test_client_b64_helpers():
    value = {"a": b"\x00\xff", "b": [bytearray(b"z"), "text", 1.5], "c": np.array([1, 2])}
    encoded = encode_b64(value)
    assert encoded == {"a": {"b64": "AP8="}, "b": [{"b64": "eg=="}, "text", 1.5], "c": [1, 2]}
    assert decode_b64(encoded) == {"a": b"\x00\xff", "b": [b"z", "text", 1.5], "c": [1, 2]}
