"""The floor: the three seed servables exported and published by a minimal plain script.

No project code at all (issue 17): for each seed servable, build the object (the blog's
``Adder``; its ``Randomizer`` with the ``N: int32 []`` signature declared; its MobileNet
classifier over the hub module, with the labels file as a ``tf.saved_model.Asset``),
``tf.saved_model.save`` it with its serving signature, ``tf.saved_model.load`` it back
and call the signature once on a valid input, then copy the directory to
``<root>/<name>/1`` through a temp dir and a rename. Nothing else: no catalog, no
fingerprint, no checks beyond "the call returns", no ``clear_session``, no subprocess.

    python bench/plain_export.py --serving-dir ROOT --data-dir DATA --hub-module PATH

``DATA`` holds ``images/sample.jpg`` and ``labels/ImageNetLabels.txt`` (the project's
``data/``); ``PATH`` is the MobileNet hub module (the stand-in the benchmark built, or any
``hub.load`` handle). Prints one JSON line: import time and per-servable seconds.
"""

import time

_STARTED = time.perf_counter()

import argparse  # noqa: E402 - the clock starts before any import
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import tensorflow as tf  # noqa: E402
import tensorflow_hub as hub  # noqa: E402

_IMPORTED = time.perf_counter()


class Adder(tf.Module):
    """The blog's Adder (``tf.flaot32`` typo fixed)."""

    @tf.function(input_signature=[tf.TensorSpec(shape=[None, 3], dtype=tf.float32, name="x")])
    def sum_two(self, x):
        return x + 2


class Randomizer(tf.Module):
    """The blog's Randomizer."""

    @tf.function
    def fun_runif(self, N):  # noqa: N803 - the blog's name
        return tf.random.uniform(shape=(N,))


class CustomMobileNet_string(tf.keras.Model):  # noqa: N801 - the blog's name
    """The blog's JPEG-bytes-to-label classifier over a hub module."""

    def __init__(self, handle):
        super().__init__()
        self.model = hub.load(handle)
        self.labels = None

    @tf.function(input_signature=[tf.TensorSpec(shape=None, dtype=tf.string)])
    def call(self, input_img):
        def _preprocess(img_file):
            img = tf.io.decode_jpeg(tf.reshape(img_file, []), channels=3)
            img = tf.image.convert_image_dtype(img, tf.float32)
            return tf.image.resize(img, (224, 224))

        labels = tf.strings.split(tf.io.read_file(self.labels), sep="\n")
        logits = self.model(_preprocess(input_img)[tf.newaxis, :])
        return tf.map_fn(lambda x: labels[tf.argmax(x)], logits, fn_output_signature=tf.string)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serving-dir", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--hub-module", required=True)
    parser.add_argument("--servables", default="sum_two,fun_runif,mobilenet_v2_test",
                        help="comma-separated subset (for concurrency experiments)")
    args = parser.parse_args()
    root = os.path.abspath(args.serving_dir)
    with open(os.path.join(args.data_dir, "images", "sample.jpg"), "rb") as f:
        jpeg = f.read()

    def mobilenet():
        model = CustomMobileNet_string(args.hub_module)
        model.labels = tf.saved_model.Asset(
            os.path.join(args.data_dir, "labels", "ImageNetLabels.txt"))
        return model, model.call.get_concrete_function(), {"input_img": tf.constant([jpeg])}

    def randomizer():
        obj = Randomizer()
        sig = obj.fun_runif.get_concrete_function(tf.TensorSpec([], tf.int32, name="N"))
        return obj, sig, {"N": tf.constant(5)}

    def adder():
        obj = Adder()
        return obj, obj.sum_two.get_concrete_function(), {"x": tf.constant([[1.0, 2.0, 3.0]])}

    seconds = {}
    work = tempfile.mkdtemp(prefix="plain-export-")
    try:
        builders = {"sum_two": adder, "fun_runif": randomizer, "mobilenet_v2_test": mobilenet}
        for name in args.servables.split(","):
            build = builders[name]
            t = time.perf_counter()
            obj, signature, inputs = build()
            saved = os.path.join(work, name)
            tf.saved_model.save(obj, saved, signatures={"serving_default": signature})
            loaded = tf.saved_model.load(saved)
            loaded.signatures["serving_default"](**inputs)
            model_root = os.path.join(root, name)
            os.makedirs(model_root, exist_ok=True)
            staging = tempfile.mkdtemp(prefix=".tmp-", dir=model_root)
            shutil.copytree(saved, staging, dirs_exist_ok=True)
            os.rename(staging, os.path.join(model_root, "1"))
            seconds[name] = time.perf_counter() - t
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"import_s": _IMPORTED - _STARTED, "steps_s": seconds,
                      "total_s": time.perf_counter() - _STARTED}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
