"""Burns time in a tf.while_loop of matmuls before answering."""

import tensorflow as tf

METHOD = "sum_two"
EXAMPLE = {"path": "requests/sum_two.json", "request": {"instances": [[1.0, 2.0, 3.0]]},
           "expect": {"response": {"predictions": [[3.0, 4.0, 5.0]]}}}


class Slow(tf.Module):
    """Right answer, slowly: 50 matmuls of 64x64 first."""

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def sum_two(self, x):
        m = tf.eye(64) * 0.5

        def body(i, acc):
            return i + 1, tf.matmul(acc, m) + tf.eye(64)

        _, acc = tf.while_loop(lambda i, _: i < 50, body, [tf.constant(0), tf.eye(64)])
        return x + 2.0 + 0.0 * tf.reduce_sum(acc)


def make() -> tf.Module:
    """The servable object."""
    return Slow()
