"""VersionedPusher executor: checks the blessings, then publishes atomically."""

from __future__ import annotations

import os
from typing import Any

from absl import logging
from tfx import types
from tfx.types import artifact_utils

from components import specs
from components.versioned_pusher.extras import version_files
from components.versioned_pusher.publish import PublishError, publish
from components.versioned_pusher.pusher_base import PusherBase
from tfserving.filesystems import ensure_filesystem


class Executor(PusherBase):
    """TFX's Pusher executor with integer versions and atomic publication.

    The blessing check and ``pushed*`` properties are TFX's (``pusher_base.py``).
    """

    def Do(self, input_dict: dict[str, list[types.Artifact]],  # noqa: N802 - TFX's name
           output_dict: dict[str, list[types.Artifact]],
           exec_properties: dict[str, Any]) -> None:
        """Publishes the model if blessed; records the outcome on PushedModel."""
        self._log_startup(input_dict, output_dict, exec_properties)
        pushed_model = artifact_utils.get_single_instance(output_dict[specs.PUSHED_MODEL])
        model = artifact_utils.get_single_instance(input_dict[specs.MODEL])
        ensure_filesystem(model.uri)  # before GetModelPath looks for the SavedModel there
        name = model.get_string_custom_property("servable_name")
        serving = specs.ServingSpec.from_json(exec_properties[specs.SERVING])
        pushed_model.set_string_custom_property("servable_name", name)
        if not self.CheckBlessing(input_dict):
            blessing = artifact_utils.get_single_instance(input_dict[specs.MODEL_BLESSING])
            reason = blessing.get_string_custom_property("reasons") or "not blessed"
            self._MarkNotPushed(pushed_model)
            pushed_model.set_string_custom_property("reason", f"not_blessed: {reason}")
            logging.info("Servable %s not pushed: not blessed (%s)", name, reason)
            return
        model_dir = self.GetModelPath(input_dict)
        blessing = artifact_utils.get_single_instance(input_dict[specs.MODEL_BLESSING])
        report = os.path.join(blessing.uri, specs.REPORT_MARKDOWN)
        # models.config is left to the ServingConfig step: one writer after all pushers.
        try:
            result = publish(
                model_dir, exec_properties["serving_root"], name,
                fingerprint=model.get_string_custom_property("fingerprint") or None,
                keep=serving.keep, config=serving.model_config(name), write_config=False,
                config_base_path=exec_properties.get("config_base_path") or None,
                # assets.extra/openapi.json (it names the version) and the blessing report.
                extra_files=lambda version: version_files(
                    model_dir, name, version, examples=serving.examples, report_path=report))
        except Exception as err:  # noqa: BLE001 - any failure is this servable's, by name
            raise PublishError.wrap(name, exec_properties["serving_root"], err) from err
        if result.pushed:
            self._MarkPushed(pushed_model, pushed_destination=result.destination,
                             pushed_version=str(result.version))
        else:
            self._MarkNotPushed(pushed_model)
            pushed_model.set_string_custom_property("pushed_destination", result.destination)
            pushed_model.set_string_custom_property("pushed_version", str(result.version))
        pushed_model.set_string_custom_property("reason", result.reason)
        if result.removed_versions:
            pushed_model.set_string_custom_property(
                "removed_versions", ",".join(map(str, result.removed_versions)))
        logging.info("Servable %s: %s version %s at %s", name, result.reason, result.version,
                     result.destination)
