"""A Keras functional model: two named inputs, two named outputs, a vocabulary lookup."""

import tensorflow as tf


def build(vocabulary: str) -> tf.keras.Model:
    """``vocabulary`` is a file with one country per line (the catalog passes an asset)."""
    age = tf.keras.Input(shape=(1,), dtype="float32", name="age")
    country = tf.keras.Input(shape=(1,), dtype="string", name="country")
    lookup = tf.keras.layers.StringLookup(vocabulary=vocabulary, output_mode="one_hot")
    country_ids = tf.keras.layers.Reshape((lookup.vocabulary_size(),))(lookup(country))
    features = tf.keras.layers.Concatenate()([age, country_ids])
    score = tf.keras.layers.Dense(
        1, kernel_initializer="ones", bias_initializer="zeros", name="score")(features)
    country_index = tf.keras.layers.Lambda(
        lambda ids: tf.argmax(ids, axis=-1), name="country_index")(country_ids)
    return tf.keras.Model(inputs={"age": age, "country": country},
                          outputs={"score": score, "country_index": country_index})
