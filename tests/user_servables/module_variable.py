"""A tf.Module with a tf.Variable and two signatures."""

import tensorflow as tf


class Counter(tf.Module):
    """Multiplies by a stored weight; ``shift`` has no input_signature (declared in the catalog)."""

    def __init__(self, weight: float = 3.0):
        super().__init__()
        self.weight = tf.Variable(weight, dtype=tf.float32, name="weight")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def scale(self, x):
        return {"scaled": x * self.weight}

    @tf.function
    def shift(self, x, delta):
        return {"shifted": x + delta * self.weight}
