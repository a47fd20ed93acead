"""The seed's ``CustomMobileNet_string``: JPEG bytes in, ImageNet label text out.

It wraps a TF-Hub image classifier loaded with ``hub.load``. The handle is a
constructor argument (set in the catalog):

- ``https://tfhub.dev/google/imagenet/mobilenet_v2_035_224/classification/4``,
  the blog's model, where there is internet;
- ``standin:mobilenet_v2_035_224`` (the default here), a local module with the
  same interface, built once into the hub cache (see ``hub_standin``).

The labels file is attached by the exporter as ``self.labels``, a
``tf.saved_model.Asset``, exactly as the blog does before saving.
"""

import tensorflow as tf
import tensorflow_hub as hub

from servables.hub_standin import resolve_handle


class CustomMobileNet_string(tf.keras.Model):  # noqa: N801 - the seed's name
    """Classifies one JPEG image and returns its ImageNet label."""

    model_handler = "https://tfhub.dev/google/imagenet/mobilenet_v2_035_224/classification/4"

    def __init__(self, handle: str | None = None):
        super().__init__()
        self.model = hub.load(resolve_handle(handle or self.__class__.model_handler))
        self.labels = None

    # Design your API with the 'tf.function' decorator.
    @tf.function(input_signature=[tf.TensorSpec(shape=None, dtype=tf.string)])
    def call(self, input_img):
        def _preprocess(img_file):
            img_bytes = tf.reshape(img_file, [])
            img = tf.io.decode_jpeg(img_bytes, channels=3)
            img = tf.image.convert_image_dtype(img, tf.float32)
            return tf.image.resize(img, (224, 224))

        labels = tf.io.read_file(self.labels)
        labels = tf.strings.split(labels, sep="\n")
        img = _preprocess(input_img)[tf.newaxis, :]
        logits = self.model(img)

        def get_class(x):
            return labels[tf.argmax(x)]

        class_text = tf.map_fn(get_class, logits, fn_output_signature=tf.string)
        return class_text  # the label of the most likely class
