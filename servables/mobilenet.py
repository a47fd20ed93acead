"""The seed's ``CustomMobileNet_string``: JPEG bytes in, ImageNet label text out.

It wraps a TF-Hub image classifier loaded with ``hub.load``. The handle is a
constructor argument (set in the catalog):

- ``https://tfhub.dev/google/imagenet/mobilenet_v2_035_224/classification/4``,
  the blog's model, where there is internet;
- ``standin:mobilenet_v2_035_224`` (the default here), a local module with the
  same interface, built once into the hub cache (see ``hub_standin``).

The labels file is attached by the exporter as ``self.labels``, a
``tf.saved_model.Asset``, exactly as the blog does before saving.

The blog's ``call`` reshaped its input to a scalar: one JPEG per call. This one
classifies every JPEG it is given, with the blog's signature unchanged
(``input_img: string``, any shape, in; ``output_0: string [-1]`` out): a scalar
is one image and gives ``[1]`` label, a vector ``[n]`` gives ``[n]`` labels. So a
client can send several images in one request (``{"instances": [{"b64": ...},
...]}``), and TF Serving-style batching (``serve --enable-batching``), which
merges concurrent requests along dimension 0, can run them as one call.
"""

import tensorflow as tf
import tensorflow_hub as hub

from servables.hub_standin import resolve_handle

_IMAGE = tf.TensorSpec([224, 224, 3], tf.float32)


class CustomMobileNet_string(tf.keras.Model):  # noqa: N801 - the seed's name
    """Classifies JPEG images and returns their ImageNet labels, one label per image.

    Several images per call, not one as the blog wrote it: clients may send several
    images in one request, and TF Serving's batching merges requests along dimension 0.
    """

    model_handler = "https://tfhub.dev/google/imagenet/mobilenet_v2_035_224/classification/4"

    def __init__(self, handle: str | None = None):
        super().__init__()
        self.model = hub.load(resolve_handle(handle or self.__class__.model_handler))
        self.labels = None

    # Design your API with the 'tf.function' decorator.
    @tf.function(input_signature=[tf.TensorSpec(shape=None, dtype=tf.string)])
    def call(self, input_img):
        """JPEG bytes -> labels: a scalar gives ``[1]`` label, ``[n]`` images ``[n]`` labels.

        The signature keeps the blog's rank-agnostic spec; any other shape is read as its
        images in row-major order. Zero images give zero labels.
        """
        def _preprocess(img_bytes):
            img = tf.io.decode_jpeg(img_bytes, channels=3)
            img = tf.image.convert_image_dtype(img, tf.float32)
            return tf.image.resize(img, (224, 224))

        labels = tf.io.read_file(self.labels)
        labels = tf.strings.split(labels, sep="\n")

        def get_class(x):
            return labels[tf.argmax(x)]

        def classify(img):
            logits = self.model(img)
            return tf.map_fn(get_class, logits, fn_output_signature=tf.string)

        images = tf.reshape(input_img, [-1])  # a scalar is one image
        count = tf.size(images)
        # One image (the common request) keeps the blog's graph: static shape [1, ...]
        # through the network, no loop; through map_fn it cost about 5% more per call.
        # The network fails on an empty batch, so zero images answer [] without it.
        class_text = tf.case(
            [(count == 1, lambda: classify(_preprocess(images[0])[tf.newaxis])),
             (count == 0, lambda: tf.constant([], dtype=tf.string))],
            default=lambda: classify(tf.map_fn(_preprocess, images, fn_output_signature=_IMAGE)))
        return class_text  # the label of the most likely class, one per image
