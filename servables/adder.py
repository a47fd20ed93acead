"""The seed's ``Adder``: a ``tf.Module`` whose ``sum_two`` adds 2 to a [batch, 3] tensor.

Copied from the blog post with its ``tf.flaot32`` typo fixed.
"""

import tensorflow as tf


class Adder(tf.Module):
    """Adds two to every element."""

    @tf.function(input_signature=[tf.TensorSpec(shape=[None, 3], dtype=tf.float32, name="x")])
    def sum_two(self, x):
        return x + 2
