"""A SavedModel loaded and run the way TensorFlow Serving runs it: a ``SavedModelBundle``.

TF Serving (``servables/tensorflow/saved_model_bundle_factory.cc`` over
TensorFlow's C++ ``LoadSavedModel``) loads a version as a TF1 ``Session`` on
its own ``Graph``: the MetaGraphDef tagged ``serve`` is imported, variables are
restored from ``variables/``, asset paths are fed to the init op (``main_op``,
``legacy_init_op`` or a TF2 ``__saved_model_init_op``), and every request runs
``Session::Run`` with the feed and fetch tensor names of the requested
``SignatureDef``. :func:`load_bundle` does the same through
``tf.compat.v1.saved_model.loader.load``, which reads through TensorFlow's
filesystem layer (local, ``ram://``, ``gs://``, ``s3://`` with tensorflow-io).

Consequences that differ from ``tf.saved_model.load`` + concrete functions,
and match TF Serving:

- TF1 exports load: reference variables (``float_ref`` outputs), graphs saved
  by TF 1.x, ``legacy_init_op``, assets collections.
- A feed is checked against the tensor's dtype, not its static shape: ``[3]``
  fed into a ``[-1, 1]`` input runs and gives what the graph computes; a float64
  array for a float input is INVALID_ARGUMENT "Expects arg[0] to be float but
  double is provided", as ``Session::Run`` says (nothing is cast: a gRPC
  TensorProto is fed with its own dtype, and REST JSON is decoded into the
  signature's dtypes before it gets here).
- One session serves every request; calls from several threads run in parallel
  (the session run releases the GIL).

Requests are checked as TF Serving's Predict does (``predict_util.cc``
``PreProcessPrediction`` and TensorFlow's ``saved_model::GetInputValues``):
same error codes, same messages.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2

from tfserving.filesystems import ensure_filesystem
from tfserving.saved_model import read_meta_graph
from tfserving.status import CODE_NAMES, ServingError, echo, tf_error_message

SERVE_TAG = "serve"
# TF 2 SavedModels keep their init op as a SignatureDef with this key (TensorFlow's
# saved_model/constants.py INIT_OP_SIGNATURE_KEY); it is not a signature to serve.
INIT_OP_SIGNATURE_KEY = "__saved_model_init_op"
# Callables kept per bundle. A callable exists per (signature, fed inputs, fetched outputs);
# a client choosing ever new output filters must not grow the cache without bound. Beyond
# the limit a callable is built for the call and released after it.
MAX_CACHED_CALLABLES = 256


def _lenient_callable(session: Any, feeds: Sequence[str], fetches: Sequence[str],
                      caller_thread: bool = False) -> Any:
    """A callable running ``session`` with ``feeds`` (tensor names) fed and ``fetches`` fetched.

    PRIVATE TENSORFLOW API, kept in this one function: ``Session._make_callable_from_options``
    (TF 2.16: ``tensorflow/python/client/session.py``) wraps the C API's
    ``TF_SessionMakeCallable`` / ``TF_SessionRunCallable``, i.e. C++ ``Session::MakeCallable``.
    The public ``Session.make_callable(fetches, feed_list)`` instead runs every call through
    ``Session.run``, whose Python feed handling rejects a value whose shape is not
    compatible with the tensor's static shape (``Cannot feed value of shape (3,) for Tensor
    'x:0', which has shape '(?, 1)'``) and costs about 100 us per call. TF Serving feeds
    ``Session::Run`` from C++, where only the dtype is checked, so the private path is both
    the faithful one and ~9x faster for small models.

    The callable takes the feed values positionally (numpy arrays, in ``feeds`` order) and
    returns a list of numpy values in ``fetches`` order; it is safe to call from several
    threads. ``tests/test_bundle.py::test_private_callable_api_still_behaves`` fails if a
    TensorFlow upgrade changes any of this.

    ``caller_thread``: run the graph's ops on the calling thread instead of the session's
    inter-op pool (the public ``RunOptions.inter_op_thread_pool = -1``; ``DirectSession``
    honours it when the call has a single executor). For small graphs this saves two
    thread hand-offs per call, which cost more than the ops themselves.
    """
    options = config_pb2.CallableOptions(feed=list(feeds), fetch=list(fetches))
    if caller_thread:
        options.run_options.inter_op_thread_pool = -1
    return session._make_callable_from_options(options)  # noqa: SLF001 - see docstring


def session_config(intra_op_threads: int = 0, inter_op_threads: int = 0) -> Any:
    """The ``ConfigProto`` of a bundle's session; 0 lets TensorFlow choose, as in TF Serving."""
    for name, value in (("intra_op_threads", intra_op_threads),
                        ("inter_op_threads", inter_op_threads)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0 (0: TensorFlow's default), "
                             f"got {value!r}")
    return config_pb2.ConfigProto(intra_op_parallelism_threads=intra_op_threads,
                                  inter_op_parallelism_threads=inter_op_threads)


def load_bundle(export_dir: str, *, tags: Sequence[str] = (SERVE_TAG,),
                intra_op_threads: int = 0, inter_op_threads: int = 0) -> SavedModelBundle:
    """Loads the SavedModel in ``export_dir`` into a new session, as TF Serving does.

    Raises :class:`ServingError`: ``NOT_FOUND`` when there is no SavedModel or no
    MetaGraph with exactly ``tags``; ``DATA_LOSS`` when the proto cannot be parsed; a
    TensorFlow error's own code when restoring variables or running the init op fails.
    """
    config = session_config(intra_op_threads, inter_op_threads)
    tags = list(tags)
    try:
        ensure_filesystem(export_dir)
    except ValueError as err:  # TensorFlow: "File system scheme '...' not implemented"
        raise ServingError("UNIMPLEMENTED", str(err)) from None
    # NOT_FOUND / DATA_LOSS as TensorFlow's C++ reader reports them. TensorFlow's Python
    # loader parses leniently (a corrupt file reads as "no MetaGraph with these tags").
    read_meta_graph(export_dir, tags)
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph, config=config)
    try:
        # The loader imports into session.graph (as_default is per thread, so loads may
        # run concurrently), restores variables and runs the init op with asset paths fed.
        meta_graph = tf.compat.v1.saved_model.loader.load(session, tags, export_dir)
    except tf.errors.OpError as err:  # restoring variables, running the init op
        session.close()
        raise ServingError(CODE_NAMES.get(err.error_code, "UNKNOWN"),
                           tf_error_message(err.message)) from None
    except Exception:
        session.close()
        raise
    graph.finalize()  # nothing is added after loading: callables only name existing tensors
    return SavedModelBundle(session, meta_graph, export_dir)


class _Signature:
    """A SignatureDef as plain Python, for the per-request path (proto reads are slow)."""

    def __init__(self, key: str, proto: meta_graph_pb2.SignatureDef):
        self.key = key
        self.proto = proto
        self.input_names = {alias: info.name for alias, info in proto.inputs.items()}
        self.input_types = {alias: info.dtype for alias, info in proto.inputs.items()}
        # The numpy dtype a fed array must have (None: any string array for DT_STRING;
        # types numpy cannot hold are left to TensorFlow).
        self.input_dtypes = {alias: _numpy_dtype(info.dtype)
                             for alias, info in proto.inputs.items()}
        self.input_order = tuple(sorted(proto.inputs))
        self.output_order = tuple(sorted(proto.outputs))
        self.outputs = frozenset(proto.outputs)
        self.defaults = {alias: tf.make_ndarray(value) for alias, value in proto.defaults.items()}


class SavedModelBundle:
    """A loaded SavedModel: a session over its MetaGraph, run by signature name.

    Thread-safe: :meth:`run` may be called from any number of threads at once.
    """

    def __init__(self, session: Any, meta_graph: meta_graph_pb2.MetaGraphDef, export_dir: str):
        self.session = session
        self.meta_graph = meta_graph
        self.export_dir = export_dir
        self._signatures = {key: _Signature(key, sig)
                            for key, sig in meta_graph.signature_def.items()}
        self._callables: dict[tuple, Any] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._caller_thread = False

    def run_on_caller_thread(self) -> None:
        """From now on, calls run their ops on the calling thread (see :func:`_lenient_callable`).

        For a version whose calls are known to be cheap: the session's inter-op pool then
        costs more than it parallelises.
        """
        with self._lock:
            self._caller_thread = True
            self._callables.clear()

    @property
    def signature_defs(self) -> Mapping[str, meta_graph_pb2.SignatureDef]:
        """The MetaGraph's ``SignatureDef`` map (key -> proto)."""
        return self.meta_graph.signature_def

    def run(self, signature_key: str, inputs: Mapping[str, Any],
            output_filter: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Runs signature ``signature_key``; returns ``{output alias: array}``.

        ``inputs`` maps input aliases to arrays of the inputs' dtypes (any array of
        ``bytes`` or ``str`` for a string input); another dtype is INVALID_ARGUMENT, as
        ``Session::Run`` reports it (nothing is cast). ``output_filter`` names the outputs
        to fetch (default: all). String outputs are object arrays of ``bytes``.
        """
        if self._closed:
            raise ServingError("FAILED_PRECONDITION", "Attempted to use a closed Session.")
        sig = self._signatures.get(signature_key)
        if sig is None:  # predict_util.cc RunPredict
            raise ServingError("FAILED_PRECONDITION",
                               f'Serving signature key "{echo(signature_key)}" not found.')
        feed_aliases, feed_values = _feeds(sig, inputs)
        fetch_aliases = _fetches(sig, output_filter)
        _check_dtypes(sig, feed_aliases, feed_values)  # Session::Run's check, after these
        call = self._callables.get((signature_key, feed_aliases, fetch_aliases))
        if call is None:
            call = self._new_callable(sig, feed_aliases, fetch_aliases)
        try:
            values = call(*feed_values)
        except tf.errors.OpError as err:
            raise ServingError(CODE_NAMES.get(err.error_code, "UNKNOWN"),
                               tf_error_message(err.message)) from None
        except UnicodeDecodeError as err:
            # TensorFlow's binding cannot turn a status whose message has non-UTF-8 bytes
            # into an OpError, and the code is lost. Such bytes come from input data that an
            # op echoes while rejecting it ("Could not parse example input, value: '...'",
            # StringToNumber, ...): those ops report INVALID_ARGUMENT.
            message = err.object.decode("utf-8", "backslashreplace") if isinstance(
                err.object, bytes) else str(err)
            raise ServingError("INVALID_ARGUMENT", message.strip()) from None
        if len(values) != len(fetch_aliases):  # predict_util.cc PostProcessPredictionResult
            raise ServingError("UNKNOWN", "Predict internal error")
        return {alias: _output_array(value)
                for alias, value in zip(fetch_aliases, values, strict=True)}

    def _new_callable(self, sig: _Signature, feeds: tuple[str, ...],
                      fetches: tuple[str, ...]) -> Any:
        """The callable for (signature, fed aliases, fetched aliases), cached if room is left."""
        proto = sig.proto
        feed_names = [_dense_name(proto.inputs[a], "input", a, sig.key) for a in feeds]
        fetch_names = [_dense_name(proto.outputs[a], "output", a, sig.key) for a in fetches]
        cache_key = (sig.key, feeds, fetches)
        with self._lock:
            call = self._callables.get(cache_key)
            if call is None:
                try:
                    call = _lenient_callable(self.session, feed_names, fetch_names,
                                             self._caller_thread)
                except tf.errors.OpError as err:  # e.g. a tensor name not in the graph
                    raise ServingError(CODE_NAMES.get(err.error_code, "UNKNOWN"),
                                       tf_error_message(err.message)) from None
                if len(self._callables) < MAX_CACHED_CALLABLES:
                    self._callables[cache_key] = call
        return call

    def close(self) -> None:
        """Releases the callables and closes the session; call when no run is in progress."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._callables.clear()
        self.session.close()

    def __enter__(self) -> SavedModelBundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _feeds(sig: _Signature, inputs: Mapping[str, Any]) -> tuple[tuple[str, ...], list[Any]]:
    """Fed aliases (sorted) and their values, checked as TF Serving checks a request."""
    order = sig.input_order
    if len(inputs) == len(order):  # the common case: every input given, by its alias
        try:
            return order, [np.asarray(inputs[a]) for a in order]
        except KeyError:
            pass  # an unknown alias: the checks below say which
    # predict_util.cc VerifyRequestInputsSize.
    if len(inputs) > len(order) or (len(inputs) < len(order) and not sig.defaults):
        sent, wanted = set(inputs), set(order)
        raise ServingError(
            "INVALID_ARGUMENT",
            f"input size does not match signature: {len(inputs)}!={len(order)} "
            f"len({{{_join(sent)}}}) != len({{{_join(wanted)}}}). "
            f"Sent extra: {{{_join(sent - wanted)}}}. "
            f"Missing but required: {{{_join(wanted - sent)}}}.")
    values: list[Any] = []
    used = 0
    # tensorflow/cc/saved_model/util.cc GetInputValues: every signature input from the
    # request, else from the signature's defaults.
    for alias in order:
        if alias in inputs:
            used += 1
            values.append(np.asarray(inputs[alias]))
        elif alias in sig.defaults:
            values.append(sig.defaults[alias])
        else:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Signature input alias: {alias}(feed name: {sig.input_names[alias]}) not "
                f"found in request and no default value provided. Inputs expected to be "
                f"in the request {{{_join(inputs)}}}, or default input alias set: "
                f"{_join(sig.defaults)}")
    if inputs and used != len(inputs):
        raise ServingError(
            "INVALID_ARGUMENT",
            f"Inputs contains invalid name. Used request inputs: "
            f"{_join(a for a in inputs if a in sig.input_names)}, request input: "
            f"{_join(inputs)}")
    return order, values


def _fetches(sig: _Signature, output_filter: Sequence[str] | None) -> tuple[str, ...]:
    """Output aliases to fetch, checked as ``predict_util.cc`` PreProcessPrediction does."""
    if not output_filter:
        return sig.output_order
    if isinstance(output_filter, str):
        raise TypeError("output_filter must be a sequence of output aliases, not a string")
    seen: set[str] = set()
    for alias in output_filter:
        if alias not in sig.outputs:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"output tensor alias not found in signature: {echo(alias)} Outputs expected "
                f"to be in the set {{{_join(sig.outputs)}}}.")
        if alias in seen:
            raise ServingError("INVALID_ARGUMENT", f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    return tuple(output_filter)


def _dense_name(info: Any, kind: str, alias: str, key: str) -> str:
    if info.WhichOneof("encoding") != "name":
        raise ServingError("UNIMPLEMENTED",
                           f"Signature '{key}' {kind} '{alias}' is a "
                           f"{info.WhichOneof('encoding')} tensor; only dense tensors can be "
                           "fed and fetched")
    return info.name


def _numpy_dtype(dtype_enum: int) -> np.dtype | None:
    """The numpy dtype of an input's arrays; None for strings and non-numeric types."""
    try:
        dtype = tf.dtypes.as_dtype(dtype_enum)
    except TypeError:  # DT_INVALID and other values without a tf.DType
        return None
    if dtype == tf.string or not dtype.is_numpy_compatible or dtype.is_quantized:
        return None
    if not (dtype.is_bool or dtype.is_integer or dtype.is_floating or dtype.is_complex):
        return None
    return np.dtype(dtype.as_numpy_dtype)


def _dtype_matches(array: np.ndarray, dtype_enum: int, dtype: np.dtype | None) -> bool:
    if dtype_enum == types_pb2.DT_STRING:
        return array.dtype.kind in "OSU"  # bytes objects, or text TensorFlow encodes
    return dtype is None or array.dtype == dtype


def _check_dtypes(sig: _Signature, aliases: Sequence[str], values: Sequence[np.ndarray]) -> None:
    """INVALID_ARGUMENT for a fed array whose dtype is not its input's, worded as TensorFlow's
    ``FunctionCallFrame::SetArgs`` (function.cc), which ``Session::Run`` calls with the feeds
    in the order of their sorted tensor names (direct_session.cc GetOrCreateExecutors)."""
    if all(_dtype_matches(v, sig.input_types[a], sig.input_dtypes[a])
           for a, v in zip(aliases, values, strict=True)):
        return
    fed = sorted(zip((sig.input_names[a] for a in aliases), aliases, values, strict=True))
    for index, (_, alias, value) in enumerate(fed):
        if not _dtype_matches(value, sig.input_types[alias], sig.input_dtypes[alias]):
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Expects arg[{index}] to be {_type_string(sig.input_types[alias])} but "
                f"{_array_type_string(value)} is provided")


def _type_string(dtype_enum: int) -> str:
    """TensorFlow's DataTypeString: DT_FLOAT -> float, DT_DOUBLE -> double, ..."""
    try:
        return types_pb2.DataType.Name(dtype_enum)[3:].lower()
    except ValueError:
        return f"unknown dtype enum ({dtype_enum})"


def _array_type_string(array: np.ndarray) -> str:
    try:
        return _type_string(tf.dtypes.as_dtype(array.dtype).as_datatype_enum)
    except TypeError:  # a numpy dtype TensorFlow has no type for
        return array.dtype.name


def _output_array(value: Any) -> np.ndarray:
    """A fetched value as an array: strings as object arrays of bytes (scalars too)."""
    if isinstance(value, bytes):
        return np.asarray(value, dtype=object)
    return np.asarray(value)


def _join(names: Any) -> str:
    """Names sorted and comma-joined, as ``absl::StrJoin`` over a ``std::set``."""
    return ",".join(sorted(echo(str(n)) for n in names))
