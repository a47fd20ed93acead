"""A batchable twin of ``mobilenet_v2_test``, for the batching rows of ``make bench``.

The seed ``CustomMobileNet_string`` takes one JPEG per call (it reshapes its input to a
scalar), so TF Serving-style batching cannot merge its requests: merged, its call fails,
and the server runs it request by request. This twin has the same network (the hub
stand-in), labels asset and request body (``{"inputs": [{"b64": ...}]}``) but takes
``input_img: string [batch]`` and returns one label per image, so that the benchmark can
show what batching does for a model that batches.

    .venv/bin/python bench/batchable_mobilenet.py --out ROOT/mobilenet_v2_batch/1 \\
        --hub-module PATH --labels data/labels/ImageNetLabels.txt
"""

from __future__ import annotations

import argparse
import os
import sys

NAME = "mobilenet_v2_batch"


def export(out: str, hub_module: str, labels: str) -> str:
    """Writes the SavedModel to ``out`` (through a temp dir and a rename)."""
    import tempfile

    import tensorflow as tf
    import tensorflow_hub as hub

    class BatchMobileNet(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = hub.load(hub_module)
            self.labels = tf.saved_model.Asset(labels)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="input_img")])
        def call(self, input_img):
            def decode(jpeg):
                img = tf.io.decode_jpeg(jpeg, channels=3)
                img = tf.image.convert_image_dtype(img, tf.float32)
                return tf.image.resize(img, (224, 224))

            images = tf.map_fn(decode, input_img,
                               fn_output_signature=tf.TensorSpec([224, 224, 3], tf.float32))
            names = tf.strings.split(tf.io.read_file(self.labels), sep="\n")
            return tf.gather(names, tf.argmax(self.model(images), axis=-1))

    module = BatchMobileNet()
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    tf.saved_model.save(module, staging,
                        signatures={"serving_default": module.call.get_concrete_function()})
    os.rename(staging, out)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: exports the model."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the version directory to write")
    parser.add_argument("--hub-module", required=True)
    parser.add_argument("--labels", required=True)
    args = parser.parse_args(argv)
    print(export(args.out, args.hub_module, args.labels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
