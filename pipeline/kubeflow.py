"""Compiles the pipeline for Kubeflow Pipelines (v2 JSON) with KubeflowV2DagRunner.

The components run in the project's container image (see ``Dockerfile``),
where the project lives at ``IMAGE_PROJECT_DIR``; the executors therefore get
that directory as their ``base_dir``. Pipeline and serving roots may be
``gs://`` or ``s3://`` URIs.

Every task runs ``python -m pipeline.kfp_entrypoint`` (TFX's KFP v2 container
entrypoint, then an exit that tensorflow-io's S3 teardown cannot turn into a
failure; see that module). The ``ServingConfig`` task, the one writer of
``models.config``, runs after every pusher whatever their outcome (KFP's
``ALL_UPSTREAM_TASKS_COMPLETED``, as ``ignore_upstream_failure()`` sets it) and
never from the cache: it takes no artifacts (the compiler takes no union
channel), so its cache key would not change when a model is first published.
``tests/test_kfp_run.py`` runs the compiled job (``tests/kfp_launcher.py``).

The file is a ``PipelineJob`` (``displayName``, ``labels``, ``pipelineSpec``,
``runtimeConfig``), as Vertex AI Pipelines takes it
(``aiplatform.PipelineJob(template_path=...)``); its ``pipelineSpec`` is what the
open-source KFP 2 backend takes. The spec uses schema 2.1.0 by default: KFP 2
rejects 2.0.0 ("KFP only supports schema version 2.1.0"), Vertex AI takes both.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from pipeline.catalog import Catalog
from pipeline.pipeline import SERVING_CONFIG, create_pipeline

IMAGE_PROJECT_DIR = "/app"
DEFAULT_PIPELINE_ROOT = "gs://YOUR_BUCKET/tfx-servables"
# The container command of every task (TFX's default: python -m <its entrypoint>).
ENTRYPOINT = ["python", "-m", "pipeline.kfp_entrypoint"]


def compile_kubeflow(
    catalog: Catalog,
    *,
    out: str,
    image: str,
    pipeline_root: str | None = None,
    serving_root: str | None = None,
    servables: Sequence[str] | None = None,
    project_dir_in_image: str = IMAGE_PROJECT_DIR,
    use_pipeline_spec_2_1: bool = True,
) -> str:
    """Writes the KFP v2 pipeline job (spec + runtime config) to ``out``; returns its path.

    Every component runs in ``image``, with caching on (but ServingConfig). ``serving_root``
    defaults to ``<pipeline_root>/serving``.
    """
    from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner

    pipeline_root = pipeline_root or DEFAULT_PIPELINE_ROOT
    serving_root = serving_root or f"{pipeline_root.rstrip('/')}/serving"
    tfx_pipeline = create_pipeline(
        catalog, pipeline_root=pipeline_root, serving_root=serving_root, servables=servables,
        base_dir=project_dir_in_image,
        # models.config must name the bucket paths that TF Serving will read.
        config_base_path="",
        # Compiled once, run later elsewhere: today's serving root says nothing.
        check_serving_state=False,
        # No union channel in KFP specs: ServingConfig follows the pushers by order.
        fan_in_artifacts=False)
    runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
        config=kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(
            default_image=image, default_commands=ENTRYPOINT,
            use_pipeline_spec_2_1=use_pipeline_spec_2_1),
        output_dir=os.path.dirname(os.path.abspath(out)),
        output_filename=os.path.basename(out))
    runner.run(tfx_pipeline, write_out=True)
    _serving_config_after_every_pusher(os.path.abspath(out))
    return os.path.abspath(out)


def _serving_config_after_every_pusher(path: str) -> None:
    """ServingConfig's task: runs once every pusher ended, failed or not; never cached."""
    with open(path) as f:
        job = json.load(f)
    task = job["pipelineSpec"]["root"]["dag"]["tasks"][SERVING_CONFIG]
    task["triggerPolicy"] = {"strategy": "ALL_UPSTREAM_TASKS_COMPLETED"}
    task["cachingOptions"] = {}  # enableCache: false (proto3 JSON leaves out false)
    with open(path, "w") as f:
        json.dump(job, f, sort_keys=True)
