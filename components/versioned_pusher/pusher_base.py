"""What the VersionedPusher uses of TFX's Pusher executor, without importing that module.

``tfx.components.pusher.executor`` imports ``tfx.types.standard_component_specs``, which
imports TensorFlow Model Analysis and TensorFlow Data Validation (about a second and
100 MB per run, BENCHMARKS.md) for components this pipeline does not have. The four
methods below behave as TFX 1.16's (``tfx/components/pusher/executor.py``,
``tfx/components/util/model_utils.py``) and write the same ``pushed``,
``pushed_destination`` and ``pushed_version`` properties, which TFX tooling reads.
"""

from __future__ import annotations

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from components import specs

# TFX's artifact property names (tfx/components/pusher/executor.py).
PUSHED = "pushed"
PUSHED_DESTINATION = "pushed_destination"
PUSHED_VERSION = "pushed_version"


class PusherBase(base_executor.BaseExecutor):
    """Blessing check, model path and push marks of TFX's Pusher executor."""

    def CheckBlessing(self, input_dict: dict[str, list[types.Artifact]]) -> bool:  # noqa: N802
        """True unless a model blessing input says ``blessed`` != 1 (TFX's rule)."""
        blessings = input_dict.get(specs.MODEL_BLESSING)
        if blessings:
            blessing = artifact_utils.get_single_instance(blessings)
            if blessing.get_int_custom_property("blessed") != 1:
                logging.info("Model on %s was not blessed by model validation", blessing.uri)
                return False
        return True

    def GetModelPath(self, input_dict: dict[str, list[types.Artifact]]) -> str:  # noqa: N802
        """The serving model directory of the ``model`` input (``Format-Serving``)."""
        model = artifact_utils.get_single_instance(input_dict[specs.MODEL])
        return path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))

    def _MarkPushed(self, model_push: types.Artifact, pushed_destination: str,  # noqa: N802
                    pushed_version: str | None = None) -> None:
        model_push.set_int_custom_property(PUSHED, 1)
        model_push.set_string_custom_property(PUSHED_DESTINATION, pushed_destination)
        if pushed_version is not None:
            model_push.set_string_custom_property(PUSHED_VERSION, pushed_version)

    def _MarkNotPushed(self, model_push: types.Artifact) -> None:  # noqa: N802
        model_push.set_int_custom_property(PUSHED, 0)

