"""Adds 2.5 where the Adder's contract says 2."""

import tensorflow as tf

METHOD = "sum_two"
EXAMPLE = {"path": "requests/sum_two.json", "request": {"instances": [[1.0, 2.0, 3.0]]},
           "expect": {"response": {"predictions": [[3.0, 4.0, 5.0]]}, "tolerance": 0.1}}


class WrongValue(tf.Module):
    """Off by 0.5."""

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def sum_two(self, x):
        return x + 2.5


def make() -> tf.Module:
    """The servable object."""
    return WrongValue()
