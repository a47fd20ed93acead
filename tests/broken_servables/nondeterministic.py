"""Adds noise from tf.random: two identical calls differ."""

import tensorflow as tf

METHOD = "noisy"
EXAMPLE = {"path": "requests/noisy.json", "request": {"instances": [[1.0, 2.0, 3.0]]},
           "expect": {"range": [1.0, 4.0], "shape": [1, 3]}}


class Nondeterministic(tf.Module):
    """x + U[0, 1) noise."""

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def noisy(self, x):
        return x + tf.random.uniform(tf.shape(x))


def make() -> tf.Module:
    """The servable object."""
    return Nondeterministic()
