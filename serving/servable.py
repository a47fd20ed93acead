"""One loaded version of a model: its signatures, metadata and calls."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from serving import dispatch
from tfserving import json_tensor, warmup
from tfserving.bundle import load_bundle
from tfserving.saved_model import metadata_json, signature_specs
from tfserving.status import echo, invalid_argument


class Servable:
    """A loaded version: ``signatures``, ``metadata_body``, :meth:`run`, and where calls run."""

    def __init__(self, name: str, version: int, path: str, *, intra_op_threads: int = 0,
                 inter_op_threads: int = 0):
        self.name = name
        self.version = version
        self.path = path
        # Loaded as TF Serving loads a version: a Session over the serve MetaGraph, with its
        # init op and assets; signatures run by their tensor names (tfserving.bundle).
        self._bundle = load_bundle(path, intra_op_threads=intra_op_threads,
                                   inter_op_threads=inter_op_threads)
        meta_graph = self._bundle.meta_graph
        self.signatures = signature_specs(meta_graph)
        # The SignatureDef protos, for gRPC's GetModelMetadata (copies: holding the map
        # itself would keep the whole MetaGraphDef alive).
        self.signature_defs = {key: type(sig).FromString(sig.SerializeToString())
                               for key, sig in meta_graph.signature_def.items()}
        self.metadata_body = json_tensor.dumps(metadata_json(name, version, meta_graph))
        # As TF Serving: replay the warmup requests; a failure fails the load.
        warmup_seconds = warmup.replay(warmup.read(path), self.run, self.signatures)
        self.inline, self.dispatch = dispatch.choose(
            self.signatures, dispatch.signature_op_types(meta_graph, self.signatures),
            warmup_seconds)
        if self.inline:  # cheap calls: the session's inter-op pool would cost more than them
            self._bundle.run_on_caller_thread()

    def signature(self, name: str) -> json_tensor.SignatureSpec:
        """The signature called ``name`` ("" means ``serving_default``); else a 400."""
        key = name or json_tensor.DEFAULT_SIGNATURE
        sig = self.signatures.get(key)
        if sig is None:
            raise invalid_argument(f'Serving signature name: "{echo(key)}" not found in '
                                   "signature def")
        return sig

    def run(self, key: str, tensors: Mapping[str, np.ndarray],
            output_filter: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Calls signature ``key`` on numpy inputs; returns numpy outputs (all, or those of
        ``output_filter``). Errors are TF Serving's (``ServingError``).

        One session serves every call; TensorFlow releases the GIL while it computes, so
        calls from several threads run in parallel.
        """
        return self._bundle.run(key, tensors, output_filter)
