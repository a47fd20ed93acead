"""The gRPC API (port 8500) against TF Serving's own expectations, with the official stubs.

- The gRPC cases of TF Serving's ``model_servers/tensorflow_model_server_test.py``
  (testPredict, testClassify, testRegress, testMultiInference, testGetModelMetadata,
  testGetModelStatus, bad model/version/signature) against ``half_plus_two`` built as
  TF Serving's ``saved_model_half_plus_two.py`` builds it, served as model ``default``,
  version 123.
- The three seed servables, exported by the project's own export code: REST and gRPC
  give the same answer to the same request (MobileNet gets raw JPEG bytes in a DT_STRING
  TensorProto).
- Hot reload and a broken new version look the same over gRPC as over REST; a call
  cancelled or past its deadline while it waits for a worker never runs.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import threading
import time

import grpc
import httpx
import numpy as np
import pytest
from google.protobuf import json_format
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tests import serving_fixtures as sf
from tfserving.tensor_proto import to_ndarray, to_proto

pytestmark = pytest.mark.slow

REPO = sf.REPO
RPC_TIMEOUT = 30.0  # TF Serving's test uses 5 s on a dedicated machine; this one is shared
HALF_PLUS_TWO_VERSION = 123
BIG = 2**31 - 1  # the clients accept what TF Serving's server may send


@contextlib.contextmanager
def grpc_server(root: str, ready_model: str, *args: str):
    """``python -m serving`` with REST and gRPC; yields the Server (``.grpc`` target added)."""
    port = sf.free_port()
    with sf.running_server(root, ready_model, "--grpc-port", str(port), *args) as server:
        server.grpc = f"127.0.0.1:{port}"
        yield server


def channel(target: str) -> grpc.Channel:
    return grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", BIG),
                                                  ("grpc.max_send_message_length", BIG)])


def rpc_error(call, request, timeout: float = RPC_TIMEOUT) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout)
    return info.value


# ------------------------------------------------------------------ TF Serving's own cases


@pytest.fixture(scope="module")
def half_plus_two(tmp_path_factory):
    """Model ``default`` = half_plus_two version 123 (TF Serving's testdata layout)."""
    tfs_testdata = pytest.importorskip(
        "tests.tfs_testdata", reason="tests/tfs_testdata.py (half_plus_two builder) not there")
    root = tmp_path_factory.mktemp("tfs") / "serving"
    tfs_testdata.build_half_plus_two(str(root / "default" / str(HALF_PLUS_TWO_VERSION)))
    with grpc_server(str(root), "default") as server:
        with channel(server.grpc) as ch:
            server.predict = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            server.models = model_service_pb2_grpc.ModelServiceStub(ch)
            yield server


def verify_model_spec(spec, name: str, signature_name: str, version: int) -> None:
    """TF Serving's _VerifyModelSpec."""
    assert spec.name == name
    assert spec.signature_name == signature_name
    assert spec.version.value == version


def predict_request(model: str = "default", signature_name: str = "serving_default",
                    specify_output: bool = True, batch_input: bool = False):
    """TF Serving's VerifyPredictRequest request: x = [2.0]."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature_name
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].float_val.append(2.0)
    request.inputs["x"].tensor_shape.dim.add().size = 1
    if batch_input:
        request.inputs["x"].tensor_shape.dim.add().size = 1
    if specify_output:
        request.output_filter.append("y")
    return request


@pytest.mark.parametrize("specify_output", [True, False])
@pytest.mark.parametrize("batch_input", [False, True])
def test_predict(half_plus_two, specify_output, batch_input):
    request = predict_request(specify_output=specify_output, batch_input=batch_input)
    result = half_plus_two.predict.Predict(request, RPC_TIMEOUT)
    assert "y" in result.outputs
    assert result.outputs["y"].dtype == types_pb2.DT_FLOAT
    assert list(result.outputs["y"].float_val) == [3.0]  # typed field, as TF Serving writes
    assert not result.outputs["y"].tensor_content
    verify_model_spec(result.model_spec, "default", "serving_default", HALF_PLUS_TWO_VERSION)


def test_predict_default_signature_and_version_are_echoed(half_plus_two):
    request = predict_request(signature_name="")
    request.model_spec.version.value = HALF_PLUS_TWO_VERSION
    result = half_plus_two.predict.Predict(request, RPC_TIMEOUT)
    verify_model_spec(result.model_spec, "default", "serving_default", HALF_PLUS_TWO_VERSION)


def test_predict_takes_tensor_content_and_large_messages(half_plus_two):
    """tf.make_tensor_proto writes tensor_content; > 4 MiB each way (gRPC's default limit)."""
    x = np.arange(2_000_000, dtype=np.float32)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    request.inputs["x"].CopyFrom(tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT, tensor_content=x.tobytes()))
    request.inputs["x"].tensor_shape.dim.add().size = x.size
    result = half_plus_two.predict.Predict(request, RPC_TIMEOUT)
    y = np.asarray(result.outputs["y"].float_val, dtype=np.float32)
    np.testing.assert_array_equal(y, 0.5 * x + 2)


def test_classify(half_plus_two):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "classify_x_to_y"
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.extend([2.0])
    result = half_plus_two.predict.Classify(request, RPC_TIMEOUT)
    assert len(result.result.classifications) == 1
    assert len(result.result.classifications[0].classes) == 1
    assert result.result.classifications[0].classes[0].score == 3.0
    verify_model_spec(result.model_spec, "default", "classify_x_to_y", HALF_PLUS_TWO_VERSION)


def test_classify_with_context(half_plus_two):
    """example_list_with_context: each example is merged over the context."""
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "classify_x_to_y"
    with_context = request.input.example_list_with_context
    with_context.context.features.feature["x"].float_list.value.extend([10.0])
    with_context.examples.add()  # x from the context
    with_context.examples.add().features.feature["x"].float_list.value.extend([2.0])
    result = half_plus_two.predict.Classify(request, RPC_TIMEOUT)
    assert [c.classes[0].score for c in result.result.classifications] == [7.0, 3.0]


def test_regress(half_plus_two):
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "regress_x_to_y"
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.extend([2.0])
    result = half_plus_two.predict.Regress(request, RPC_TIMEOUT)
    assert len(result.result.regressions) == 1
    assert result.result.regressions[0].value == 3.0
    verify_model_spec(result.model_spec, "default", "regress_x_to_y", HALF_PLUS_TWO_VERSION)


def multi_inference_request():
    request = inference_pb2.MultiInferenceRequest()
    request.tasks.add().model_spec.name = "default"
    request.tasks[0].model_spec.signature_name = "regress_x_to_y"
    request.tasks[0].method_name = "tensorflow/serving/regress"
    request.tasks.add().model_spec.name = "default"
    request.tasks[1].model_spec.signature_name = "classify_x_to_y"
    request.tasks[1].method_name = "tensorflow/serving/classify"
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.extend([2.0])
    return request


def test_multi_inference(half_plus_two):
    request = multi_inference_request()
    result = half_plus_two.predict.MultiInference(request, RPC_TIMEOUT)
    assert len(result.results) == 2
    assert result.results[0].regression_result.regressions[0].value == 3.0
    assert result.results[1].classification_result.classifications[0].classes[0].score == 3.0
    for i in range(2):
        verify_model_spec(result.results[i].model_spec, "default",
                          request.tasks[i].model_spec.signature_name, HALF_PLUS_TWO_VERSION)


def test_get_model_metadata(half_plus_two):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "default"
    request.metadata_field.append("signature_def")
    result = half_plus_two.predict.GetModelMetadata(request, RPC_TIMEOUT)
    assert result.model_spec.name == "default"
    assert result.model_spec.version.value == HALF_PLUS_TWO_VERSION
    assert len(result.metadata) == 1
    assert "signature_def" in result.metadata
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    assert result.metadata["signature_def"].Unpack(signature_defs)
    assert {"serving_default", "classify_x_to_y", "regress_x_to_y"} <= set(
        signature_defs.signature_def)
    # The same signature defs as the REST metadata (TF Serving prints the same proto).
    rest = httpx.get(f"{half_plus_two.url}/v1/models/default/metadata", timeout=30).json()
    assert json_format.MessageToDict(
        signature_defs, preserving_proto_field_name=True,
        including_default_value_fields=True) == rest["metadata"]["signature_def"]


def test_get_model_status(half_plus_two):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "default"
    result = half_plus_two.models.GetModelStatus(request, RPC_TIMEOUT)
    assert len(result.model_version_status) == 1
    status = result.model_version_status[0]
    assert status.version == HALF_PLUS_TWO_VERSION
    assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert status.status.error_code == 0  # OK


def test_get_model_status_of_one_version_and_unknown_ones(half_plus_two):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "default"
    request.model_spec.version.value = HALF_PLUS_TWO_VERSION
    assert len(half_plus_two.models.GetModelStatus(request, RPC_TIMEOUT)
               .model_version_status) == 1
    request.model_spec.version.value = 7
    error = rpc_error(half_plus_two.models.GetModelStatus, request)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Could not find version 7 of model default"
    request.model_spec.name = "missing"
    request.model_spec.ClearField("version")
    error = rpc_error(half_plus_two.models.GetModelStatus, request)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Could not find any versions of model missing"
    # GetModelStatusImpl looks at model_spec.version only: a label is ignored.
    request.model_spec.name = "default"
    request.model_spec.version_label = "no-such-label"
    assert len(half_plus_two.models.GetModelStatus(request, RPC_TIMEOUT)
               .model_version_status) == 1
    error = rpc_error(half_plus_two.models.GetModelStatus,
                      get_model_status_pb2.GetModelStatusRequest())
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                               "Missing ModelSpec")


def _predict_error(server, change) -> tuple[grpc.StatusCode, str]:
    request = predict_request()
    change(request)
    error = rpc_error(server.predict.Predict, request)
    return error.code(), error.details()


@pytest.mark.parametrize("change, code, message", [
    (lambda r: setattr(r.model_spec, "name", "missing"), "NOT_FOUND",
     "Servable not found for request: Latest(missing)"),
    (lambda r: r.model_spec.version.__setattr__("value", 7), "NOT_FOUND",
     "Servable not found for request: Specific(default, 7)"),
    (lambda r: setattr(r.model_spec, "version_label", "stable"), "INVALID_ARGUMENT",
     "Unrecognized servable version label: stable"),
    (lambda r: setattr(r.model_spec, "name", ""), "INVALID_ARGUMENT",
     "ModelSpec has no name specified."),
    (lambda r: r.ClearField("model_spec"), "INVALID_ARGUMENT", "Missing ModelSpec"),
    (lambda r: setattr(r.model_spec, "signature_name", "missing"), "FAILED_PRECONDITION",
     'Serving signature key "missing" not found.'),
    (lambda r: r.output_filter.append("z"), "INVALID_ARGUMENT",
     "output tensor alias not found in signature: z Outputs expected to be in the set {y}."),
    (lambda r: r.output_filter.append("y"), "INVALID_ARGUMENT",
     "duplicate output tensor alias: y"),
    (lambda r: r.inputs["x"].__setattr__("tensor_content", b"\0" * 3), "INVALID_ARGUMENT",
     "tensor parsing error: x"),
    (lambda r: r.inputs["extra"].CopyFrom(r.inputs["x"]), "INVALID_ARGUMENT",
     "input size does not match signature: 2!=1 len({extra,x}) != len({x}). "
     "Sent extra: {extra}. Missing but required: {}."),
    (lambda r: r.inputs["x"].__setattr__("dtype", types_pb2.DT_STRING), "INVALID_ARGUMENT",
     ""),
    # Session::Run feeds a TensorProto with its own dtype and refuses another than the
    # input's (FunctionCallFrame::SetArgs; predict_util_test.cc PredictionInvalidTensor,
    # InputTensorsHaveWrongType): nothing is cast.
    (lambda r: r.inputs["x"].CopyFrom(to_proto(np.float64([2.0]))),
     "INVALID_ARGUMENT", "Expects arg[0] to be float but double is provided"),
    (lambda r: r.inputs["x"].CopyFrom(to_proto(np.int64([2]))),
     "INVALID_ARGUMENT", "Expects arg[0] to be float but int64 is provided"),
    (lambda r: r.inputs["x"].CopyFrom(to_proto(True)),
     "INVALID_ARGUMENT", "Expects arg[0] to be float but bool is provided"),
    (lambda r: r.inputs["x"].CopyFrom(to_proto([b"any_value"])),
     "INVALID_ARGUMENT", "Expects arg[0] to be float but string is provided"),
])
def test_bad_model_version_signature_and_input(half_plus_two, change, code, message):
    actual_code, actual_message = _predict_error(half_plus_two, change)
    assert actual_code == getattr(grpc.StatusCode, code)
    assert actual_message.startswith(message)


def test_bad_classify_regress_and_multi_inference(half_plus_two):
    stub = half_plus_two.predict
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "missing"
    request.input.example_list.examples.add()
    error = rpc_error(stub.Classify, request)
    assert (error.code(), error.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT, "No signature was found with the name: missing")
    request.model_spec.signature_name = "regress_x_to_y"  # no classes or scores
    error = rpc_error(stub.Classify, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at least one of" in error.details()
    request.model_spec.signature_name = "classify_x_to_y"
    request.input.Clear()
    error = rpc_error(stub.Classify, request)
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                               "Input is empty.")
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "default"
    regress.model_spec.signature_name = "serving_default"  # input x, not inputs
    regress.input.example_list.examples.add()
    error = rpc_error(stub.Regress, regress)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("No regression inputs found in SignatureDef")

    for change, code, message in [
        (lambda r: setattr(r.tasks[1].model_spec, "name", "other"), "INVALID_ARGUMENT",
         "All ModelSpecs in a MultiInferenceRequest must access the same model name."),
        (lambda r: setattr(r.tasks[1].model_spec, "signature_name", "regress_x_to_y"),
         "INVALID_ARGUMENT", "Duplicate evaluation of signature: regress_x_to_y"),
        (lambda r: setattr(r.tasks[1], "method_name", "tensorflow/serving/predict"),
         "UNIMPLEMENTED", "Unsupported signature method_name: tensorflow/serving/predict"),
        (lambda r: setattr(r.tasks[1].model_spec, "signature_name", "missing"),
         "INVALID_ARGUMENT", "Requested signature not found in model graph: missing"),
        (lambda r: r.ClearField("tasks"), "INVALID_ARGUMENT",
         "ModelSpec has no name specified."),
    ]:
        multi = multi_inference_request()
        change(multi)
        error = rpc_error(stub.MultiInference, multi)
        assert (error.code(), error.details()) == (getattr(grpc.StatusCode, code), message)


def test_bad_metadata_requests(half_plus_two):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "default"
    error = rpc_error(half_plus_two.predict.GetModelMetadata, request)
    assert (error.code(), error.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "GetModelMetadataRequest must specify at least one metadata_field")
    request.metadata_field.append("graph_def")
    error = rpc_error(half_plus_two.predict.GetModelMetadata, request)
    assert (error.code(), error.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Metadata field graph_def is not supported")
    request.ClearField("metadata_field")
    request.metadata_field.append("signature_def")
    request.model_spec.name = "missing"
    error = rpc_error(half_plus_two.predict.GetModelMetadata, request)
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_metrics_count_grpc_requests_by_api(half_plus_two):
    half_plus_two.predict.Predict(predict_request(), RPC_TIMEOUT)
    with contextlib.suppress(grpc.RpcError):
        half_plus_two.predict.Predict(predict_request(model="missing"), RPC_TIMEOUT)
    text = httpx.get(f"{half_plus_two.url}/monitoring/prometheus/metrics", timeout=30).text
    lines = [line for line in text.splitlines() if line.startswith(
        ":tensorflow:serving:request_count{") and 'entrypoint="GRPC"' in line]
    assert any('model_name="default"' in line and 'API="predict"' in line
               and 'status="OK"' in line for line in lines), text
    assert any('API="predict"' in line and 'status="NOT_FOUND"' in line for line in lines), text


# --------------------------------------------------------------------- the seed servables


def export_seed_servables(root: str) -> None:
    """The catalog's three servables, exported by the project's export code as version 1."""
    code = (
        "import os, sys\n"
        "from components.export_servable.export import export_servable\n"
        "from pipeline.catalog import load_catalog\n"
        "catalog = load_catalog(None)\n"
        "for s in catalog.servables:\n"
        "    export_servable(s.export_spec(), catalog.base_dir,\n"
        "                    os.path.join(sys.argv[1], s.name, '1'))\n")
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", code, root], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("seeds") / "serving")
    export_seed_servables(root)
    with grpc_server(root, "mobilenet_v2_test") as server:
        with channel(server.grpc) as ch:
            server.predict = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            server.models = model_service_pb2_grpc.ModelServiceStub(ch)
            yield server


def rest_request(name: str) -> dict:
    with open(os.path.join(REPO, "data", "requests", f"{name}.json"), "rb") as f:
        return json.load(f)


def grpc_predict(server, model: str, **arrays) -> dict[str, np.ndarray]:
    from tfserving import tensor_proto

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for alias, value in arrays.items():
        tensor_proto.to_proto(value, proto=request.inputs[alias], content=True)
    response = server.predict.Predict(request, RPC_TIMEOUT)
    verify_model_spec(response.model_spec, model, "serving_default", 1)
    return {alias: tensor_proto.to_ndarray(p) for alias, p in response.outputs.items()}


def rest_predict(server, model: str, body: dict) -> dict:
    response = httpx.post(f"{server.url}/v1/models/{model}:predict", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def test_sum_two_same_numbers_over_rest_and_grpc(seeds):
    body = rest_request("sum_two")
    rest = rest_predict(seeds, "sum_two", body)
    x = np.asarray(body.get("instances", body.get("inputs")), dtype=np.float32)
    outputs = grpc_predict(seeds, "sum_two", x=x)
    (alias,) = outputs
    assert outputs[alias].dtype == np.float32
    np.testing.assert_array_equal(outputs[alias], np.asarray(rest["predictions"], np.float32))
    np.testing.assert_array_equal(outputs[alias], x + 2)


def test_mobilenet_same_label_over_rest_and_grpc_from_raw_jpeg_bytes(seeds):
    body = rest_request("mobilenet_v2_test")
    jpeg = base64.b64decode(body["inputs"][0]["b64"])
    with open(os.path.join(REPO, "data", "images", "sample.jpg"), "rb") as f:
        assert f.read() == jpeg
    rest = rest_predict(seeds, "mobilenet_v2_test", body)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mobilenet_v2_test"
    image = request.inputs["input_img"]
    image.dtype = types_pb2.DT_STRING
    image.tensor_shape.dim.add().size = 1
    image.string_val.append(jpeg)  # raw bytes: no base64 on gRPC
    response = seeds.predict.Predict(request, RPC_TIMEOUT)
    (output,) = response.outputs.values()
    assert output.dtype == types_pb2.DT_STRING
    labels = [v.decode() for v in output.string_val]
    assert labels == rest["outputs"]
    with open(os.path.join(REPO, "data", "labels", "ImageNetLabels.txt")) as f:
        assert labels[0] in f.read().split("\n")


def test_fun_runif_same_shape_dtype_and_range_over_rest_and_grpc(seeds):
    """fun_runif is unseeded: the same request gives new numbers each call, on any API."""
    rest = rest_predict(seeds, "fun_runif", rest_request("fun_runif"))["outputs"]
    outputs = grpc_predict(seeds, "fun_runif", N=np.int32(5))
    (values,) = outputs.values()
    assert values.dtype == np.float32 and values.shape == (len(rest),) == (5,)
    assert ((values >= 0) & (values < 1)).all()


def test_seed_status_and_metadata_agree_with_rest(seeds):
    for model in ("sum_two", "fun_runif", "mobilenet_v2_test"):
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        status = seeds.models.GetModelStatus(request, RPC_TIMEOUT)
        rest = httpx.get(f"{seeds.url}/v1/models/{model}", timeout=30).json()
        assert json_format.MessageToDict(status, preserving_proto_field_name=True,
                                         including_default_value_fields=True) == rest
        meta_request = get_model_metadata_pb2.GetModelMetadataRequest()
        meta_request.model_spec.name = model
        meta_request.metadata_field.append("signature_def")
        meta = seeds.predict.GetModelMetadata(meta_request, RPC_TIMEOUT)
        signature_defs = get_model_metadata_pb2.SignatureDefMap()
        meta.metadata["signature_def"].Unpack(signature_defs)
        rest_meta = httpx.get(f"{seeds.url}/v1/models/{model}/metadata", timeout=30).json()
        assert json_format.MessageToDict(
            signature_defs, preserving_proto_field_name=True,
            including_default_value_fields=True) == rest_meta["metadata"]["signature_def"]


# ----------------------------------------------------------- versions, reload, cancellation


def write_config(root: str, text: str) -> None:
    staging = os.path.join(root, ".models.config.tmp")
    with open(staging, "w") as f:
        f.write(text)
    os.replace(staging, os.path.join(root, "models.config"))


def grpc_offset(stub, model: str, **spec) -> tuple[float, int]:
    """(x + c at x = 0, version) from an offset_<c> model over gRPC."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    request.inputs["x"].CopyFrom(tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT))
    request.inputs["x"].tensor_shape.dim.add().size = 1
    request.inputs["x"].float_val.append(0.0)
    response = stub.Predict(request, RPC_TIMEOUT)
    (output,) = response.outputs.values()
    return output.float_val[0], response.model_spec.version.value


def wait_for(condition, timeout: float, what: str, server) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not within {timeout}s\n{server.log_tail()}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("versions") / "serving")
    sf.model_store("offset_1", "offset_2", "offset_3")
    sf.add_version(root, "hot", 1, "offset_1")
    sf.add_version(root, "pinned", 1, "offset_1")
    sf.add_version(root, "pinned", 2, "offset_2")
    write_config(root, """
model_config_list {
  config { name: "hot" base_path: "/models/hot" model_platform: "tensorflow" }
  config {
    name: "pinned" base_path: "/models/pinned" model_platform: "tensorflow"
    model_version_policy { all {} }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
  }
}
""")
    with grpc_server(root, "hot", "--poll-interval", "0.1") as server:
        with channel(server.grpc) as ch:
            server.root = root
            server.predict = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            server.models = model_service_pb2_grpc.ModelServiceStub(ch)
            yield server


def grpc_states(server, model: str) -> dict[int, tuple[int, int]]:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model
    return {s.version: (s.state, s.status.error_code)
            for s in server.models.GetModelStatus(request, RPC_TIMEOUT).model_version_status}


def test_labels_and_versions_resolve_as_over_rest(versions):
    stub = versions.predict
    assert grpc_offset(stub, "pinned") == (2.0, 2)
    assert grpc_offset(stub, "pinned", version=1) == (1.0, 1)
    assert grpc_offset(stub, "pinned", version_label="stable") == (1.0, 1)
    assert grpc_offset(stub, "pinned", version_label="canary") == (2.0, 2)
    for label in ("stable", "canary"):
        rest = httpx.post(f"{versions.url}/v1/models/pinned/labels/{label}:predict",
                          json={"instances": [0.0]}, timeout=30).json()
        assert rest["predictions"][0] == grpc_offset(stub, "pinned", version_label=label)[0]


def test_hot_reload_and_broken_version_as_over_rest(versions):
    stub, root = versions.predict, versions.root
    assert grpc_offset(stub, "hot") == (1.0, 1)
    sf.add_version(root, "hot", 2, "offset_2")
    wait_for(lambda: grpc_offset(stub, "hot") == (2.0, 2), 30, "version 2 served", versions)
    sf.add_broken_version(root, "hot", 3)
    available, end = (get_model_status_pb2.ModelVersionStatus.AVAILABLE,
                      get_model_status_pb2.ModelVersionStatus.END)
    wait_for(lambda: grpc_states(versions, "hot").get(3, (0, 0))[0] == end, 30,
             "version 3 failed", versions)
    states = grpc_states(versions, "hot")
    assert states[2] == (available, 0)
    assert states[3][1] != 0  # the load error's code
    assert grpc_offset(stub, "hot") == (2.0, 2)  # the previous version keeps serving
    error = rpc_error(stub.Predict, predict_pb2.PredictRequest(
        model_spec={"name": "hot", "version": {"value": 3}}))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    # Same states, codes and messages as the REST status.
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "hot"
    status = versions.models.GetModelStatus(request, RPC_TIMEOUT)
    rest = httpx.get(f"{versions.url}/v1/models/hot", timeout=30).json()
    assert json_format.MessageToDict(status, preserving_proto_field_name=True,
                                     including_default_value_fields=True) == rest


def test_reload_config_request(versions):
    stub, models = versions.predict, versions.models
    request = model_management_pb2.ReloadConfigRequest()
    entry = request.config.model_config_list.config.add()
    entry.name, entry.base_path, entry.model_platform = "pinned", "/models/pinned", "tensorflow"
    entry.model_version_policy.specific.versions.append(1)
    request.metric_names.append(":tensorflow:serving:model_load_count")
    response = models.HandleReloadConfigRequest(request, RPC_TIMEOUT)
    assert response.status.error_code == 0
    assert [m.name for m in response.metric] == [":tensorflow:serving:model_load_count"]
    assert grpc_offset(stub, "pinned") == (1.0, 1)
    error = rpc_error(stub.Predict, predict_pb2.PredictRequest(model_spec={"name": "hot"}))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    bad = model_management_pb2.ReloadConfigRequest()
    bad.config.model_config_list.config.add(name="bad name!")
    error = rpc_error(models.HandleReloadConfigRequest, bad)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = rpc_error(models.HandleReloadConfigRequest, model_management_pb2.ReloadConfigRequest())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Only ModelConfigList is currently supported" in error.details()
    # models.config on disk wins again as soon as it changes.
    with open(os.path.join(versions.root, "models.config")) as f:
        text = f.read()
    write_config(versions.root, text)
    wait_for(lambda: grpc_offset(stub, "pinned") == (2.0, 2), 30, "models.config back",
             versions)
    assert grpc_offset(stub, "hot")[1] >= 1


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("busy") / "serving")
    sf.add_version(root, "busy", 1, "busy")
    with grpc_server(root, "busy", "--workers", "1") as server:
        with channel(server.grpc) as ch:
            server.predict = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            yield server


def busy_request(steps: int):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "busy"
    request.inputs["n"].CopyFrom(tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64,
                                                        int64_val=[steps]))
    return request


def steps_for(server, seconds: float) -> int:
    """Loop steps of the ``busy`` model that take about ``seconds`` here."""
    started = time.perf_counter()
    server.predict.Predict(busy_request(200_000), RPC_TIMEOUT)
    per_step = (time.perf_counter() - started) / 200_000
    return max(1000, int(seconds / per_step))


@pytest.mark.parametrize("how", ["deadline", "cancel"])
def test_a_call_given_up_while_waiting_for_a_worker_never_runs(one_worker, how):
    stub = one_worker.predict
    steps = steps_for(one_worker, 2.0)
    first = stub.Predict.future(busy_request(steps), RPC_TIMEOUT)  # holds the only worker
    time.sleep(0.3)
    started = time.perf_counter()
    if how == "deadline":
        error = rpc_error(stub.Predict, busy_request(steps), timeout=0.3)
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    else:
        waiting = stub.Predict.future(busy_request(steps), RPC_TIMEOUT)
        time.sleep(0.3)
        assert waiting.cancel()
    # A cheap call queued now runs right after the first one: the abandoned call
    # (another ~2 s of work) did not run in between.
    quick = stub.Predict.future(busy_request(1), RPC_TIMEOUT)
    first.result()
    first_done = time.perf_counter()
    quick.result()
    assert time.perf_counter() - first_done < 1.0, "the abandoned call ran"
    assert first_done - started < 5.0


def test_concurrent_grpc_and_rest_calls(one_worker):
    """Both APIs share the one worker without errors."""
    errors: list[BaseException] = []

    def grpc_calls() -> None:
        try:
            for _ in range(20):
                one_worker.predict.Predict(busy_request(10), RPC_TIMEOUT)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=grpc_calls) for _ in range(3)]
    for t in threads:
        t.start()
    for _ in range(20):
        response = httpx.post(f"{one_worker.url}/v1/models/busy:predict",
                              json={"inputs": {"n": 10}}, timeout=30)
        assert response.status_code == 200, response.text
    for t in threads:
        t.join()
    assert not errors


def test_grpc_port_zero_turns_grpc_off(tmp_path):
    root = str(tmp_path / "serving")
    sf.add_version(root, "hot", 1, "offset_1")
    with sf.running_server(root, "hot", "--grpc-port", "0") as server:
        log = server.log_tail()
    assert "gRPC: off" in log and "gRPC: listening" not in log, log


# ------------------------------------------------------------------- the Python client


def test_client_same_calls_same_answers_over_both_transports(seeds):
    from serving.client import ServingClient, ServingClientError
    from serving.grpc_client import GrpcServingClient

    with open(os.path.join(REPO, "data", "images", "sample.jpg"), "rb") as f:
        jpeg = f.read()
    with ServingClient(seeds.url) as rest, ServingClient(f"grpc://{seeds.grpc}") as rpc:
        assert isinstance(rpc, GrpcServingClient)
        for call in (
            lambda c: c.predict("sum_two", instances=np.array([[1, 2, 3]])),
            lambda c: c.predict("sum_two", instances=[[1.5, 2, 3], [4, 5, 6]]),
            lambda c: c.predict("sum_two", inputs={"x": np.ones((2, 3), np.float64)}),
            lambda c: c.predict("mobilenet_v2_test", inputs=[jpeg]),
            lambda c: c.status("sum_two"),
            lambda c: c.metadata("mobilenet_v2_test", version=1),
        ):
            assert call(rpc) == call(rest)
        runif = rpc.predict("fun_runif", inputs={"N": 3})["outputs"]
        assert len(runif) == 3 and all(0 <= v < 1 for v in runif)
        for bad in (lambda c: c.predict("missing", instances=[[1, 2, 3]]),
                    lambda c: c.status("sum_two", version=9)):
            with pytest.raises(ServingClientError) as over_rest:
                bad(rest)
            with pytest.raises(ServingClientError) as over_grpc:
                bad(rpc)
            assert over_grpc.value.status_code == over_rest.value.status_code
            assert over_grpc.value.message == over_rest.value.message
            assert over_grpc.value.code == "NOT_FOUND"


def test_client_classify_and_regress_over_both_transports(half_plus_two):
    from serving.client import ServingClient

    examples = [{"x": 2.0}, {"x": 4.0}]
    with ServingClient(half_plus_two.url) as rest, \
            ServingClient(f"grpc://{half_plus_two.grpc}") as rpc:
        for method, signature in (("classify", "classify_x_to_y"),
                                  ("regress", "regress_x_to_y")):
            over_grpc = getattr(rpc, method)("default", examples, signature_name=signature)
            assert over_grpc == getattr(rest, method)("default", examples,
                                                      signature_name=signature)
        assert rpc.regress("default", [{}], context={"x": 6.0},
                           signature_name="regress_x_to_y") == {"results": [5.0]}


# ------------------------------------------------------------------ batching


@pytest.mark.slow
def test_grpc_predict_calls_are_batched_with_rest_semantics(tmp_path):
    """``--enable-batching`` merges gRPC Predict calls as TF Serving's BatchingSession does
    (whatever API a call comes from): the model's ``rows_in_call`` output shows merged calls;
    every answer is its own request's. A request with an output_filter runs alone; one
    larger than max_batch_size is TF Serving's INVALID_ARGUMENT."""
    import concurrent.futures

    root = str(tmp_path / "root")
    sf.add_version(root, "rows", 1, "batch_size")
    params = tmp_path / "batching.config"
    params.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 20000 }\n"
                      "num_batch_threads { value: 1 }\nmax_enqueued_batches { value: 100 }\n")
    with grpc_server(root, "rows", "--enable-batching", "--batching-parameters-file",
                     str(params)) as server, channel(server.grpc) as chan:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(chan)

        def request(values, output_filter=()):
            req = predict_pb2.PredictRequest()
            req.model_spec.name = "rows"
            to_proto(np.asarray(values, np.float32), proto=req.inputs["x"])
            req.output_filter.extend(output_filter)
            return req

        def predict(i):
            values = [float(i)] * (i % 2 + 1)
            response = stub.Predict(request(values), RPC_TIMEOUT)
            return values, {k: to_ndarray(v) for k, v in response.outputs.items()}

        rows_seen = []
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            for values, outputs in pool.map(predict, range(48)):
                np.testing.assert_array_equal(outputs["y"], np.asarray(values) * 2)
                rows_seen.append(int(outputs["rows_in_call"][0]))
                assert rows_seen[-1] >= len(values)
        assert max(rows_seen) > 2, f"no gRPC call was merged: {rows_seen}"
        alone = stub.Predict(request([1.0, 2.0], ["rows_in_call"]), RPC_TIMEOUT)
        assert list(alone.outputs) == ["rows_in_call"]
        assert to_ndarray(alone.outputs["rows_in_call"]).tolist() == [2, 2]
        err = rpc_error(stub.Predict, request([1.0] * 9))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Task size 9 is larger than maximum batch size 8" in err.details()
