"""Reads what the pipeline recorded in ML Metadata: per-run results and history."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from typing import Any

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from pipeline.pipeline import STEPS, node_id

_STATES = {
    metadata_store_pb2.Execution.COMPLETE: "ran",
    metadata_store_pb2.Execution.CACHED: "cached",
    metadata_store_pb2.Execution.FAILED: "failed",
    metadata_store_pb2.Execution.RUNNING: "running",
    metadata_store_pb2.Execution.CANCELED: "canceled",
}


@dataclasses.dataclass
class StepResult:
    """The latest execution of one pipeline node and its output artifact."""

    state: str  # ran | cached | failed | running | canceled | not run
    execution_id: int | None = None
    run_id: str = ""
    finished_ms: int = 0
    output: dict[str, Any] = dataclasses.field(default_factory=dict)  # custom properties
    output_uri: str = ""


def open_store(metadata_path: str) -> metadata_store.MetadataStore | None:
    """The SQLite MLMD store at ``metadata_path``, or None if it does not exist."""
    if not os.path.exists(metadata_path):
        return None
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def step_results(store: metadata_store.MetadataStore, pipeline_name: str,
                 servables: Iterable[str], since_ms: int = 0) -> dict[str, dict[str, StepResult]]:
    """For each servable and step, its latest execution that started after ``since_ms``."""
    contexts = {c.name: c for c in store.get_contexts_by_type("node")}
    results: dict[str, dict[str, StepResult]] = {}
    for servable in servables:
        results[servable] = {}
        for step in STEPS:
            context = contexts.get(f"{pipeline_name}.{node_id(step, servable)}")
            executions = [] if context is None else [
                e for e in store.get_executions_by_context(context.id)
                if e.create_time_since_epoch >= since_ms]
            if not executions:
                results[servable][step] = StepResult(state="not run")
                continue
            latest = max(executions, key=lambda e: e.id)
            results[servable][step] = _step_result(store, latest)
    return results


def _step_result(store: metadata_store.MetadataStore,
                 execution: metadata_store_pb2.Execution) -> StepResult:
    result = StepResult(state=_STATES.get(execution.last_known_state, "unknown"),
                        execution_id=execution.id,
                        finished_ms=execution.last_update_time_since_epoch)
    runs = [c for c in store.get_contexts_by_execution(execution.id)
            if c.type == "pipeline_run"]
    if not runs:  # older MLMD versions do not fill Context.type
        run_type = store.get_context_type("pipeline_run")
        runs = [c for c in store.get_contexts_by_execution(execution.id)
                if c.type_id == run_type.id]
    result.run_id = runs[0].name if runs else ""
    output_ids = [e.artifact_id for e in store.get_events_by_execution_ids([execution.id])
                  if e.type == metadata_store_pb2.Event.OUTPUT]
    if output_ids:
        artifact = store.get_artifacts_by_id(output_ids[:1])[0]
        result.output = custom_properties(artifact)
        result.output_uri = artifact.uri
    return result


def custom_properties(artifact: metadata_store_pb2.Artifact) -> dict[str, Any]:
    """An MLMD artifact's custom properties as plain Python values."""
    values = {}
    for key, value in artifact.custom_properties.items():
        kind = value.WhichOneof("value")
        values[key] = getattr(value, kind) if kind else None
    return values


def push_history(store: metadata_store.MetadataStore, pipeline_name: str,
                 servable: str) -> list[StepResult]:
    """Every execution of the servable's pusher that published a version."""
    context = next((c for c in store.get_contexts_by_type("node")
                    if c.name == f"{pipeline_name}.{node_id('VersionedPusher', servable)}"), None)
    if context is None:
        return []
    pushes = [_step_result(store, e) for e in store.get_executions_by_context(context.id)
              if e.last_known_state == metadata_store_pb2.Execution.COMPLETE]
    return [p for p in pushes if p.output.get("pushed") == 1]


def blessing_of_push(store: metadata_store.MetadataStore, execution_id: int) -> dict[str, Any]:
    """Custom properties of the ModelBlessing that a push execution consumed."""
    input_ids = [e.artifact_id for e in store.get_events_by_execution_ids([execution_id])
                 if e.type == metadata_store_pb2.Event.INPUT]
    for artifact in store.get_artifacts_by_id(input_ids):
        properties = custom_properties(artifact)
        if "blessed" in properties:
            return properties
    return {}


def run_step_results(store: metadata_store.MetadataStore, pipeline_name: str,
                     servables: Iterable[str],
                     run_ids: Iterable[str]) -> dict[str, dict[str, StepResult]]:
    """For each servable and step, what the pipeline runs ``run_ids`` did with it.

    Only executions attached to those runs' ``pipeline_run`` contexts count, so
    another run sharing the store is never reported as this one. A step that ran
    in any of the runs is "ran" (a later retry of the same invocation finds it
    cached); a push that published a version in any of them is reported as that
    push, not as the "unchanged" of a later retry.
    """
    by_node: dict[int, list[metadata_store_pb2.Execution]] = {}
    node_names = {c.id: c.name for c in store.get_contexts_by_type("node")}
    for run_id in run_ids:
        run = store.get_context_by_type_and_name("pipeline_run", run_id)
        if run is None:
            continue
        for execution in store.get_executions_by_context(run.id):
            for context in store.get_contexts_by_execution(execution.id):
                if context.id in node_names:
                    by_node.setdefault(context.id, []).append(execution)
    node_ids = {name: node_id for node_id, name in node_names.items()}
    results: dict[str, dict[str, StepResult]] = {}
    for servable in servables:
        results[servable] = {}
        for step in STEPS:
            executions = by_node.get(node_ids.get(f"{pipeline_name}.{node_id(step, servable)}"))
            results[servable][step] = (_merged_result(store, executions) if executions
                                       else StepResult(state="not run"))
    return results


def _merged_result(store: metadata_store.MetadataStore,
                   executions: list[metadata_store_pb2.Execution]) -> StepResult:
    executions = sorted(executions, key=lambda e: e.id)
    complete = [e for e in executions
                if e.last_known_state == metadata_store_pb2.Execution.COMPLETE]
    results = [_step_result(store, e) for e in (complete or executions[-1:])]
    pushed = [r for r in results if r.output.get("pushed") == 1]
    return (pushed or results)[-1]


def failed_nodes(store: metadata_store.MetadataStore, run_id: str) -> dict[str, int]:
    """Node context name -> execution id of every FAILED execution of run ``run_id``."""
    run = store.get_context_by_type_and_name("pipeline_run", run_id)
    if run is None:
        return {}
    node_names = {c.id: c.name for c in store.get_contexts_by_type("node")}
    failed = {}
    for execution in store.get_executions_by_context(run.id):
        if execution.last_known_state == metadata_store_pb2.Execution.FAILED:
            for context in store.get_contexts_by_execution(execution.id):
                if context.id in node_names:
                    failed[context.name] = execution.id
    return failed
