"""SavedModels whose signatures are exactly the ones TF Serving's REST tests assume.

``tensorflow_serving/util/json_tensor_test.cc`` checks the conversions on a
``TensorInfoMap`` (input alias -> dtype, no shape) and on output tensor maps,
without a model. To replay those cases over HTTP, each map becomes a TF1
SavedModel: a predict signature whose inputs have those aliases and dtypes (and
unknown shape), echoed back by ``tf.identity`` under the same aliases, so the
response shows the tensor the server built. Output-side cases get models whose
outputs are those of the test (complex, scalar, zero-batch, mismatched
batches, none). Classify/regress request cases get signatures that echo the
tf.Examples they receive (classify: each serialized Example as its class
label, web-safe base64) or count their ``names`` values (regress).

Written in TF1 graph mode, as TF Serving's testdata, by a child process
(``python -m tests.tfs_echo_models``): graph mode is a process-wide switch.
"""

from __future__ import annotations

import sys

from tests.tfs_testdata import ChildBuiltModels

# Model name -> {input alias: dtype}, echoed as outputs of the same aliases (json_tensor_test.cc).
ECHO_MODELS: dict[str, dict[str, str]] = {
    "default_int32": {"default": "int32"},
    "default_float": {"default": "float32"},
    "default_double": {"default": "float64"},
    "default_string": {"default": "string"},
    "int_tensor": {"int_tensor": "int32"},
    "str_tensor": {"str_tensor": "string"},
    "multi4": {"int_tensor": "int32", "str_tensor": "string", "float_tensor": "float32",
               "dbl_tensor": "float64"},
    "multi3": {"int_tensor": "int32", "str_tensor": "string", "bin_tensor": "string"},
    "multi2": {"int_tensor": "int32", "str_tensor": "string"},
    "str_tensor_bytes": {"str_tensor_bytes": "string"},
    "multi5": {"int_tensor": "int32", "str_tensor": "string", "float_tensor": "float32",
               "double_scalar_tensor": "float64", "str_tensor_bytes": "string"},
}
# Models with outputs of their own (see _export_special).
SPECIAL_MODELS = ("complex_out", "scalar_out", "batch_mismatch", "zero_batch", "zero_batch2",
                  "zero_batch_mismatch", "no_outputs", "matmul", "example_echo",
                  "example_echo_regress", "fixed_results")
KINDS = tuple(ECHO_MODELS) + SPECIAL_MODELS

_MODELS = ChildBuiltModels("tests.tfs_echo_models", KINDS, "1", timeout=600, label="echo")
build = _MODELS.build


def echo_models(*kinds: str) -> dict[str, str]:
    """Export dirs of the given models (all when none given), built once per test session."""
    return _MODELS.get(*(kinds or KINDS))


# ------------------------------------------------------------ in the child process


def _save(export_dir: str, sess, signatures: dict) -> None:
    import tensorflow as tf

    v1 = tf.compat.v1
    sess.run(v1.global_variables_initializer())
    builder = v1.saved_model.Builder(export_dir)
    builder.add_meta_graph_and_variables(sess, [v1.saved_model.SERVING],
                                         signature_def_map=signatures)
    builder.save()


def _signature(inputs: dict, outputs: dict, method: str | None = None):
    import tensorflow as tf

    v1 = tf.compat.v1
    return v1.saved_model.build_signature_def(
        {k: v1.saved_model.build_tensor_info(t) for k, t in inputs.items()},
        {k: v1.saved_model.build_tensor_info(t) for k, t in outputs.items()},
        method or v1.saved_model.PREDICT_METHOD_NAME)


def _export_echo(export_dir: str, aliases: dict[str, str], extra_keys: tuple[str, ...]) -> None:
    import tensorflow as tf

    v1 = tf.compat.v1
    with v1.Session(graph=tf.Graph()) as sess:
        inputs = {alias: v1.placeholder(tf.as_dtype(dtype), shape=None, name=alias)
                  for alias, dtype in aliases.items()}
        outputs = {alias: tf.identity(t, name=f"{alias}_echo") for alias, t in inputs.items()}
        signature = _signature(inputs, outputs)
        _save(export_dir, sess, {key: signature for key in ("serving_default", *extra_keys)})


def _export_special(export_dir: str, kind: str) -> None:
    import tensorflow as tf

    v1 = tf.compat.v1
    classify, regress = v1.saved_model.CLASSIFY_METHOD_NAME, v1.saved_model.REGRESS_METHOD_NAME
    with v1.Session(graph=tf.Graph()) as sess:
        x_int = v1.placeholder(tf.int32, shape=None, name="x")
        x_float = v1.placeholder(tf.float32, shape=None, name="xf")
        examples = v1.placeholder(tf.string, shape=[None], name="tf_example")
        batch = tf.shape(examples)[0]
        if kind == "complex_out":  # json_tensor_test.cc FromJsonSingleTensorErrors (complex64)
            sigs = {"serving_default": _signature(
                {"x": x_float}, {"tensor": tf.complex(x_float, tf.zeros_like(x_float))})}
        elif kind == "scalar_out":  # ... (no shape information)
            sigs = {"serving_default": _signature({"x": x_int}, {"tensor": tf.reduce_sum(x_int)})}
        elif kind == "batch_mismatch":  # FromJsonMultipleNamedTensorsErrors
            sigs = {"serving_default": _signature({"int_tensor": x_int}, {
                "int_tensor": tf.identity(x_int),
                "str_tensor": tf.constant([["foo", "bar", "baz"]])})}
        elif kind == "zero_batch":  # FromJsonSingleZeroBatchTensor
            sigs = {"serving_default": _signature(
                {"x": x_int}, {"int_tensor": tf.zeros([0, 2], tf.int32) + x_int[:0, tf.newaxis]})}
        elif kind == "zero_batch2":  # FromJsonMultipleZeroBatchTensors
            sigs = {"serving_default": _signature({"x": x_int}, {
                "str_tensor": tf.fill([0, 1, 2], "") + tf.strings.as_string(x_int[:0])[:, None,
                                                                                     None],
                "float_tensor": tf.zeros([0, 3, 4]) + tf.cast(x_int[:0], tf.float32)[:, None,
                                                                                     None]})}
        elif kind == "zero_batch_mismatch":  # FromJsonMultipleZeroBatchTensorsErrors
            sigs = {"serving_default": _signature({"x": x_int}, {
                "int_tensor": tf.zeros([0, 2], tf.int32) + x_int[:0, tf.newaxis],
                "str_tensor": tf.constant([["foo", "bar"]])})}
        elif kind == "no_outputs":  # FromJsonSingleTensorErrors (empty tensor map)
            sigs = {"serving_default": _signature({"x": x_int}, {})}
        elif kind == "matmul":  # a graph that refuses a shape: y = x @ ones([3, 1])
            sigs = {"serving_default": _signature(
                {"x": x_float}, {"y": tf.matmul(x_float, tf.ones([3, 1]))})}
        elif kind == "example_echo":  # ClassifyRegressRequestTest: the Examples come back
            labels = tf.reshape(tf.io.encode_base64(examples), [-1, 1])
            echo = _signature({"inputs": examples},
                              {"classes": labels, "scores": tf.zeros([batch, 1])}, classify)
            sigs = {"serving_default": echo, "custom_signture": echo}
        elif kind == "example_echo_regress":  # ... as a regression: how many 'names' each has
            names = v1.io.parse_example(examples, {"names": v1.io.VarLenFeature(tf.string)})
            counts = tf.math.bincount(tf.cast(names["names"].indices[:, 0], tf.int32),
                                      minlength=batch, maxlength=batch, dtype=tf.float32)
            echo = _signature({"inputs": examples}, {"outputs": counts}, regress)
            sigs = {"serving_default": echo, "custom_signture": echo}
        elif kind == "fixed_results":  # ClassifyRegressnResultTest: results of the tests
            classes = tf.tile(tf.constant([["car", "bike", "bus"]]), [batch, 1])
            scores = tf.constant([[0.2, 0.7, 0.1], [0.7, 0.1, 0.2]])[:batch]
            inf = float("inf")
            sigs = {
                "serving_default": _signature({"inputs": examples},
                                              {"classes": classes, "scores": scores}, classify),
                "regress_fixed": _signature(
                    {"inputs": examples}, {"outputs": tf.constant([0.2, 0.9, 1.0])[:batch]},
                    regress),
                "regress_nonfinite": _signature({"inputs": examples}, {
                    "outputs": tf.constant([0.2, inf, 1.0, -inf, float("nan")])[:batch]},
                    regress),
            }
        else:
            raise SystemExit(f"unknown model {kind!r}")
        _save(export_dir, sess, sigs)


def _main(argv: list[str]) -> None:
    import tensorflow as tf

    tf.compat.v1.disable_v2_behavior()
    for kind, path in zip(argv[::2], argv[1::2], strict=True):
        if kind in ECHO_MODELS:
            # json_tensor_test.cc SingleUnnamedTensorWithSignature asks for "predict_images".
            extra = ("predict_images",) if kind == "default_int32" else ()
            _export_echo(path, ECHO_MODELS[kind], extra)
        else:
            _export_special(path, kind)


if __name__ == "__main__":
    _main(sys.argv[1:])
