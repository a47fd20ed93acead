"""VersionedPusher component declaration.

TFX's stock Pusher names versions by Unix timestamp and copies file by file
into the live directory, so TF Serving can load a half-copied model. This
component publishes ``<serving_root>/<name>/<N>`` with N = 1, 2, ... and makes
each version appear whole (see ``publish.py``). It takes the same inputs as the
stock Pusher and writes the same ``PushedModel`` properties.
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import component_spec, standard_artifacts

from components import specs
from components.versioned_pusher import executor


class VersionedPusherSpec(component_spec.ComponentSpec):
    """Inputs, parameters and outputs of VersionedPusher."""

    PARAMETERS = {
        # Local directory or gs:// / s3:// URI that TF Serving watches.
        "serving_root": component_spec.ExecutionParameter(type=str),
        # ServingSpec as JSON (components/specs.py): version policy, labels, retention.
        specs.SERVING: component_spec.ExecutionParameter(type=str),
        # base_path prefix written into models.config ("" = the serving root);
        # "/models" suits `docker run -v <serving root>:/models tensorflow/serving`.
        "config_base_path": component_spec.ExecutionParameter(type=str, optional=True),
        # Digest of the model's published versions and of models.config when the
        # pipeline was built: part of the cache key, so that a serving root
        # changed behind the pipeline's back is checked again, not trusted.
        "serving_state": component_spec.ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        specs.MODEL: component_spec.ChannelParameter(type=standard_artifacts.Model),
        specs.MODEL_BLESSING: component_spec.ChannelParameter(
            type=standard_artifacts.ModelBlessing),
        "infra_blessing": component_spec.ChannelParameter(
            type=standard_artifacts.InfraBlessing, optional=True),
    }
    OUTPUTS = {
        specs.PUSHED_MODEL: component_spec.ChannelParameter(type=standard_artifacts.PushedModel),
    }


class VersionedPusher(base_component.BaseComponent):
    """Publishes a blessed Model as the next integer version under the serving root."""

    SPEC_CLASS = VersionedPusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, model: types.BaseChannel, model_blessing: types.BaseChannel,
                 serving_root: str, serving: str, config_base_path: str = "",
                 serving_state: str = "", infra_blessing: types.BaseChannel | None = None):
        """``serving`` is the JSON of a ``ServingSpec``."""
        super().__init__(spec=VersionedPusherSpec(
            model=model, model_blessing=model_blessing, infra_blessing=infra_blessing,
            serving_root=serving_root, serving=serving, config_base_path=config_base_path,
            serving_state=serving_state,
            pushed_model=types.Channel(type=standard_artifacts.PushedModel)))
