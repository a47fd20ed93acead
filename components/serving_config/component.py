"""ServingConfig component declaration.

The pipeline's pushers run in parallel branches (one per servable) on Kubeflow
and Airflow. If each rewrote ``models.config`` (read, merge its entry, write),
two finishing together on an object store, where there is no lock, could each
write a config without the other's entry. So the pushers only publish version
directories, and this single fan-in step writes every entry afterwards.

Locally and on Airflow it consumes all pushers' ``PushedModel`` outputs (a
union channel): it runs after them, and re-runs exactly when one of them ran
(TFX's cache key). Kubeflow's compiler takes no union channels: there it only
runs after the pushers (``dependentTasks``), whatever their outcome, and never
from the cache (``pipeline/kubeflow.py``). Either way a broken servable's
branch does not stop it: it lists every model that has a version.
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import component_spec, standard_artifacts

from components.serving_config import executor

SERVING_ROOT = "serving_root"
MODELS = "models"
CONFIG_BASE_PATH = "config_base_path"
PUSHED_MODELS = "pushed_models"


class ServingConfigSpec(component_spec.ComponentSpec):
    """Parameters and inputs of ServingConfig (it has no output artifact)."""

    PARAMETERS = {
        # Local directory or gs:// / s3:// URI that TF Serving watches.
        SERVING_ROOT: component_spec.ExecutionParameter(type=str),
        # {servable name: ServingSpec JSON object}: the entries to write.
        MODELS: component_spec.ExecutionParameter(type=str),
        # base_path prefix written into models.config ("" = the serving root).
        CONFIG_BASE_PATH: component_spec.ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        PUSHED_MODELS: component_spec.ChannelParameter(type=standard_artifacts.PushedModel,
                                                       optional=True),
    }
    OUTPUTS = {}


class ServingConfig(base_component.BaseComponent):
    """Writes ``<serving_root>/models.config`` for every model that has a version."""

    SPEC_CLASS = ServingConfigSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, serving_root: str, models: str, config_base_path: str = "",
                 pushed_models: types.BaseChannel | None = None):
        """``models`` is the JSON of ``{name: ServingSpec}``; ``pushed_models`` the
        pushers' outputs (None: the caller orders the step after them)."""
        super().__init__(spec=ServingConfigSpec(
            serving_root=serving_root, models=models, config_base_path=config_base_path,
            pushed_models=pushed_models))
