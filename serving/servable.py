"""One loaded version of a model: its signatures, metadata and calls."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from serving import dispatch
from tfserving import json_tensor
from tfserving.saved_model import (
    input_tensors,
    metadata_json,
    output_arrays,
    read_meta_graph,
    signature_specs,
)
from tfserving.status import CODE_NAMES, ServingError, echo, invalid_argument, tf_error_message


class Servable:
    """A loaded version: ``signatures``, ``metadata_body``, :meth:`run`, and where calls run."""

    def __init__(self, name: str, version: int, path: str):
        import tensorflow as tf

        self.name = name
        self.version = version
        meta_graph = read_meta_graph(path)
        self.signatures = signature_specs(meta_graph)
        self.metadata_body = json_tensor.dumps(metadata_json(name, version, meta_graph))
        self._loaded = tf.saved_model.load(path, tags=["serve"])
        self._functions = dict(self._loaded.signatures)
        warmup_seconds: dict[str, float] = {}
        self.inline, self.dispatch = dispatch.choose(
            self.signatures, dispatch.graph_op_types(meta_graph.graph_def), warmup_seconds)

    def signature(self, name: str) -> json_tensor.SignatureSpec:
        """The signature called ``name`` ("" means ``serving_default``); else a 400."""
        key = name or json_tensor.DEFAULT_SIGNATURE
        sig = self.signatures.get(key)
        if sig is None:
            raise invalid_argument(f'Serving signature name: "{echo(key)}" not found in '
                                   "signature def")
        return sig

    def run(self, key: str, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Calls signature ``key`` on numpy inputs; returns numpy outputs.

        TensorFlow releases the GIL while it computes, so calls from several
        threads run in parallel.
        """
        import tensorflow as tf

        function = self._functions.get(key)
        sig = self.signatures[key]
        if function is None:
            raise invalid_argument(f"Signature '{echo(key)}' cannot be called "
                                   "(it has no callable function in the SavedModel)")
        feeds = input_tensors(sig, tensors)
        try:
            result = function(**feeds)
        except tf.errors.OpError as err:
            raise ServingError(CODE_NAMES.get(err.error_code, "UNKNOWN"),
                               tf_error_message(err.message)) from None
        except (TypeError, ValueError) as err:
            raise invalid_argument(f"Cannot call signature '{key}': {err}") from None
        return output_arrays(result)
