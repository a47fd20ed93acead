"""Warmup requests: ``assets.extra/tf_serving_warmup_requests``, as TF Serving reads them.

TF Serving replays this file when it loads a version and marks the version
AVAILABLE only afterwards; a record that fails fails the load
(``servables/tensorflow/saved_model_warmup.cc`` and ``saved_model_warmup_util.cc``):

- a TFRecord file of ``tensorflow.serving.PredictionLog`` protos, each a
  ``predict_log``, ``classify_log``, ``regress_log`` or ``multi_inference_log``
  whose ``request`` is replayed (``session_run_log`` is UNIMPLEMENTED), with the
  classify/regress rules of :mod:`tfserving.classification`;
- at most :data:`MAX_RECORDS` records (more is INVALID_ARGUMENT), a record that
  does not parse is INVALID_ARGUMENT, a damaged file is DATA_LOSS;
- no file is fine: warmup is optional.

This module writes the file from TF Serving REST request bodies (the catalog's
examples) and reads and replays it through any ``run(key, arrays)`` callable.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from tfserving import classification, json_tensor, tensor_proto
from tfserving.status import ServingError

ASSETS_EXTRA = "assets.extra"
FILE_NAME = "tf_serving_warmup_requests"
MAX_RECORDS = 1000  # WarmupConsts::kMaxNumRecords

Run = Callable[[str, Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


def path(export_dir: str) -> str:
    """Where a SavedModel keeps its warmup requests."""
    import tensorflow as tf

    return tf.io.gfile.join(export_dir, ASSETS_EXTRA, FILE_NAME)


def logs_from_rest(model_name: str, signatures: Mapping[str, json_tensor.SignatureSpec],
                   bodies: Iterable[Mapping[str, Any]]) -> list[Any]:
    """PredictionLogs for REST request bodies, decoded by TF Serving's JSON rules.

    ``:predict`` bodies (``instances``/``inputs``) become PredictLogs; bodies
    with ``examples`` become ClassifyLogs or RegressLogs, for the method the
    signature can run (:func:`_examples_method`). Raises ServingError for a body
    the server would reject.
    """
    from tensorflow_serving.apis import (
        classification_pb2,
        predict_pb2,
        prediction_log_pb2,
        regression_pb2,
    )

    logs = []
    for body in bodies:
        doc = json_tensor.parse_json(json_tensor.dumps(body))
        key = json_tensor.signature_name(doc) or json_tensor.DEFAULT_SIGNATURE
        if "examples" in doc:
            classify = _examples_method(signatures, key) == classification.CLASSIFY_METHOD
            examples = json_tensor.decode_examples(doc, "classify" if classify else "regress")
            request = (classification_pb2.ClassificationRequest() if classify
                       else regression_pb2.RegressionRequest())
            request.model_spec.name, request.model_spec.signature_name = model_name, key
            for serialized in examples:
                request.input.example_list.examples.add().ParseFromString(serialized)
            log = (prediction_log_pb2.PredictionLog(
                classify_log=prediction_log_pb2.ClassifyLog(request=request))
                if classify else prediction_log_pb2.PredictionLog(
                    regress_log=prediction_log_pb2.RegressLog(request=request)))
        else:
            _, arrays = json_tensor.decode_predict(doc, _signature(signatures, key))
            request = predict_pb2.PredictRequest()
            request.model_spec.name, request.model_spec.signature_name = model_name, key
            for alias, array in arrays.items():
                tensor_proto.to_proto(array, proto=request.inputs[alias])
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
        logs.append(log)
    return logs


def _examples_method(signatures: Mapping[str, json_tensor.SignatureSpec], key: str) -> str:
    """The method (classify or regress) a body with ``examples`` is for: the one signature
    ``key`` passes TF Serving's checks for (its method_name is not one of them, but is
    tried first); the first method's error when it passes neither."""
    sig = signatures.get(key)
    first = (classification.REGRESS_METHOD
             if sig is not None and sig.method_name == classification.REGRESS_METHOD
             else classification.CLASSIFY_METHOD)
    errors = []
    for method in (first, *(m for m in classification.METHODS if m != first)):
        try:
            classification.example_signature(signatures, key, method)
            return method
        except ServingError as err:
            errors.append(err)
    raise errors[0]


def write(export_dir: str, logs: Iterable[Any]) -> str:
    """Writes ``logs`` as the SavedModel's warmup file; returns its path."""
    import tensorflow as tf

    logs = list(logs)
    if len(logs) > MAX_RECORDS:
        raise ValueError(f"{len(logs)} warmup records; TF Serving reads at most {MAX_RECORDS}")
    target = path(export_dir)
    tf.io.gfile.makedirs(tf.io.gfile.join(export_dir, ASSETS_EXTRA))
    with tf.io.TFRecordWriter(target) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return target


def read(export_dir: str) -> list[Any]:
    """The SavedModel's warmup records ([] without a file), with TF Serving's errors."""
    import tensorflow as tf
    from google.protobuf import message
    from tensorflow_serving.apis import prediction_log_pb2

    target = path(export_dir)
    if not tf.io.gfile.exists(target):
        return []
    logs = []
    try:
        for record in tf.data.TFRecordDataset(target).as_numpy_iterator():
            log = prediction_log_pb2.PredictionLog()
            try:
                log.ParseFromString(record)
            except message.DecodeError:
                raise ServingError("INVALID_ARGUMENT",
                                   f"Failed to parse warmup record from {FILE_NAME}") from None
            logs.append(log)
            if len(logs) > MAX_RECORDS:
                raise ServingError("INVALID_ARGUMENT", "Number of warmup records exceeds the "
                                   f"maximum ({MAX_RECORDS}) at {FILE_NAME}")
    except tf.errors.DataLossError as err:
        raise ServingError("DATA_LOSS", f"{err.message}. Please verify your warmup data is in "
                                        "TFRecord format.") from None
    return logs


def replay(logs: Iterable[Any], run: Run,
           signatures: Mapping[str, json_tensor.SignatureSpec]) -> dict[str, float]:
    """Runs every record through ``run``; returns the median seconds per signature key.

    The first pass is TF Serving's warmup (lazy initialisation, first-call
    allocations); a second pass is timed, so the figure is a warm call's.
    A record that fails raises its ServingError, as a failed warmup fails the load.
    """
    calls = [call for log in logs for call in _calls(log, signatures)]
    for key, arrays in calls:
        run(key, arrays)
    seconds: dict[str, list[float]] = {}
    for key, arrays in calls:
        started = time.perf_counter()
        run(key, arrays)
        seconds.setdefault(key, []).append(time.perf_counter() - started)
    return {key: statistics.median(times) for key, times in seconds.items()}


def _calls(log: Any, signatures: Mapping[str, json_tensor.SignatureSpec]
           ) -> list[tuple[str, dict[str, np.ndarray]]]:
    """(signature key, input arrays) of the call(s) one warmup record stands for."""
    kind = log.WhichOneof("log_type")
    if kind is None:  # no request: RunWarmupRequest's default case runs nothing
        return []
    if kind == "predict_log":
        request = log.predict_log.request
        sig = _signature(signatures, request.model_spec.signature_name)
        return [(sig.key, tensor_proto.request_arrays(request.inputs))]
    # saved_model_warmup.cc runs these through RunClassify, RunRegress, RunMultiInference.
    if kind in ("classify_log", "regress_log"):
        request = getattr(log, kind).request
        method = (classification.CLASSIFY_METHOD if kind == "classify_log"
                  else classification.REGRESS_METHOD)
        key = request.model_spec.signature_name or json_tensor.DEFAULT_SIGNATURE
        alias, _ = classification.example_signature(signatures, key, method)
        plan = [(key, alias)]
    elif kind == "multi_inference_log":
        request = log.multi_inference_log.request
        plan = [(key, alias) for key, _, alias, _ in classification.multi_inference_plan(
            signatures, [(t.model_spec.name, t.model_spec.signature_name, t.method_name)
                         for t in request.tasks])]
    else:
        raise ServingError("UNIMPLEMENTED", f"Unsupported log_type for warmup: {kind}")
    examples = classification.serialized_examples(request.input)
    return [(key, {alias: examples}) for key, alias in plan]


def _signature(signatures: Mapping[str, json_tensor.SignatureSpec],
               name: str) -> json_tensor.SignatureSpec:
    key = name or json_tensor.DEFAULT_SIGNATURE
    if key not in signatures:
        raise ServingError("INVALID_ARGUMENT",
                           f'Serving signature name: "{key}" not found in signature def')
    return signatures[key]
