"""ExportServable component declaration.

A fully custom component (ComponentSpec + executor class) rather than a
Python-function component: the executor is a class that TFX's Kubeflow and
Airflow runners import by path inside their containers and workers, its
parameters are typed and visible in ML Metadata, and the spec/executor split
mirrors TFX's own ``components/pusher``.
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import component_spec, standard_artifacts

from components import specs
from components.export_servable import executor


class ExportServableSpec(component_spec.ComponentSpec):
    """Parameters and outputs of ExportServable."""

    PARAMETERS = {
        # CatalogEntry.export_spec() as JSON: module, object, args, signatures, assets.
        specs.SERVABLE: component_spec.ExecutionParameter(type=str),
        # Where the spec's relative paths start (the project root).
        "base_dir": component_spec.ExecutionParameter(type=str),
        # Hash of the entry, the module and the local modules it imports, and
        # the assets. TFX's cache key includes every parameter, so an edit to
        # any file the export reads re-runs exactly this servable's export.
        "source_hash": component_spec.ExecutionParameter(type=str),
    }
    INPUTS = {}
    OUTPUTS = {specs.MODEL: component_spec.ChannelParameter(type=standard_artifacts.Model)}


class ExportServable(base_component.BaseComponent):
    """Imports a servable, builds its serving signatures, writes a SavedModel.

    The SavedModel lands in ``<model.uri>/Format-Serving``, where TFX's
    standard tools (and its stock Pusher) look for it.
    """

    SPEC_CLASS = ExportServableSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, servable: str, base_dir: str, source_hash: str):
        """``servable`` is the JSON of ``CatalogEntry.export_spec()``."""
        super().__init__(spec=ExportServableSpec(
            servable=servable, base_dir=base_dir, source_hash=source_hash,
            model=types.Channel(type=standard_artifacts.Model)))
