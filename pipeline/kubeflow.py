"""Compiles the pipeline for Kubeflow Pipelines (v2 JSON) with KubeflowV2DagRunner.

The components run in the project's container image (see ``Dockerfile``),
where the project lives at ``IMAGE_PROJECT_DIR``; the executors therefore get
that directory as their ``base_dir``. Pipeline and serving roots may be
``gs://`` or ``s3://`` URIs.

The file is a ``PipelineJob`` (``displayName``, ``labels``, ``pipelineSpec``,
``runtimeConfig``), as Vertex AI Pipelines takes it
(``aiplatform.PipelineJob(template_path=...)``); its ``pipelineSpec`` is what the
open-source KFP 2 backend takes. The spec uses schema 2.1.0 by default: KFP 2
rejects 2.0.0 ("KFP only supports schema version 2.1.0"), Vertex AI takes both.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from pipeline.catalog import Catalog
from pipeline.pipeline import create_pipeline

IMAGE_PROJECT_DIR = "/app"
DEFAULT_PIPELINE_ROOT = "gs://YOUR_BUCKET/tfx-servables"


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

    Every component runs in ``image``, with caching on. ``serving_root``
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
        check_serving_state=False)
    runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
        config=kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(
            default_image=image, use_pipeline_spec_2_1=use_pipeline_spec_2_1),
        output_dir=os.path.dirname(os.path.abspath(out)),
        output_filename=os.path.basename(out))
    runner.run(tfx_pipeline, write_out=True)
    return os.path.abspath(out)
