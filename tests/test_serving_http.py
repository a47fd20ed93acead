"""The real server, as a subprocess, over HTTP: formats, shapes, b64, errors, metrics, client."""

from __future__ import annotations

import base64
import concurrent.futures
import http.client as httplib
import inspect
import json
import os
import time

import httpx
import pytest

from serving import http as http_module
from serving import main as main_module
from serving.client import ServingClient, ServingClientError, decode_b64
from serving.main import serve
from tests import serving_fixtures as sf

pytestmark = pytest.mark.slow

MODELS = ("sum_two", "fun_runif", "mobilenet_v2_test", "bytes_echo", "half_plus_two", "busy")
MAX_BODY = 2_000_000
OK_STATUS = {"model_version_status": [
    {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("http")
    root = base / "serving"
    for model in MODELS:
        sf.add_version(str(root), model, 1, model)
    sf.add_version(str(base / "outside"), "secret", 1, "sum_two")
    os.symlink(base / "outside" / "secret", root / "escape")
    with sf.running_server(str(root), "sum_two", "--max-body-bytes", str(MAX_BODY)) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def raw(server, method: str, path: str, body: bytes | str | None = None) -> tuple[int, dict]:
    """Sends the path exactly as given (no URL normalisation) and parses the JSON answer."""
    conn = httplib.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    return response.status, json.loads(data)


def post(http, model: str, payload, verb: str = "predict", prefix: str = "") -> httpx.Response:
    return http.post(f"/v1/models/{model}{prefix}:{verb}", content=json.dumps(payload))


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


# ------------------------------------------------------------------ status, metadata


def test_status_json_shape(http):
    for path in ("/v1/models/sum_two", "/v1/models/sum_two/versions/1"):
        response = http.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == OK_STATUS


def test_status_by_label_lists_every_version(http):
    """TF Serving's GetModelStatus reads the model spec's name and version only
    (get_model_status_impl.cc GetModelStatusWithModelSpec: no version, so every version of
    the model), and FillModelSpecWithNameVersionAndLabel (http_rest_api_util.cc) only copies
    the label: status by label, even an unknown one, is the model's status."""
    for label in ("stable", "x", "no%20such"):
        response = http.get(f"/v1/models/sum_two/labels/{label}")
        assert response.status_code == 200, response.text
        assert response.json() == OK_STATUS
    response = http.get("/v1/models/nope/labels/stable")
    assert response.status_code == 404
    assert response.json() == {"error": "Could not find any versions of model nope"}


def test_metadata_json_shape(http):
    response = http.get("/v1/models/sum_two/metadata")
    assert response.status_code == 200
    body = response.json()
    assert body["model_spec"] == {"name": "sum_two", "signature_name": "", "version": "1"}
    sigs = body["metadata"]["signature_def"]["signature_def"]
    assert set(sigs) == {"serving_default", "__saved_model_init_op"}
    default = sigs["serving_default"]
    dims = [{"size": "-1", "name": ""}, {"size": "3", "name": ""}]
    assert default["inputs"] == {"x": {
        "dtype": "DT_FLOAT", "tensor_shape": {"dim": dims, "unknown_rank": False},
        "name": "serving_default_x:0"}}
    assert list(default["outputs"]) == ["output_0"]
    assert default["outputs"]["output_0"]["dtype"] == "DT_FLOAT"
    assert default["outputs"]["output_0"]["tensor_shape"] == {"dim": dims, "unknown_rank": False}
    assert default["method_name"] == "tensorflow/serving/predict"
    assert default["defaults"] == {}
    assert http.get("/v1/models/sum_two/versions/1/metadata").json() == body


def test_metadata_of_tf1_classify_signature(http):
    sigs = http.get("/v1/models/half_plus_two/metadata").json()[
        "metadata"]["signature_def"]["signature_def"]
    assert sigs["classify_x_to_y"] == {
        "inputs": {"inputs": {"dtype": "DT_STRING",
                              "tensor_shape": {"dim": [{"size": "-1", "name": ""}],
                                               "unknown_rank": False},
                              "name": "tf_example:0"}},
        "outputs": sigs["classify_x_to_y"]["outputs"],
        "method_name": "tensorflow/serving/classify",
        "defaults": {},
    }
    assert set(sigs["classify_x_to_y"]["outputs"]) == {"classes", "scores"}
    assert sigs["regress_x_to_y"]["method_name"] == "tensorflow/serving/regress"


# ------------------------------------------------------------------ predict, every format


def test_sum_two_row_and_columnar(http):
    rows = {"instances": [[1.0, 2.0, 3.0], [-1.5, 0.0, 10.25]]}
    expected = [[3.0, 4.0, 5.0], [0.5, 2.0, 12.25]]
    assert post(http, "sum_two", rows).json() == {"predictions": expected}
    assert post(http, "sum_two", {"instances": [{"x": [1.0, 2.0, 3.0]}]}).json() == {
        "predictions": [[3.0, 4.0, 5.0]]}
    assert post(http, "sum_two", {"inputs": [[1.0, 2.0, 3.0], [-1.5, 0.0, 10.25]]}).json() == {
        "outputs": expected}
    assert post(http, "sum_two", {"inputs": {"x": [[0.1, 0.2, 0.3]]}}).json() == {
        "outputs": [[2.1, 2.2, 2.3]]}
    explicit = dict(rows, signature_name="serving_default")
    assert post(http, "sum_two", explicit, prefix="/versions/1").json() == {"predictions": expected}


def test_float_overflow_is_infinity(http):
    """TF Serving narrows a JSON number to float32 (json_tensor.cc, AddValueToTensor:
    ``add_float_val(val.GetFloat())``), so 1e39 becomes Infinity and 16777217 the float
    16777216, and writes non-finite floats as the tokens ``Infinity``/``-Infinity``/``NaN``
    (WriteDecimal; 16777218 does not survive '%g', so it gets 9 digits and '.0')."""
    response = post(http, "sum_two", {"instances": [[1e39, -1e39, 16777217]]})
    assert response.status_code == 200, response.text
    assert response.text.replace(" ", "") == \
        '{"predictions":[[Infinity,-Infinity,16777218.0]]}'
    assert json.loads(response.text) == {"predictions": [[float("inf"), float("-inf"),
                                                          16777218.0]]}


def test_fun_runif_columnar_only(http):
    for payload in ({"inputs": {"N": 5}}, {"inputs": 5}):
        response = post(http, "fun_runif", payload)
        assert response.status_code == 200, response.text
        values = response.json()["outputs"]
        assert len(values) == 5 and all(0.0 <= v < 1.0 for v in values)
    # Row format makes N a [1] vector; TensorFlow rejects it as TF Serving's session does.
    response = post(http, "fun_runif", {"instances": [5]})
    assert response.status_code == 400
    assert "shape must be a vector of {int32,int64}, got shape [1,1]" in response.json()["error"]


def test_mobilenet_jpeg_in_label_out(http):
    black, white = sf.jpeg(0), sf.jpeg(255)
    assert post(http, "mobilenet_v2_test", {"inputs": [b64(black)]}).json() == {
        "outputs": ["black"]}
    assert post(http, "mobilenet_v2_test", {"inputs": b64(white)}).json() == {
        "outputs": ["white"]}
    assert post(http, "mobilenet_v2_test", {"inputs": {"input_img": b64(white)}}).json() == {
        "outputs": ["white"]}
    # Row format works for one image (as with TF Serving) but the model takes one JPEG per
    # call, so a batch of two is the 400 TensorFlow reports.
    assert post(http, "mobilenet_v2_test", {"instances": [b64(black)]}).json() == {
        "predictions": ["black"]}
    response = post(http, "mobilenet_v2_test", {"instances": [b64(black), b64(white)]})
    assert response.status_code == 400
    assert "Input to reshape is a tensor with 2 values" in response.json()["error"]
    response = post(http, "mobilenet_v2_test", {"inputs": [b64(b"not a jpeg")]})
    assert response.status_code == 400


def test_b64_in_and_out(http):
    data = bytes(range(256))
    response = post(http, "bytes_echo", {"instances": [{"data": b64(data), "times": 2},
                                                       {"data": "text", "times": 1}]})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [
        {"echo_bytes": b64(data), "length": 512}, {"echo_bytes": b64(b"text"), "length": 4}]}
    response = post(http, "bytes_echo", {"inputs": {"data": [b64(b"\x00\xff")], "times": [3]}})
    assert response.json() == {"outputs": {"echo_bytes": [b64(b"\x00\xff")], "length": [6]}}
    response = post(http, "bytes_echo", {"inputs": {"data": [{"b64": "%%%"}], "times": [1]}})
    assert response.status_code == 400
    assert "Unable to base64 decode" in response.json()["error"]


def test_classify_and_regress(http):
    classify = {"signature_name": "classify_x_to_y", "examples": [{"x": 4.0}, {"x": 0.0}]}
    assert post(http, "half_plus_two", classify, "classify").json() == {
        "results": [[["pos", 4.0], ["neg", -4.0]], [["pos", 2.0], ["neg", -2.0]]]}
    regress = {"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}]}
    assert post(http, "half_plus_two", regress, "regress").json() == {"results": [42.0]}
    with_context = {"signature_name": "regress_x_to_y", "context": {"x": 1.0}, "examples": [{}]}
    assert post(http, "half_plus_two", with_context, "regress").json() == {"results": [2.5]}
    assert post(http, "half_plus_two", {"instances": [1.0, 2.0]}).json() == {
        "predictions": [2.5, 3.0]}


# REST classify/regress run as gRPC's (classifier.cc, regressor.cc): Get*SignatureDef, then
# PreProcess* checks the signature's inputs and outputs; its method_name only with
# --enable_signature_method_name_check, which is off by default.
@pytest.mark.parametrize("model,verb,payload,fragment", [
    ("sum_two", "classify", {"examples": [{"x": 1.0}]},
     "No classification inputs found in SignatureDef: serving_default"),
    ("half_plus_two", "regress", {"examples": [{"x": 1.0}]},
     "No regression inputs found in SignatureDef: serving_default"),
    ("half_plus_two", "regress", {"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}]},
     "Expected one output Tensor."),
    ("half_plus_two", "classify", {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}]},
     'Expected classification signature outputs to contain at least one of "classes" or '
     '"scores". Signature was: regress_x_to_y'),
    ("half_plus_two", "classify", {"signature_name": "nope", "examples": [{"x": 1.0}]},
     "No signature was found with the name: nope"),
    ("half_plus_two", "classify", {"signature_name": "classify_x_to_y", "examples": []},
     "'examples' value is an empty array"),
    ("half_plus_two", "classify", {"signature_name": "classify_x_to_y", "examples": [{"y": 1}]},
     "Feature: x (data type: float) is required"),
])
def test_classify_regress_errors(http, model, verb, payload, fragment):
    response = post(http, model, payload, verb)
    assert response.status_code == 400
    assert fragment in response.json()["error"]
    assert 'File "' not in response.json()["error"]  # no server stack traces


# ------------------------------------------------------------------ errors


ERRORS = [
    # unknown model / version / label / signature
    ("POST", "/v1/models/nope:predict", '{"instances": [1]}', 404,
     "Servable not found for request: Latest(nope)"),
    ("POST", "/v1/models/sum_two/versions/9:predict", '{"instances": [[1, 2, 3]]}', 404,
     "Servable not found for request: Specific(sum_two, 9)"),
    ("POST", "/v1/models/sum_two/labels/stable:predict", '{"instances": [[1, 2, 3]]}', 400,
     "Unrecognized servable version label: stable"),
    ("POST", "/v1/models/sum_two:predict", '{"instances": [[1, 2, 3]], "signature_name": "no"}',
     400, 'Serving signature name: "no" not found in signature def'),
    ("GET", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
    ("GET", "/v1/models/sum_two/versions/9", None, 404,
     "Could not find version 9 of model sum_two"),
    ("GET", "/v1/models/sum_two/labels/x/metadata", None, 400,
     "Unrecognized servable version label: x"),
    ("GET", "/v1/models/nope/metadata", None, 404, "Servable not found for request: Latest(nope)"),
    ("GET", "/v1/models/sum_two/versions/9/metadata", None, 404, "Specific(sum_two, 9)"),
    # malformed bodies
    ("POST", "/v1/models/sum_two:predict", "", 400, "JSON Parse error: The document is empty"),
    ("POST", "/v1/models/sum_two:predict", "instances = [1, 2]", 400, "JSON Parse error"),
    ("POST", "/v1/models/sum_two:predict", "[1, 2]", 400, "Is not object"),
    ("POST", "/v1/models/sum_two:predict", '{"instances": [[1, 2, 3]]', 400, "JSON Parse error"),
    ("POST", "/v1/models/sum_two:predict", '{"signature_name": 100}', 400,
     "'signature_name' key must be a string value."),
    ("POST", "/v1/models/sum_two:predict", "{}", 400, "Missing 'inputs' or 'instances' key"),
    ("POST", "/v1/models/sum_two:predict", '{"instances": [[1, 2, 3]], "inputs": [[1, 2, 3]]}',
     400, "expecting only one of 'inputs' or 'instances'"),
    # wrong dtypes, shapes
    ("POST", "/v1/models/sum_two:predict", '{"instances": [["x", "y", "z"]]}', 400,
     "is not of expected type: float"),
    # Feeds are checked by dtype only, as TF Serving's Session::Run does (sum_two answers
    # [[1, 2]] with [[3, 4]]); a shape the graph itself cannot take fails in TensorFlow.
    ("POST", "/v1/models/mobilenet_v2_test:predict", '{"inputs": ["a", "b"]}', 400,
     "Input to reshape is a tensor with 2 values, but the requested shape has 1"),
    # Ragged instances: each instance is read on its own, then its size is compared with
    # the first one's (json_tensor.cc, AddInstanceItem: "Expecting tensor size").
    ("POST", "/v1/models/sum_two:predict", '{"instances": [[1, 2, 3], [1, 2]]}', 400,
     "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
     "Expecting tensor size: 3 but got: 2"),
    ("POST", "/v1/models/sum_two:predict", '{"instances": [[1, 2, 3], [[1, 2, 3]]]}', 400,
     "Expecting shape [3] but got: [1,3]"),
    ("POST", "/v1/models/fun_runif:predict", '{"inputs": {"N": 2.5}}', 400,
     "is not of expected type: int32"),
    ("POST", "/v1/models/fun_runif:predict", '{"inputs": {"N": 99999999999}}', 400,
     "is not of expected type: int32"),
    ("POST", "/v1/models/mobilenet_v2_test:predict", '{"inputs": [1]}', 400,
     "is not of expected type: string"),
    # URLs
    ("GET", "/v1/models", None, 400, "Missing model name in request."),
    ("GET", "/v1/models/sum_two:predict", None, 400, "Malformed request: GET"),
    ("POST", "/v1/models/sum_two", "{}", 400, "Malformed request: POST"),
    ("PUT", "/v1/models/sum_two:predict", "{}", 400, "Malformed request: PUT"),
    ("POST", "/v1/models/sum_two/versions/99999999999999999999:predict", "{}", 400,
     "Failed to convert version"),
    ("GET", "/v1/models/../../etc/passwd", None, 400, "Malformed request"),
    ("GET", "/v1/models//etc/passwd", None, 400, "Malformed request"),
    ("GET", "/v1/models/..", None, 404, "Could not find any versions of model .."),
    ("GET", "/v1/models/..%2F..%2Fetc%2Fpasswd", None, 404, "model ../../etc/passwd"),
    ("POST", "/v1/models/%2Fetc%2Fpasswd:predict", '{"instances": [1]}', 404, "/etc/passwd"),
    ("GET", "/v1/models/escape", None, 404, "Could not find any versions of model escape"),
    ("GET", "/etc/passwd", None, 404, "Not found"),
    # "/" is the model page (serving/pages.py); other paths outside /v1/ are still 404.
    ("GET", "/v2/models/sum_two", None, 404, "Not found: /v2/models/sum_two"),
    ("GET", "/index.html", None, 404, "Not found"),
]


@pytest.mark.parametrize("method,path,body,status,fragment", ERRORS)
def test_errors(server, method, path, body, status, fragment):
    code, answer = raw(server, method, path, body)
    assert code == status, answer
    assert set(answer) == {"error"}
    assert fragment in answer["error"]


def test_body_over_limit_is_413_and_server_stays_up(server, http):
    payload = json.dumps({"instances": [[1.0, 2.0, 3.0]] * 200_000}).encode()
    assert len(payload) > MAX_BODY
    code, answer = raw(server, "POST", "/v1/models/sum_two:predict", payload)
    assert code == 413
    assert "larger than the limit" in answer["error"]
    assert post(http, "sum_two", {"instances": [[1.0, 2.0, 3.0]]}).status_code == 200


# ------------------------------------------------------------------ behaviour


def test_concurrent_requests(server):
    black = sf.jpeg(0)

    def call(i: int) -> int:
        with ServingClient(server.url) as client:
            if i % 3 == 0:
                return client.predict("sum_two", instances=[[i, i, i]])["predictions"][0][0]
            if i % 3 == 1:
                return len(client.predict("fun_runif", inputs={"N": i})["outputs"])
            return client.predict("mobilenet_v2_test", inputs=black)["outputs"][0]

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(call, range(48)))
    for i, result in enumerate(results):
        assert result == [i + 2.0, i, "black"][i % 3]


def test_dispatch_is_decided_at_load_time(server):
    """Cheap models are called on the event loop, the others on the pool; the log says so."""
    log = server.log_tail(200_000)
    assert "model sum_two: loaded version 1; calls run on the " in log
    assert "model busy: loaded version 1; calls run on the thread pool (" in log
    assert "model mobilenet_v2_test: loaded version 1; calls run on the thread pool (" in log
    threads = 1 if main_module.available_cpus() <= 2 else "TensorFlow's default"
    assert f"TensorFlow intra-op threads: {threads}; uvicorn loop uvloop, http httptools" in log


def test_large_body_to_an_inline_model(http):
    """Over INLINE_MAX_BODY_BYTES, an inline model's request runs on the pool: same answer."""
    rows = [[float(i), 0.5, -1.0] for i in range(2000)]
    payload = {"instances": rows}
    assert len(json.dumps(payload)) > http_module.INLINE_MAX_BODY_BYTES
    response = post(http, "sum_two", payload)
    assert response.status_code == 200
    assert response.json() == {"predictions": [[r[0] + 2, 2.5, 1.0] for r in rows]}


def test_tensorflow_does_not_block_the_event_loop(server, http):
    """While a long TensorFlow call runs (on the pool: the model has a loop), status and
    other predictions - sum_two's inline on the event loop - answer at once."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        slow = pool.submit(lambda: ServingClient(server.url).predict(
            "busy", inputs={"n": 600_000}))
        time.sleep(0.3)
        for _ in range(5):
            begin = time.monotonic()
            assert http.get("/v1/models/sum_two").status_code == 200
            assert post(http, "sum_two", {"instances": [[1.0, 2.0, 3.0]]}).status_code == 200
            assert time.monotonic() - begin < 0.5
        assert not slow.done(), "the busy request should still be running"
        assert slow.result(timeout=60) == {"outputs": 600_000}
        assert time.monotonic() - started > 1.0


def test_new_model_directory_is_served_within_2s(server, http):
    sf.add_version(server.root, "late_model", 1, "offset_1")
    start = time.monotonic()
    while post(http, "late_model", {"instances": [1.0]}).status_code != 200:
        assert time.monotonic() - start < 2.0, server.log_tail()
        time.sleep(0.05)
    assert post(http, "late_model", {"instances": [1.0]}).json() == {"predictions": [2.0]}


def test_metrics(server, http):
    post(http, "sum_two", {"instances": [[1.0, 2.0, 3.0]]})
    post(http, "sum_two", {"instances": "bad"})
    text = http.get("/monitoring/prometheus/metrics").text
    assert ":tensorflow:serving:request_count{model_name=\"sum_two\",version=\"1\"," \
           "API=\"predict\",entrypoint=\"REST\",status=\"OK\"}" in text
    assert "model_name=\"sum_two\",version=\"\",API=\"predict\",entrypoint=\"REST\"," \
           "status=\"INVALID_ARGUMENT\"" in text
    assert ":tensorflow:serving:request_latency_bucket{model_name=\"sum_two\",version=\"1\"," \
           "API=\"predict\",entrypoint=\"REST\",le=\"+Inf\"}" in text
    assert ":tensorflow:serving:request_latency_count{model_name=\"sum_two\"" in text


def test_loopback_is_the_default():
    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"


# ------------------------------------------------------------------ client


def test_client(server):
    with ServingClient(server.url) as client:
        assert client.status("sum_two") == OK_STATUS
        assert client.status("sum_two", version=1) == OK_STATUS
        assert client.metadata("sum_two")["model_spec"]["version"] == "1"
        assert client.predict("sum_two", instances=[[1, 2, 3]], version=1,
                              signature_name="serving_default") == {"predictions": [[3, 4, 5]]}
        assert client.predict("mobilenet_v2_test", inputs=[sf.jpeg(255)]) == {
            "outputs": ["white"]}
        echoed = client.predict("bytes_echo", instances=[{"data": b"\x00\x01", "times": 1}])
        assert decode_b64(echoed) == {"predictions": [{"echo_bytes": b"\x00\x01", "length": 2}]}
        assert client.classify("half_plus_two", [{"x": 4.0}],
                               signature_name="classify_x_to_y")["results"][0][0] == ["pos", 4.0]
        assert client.regress("half_plus_two", [{}], context={"x": 2.0},
                              signature_name="regress_x_to_y") == {"results": [3.0]}
        with pytest.raises(ServingClientError) as err:
            client.predict("nope", instances=[1])
        assert err.value.status_code == 404
        with pytest.raises(ServingClientError) as err:
            client.predict("mobilenet_v2_test", inputs=["a", "b"])
        assert err.value.status_code == 400 and "Input to reshape" in err.value.message
        with pytest.raises(ValueError):
            client.predict("sum_two")
        with pytest.raises(ServingClientError) as err:
            client.status("../../etc", label="x")  # a model name, never a path
        assert err.value.status_code == 404
        assert err.value.message == "Could not find any versions of model ../../etc"
