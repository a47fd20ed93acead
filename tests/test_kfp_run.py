"""The compiled Kubeflow job runs: ``pipeline.json``'s tasks executed as KFP's launcher would.

``tests/kfp_launcher.py`` plays the KFP v2 driver and launcher (its docstring
says what it reproduces and what not): every task runs its container command
and arguments exactly as compiled (TFX's KFP v2 container entrypoint), with its
executor input filled as the launcher fills it. The first tests check the
harness itself on a hand-written spec; the others run the project's compiled
job, with a local pipeline root and on the S3 test server.
"""

from __future__ import annotations

import json
import os

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from pipeline.catalog import load_catalog
from pipeline.kubeflow import compile_kubeflow
from pipeline.pipeline import node_id
from tests.kfp_launcher import UnsupportedSpec, run_pipeline_job

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVABLES = ("sum_two", "fun_runif", "mobilenet_v2_test")
IMAGE = "tfx-servables:test"


# ---------------------------------------------------------------------------- the harness


_PRODUCE = """
import json, os, sys
executor_input = json.loads(sys.argv[1])
greeting, out_uri = sys.argv[2], sys.argv[3]
assert executor_input["inputs"]["parameterValues"] == {"greeting": greeting, "times": 2.0}
os.makedirs(out_uri)
with open(os.path.join(out_uri, "data.txt"), "w") as f:
    f.write(greeting * 2)
output = {"artifacts": {"out": {"artifacts": [{"metadata": {
    "count": 3, "ok": True, "tags": ["a", "b"], "who": greeting}}]}}}
path = executor_input["outputs"]["outputFile"]
with open(path, "w") as f:
    json.dump(output, f)
"""

_CONSUME = """
import json, sys
executor_input = json.loads(sys.argv[1])
[artifact] = executor_input["inputs"]["artifacts"]["data"]["artifacts"]
with open(artifact["uri"] + "/data.txt") as f:
    text = f.read()
json.dump({"artifact": artifact, "text": text}, open(sys.argv[2], "w"))
"""


def _component(inputs: dict | None = None, outputs: dict | None = None) -> dict:
    component = {}
    if inputs:
        component["inputDefinitions"] = inputs
    if outputs:
        component["outputDefinitions"] = outputs
    return component


def _toy_job(tmp_path) -> dict:
    """Five tasks: produce -> consume; fail -> after_fail (skipped); finally (runs anyway)."""
    dataset = {"artifactType": {"schemaTitle": "system.Dataset", "schemaVersion": "0.0.1"}}
    result_file = str(tmp_path / "consumed.json")
    finally_file = str(tmp_path / "finally.txt")
    executors = {
        "exec-produce": ["-c", _PRODUCE, "{{$}}", "{{$.inputs.parameters['greeting']}}",
                         "{{$.outputs.artifacts['out'].uri}}"],
        "exec-consume": ["-c", _CONSUME, "{{$}}", result_file],
        "exec-fail": ["-c", "import sys; print('failing on purpose'); sys.exit(3)"],
        "exec-after-fail": ["-c", "raise SystemExit('must not run')"],
        "exec-finally": ["-c", f"open({finally_file!r}, 'w').write('ran')"],
    }
    components = {
        "comp-produce": _component(
            {"parameters": {"greeting": {"parameterType": "STRING"},
                            "times": {"parameterType": "NUMBER_INTEGER", "defaultValue": 2}}},
            {"artifacts": {"out": dataset}}),
        "comp-consume": _component({"artifacts": {"data": dataset}}),
        "comp-fail": {}, "comp-after-fail": {}, "comp-finally": {},
    }
    for name in components:
        components[name]["executorLabel"] = name.replace("comp-", "exec-")

    def task(name: str, deps=(), **extra) -> dict:
        spec = {"taskInfo": {"name": name}, "componentRef": {"name": f"comp-{name}"}, **extra}
        if deps:
            spec["dependentTasks"] = list(deps)
        return spec

    return {
        "displayName": "toy", "labels": {},
        "runtimeConfig": {"gcsOutputDirectory": str(tmp_path / "root")},
        "pipelineSpec": {
            "schemaVersion": "2.1.0", "sdkVersion": "test",
            "pipelineInfo": {"name": "toy"},
            "components": components,
            "deploymentSpec": {"executors": {
                label: {"container": {"image": "python:3.10", "command": ["python"],
                                      "args": args}}
                for label, args in executors.items()}},
            "root": {"dag": {"tasks": {
                "produce": task("produce", inputs={"parameters": {
                    "greeting": {"runtimeValue": {"constant": "hi"}}}}),
                "consume": task("consume", ["produce"], inputs={"artifacts": {"data": {
                    "taskOutputArtifact": {"producerTask": "produce",
                                           "outputArtifactKey": "out"}}}}),
                "fail": task("fail"),
                "after-fail": task("after-fail", ["fail"]),
                "finally": task("finally", ["consume", "fail"], triggerPolicy={
                    "strategy": "ALL_UPSTREAM_TASKS_COMPLETED"}),
            }}},
        },
    }


def test_harness_passes_artifacts_downstream_as_kfp_records_them(tmp_path):
    run = run_pipeline_job(_toy_job(tmp_path), work_dir=str(tmp_path / "work"), run_id="r1")
    states = {name: task.state for name, task in run.tasks.items()}
    assert states == {"produce": "SUCCEEDED", "consume": "SUCCEEDED", "fail": "FAILED",
                      "after-fail": "SKIPPED", "finally": "SUCCEEDED"}, run.failure_report()
    assert run.tasks["fail"].returncode == 3
    assert "failing on purpose" in run.tasks["fail"].log()
    out_uri = f"{tmp_path / 'root'}/toy/r1/produce/out"
    assert run.tasks["produce"].outputs["out"]["uri"] == out_uri

    consumed = json.loads((tmp_path / "consumed.json").read_text())
    assert consumed["text"] == "hihi"
    artifact = consumed["artifact"]
    assert artifact["name"] == "1"  # the MLMD id
    assert artifact["uri"] == out_uri
    assert artifact["type"] == {"schemaTitle": "system.Dataset", "schemaVersion": "0.0.1"}
    # ML Metadata's custom-property types: doubles, bools as ints, lists wrapped.
    assert artifact["metadata"] == {"count": 3.0, "ok": 1.0, "tags": {"list": ["a", "b"]},
                                    "who": "hi"}
    assert (tmp_path / "finally.txt").read_text() == "ran"
    assert not run.succeeded


def test_harness_rejects_what_it_does_not_play(tmp_path):
    job = _toy_job(tmp_path)
    job["pipelineSpec"]["root"]["dag"]["tasks"]["fail"]["triggerPolicy"] = {
        "condition": "inputs.parameter_values['x'] == 'y'"}
    with pytest.raises(UnsupportedSpec, match="conditions"):
        run_pipeline_job(job, work_dir=str(tmp_path / "work"))


# ---------------------------------------------------------------------------- the project's job


def _compile(tmp_path, pipeline_root: str, servables=SERVABLES, serving_root=None) -> str:
    out = tmp_path / f"pipeline-{len(list(tmp_path.glob('pipeline-*.json')))}.json"
    # The checkout stands in for the image's /app (the executors' base_dir).
    return compile_kubeflow(load_catalog(), out=str(out), image=IMAGE,
                            pipeline_root=pipeline_root, serving_root=serving_root,
                            servables=list(servables), project_dir_in_image=PROJECT)


def _task_env() -> dict[str, str]:
    # As the Dockerfile's ENV: the stand-in hub module is prebuilt in the image; here
    # it is this machine's cache (built once by the other tests or the first export).
    env = {"TF_CPP_MIN_LOG_LEVEL": "2"}
    if "TFHUB_CACHE_DIR" in os.environ:
        env["TFHUB_CACHE_DIR"] = os.environ["TFHUB_CACHE_DIR"]
    return env


def _pusher_outputs(run) -> dict[str, dict]:
    return {name: run.tasks[node_id("VersionedPusher", name)].outputs["pushed_model"]
            for name in {n.split(".", 1)[1] for n in run.tasks if
                         n.startswith("VersionedPusher.")}}


def _parse_config(data: bytes) -> model_server_config_pb2.ModelServerConfig:
    return text_format.Parse(data.decode(), model_server_config_pb2.ModelServerConfig())


@pytest.mark.slow
def test_compiled_job_runs_with_a_local_pipeline_root(tmp_path):
    root = tmp_path / "root"
    job = _compile(tmp_path, str(root), servables=["sum_two"])
    run = run_pipeline_job(job, work_dir=str(tmp_path / "work"), env=_task_env())
    assert run.succeeded, run.failure_report()
    serving = root / "serving"
    assert (serving / "sum_two" / "1" / "saved_model.pb").is_file()
    config = _parse_config((serving / "models.config").read_bytes())
    assert [(c.name, c.base_path) for c in config.model_config_list.config] == [
        ("sum_two", str(serving / "sum_two"))]
    pushed = _pusher_outputs(run)["sum_two"]["metadata"]
    assert pushed["pushed"] == 1.0 and pushed["pushed_version"] == "1", pushed
    # The artifacts live under <root>/<pipeline name>/<run id>/<task>/<key>, as on KFP.
    export = run.tasks[node_id("ExportServable", "sum_two")].outputs["model"]
    assert export["uri"] == f"{run.run_root}/ExportServable.sum_two/model"
    assert export["metadata"]["servable_name"] == "sum_two"
    assert os.path.isfile(os.path.join(export["uri"], "Format-Serving", "saved_model.pb"))


@pytest.mark.slow
def test_compiled_job_runs_on_s3_and_publishes_every_servable(s3_server, s3_bucket, tmp_path):
    """The README's Kubeflow job, pipeline root and serving root in a bucket."""
    pipeline_root = f"s3://{s3_bucket}/pipelines"
    serving_root = f"s3://{s3_bucket}/serving"
    job = _compile(tmp_path, pipeline_root, serving_root=serving_root)
    run = run_pipeline_job(job, work_dir=str(tmp_path / "work"), env=_task_env())
    assert run.succeeded, run.failure_report()

    keys = s3_server.keys(s3_bucket)
    for name in SERVABLES:
        assert f"serving/{name}/1/saved_model.pb" in keys, keys
        assert not [k for k in keys if k.startswith(f"serving/{name}/2")]
        export = run.tasks[node_id("ExportServable", name)].outputs["model"]["uri"]
        assert export == f"{pipeline_root}/tfx-servables/{run.run_id}/ExportServable.{name}/model"
        assert f"{export[len(f's3://{s3_bucket}/'):]}/Format-Serving/saved_model.pb" in keys
        pushed = _pusher_outputs(run)[name]["metadata"]
        assert pushed["pushed"] == 1.0 and pushed["pushed_version"] == "1", pushed
    config = _parse_config(s3_server.read(s3_bucket, "serving/models.config"))
    assert sorted((c.name, c.base_path) for c in config.model_config_list.config) == sorted(
        (name, f"s3://{s3_bucket}/serving/{name}") for name in SERVABLES)

    # A second run of the unchanged catalog (one servable, to keep it short) publishes
    # nothing: the pusher finds the same content fingerprint in the bucket.
    serving_before = {k: s3_server.read(s3_bucket, k) for k in keys if k.startswith("serving/")}
    again = run_pipeline_job(_compile(tmp_path, pipeline_root, servables=["sum_two"],
                                      serving_root=serving_root),
                             work_dir=str(tmp_path / "work2"), env=_task_env())
    assert again.succeeded, again.failure_report()
    pushed = _pusher_outputs(again)["sum_two"]["metadata"]
    assert pushed["pushed"] == 0.0 and pushed["pushed_version"] == "1", pushed
    serving_after = {k: s3_server.read(s3_bucket, k)
                     for k in s3_server.keys(s3_bucket, "serving/")}
    assert serving_after == serving_before



@pytest.mark.slow
def test_a_broken_servable_does_not_stop_models_config(project, tmp_path):
    """Its export fails, its evaluator and pusher are skipped; ServingConfig still runs
    (ALL_UPSTREAM_TASKS_COMPLETED) and lists the servable that was published."""
    import yaml

    (project / "servables" / "exploding.py").write_text(
        "import tensorflow as tf\n\n\nclass Exploding(tf.Module):\n"
        "    def __init__(self):\n        super().__init__()\n"
        "        raise ValueError('this servable is broken on purpose')\n")
    catalog_path = project / "servables" / "catalog.yaml"
    catalog = yaml.safe_load(catalog_path.read_text())
    catalog["servables"].append({"name": "exploding", "module": "servables/exploding.py",
                                 "object": "Exploding", "signatures": {"serving_default": "f"}})
    catalog_path.write_text(yaml.safe_dump(catalog, sort_keys=False))
    root = tmp_path / "root"
    job = compile_kubeflow(load_catalog(str(catalog_path)), out=str(tmp_path / "job.json"),
                           image=IMAGE, pipeline_root=str(root),
                           servables=["exploding", "sum_two"],
                           project_dir_in_image=str(project))
    run = run_pipeline_job(job, work_dir=str(tmp_path / "work"), env=_task_env())
    states = {name: task.state for name, task in run.tasks.items()}
    assert states == {
        "ExportServable.exploding": "FAILED", "ServableEvaluator.exploding": "SKIPPED",
        "VersionedPusher.exploding": "SKIPPED", "ExportServable.sum_two": "SUCCEEDED",
        "ServableEvaluator.sum_two": "SUCCEEDED", "VersionedPusher.sum_two": "SUCCEEDED",
        "ServingConfig": "SUCCEEDED"}, run.failure_report()
    assert "this servable is broken on purpose" in run.tasks["ExportServable.exploding"].log()
    config = _parse_config((root / "serving" / "models.config").read_bytes())
    assert [c.name for c in config.model_config_list.config] == ["sum_two"]
