"""ServableEvaluator checks: the seed servables are blessed, broken ones rejected for the
right reason. Every model is exported to a SavedModel and loaded back the way a server
would load it."""

from __future__ import annotations

import base64
import importlib
import json
import os
import shutil
from collections.abc import Callable
from typing import Any

import pytest
import tensorflow as tf
import yaml

from components.servable_evaluator.checks import compare_bodies, evaluate
from components.servable_evaluator.report import render_markdown
from components.specs import Checks, EvaluationSpec, Example, Expectation
from pipeline.catalog import load_catalog
from servables.adder import Adder
from servables.randomizer import Randomizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABELS = ["background", "tench", "goldfish", "great white shark", "tiger shark"]
SUM_TWO = {"path": "requests/sum_two.json", "request": {"instances": [[1, 2, 3]]},
           "expect": {"response": {"predictions": [[3, 4, 5]]}}}


# --- helpers -------------------------------------------------------------------------------


def make_spec(examples: list[dict[str, Any]] = (), keys: tuple[str, ...] = ("serving_default",),
              **checks: Any) -> EvaluationSpec:
    """An evaluation spec as ``CatalogEntry.evaluation_spec()`` makes it (3 warm calls)."""
    settings = {"warm_calls": 3, **checks}
    full = tuple(Example(e["path"], e["request"], Expectation(**(e.get("expect") or {})))
                 for e in examples)
    return EvaluationSpec("under_test", tuple(keys), full,
                          Checks(**{k: tuple(v) if isinstance(v, list) else v
                                    for k, v in settings.items()}))


def failed(report: dict[str, Any], name: str | None = None) -> list[dict[str, Any]]:
    return [c for c in report["checks"] if not c["passed"] and name in (None, c["name"])]


def check(report: dict[str, Any], name: str, example: str | None = None) -> dict[str, Any]:
    found = [c for c in report["checks"] if c["name"] == name
             and (example is None or c["example"] == example)]
    assert found, f"no check {name} in {[c['name'] for c in report['checks']]}"
    return found[0]


class JpegLabeler(tf.Module):
    """A fast stand-in for the blog's CustomMobileNet_string: JPEG bytes in, label out.

    The blog's original ``call``, one JPEG per call (``shape=None`` string input that is
    reshaped to a scalar, labels read from a ``tf.saved_model.Asset``, ``map_fn`` over
    logits; the seed now takes several), with a 3 -> N linear "network" on the mean
    colour instead of MobileNet.
    """

    def __init__(self, labels_path: str, classes: int):
        super().__init__()
        self.labels = tf.saved_model.Asset(labels_path)
        self.weights = tf.Variable(tf.random.stateless_uniform([3, classes], seed=[1, 2]))

    @tf.function(input_signature=[tf.TensorSpec(shape=None, dtype=tf.string)])
    def call(self, input_img):
        img = tf.io.decode_jpeg(tf.reshape(input_img, []), channels=3)
        img = tf.image.resize(tf.image.convert_image_dtype(img, tf.float32), (8, 8))
        logits = tf.reduce_mean(img, axis=[0, 1])[tf.newaxis, :] @ self.weights
        labels = tf.strings.split(tf.io.read_file(self.labels), sep="\n")
        return tf.map_fn(lambda x: labels[tf.argmax(x)], logits, fn_output_signature=tf.string)


class FirstRowOnly(tf.Module):
    """Ignores the batch: always answers with one row."""

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def predict(self, x):
        return x[:1] + 2.0


def jpeg_b64() -> str:
    pixels = tf.cast(tf.fill([16, 16, 3], 200), tf.uint8)
    return base64.b64encode(tf.io.encode_jpeg(pixels).numpy()).decode("ascii")


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Callable[..., str]:
    """Exports a servable once per module; returns the SavedModel directory."""
    cache: dict[str, str] = {}

    def _export(key: str, make: Callable[[], tf.Module], method: str,
                *input_signature: tf.TensorSpec) -> str:
        if key not in cache:
            obj = make()
            fn = getattr(obj, method).get_concrete_function(*input_signature)
            path = str(tmp_path_factory.mktemp(key) / "1")
            tf.saved_model.save(obj, path, signatures={"serving_default": fn})
            cache[key] = path
        return cache[key]

    return _export


@pytest.fixture(scope="module")
def adder_dir(export) -> str:
    return export("adder", Adder, "sum_two")


@pytest.fixture(scope="module")
def randomizer_dir(export) -> str:
    return export("randomizer", Randomizer, "fun_runif", tf.TensorSpec([], tf.int32, name="N"))


@pytest.fixture(scope="module")
def jpeg_dir(export, tmp_path_factory) -> str:
    labels = tmp_path_factory.mktemp("labels") / "ImageNetLabels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    path = export("jpeg", lambda: JpegLabeler(str(labels), len(LABELS)), "call")
    labels.unlink()  # the server only has the SavedModel's own copy of the asset
    return path


def broken(export, module: str, method: str | None = None) -> str:
    mod = importlib.import_module(f"tests.broken_servables.{module}")
    name = method or mod.METHOD
    return export(f"{module}-{name}", mod.make, name)


# --- the seed servables are blessed --------------------------------------------------------


def test_adder_from_catalog_blessed_in_both_formats(adder_dir, tmp_path):
    (tmp_path / "servables").mkdir()
    shutil.copy(os.path.join(REPO, "servables", "adder.py"), tmp_path / "servables")
    (tmp_path / "requests").mkdir()
    (tmp_path / "requests" / "sum_two.json").write_text(json.dumps(SUM_TWO["request"]))
    (tmp_path / "requests" / "sum_two.out.json").write_text('{"predictions": [[3, 4, 5]]}')
    (tmp_path / "requests" / "columnar.json").write_text('{"inputs": {"x": [[1, 2, 3]]}}')
    (tmp_path / "requests" / "columnar.out.json").write_text('{"outputs": [[3, 4, 5]]}')
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump({"base_dir": ".", "servables": [{
        "name": "sum_two", "module": "servables/adder.py", "object": "Adder",
        "signatures": {"serving_default": "sum_two"},
        "examples": [
            {"request": "requests/sum_two.json",
             "expect": {"response": "requests/sum_two.out.json", "dtype": "float32",
                        "shape": [1, 3]}},
            {"request": "requests/columnar.json",
             "expect": {"response": "requests/columnar.out.json"}}],
        "checks": {"formats": ["row", "columnar"], "latency_budget_ms": 10000,
                   "warm_calls": 3}}]}))
    spec = load_catalog(str(tmp_path / "catalog.yaml")).servables[0].evaluation_spec()

    report = evaluate(adder_dir, spec)

    assert report["blessed"], report["reasons"]
    assert report["reasons"] == []
    assert report["servable"] == "sum_two"
    sig = report["signatures"]["serving_default"]
    assert sig["method_name"] == "tensorflow/serving/predict"
    assert sig["inputs"]["x"]["dtype"] == "float32"
    assert sig["inputs"]["x"]["shape"] == [None, 3]
    assert sig["outputs"]["output_0"]["shape"] == [None, 3]
    assert sig["formats"]["row"]["ok"] and sig["formats"]["columnar"]["ok"]
    assert check(report, "call", "requests/sum_two.json")["values"]["response"] == {
        "predictions": [[3.0, 4.0, 5.0]]}
    assert {c["name"] for c in report["checks"]} >= {
        "load", "signature", "method_name", "structure", "call", "expect.response",
        "expect.dtype", "expect.shape", "finite", "batch_dim", "deterministic", "latency",
        "format.row", "format.columnar"}
    assert set(report["latency_ms"]) == {"requests/sum_two.json", "requests/columnar.json"}
    stats = report["latency_ms"]["requests/sum_two.json"]
    assert stats["calls"] == 3 and 0 < stats["p50"] <= stats["p99"]
    json.dumps(report, allow_nan=False)


def test_adder_without_examples_is_called_with_generated_batches(adder_dir):
    report = evaluate(adder_dir, make_spec(batch_sizes=[1, 3]))

    assert report["blessed"], report["reasons"]
    batches = [c["values"]["batch_size"] for c in report["checks"]
               if c["name"] == "call" and c["example"] == "generated"]
    assert batches == [1, 3]
    assert [c["values"]["batch_size"] for c in report["checks"]
            if c["name"] == "batch_dim"] == [1, 3]
    assert "generated:serving_default" in report["latency_ms"]


def test_randomizer_is_blessed_columnar_only(randomizer_dir):
    example = {"path": "requests/runif.json", "request": {"inputs": 5},
               "expect": {"range": [0, 1], "shape": [5]}}
    report = evaluate(randomizer_dir,
                      make_spec([example], random=True, formats=["columnar"]))

    assert report["blessed"], report["reasons"]
    sig = report["signatures"]["serving_default"]
    assert sig["inputs"] == {"N": {"dtype": "int32", "shape": [], "name": "serving_default_N:0"}}
    assert sig["formats"]["columnar"]["ok"]
    assert not sig["formats"]["row"]["ok"]
    assert "scalar" in sig["formats"]["row"]["detail"]
    assert check(report, "deterministic")["values"] == {"skipped": True}
    assert check(report, "expect.range")["values"]["output_0"]["outside"] == 0


def test_randomizer_rejected_when_row_format_required(randomizer_dir):
    example = {"path": "requests/runif.json", "request": {"inputs": {"N": 4}}, "expect": {}}
    report = evaluate(randomizer_dir, make_spec([example], random=True, formats=["row"]))

    assert not report["blessed"]
    assert [c["name"] for c in failed(report)] == ["format.row"]
    assert report["reasons"][0].startswith("serving_default: format.row: required")


def test_randomizer_generated_scalar_count(randomizer_dir):
    report = evaluate(randomizer_dir, make_spec(random=True))

    assert report["blessed"], report["reasons"]
    call = check(report, "call", "generated")
    assert call["values"]["inputs"] == {"N": []}
    assert "output_0 float32 [3]" in call["detail"]  # N = 3, a small positive count
    assert not any(c["name"] == "batch_dim" for c in report["checks"])  # no batch implied


def test_jpeg_standin_blessed_with_vocabulary(jpeg_dir):
    example = {"path": "requests/tench.json", "request": {"instances": [{"b64": jpeg_b64()}]},
               "expect": {"vocabulary": LABELS, "shape": [1], "dtype": "string"}}
    report = evaluate(jpeg_dir, make_spec([example], formats=["columnar"]))

    assert report["blessed"], report["reasons"]
    sig = report["signatures"]["serving_default"]
    assert sig["inputs"]["input_img"]["shape"] is None  # unknown rank, recorded
    assert "unknown rank" in check(report, "structure")["detail"]
    prediction = check(report, "call")["values"]["response"]["predictions"][0]
    assert prediction in LABELS
    assert check(report, "expect.vocabulary")["passed"]
    # One image per call: 1 instance works, 2 do not, so row format is not possible.
    row = sig["formats"]["row"]
    assert not row["ok"] and row["instances_ok"] == [1]
    assert "only 1 instance" in row["detail"]


def test_jpeg_standin_rejected_for_a_label_outside_the_vocabulary(jpeg_dir):
    example = {"path": "requests/tench.json", "request": {"inputs": {"b64": jpeg_b64()}},
               "expect": {"vocabulary": ["cat", "dog"]}}
    report = evaluate(jpeg_dir, make_spec([example]))

    assert not report["blessed"]
    assert [c["name"] for c in failed(report)] == ["expect.vocabulary"]
    assert "not in the vocabulary" in report["reasons"][0]


def test_string_input_without_example_needs_a_catalog_example(jpeg_dir):
    report = evaluate(jpeg_dir, make_spec())

    assert not report["blessed"]
    assert [c["name"] for c in failed(report)] == ["generated_inputs"]
    reason = report["reasons"][0]
    assert "input_img" in reason and "`examples:` entry with a request file" in reason


# --- broken servables are rejected for the right reason ------------------------------------


@pytest.mark.parametrize(("module", "method", "checks", "check_name", "text"), [
    ("nan_output", None, {}, "finite", "has 3 NaN"),
    ("wrong_dtype_shape", "wrong_shape", {}, "expect.response", "got 2 elements, expected 3"),
    ("wrong_dtype_shape", "wrong_shape", {}, "expect.shape", "[1, 2], expected [1, 3]"),
    ("wrong_dtype_shape", "int_output", {}, "expect.dtype", "int32, expected float32"),
    ("wrong_dtype_shape", "string_output", {}, "expect.response",
     'got string "3.000000", expected number 3.0'),
    ("wrong_value", None, {}, "expect.response", "got 3.5, expected 3.0 (tolerance 0.1)"),
    ("raises", None, {}, "call", "inputs must be non-negative"),
    ("nondeterministic", None, {}, "deterministic", "two identical calls gave different"),
    ("slow", None, {"latency_budget_ms": 0.001}, "latency", "exceeds the budget of 0.001 ms"),
])
def test_broken_servable_rejected(export, module, method, checks, check_name, text):
    mod = importlib.import_module(f"tests.broken_servables.{module}")
    report = evaluate(broken(export, module, method), make_spec([mod.EXAMPLE], **checks))

    assert not report["blessed"]
    reasons = [r for r in report["reasons"] if f": {check_name}: " in r]
    assert reasons, report["reasons"]
    assert reasons[0].startswith(f"serving_default/{mod.EXAMPLE['path']}: {check_name}: ")
    assert text in reasons[0]


def test_int_output_has_the_right_numbers_but_the_wrong_dtype(export):
    from tests.broken_servables import wrong_dtype_shape

    report = evaluate(broken(export, "wrong_dtype_shape", "int_output"),
                      make_spec([wrong_dtype_shape.EXAMPLE]))
    assert check(report, "expect.response")["passed"]
    assert [c["name"] for c in failed(report)] == ["expect.dtype"]


def test_raising_example_records_the_exception(export):
    from tests.broken_servables import raises

    report = evaluate(broken(export, "raises"), make_spec([raises.EXAMPLE]))
    call = check(report, "call")
    assert not call["passed"]
    # As the server answers: TF's error code and message (the model runs in a Session).
    assert call["detail"].startswith("raised INVALID_ARGUMENT: assertion failed")
    assert "inputs must be non-negative" in call["values"]["error"]
    assert report["latency_ms"] == {}


def test_nan_output_rejected_with_generated_inputs_too(export):
    report = evaluate(broken(export, "nan_output"), make_spec())
    assert not report["blessed"]
    assert {c["example"] for c in failed(report)} == {"generated"}
    assert {c["name"] for c in failed(report)} == {"finite"}
    json.dumps(report, allow_nan=False)  # NaN responses do not break the report


def test_nondeterministic_blessed_when_declared_random(export):
    from tests.broken_servables import nondeterministic

    report = evaluate(broken(export, "nondeterministic"),
                      make_spec([nondeterministic.EXAMPLE], random=True))
    assert report["blessed"], report["reasons"]
    assert check(report, "deterministic")["detail"] == "skipped: checks.random is true"


def test_slow_blessed_within_a_generous_budget(export):
    from tests.broken_servables import slow

    report = evaluate(broken(export, "slow"), make_spec([slow.EXAMPLE],
                                                        latency_budget_ms=60_000))
    assert report["blessed"], report["reasons"]
    assert "within the budget" in check(report, "latency")["detail"]


def test_wrong_value_blessed_within_a_wider_tolerance(export):
    from tests.broken_servables import wrong_value

    example = {**wrong_value.EXAMPLE, "expect": {**wrong_value.EXAMPLE["expect"],
                                                 "tolerance": 0.5}}
    report = evaluate(broken(export, "wrong_value"), make_spec([example]))
    assert report["blessed"], report["reasons"]


def test_output_ignoring_the_batch_is_rejected(export):
    path = export("first_row_only", FirstRowOnly, "predict")
    report = evaluate(path, make_spec(batch_sizes=[1, 3]))

    assert not report["blessed"]
    assert [(c["name"], c["values"]["batch_size"]) for c in failed(report)] == [("batch_dim", 3)]
    assert "input batch is 3 but output(s) have shape output_0 [1, 3]" in report["reasons"][0]


# --- structure --------------------------------------------------------------------------------


def test_missing_signature_is_rejected(adder_dir):
    report = evaluate(adder_dir, make_spec([SUM_TWO], keys=("serving_default", "classify")))
    assert not report["blessed"]
    assert report["reasons"] == [
        "classify: signature: signature 'classify' is missing (needed by the catalog's "
        "signature keys); the model has: serving_default"]


def test_method_name_is_read_from_the_proto(adder_dir, tmp_path):
    from tensorflow.core.protobuf import saved_model_pb2

    copy = tmp_path / "1"
    shutil.copytree(adder_dir, copy)
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((copy / "saved_model.pb").read_bytes())
    proto.meta_graphs[0].signature_def["serving_default"].method_name = "my/custom/method"
    (copy / "saved_model.pb").write_bytes(proto.SerializeToString())

    report = evaluate(str(copy), make_spec([SUM_TWO]))
    assert not report["blessed"]
    assert [c["name"] for c in failed(report)] == ["method_name"]
    assert "'my/custom/method'" in report["reasons"][0]


def test_unloadable_directory_is_rejected(tmp_path):
    report = evaluate(str(tmp_path), make_spec())
    assert not report["blessed"]
    assert report["reasons"][0].startswith("load: cannot load")
    assert "NOT BLESSED" in render_markdown(report)


# --- requests and responses go through the server's codec ----------------------------------


# Expected: (response, None) when TF Serving answers the request, (None, detail) when it
# refuses it. TF Serving's rules (tensorflow_serving/util/json_tensor.cc): no request-shape
# check (the graph decides, and x + 2 takes any shape), each instance is read then compared
# with the first one's size and shape (AddInstanceItem), a number for a float input is
# narrowed with GetFloat() (16777217 becomes 16777216), an instance key that is not an
# input is an error (AddInstanceItem), an unknown 'inputs' key is ignored.
@pytest.mark.parametrize(("request_body", "response", "detail"), [
    ({"instances": [[1, 2]]}, {"predictions": [[3, 4]]}, None),
    ({"instances": [[1, 2, 3], [1, 2]]}, None, "request not convertible (row): Failed to "
     "process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: "
     "3 but got: 2"),
    ({"inputs": {"x": [[16777217, 0, 0]]}}, {"outputs": [[16777218, 2, 2]]}, None),
    ({"inputs": {"x": [[1, 2, 3]], "y": [1]}}, {"outputs": [[3, 4, 5]]}, None),
    ({"inputs": {"y": [[1, 2, 3]]}}, None, "Missing named input: x in 'inputs' object."),
    ({"instances": [{"x": [1, 2, 3], "y": 1}]}, None, "request not convertible (row): Failed "
     "to process element: 0 key: y of 'instances' list. Error: INVALID_ARGUMENT: JSON object: "
     "does not have named input: y"),
    ({"instances": [[1, 2, 3]], "inputs": [[1, 2, 3]]}, None, "expecting only one of 'inputs' "
     "or 'instances'"),
])
def test_example_requests_are_read_as_the_server_reads_them(adder_dir, request_body, response,
                                                           detail):
    expect = {"response": response} if response is not None else {}
    example = {"path": "requests/r.json", "request": request_body, "expect": expect}
    report = evaluate(adder_dir, make_spec([example]))

    if detail is None:
        assert report["blessed"], report["reasons"]
        assert check(report, "expect.response")["passed"]
        return
    assert not report["blessed"]
    assert [c["name"] for c in failed(report)] == ["call"]
    assert detail in check(report, "call")["detail"]


def test_signature_name_must_be_a_string(adder_dir):
    example = {"path": "requests/r.json", "expect": {},
               "request": {"signature_name": 1, "instances": [[1, 2, 3]]}}
    report = evaluate(adder_dir, make_spec([example]))
    assert not report["blessed"]
    assert report["reasons"] == ["requests/r.json: call: request not convertible: JSON Value: "
                                 '{"signature_name":1,"instances":[[1,2,3]]} not formatted '
                                 "correctly. 'signature_name' key must be a string value."]


class Echo(tf.Module):
    """Returns its string input twice: as text and as ``_bytes`` (written as b64)."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="x")])
    def echo(self, x):
        return {"text": x, "raw_bytes": x}


def test_response_is_the_body_the_server_writes(export):
    # Not UTF-8: the server writes the text output with U+FFFD, the _bytes one as b64.
    example = {"path": "requests/echo.json", "request": {"instances": [{"b64": "/w=="}]},
               "expect": {"response": {"predictions": [{"raw_bytes": {"b64": "/w=="},
                                                        "text": "\ufffd"}]}}}
    report = evaluate(export("echo", Echo, "echo"), make_spec([example], formats=["row"]))

    assert report["blessed"], report["reasons"]
    assert check(report, "call")["values"]["response"] == example["expect"]["response"]


def test_compare_bodies():
    assert compare_bodies({"predictions": [[3, 4.05]]}, {"predictions": [[3.0, 4]]}, 0.1) == []
    assert compare_bodies({"predictions": [1]}, {"outputs": [1]}, 0) == [
        "$: got keys ['predictions'], expected ['outputs']"]
    assert compare_bodies({"outputs": "hi"}, {"outputs": {"b64": "aGk="}}, 0) == []
    assert compare_bodies([True], [1], 0) == ["$[0]: got bool true, expected number 1"]
    assert compare_bodies([float("nan")], [1.0], 10) == [
        '$[0]: got "NaN", expected 1.0 (tolerance 10)']


def test_render_markdown_lists_checks_and_verdict(adder_dir):
    report = evaluate(adder_dir, make_spec([SUM_TWO], formats=["row"]))
    text = render_markdown(report)
    assert text.startswith("# Servable `under_test`: BLESSED")
    assert "| pass | expect.response | serving_default | requests/sum_two.json |" in text
    assert "## Latency (ms)" in text and "requests/sum_two.json" in text
