"""Fails a run-time assertion on the example (negative inputs)."""

import tensorflow as tf

METHOD = "sum_two"
EXAMPLE = {"path": "requests/negative.json", "request": {"instances": [[-1.0, 2.0, 3.0]]},
           "expect": {"response": {"predictions": [[1.0, 4.0, 5.0]]}}}


class Raises(tf.Module):
    """Refuses negative numbers at run time."""

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def sum_two(self, x):
        tf.debugging.assert_non_negative(x, message="inputs must be non-negative")
        return x + 2.0


def make() -> tf.Module:
    """The servable object."""
    return Raises()
