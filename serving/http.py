"""A local server that speaks TensorFlow Serving's REST API over a serving root.

Endpoints (as TF Serving; paths are matched case-insensitively with TF
Serving's own regular expressions):

- ``GET /v1/models/{m}[/versions/{v}|/labels/{l}]``: model status;
- ``GET /v1/models/{m}[/versions/{v}|/labels/{l}]/metadata``: signature defs;
- ``POST /v1/models/{m}[/versions/{v}|/labels/{l}]:predict|:classify|:regress``;
- ``GET /monitoring/prometheus/metrics``: request counts and latencies.

and, on paths TF Serving does not use (:mod:`serving.pages`), a page at ``/`` to
browse and try the models, OpenAPI documents (``/openapi.json``,
``/v1/models/{m}[/versions/{v}]/openapi.json``) and blessing reports
(``/v1/models/{m}/versions/{v}/report.md``).

Errors are ``{"error": "..."}`` with the HTTP status TF Serving gives the same
error (400 for bad requests, 404 for unknown models and versions, ...). An
unknown ``signature_name`` is a 400, as in TF Serving (it reports
INVALID_ARGUMENT for it), not a 404. Bodies larger than ``max_body_bytes`` get
413.

Stack decision: Starlette on uvicorn, with orjson for JSON.

- Starlette is a small, well-maintained ASGI toolkit (the base of FastAPI)
  that adds nothing we would have to work around: the REST API has a dozen
  fixed routes and hand-written validation, so FastAPI's pydantic models and
  OpenAPI generation would only add cost. The routing itself reuses TF
  Serving's regular expressions on the raw path, so the accepted URLs are
  exactly TF Serving's.
- uvicorn is the reference ASGI server. :func:`serve` asks it for httptools
  (a C HTTP/1.1 parser) and uvloop (a libuv event loop), which the ``serve``
  extra installs, and falls back to uvicorn's pure-Python h11 parser and
  asyncio's loop when they are missing (BENCHMARKS.md has what the pair
  gains).
- orjson parses and writes JSON several times faster than the stdlib, writes
  numpy arrays directly (float32 as the shortest round-tripping text, like TF
  Serving) and bounds nesting depth, which matters for hostile input.
- Where predictions run is decided per loaded version, once, at load time
  (:mod:`serving.dispatch`): cheap calls run inline on the event loop (JSON
  decoding and encoding included), everything else in a bounded thread pool
  (``workers``). TensorFlow releases the GIL while it computes, so pool calls
  run in parallel and never hold up the event loop, which keeps accepting
  connections and answering status requests. A request body over
  ``INLINE_MAX_BODY_BYTES`` goes to the pool even for an inline version,
  because decoding and calling scale with the batch it carries.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, unquote

import anyio
import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Mount
from starlette.types import Receive, Scope, Send

from serving import containment, events, pages
from serving.batching import BatchingParameters, ServerBatching, settled
from serving.limits import HeavyGate, Limits, MemoryReleaser, as_resource_exhausted
from serving.metrics import Metrics
from serving.registry import ModelRegistry
from serving.servable import Servable
from tfserving import classification, defaults, json_tensor
from tfserving.layout import INT64_MAX
from tfserving.status import ServingError, echo, invalid_argument

log = logging.getLogger("serving")

METRICS_PATH = "/monitoring/prometheus/metrics"
# Requests to an inline version (see the module doc) with a larger body run on the pool:
# decoding, calling and encoding grow with the batch a body carries.
INLINE_MAX_BODY_BYTES = 16 * 1024
# Over-limit bodies up to this much larger are read and dropped before the 413, so the
# client (which is still sending) reads the answer instead of a reset connection.
_DRAIN_EXTRA_BYTES = 64 * 1024 * 1024

# TF Serving's kPathRegex, kPredictionApiGegex and kModelStatusApiRegex
# (http_rest_api_util.cc), with \d spelled [0-9].
_API_PATH = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
_PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?"
    r":(classify|regress|predict)", re.IGNORECASE)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE)



def _json_response(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="application/json")


def _error_response(err: ServingError) -> Response:
    return _json_response(orjson.dumps({"error": err.message}), err.http_status)


class _Request:
    """What the URL says: model, version or label, method, subresource."""

    def __init__(self, model: str, version: int | None, label: str | None, action: str):
        self.model = model
        self.version = version
        self.label = label
        self.action = action  # predict | classify | regress | status | metadata


def _content_length(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return value.decode("latin-1")
    return None


def _malformed(http_method: str, path: str) -> ServingError:
    return invalid_argument(f"Malformed request: {http_method} {echo(path)}")


def parse_path(http_method: str, path: str) -> _Request:
    """Parses a raw (still percent-encoded) ``/v1/...`` path like TF Serving."""
    if http_method == "POST":
        match = _PREDICT_PATH.fullmatch(path)
    elif http_method == "GET":
        match = _STATUS_PATH.fullmatch(path)
    else:
        raise _malformed(http_method, path)
    if match is None:
        raise _malformed(http_method, path)
    name, version_text, label, action = match.groups()
    model = unquote(name, errors="replace") if name else ""
    version = None
    if version_text:
        version = int(version_text)
        if version > INT64_MAX:
            raise invalid_argument(f"Failed to convert version: {echo(version_text)} to numeric.")
    if label:
        label = unquote(label, errors="replace")
    if http_method == "POST":
        # TF Serving compares the method case-sensitively after a case-insensitive match.
        if action not in ("predict", "classify", "regress"):
            raise _malformed(http_method, path)
    else:
        action = "metadata" if action == "metadata" else "status"
        if not model:
            raise invalid_argument("Missing model name in request.")
    return _Request(model, version, label, action)


class RestApi:
    """The ASGI application behind :func:`create_app`."""

    def __init__(self, registry: ModelRegistry, *, max_body_bytes: int, workers: int,
                 limits: Limits | None = None):
        self.registry = registry
        self.metrics = Metrics()
        self.max_body_bytes = max_body_bytes
        self.workers = workers
        self.limiter: anyio.CapacityLimiter | None = None
        # Bounded work per request (serving/limits.py).
        self.limits = limits or Limits()
        self.heavy = HeavyGate(self.limits.heavy_slots())
        self.memory = MemoryReleaser()
        # --enable-batching: predict calls are merged across requests (serving/batching.py).
        self.batching: ServerBatching | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answers one HTTP request."""
        if scope["type"] != "http":
            return
        # Straight from the ASGI scope: a Starlette Request per call costs more than the
        # whole predict call of a small model.
        method = scope["method"]
        declared = _content_length(scope)
        heavy = self.limits.is_heavy(method, declared)
        if heavy:
            async with self.heavy.hold(heavy):  # before the body is read
                response = await self._respond(scope, receive, declared)
        else:
            response = await self._respond(scope, receive, declared)
        await response(scope, receive, send)
        if heavy or response.status_code in (413, 429) or \
                len(getattr(response, "body", b"")) > self.limits.heavy_body_bytes:
            self.memory.request()  # hand what it used back to the OS

    async def _respond(self, scope: Scope, receive: Receive, declared: str | None) -> Response:
        raw = scope.get("raw_path")
        path = raw.decode("latin-1") if raw else quote(scope.get("path", "/"))
        method = scope["method"]
        try:
            body = await self._read_body(receive, declared)
        except ClientDisconnect:
            return Response(status_code=499)
        except ServingError as err:
            self.metrics.observe("", "", "other", "RESOURCE_EXHAUSTED", 0.0)
            return _error_response(err)
        if path == METRICS_PATH and method == "GET":
            return Response(self.metrics.render() + events.render(),
                            media_type="text/plain; version=0.0.4")
        page = pages.respond(self.registry, method, path)  # the page, openapi.json, reports
        if page is not None:
            return page
        if not _API_PATH.fullmatch(path):
            return _json_response(orjson.dumps({"error": f"Not found: {echo(path)}"}), 404)

        started = time.perf_counter()
        context: dict[str, Any] = {"model": "", "version": ""}
        api = "other"
        try:
            parsed = parse_path(method, path)
            api = parsed.action
            if self.registry.has_model(parsed.model):
                context["model"] = parsed.model
            response = await self._dispatch(parsed, body, context)
            code = "OK"
        except ServingError as err:
            response, code = _error_response(err), err.code
        except Exception as err:  # noqa: BLE001 - a bug must not take the server down
            error = as_resource_exhausted(err)  # an allocation failed: 429, not a crash
            if error is None:
                log.exception("internal error on %s %s", method, echo(path))
                error = ServingError("INTERNAL", containment.public_message(
                    f"Internal error: {err}", self.registry.root))
            response, code = _error_response(error), error.code
        self.metrics.observe(context["model"], context["version"], api, code,
                             time.perf_counter() - started)
        return response

    async def _read_body(self, receive: Receive, declared: str | None) -> bytes:
        """The request body (ASGI ``http.request`` messages), within ``max_body_bytes``."""
        limit = self.max_body_bytes
        if declared is not None and declared.isdigit() and \
                int(declared) > limit + _DRAIN_EXTRA_BYTES:
            raise self._too_big()  # not worth draining; uvicorn closes the connection
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                chunks = []
                if size > limit + _DRAIN_EXTRA_BYTES:
                    break
            elif chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if size > limit:
            raise self._too_big()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _too_big(self) -> ServingError:
        return ServingError(
            "RESOURCE_EXHAUSTED",
            f"Request body is larger than the limit of {self.max_body_bytes} bytes",
            http_status=413)

    async def _dispatch(self, parsed: _Request, body: bytes, context: dict[str, Any]) -> Response:
        if parsed.action in ("status", "metadata"):
            if parsed.action == "status":
                # TF Serving's GetModelStatus ignores the label (get_model_status_impl.cc:
                # a spec without a version lists every version), even an unknown one.
                return _json_response(json_tensor.dumps(
                    self.registry.status(parsed.model, parsed.version)))
            servable = self.registry.resolve(parsed.model, parsed.version, parsed.label)
            context["model"], context["version"] = servable.name, str(servable.version)
            return _json_response(servable.metadata_body)
        work = self._predict if parsed.action == "predict" else self._classify_or_regress
        servable = self._servable_or_none(parsed)
        if self.batching is not None and servable is not None and parsed.action == "predict":
            return _json_response(await self._predict_batched(parsed, body, context, servable))
        if servable is not None and getattr(servable, "inline", False) and \
                len(body) <= INLINE_MAX_BODY_BYTES:
            return _json_response(work(parsed, body, context, servable))
        result = await anyio.to_thread.run_sync(work, parsed, body, context, servable,
                                                limiter=self.limiter)
        return _json_response(result)

    def _servable_or_none(self, parsed: _Request) -> Any:
        """The servable a predict request will use, or None if it does not resolve.

        On None the work itself resolves again and reports the error, after the body's
        own errors, in TF Serving's order.
        """
        try:
            return self.registry.resolve(parsed.model, parsed.version, parsed.label)
        except ServingError:
            return None

    # The methods below run on worker threads, or inline on the event loop for a
    # servable whose calls are cheap (see the module doc).

    def _resolve(self, parsed: _Request, context: dict[str, Any], servable: Any) -> Any:
        if servable is None:
            servable = self.registry.resolve(parsed.model, parsed.version, parsed.label)
        context["model"], context["version"] = servable.name, str(servable.version)
        return servable

    def _call(self, servable: Any, key: str, tensors: dict[str, Any],
              row_format: bool = False, fetch: tuple[str, ...] | None = None) -> dict[str, Any]:
        """``servable.run`` within the input and response limits (serving/limits.py);
        ``fetch``: the outputs to compute (default: all)."""
        self.limits.check_inputs(tensors)
        return self.limits.outputs(lambda: servable.run(key, tensors, fetch),
                                   self.registry.root, row_format)

    def _predict(self, parsed: _Request, body: bytes, context: dict[str, Any],
                 servable: Any = None) -> bytes:
        self.limits.check_body(body)
        doc = json_tensor.parse_json(body)
        signature_name = json_tensor.signature_name(doc)
        servable = self._resolve(parsed, context, servable)
        sig = servable.signature(signature_name)
        fmt, tensors = json_tensor.decode_predict(doc, sig)
        outputs = self._call(servable, sig.key, tensors, fmt == json_tensor.ROW)
        return json_tensor.encode_predict(outputs, fmt)

    async def _predict_batched(self, parsed: _Request, body: bytes, context: dict[str, Any],
                               servable: Any) -> bytes:
        """``_predict`` through the server's batching: decoding and encoding where an
        unbatched call would do them, the model call merged with concurrent requests."""
        small = len(body) <= INLINE_MAX_BODY_BYTES

        async def step(fn: Any, *args: Any) -> Any:
            if small:
                return fn(*args)
            return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)

        def decode() -> tuple[Any, str, dict[str, np.ndarray]]:
            self.limits.check_body(body)
            doc = json_tensor.parse_json(body)
            signature_name = json_tensor.signature_name(doc)
            sig = self._resolve(parsed, context, servable).signature(signature_name)
            return (sig, *json_tensor.decode_predict(doc, sig))

        sig, fmt, tensors = await step(decode)
        self.limits.check_inputs(tensors)
        row = fmt == json_tensor.ROW
        future = self.batching.schedule(servable, sig.key, tensors)
        if future is None:  # not batchable: runs alone, as without batching
            if small and getattr(servable, "inline", False):
                outputs = self._call(servable, sig.key, tensors, row)
            else:
                outputs = await anyio.to_thread.run_sync(self._call, servable, sig.key, tensors,
                                                         row, limiter=self.limiter)
            return await step(json_tensor.encode_predict, outputs, fmt)
        outputs = self.limits.outputs(await settled(future), self.registry.root, row)
        return await step(json_tensor.encode_predict, outputs, fmt)

    def _classify_or_regress(self, parsed: _Request, body: bytes, context: dict[str, Any],
                             servable: Any = None) -> bytes:
        # TF Serving runs these as its gRPC Classify/Regress (classifier.cc, regressor.cc):
        # the JSON is read into a request proto, then the same code checks and runs it.
        classify = parsed.action == "classify"
        method = classification.CLASSIFY_METHOD if classify else classification.REGRESS_METHOD
        self.limits.check_body(body)
        doc = json_tensor.parse_json(body)
        key = json_tensor.signature_name(doc) or json_tensor.DEFAULT_SIGNATURE
        examples = json_tensor.decode_examples(doc, parsed.action)
        servable = self._resolve(parsed, context, servable)
        alias, fetch = classification.example_signature(servable.signatures, key, method)
        serialized = classification.join_examples(examples)
        outputs = self._call(servable, key, {alias: serialized}, fetch=fetch)
        if classify:
            classes, scores = classification.classification_arrays(outputs, len(examples))
            return json_tensor.classify_json(classes, scores, len(examples))
        return json_tensor.regress_json(classification.regression_values(outputs, len(examples)))


def create_app(serving_root: str, *, poll_interval: float = 0.5,
               max_body_bytes: int = defaults.MAX_BODY_BYTES,
               workers: int | None = None,
               batching: BatchingParameters | None = None,
               intra_op_threads: int = 0, inter_op_threads: int = 0,
               limits: Limits | None = None,
               allow_symlinks_outside_root: bool = False) -> Starlette:
    """The ASGI app serving ``serving_root``; models load during startup (lifespan).

    ``limits``: bounded work per request (:class:`serving.limits.Limits`; default: its
    defaults). ``allow_symlinks_outside_root``: load versions with entries that resolve
    outside the root (refused by default, :mod:`serving.containment`).

    ``workers`` bounds the threads running TensorFlow (default: CPUs + 4, at
    most 32). ``batching``: merge concurrent predict calls as TF Serving's
    ``--enable_batching`` does, with these parameters (None: no batching).
    ``intra_op_threads``/``inter_op_threads``: each version's session config, as TF
    Serving's ``--tensorflow_intra_op_parallelism``/``--tensorflow_inter_op_parallelism``.
    """
    loader = functools.partial(Servable, intra_op_threads=intra_op_threads,
                               inter_op_threads=inter_op_threads)
    registry = ModelRegistry(serving_root, poll_interval=poll_interval, loader=loader,
                             allow_outside_root=allow_symlinks_outside_root)
    api = RestApi(registry, max_body_bytes=max_body_bytes,
                  workers=workers or min(32, (os.cpu_count() or 1) + 4), limits=limits)
    if batching is not None:
        api.batching = ServerBatching(batching)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        """Loads the initial versions before serving; stops the watcher after."""
        api.limiter = anyio.CapacityLimiter(api.workers)
        await anyio.to_thread.run_sync(registry.start)
        log.info("serving %s: models %s", registry.root, ", ".join(registry.model_names()) or
                 "none yet")
        try:
            yield
        finally:
            registry.stop()
            if api.batching is not None:
                api.batching.stop()

    app = Starlette(routes=[Mount("/", app=api)], lifespan=lifespan)
    app.state.registry = registry
    app.state.api = api
    return app
