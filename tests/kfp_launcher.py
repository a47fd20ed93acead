"""Runs a compiled KFP v2 pipeline job on this machine, playing Kubeflow's driver and launcher.

Why not ``kfp.local``: the pinned SDK (kfp 2.5.0) runs one component at a time
(no pipelines, no DAG), rejects input artifacts ("Input artifacts are not yet
supported for local execution"), its ``SubprocessRunner`` runs only
lightweight Python components (TFX's tasks are container components), its
``DockerRunner`` needs Docker, and it makes the pipeline root a local absolute
path (no ``s3://``). So this harness does the backend's part itself, following
``backend/src/v2/driver`` and ``backend/src/v2/component/launcher_v2.go`` of
kubeflow/pipelines.

Reproduced:

- The spec is parsed strictly as ``PipelineSpec`` / ``PipelineDeploymentConfig``.
- Tasks of the root DAG run in dependency order (``dependentTasks`` and the
  producers of their input artifacts), each as a fresh process (its pod).
- Each task runs exactly its executor's ``container.command + container.args``,
  with the placeholders replaced as the launcher replaces them (``{{$}}`` = the
  executor input as JSON; ``{{$.inputs.parameters['p']}}``,
  ``{{$.inputs.artifacts['a'].uri}}``, ``{{$.outputs.artifacts['a'].uri}}``).
  ``python`` resolves through ``PATH`` to this environment's interpreter, as it
  resolves to the image's; the working directory is the project (the image's
  ``WORKDIR /app``). Exit code 0 is success, anything else a failed task, as the
  launcher judges ``exec.Command(...).Run()``.
- Executor input as the driver builds it: parameter values from the task's
  ``runtimeValue.constant`` (else the component's default); input artifacts
  from the producing task's recorded outputs; output artifact URIs
  ``<pipeline root>/<pipeline name>/<run id>/<task name>/<output key>``
  (driver's ``provisionOutputs`` under the per-run root of ``GetPipeline``);
  ``outputFile`` a local file of the task (the launcher's
  ``/tmp/kfp_outputs/output_metadata.json`` inside the container).
- After a task: its ``ExecutorOutput`` is read from ``outputFile`` (missing =
  empty), merged into the output artifacts (``mergeRuntimeArtifacts``: URI
  override, metadata keys), and "recorded": the metadata goes through the
  same conversion as ML Metadata custom properties (string; number -> double;
  bool -> int; list and struct wrapped as ``{"list": ...}`` / ``{"struct":
  ...}``; null rejected), so downstream tasks see what they would see on
  Kubeflow: artifact ``name`` = its MLMD id, ``type`` = the consumer's
  input definition, numbers as doubles.
- Trigger policy: a task runs when all upstream tasks succeeded, or, with
  ``ALL_UPSTREAM_TASKS_COMPLETED``, when they all reached a final state. Tasks
  whose upstream failed are skipped; independent tasks still run (Vertex AI's
  default "fail slow" policy).

Not reproduced: caching (every task executes, as with caching off); tasks run
one at a time, not in parallel (the pushers' writes never overlap here);
no container image (this environment stands in for it: build the image from
the same lock to get the same packages); no ML Metadata server (the artifact
records live in memory); input artifacts are not downloaded to ``/s3/...``
local paths and outputs not uploaded from them (TFX executors read and write
the URIs directly; ``.path`` placeholders are rejected); local-path pipeline
roots are accepted (the real launcher only takes ``gs://``, ``s3://``,
``minio://``); no conditions, loops, nested DAGs, importers or output
parameters (the spec has none; such specs are rejected, not half-run).

Command line, for a job compiled with ``runner.py compile``::

    .venv/bin/python tests/kfp_launcher.py pipeline.json [--pipeline-root ROOT]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format, struct_pb2
from kfp.pipeline_spec import pipeline_spec_pb2 as pb

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALL_COMPLETED = pb.PipelineTaskSpec.TriggerPolicy.TriggerStrategy.ALL_UPSTREAM_TASKS_COMPLETED
_PATH_PLACEHOLDER = re.compile(r"\{\{\$\.(inputs|outputs)\.artifacts\['[^']*'\]\.path\}\}")


class UnsupportedSpec(ValueError):
    """The spec uses a KFP feature this harness does not play."""


@dataclasses.dataclass
class TaskRun:
    """One task's execution."""

    name: str
    state: str  # SUCCEEDED | FAILED | SKIPPED
    returncode: int | None = None
    seconds: float = 0.0
    log_path: str = ""
    command: list[str] = dataclasses.field(default_factory=list)
    executor_input: dict[str, Any] = dataclasses.field(default_factory=dict)
    executor_output: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Output key -> the RuntimeArtifact (JSON) downstream tasks receive.
    outputs: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    reason: str = ""

    def log(self) -> str:
        """The task's stdout and stderr."""
        if not self.log_path:
            return ""
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


@dataclasses.dataclass
class PipelineRun:
    """A whole run: its id, per-run root and every task in execution order."""

    run_id: str
    pipeline_root: str
    run_root: str
    tasks: dict[str, TaskRun]

    @property
    def succeeded(self) -> bool:
        """True when every task succeeded."""
        return all(t.state == "SUCCEEDED" for t in self.tasks.values())

    def summary(self) -> str:
        """One line per task: state, exit code, seconds."""
        return "\n".join(f"{t.name:<40} {t.state:<9} rc={t.returncode} {t.seconds:6.1f}s"
                         f"{'  ' + t.reason if t.reason else ''}" for t in self.tasks.values())

    def failure_report(self, chars: int = 6000) -> str:
        """The summary and the end of every failed task's log (for assertion messages)."""
        parts = [self.summary()]
        for task in self.tasks.values():
            if task.state == "FAILED":
                parts.append(f"--- {task.name} (rc={task.returncode})\n{task.log()[-chars:]}")
        return "\n".join(parts)


def run_pipeline_job(
    job: str | Mapping[str, Any],
    *,
    pipeline_root: str | None = None,
    project_dir: str = PROJECT,
    env: Mapping[str, str] | None = None,
    work_dir: str | None = None,
    run_id: str | None = None,
    task_timeout: float = 900.0,
) -> PipelineRun:
    """Runs every task of ``job`` (a ``PipelineJob`` JSON file or dict, or a bare spec).

    ``pipeline_root`` overrides ``runtimeConfig.gcsOutputDirectory``. ``env`` is
    added to this process's environment for the tasks (e.g. the S3 settings).
    ``work_dir`` holds each task's local files (executor output, log).
    """
    if isinstance(job, str):
        with open(job) as f:
            job = json.load(f)
    job = dict(job)
    spec_dict = job.get("pipelineSpec", job)
    spec = json_format.ParseDict(spec_dict, pb.PipelineSpec())
    deployment = json_format.ParseDict(spec_dict["deploymentSpec"], pb.PipelineDeploymentConfig())
    root = pipeline_root or job.get("runtimeConfig", {}).get("gcsOutputDirectory")
    if not root:
        raise UnsupportedSpec("no pipeline root: pass pipeline_root or set "
                              "runtimeConfig.gcsOutputDirectory")
    run_id = run_id or f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    # GetPipeline: the run's root is <pipeline root>/<pipeline name>/<run id>.
    run_root = _join_uri(root, spec.pipeline_info.name, run_id)
    work_dir = work_dir or tempfile.mkdtemp(prefix="kfp-launcher-")
    task_env = {**os.environ, **(env or {})}
    # `python` in the container command is the image's interpreter: here, this one.
    task_env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + task_env.get("PATH", "")

    tasks = spec.root.dag.tasks
    _check_supported(spec, tasks)
    artifact_ids = itertools.count(1)
    runs: dict[str, TaskRun] = {}
    for name in _execution_order(tasks):
        task = tasks[name]
        upstream = _upstream(task)
        strategy = task.trigger_policy.strategy
        states = {runs[u].state for u in upstream}
        if strategy != ALL_COMPLETED and states - {"SUCCEEDED"}:
            runs[name] = TaskRun(name, "SKIPPED", reason="an upstream task did not succeed")
            continue
        runs[name] = _run_task(
            name, task, spec.components[task.component_ref.name], deployment, runs, run_root,
            task_dir=os.path.join(work_dir, re.sub(r"[^A-Za-z0-9_.-]", "_", name)),
            project_dir=project_dir, env=task_env, timeout=task_timeout,
            artifact_ids=artifact_ids)
    return PipelineRun(run_id=run_id, pipeline_root=root, run_root=run_root, tasks=runs)


# ---------------------------------------------------------------------------- the DAG


def _check_supported(spec: pb.PipelineSpec, tasks: Mapping[str, pb.PipelineTaskSpec]) -> None:
    for name, task in tasks.items():
        component = spec.components[task.component_ref.name]
        if component.WhichOneof("implementation") != "executor_label":
            raise UnsupportedSpec(f"task {name!r}: nested DAGs are not supported")
        if task.trigger_policy.condition:
            raise UnsupportedSpec(f"task {name!r}: trigger conditions are not supported")
        if task.WhichOneof("iterator"):
            raise UnsupportedSpec(f"task {name!r}: loops are not supported")
        if component.output_definitions.parameters:
            raise UnsupportedSpec(f"task {name!r}: output parameters are not supported")


def _upstream(task: pb.PipelineTaskSpec) -> set[str]:
    producers = {a.task_output_artifact.producer_task for a in task.inputs.artifacts.values()
                 if a.HasField("task_output_artifact")}
    return set(task.dependent_tasks) | producers


def _execution_order(tasks: Mapping[str, pb.PipelineTaskSpec]) -> list[str]:
    """Topological order (Kahn), ties broken by name so that runs are reproducible."""
    waiting = {name: _upstream(task) for name, task in tasks.items()}
    for name, ups in waiting.items():
        unknown = ups - set(tasks)
        if unknown:
            raise UnsupportedSpec(f"task {name!r} depends on unknown task(s) {sorted(unknown)}")
    order: list[str] = []
    while waiting:
        ready = sorted(n for n, ups in waiting.items() if not ups - set(order))
        if not ready:
            raise UnsupportedSpec(f"dependency cycle among {sorted(waiting)}")
        order.append(ready[0])
        del waiting[ready[0]]
    return order


# ---------------------------------------------------------------------------- one task


def _run_task(name: str, task: pb.PipelineTaskSpec, component: pb.ComponentSpec,
              deployment: pb.PipelineDeploymentConfig, runs: Mapping[str, TaskRun],
              run_root: str, *, task_dir: str, project_dir: str, env: Mapping[str, str],
              timeout: float, artifact_ids) -> TaskRun:
    os.makedirs(task_dir, exist_ok=True)
    run = TaskRun(name, "FAILED", log_path=os.path.join(task_dir, "log.txt"))
    try:
        executor_input = _executor_input(name, task, component, runs, run_root,
                                         os.path.join(task_dir, "kfp_outputs",
                                                      "output_metadata.json"))
    except UnsupportedSpec:
        raise
    except ValueError as e:  # the driver fails the task before any pod starts
        run.reason = f"driver: {e}"
        return run
    run.executor_input = json_format.MessageToDict(executor_input)
    container = deployment.executors[component.executor_label].container
    command = _replace_placeholders([*container.command, *container.args], executor_input)
    run.command = command
    # The launcher creates the output parameter files' and the output file's directories.
    os.makedirs(os.path.dirname(executor_input.outputs.output_file), exist_ok=True)

    started = time.monotonic()
    with open(run.log_path, "wb") as log:
        try:
            completed = subprocess.run(command, cwd=project_dir, env=dict(env), stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       timeout=timeout)
            run.returncode = completed.returncode
        except subprocess.TimeoutExpired:
            run.reason = f"timed out after {timeout:.0f}s"
    run.seconds = time.monotonic() - started
    if run.returncode != 0:
        run.reason = run.reason or "the container exited with a non-zero code"
        return run

    output = pb.ExecutorOutput()
    if os.path.exists(executor_input.outputs.output_file):
        with open(executor_input.outputs.output_file) as f:
            json_format.Parse(f.read(), output)  # strict, like protojson.Unmarshal
    run.executor_output = json_format.MessageToDict(output)
    try:
        for key, artifacts in executor_input.outputs.artifacts.items():
            artifact = pb.RuntimeArtifact()
            artifact.CopyFrom(artifacts.artifacts[0])
            if key in output.artifacts and output.artifacts[key].artifacts:
                _merge_runtime_artifact(output.artifacts[key].artifacts[0], artifact)
            run.outputs[key] = _record_artifact(artifact, next(artifact_ids))
    except ValueError as e:  # RecordArtifact fails: the launcher fails the task
        run.reason = f"launcher: {e}"
        return run
    run.state = "SUCCEEDED"
    return run


def _executor_input(name: str, task: pb.PipelineTaskSpec, component: pb.ComponentSpec,
                    runs: Mapping[str, TaskRun], run_root: str,
                    output_file: str) -> pb.ExecutorInput:
    executor_input = pb.ExecutorInput()
    inputs = executor_input.inputs
    for key, definition in component.input_definitions.parameters.items():
        if key in task.inputs.parameters:
            spec = task.inputs.parameters[key]
            if spec.WhichOneof("kind") != "runtime_value" or \
                    spec.runtime_value.WhichOneof("value") != "constant":
                raise UnsupportedSpec(f"task {name!r}: parameter {key!r} is not a constant "
                                      f"(schema 2.1.0 runtimeValue.constant)")
            inputs.parameter_values[key].CopyFrom(spec.runtime_value.constant)
        elif definition.HasField("default_value"):
            # The launcher's addDefaultParams.
            inputs.parameter_values[key].CopyFrom(definition.default_value)
        elif not definition.is_optional:
            raise ValueError(f"task {name!r}: no value for parameter {key!r}")
    for key, definition in component.input_definitions.artifacts.items():
        if key not in task.inputs.artifacts:
            if definition.is_optional:
                continue
            raise ValueError(f"task {name!r}: no input for artifact {key!r}")
        spec = task.inputs.artifacts[key]
        if not spec.HasField("task_output_artifact"):
            raise UnsupportedSpec(f"task {name!r}: artifact {key!r} is not a task output")
        producer = spec.task_output_artifact.producer_task
        produced = runs.get(producer)
        if produced is None or produced.state != "SUCCEEDED":
            raise ValueError(f"input artifact {key!r} comes from task {producer!r}, which "
                             "did not succeed")
        recorded = produced.outputs[spec.task_output_artifact.output_artifact_key]
        artifact = json_format.ParseDict(recorded, pb.RuntimeArtifact())
        artifact.type.CopyFrom(definition.artifact_type)  # the consumer's declared type
        inputs.artifacts[key].artifacts.append(artifact)
    outputs = executor_input.outputs
    for key, definition in component.output_definitions.artifacts.items():
        artifact = outputs.artifacts[key].artifacts.add()
        artifact.type.CopyFrom(definition.artifact_type)
        artifact.uri = _join_uri(run_root, name, key)
        if definition.HasField("metadata"):
            artifact.metadata.CopyFrom(definition.metadata)
    outputs.output_file = output_file
    return executor_input


def _replace_placeholders(command: list[str], executor_input: pb.ExecutorInput) -> list[str]:
    placeholders = {"{{$}}": json.dumps(json_format.MessageToDict(executor_input),
                                        separators=(",", ":"))}
    for key, artifacts in executor_input.inputs.artifacts.items():
        placeholders[f"{{{{$.inputs.artifacts['{key}'].uri}}}}"] = artifacts.artifacts[0].uri
    for key, artifacts in executor_input.outputs.artifacts.items():
        placeholders[f"{{{{$.outputs.artifacts['{key}'].uri}}}}"] = artifacts.artifacts[0].uri
    for key, value in executor_input.inputs.parameter_values.items():
        placeholders[f"{{{{$.inputs.parameters['{key}']}}}}"] = _parameter_text(value)
    replaced = []
    for part in command:
        if _PATH_PLACEHOLDER.search(part):
            raise UnsupportedSpec(f"artifact .path placeholders are not supported: {part!r}")
        for placeholder, value in placeholders.items():
            part = part.replace(placeholder, value)
        replaced.append(part)
    return replaced


def _parameter_text(value: struct_pb2.Value) -> str:
    """A parameter as the launcher writes it into a command line (getPlaceholders)."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":  # Go's strconv.FormatFloat(v, 'f', -1, 64)
        number = value.number_value
        return str(int(number)) if number.is_integer() else repr(number)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    return json.dumps(json_format.MessageToDict(value), separators=(",", ":"))


# ---------------------------------------------------------------------------- artifacts


def _join_uri(root: str, *parts: str) -> str:
    # As the driver: never os.path.join a URI ("gs://" must keep its two slashes).
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])


def _merge_runtime_artifact(source: pb.RuntimeArtifact, target: pb.RuntimeArtifact) -> None:
    if source.uri:
        target.uri = source.uri
    for key, value in source.metadata.fields.items():
        target.metadata.fields[key].CopyFrom(value)


def _record_artifact(artifact: pb.RuntimeArtifact, artifact_id: int) -> dict[str, Any]:
    """The artifact as a downstream task receives it, after a round trip through MLMD."""
    recorded = pb.RuntimeArtifact(name=str(artifact_id), uri=artifact.uri)
    for key, value in artifact.metadata.fields.items():
        recorded.metadata.fields[key].CopyFrom(_through_mlmd(key, value))
    return json_format.MessageToDict(recorded)


def _through_mlmd(key: str, value: struct_pb2.Value) -> struct_pb2.Value:
    """structValueToMLMDValue, then toRuntimeArtifact's way back."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return struct_pb2.Value(string_value=value.string_value)
    if kind == "number_value":  # stored as a double
        return struct_pb2.Value(number_value=value.number_value)
    if kind == "bool_value":  # stored as an int 0/1, read back as a number
        return struct_pb2.Value(number_value=1.0 if value.bool_value else 0.0)
    if kind in ("list_value", "struct_value"):  # stored wrapped in a struct
        wrapped = struct_pb2.Value()
        inner = wrapped.struct_value.fields["list" if kind == "list_value" else "struct"]
        inner.CopyFrom(value)
        return wrapped
    raise ValueError(f"artifact metadata {key!r}: unknown/unsupported value type {kind}")


def main(argv: list[str] | None = None) -> int:
    """Runs a compiled job; prints one line per task; exit 1 if a task failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("job", help="pipeline.json from `runner.py compile --target kubeflow`")
    parser.add_argument("--pipeline-root", default=None,
                        help="override runtimeConfig.gcsOutputDirectory")
    parser.add_argument("--project-dir", default=PROJECT,
                        help="the project checkout, standing in for the image's /app")
    args = parser.parse_args(argv)
    run = run_pipeline_job(args.job, pipeline_root=args.pipeline_root,
                           project_dir=args.project_dir)
    print(run.failure_report() if not run.succeeded else run.summary())
    print(f"run root: {run.run_root}")
    return 0 if run.succeeded else 1


if __name__ == "__main__":
    raise SystemExit(main())
