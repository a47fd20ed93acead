"""Answers with the wrong shape, or the wrong dtype, for the Adder's example."""

import tensorflow as tf

METHOD = "wrong_shape"
EXAMPLE = {"path": "requests/sum_two.json", "request": {"instances": [[1.0, 2.0, 3.0]]},
           "expect": {"response": {"predictions": [[3.0, 4.0, 5.0]]}, "tolerance": 0.0,
                      "shape": [1, 3], "dtype": "float32"}}


class WrongDtypeShape(tf.Module):
    """Three ways to get the Adder's contract wrong."""

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def wrong_shape(self, x):
        return x[:, :2] + 2.0  # drops a column: [batch, 2]

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def int_output(self, x):
        return tf.cast(x + 2.0, tf.int32)  # right numbers, wrong dtype

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def string_output(self, x):
        return tf.strings.as_string(x + 2.0)  # numbers as text


def make() -> tf.Module:
    """The servable object."""
    return WrongDtypeShape()
