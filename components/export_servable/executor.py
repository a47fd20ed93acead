"""ExportServable executor: runs the export and records what was written."""

from __future__ import annotations

from typing import Any

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from components import specs
from components.export_servable.export import export_servable, signatures_json
from tfserving.heap import release_freed_memory


class Executor(base_executor.BaseExecutor):
    """Writes the servable to ``<model.uri>/Format-Serving``."""

    def Do(self, input_dict: dict[str, list[types.Artifact]],  # noqa: N802 - TFX's name
           output_dict: dict[str, list[types.Artifact]],
           exec_properties: dict[str, Any]) -> None:
        """Exports one servable and sets the Model artifact's custom properties."""
        spec = specs.ExportSpec.from_json(exec_properties[specs.SERVABLE])
        model = artifact_utils.get_single_instance(output_dict[specs.MODEL])
        export_dir = path_utils.serving_model_dir(model.uri)
        logging.info("Exporting servable %s to %s", spec.name, export_dir)
        description = export_servable(spec, exec_properties["base_dir"], export_dir)
        release_freed_memory()  # before the next step: the model is built and saved
        model.set_string_custom_property("servable_name", spec.name)
        model.set_string_custom_property("signatures", signatures_json(description))
        model.set_string_custom_property("fingerprint", description["fingerprint"])
        model.set_string_custom_property("tf_fingerprint", description["tf_fingerprint"])
        model.set_int_custom_property("size_bytes", description["size_bytes"])
        model.set_string_custom_property("source_hash", exec_properties["source_hash"])
