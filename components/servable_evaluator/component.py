"""ServableEvaluator component declaration.

TFX's stock Evaluator measures a trained model on data; servables have no
evaluation data. This component is the gate instead. Its output is a standard
``ModelBlessing`` (int custom property ``blessed`` plus a ``BLESSED`` /
``NOT_BLESSED`` file), so TFX's stock Pusher would honour it too.
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import component_spec, standard_artifacts

from components import specs
from components.servable_evaluator import executor


class ServableEvaluatorSpec(component_spec.ComponentSpec):
    """Inputs, parameters and outputs of ServableEvaluator."""

    PARAMETERS = {
        # CatalogEntry.evaluation_spec() as JSON: signature keys, example requests
        # (inlined, so the cache key covers their content) and checks.
        specs.SERVABLE: component_spec.ExecutionParameter(type=str),
    }
    INPUTS = {specs.MODEL: component_spec.ChannelParameter(type=standard_artifacts.Model)}
    OUTPUTS = {
        specs.BLESSING: component_spec.ChannelParameter(type=standard_artifacts.ModelBlessing),
    }


class ServableEvaluator(base_component.BaseComponent):
    """Loads the exported SavedModel as a server would and checks every signature.

    Writes ``report.json`` and ``report.md`` beside the blessing file.
    """

    SPEC_CLASS = ServableEvaluatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, model: types.BaseChannel, servable: str):
        """``servable`` is the JSON of ``CatalogEntry.evaluation_spec()``."""
        super().__init__(spec=ServableEvaluatorSpec(
            model=model, servable=servable,
            blessing=types.Channel(type=standard_artifacts.ModelBlessing)))
