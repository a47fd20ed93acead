"""Warmup requests: written by the exporter, replayed at load (a failure fails the load)."""

from __future__ import annotations

import base64
import json
import os
import shutil

import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from components.export_servable.export import export_servable
from pipeline.catalog import load_catalog
from serving.registry import ModelRegistry
from tests import serving_fixtures as sf
from tfserving import saved_model, warmup
from tfserving.status import ServingError


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """sum_two and mobilenet_v2_test exported from the project's catalog."""
    catalog = load_catalog()
    root = tmp_path_factory.mktemp("exported")
    paths = {}
    for entry in catalog.select(["sum_two", "mobilenet_v2_test"]):
        paths[entry.name] = str(root / entry.name)
        export_servable(entry.export_spec(), catalog.base_dir, paths[entry.name])
    return paths


def read_records(export_dir: str) -> list[prediction_log_pb2.PredictionLog]:
    """The warmup file read back with TF's TFRecord reader and TF Serving's proto."""
    logs = []
    for record in tf.data.TFRecordDataset(warmup.path(export_dir)).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record)
        logs.append(log)
    return logs


def test_exported_models_carry_the_catalogs_examples_as_warmup(exported):
    assert warmup.path(exported["sum_two"]).endswith("assets.extra/tf_serving_warmup_requests")
    logs = read_records(exported["sum_two"])
    with open(os.path.join(sf.REPO, "servables", "catalog.yaml")) as f:
        assert len(logs) == f.read().count("request: data/requests/sum_two")
    request = logs[0].predict_log.request
    assert request.model_spec.name == "sum_two"
    assert request.model_spec.signature_name == "serving_default"
    with open(os.path.join(sf.REPO, "data", "requests", "sum_two.json")) as f:
        assert tf.make_ndarray(request.inputs["x"]).tolist() == json.load(f)["instances"]
    [log] = read_records(exported["mobilenet_v2_test"])
    image = tf.make_ndarray(log.predict_log.request.inputs["input_img"])
    with open(os.path.join(sf.REPO, "data", "images", "sample.jpg"), "rb") as f:
        assert image.tolist() == [f.read()]


def test_replay_through_the_server(exported, tmp_path):
    """Each record, sent as the REST request it stands for, is answered (200)."""
    root = tmp_path / "serving"
    for name, path in exported.items():
        shutil.copytree(path, root / name / "1")
    with sf.running_server(str(root), "mobilenet_v2_test") as server:
        assert "calls run on the " in server.log_tail(100_000)
        for name in exported:
            for log in read_records(exported[name]):
                request = log.predict_log.request
                inputs = {}
                for alias, proto in request.inputs.items():
                    array = tf.make_ndarray(proto)
                    inputs[alias] = ([{"b64": base64.b64encode(v).decode()} for v in array]
                                     if array.dtype == object else array.tolist())
                body = {"inputs": inputs, "signature_name": request.model_spec.signature_name}
                response = sf.httpx.post(f"{server.url}/v1/models/{name}:predict",
                                         content=json.dumps(body), timeout=60)
                assert response.status_code == 200, response.text


def test_a_failing_warmup_record_fails_the_load(exported, tmp_path):
    root = tmp_path / "serving"
    shutil.copytree(exported["sum_two"], root / "sum_two" / "1")
    broken = root / "sum_two" / "2"
    shutil.copytree(exported["sum_two"], broken)
    signatures = saved_model.signature_specs(saved_model.read_meta_graph(str(broken)))
    logs = warmup.logs_from_rest("sum_two", signatures, [{"instances": [[1.0, 2.0, 3.0]]}])
    bad = logs[0].predict_log.request
    bad.inputs["y"].CopyFrom(bad.inputs.pop("x"))  # an input the signature does not have
    warmup.write(str(broken), logs)
    registry = ModelRegistry(str(root))
    registry.start()
    try:
        status = {s["version"]: s for s in registry.status("sum_two")["model_version_status"]}
        assert status["2"]["state"] == "END"
        assert status["2"]["status"]["error_code"] != "OK"
        assert registry.resolve("sum_two").version == 1  # the previous version keeps serving
    finally:
        registry.stop()


def test_tf_serving_limits_and_errors(exported, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(exported["sum_two"], copy)
    log = warmup.read(str(copy))[0]
    with tf.io.TFRecordWriter(warmup.path(str(copy))) as writer:  # more than TF Serving reads
        for _ in range(warmup.MAX_RECORDS + 1):
            writer.write(log.SerializeToString())
    with pytest.raises(ServingError, match="exceeds the maximum") as err:
        warmup.read(str(copy))
    assert err.value.code == "INVALID_ARGUMENT"
    with open(warmup.path(str(copy)), "wb") as f:
        f.write(b"\x01not a TFRecord file at all" * 4)
    with pytest.raises(ServingError) as err:
        warmup.read(str(copy))
    assert err.value.code == "DATA_LOSS"
    with pytest.raises(ValueError, match="at most 1000"):
        warmup.write(str(copy), [log] * (warmup.MAX_RECORDS + 1))
    shutil.rmtree(copy / "assets.extra")
    assert warmup.read(str(copy)) == []  # no file: warmup is optional


def test_classify_regress_and_multi_inference_records_replay(tmp_path):
    """TF1 half_plus_two (TF Serving's testdata model): every log type TF Serving replays,
    with a context merged under the examples, runs through the bundle's run."""
    from tensorflow_serving.apis import inference_pb2

    from tests.tfs_testdata import tfs_models
    from tfserving.bundle import load_bundle

    path = tfs_models("half_plus_two")["half_plus_two"]
    signatures = saved_model.signature_specs(saved_model.read_meta_graph(path))
    [classify] = warmup.logs_from_rest("half_plus_two", signatures, [
        {"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}, {"x": 3.0}]}])
    [regress] = warmup.logs_from_rest("half_plus_two", signatures, [
        {"signature_name": "regress_x_to_y", "context": {"x2": 4.0},
         "examples": [{"x": 2.0}]}])
    assert regress.WhichOneof("log_type") == "regress_log"
    multi = prediction_log_pb2.PredictionLog()
    request = multi.multi_inference_log.request
    request.input.CopyFrom(regress.regress_log.request.input)
    for key, method in (("classify_x_to_y", "tensorflow/serving/classify"),
                        ("regress_x_to_y2", "tensorflow/serving/regress")):
        task = request.tasks.add(method_name=method)
        task.model_spec.name, task.model_spec.signature_name = "half_plus_two", key
    assert isinstance(request.tasks[0], inference_pb2.InferenceTask)
    # saved_model_warmup.cc replays it through RunMultiInference, whose task checks
    # (multi_inference.cc) refuse a task without a model name.
    unnamed = prediction_log_pb2.PredictionLog()
    unnamed.CopyFrom(multi)
    unnamed.multi_inference_log.request.tasks[1].model_spec.name = ""
    with pytest.raises(ServingError, match="Found ModelSpec with an empty model name"):
        warmup.replay([unnamed], lambda key, arrays: {}, signatures)
    # A record with no log is skipped (RunWarmupRequest's default case).
    assert warmup.replay([prediction_log_pb2.PredictionLog()], lambda k, a: {}, signatures) == {}

    bundle = load_bundle(path)
    calls = []

    def run(key, arrays):
        calls.append((key, {a: v.tolist() for a, v in arrays.items()}))
        return bundle.run(key, arrays)

    try:
        seconds = warmup.replay([classify, regress, multi], run, signatures)
    finally:
        bundle.close()
    assert sorted(seconds) == ["classify_x_to_y", "regress_x_to_y", "regress_x_to_y2"]
    assert [key for key, _ in calls[:4]] == [
        "classify_x_to_y", "regress_x_to_y", "classify_x_to_y", "regress_x_to_y2"]
    example = tf.train.Example.FromString(calls[1][1]["inputs"][0])
    assert example.features.feature["x2"].float_list.value == [4.0]  # the context, merged
