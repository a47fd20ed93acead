"""`runner.py compile --target kubeflow`: the KFP v2 pipeline job, read back as JSON and protos."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from components.export_servable.component import ExportServable
from components.servable_evaluator.component import ServableEvaluator
from components.serving_config.component import ServingConfig
from components.versioned_pusher.component import VersionedPusher
from pipeline import kfp_entrypoint
from pipeline.catalog import load_catalog
from pipeline.kubeflow import IMAGE_PROJECT_DIR, compile_kubeflow
from pipeline.pipeline import PIPELINE_NAME, SERVING_CONFIG, STEPS, node_id

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = "europe-docker.pkg.dev/acme/ml/tfx-servables:1.2.3"
PIPELINE_ROOT = "gs://acme-pipelines/tfx-servables"
SERVING_ROOT = "gs://acme-serving/models"
SERVABLES = ("sum_two", "fun_runif", "mobilenet_v2_test")
COMPONENTS = {"ExportServable": ExportServable, "ServableEvaluator": ServableEvaluator,
              "VersionedPusher": VersionedPusher, "ServingConfig": ServingConfig}
EXECUTORS = {
    "ExportServable": "components.export_servable.executor.Executor",
    "ServableEvaluator": "components.servable_evaluator.executor.Executor",
    "VersionedPusher": "components.versioned_pusher.executor.Executor",
    "ServingConfig": "components.serving_config.executor.Executor",
}
# TFX's KFP v2 container entrypoint, run by a wrapper that keeps its exit code
# (see pipeline/kfp_entrypoint.py; tests/test_kfp_run.py runs the tasks).
ENTRYPOINT = ["python", "-m", "pipeline.kfp_entrypoint"]
TFX_ENTRYPOINT = "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def job(catalog, tmp_path_factory):
    """The compiled pipeline job for every servable, as parsed JSON."""
    out = tmp_path_factory.mktemp("kfp") / "pipeline.json"
    path = compile_kubeflow(catalog, out=str(out), image=IMAGE, pipeline_root=PIPELINE_ROOT,
                            serving_root=SERVING_ROOT)
    assert path == str(out)
    return json.loads(out.read_text())


def _tasks(job: dict) -> dict:
    return job["pipelineSpec"]["root"]["dag"]["tasks"]


def _parameter(task: dict, name: str) -> str:
    """A constant string parameter of a task (schema 2.1.0, or 2.0.0's older form)."""
    value = task["inputs"]["parameters"][name]["runtimeValue"]
    return value["constant"] if "constant" in value else value["constantValue"]["stringValue"]


def _container(job: dict, task_name: str) -> dict:
    spec = job["pipelineSpec"]
    label = spec["components"][_tasks(job)[task_name]["componentRef"]["name"]]["executorLabel"]
    return spec["deploymentSpec"]["executors"][label]["container"]


def test_job_is_a_kfp_2_1_pipeline_job_with_the_pipeline_root(job):
    assert set(job) == {"displayName", "labels", "pipelineSpec", "runtimeConfig"}
    assert job["displayName"] == PIPELINE_NAME
    spec = job["pipelineSpec"]
    assert spec["pipelineInfo"]["name"] == PIPELINE_NAME
    # The open-source KFP 2 backend accepts only 2.1.0; Vertex AI takes it too.
    assert spec["schemaVersion"] == "2.1.0"
    assert spec["sdkVersion"] == "tfx-1.16.0"
    assert job["runtimeConfig"]["gcsOutputDirectory"] == PIPELINE_ROOT


def test_one_task_per_component_per_servable_with_their_dependencies(job):
    tasks = _tasks(job)
    assert sorted(tasks) == sorted([*(node_id(step, s) for step in STEPS for s in SERVABLES),
                                    SERVING_CONFIG])
    for servable in SERVABLES:
        export, evaluate, push = (node_id(step, servable) for step in STEPS)
        assert tasks[export].get("dependentTasks", []) == []
        assert tasks[evaluate]["dependentTasks"] == [export]
        assert sorted(tasks[push]["dependentTasks"]) == sorted([export, evaluate])
        # The edges carry the artifacts: the Model to both, the ModelBlessing to the pusher.
        model = {"taskOutputArtifact": {"producerTask": export, "outputArtifactKey": "model"}}
        blessing = {"taskOutputArtifact": {"producerTask": evaluate,
                                           "outputArtifactKey": "blessing"}}
        assert tasks[evaluate]["inputs"]["artifacts"] == {"model": model}
        assert tasks[push]["inputs"]["artifacts"] == {"model": model, "model_blessing": blessing}
    # models.config's one writer: after every pusher, whatever their outcome, never cached.
    tasks = dict(tasks)  # (the job is shared by the module's tests)
    config = tasks.pop(SERVING_CONFIG)
    assert sorted(config["dependentTasks"]) == sorted(node_id("VersionedPusher", s)
                                                      for s in SERVABLES)
    assert "artifacts" not in config["inputs"]
    assert config["triggerPolicy"] == {"strategy": "ALL_UPSTREAM_TASKS_COMPLETED"}
    assert config["cachingOptions"] == {}
    assert all(task["cachingOptions"] == {"enableCache": True} for task in tasks.values())


def test_every_task_runs_our_executor_class_in_the_image(job):
    for task_name in _tasks(job):
        step = task_name.split(".", 1)[0]
        container = _container(job, task_name)
        assert container["image"] == IMAGE
        assert container["command"] == ENTRYPOINT
        args = container["args"]
        class_path = args[args.index("--executor_class_path") + 1]
        assert class_path == EXECUTORS[step]
        # The path the container imports is the component's own executor.
        module, _, name = class_path.rpartition(".")
        executor = getattr(importlib.import_module(module), name)
        assert executor is COMPONENTS[step].EXECUTOR_SPEC.executor_class
    assert kfp_entrypoint.TFX_ENTRYPOINT == TFX_ENTRYPOINT


def test_parameters_are_the_catalogs(job, catalog):
    tasks = _tasks(job)
    for servable in catalog.select(SERVABLES):
        export, evaluate, push = (tasks[node_id(step, servable.name)] for step in STEPS)
        assert _parameter(export, "servable") == servable.export_spec().to_json()
        # The executors find the servable modules and data inside the image.
        assert _parameter(export, "base_dir") == IMAGE_PROJECT_DIR == "/app"
        assert _parameter(export, "source_hash") == catalog.source_hash(servable)
        assert _parameter(evaluate, "servable") == servable.evaluation_spec().to_json()
        assert _parameter(push, "serving_root") == SERVING_ROOT
        assert json.loads(_parameter(push, "serving")) == json.loads(servable.serving.to_json())
        # Compiled ahead of time: no snapshot of this machine's serving root.
        assert _parameter(push, "serving_state") == ""
        assert _parameter(push, "config_base_path") == ""


def test_round_trips_through_the_kfp_pipeline_spec_protos(job):
    # Strict parsing: an unknown field anywhere fails. PipelineSpec is the message
    # `kfp.Client().create_run_from_pipeline_package` reads.
    parsed_job = json_format.ParseDict(job, pipeline_spec_pb2.PipelineJob())
    assert json_format.MessageToDict(parsed_job) == job
    spec = json_format.ParseDict(job["pipelineSpec"], pipeline_spec_pb2.PipelineSpec())
    assert json_format.MessageToDict(spec) == job["pipelineSpec"]
    assert spec.schema_version == "2.1.0"
    assert len(spec.root.dag.tasks) == len(STEPS) * len(SERVABLES) + 1
    assert all(t.caching_options.enable_cache for n, t in spec.root.dag.tasks.items()
               if n != SERVING_CONFIG)
    # deploymentSpec is a Struct in PipelineSpec; its schema is PipelineDeploymentConfig.
    deployment = json_format.ParseDict(job["pipelineSpec"]["deploymentSpec"],
                                       pipeline_spec_pb2.PipelineDeploymentConfig())
    assert len(deployment.executors) == len(STEPS) * len(SERVABLES) + 1
    assert {e.container.image for e in deployment.executors.values()} == {IMAGE}
    assert {e.container.args[1] for e in deployment.executors.values()} == set(EXECUTORS.values())


def test_s3_pipeline_root_and_default_serving_root(catalog, tmp_path):
    out = tmp_path / "nested" / "spec.json"
    compile_kubeflow(catalog, out=str(out), image="tfx-servables:dev",
                     pipeline_root="s3://bucket/tfx/", servables=["fun_runif"])
    job = json.loads(out.read_text())
    tasks = _tasks(job)
    assert sorted(tasks) == sorted([*(node_id(step, "fun_runif") for step in STEPS),
                                    SERVING_CONFIG])
    assert job["runtimeConfig"]["gcsOutputDirectory"] == "s3://bucket/tfx/"
    push = tasks[node_id("VersionedPusher", "fun_runif")]
    assert _parameter(push, "serving_root") == "s3://bucket/tfx/serving"


def test_cli_compile_writes_the_spec(tmp_path):
    """The README's command, as a user types it (a subprocess)."""
    out = tmp_path / "pipeline.json"
    result = subprocess.run(
        [sys.executable, os.path.join(PROJECT, "runner.py"), "compile", "--target", "kubeflow",
         "--out", str(out), "--image", IMAGE, "--pipeline-root", PIPELINE_ROOT,
         "--serving-dir", SERVING_ROOT, "--servables", "sum_two,mobilenet_v2_test",
         "--project-dir-in-image", "/srv/tfx-servables"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    job = json.loads(out.read_text())
    tasks = _tasks(job)
    assert sorted(tasks) == sorted([*(node_id(step, s) for step in STEPS
                                      for s in ("sum_two", "mobilenet_v2_test")),
                                    SERVING_CONFIG])
    assert _parameter(tasks["ExportServable.sum_two"], "base_dir") == "/srv/tfx-servables"
    # URIs pass through untouched (not made into local absolute paths).
    assert _parameter(tasks["VersionedPusher.sum_two"], "serving_root") == SERVING_ROOT
    assert job["runtimeConfig"]["gcsOutputDirectory"] == PIPELINE_ROOT
    assert {_container(job, t)["image"] for t in tasks} == {IMAGE}
