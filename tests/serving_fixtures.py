"""Helpers for the serving tests: small real SavedModels, serving roots, a server subprocess.

The models are built once per test session into a temporary "store" and
copied into each test's serving root:

- ``sum_two``: the seed ``Adder`` (``x: float32 [-1, 3]`` -> ``x + 2``);
- ``fun_runif``: the seed ``Randomizer`` with the catalog's ``N: int32 []``;
- ``mobilenet_v2_test``: a tiny stand-in with the seed MobileNet's input
  (``input_img: string``, any shape) but the blog's original one-JPEG ``call``
  (reshaped to a scalar: one JPEG -> ``[1]`` label from a labels asset; the seed
  now takes several) that labels by mean brightness instead of running MobileNetV2;
- ``bytes_echo``: two inputs (``data: string [-1]``, ``times: int32 [-1]``) and
  two outputs, one ending in ``_bytes``;
- ``half_plus_two``: a small TF1-style SavedModel with classify, regress and predict
  signatures (``y = 0.5 x + 2``) in the style of TF Serving's testdata model of that
  name, not a copy of it (``tests/tfs_testdata.py`` builds those exactly);
- ``batch_size``: ``x: float32 [-1]`` -> ``y = 2 x`` and ``rows_in_call``, each row's count
  of rows in its call (shows merged batches);
- ``offset_<c>``: ``x: float32 [-1]`` -> ``x + c``, for version tests;
- ``busy``: ``n: int64 []`` -> ``n`` after a TensorFlow loop of ``n`` steps
  (about 5 us each), to keep a request in flight;
- ``counter``: ``x: float32 [-1]`` -> ``x + calls`` where ``calls`` is a
  variable each call increments (a signature that writes state).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import httpx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABELS = ("black", "dim", "bright", "white")
_STORE: dict[str, str] = {}
_STORE_DIR: list[str] = []


def _build(kind: str, path: str) -> None:
    import tensorflow as tf

    if REPO not in sys.path:
        sys.path.insert(0, REPO)

    if kind == "sum_two":
        from servables.adder import Adder

        obj = Adder()
        tf.saved_model.save(obj, path, signatures={
            "serving_default": obj.sum_two.get_concrete_function()})
    elif kind == "fun_runif":
        from servables.randomizer import Randomizer

        obj = Randomizer()
        tf.saved_model.save(obj, path, signatures={
            "serving_default": obj.fun_runif.get_concrete_function(
                tf.TensorSpec([], tf.int32, name="N"))})
    elif kind == "mobilenet_v2_test":
        labels_file = os.path.join(os.path.dirname(path), "labels.txt")
        with open(labels_file, "w") as f:
            f.write("\n".join(LABELS))

        class TinyLabeler(tf.Module):
            def __init__(self) -> None:
                super().__init__()
                self.labels = tf.saved_model.Asset(labels_file)

            @tf.function(input_signature=[tf.TensorSpec(shape=None, dtype=tf.string)])
            def call(self, input_img):
                img = tf.io.decode_jpeg(tf.reshape(input_img, []), channels=3)
                labels = tf.strings.split(tf.io.read_file(self.labels), sep="\n")
                brightness = tf.reduce_mean(tf.cast(img, tf.float32)) / 256.0
                index = tf.cast(brightness * tf.cast(tf.size(labels), tf.float32), tf.int32)
                return labels[index][tf.newaxis]

        obj = TinyLabeler()
        tf.saved_model.save(obj, path, signatures={
            "serving_default": obj.call.get_concrete_function()})
    elif kind == "bytes_echo":
        class BytesEcho(tf.Module):
            @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="data"),
                                          tf.TensorSpec([None], tf.int32, name="times")])
            def call(self, data, times):
                return {"echo_bytes": data, "length": tf.strings.length(data) * times}

        obj = BytesEcho()
        tf.saved_model.save(obj, path, signatures={
            "serving_default": obj.call.get_concrete_function()})
    elif kind == "batch_size":
        class BatchSize(tf.Module):
            """Each row's answer says how many rows its call had: merged calls show."""

            @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
            def call(self, x):
                rows = tf.shape(x)[0]
                return {"y": x * 2.0, "rows_in_call": tf.fill([rows], rows)}

        obj = BatchSize()
        tf.saved_model.save(obj, path, signatures={
            "serving_default": obj.call.get_concrete_function()})
    elif kind == "half_plus_two":
        _build_half_plus_two(path)
    elif kind == "busy":
        class Busy(tf.Module):
            @tf.function(input_signature=[tf.TensorSpec([], tf.int64, name="n")])
            def spin(self, n):
                return tf.while_loop(lambda i: i < n, lambda i: i + 1,
                                     [tf.constant(0, tf.int64)])[0]

        obj = Busy()
        tf.saved_model.save(obj, path, signatures={
            "serving_default": obj.spin.get_concrete_function()})
    elif kind == "counter":
        class Counter(tf.Module):
            def __init__(self) -> None:
                super().__init__()
                self.calls = tf.Variable(0.0)

            @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
            def count(self, x):
                return x + self.calls.assign_add(1.0)

        obj = Counter()
        tf.saved_model.save(obj, path, signatures={
            "serving_default": obj.count.get_concrete_function()})
    elif kind.startswith("offset_"):
        offset = float(kind.split("_", 1)[1])

        class Offset(tf.Module):
            @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
            def add(self, x):
                return x + offset

        obj = Offset()
        tf.saved_model.save(obj, path, signatures={
            "serving_default": obj.add.get_concrete_function()})
    else:
        raise ValueError(kind)


def _build_half_plus_two(path: str) -> None:
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        serialized = v1.placeholder(tf.string, shape=[None], name="tf_example")
        features = v1.io.parse_example(
            serialized, {"x": v1.io.FixedLenFeature([1], tf.float32)})
        y = 0.5 * features["x"] + 2.0
        scores = tf.concat([y, -y], axis=1)
        classes = tf.tile(tf.constant([["pos", "neg"]]), tf.stack([tf.shape(y)[0], 1]))
        x = v1.placeholder(tf.float32, shape=[None], name="x")
        with v1.Session(graph=graph) as sess:
            builder = v1.saved_model.Builder(path)
            builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map={
                "classify_x_to_y": v1.saved_model.classification_signature_def(
                    serialized, classes, scores),
                "regress_x_to_y": v1.saved_model.regression_signature_def(serialized, y),
                "serving_default": v1.saved_model.predict_signature_def(
                    {"x": x}, {"y": 0.5 * x + 2.0}),
            })
            builder.save()


def model_store(*kinds: str) -> dict[str, str]:
    """Paths of built models (built on first use, once per test session)."""
    if not _STORE_DIR:
        _STORE_DIR.append(tempfile.mkdtemp(prefix="serving-store-"))
    for kind in kinds:
        if kind not in _STORE:
            path = os.path.join(_STORE_DIR[0], kind, "model")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            _build(kind, path)
            _STORE[kind] = path
    return {kind: _STORE[kind] for kind in kinds}


def add_version(root: str, model: str, version: int | str, kind: str, *,
                atomic: bool = True) -> str:
    """Copies built model ``kind`` to ``root/model/version`` (via temp name + rename)."""
    source = model_store(kind)[kind]
    target = os.path.join(root, model, str(version))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if atomic:
        staging = os.path.join(root, model, f".tmp-{version}")
        shutil.copytree(source, staging)
        os.rename(staging, target)
    else:
        shutil.copytree(source, target)
    return target


def add_broken_version(root: str, model: str, version: int) -> str:
    """A version directory whose saved_model.pb is garbage."""
    target = os.path.join(root, model, str(version))
    os.makedirs(target)
    with open(os.path.join(target, "saved_model.pb"), "wb") as f:
        f.write(b"\x00this is not a SavedModel\xff" * 10)
    return target


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def jpeg(value: int, size: int = 16) -> bytes:
    """A uniform grey JPEG (0 = black, 255 = white)."""
    import tensorflow as tf

    image = tf.fill([size, size, 3], tf.constant(value, tf.uint8))
    return tf.io.encode_jpeg(image).numpy()


class Server:
    """``python -m serving`` on a free port, as a subprocess."""

    def __init__(self, root: str, *args: str, log_path: str):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
        if "--grpc-port" not in args:  # gRPC's default 8500 would clash between test servers
            args = (*args, "--grpc-port", "0")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "serving", "--serving-dir", root, "--port", str(self.port),
             *args],
            cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's output, for assertion messages."""
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")[-chars:]

    def wait_ready(self, model: str, timeout: float = 90.0) -> None:
        """Waits until ``model`` answers its status request with 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/v1/models/{model}", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Terminates the server (SIGTERM, then SIGKILL)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@contextlib.contextmanager
def running_server(root: str, ready_model: str, *args: str) -> Iterator[Server]:
    """Starts a server over ``root`` and waits for ``ready_model``; stops it after."""
    server = Server(root, *args, log_path=os.path.join(os.path.dirname(root),
                                                       f"server-{os.getpid()}-{time.time_ns()}.log"))
    try:
        server.wait_ready(ready_model)
        yield server
    finally:
        server.stop()
