"""pipeline/airflow_dag.py in a throw-away Airflow 2 (SQLite, temp AIRFLOW_HOME).

As the README deploys it: the DAG file symlinked into the dags folder, settings
from the environment. DagBag must load it without import errors with one task
per component per servable and the right edges; `airflow dags test` must run it
end to end and publish every servable.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from google.protobuf import text_format
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tensorflow_serving.config import model_server_config_pb2

from pipeline.pipeline import PIPELINE_NAME, SERVING_CONFIG, STEPS, node_id

PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVABLES = ("sum_two", "fun_runif", "mobilenet_v2_test")
AIRFLOW = os.path.join(os.path.dirname(sys.executable), "airflow")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    """AIRFLOW_HOME with a migrated SQLite DB and a dags folder holding the DAG file.

    The settings go into os.environ too: Airflow reads its configuration when it
    is first imported, in this process (DagBag) as in the `airflow` commands.
    """
    home = tmp_path_factory.mktemp("airflow_home")
    dags = home / "dags"
    dags.mkdir()
    os.symlink(os.path.join(PROJECT, "pipeline", "airflow_dag.py"), dags / "tfx_servables.py")
    settings = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # Importing TensorFlow and TFX takes longer than Airflow's default 30 s
        # on a busy 2-core machine.
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "300",
        "TFX_SERVABLES_OUTPUT_DIR": str(home / "outputs"),
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in settings.items():
            patch.setenv(key, value)
        migrate = subprocess.run([AIRFLOW, "db", "migrate"], capture_output=True, text=True,
                                 timeout=300)
        assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
        yield home


@pytest.mark.timeout(300)
def test_dagbag_loads_one_task_per_component_per_servable(airflow_home):
    from airflow.models import DagBag

    bag = DagBag(dag_folder=str(airflow_home / "dags"), include_examples=False)
    assert bag.import_errors == {}
    assert list(bag.dags) == [PIPELINE_NAME]
    dag = bag.dags[PIPELINE_NAME]
    assert sorted(dag.task_ids) == sorted([*(node_id(step, s) for step in STEPS for s in SERVABLES),
                                           SERVING_CONFIG])
    # models.config's one writer: after every pusher, even when one branch failed.
    serving_config = dag.get_task(SERVING_CONFIG)
    assert serving_config.upstream_task_ids == {node_id("VersionedPusher", s) for s in SERVABLES}
    assert serving_config.trigger_rule == "all_done"
    for servable in SERVABLES:
        export, evaluate, push = (dag.get_task(node_id(step, servable)) for step in STEPS)
        assert export.upstream_task_ids == set()
        assert evaluate.upstream_task_ids == {export.task_id}
        # The pusher takes the Model and its blessing.
        assert push.upstream_task_ids == {export.task_id, evaluate.task_id}
        exec_properties = push.op_kwargs["exec_properties"]
        assert exec_properties["serving_root"] == str(airflow_home / "outputs" / "serving")
        assert export.op_kwargs["exec_properties"]["base_dir"] == PROJECT


@pytest.mark.timeout(900)
def test_airflow_dags_test_runs_the_pipeline_end_to_end(airflow_home):
    run = subprocess.run([AIRFLOW, "dags", "test", PIPELINE_NAME, "2026-01-01"],
                         capture_output=True, text=True, timeout=840)
    log = run.stdout[-6000:] + run.stderr[-6000:]
    assert run.returncode == 0, log
    serving = airflow_home / "outputs" / "serving"
    for servable in SERVABLES:
        assert (serving / servable / "1" / "saved_model.pb").is_file(), log
    assert (serving / "mobilenet_v2_test" / "1" / "assets" / "ImageNetLabels.txt").is_file()
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse((serving / "models.config").read_text(), config)
    assert {c.name: c.base_path for c in config.model_config_list.config} == {
        s: f"/models/{s}" for s in SERVABLES}
    # ML Metadata in SQLite under the output dir: one Model and one PushedModel
    # per servable (their names must not collide: see UniqueArtifactNamesDriver).
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(airflow_home / "outputs" / "metadata.sqlite")
    store = metadata_store.MetadataStore(config)
    for type_name in ("Model", "ModelBlessing", "PushedModel"):
        artifacts = store.get_artifacts_by_type(type_name)
        assert len(artifacts) == len(SERVABLES), type_name
    pushed = store.get_artifacts_by_type("PushedModel")
    assert sorted(a.custom_properties["pushed"].int_value for a in pushed) == [1, 1, 1]
