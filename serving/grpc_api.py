"""TF Serving's gRPC API over the same registry as the REST API (TF Serving's port 8500).

Services (the official ``tensorflow_serving.apis`` stubs and messages):

- ``tensorflow.serving.PredictionService``: ``Predict`` (with ``output_filter``),
  ``Classify``, ``Regress``, ``MultiInference``, ``GetModelMetadata``;
- ``tensorflow.serving.ModelService``: ``GetModelStatus`` and
  ``HandleReloadConfigRequest``.

Behaviour follows TF Serving's sources (``model_servers/``, ``servables/tensorflow/``):

- ``ModelSpec``: a missing spec is ``INVALID_ARGUMENT "Missing ModelSpec"``, an empty
  name ``"ModelSpec has no name specified."``; ``version`` picks that version,
  ``version_label`` the version the label names (unknown label:
  ``INVALID_ARGUMENT``), neither the newest served version; an unknown model or version
  is ``NOT_FOUND "Servable not found for request: Latest(m)"`` /
  ``"Specific(m, v)"`` (``server_core.cc``). ``signature_name`` defaults to
  ``serving_default``; responses echo the model name, the signature name used and the
  version that answered.
- ``GetModelStatus`` ignores ``version_label`` and reports every version, as TF Serving
  does (``get_model_status_impl.cc``).
- An unknown signature is ``FAILED_PRECONDITION`` for Predict (``predict_util.cc``) and
  ``INVALID_ARGUMENT`` for Classify/Regress/MultiInference (``classifier.cc``,
  ``multi_inference.cc``); TF Serving itself differs per method.
- Status messages longer than 1024 characters are cut and end in ``...TRUNCATED``
  (``grpc_status_util.cc``). Messages of 2**31-1 bytes are accepted both ways
  (``server.cc``: ``SetMaxMessageSize(INT32_MAX)``; gRPC's own default is 4 MiB).
- Predict outputs are written in the typed fields (``float_val``, ...), TF Serving's
  default (:mod:`tfserving.tensor_proto`).
- With ``--enable-batching``, Predict calls join the same batches as REST ones
  (:mod:`serving.batching`; TF Serving wraps the session, whatever API calls it). A
  request with an ``output_filter`` runs alone, as a batch fetches all of a signature's
  outputs; Classify, Regress and MultiInference run alone too.

Bounded work per request (:mod:`serving.limits`), with the REST API's own
:class:`~serving.limits.Limits`, heavy-request gate and memory releaser
(:meth:`GrpcApi.beside`): one set of flags, and heavy REST and gRPC calls share the same
slots. A refusal is ``RESOURCE_EXHAUSTED`` with REST's message, naming the flag:

- Message size: TF Serving's 2 GiB - 1 stays; ``--max-body-bytes`` is REST's and does not
  apply. grpcio reads and parses a message before any handler sees it, so nothing can be
  refused earlier; what parsing holds is about the message's own size. What a message
  asks for beyond its size is refused before decoding: the tensors' decoded size is read
  from each ``TensorProto``'s dtype, shape and field lengths
  (:func:`tfserving.tensor_proto.decoded_nbytes`: a shape padded from one value, strings
  as Python objects) and checked against ``--max-decoded-bytes``; after decoding, string
  inputs holding images count at their pixel size (JPEG bombs), as over REST. Examples
  (Classify, Regress, MultiInference) are checked once serialized, as over REST.
- Outputs are checked against ``--max-response-elements`` and ``--max-response-bytes``
  before the response is built, the size estimated as protobuf (typed fields), not JSON.
- A call whose request is over 1 MiB is heavy: at most ``--max-heavy-requests`` heavy
  calls (REST and gRPC together) run at once, the others wait before decoding. After a
  heavy call, a refused one or a response over 1 MiB, freed memory goes back to the OS
  (``malloc_trim``). A ``MemoryError`` is ``RESOURCE_EXHAUSTED``, not ``INTERNAL``.

Stack decision: ``grpc.aio`` on the event loop that runs the REST server, rather than
``grpc.server`` with its own thread pool. Calls then run exactly where REST calls of the
same version run (:mod:`serving.dispatch`): a cheap version inline on the loop, anything
else on the shared, bounded thread pool, so the two APIs together never run more
TensorFlow calls than ``workers``; and a cancelled call is a cancelled asyncio task, which
drops work still waiting for a worker. grpcio costs the same CPU per call either way (its
C core polls on its own thread and hands each call over); with one client the aio server
answered sooner (``BENCHMARKS.md``).

A call cancelled by its client or past its deadline gives up its place: while it waits
for a worker thread it is dropped and never runs. A TensorFlow call already running
cannot be interrupted (TF Serving bounds it with the session's run timeout, which a
cached session callable does not take); it keeps its thread until it returns and its
result is discarded.
"""

from __future__ import annotations

import inspect
import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import grpc
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

from serving import containment
from serving.batching import ServerBatching, settled
from serving.http import INLINE_MAX_BODY_BYTES
from serving.limits import HeavyGate, Limits, MemoryReleaser, as_resource_exhausted
from tfserving import classification, tensor_proto
from tfserving.json_tensor import DEFAULT_SIGNATURE
from tfserving.status import ServingError, echo, invalid_argument

log = logging.getLogger("serving")

# model_servers/server.cc: builder.SetMaxMessageSize(std::numeric_limits<int32_t>::max()).
MAX_MESSAGE_BYTES = 2**31 - 1
# model_servers/grpc_status_util.cc: kErrorMessageLimit.
MAX_STATUS_MESSAGE = 1024
# get_model_metadata_impl.h: GetModelMetadataImpl::kSignatureDef.
SIGNATURE_DEF_FIELD = "signature_def"

# The gRPC server's channel arguments (also the bench's gRPC hello-world's).
SERVER_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # gRPC sets SO_REUSEPORT by default: a second server on the same port would bind
    # "successfully" and share its traffic. A taken port must fail loudly.
    ("grpc.so_reuseport", 0),
)


def status_code(code: str) -> grpc.StatusCode:
    """The gRPC status code of a ``tensorflow.error.Code`` name (same numbering)."""
    return getattr(grpc.StatusCode, code, grpc.StatusCode.UNKNOWN)


def status_message(message: str) -> str:
    """A status message cut as TF Serving cuts it (``ToGRPCStatus``)."""
    if len(message) > MAX_STATUS_MESSAGE:
        return message[:MAX_STATUS_MESSAGE] + "...TRUNCATED"
    return message


class GrpcApi:
    """The servicers' shared state: registry, metrics, where calls run and their limits."""

    def __init__(self, registry: Any, *, metrics: Any = None,
                 limiter: anyio.CapacityLimiter | None = None, limits: Limits | None = None,
                 heavy: HeavyGate | None = None, memory: MemoryReleaser | None = None,
                 batching: ServerBatching | None = None):
        self.registry = registry
        self.metrics = metrics
        self.limiter = limiter
        self.limits = limits or Limits()
        self.heavy = heavy or HeavyGate(self.limits.heavy_slots())
        self.memory = memory or MemoryReleaser()
        self.batching = batching

    @classmethod
    def beside(cls, rest: Any) -> GrpcApi:
        """The gRPC API next to ``rest`` (a :class:`serving.http.RestApi`), sharing its
        registry, metrics, worker pool, limits, heavy-request gate, memory releaser and
        batching (TF Serving batches a session's calls whatever API they come from)."""
        return cls(rest.registry, metrics=rest.metrics, limiter=rest.limiter,
                   limits=rest.limits, heavy=rest.heavy, memory=rest.memory,
                   batching=rest.batching)

    # -- bounded work (serving/limits.py); these run where ``work`` runs

    def decode_inputs(self, inputs: Any) -> dict[str, Any]:
        """A request's ``map<string, TensorProto>`` as arrays, within ``--max-decoded-bytes``:
        refused from the protos' headers before decoding, then with images at pixel size."""
        self.limits.check_decoded_bytes(tensor_proto.decoded_nbytes(inputs))
        arrays = tensor_proto.request_arrays(inputs)
        self.limits.check_inputs(arrays)
        return arrays

    def run(self, servable: Any, key: str, tensors: dict[str, Any],
            output_filter: list[str] | None = None) -> dict[str, Any]:
        """``servable.run`` with the response limits checked before anything is encoded."""
        return self.limits.outputs(lambda: servable.run(key, tensors, output_filter=output_filter),
                                   self.registry.root, encoding="protobuf")

    def run_or_schedule(self, servable: Any, key: str, tensors: dict[str, Any],
                        output_filter: list[str], respond: Callable[[Any], Any]) -> Any:
        """``respond(outputs)`` of :meth:`run`; with ``--enable-batching``, the call goes to
        the server's batching (:mod:`serving.batching`) and this returns a coroutine that
        :meth:`call` awaits on the event loop. A request with an ``output_filter`` runs
        alone: a batch computes every output of its signature."""
        future = None
        if self.batching is not None and not output_filter:
            future = self.batching.schedule(servable, key, tensors)
        if future is None:  # not batchable: runs alone, as without batching
            return respond(self.run(servable, key, tensors, output_filter))
        return self._batched(future, respond)

    async def _batched(self, future: Any, respond: Callable[[Any], Any]) -> Any:
        return respond(self.limits.outputs(await settled(future), self.registry.root,
                                           encoding="protobuf"))

    # -- request plumbing

    async def call(self, context: grpc.aio.ServicerContext, api: str, model: str,
                   request: Any, prepare: Callable[[], Any],
                   work: Callable[[Any], Any]) -> Any:
        """Runs one RPC: ``prepare()`` resolves the servable on the loop, ``work(servable)``
        builds the response inline or on the pool; errors become gRPC statuses.

        ``prepare`` may return None (the RPC has no servable, e.g. status calls); then
        ``work`` runs inline.
        """
        started = time.perf_counter()
        labels = [model if self.registry.has_model(model) else "", ""]
        code = "OK"
        size = request.ByteSize()  # computed by protobuf's C++ code, not by serializing
        heavy = size > self.limits.heavy_body_bytes
        response = None
        try:
            async with self.heavy.hold(heavy):  # before any tensor is decoded
                servable = prepare()
                if servable is not None:
                    labels = [servable.name, str(servable.version)]
                if servable is None or (getattr(servable, "inline", False)
                                        and size <= INLINE_MAX_BODY_BYTES):
                    response = work(servable)
                else:
                    response = await self._in_pool(context, work, servable)
                if inspect.isawaitable(response):  # a batched call (run_or_schedule)
                    response = await response
                return response
        except ServingError as err:
            code = err.code
            await context.abort(status_code(err.code), status_message(err.message))
        except Exception as err:  # noqa: BLE001 - a bug must not take the server down
            error = as_resource_exhausted(err)  # an allocation failed: not a crash
            if error is None:
                log.exception("internal error in gRPC %s", api)
                error = ServingError("INTERNAL", containment.public_message(
                    f"Internal error: {err}", self.registry.root))
            code = error.code
            await context.abort(status_code(error.code), status_message(error.message))
        except BaseException:  # cancelled by the client or its deadline
            code = "CANCELLED"
            raise
        finally:
            if self.metrics is not None:
                self.metrics.observe(labels[0], labels[1], api, code,
                                     time.perf_counter() - started, entrypoint="GRPC")
            if heavy or code == "RESOURCE_EXHAUSTED" or (
                    response is not None
                    and response.ByteSize() > self.limits.heavy_body_bytes):
                self.memory.request()  # hand what it used back to the OS

    async def _in_pool(self, context: grpc.aio.ServicerContext,
                       work: Callable[[Any], Any], servable: Any) -> Any:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise ServingError("DEADLINE_EXCEEDED", "Deadline exceeded before the call started")
        # Not abandon_on_cancel: a running TensorFlow call keeps its worker slot until it
        # returns, so cancelled calls cannot push the pool past its bound. A call still
        # waiting for a slot is cancelled right away and never runs.
        return await anyio.to_thread.run_sync(work, servable, limiter=self.limiter)

    def resolve(self, spec: Any, has_spec: bool = True) -> Any:
        """The servable a ModelSpec names (``ServerCore::ServableRequestFromModelSpec``)."""
        if not has_spec:
            raise invalid_argument("Missing ModelSpec")
        if not spec.name:
            raise invalid_argument("ModelSpec has no name specified.")
        choice = spec.WhichOneof("version_choice")
        if choice == "version":
            return self.registry.resolve(spec.name, version=spec.version.value)
        if choice == "version_label":
            return self.registry.resolve(spec.name, label=spec.version_label)
        return self.registry.resolve(spec.name)


def _signature_key(spec: Any) -> str:
    return spec.signature_name or DEFAULT_SIGNATURE


def _echo_spec(target: Any, name: str, signature_name: str | None, version: int) -> None:
    """``util.cc`` MakeModelSpec: name, the signature name used (if any), the version."""
    target.name = name
    if signature_name is not None:
        target.signature_name = signature_name or DEFAULT_SIGNATURE
    target.version.value = version


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """``tensorflow.serving.PredictionService``."""

    def __init__(self, api: GrpcApi):
        self.api = api

    async def Predict(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC's name
        """Runs one signature on the request's tensors (``predict_util.cc`` RunPredict)."""
        spec = request.model_spec

        def prepare() -> Any:
            servable = self.api.resolve(spec, request.HasField("model_spec"))
            key = _signature_key(spec)
            if key not in servable.signatures:
                raise ServingError("FAILED_PRECONDITION",
                                   f'Serving signature key "{echo(key)}" not found.')
            return servable

        def work(servable: Any) -> Any:
            key = _signature_key(spec)
            arrays = self.api.decode_inputs(request.inputs)

            def respond(outputs: dict[str, Any]) -> Any:
                response = predict_pb2.PredictResponse()
                _echo_spec(response.model_spec, spec.name, key, servable.version)
                for alias, array in outputs.items():
                    tensor_proto.to_proto(array, proto=response.outputs[alias])
                return response

            return self.api.run_or_schedule(servable, key, arrays,
                                            list(request.output_filter), respond)

        return await self.api.call(context, "predict", spec.name, request, prepare, work)

    async def Classify(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Classifies ``tf.Example`` inputs (``classifier.cc`` RunClassify)."""
        return await self._examples(request, context, classification.CLASSIFY_METHOD)

    async def Regress(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Regresses ``tf.Example`` inputs (``regressor.cc`` RunRegress)."""
        return await self._examples(request, context, classification.REGRESS_METHOD)

    async def _examples(self, request: Any, context: Any, method: str) -> Any:
        spec = request.model_spec
        classify = method == classification.CLASSIFY_METHOD

        def prepare() -> Any:
            servable = self.api.resolve(spec, request.HasField("model_spec"))
            classification.example_signature(servable.signatures, _signature_key(spec), method)
            return servable

        def work(servable: Any) -> Any:
            key = _signature_key(spec)
            alias, fetch = classification.example_signature(servable.signatures, key, method)
            examples = classification.serialized_examples(request.input)
            self.api.limits.check_inputs({alias: examples})
            outputs = self.api.run(servable, key, {alias: examples}, list(fetch))
            if classify:
                response = classification_pb2.ClassificationResponse()
                classes, scores = classification.classification_arrays(outputs, len(examples))
                classification.classification_result(classes, scores, response.result)
            else:
                response = regression_pb2.RegressionResponse()
                values = classification.regression_values(outputs, len(examples))
                classification.regression_result(values, response.result)
            _echo_spec(response.model_spec, spec.name, spec.signature_name, servable.version)
            return response

        return await self.api.call(context, "classify" if classify else "regress", spec.name,
                                   request, prepare, work)

    async def MultiInference(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Classify/regress tasks of one model on one input (``multi_inference.cc``).

        TF Serving feeds the input once and fetches every task's outputs in one
        ``Session::Run``; here each task's signature is run in turn on the same
        serialized examples, which gives the same results for models without state.
        """
        tasks = request.tasks
        first = tasks[0].model_spec if tasks and tasks[0].HasField("model_spec") else None
        spec = first if first is not None else predict_pb2.PredictRequest().model_spec

        def plan(servable: Any) -> list[tuple[Any, str, str, tuple[str, ...]]]:
            checked = classification.multi_inference_plan(servable.signatures, [
                (t.model_spec.name, t.model_spec.signature_name, t.method_name) for t in tasks])
            return [(task, key, alias, fetch)
                    for task, (key, _, alias, fetch) in zip(tasks, checked, strict=True)]

        def prepare() -> Any:
            servable = self.api.resolve(spec)
            plan(servable)
            return servable

        def work(servable: Any) -> Any:
            steps = plan(servable)
            examples = classification.serialized_examples(request.input)
            self.api.limits.check_inputs({"input": examples})
            response = inference_pb2.MultiInferenceResponse()
            for task, key, alias, fetch in steps:
                outputs = self.api.run(servable, key, {alias: examples}, list(fetch))
                result = response.results.add()
                if task.method_name == classification.CLASSIFY_METHOD:
                    classes, scores = classification.classification_arrays(
                        outputs, len(examples))
                    classification.classification_result(
                        classes, scores, result.classification_result)
                else:
                    values = classification.regression_values(outputs, len(examples))
                    classification.regression_result(values, result.regression_result)
                _echo_spec(result.model_spec, task.model_spec.name,
                           task.model_spec.signature_name, servable.version)
            return response

        return await self.api.call(context, "multi_inference", spec.name, request, prepare,
                                   work)

    async def GetModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        """The signature defs of the resolved version (``get_model_metadata_impl.cc``)."""
        spec = request.model_spec

        def prepare() -> Any:
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            if not request.metadata_field:
                raise invalid_argument(
                    "GetModelMetadataRequest must specify at least one metadata_field")
            for field in request.metadata_field:
                if field != SIGNATURE_DEF_FIELD:
                    raise invalid_argument(f"Metadata field {echo(field)} is not supported")
            return self.api.resolve(spec)

        def work(servable: Any) -> Any:
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            sig_map = get_model_metadata_pb2.SignatureDefMap()
            for key, sig in servable.signature_defs.items():
                sig_map.signature_def[key].CopyFrom(sig)
            response.metadata[SIGNATURE_DEF_FIELD].Pack(sig_map)
            return response

        return await self.api.call(context, "metadata", spec.name, request, prepare, work)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """``tensorflow.serving.ModelService``."""

    def __init__(self, api: GrpcApi):
        self.api = api

    async def GetModelStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Every version's state, or one version's (``get_model_status_impl.cc``).

        ``version_label`` is ignored, as in TF Serving.
        """
        spec = request.model_spec

        def work(_: Any) -> Any:
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            version = spec.version.value if spec.HasField("version") else None
            response = get_model_status_pb2.GetModelStatusResponse()
            for number, state in self.api.registry.version_states(spec.name, version):
                entry = response.model_version_status.add()
                entry.version = number
                entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(state.state)
                entry.status.error_code = _error_code_value(state.error_code)
                entry.status.error_message = state.error_message
            return response

        return await self.api.call(context, "status", spec.name, request, lambda: None, work)

    async def HandleReloadConfigRequest(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Serves the given ``model_config_list`` (``model_service_impl.cc``).

        The models are those of the request until ``models.config`` changes on disk;
        ``base_path`` is ignored as it is in the file (a model is always
        ``<serving root>/<name>``). Answers when the new versions have loaded.
        """
        from tfserving import model_config

        config = request.config

        def prepare() -> Any:
            if config.WhichOneof("config") != "model_config_list":
                raise invalid_argument(
                    "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                    "ModelConfigList is currently supported")
            try:
                model_config.model_configs(config)
            except model_config.ConfigError as err:
                raise invalid_argument(str(err)) from None
            return _NoServable()

        remaining = context.time_remaining()  # the loads are awaited up to the deadline

        def work(_: Any) -> Any:
            self.api.registry.reload_config(model_config.model_configs(config),
                                            timeout=remaining)
            response = model_management_pb2.ReloadConfigResponse()
            response.status.error_code = 0
            # TF Serving reports the increase of each requested metric of its own metric
            # registry, 0 for names it does not have; this server has none of them.
            for name in request.metric_names:
                response.metric.add(name=name, int64_value_increase=0)
            return response

        return await self.api.call(context, "reload_config", "", request, prepare, work)


class _NoServable:
    """What a reload "resolves" to: never inline (it waits for loads), no labels."""

    name = ""
    version = ""
    inline = False


def _error_code_value(name: str) -> int:
    from tensorflow.core.protobuf import error_codes_pb2

    try:
        return error_codes_pb2.Code.Value(name)
    except ValueError:
        return error_codes_pb2.Code.Value("UNKNOWN")


def _address(host: str, port: int) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


class GrpcServer:
    """A started ``grpc.aio`` server with both services; :meth:`stop` it on the same loop."""

    def __init__(self, server: grpc.aio.Server, port: int):
        self.server = server
        self.port = port

    async def stop(self, grace: float | None = 5.0) -> None:
        """Stops accepting calls; running calls get ``grace`` seconds to finish."""
        await self.server.stop(grace)


async def start(api: GrpcApi, host: str, port: int,
                options: Sequence[tuple[str, Any]] = ()) -> GrpcServer:
    """Serves ``api`` on ``host:port`` (0: any free port) on the running event loop.

    Raises OSError when the address cannot be bound.
    """
    server = grpc.aio.server(options=list(SERVER_OPTIONS) + list(options))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(api), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(api), server)
    address = _address(host, port)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as err:
        raise OSError(f"cannot listen for gRPC on {address}: {err}") from None
    if not bound:
        raise OSError(f"cannot listen for gRPC on {address}")
    await server.start()
    log.info("gRPC: listening on %s", _address(host, bound))
    return GrpcServer(server, bound)
