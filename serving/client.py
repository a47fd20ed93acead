"""A small client for TensorFlow Serving's REST and gRPC APIs (this server or the real one).

    client = ServingClient("http://127.0.0.1:8501")   # or "grpc://127.0.0.1:8500": same calls
    client.predict("sum_two", instances=[[1.0, 2.0, 3.0]])      # {"predictions": [[3.0, 4.0, 5.0]]}
    client.predict("mobilenet_v2_test", inputs=jpeg_bytes)       # bytes are sent as {"b64": ...}
    client.status("sum_two"); client.metadata("sum_two", version=1)

``bytes`` anywhere in ``instances``, ``inputs``, ``examples`` or ``context``
are base64-encoded as ``{"b64": "..."}``; numpy arrays and scalars are
converted with ``tolist()``. Responses are returned as parsed JSON; use
:func:`decode_b64` to turn ``{"b64": ...}`` outputs back into ``bytes``.
Errors raise :class:`ServingClientError` with the HTTP status and TF Serving's
error message. Only the documented REST paths are used, so the same calls work
against ``tensorflow/serving``. A ``grpc://host:port`` address gives the gRPC
client (:mod:`serving.grpc_client`): same calls, same answers.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import httpx

from tfserving.json_tensor import decode_b64, encode_b64  # noqa: F401 - re-exported for users


class ServingClientError(Exception):
    """The server answered with an error status."""

    def __init__(self, status_code: int, message: str, code: str | None = None):
        super().__init__(f"HTTP {status_code}: {message}")
        self.status_code = status_code
        self.message = message
        self.code = code  # the gRPC status code name (gRPC transport only)


def _dumps(payload: Any) -> bytes:
    # allow_nan: TF Serving reads NaN/Infinity, as it writes them.
    return json.dumps(payload, allow_nan=True, separators=(",", ":")).encode("utf-8")


class ServingClient:
    """Calls one server; a thin wrapper over ``httpx.Client`` (keep-alive, timeouts)."""

    def __new__(cls, base_url: str = "http://127.0.0.1:8501", **kwargs: Any) -> ServingClient:
        """A ``grpc://`` address makes a :class:`serving.grpc_client.GrpcServingClient`."""
        if cls is ServingClient and base_url.startswith("grpc://"):
            from serving.grpc_client import GrpcServingClient

            return super().__new__(GrpcServingClient)
        return super().__new__(cls)

    def __init__(self, base_url: str = "http://127.0.0.1:8501", *, timeout: float = 60.0,
                 http: httpx.Client | None = None):
        self.base_url = base_url.rstrip("/")
        self._http = http or httpx.Client(timeout=timeout)
        self._owns_http = http is None

    def close(self) -> None:
        """Closes the connection pool (if this client created it)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> ServingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests

    def predict(self, model: str, instances: Any = None, inputs: Any = None,
                version: int | None = None, label: str | None = None,
                signature_name: str | None = None) -> dict[str, Any]:
        """POST ``:predict`` with ``instances`` (row) or ``inputs`` (columnar) -- one of them."""
        if (instances is None) == (inputs is None):
            raise ValueError("pass exactly one of instances= (row) or inputs= (columnar)")
        body: dict[str, Any] = {}
        if signature_name is not None:
            body["signature_name"] = signature_name
        if instances is not None:
            body["instances"] = encode_b64(instances)
        else:
            body["inputs"] = encode_b64(inputs)
        return self._post(model, version, label, "predict", body)

    def classify(self, model: str, examples: list[dict[str, Any]], *,
                 context: dict[str, Any] | None = None, version: int | None = None,
                 label: str | None = None,
                 signature_name: str | None = None) -> dict[str, Any]:
        """POST ``:classify`` with tf.Example-like ``examples`` (dicts of feature values)."""
        return self._post(model, version, label, "classify",
                          self._examples_body(examples, context, signature_name))

    def regress(self, model: str, examples: list[dict[str, Any]], *,
                context: dict[str, Any] | None = None, version: int | None = None,
                label: str | None = None, signature_name: str | None = None) -> dict[str, Any]:
        """POST ``:regress`` with tf.Example-like ``examples``."""
        return self._post(model, version, label, "regress",
                          self._examples_body(examples, context, signature_name))

    def metadata(self, model: str, version: int | None = None,
                 label: str | None = None) -> dict[str, Any]:
        """GET ``.../metadata``: the model spec and its signature defs."""
        return self._send("GET", self._model_path(model, version, label) + "/metadata")

    def status(self, model: str, version: int | None = None,
               label: str | None = None) -> dict[str, Any]:
        """GET the model's version states (``model_version_status``)."""
        return self._send("GET", self._model_path(model, version, label))

    # -- plumbing

    @staticmethod
    def _examples_body(examples: list[dict[str, Any]], context: dict[str, Any] | None,
                       signature_name: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"examples": encode_b64(examples)}
        if context is not None:
            body["context"] = encode_b64(context)
        if signature_name is not None:
            body["signature_name"] = signature_name
        return body

    def _model_path(self, model: str, version: int | None, label: str | None) -> str:
        if version is not None and label is not None:
            raise ValueError("pass version= or label=, not both")
        path = f"/v1/models/{quote(model, safe='')}"
        if version is not None:
            path += f"/versions/{int(version)}"
        elif label is not None:
            path += f"/labels/{quote(label, safe='')}"
        return path

    def _post(self, model: str, version: int | None, label: str | None, verb: str,
              body: dict[str, Any]) -> dict[str, Any]:
        return self._send("POST", f"{self._model_path(model, version, label)}:{verb}", body)

    def _send(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        content = _dumps(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else None
        response = self._http.request(method, self.base_url + path, content=content,
                                      headers=headers)
        try:
            payload = json.loads(response.content) if response.content else {}
        except ValueError:
            payload = {"error": response.text}
        if response.status_code >= 400:
            message = payload.get("error") if isinstance(payload, dict) else None
            raise ServingClientError(response.status_code, str(message or response.text))
        return payload
