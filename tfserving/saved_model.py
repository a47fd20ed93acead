"""SavedModels as TF Serving reads them: the ``serve`` MetaGraph and its signatures.

TF Serving's loader looks for ``saved_model.pb`` (else ``saved_model.pbtxt``)
and takes the MetaGraph whose tag set is exactly the requested one (``{serve}``),
as ``tensorflow/cc/saved_model/loader.cc`` does. Files are read through
``tf.io.gfile``, so a version may live on any filesystem TensorFlow knows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from tfserving import json_tensor
from tfserving.status import ServingError

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
SERVE_TAGS = frozenset({"serve"})


def read_saved_model(path: str) -> Any:
    """The ``SavedModel`` proto of the version directory ``path``.

    Raises ServingError ``NOT_FOUND`` without a SavedModel file, ``DATA_LOSS``
    when it does not parse.
    """
    import tensorflow as tf
    from google.protobuf import message, text_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    pb, pbtxt = (tf.io.gfile.join(path, name) for name in SAVED_MODEL_FILES)
    try:
        if tf.io.gfile.exists(pb):
            with tf.io.gfile.GFile(pb, "rb") as f:
                data = f.read()
            # The C++ protobuf backend stops at an invalid tag and returns how far it got.
            parsed = saved_model.ParseFromString(data)
            if parsed is not None and parsed != len(data):
                raise ServingError("DATA_LOSS", "Can't parse saved_model.pb as binary proto")
        elif tf.io.gfile.exists(pbtxt):
            with tf.io.gfile.GFile(pbtxt, "r") as f:
                text_format.Parse(f.read(), saved_model)
        else:
            raise ServingError("NOT_FOUND", "Could not find SavedModel .pb or .pbtxt in the "
                                            "version directory")
    except (message.DecodeError, text_format.ParseError, UnicodeDecodeError) as err:
        raise ServingError("DATA_LOSS", f"Cannot parse the SavedModel proto: {err}") from None
    return saved_model


def find_meta_graph(saved_model: Any, tags: Iterable[str] = SERVE_TAGS) -> Any:
    """The MetaGraphDef whose tag set is exactly ``tags``; ServingError NOT_FOUND if none."""
    wanted = set(tags)
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == wanted:
            return meta_graph
    raise ServingError("NOT_FOUND", "Could not find meta graph def matching supplied tags: "
                                    f"{{ {' '.join(sorted(wanted))} }}")


def read_meta_graph(path: str, tags: Iterable[str] = SERVE_TAGS) -> Any:
    """The MetaGraphDef tagged exactly ``tags`` of the SavedModel in ``path``."""
    return find_meta_graph(read_saved_model(path), tags)


def tensor_spec(alias: str, info: Any) -> json_tensor.TensorSpec:
    """A SignatureDef TensorInfo as the codec's :class:`~tfserving.json_tensor.TensorSpec`."""
    from tensorflow.core.framework import types_pb2

    dtype = types_pb2.DataType.Name(info.dtype)
    shape_proto = info.tensor_shape
    shape = None if shape_proto.unknown_rank else tuple(d.size for d in shape_proto.dim)
    return json_tensor.TensorSpec(alias, dtype, shape, dense=info.WhichOneof("encoding") == "name")


def signature_specs(meta_graph: Any) -> dict[str, json_tensor.SignatureSpec]:
    """The meta graph's signature defs as :class:`json_tensor.SignatureSpec` objects."""
    return {
        key: json_tensor.SignatureSpec(
            key, sig.method_name,
            {alias: tensor_spec(alias, t) for alias, t in sorted(sig.inputs.items())},
            {alias: tensor_spec(alias, t) for alias, t in sorted(sig.outputs.items())})
        for key, sig in meta_graph.signature_def.items()
    }


def metadata_json(name: str, version: int, meta_graph: Any) -> dict[str, Any]:
    """The GetModelMetadata REST response, exactly as TF Serving builds it.

    The signature defs are the SignatureDefMap proto printed with
    ``preserve_proto_field_names`` and ``always_print_primitive_fields``.
    """
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_metadata_pb2

    sig_map = get_model_metadata_pb2.SignatureDefMap()
    for key, sig in meta_graph.signature_def.items():
        sig_map.signature_def[key].CopyFrom(sig)
    return {
        "model_spec": {"name": name, "signature_name": "", "version": str(version)},
        "metadata": {"signature_def": json_format.MessageToDict(
            sig_map, preserving_proto_field_name=True, including_default_value_fields=True)},
    }


def tf_dtype(name: str) -> Any:
    """The ``tf.DType`` of a ``DT_*`` name (``DT_FLOAT`` -> ``tf.float32``)."""
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2

    return tf.as_dtype(types_pb2.DataType.Value(name))


def input_tensors(sig: json_tensor.SignatureSpec,
                  arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Decoded request arrays as tensors of the dtypes ``sig`` declares."""
    import tensorflow as tf

    return {alias: tf.constant(arr, dtype=tf_dtype(sig.inputs[alias].dtype))
            for alias, arr in arrays.items()}


def output_arrays(result: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Output tensors of a signature call as numpy arrays for the codec's encoders.

    String tensors become object arrays of ``bytes`` (a scalar one too).
    """
    import tensorflow as tf

    return {alias: np.asarray(tensor.numpy(), dtype=object if tensor.dtype == tf.string else None)
            for alias, tensor in result.items()}
