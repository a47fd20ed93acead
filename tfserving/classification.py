"""Classify and Regress as TF Serving runs them, for REST, gRPC and warmup alike.

TF Serving answers ``:classify`` / ``:regress`` (REST) and ``Classify`` /
``Regress`` / ``MultiInference`` (gRPC) with the same code
(``servables/tensorflow/classifier.cc``, ``regressor.cc``, ``util.cc``), so
these rules are meant for both APIs:

1. the signature is checked (``PreProcessClassification`` /
   ``PreProcessRegression``): one input, ``inputs``; one or two outputs among
   ``classes`` / ``scores`` (classify), exactly one output ``outputs``
   (regress). The signature's ``method_name`` is not checked: TF Serving checks
   it only with ``--enable_signature_method_name_check`` (off by default, so
   TF2 models whose signatures say ``predict`` can be classified);
2. the request's examples become one DT_STRING vector of serialized
   ``tf.Example`` protos (``InputToSerializedExampleTensor``): with a context,
   each entry is the context's bytes followed by the example's, which parses
   as the example merged over the context;
3. the outputs are checked and turned into results
   (``PostProcessClassificationResult`` / ``PostProcessRegressionResult``).

Messages are TF Serving's, except that a signature is named by its key where
TF Serving prints the whole SignatureDef.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tfserving.json_tensor import DEFAULT_SIGNATURE, as_bytes
from tfserving.status import ServingError, echo, invalid_argument

CLASSIFY_INPUTS = "inputs"
CLASSIFY_OUTPUT_CLASSES = "classes"
CLASSIFY_OUTPUT_SCORES = "scores"
REGRESS_INPUTS = "inputs"
REGRESS_OUTPUTS = "outputs"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


METHODS = (CLASSIFY_METHOD, REGRESS_METHOD)


def example_signature(signatures: Mapping[str, Any], key: str,
                      method: str) -> tuple[str, tuple[str, ...]]:
    """(input alias, output aliases to fetch) of signature ``key`` for ``method``.

    ``signatures`` maps keys to specs with ``inputs`` and ``outputs`` mappings;
    ``method`` is :data:`CLASSIFY_METHOD` or :data:`REGRESS_METHOD`. An unknown
    key is INVALID_ARGUMENT "No signature was found with the name"
    (``GetClassificationSignatureDef`` / ``GetRegressionSignatureDef``), then
    :func:`classify_signature` / :func:`regress_signature` check it.
    """
    sig = signatures.get(key)
    if sig is None:
        raise invalid_argument(f"No signature was found with the name: {echo(key)}")
    check = classify_signature if method == CLASSIFY_METHOD else regress_signature
    return check(key, list(sig.inputs), list(sig.outputs))


def multi_inference_plan(signatures: Mapping[str, Any],
                         tasks: Sequence[tuple[str, str, str]]
                         ) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """(signature key, method, input alias, outputs to fetch) of each MultiInference task.

    ``tasks``: (model name, signature name, method name) of each task, checked as
    ``TensorFlowMultiInferenceRunner::Infer`` does (``multi_inference.cc``): one model
    name, each signature once, known signatures, classify/regress methods only.
    """
    plan = []
    model = ""
    seen: set[str] = set()
    for name, signature_name, method in tasks:
        if not name:
            raise invalid_argument("Found ModelSpec with an empty model name.")
        if model and name != model:
            raise invalid_argument("All ModelSpecs in a MultiInferenceRequest must access the "
                                   "same model name.")
        model = name
        key = signature_name or DEFAULT_SIGNATURE
        if key in seen:
            raise invalid_argument(f"Duplicate evaluation of signature: {echo(key)}")
        seen.add(key)
        sig = signatures.get(key)
        if sig is None:
            raise invalid_argument(f"Requested signature not found in model graph: {echo(key)}")
        if method not in METHODS:
            raise ServingError("UNIMPLEMENTED",
                               f"Unsupported signature method_name: {echo(method)}")
        check = classify_signature if method == CLASSIFY_METHOD else regress_signature
        plan.append((key, method, *check(key, list(sig.inputs), list(sig.outputs))))
    return plan


def classify_signature(key: str, inputs: Sequence[str],
                       outputs: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """(input alias, output aliases to fetch) of a classification signature.

    ``inputs`` / ``outputs`` are the signature's aliases. INVALID_ARGUMENT when
    it cannot classify (``PreProcessClassification``).
    """
    if len(inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(outputs) not in (1, 2):
        raise invalid_argument(f"Expected one or two output Tensors, found {len(outputs)}")
    if CLASSIFY_INPUTS not in inputs:
        raise invalid_argument(f"No classification inputs found in SignatureDef: {echo(key)}")
    fetch = tuple(a for a in (CLASSIFY_OUTPUT_CLASSES, CLASSIFY_OUTPUT_SCORES) if a in outputs)
    if not fetch:
        raise invalid_argument(
            'Expected classification signature outputs to contain at least one of "classes" '
            f'or "scores". Signature was: {echo(key)}')
    return CLASSIFY_INPUTS, fetch


def regress_signature(key: str, inputs: Sequence[str],
                      outputs: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """(input alias, output aliases) of a regression signature (``PreProcessRegression``)."""
    if len(inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(outputs) != 1:
        raise invalid_argument("Expected one output Tensor.")
    if REGRESS_INPUTS not in inputs:
        raise invalid_argument(f"No regression inputs found in SignatureDef: {echo(key)}")
    if REGRESS_OUTPUTS not in outputs:
        raise invalid_argument(f"No regression outputs found in SignatureDef: {echo(key)}")
    return REGRESS_INPUTS, (REGRESS_OUTPUTS,)


def serialized_examples(input_proto: Any) -> np.ndarray:
    """A ``tensorflow.serving.Input`` as the DT_STRING vector fed to the signature.

    ``example_list``: each example serialized; ``example_list_with_context``:
    the context's bytes before each example's. INVALID_ARGUMENT "Input is
    empty." without examples, as ``InputToSerializedExampleTensor``.
    """
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        examples, prefix = input_proto.example_list.examples, b""
    elif kind == "example_list_with_context":
        with_context = input_proto.example_list_with_context
        examples, prefix = with_context.examples, with_context.context.SerializeToString()
    else:
        examples, prefix = (), b""
    if not examples:
        raise invalid_argument("Input is empty.")
    return join_examples([e.SerializeToString() for e in examples], prefix)


def join_examples(examples: Sequence[bytes], context: bytes = b"") -> np.ndarray:
    """Serialized examples, each after ``context`` (merge semantics), as an object vector."""
    out = np.empty(len(examples), dtype=object)
    out[:] = [context + e for e in examples] if context else list(examples)
    return out


def _type_name(array: np.ndarray) -> str:
    if array.dtype.kind in "OSU":
        return "DT_STRING"
    names = {"float32": "DT_FLOAT", "float64": "DT_DOUBLE", "int32": "DT_INT32",
             "int64": "DT_INT64", "bool": "DT_BOOL", "float16": "DT_HALF"}
    return names.get(array.dtype.name, f"DT_{array.dtype.name.upper()}")


def _shape_text(array: np.ndarray) -> str:
    return "[" + ",".join(str(d) for d in array.shape) + "]"  # TensorShape::DebugString


def classification_arrays(outputs: Mapping[str, np.ndarray], num_examples: int
                          ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(classes, scores), checked as ``PostProcessClassificationResult``; either may be None.

    ``classes`` is ``[batch, num_classes]`` DT_STRING, ``scores`` the same shape
    DT_FLOAT.
    """
    classes = outputs.get(CLASSIFY_OUTPUT_CLASSES)
    scores = outputs.get(CLASSIFY_OUTPUT_SCORES)
    checked = []
    for name, array, dtype in (("classes", classes, "DT_STRING"), ("scores", scores, "DT_FLOAT")):
        if array is None:
            checked.append(None)
            continue
        array = np.asarray(array)
        if array.ndim != 2:
            raise invalid_argument("Expected Tensor shape: [batch_size num_classes] but got "
                                   f"{_shape_text(array)}")
        if _type_name(array) != dtype:
            raise invalid_argument(f"Expected {name} Tensor of {dtype}. Got: {_type_name(array)}")
        if array.shape[0] != num_examples:
            raise invalid_argument(f"Expected {name} output batch size of {num_examples}. "
                                   f"Got: {array.shape[0]}")
        checked.append(array)
    classes, scores = checked
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument("Tensors class and score should match in dim_size(1). Got "
                               f"{classes.shape[1]} vs. {scores.shape[1]}")
    return classes, scores


def regression_values(outputs: Mapping[str, np.ndarray], num_examples: int) -> np.ndarray:
    """The ``outputs`` output as a float32 vector, checked as ``PostProcessRegressionResult``."""
    if REGRESS_OUTPUTS not in outputs:
        raise invalid_argument(f"Could not find output tensor '{REGRESS_OUTPUTS}'")
    values = np.asarray(outputs[REGRESS_OUTPUTS])
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise invalid_argument("Expected output Tensor shape to be either [batch_size] or "
                               f"[batch_size, 1] but got {_shape_text(values)}")
    if values.shape[0] != num_examples:
        raise invalid_argument("Input batch size did not match output batch size: "
                               f"{num_examples} vs. {values.shape[0]}")
    if _type_name(values) != "DT_FLOAT":
        raise invalid_argument(f"Expected output Tensor of DT_FLOAT.  Got: {_type_name(values)}")
    return values.reshape(num_examples)


def classification_result(classes: np.ndarray | None, scores: np.ndarray | None,
                          result: Any) -> Any:
    """Fills a ``ClassificationResult`` proto (one ``Classifications`` per example)."""
    source = classes if classes is not None else scores
    if source is None:
        return result
    batch, num_classes = source.shape
    labels = None if classes is None else [as_bytes(v) for v in classes.ravel()]
    values = None if scores is None else scores.astype(np.float32).ravel().tolist()
    for i in range(batch):
        entry = result.classifications.add()
        for c in range(num_classes):
            cls = entry.classes.add()
            if labels is not None:
                cls.label = labels[i * num_classes + c].decode("utf-8", "replace")
            if values is not None:
                cls.score = values[i * num_classes + c]
    return result


def regression_result(values: np.ndarray, result: Any) -> Any:
    """Fills a ``RegressionResult`` proto (one ``Regression`` per example)."""
    for value in values.astype(np.float32).tolist():
        result.regressions.add().value = value
    return result
