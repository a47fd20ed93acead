"""A SavedModel fingerprint that notices every change a client could notice.

TensorFlow's own fingerprint (``tf.saved_model.experimental.read_fingerprint``)
is stable across processes, but it hashes a regularized graph from which
constant values are dropped: ``x + 2`` and ``x + 3`` get the same singleprint
(measured with TF 2.16), and asset file contents are not part of it either.
Using it alone as the "unchanged, do not publish" key would silently drop real
changes. This fingerprint hashes, together with TF's singleprint (graph shape,
signatures, object graph, variable values), the values of every ``Const`` node
in the graph and its function library — as a sorted multiset, so that the
process-dependent function names do not matter — and the bytes of every asset.
"""

from __future__ import annotations

import hashlib
import os

from tfserving import filesystems


def servable_fingerprint(model_dir: str) -> str:
    """Hex digest identifying what ``model_dir``'s SavedModel computes and carries."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    digest = hashlib.sha256()
    digest.update(tf.saved_model.experimental.read_fingerprint(model_dir).singleprint().encode())
    proto = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(model_dir, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    constants = []
    for meta_graph in proto.meta_graphs:
        nodes = list(meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            nodes.extend(function.node_def)
        constants.extend(
            hashlib.sha256(node.attr["value"].tensor.SerializeToString(deterministic=True))
            .digest() for node in nodes if node.op == "Const")
    for value in sorted(constants):
        digest.update(value)
    assets = os.path.join(model_dir, "assets")
    if tf.io.gfile.isdir(assets):
        # filesystems.walk: tf.io.gfile.walk on ram:// would list the sibling assets.extra/.
        for root, _, files in sorted(filesystems.walk(assets)):
            for name in sorted(files):
                path = os.path.join(root, name)
                digest.update(os.path.relpath(path, assets).encode())
                with tf.io.gfile.GFile(path, "rb") as f:
                    digest.update(hashlib.sha256(f.read()).digest())
    return digest.hexdigest()[:32]
