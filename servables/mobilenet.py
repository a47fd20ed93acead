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

        images = tf.reshape(input_img, [-1])  # a scalar is one image
        count = tf.size(images)
        # One image (the common request) is preprocessed without a loop: through map_fn it
        # cost about 5% more per call. The network appears once in the graph: a copy per
        # branch doubled what saving and a session's first call build (about 0.7 s more).
        batch = tf.cond(count == 1, lambda: _preprocess(images[0])[tf.newaxis],
                        lambda: tf.map_fn(_preprocess, images, fn_output_signature=_IMAGE))
        # The network fails on an empty batch, so zero images answer [] without it.
        class_text = tf.cond(
            count == 0, lambda: tf.constant([], dtype=tf.string),
            lambda: tf.gather(labels, tf.argmax(self.model(batch), axis=-1)))
        return class_text  # the label of the most likely class, one per image
