"""ServableEvaluator executor: runs the checks and writes blessing and report."""

from __future__ import annotations

import json
import os
from typing import Any

from absl import logging
from tfx import types
from tfx.components.evaluator import constants
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils, path_utils

from components import specs
from components.servable_evaluator.checks import evaluate
from components.servable_evaluator.report import render_markdown
from tfserving.filesystems import ensure_filesystem
from tfserving.heap import release_freed_memory


class Executor(base_executor.BaseExecutor):
    """Blesses the model only if every check passes."""

    def Do(self, input_dict: dict[str, list[types.Artifact]],  # noqa: N802 - TFX's name
           output_dict: dict[str, list[types.Artifact]],
           exec_properties: dict[str, Any]) -> None:
        """Evaluates the model and writes the ModelBlessing with its report."""
        spec = specs.EvaluationSpec.from_json(exec_properties[specs.SERVABLE])
        model = artifact_utils.get_single_instance(input_dict[specs.MODEL])
        blessing = artifact_utils.get_single_instance(output_dict[specs.BLESSING])
        for uri in (model.uri, blessing.uri):  # s3:// needs tensorflow-io's filesystem
            ensure_filesystem(uri)
        report = evaluate(path_utils.serving_model_path(model.uri), spec)
        release_freed_memory()  # the loaded model is closed: before the next step
        io_utils.write_string_file(os.path.join(blessing.uri, specs.REPORT_JSON),
                                   json.dumps(report, indent=2, sort_keys=True))
        io_utils.write_string_file(os.path.join(blessing.uri, specs.REPORT_MARKDOWN),
                                   render_markdown(report))
        blessed = bool(report["blessed"])
        io_utils.write_string_file(os.path.join(
            blessing.uri,
            constants.BLESSED_FILE_NAME if blessed else constants.NOT_BLESSED_FILE_NAME), "")
        blessing.set_int_custom_property(
            constants.ARTIFACT_PROPERTY_BLESSED_KEY,
            constants.BLESSED_VALUE if blessed else constants.NOT_BLESSED_VALUE)
        blessing.set_string_custom_property("servable_name", spec.name)
        blessing.set_string_custom_property("reasons", "; ".join(report["reasons"]))
        blessing.set_string_custom_property(
            constants.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY, model.uri)
        blessing.set_int_custom_property(
            constants.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY, model.id)
        logging.info("Servable %s %s", spec.name,
                     "blessed" if blessed else f"NOT blessed: {report['reasons']}")
