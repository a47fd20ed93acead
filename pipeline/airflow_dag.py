"""The pipeline as an Airflow 2 DAG, built by TFX's ``AirflowDagRunner``.

Drop this file (a symlink or a copy) into Airflow's dags folder; the project
must be installed in Airflow's environment (``make setup-airflow`` builds one:
``.venv-airflow``). The DAG is the same ``create_pipeline()`` that
``runner.py`` runs locally: one task per component per servable
(``ExportServable.<name>`` → ``ServableEvaluator.<name>`` →
``VersionedPusher.<name>``, then ``ServingConfig`` once every pusher is done),
ML Metadata in SQLite.

Settings, read from the environment when Airflow parses the file:

    TFX_SERVABLES_OUTPUT_DIR        pipeline root, metadata.sqlite and serving root
                                    (default: <project>/outputs/airflow)
    TFX_SERVABLES_SERVING_DIR       serving root (default: OUTPUT_DIR/serving)
    TFX_SERVABLES_CATALOG           catalog YAML (default: servables/catalog.yaml)
    TFX_SERVABLES_SERVABLES         comma-separated subset (default: every servable)
    TFX_SERVABLES_CONFIG_BASE_PATH  base_path prefix in models.config (default: /models)
    TFX_SERVABLES_KEEP              keep the newest K versions (default: the catalog's keep)
    TFX_SERVABLES_BEAM_ARGS         Beam pipeline arguments, space-separated

Run every Airflow process with ``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python``:
TFX 1.16's generated protos fail under protobuf 4 ("Descriptors cannot be
created directly"), which a pip install of Airflow 2.11 next to TFX brings.
(``requirements-airflow.lock`` keeps protobuf 3.20.3, where the setting is
merely slower.)
"""

from __future__ import annotations

import datetime
import os
import shlex

from tfx.dsl.components.base import base_driver
from tfx.orchestration.airflow.airflow_dag_runner import AirflowDagRunner, AirflowPipelineConfig

import pipeline as _project_package
from pipeline.catalog import load_catalog
from pipeline.pipeline import PIPELINE_NAME, SERVING_CONFIG, create_pipeline

# The installed project, not this file's directory: in the dags folder this
# file may be a copy.
PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(_project_package.__file__)))


def _setting(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(f"TFX_SERVABLES_{name}", "").strip()
    return value or default


class UniqueArtifactNamesDriver(base_driver.BaseDriver):
    """TFX's default driver, with output artifact names unique in ML Metadata.

    The legacy launcher that ``AirflowDagRunner`` uses names every output
    ``<output key>:<run id>``, and MLMD allows one artifact of a type per
    name: the second ``ExportServable``'s ``model`` of a run fails with
    ``AlreadyExistsError ... UNIQUE constraint failed: Artifact.type_id,
    Artifact.name`` (tensorflow/tfx#4977). The names here carry the node and
    the execution, as the IR-based runners' names do.
    """

    def _prepare_output_artifacts(self, input_artifacts, output_dict, exec_properties,
                                  execution_id, pipeline_info, component_info):
        outputs = super()._prepare_output_artifacts(
            input_artifacts, output_dict, exec_properties, execution_id, pipeline_info,
            component_info)
        for key, artifacts in outputs.items():
            for index, artifact in enumerate(artifacts):
                artifact.name = (f"{pipeline_info.run_id}:{component_info.component_id}:"
                                 f"{key}:{execution_id}:{index}")
        return outputs


def build_dag():
    """The Airflow DAG for the settings in the environment."""
    output_dir = os.path.abspath(_setting("OUTPUT_DIR",
                                          os.path.join(PROJECT_DIR, "outputs", "airflow")))
    serving_root = _setting("SERVING_DIR", os.path.join(output_dir, "serving"))
    if "://" not in serving_root:
        serving_root = os.path.abspath(serving_root)
    servables = _setting("SERVABLES")
    catalog = load_catalog(_setting("CATALOG"))
    tfx_pipeline = create_pipeline(
        catalog,
        pipeline_root=os.path.join(output_dir, "pipeline"),
        serving_root=serving_root,
        servables=[s.strip() for s in servables.split(",") if s.strip()] if servables else None,
        metadata_path=os.path.join(output_dir, "metadata.sqlite"),
        beam_pipeline_args=shlex.split(_setting("BEAM_ARGS", "")),
        config_base_path=_setting("CONFIG_BASE_PATH", "/models"),
        keep=int(_setting("KEEP")) if _setting("KEEP") else None,
    )
    for component in tfx_pipeline.components:
        if component.driver_class is base_driver.BaseDriver:
            component.driver_class = UniqueArtifactNamesDriver
    dag = AirflowDagRunner(AirflowPipelineConfig(airflow_dag_config={
        # Triggered by hand (UI, `airflow dags trigger`); set a cron string to schedule.
        "schedule": None,
        "start_date": datetime.datetime(2025, 1, 1),
        "catchup": False,
        # One run at a time: the pusher numbers versions under a lock per model,
        # but MLMD in SQLite is happiest with a single writer.
        "max_active_runs": 1,
        "tags": ["tfx", PIPELINE_NAME],
    })).run(tfx_pipeline)
    # models.config's one writer runs once every pusher is done, failed or not (Airflow's
    # default, all_success, would let one broken servable leave models.config stale).
    dag.get_task(SERVING_CONFIG).trigger_rule = "all_done"
    return dag


DAG = build_dag()
