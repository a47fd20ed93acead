"""Returns NaN: ``log(x - 10)`` for inputs below 10."""

import tensorflow as tf

METHOD = "predict"
EXAMPLE = {"path": "requests/nan.json", "request": {"instances": [[1.0, 2.0, 3.0]]},
           "expect": {}}


class NanOutput(tf.Module):
    """Looks like the Adder but takes the log of a negative number."""

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def predict(self, x):
        return tf.math.log(x - 10.0)


def make() -> tf.Module:
    """The servable object."""
    return NanOutput()
