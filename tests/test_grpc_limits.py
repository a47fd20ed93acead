"""The gRPC API applies REST's per-request limits (serving/limits.py, serving/grpc_api.py).

Unit tests of the sizes read before decoding (TensorProto headers) and before encoding
(protobuf responses), then one real server: an oversized response, a TensorFlow
allocation over its memory limit, a tensor padded from one value and a JPEG bomb each get
RESOURCE_EXHAUSTED naming the limit, and the server keeps answering.
"""

from __future__ import annotations

import time

import grpc
import httpx
import numpy as np
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.grpc_api import GrpcApi
from serving.http import create_app
from serving.limits import Limits, protobuf_size
from tests.serving_fixtures import add_version, free_port, jpeg, running_server
from tests.test_limits import _jpeg_declaring
from tfserving import tensor_proto
from tfserving.status import ServingError

RPC_TIMEOUT = 120.0  # TensorFlow retries a failed allocation for 10 s before it gives up
BIG = 2**31 - 1


# ------------------------------------------------------------------ sizes before decoding


def _padded(dtype: int, shape: tuple[int, ...], **fields) -> predict_pb2.PredictRequest:
    """A sum_two request whose input ``x`` has ``shape``, filled from ``fields``."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "sum_two"
    proto = request.inputs["x"]
    proto.dtype = dtype
    for size in shape:
        proto.tensor_shape.dim.add().size = size
    for name, values in fields.items():
        getattr(proto, name).extend(values)
    return request


def test_decoded_size_is_read_from_the_tensor_proto_headers():
    # One float fills a shape of 100 M elements: 400 MB decoded from a message of bytes.
    request = _padded(types_pb2.DT_FLOAT, (100_000_000,), float_val=[1.0])
    assert request.ByteSize() < 64
    assert tensor_proto.decoded_nbytes(request.inputs) == 400_000_000
    with pytest.raises(ServingError) as err:
        Limits().check_decoded_bytes(tensor_proto.decoded_nbytes(request.inputs))
    assert err.value.code == "RESOURCE_EXHAUSTED"
    assert err.value.message == ("Decoded inputs (images at their pixel size) take more than "
                                 "this server's limit of 256.0 MiB per request "
                                 "(--max-decoded-bytes)")
    # What decoding allocates is never more than the estimate.
    small = _padded(types_pb2.DT_INT64, (4, 3), int64_val=[7])
    assert tensor_proto.decoded_nbytes(small.inputs) == \
        tensor_proto.request_arrays(small.inputs)["x"].nbytes == 96
    # Strings: a pointer per element, an object per distinct value, and their bytes.
    strings = _padded(types_pb2.DT_STRING, (1000,), string_val=[b"ab", b"cd"])
    assert 1000 * 8 + 2 * 33 + 4 <= tensor_proto.decoded_nbytes(strings.inputs) < 8200
    # A tensor decoding refuses (a negative dimension) is left to decoding to report.
    assert tensor_proto.decoded_nbytes(_padded(types_pb2.DT_FLOAT, (-1,)).inputs) == 0


def test_protobuf_response_size_is_an_upper_bound_of_the_serialized_outputs():
    rng = np.random.default_rng(0)
    outputs = {"f": rng.random((300, 7), dtype=np.float32), "d": rng.random(50),
               "i": rng.integers(-2**40, 2**40, 200), "n": np.int32([-1, 5, 300]),
               "u": np.uint8([0, 255]), "b": np.array([True, False]),
               "s": np.array([b"x" * 200, b"", "snow \u2603".encode()], dtype=object)}
    response = predict_pb2.PredictResponse()
    for alias, array in outputs.items():
        tensor_proto.to_proto(array, proto=response.outputs[alias])
    elements, size = protobuf_size(outputs)
    assert elements == sum(a.size for a in outputs.values())
    assert response.ByteSize() <= size < 1.5 * response.ByteSize() + 1000
    error = Limits(max_response_bytes=size - 1).response_error(outputs, encoding="protobuf")
    assert error is not None and error.code == "RESOURCE_EXHAUSTED"
    assert " of protobuf, more than this server's limit of " in error.message
    assert error.message.endswith("(--max-response-bytes)")
    assert Limits(max_response_bytes=size).response_error(outputs, encoding="protobuf") is None


def test_grpc_shares_the_rest_apis_limits_gate_and_releaser(tmp_path):
    limits = Limits(max_decoded_bytes=1234)
    app = create_app(str(tmp_path), limits=limits)
    rest = app.state.api
    api = GrpcApi.beside(rest)
    assert api.limits is rest.limits is limits
    assert api.heavy is rest.heavy and api.memory is rest.memory
    assert (api.registry, api.metrics) == (rest.registry, rest.metrics)


# ------------------------------------------------------------------ a real server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("grpc_limits") / "serving"
    for model in ("sum_two", "fun_runif", "mobilenet_v2_test"):
        add_version(str(root), model, 1, model)
    port = free_port()
    with running_server(str(root), "mobilenet_v2_test", "--grpc-port", str(port),
                        "--max-response-elements", "1000000",
                        "--tensorflow-memory-limit", str(1 << 30)) as running:
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=[
                ("grpc.max_receive_message_length", BIG),
                ("grpc.max_send_message_length", BIG)]) as channel:
            running.predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            yield running
        assert running.proc.poll() is None, running.log_tail()


def _request(model: str, **arrays) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for alias, value in arrays.items():
        tensor_proto.to_proto(value, proto=request.inputs[alias])
    return request


def _refused(server, request) -> str:
    with pytest.raises(grpc.RpcError) as info:
        server.predict.Predict(request, RPC_TIMEOUT)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value
    return info.value.details()


def _answers(server) -> None:
    response = server.predict.Predict(
        _request("sum_two", x=np.float32([[1, 2, 3]])), RPC_TIMEOUT)
    (output,) = response.outputs.values()
    np.testing.assert_array_equal(tensor_proto.to_ndarray(output), [[3, 4, 5]])


@pytest.mark.slow
def test_oversize_response_and_tensorflow_oom_are_resource_exhausted(server):
    # 2,000,000 floats: over --max-response-elements, refused before the response is built.
    message = _refused(server, _request("fun_runif", N=np.int32(2_000_000)))
    assert message == ("Response would have 2000000 tensor elements, more than this server's "
                       "limit of 1000000 (--max-response-elements)")
    # 400,000,000 floats (1.6 GB) are over --tensorflow-memory-limit (1 GiB): TensorFlow's
    # allocation fails inside the call, and the server lives on.
    message = _refused(server, _request("fun_runif", N=np.int32(400_000_000)))
    assert "OOM when allocating" in message
    _answers(server)
    metrics = httpx.get(f"{server.url}/monitoring/prometheus/metrics", timeout=30).text
    assert 'model_name="fun_runif",version="1",API="predict",entrypoint="GRPC",' \
           'status="RESOURCE_EXHAUSTED"} 2' in metrics
    assert ":tfx_servables:memory_trims" in metrics  # the shared MemoryReleaser ran


@pytest.mark.slow
def test_padded_tensor_and_jpeg_bomb_are_refused_before_decoding(server):
    # 40 M x 3 floats from one float_val (480 MB), 100 M strings from one string_val
    # (800 MB of pointers, and minutes to look at each for image headers): refused from
    # the TensorProto's shape, before anything is allocated.
    for request in (_padded(types_pb2.DT_FLOAT, (40_000_000, 3), float_val=[1.0]),
                    _padded(types_pb2.DT_STRING, (100_000_000,), string_val=[b"a"])):
        started = time.monotonic()
        message = _refused(server, request)
        assert message.endswith("(--max-decoded-bytes)"), message
        assert time.monotonic() - started < 5
    bomb = predict_pb2.PredictRequest()
    bomb.model_spec.name = "mobilenet_v2_test"
    image = bomb.inputs["input_img"]
    image.dtype = types_pb2.DT_STRING
    image.tensor_shape.dim.add().size = 1
    image.string_val.append(_jpeg_declaring(20000, 20000))  # a few hundred bytes
    for _ in range(3):
        message = _refused(server, bomb)
        assert message.startswith("Input 'input_img' element 0 is a JPEG image of 20000x20000 "
                                  "pixels: decoding it takes 1.1 GiB"), message
        assert message.endswith("(--max-decoded-bytes)"), message
    normal = predict_pb2.PredictRequest()
    normal.CopyFrom(bomb)
    normal.inputs["input_img"].string_val[0] = jpeg(250)
    response = server.predict.Predict(normal, RPC_TIMEOUT)
    (output,) = response.outputs.values()
    assert [v.decode() for v in output.string_val] == ["white"]
    _answers(server)
