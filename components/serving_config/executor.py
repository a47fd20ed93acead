"""ServingConfig executor: one read-modify-write of models.config for all models."""

from __future__ import annotations

import json
from typing import Any

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_executor

from components import specs
from components.versioned_pusher.publish import write_models_config
from tfserving.filesystems import ensure_filesystem


class Executor(base_executor.BaseExecutor):
    """Sets the models.config entry of every listed model that has a version."""

    def Do(self, input_dict: dict[str, list[types.Artifact]],  # noqa: N802 - TFX's name
           output_dict: dict[str, list[types.Artifact]],
           exec_properties: dict[str, Any]) -> None:
        """Writes ``<serving_root>/models.config`` (nothing when it would not change)."""
        serving_root = ensure_filesystem(exec_properties["serving_root"])
        models = json.loads(exec_properties["models"])
        configs = [specs.ServingSpec.from_json(json.dumps(spec)).model_config(name)
                   for name, spec in sorted(models.items())]
        pushed = sorted(a.get_string_custom_property("servable_name")
                        for a in input_dict.get("pushed_models", []))
        path = write_models_config(serving_root, configs,
                                   config_base_path=exec_properties.get("config_base_path")
                                   or None)
        logging.info("models.config at %s written for %s (pushers that ran: %s)", path,
                     ", ".join(c.name for c in configs), ", ".join(pushed) or "none")
