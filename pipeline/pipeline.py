"""``create_pipeline()``: one branch per servable, export → evaluate → push.

The same function feeds every orchestrator: the Beam and local DAG runners
(``pipeline/local.py``), Kubeflow Pipelines and Airflow.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence

from tfx.orchestration import metadata, pipeline
from tfx.types import channel

from components.export_servable.component import ExportServable
from components.servable_evaluator.component import ServableEvaluator
from components.serving_config.component import ServingConfig
from components.versioned_pusher.component import VersionedPusher
from components.versioned_pusher.publish import serving_state
from pipeline.catalog import Catalog

PIPELINE_NAME = "tfx-servables"
STEPS = ("ExportServable", "ServableEvaluator", "VersionedPusher")
# The one node that is not per servable: writes models.config after every pusher.
SERVING_CONFIG = "ServingConfig"


def node_id(step: str, servable: str) -> str:
    """The TFX node id of ``step`` for ``servable`` (e.g. ``ExportServable.sum_two``)."""
    return f"{step}.{re.sub(r'[^A-Za-z0-9_]', '_', servable)}"


def create_pipeline(
    catalog: Catalog,
    *,
    pipeline_root: str,
    serving_root: str,
    servables: Sequence[str] | None = None,
    pipeline_name: str = PIPELINE_NAME,
    metadata_path: str | None = None,
    enable_cache: bool = True,
    beam_pipeline_args: Sequence[str] = (),
    base_dir: str | None = None,
    config_base_path: str = "",
    check_serving_state: bool = True,
    keep: int | None = None,
    fan_in_artifacts: bool = True,
) -> pipeline.Pipeline:
    """Builds the pipeline for ``servables`` (every catalog entry when None).

    ``base_dir`` is where the executors find the project's files (the catalog's
    base_dir here; the project's path inside the image for Kubeflow).
    ``check_serving_state`` makes the pusher's cache key depend on what is
    published now; orchestrators that compile ahead of time turn it off.
    ``keep`` overrides every servable's retention (newest K versions).
    ``fan_in_artifacts=False`` orders ServingConfig after the pushers without consuming
    their outputs (Kubeflow's compiler takes no union channel; see pipeline/kubeflow.py).
    """
    components = []
    pushers = []
    serving_specs = {}
    for servable in catalog.select(servables):
        export = ExportServable(
            servable=servable.export_spec().to_json(),
            base_dir=base_dir or catalog.base_dir,
            source_hash=catalog.source_hash(servable),
        ).with_id(node_id("ExportServable", servable.name))
        evaluate = ServableEvaluator(
            model=export.outputs["model"],
            servable=servable.evaluation_spec().to_json(),
        ).with_id(node_id("ServableEvaluator", servable.name))
        push = VersionedPusher(
            model=export.outputs["model"],
            model_blessing=evaluate.outputs["blessing"],
            serving_root=serving_root,
            serving=(dataclasses.replace(servable.serving, keep=keep) if keep
                     else servable.serving).to_json(),
            config_base_path=config_base_path,
            serving_state=serving_state(serving_root, servable.name) if check_serving_state
            else "",
        ).with_id(node_id("VersionedPusher", servable.name))
        components += [export, evaluate, push]
        pushers.append(push)
        serving_specs[servable.name] = {  # what models.config says of it
            "version_policy": servable.serving.version_policy,
            "versions": list(servable.serving.versions),
            "labels": dict(servable.serving.labels)}

    # One writer of models.config, after all pushers: parallel branches (Kubeflow,
    # Airflow) cannot lose each other's entries, and a broken branch does not stop it.
    serving_config = ServingConfig(
        serving_root=serving_root,
        models=json.dumps(serving_specs, sort_keys=True, separators=(",", ":")),
        config_base_path=config_base_path,
        pushed_models=channel.union([p.outputs["pushed_model"] for p in pushers])
        if fan_in_artifacts and pushers else None,
    ).with_id(SERVING_CONFIG)
    if not fan_in_artifacts:
        for push in pushers:
            serving_config.add_upstream_node(push)
    components.append(serving_config)

    return pipeline.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=components,
        enable_cache=enable_cache,
        metadata_connection_config=(
            metadata.sqlite_metadata_connection_config(metadata_path) if metadata_path else None),
        beam_pipeline_args=list(beam_pipeline_args),
    )

