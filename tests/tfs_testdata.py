"""TF1-style SavedModels like TensorFlow Serving's own testdata, generated for the tests.

TF Serving tests its servers on models written by its scripts
(``tensorflow_serving/servables/tensorflow/testdata/saved_model_half_plus_two.py``
and ``export_counter.py``). These builders write models with the same
behaviour, signature keys, tensor names, method names, variables, init ops
and assets, in TF1 graph mode with reference variables:

- ``half_plus_two``: variables ``a=0.5, b=2, c=3, a2=0.5, c2=3``; a ``tf_example``
  string placeholder parsed into ``x`` and ``x2`` (``[-1, 1]`` floats, ``x2``
  defaulting to 0); ``y = a*x + b``, ``y2 = a*x + c``, ``y3 = a2*x2 + c2``.
  Signatures ``serving_default`` (predict, ``x`` -> ``y``), ``classify_x_to_y``
  (``inputs``: tf_example -> ``scores``: y), ``regress_x_to_y``,
  ``regress_x_to_y2`` (``inputs``: tf_example -> ``outputs``) and
  ``regress_x2_to_y3`` (``inputs``: x2 -> ``outputs``: y3). Asset
  ``assets/foo.txt``; a ``main_op`` assigns ``filename_tensor`` (with
  ``main_op=True``, after TF's standard initialising ``main_op``).
- ``half_plus_three``: the 2017 export TF Serving's REST guide uses:
  ``y = 0.5*x + 3`` as ``serving_default`` and ``tensorflow/serving/regress``,
  a ``legacy_init_op`` and the same asset.
- ``counter``: reference variable ``counter = 0`` and four stateful predict
  signatures ``get_counter``, ``incr_counter``, ``incr_counter_by`` (``delta``)
  and ``reset_counter``, each with output ``output``.

Graph mode and reference variables are process-global switches, so every
model is written by a child process (``python -m tests.tfs_testdata``).
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = ("half_plus_two", "half_plus_two_main_op", "half_plus_three", "counter")
ASSET_CONTENTS = "asset-file-contents"

class ChildBuiltModels:
    """Models written by ``python -m <module> KIND DIR ...`` (TF1 graph mode is
    process-global), built on first use and kept for the test session."""

    def __init__(self, module: str, kinds: tuple[str, ...], version: str, *,
                 timeout: float, label: str):
        self.module, self.kinds, self.version = module, kinds, version
        self.timeout, self.label = timeout, label
        self._store: dict[str, str] = {}
        self._dir = ""

    def build(self, targets: dict[str, str]) -> None:
        """Writes each ``{kind: export_dir}`` in one child process."""
        unknown = sorted(set(targets) - set(self.kinds))
        if unknown:
            raise ValueError(f"unknown {self.label} model(s) {unknown}; valid: "
                             f"{', '.join(self.kinds)}")
        args = [item for kind, path in targets.items() for item in (kind, os.path.abspath(path))]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
        proc = subprocess.run([sys.executable, "-m", self.module, *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=self.timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"building {sorted(targets)} failed:\n{proc.stderr[-4000:]}")

    def get(self, *kinds: str) -> dict[str, str]:
        """Export dirs of ``kinds``, the missing ones built together in one child."""
        if not self._dir:
            self._dir = tempfile.mkdtemp(prefix=f"tfs-{self.label}-")
            atexit.register(shutil.rmtree, self._dir, True)
        missing = {kind: os.path.join(self._dir, kind, self.version)
                   for kind in kinds if kind not in self._store}
        if missing:
            self.build(missing)
            self._store.update(missing)
        return {kind: self._store[kind] for kind in kinds}


_MODELS = ChildBuiltModels("tests.tfs_testdata", KINDS, "00000123", timeout=300,
                           label="testdata")
build = _MODELS.build


def build_half_plus_two(export_dir: str, *, main_op: bool = False) -> str:
    """Writes half_plus_two (``main_op=True``: the ``_main_op`` variant) to ``export_dir``."""
    build({"half_plus_two_main_op" if main_op else "half_plus_two": export_dir})
    return export_dir


def build_half_plus_three(export_dir: str) -> str:
    """Writes half_plus_three to ``export_dir``."""
    build({"half_plus_three": export_dir})
    return export_dir


def build_counter(export_dir: str) -> str:
    """Writes the counter model to ``export_dir``."""
    build({"counter": export_dir})
    return export_dir


def tfs_models(*kinds: str) -> dict[str, str]:
    """Export dirs of the given models, built once per test session (one child for all).

    Tests that change a model's state (the counter) should copy it first.
    """
    return _MODELS.get(*kinds)


# ------------------------------------------------------------ in the child process


def _asset_file(scratch: str) -> str:
    os.makedirs(scratch, exist_ok=True)
    path = os.path.join(scratch, "foo.txt")
    with open(path, "w") as f:
        f.write(ASSET_CONTENTS)
    return path


def _signature(inputs: dict, outputs: dict, method: str):
    import tensorflow as tf

    v1 = tf.compat.v1
    return v1.saved_model.build_signature_def(
        {k: v1.saved_model.build_tensor_info(t) for k, t in inputs.items()},
        {k: v1.saved_model.build_tensor_info(t) for k, t in outputs.items()}, method)


def _filename_assign(asset_path: str):
    """The asset path in the ASSET_FILEPATHS collection and an op assigning its file name."""
    import tensorflow as tf

    v1 = tf.compat.v1
    v1.add_to_collection(v1.GraphKeys.ASSET_FILEPATHS, tf.constant(asset_path))
    filename = v1.Variable("foo.txt", name="filename_tensor", trainable=False, collections=[])
    return filename.assign("foo.txt")


def _export_half_plus_two(export_dir: str, main_op: bool) -> None:
    import tensorflow as tf

    v1 = tf.compat.v1
    predict, regress, classify = (v1.saved_model.PREDICT_METHOD_NAME,
                                  v1.saved_model.REGRESS_METHOD_NAME,
                                  v1.saved_model.CLASSIFY_METHOD_NAME)
    with v1.Session(graph=tf.Graph()) as sess:
        a, b, c = (v1.Variable(v, name=n) for v, n in ((0.5, "a"), (2.0, "b"), (3.0, "c")))
        serialized = v1.placeholder(tf.string, shape=[None], name="tf_example")
        parsed = v1.parse_example(serialized, {
            "x": v1.FixedLenFeature([1], tf.float32),
            "x2": v1.FixedLenFeature([1], tf.float32, default_value=[0.0])})
        x = tf.identity(parsed["x"], name="x")
        y = tf.identity(a * x + b, name="y")
        y2 = tf.identity(a * x + c, name="y2")
        x2 = tf.identity(parsed["x2"], name="x2")
        # Separate variables for y3, as in TF Serving's script (no fused path with y, y2).
        a2, c2 = v1.Variable(0.5, name="a2"), v1.Variable(3.0, name="c2")
        y3 = tf.identity(a2 * x2 + c2, name="y3")
        assign = _filename_assign(_asset_file(export_dir + ".assets-src"))
        signatures = {
            "regress_x_to_y": _signature({"inputs": serialized}, {"outputs": y}, regress),
            "regress_x_to_y2": _signature({"inputs": serialized}, {"outputs": y2}, regress),
            "regress_x2_to_y3": _signature({"inputs": x2}, {"outputs": y3}, regress),
            "classify_x_to_y": _signature({"inputs": serialized}, {"scores": y}, classify),
            "serving_default": _signature({"x": x}, {"y": y}, predict),
        }
        sess.run(v1.global_variables_initializer())
        init = (tf.group(v1.saved_model.main_op.main_op(), assign) if main_op
                else tf.group(assign))
        builder = v1.saved_model.Builder(export_dir)
        builder.add_meta_graph_and_variables(
            sess, [v1.saved_model.SERVING], signature_def_map=signatures,
            assets_collection=v1.get_collection(v1.GraphKeys.ASSET_FILEPATHS), main_op=init)
        builder.save()
    shutil.rmtree(export_dir + ".assets-src")


def _export_half_plus_three(export_dir: str) -> None:
    import tensorflow as tf

    v1 = tf.compat.v1
    with v1.Session(graph=tf.Graph()) as sess:
        a, b, c = (v1.Variable(v, name=n) for v, n in ((0.5, "a"), (3.0, "b"), (3.0, "c")))
        serialized = v1.placeholder(tf.string, shape=[None], name="tf_example")
        parsed = v1.parse_example(serialized, {"x": v1.FixedLenFeature([1], tf.float32)})
        x = tf.identity(parsed["x"], name="x")
        y = tf.add(a * x, b, name="y")
        x2 = v1.placeholder(tf.float32, name="x2")
        tf.add(a * x2, c, name="y2")  # in the graph, in no signature (as in the original)
        assign = _filename_assign(_asset_file(export_dir + ".assets-src"))
        signatures = {
            "serving_default": _signature({"x": x}, {"y": y},
                                          v1.saved_model.PREDICT_METHOD_NAME),
            v1.saved_model.REGRESS_METHOD_NAME: _signature(
                {"inputs": serialized}, {"outputs": tf.identity(y)},
                v1.saved_model.REGRESS_METHOD_NAME),
        }
        sess.run(v1.global_variables_initializer())
        # TF 2's Builder stores a legacy_init_op argument as a main_op; an export of TF 1.0
        # has the op in the "legacy_init_op" collection, which the loader still runs.
        v1.add_to_collection(v1.saved_model.LEGACY_INIT_OP_KEY, tf.group(assign))
        builder = v1.saved_model.Builder(export_dir)
        builder.add_meta_graph_and_variables(
            sess, [v1.saved_model.SERVING], signature_def_map=signatures,
            assets_collection=v1.get_collection(v1.GraphKeys.ASSET_FILEPATHS))
        builder.save()
    shutil.rmtree(export_dir + ".assets-src")


def _export_counter(export_dir: str) -> None:
    import tensorflow as tf

    v1 = tf.compat.v1
    method = v1.saved_model.PREDICT_METHOD_NAME
    with v1.Session(graph=tf.Graph()) as sess:
        counter = v1.Variable(0.0, dtype=tf.float32, name="counter")
        with tf.name_scope("incr_counter_op"):
            incr = counter.assign_add(1.0)
        delta = v1.placeholder(tf.float32, name="delta")
        with tf.name_scope("incr_counter_by_op"):
            incr_by = counter.assign_add(delta)
        with tf.name_scope("reset_counter_op"):
            reset = counter.assign(0.0)
        sess.run(v1.global_variables_initializer())
        signatures = {
            "get_counter": _signature({}, {"output": counter}, method),
            "incr_counter": _signature({}, {"output": incr}, method),
            "incr_counter_by": _signature({"delta": delta}, {"output": incr_by}, method),
            "reset_counter": _signature({}, {"output": reset}, method),
        }
        builder = v1.saved_model.Builder(export_dir)
        builder.add_meta_graph_and_variables(sess, [v1.saved_model.SERVING],
                                             signature_def_map=signatures)
        builder.save()


def _main(argv: list[str]) -> None:
    import tensorflow as tf

    # TF1 semantics for this whole process: graph mode, reference variables.
    tf.compat.v1.disable_v2_behavior()
    assert not tf.compat.v1.resource_variables_enabled()
    for kind, path in zip(argv[::2], argv[1::2], strict=True):
        if kind == "half_plus_two":
            _export_half_plus_two(path, main_op=False)
        elif kind == "half_plus_two_main_op":
            _export_half_plus_two(path, main_op=True)
        elif kind == "half_plus_three":
            _export_half_plus_three(path)
        elif kind == "counter":
            _export_counter(path)
        else:
            raise SystemExit(f"unknown model {kind!r}")


if __name__ == "__main__":
    _main(sys.argv[1:])
