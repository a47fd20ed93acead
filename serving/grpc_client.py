"""The Python client over TF Serving's gRPC API: the same calls and answers as over REST.

    client = ServingClient("grpc://127.0.0.1:8500")
    client.predict("sum_two", instances=np.array([[1, 2, 3]]))  # {"predictions": [[3.0, 4.0, 5.0]]}
    client.predict("mobilenet_v2_test", inputs=[jpeg_bytes])    # raw bytes, no base64
    client.status("sum_two"); client.metadata("sum_two")

:class:`GrpcServingClient` is what ``ServingClient("grpc://host:port")`` returns. Requests
go through the official ``tensorflow_serving.apis`` stubs, so the same client works
against ``tensorflow/serving``'s port 8500:

- ``predict``: ``instances`` (rows) or ``inputs`` (columns), as over REST. Values become
  ``TensorProto`` with the signature's dtype (numpy arrays straight from their bytes, as
  ``tensor_content``; ``bytes``/``str`` as DT_STRING), so the client reads the model's
  signature once per model, version or label and signature name (GetModelMetadata);
  ``output_filter`` names the outputs to return (gRPC only).
- ``classify`` / ``regress``: the same ``examples`` / ``context`` dicts as over REST.
- Answers are what the REST API answers for the same request, built by the same codec
  (:mod:`tfserving.json_tensor`): ``predictions`` or ``outputs`` with lists of numbers
  and text, ``{"b64": ...}`` for ``*_bytes`` outputs; ``results`` for classify and
  regress; the status and metadata JSON. Errors raise :class:`ServingClientError` with
  the HTTP status TF Serving maps the gRPC code to, the gRPC code name in ``code`` and
  TF Serving's message.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grpc
import numpy as np

from serving.client import ServingClient, ServingClientError
from tfserving import json_tensor, tensor_proto
from tfserving.status import HTTP_STATUS, ServingError

# As TF Serving's server (model_servers/server.cc: SetMaxMessageSize(INT32_MAX)).
MAX_MESSAGE_BYTES = 2**31 - 1


class GrpcServingClient(ServingClient):
    """:class:`~serving.client.ServingClient` over gRPC (``grpc://host:port``)."""

    def __init__(self, base_url: str = "grpc://127.0.0.1:8500", *, timeout: float = 60.0,
                 http: Any = None):
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        if http is not None:
            raise ValueError("http= is for REST clients; a grpc:// client has its own channel")
        if not base_url.startswith("grpc://"):
            raise ValueError(f"a gRPC client needs a grpc://host:port address, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.target = self.base_url[len("grpc://"):]
        self.timeout = timeout
        self._channel = grpc.insecure_channel(self.target, options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)])
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._signatures: dict[tuple, Any] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        """Closes the channel."""
        self._channel.close()

    # -- requests

    def predict(self, model: str, instances: Any = None, inputs: Any = None,
                version: int | None = None, label: str | None = None,
                signature_name: str | None = None,
                output_filter: Sequence[str] | None = None) -> dict[str, Any]:
        """Predict with ``instances`` (row) or ``inputs`` (columnar) -- one of them."""
        request = self.predict_request(model, instances, inputs, version, label,
                                       signature_name, output_filter)
        response = self._call(self._predict.Predict, request)
        outputs = {alias: tensor_proto.to_ndarray(p) for alias, p in response.outputs.items()}
        with _local_errors():
            return json_tensor.predict_response(
                outputs, json_tensor.ROW if instances is not None else json_tensor.COLUMNAR)

    def predict_request(self, model: str, instances: Any = None, inputs: Any = None,
                        version: int | None = None, label: str | None = None,
                        signature_name: str | None = None,
                        output_filter: Sequence[str] | None = None) -> Any:
        """The ``PredictRequest`` :meth:`predict` sends (e.g. to send it with other tools)."""
        from tensorflow_serving.apis import predict_pb2

        if (instances is None) == (inputs is None):
            raise ValueError("pass exactly one of instances= (row) or inputs= (columnar)")
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, model, version, label, signature_name)
        sig = self._signature(model, version, label, signature_name or "")
        with _local_errors():
            arrays = _rows(instances, sig) if instances is not None else _columns(inputs, sig)
            for alias, array in arrays.items():
                tensor_proto.to_proto(array, proto=request.inputs[alias], content=True)
        request.output_filter.extend(output_filter or ())
        return request

    def classify(self, model: str, examples: list[dict[str, Any]], *,
                 context: dict[str, Any] | None = None, version: int | None = None,
                 label: str | None = None,
                 signature_name: str | None = None) -> dict[str, Any]:
        """Classify tf.Example-like ``examples`` (dicts of feature values)."""
        from tensorflow_serving.apis import classification_pb2

        request = classification_pb2.ClassificationRequest()
        self._spec(request.model_spec, model, version, label, signature_name)
        with _local_errors():
            _fill_input(request.input, examples, context, "classify")
        result = self._call(self._predict.Classify, request).result
        width = max((len(c.classes) for c in result.classifications), default=0)
        classes = np.full((len(result.classifications), width), b"", dtype=object)
        scores = np.zeros(classes.shape, dtype=np.float32)
        for i, entry in enumerate(result.classifications):
            for j, cls in enumerate(entry.classes):
                classes[i, j], scores[i, j] = cls.label.encode("utf-8"), cls.score
        return json.loads(json_tensor.classify_json(classes, scores, len(classes)))

    def regress(self, model: str, examples: list[dict[str, Any]], *,
                context: dict[str, Any] | None = None, version: int | None = None,
                label: str | None = None, signature_name: str | None = None) -> dict[str, Any]:
        """Regress tf.Example-like ``examples``."""
        from tensorflow_serving.apis import regression_pb2

        request = regression_pb2.RegressionRequest()
        self._spec(request.model_spec, model, version, label, signature_name)
        with _local_errors():
            _fill_input(request.input, examples, context, "regress")
        result = self._call(self._predict.Regress, request).result
        values = np.array([r.value for r in result.regressions], dtype=np.float32)
        return json.loads(json_tensor.regress_json(values))

    def metadata(self, model: str, version: int | None = None,
                 label: str | None = None) -> dict[str, Any]:
        """The model spec and its signature defs, as the REST metadata JSON."""
        from google.protobuf import json_format

        response, signature_defs = self._metadata(model, version, label)
        spec = json_format.MessageToDict(response.model_spec, preserving_proto_field_name=True,
                                         including_default_value_fields=True)
        return {"model_spec": spec, "metadata": {"signature_def": json_format.MessageToDict(
            signature_defs, preserving_proto_field_name=True,
            including_default_value_fields=True)}}

    def status(self, model: str, version: int | None = None,
               label: str | None = None) -> dict[str, Any]:
        """The model's version states (``model_version_status``), as the REST status JSON.

        TF Serving's GetModelStatus ignores ``label`` and reports every version.
        """
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, model, version, label, None)
        response = self._call(self._models.GetModelStatus, request)
        return json_format.MessageToDict(response, preserving_proto_field_name=True,
                                         including_default_value_fields=True)

    # -- plumbing

    @staticmethod
    def _spec(spec: Any, model: str, version: int | None, label: str | None,
              signature_name: str | None) -> None:
        if version is not None and label is not None:
            raise ValueError("pass version= or label=, not both")
        spec.name = model
        if version is not None:
            spec.version.value = int(version)
        elif label is not None:
            spec.version_label = label
        if signature_name:
            spec.signature_name = signature_name

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as err:
            code = err.code().name if err.code() is not None else "UNKNOWN"
            raise ServingClientError(HTTP_STATUS.get(code, 500), err.details() or code,
                                     code) from None

    def _metadata(self, model: str, version: int | None, label: str | None) -> tuple[Any, Any]:
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest()
        self._spec(request.model_spec, model, version, label, None)
        request.metadata_field.append("signature_def")
        response = self._call(self._predict.GetModelMetadata, request)
        signature_defs = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_defs)
        return response, signature_defs

    def _signature(self, model: str, version: int | None, label: str | None,
                   signature_name: str) -> json_tensor.SignatureSpec:
        """The signature's inputs (aliases and dtypes), read once per model spec."""
        key = (model, version, label, signature_name or json_tensor.DEFAULT_SIGNATURE)
        with self._lock:
            sig = self._signatures.get(key)
        if sig is None:
            from tensorflow.core.framework import types_pb2

            _, signature_defs = self._metadata(model, version, label)
            proto = signature_defs.signature_def.get(key[3])
            if proto is None:  # what the server answers (predict_util.cc)
                raise ServingClientError(HTTP_STATUS["FAILED_PRECONDITION"],
                                         f'Serving signature key "{key[3]}" not found.',
                                         "FAILED_PRECONDITION")
            sig = json_tensor.SignatureSpec(key[3], proto.method_name, {
                alias: json_tensor.TensorSpec(alias, types_pb2.DataType.Name(info.dtype), None)
                for alias, info in proto.inputs.items()})
            with self._lock:
                self._signatures[key] = sig
        return sig


@contextlib.contextmanager
def _local_errors() -> Iterator[None]:
    """A request the codec refuses before sending fails as the server would refuse it."""
    try:
        yield
    except ServingError as err:
        raise ServingClientError(err.http_status, err.message, err.code) from None


def _array(value: Any, dtype: str | None) -> np.ndarray:
    """``value`` as an array of the signature's dtype where numpy casts it within its kind.

    Anything else is sent as it is, and the server answers as TF Serving would.
    """
    if dtype == "DT_STRING" or _has_text(value):
        array = np.asarray(value, dtype=object)
        if array.dtype != object or not array.size:
            return array
        flat = array.ravel()
        flat[:] = [v.encode("utf-8") if isinstance(v, str) else v for v in flat]
        return flat.reshape(array.shape)
    array = np.asarray(value)
    try:
        target = tensor_proto.numpy_dtype(dtype) if dtype else None
    except KeyError:
        target = None
    if target is not None and array.dtype != target and \
            np.can_cast(array.dtype, target, casting="same_kind"):
        array = array.astype(target)
    return array


def _has_text(value: Any) -> bool:
    while isinstance(value, (list, tuple)) and value:
        value = value[0]
    return isinstance(value, (bytes, str, bytearray)) or (
        isinstance(value, np.ndarray) and value.dtype.kind in "OSU")


def _single(sig: json_tensor.SignatureSpec) -> tuple[str, str | None]:
    if len(sig.inputs) != 1:
        raise ValueError(f"signature '{sig.key}' has inputs {sorted(sig.inputs)}: pass a dict "
                         "{alias: value}")
    (alias, spec), = sig.inputs.items()
    return alias, spec.dtype


def _is_named(value: Any) -> bool:
    return isinstance(value, Mapping)


def _columns(inputs: Any, sig: json_tensor.SignatureSpec) -> dict[str, np.ndarray]:
    if _is_named(inputs):
        return {alias: _array(value, _dtype(sig, alias)) for alias, value in inputs.items()}
    alias, dtype = _single(sig)
    return {alias: _array(inputs, dtype)}


def _rows(instances: Any, sig: json_tensor.SignatureSpec) -> dict[str, np.ndarray]:
    if isinstance(instances, np.ndarray):
        alias, dtype = _single(sig)
        return {alias: _array(instances, dtype)}
    rows = list(instances)
    if not rows:
        raise ValueError("instances= is empty")
    if _is_named(rows[0]):
        aliases = list(rows[0])
        return {alias: _array([row[alias] for row in rows], _dtype(sig, alias))
                for alias in aliases}
    alias, dtype = _single(sig)
    return {alias: _array(rows, dtype)}


def _dtype(sig: json_tensor.SignatureSpec, alias: str) -> str | None:
    spec = sig.inputs.get(alias)
    return spec.dtype if spec is not None else None


def _fill_input(target: Any, examples: list[dict[str, Any]], context: dict[str, Any] | None,
                method: str) -> int:
    """Fills a ``tensorflow.serving.Input`` with the examples, built by the REST codec."""
    from tensorflow.core.example import example_pb2

    doc: dict[str, Any] = {"examples": json_tensor.encode_b64(examples)}
    if context is not None:
        doc["context"] = json_tensor.encode_b64(context)
    if context is None:
        serialized = json_tensor.decode_examples(doc, method)
        for data in serialized:
            target.example_list.examples.add().ParseFromString(data)
        return len(serialized)
    with_context = target.example_list_with_context
    with_context.context.CopyFrom(example_pb2.Example.FromString(
        json_tensor.decode_examples({"examples": [doc["context"]]}, method)[0]))
    serialized = json_tensor.decode_examples({"examples": doc["examples"]}, method)
    for data in serialized:
        with_context.examples.add().ParseFromString(data)
    return len(serialized)
