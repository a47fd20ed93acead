"""The seed's ``Randomizer``: ``fun_runif(N)`` draws N uniform numbers in [0, 1).

As in the blog post, the method has no ``input_signature``; the catalog
declares ``N: int32 []`` so that the export has a serving signature.
"""

import tensorflow as tf


class Randomizer(tf.Module):
    """Uniform random numbers."""

    @tf.function
    def fun_runif(self, N):  # noqa: N803 - the seed's argument name is the API
        return tf.random.uniform(shape=(N,))
