"""The serving root: which models and versions exist, loading them, and serving the right ones.

Layout, as TF Serving expects it::

    <serving_root>/
      models.config            # optional ModelServerConfig text proto
      <model>/<version>/saved_model.pb, variables/, assets/

- A version is a child directory whose whole name is a non-negative int64.
  Other entries (``.tmp-3``, ``README``) are ignored, so a publisher can stage a
  version under a temporary name and rename it into place.
- With ``models.config``, its ``model_config_list`` says which models are
  served, with their version policy (``latest {num_versions}`` / ``all {}`` /
  ``specific {versions}``; default latest 1) and ``version_labels``. Without
  it, every directory whose name is a valid model name is a model served with
  latest 1.
- Decision: a model's directory is always ``<serving_root>/<name>``. The
  config's ``base_path`` is written for the production container (for
  example ``/models/sum_two``) and is ignored here, so nothing outside the
  serving root is ever read. Model names must match ``MODEL_NAME``, and every
  directory is resolved (symlinks included) and must stay inside the root.
- Names from requests are only ever used as keys of the in-memory registry,
  never to build a path.

:class:`ModelRegistry` polls the root (models.config mtime and directory
listings) every ``poll_interval`` seconds, loads new versions on background
threads, and swaps the set of served versions atomically. A request holds a
reference to the :class:`Servable` it resolved, so unloading a version never
breaks a request already running on it. A version that fails to load is
reported in the model status (state ``END`` with its error) and is skipped by
the version policy, so the previous version keeps serving; it is retried when
its files change.

Each loaded version also decides, once, where the server runs its calls
(:attr:`Servable.inline`): warm-up calls at load time, on zero inputs shaped
like each signature's inputs, time the call (inputs converted, outputs
fetched). When every signature's median is at most
:data:`INLINE_MAX_CALL_SECONDS`, the version is *inline*: the server calls it
on its event loop, because handing a sub-millisecond call to a worker thread
and back costs more than the call. Otherwise its calls run on the thread
pool; so do those of a version with a signature that cannot be judged from a
warm-up: it fails on a zero input, has a loop (its length depends on input
values), its output size depends on the value of an integer input (as
``fun_runif``'s ``N``), it writes variables, tables or files, or it takes
sparse inputs. What remains is a cost that grows with input values without
any of these signs (a float input cast to a size): such a signature can be
judged cheap and run inline.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import re
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tfserving import json_tensor
from tfserving.layout import MODEL_NAME, parse_version, valid_model_name
from tfserving.status import CODE_NAMES, ServingError, echo, invalid_argument, not_found

log = logging.getLogger("serving")

CONFIG_FILE = "models.config"
_MAX_CONFIG_BYTES = 4 * 1024 * 1024
_MAX_FINGERPRINT_FILES = 10_000
_MAX_LOAD_ERROR = 2000

# A version whose signature calls take at most this long (median of warm-up calls, input
# conversion and output fetch included) is called on the event loop instead of the thread
# pool. Handing a request to a worker thread and back costs about 0.1-0.3 ms here (two
# thread wake-ups, GIL hand-overs) - as much as a tiny model's whole call (sum_two: about
# 0.2 ms) - so below 1 ms inline is clearly faster; and a call on the loop delays requests
# queued behind it by at most that long, far inside the latency targets. Slower calls go
# to the pool, where they overlap with each other and never hold up the loop.
INLINE_MAX_CALL_SECONDS = 1e-3
# Timed warm-up calls per signature (after two untimed ones: the first calls may trace or
# initialise); the median decides. A slow model stops after a majority of slow calls.
WARMUP_CALLS = 5
# A zero input with more elements than this is not worth warming: its call is not cheap.
_MAX_WARMUP_ELEMENTS = 1_000_000
# Ops whose cost depends on input *values* (loops: a warm-up on zeros says nothing about
# n = 600,000) or that change state (a warm-up call must not write variables, tables,
# files or queues). A signature using any of them is not warmed up and runs on the pool.
_LOOP_OPS = frozenset({"While", "StatelessWhile", "_While", "For", "Enter", "RefEnter",
                       "Exit", "RefExit", "NextIteration", "RefNextIteration", "LoopCond"})
_WRITE_OP = re.compile(
    r"Assign|^(Resource)?(Sparse)?Apply|^(Resource)?Scatter(Nd)?(Update|Add|Sub|Mul|Div|Min|Max)"
    r"|^Write|^Save|^MergeV2Checkpoints|^LookupTable(Insert|Import|Remove)|Enqueue")


class ConfigError(ValueError):
    """``models.config`` is unreadable or invalid."""


def _inside(root_real: str, path: str) -> bool:
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real + os.sep)


# ----------------------------------------------------------------- configuration


@dataclass(frozen=True)
class VersionPolicy:
    """TF Serving's ServableVersionPolicy: ``latest`` (n), ``all`` or ``specific``."""

    kind: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def select(self, available: Iterable[int]) -> set[int]:
        """The versions to serve out of those ``available``."""
        ordered = sorted(available)
        if self.kind == "all":
            return set(ordered)
        if self.kind == "specific":
            return set(ordered) & set(self.versions)
        return set(ordered[-max(1, self.num_versions):]) if ordered else set()


@dataclass(frozen=True)
class ModelConfig:
    """One served model: name, version policy and version labels."""

    name: str
    policy: VersionPolicy = VersionPolicy()
    labels: Mapping[str, int] = field(default_factory=dict)


def parse_models_config(text: str) -> list[ModelConfig]:
    """Parses a ``ModelServerConfig`` text proto (``base_path`` is ignored)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    proto = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as err:
        raise ConfigError(f"{CONFIG_FILE} is not a valid ModelServerConfig: {err}") from None
    if proto.WhichOneof("config") == "custom_model_config":
        raise ConfigError(f"{CONFIG_FILE}: custom_model_config is not supported")
    configs: list[ModelConfig] = []
    seen: set[str] = set()
    for entry in proto.model_config_list.config:
        name = entry.name
        if not valid_model_name(name):
            raise ConfigError(f"{CONFIG_FILE}: invalid model name {name!r} (must match "
                              f"{MODEL_NAME.pattern})")
        if name in seen:
            raise ConfigError(f"{CONFIG_FILE}: model {name!r} is listed twice")
        seen.add(name)
        if entry.model_platform not in ("", "tensorflow"):
            raise ConfigError(f"{CONFIG_FILE}: model {name!r}: unsupported model_platform "
                              f"{entry.model_platform!r} (only 'tensorflow')")
        policy_proto = entry.model_version_policy
        which = policy_proto.WhichOneof("policy_choice")
        if which == "all":
            policy = VersionPolicy("all")
        elif which == "specific":
            policy = VersionPolicy("specific", versions=tuple(policy_proto.specific.versions))
        else:
            policy = VersionPolicy("latest", num_versions=policy_proto.latest.num_versions or 1)
        configs.append(ModelConfig(name, policy, dict(entry.version_labels)))
    return configs


def read_models_config(serving_root: str) -> list[ModelConfig] | None:
    """The root's ``models.config``, or None when there is none."""
    root = os.path.realpath(serving_root)
    path = os.path.join(root, CONFIG_FILE)
    if not os.path.lexists(path):
        return None
    if not _inside(root, path) or not os.path.isfile(path):
        raise ConfigError(f"{CONFIG_FILE} must be a regular file inside the serving root")
    with open(path, "rb") as f:
        data = f.read(_MAX_CONFIG_BYTES + 1)
    if len(data) > _MAX_CONFIG_BYTES:
        raise ConfigError(f"{CONFIG_FILE} is larger than {_MAX_CONFIG_BYTES} bytes")
    try:
        return parse_models_config(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{CONFIG_FILE} is not UTF-8 text") from None


def discover_models(serving_root: str) -> list[ModelConfig]:
    """Without ``models.config``: every valid model directory, served with latest 1."""
    root = os.path.realpath(serving_root)
    configs = []
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return []
    for entry in entries:
        if valid_model_name(entry.name) and entry.is_dir() and _inside(root, entry.path):
            configs.append(ModelConfig(entry.name))
    return configs


def list_versions(serving_root: str, model: str) -> dict[int, str]:
    """``{version: directory}`` of a model's version directories inside the root."""
    root = os.path.realpath(serving_root)
    model_dir = os.path.join(root, model)
    if not valid_model_name(model) or not _inside(root, model_dir):
        return {}
    versions: dict[int, str] = {}
    try:
        entries = list(os.scandir(model_dir))
    except OSError:
        return {}
    for entry in sorted(entries, key=lambda e: e.name):
        version = parse_version(entry.name)
        if version is None or version in versions:
            continue
        if entry.is_dir() and _inside(root, entry.path):
            versions[version] = entry.path
    return versions


def fingerprint(path: str) -> tuple:
    """Sizes and mtimes of a version directory's files: changes when it is rewritten."""
    items: list[tuple] = []
    try:
        items.append(("", os.stat(path).st_mtime_ns))
    except OSError:
        return ()
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(dirpath, name)
            try:
                st = os.stat(full)
            except OSError:
                continue
            items.append((os.path.relpath(full, path), st.st_size, st.st_mtime_ns))
            if len(items) > _MAX_FINGERPRINT_FILES:
                return tuple(sorted(items))
    return tuple(sorted(items))


# ---------------------------------------------------------------------- loading


class LoadError(Exception):
    """A version directory could not be loaded; ``code`` is a TF error code name."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def read_meta_graph(path: str) -> Any:
    """The ``serve``-tagged MetaGraphDef of the SavedModel in ``path``."""
    from google.protobuf import message, text_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    pb, pbtxt = os.path.join(path, "saved_model.pb"), os.path.join(path, "saved_model.pbtxt")
    try:
        if os.path.isfile(pb):
            with open(pb, "rb") as f:
                data = f.read()
            # The C++ protobuf backend stops at an invalid tag and returns how far it got.
            parsed = saved_model.ParseFromString(data)
            if parsed is not None and parsed != len(data):
                raise LoadError("DATA_LOSS", "Can't parse saved_model.pb as binary proto")
        elif os.path.isfile(pbtxt):
            with open(pbtxt, encoding="utf-8") as f:
                text_format.Parse(f.read(), saved_model)
        else:
            raise LoadError("NOT_FOUND", "Could not find SavedModel .pb or .pbtxt in the "
                                         "version directory")
    except (message.DecodeError, text_format.ParseError, UnicodeDecodeError) as err:
        raise LoadError("DATA_LOSS", f"Cannot parse the SavedModel proto: {err}") from None
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == {"serve"}:
            return meta_graph
    raise LoadError("NOT_FOUND", "Could not find meta graph def matching supplied tags: { serve }")


def _tensor_spec(alias: str, info: Any) -> json_tensor.TensorSpec:
    from tensorflow.core.framework import types_pb2

    dtype = types_pb2.DataType.Name(info.dtype)
    shape_proto = info.tensor_shape
    shape = None if shape_proto.unknown_rank else tuple(d.size for d in shape_proto.dim)
    return json_tensor.TensorSpec(alias, dtype, shape, dense=info.WhichOneof("encoding") == "name")


def signature_specs(meta_graph: Any) -> dict[str, json_tensor.SignatureSpec]:
    """The meta graph's signature defs as :class:`json_tensor.SignatureSpec` objects."""
    return {
        key: json_tensor.SignatureSpec(
            key, sig.method_name,
            {alias: _tensor_spec(alias, t) for alias, t in sorted(sig.inputs.items())},
            {alias: _tensor_spec(alias, t) for alias, t in sorted(sig.outputs.items())})
        for key, sig in meta_graph.signature_def.items()
    }


def metadata_json(name: str, version: int, meta_graph: Any) -> dict[str, Any]:
    """The GetModelMetadata REST response, exactly as TF Serving builds it.

    The signature defs are the SignatureDefMap proto printed with
    ``preserve_proto_field_names`` and ``always_print_primitive_fields``.
    """
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_metadata_pb2

    sig_map = get_model_metadata_pb2.SignatureDefMap()
    for key, sig in meta_graph.signature_def.items():
        sig_map.signature_def[key].CopyFrom(sig)
    return {
        "model_spec": {"name": name, "signature_name": "", "version": str(version)},
        "metadata": {"signature_def": json_format.MessageToDict(
            sig_map, preserving_proto_field_name=True, including_default_value_fields=True)},
    }


class Servable:
    """One loaded version of a model: its signatures and callable functions."""

    def __init__(self, name: str, version: int, path: str, *, warm_up: bool = True):
        import tensorflow as tf

        self.name = name
        self.version = version
        meta_graph = read_meta_graph(path)
        self.signatures = signature_specs(meta_graph)
        self.metadata_body = json_tensor.dumps(metadata_json(name, version, meta_graph))
        self._loaded = tf.saved_model.load(path, tags=["serve"])
        self._functions = dict(self._loaded.signatures)
        self.inline = False
        self.dispatch = "thread pool (not warmed up)"
        if warm_up:
            try:
                self.inline, self.dispatch = self._choose_dispatch()
            except Exception as err:  # noqa: BLE001 - the decision must never fail a load
                self.dispatch = f"thread pool (no decision: {_first_line(err)})"

    def _choose_dispatch(self) -> tuple[bool, str]:
        """(inline?, why) from warm-up calls of every callable signature; see the module doc.

        Decided once per loaded version: timings taken under load would be inflated by
        contention and could flip the decision back and forth.
        """
        keys = sorted(k for k in self.signatures if k in self._functions)
        if not keys:
            return False, "thread pool (no callable signature)"
        for key in keys:
            ops = function_op_types(self._functions[key])
            if ops & _LOOP_OPS:
                return False, (f"thread pool (signature '{key}' has a loop: its cost depends "
                               "on input values)")
            writes = sorted(op for op in ops if _WRITE_OP.search(op))
            if writes:
                return False, (f"thread pool (signature '{key}' writes state ({writes[0]}): "
                               "not warmed up)")
        timings = []
        for key in keys:
            try:
                median = self._warm_up(key)
            except Exception as err:  # noqa: BLE001 - any failure means: cannot be judged
                return False, (f"thread pool (signature '{key}' cannot be judged from a "
                               f"warm-up call: {_first_line(err)})")
            timings.append(f"{key} {median * 1e3:.2f} ms")
            if median > INLINE_MAX_CALL_SECONDS:
                return False, (f"thread pool ({timings[-1]} per warm-up call > "
                               f"{INLINE_MAX_CALL_SECONDS * 1e3:g} ms)")
        return True, (f"event loop ({', '.join(timings)} per warm-up call <= "
                      f"{INLINE_MAX_CALL_SECONDS * 1e3:g} ms)")

    def _warm_up(self, key: str) -> float:
        """Median seconds of a call of signature ``key`` on zero inputs.

        Raises if a call fails, or if the outputs' sizes change when the integer inputs
        are 2 instead of 0: then the size of the work depends on input values (like
        ``fun_runif``'s ``N``), and a call on zeros says nothing about its cost.
        """
        arrays = warmup_inputs(self.signatures[key])
        outputs = self.run(key, arrays)  # the first calls may trace, initialise, allocate
        self.run(key, arrays)
        integers = [a for a, arr in arrays.items() if arr.dtype.kind in "iu"]
        if integers:
            twos = {a: np.full_like(arr, 2) if a in integers else arr
                    for a, arr in arrays.items()}
            sizes = {a: v.size for a, v in outputs.items()}
            other = {a: v.size for a, v in self.run(key, twos).items()}
            if sizes != other:
                raise ValueError(f"its output size depends on the value of input "
                                 f"'{integers[0]}' (outputs {sizes} with 0, {other} with 2)")
        samples: list[float] = []
        slow = 0
        while len(samples) < WARMUP_CALLS and slow <= WARMUP_CALLS // 2:
            started = time.perf_counter()
            self.run(key, arrays)
            samples.append(time.perf_counter() - started)
            slow += samples[-1] > INLINE_MAX_CALL_SECONDS  # a slow majority decides early
        return statistics.median(samples)

    def signature(self, name: str) -> json_tensor.SignatureSpec:
        """The signature called ``name`` ("" means ``serving_default``); else a 400."""
        key = name or json_tensor.DEFAULT_SIGNATURE
        sig = self.signatures.get(key)
        if sig is None:
            raise invalid_argument(f'Serving signature name: "{echo(key)}" not found in '
                                   "signature def")
        return sig

    def run(self, key: str, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Calls signature ``key`` on numpy inputs; returns numpy outputs.

        TensorFlow releases the GIL while it computes, so calls from several
        threads run in parallel.
        """
        import tensorflow as tf

        function = self._functions.get(key)
        sig = self.signatures[key]
        if function is None:
            raise invalid_argument(f"Signature '{echo(key)}' cannot be called "
                                   "(it has no callable function in the SavedModel)")
        feeds = input_tensors(sig, tensors)
        try:
            result = function(**feeds)
        except tf.errors.OpError as err:
            raise ServingError(CODE_NAMES.get(err.error_code, "UNKNOWN"),
                               _op_error_message(err.message)) from None
        except (TypeError, ValueError) as err:
            raise invalid_argument(f"Cannot call signature '{key}': {err}") from None
        return output_arrays(result)


def input_tensors(sig: json_tensor.SignatureSpec,
                  arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Decoded request arrays as the tensors fed to ``sig``'s function (dtypes from its def)."""
    import tensorflow as tf

    return {alias: tf.constant(arr, dtype=tf_dtype(sig.inputs[alias].dtype))
            for alias, arr in arrays.items()}


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def warmup_inputs(sig: json_tensor.SignatureSpec) -> dict[str, np.ndarray]:
    """Zero (or empty-string) arrays shaped like ``sig``'s inputs; unknown dimensions are 1.

    Raises ValueError for inputs that cannot be generated (sparse, resource, huge).
    """
    arrays = {}
    for alias, spec in sig.inputs.items():
        if not spec.dense:
            raise ValueError(f"input '{alias}' is not a dense tensor")
        shape = tuple(1 if d < 0 else d for d in (spec.shape or ()))
        if math.prod(shape) > _MAX_WARMUP_ELEMENTS:
            raise ValueError(f"input '{alias}' has more than {_MAX_WARMUP_ELEMENTS} elements")
        if spec.dtype == "DT_STRING":
            array = np.empty(shape, dtype=object)
            array.fill(b"")
        else:
            dtype = tf_dtype(spec.dtype)
            if not (dtype.is_numpy_compatible and (dtype.is_bool or dtype.is_integer or
                                                   dtype.is_floating or dtype.is_complex)):
                raise ValueError(f"input '{alias}' has dtype {spec.dtype}")
            array = np.zeros(shape, dtype=dtype.as_numpy_dtype)
        arrays[alias] = array
    return arrays


def function_op_types(function: Any) -> set[str]:
    """Op types in a concrete function's graph and every function it calls."""
    graph_def = function.graph.as_graph_def()
    ops = {node.op for node in graph_def.node}
    for library_function in graph_def.library.function:
        ops.update(node.op for node in library_function.node_def)
    return ops


def output_arrays(result: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A signature function's output tensors as numpy arrays for the codec's encoders.

    String tensors become object arrays of ``bytes`` (a scalar one too).
    """
    import tensorflow as tf

    return {alias: np.asarray(tensor.numpy(), dtype=object if tensor.dtype == tf.string else None)
            for alias, tensor in result.items()}


def _op_error_message(message: str) -> str:
    """A TF runtime error without eager's preamble and Python stack trace.

    Eager wraps graph errors as "Graph execution error: Detected at node X
    defined at (most recent call last): <indented traceback>", which would
    leak server paths; TF Serving reports only the error itself.
    """
    if not message.startswith("Graph execution error:"):
        return message.strip()
    lines = message.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Detected at node")), None)
    if start is None:
        return message.strip()
    rest = lines[start + 1:]
    while rest and (not rest[0].strip() or rest[0].startswith(" ")
                    or rest[0] == "<stack traces unavailable>"):
        rest = rest[1:]
    return "\n".join(rest).strip() or message.strip()


def tf_dtype(name: str) -> Any:
    """The ``tf.DType`` of a ``DT_*`` name (``DT_FLOAT`` -> ``tf.float32``)."""
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2

    return tf.as_dtype(types_pb2.DataType.Value(name))


# --------------------------------------------------------------------- registry


@dataclass
class VersionStatus:
    """A version's state as GetModelStatus reports it."""

    state: str = "START"
    error_code: str = "OK"
    error_message: str = ""

    def to_json(self, version: int) -> dict[str, Any]:
        """One ``model_version_status`` entry."""
        return {"version": str(version), "state": self.state,
                "status": {"error_code": self.error_code, "error_message": self.error_message}}


class _Model:
    def __init__(self, config: ModelConfig):
        self.config = config
        self.on_disk: dict[int, str] = {}
        self.status: dict[int, VersionStatus] = {}
        self.loaded: dict[int, Any] = {}
        self.loading: set[int] = set()
        self.failed: dict[int, tuple] = {}
        # Replaced, never mutated: readers use whatever dict they picked up.
        self.serving: dict[int, Any] = {}


Loader = Callable[[str, int, str], Any]


class ModelRegistry:
    """The models of a serving root, kept in sync with the disk by a polling thread."""

    def __init__(self, serving_root: str, *, poll_interval: float = 0.5, load_threads: int = 2,
                 loader: Loader = Servable):
        self.root = os.path.realpath(serving_root)
        self.poll_interval = poll_interval
        self._loader = loader
        self._lock = threading.RLock()
        self._poll_lock = threading.Lock()  # one scan at a time
        self._idle = threading.Condition(self._lock)
        self._models: dict[str, _Model] = {}
        self._pool = ThreadPoolExecutor(load_threads, thread_name_prefix="serving-load")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._config_stamp: tuple | None = None
        self._configs: list[ModelConfig] | None = None
        self._in_flight_loads = 0
        self._unloaded = False

    # -- lifecycle

    def start(self, wait: bool = True, timeout: float | None = None) -> None:
        """Scans the root, loads the initial versions and starts polling.

        Raises ``FileNotFoundError`` if the root is missing and
        :class:`ConfigError` if ``models.config`` is invalid.
        """
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"serving root {self.root} does not exist")
        self.poll(strict=True)
        if wait:
            self.wait_idle(timeout)
        self._thread = threading.Thread(target=self._run, name="serving-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops polling and loading."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Waits until no load is running; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight_loads == 0, timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the watcher must survive anything
                log.exception("polling %s failed", self.root)

    # -- scanning

    def _current_configs(self, strict: bool) -> list[ModelConfig]:
        path = os.path.join(self.root, CONFIG_FILE)
        try:
            st = os.stat(path)
        except OSError:
            if self._configs is not None:
                log.info("%s removed: serving every model directory", CONFIG_FILE)
            self._config_stamp = None
            self._configs = None
            return discover_models(self.root)
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self._config_stamp:
            try:
                configs = read_models_config(self.root)
            except (ConfigError, OSError) as err:
                if strict:
                    raise ConfigError(str(err)) from None
                self._config_stamp = stamp
                log.error("ignoring %s: %s; keeping the current models", CONFIG_FILE, err)
                if self._configs is None:
                    with self._lock:
                        self._configs = [m.config for m in self._models.values()]
            else:
                self._config_stamp = stamp
                self._configs = configs or []
                log.info("%s: serving %s", CONFIG_FILE,
                         ", ".join(c.name for c in self._configs) or "no models")
        return list(self._configs or [])

    def poll(self, strict: bool = False) -> None:
        """One scan: reads the config and version directories, then reconciles."""
        with self._poll_lock:
            self._poll(strict)

    def _poll(self, strict: bool) -> None:
        configs = self._current_configs(strict)
        scans = {c.name: list_versions(self.root, c.name) for c in configs}
        with self._lock:
            failed = {name: dict(m.failed) for name, m in self._models.items() if m.failed}
        changed = {
            name: {v for v, fp in versions.items()
                   if v in scans.get(name, {}) and fingerprint(scans[name][v]) != fp}
            for name, versions in failed.items()
        }
        with self._lock:
            wanted = {c.name for c in configs}
            for name in list(self._models):
                if name not in wanted:
                    self._remove(name)
            for config in configs:
                model = self._models.get(config.name)
                if model is None:
                    model = self._models[config.name] = _Model(config)
                    log.info("model %s: watching %s", config.name,
                             os.path.join(self.root, config.name))
                model.config = config
                model.on_disk = scans[config.name]
                for version in list(model.failed):
                    if version not in model.on_disk or version in changed.get(config.name, ()):
                        del model.failed[version]
                self._reconcile(model)
            collect, self._unloaded = self._unloaded, False
        if collect:
            gc.collect()

    def _remove(self, name: str) -> None:
        model = self._models.pop(name)
        if model.loaded:
            log.info("model %s: removed; unloading versions %s", name, sorted(model.loaded))
            self._unloaded = True
        model.serving = {}
        model.loaded = {}

    def _reconcile(self, model: _Model) -> None:
        """Starts loads and updates the served versions of one model (lock held)."""
        candidates = set(model.on_disk) - set(model.failed)
        desired = model.config.policy.select(candidates)
        for version in sorted(desired - set(model.loaded) - model.loading):
            self._start_load(model, version)
        keep = set(model.loaded) & desired
        if desired & model.loading:
            # Availability first: old versions serve until the new ones are ready.
            keep |= set(model.serving) & set(model.loaded) & set(model.on_disk)
        for version in sorted(set(model.loaded) - keep):
            del model.loaded[version]
            model.status[version] = VersionStatus("END")
            self._unloaded = True
            log.info("model %s: unloaded version %d", model.config.name, version)
        serving = {v: model.loaded[v] for v in sorted(keep)}
        if serving.keys() != model.serving.keys():
            model.serving = serving
            log.info("model %s: serving versions %s", model.config.name, sorted(serving) or "none")

    def _start_load(self, model: _Model, version: int) -> None:
        model.loading.add(version)
        model.status[version] = VersionStatus("LOADING")
        self._in_flight_loads += 1
        path = model.on_disk[version]
        try:
            self._pool.submit(self._load, model, version, path)
        except RuntimeError:  # pool shut down
            model.loading.discard(version)
            self._in_flight_loads -= 1

    def _load(self, model: _Model, version: int, path: str) -> None:
        name = model.config.name
        stamp = fingerprint(path)
        servable, error = None, None
        try:
            servable = self._loader(name, version, path)
        except Exception as err:  # noqa: BLE001 - any failure is reported in the status
            error = err
        with self._lock:
            try:
                if self._models.get(name) is not model or version not in model.loading:
                    return
                model.loading.discard(version)
                if servable is not None:
                    model.loaded[version] = servable
                    model.status[version] = VersionStatus("AVAILABLE")
                    dispatch = getattr(servable, "dispatch", "")
                    log.info("model %s: loaded version %d%s", name, version,
                             f"; calls run on the {dispatch}" if dispatch else "")
                else:
                    code, message = _describe_load_error(error, name, version)
                    model.failed[version] = stamp
                    model.status[version] = VersionStatus("END", code, message)
                    log.error("model %s: version %d failed to load: %s", name, version, message)
                self._reconcile(model)
            finally:
                self._in_flight_loads -= 1
                self._idle.notify_all()

    # -- queries (called from request handlers)

    def model_names(self) -> list[str]:
        """Names of the models being watched."""
        return sorted(self._models)

    def has_model(self, name: str) -> bool:
        """True if ``name`` is a model being watched."""
        return name in self._models

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Any:
        """The servable answering a request for ``name`` (+ version or label).

        Unknown model or version: 404 (NOT_FOUND); unknown label: 400, as in
        TF Serving. Without version or label, the highest served version.
        """
        model = self._models.get(name)
        serving = model.serving if model is not None else {}
        if label is not None:
            version = self._label_version(model, label)
        if version is None:
            if not serving:
                raise not_found(f"Servable not found for request: Latest({echo(name)})")
            return serving[max(serving)]
        servable = serving.get(version)
        if servable is None:
            raise not_found(f"Servable not found for request: Specific({echo(name)}, {version})")
        return servable

    @staticmethod
    def _label_version(model: _Model | None, label: str) -> int:
        labels = model.config.labels if model is not None else {}
        if label not in labels:
            raise invalid_argument(f"Unrecognized servable version label: {echo(label)}")
        return labels[label]

    def status(self, name: str, version: int | None = None,
               label: str | None = None) -> dict[str, Any]:
        """The GetModelStatus response (versions newest first)."""
        with self._lock:
            model = self._models.get(name)
            if label is not None:
                version = self._label_version(model, label)
            states = dict(model.status) if model is not None else {}
        if version is not None:
            if version not in states:
                raise not_found(f"Could not find version {version} of model {echo(name)}")
            items = [(version, states[version])]
        else:
            if not states:
                raise not_found(f"Could not find any versions of model {echo(name)}")
            items = sorted(states.items(), reverse=True)
        return {"model_version_status": [state.to_json(v) for v, state in items]}


def _describe_load_error(error: BaseException | None, name: str, version: int) -> tuple[str, str]:
    code = "UNKNOWN"
    if isinstance(error, LoadError):
        code = error.code
    else:
        error_code = getattr(error, "error_code", None)
        if isinstance(error_code, int):
            code = CODE_NAMES.get(error_code, "UNKNOWN")
    detail = str(error) or type(error).__name__
    message = f"Failed to load {name}/{version}: {detail}"
    if len(message) > _MAX_LOAD_ERROR:
        message = message[:_MAX_LOAD_ERROR] + "...(truncated)"
    return code, message
