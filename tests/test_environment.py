"""The environment has what the project needs, and TF can round-trip a tf.Module."""

import tensorflow as tf


def test_imports_tfx_hub_and_serving_protos():
    import tensorflow_hub
    import tfx
    from tensorflow_serving.config import model_server_config_pb2

    assert tfx.__version__ == "1.16.0"
    assert tensorflow_hub.__version__ == "0.16.1"
    assert tf.__version__.startswith("2.16.")
    assert model_server_config_pb2.ModelServerConfig().model_config_list is not None


def test_save_and_reload_module(tmp_path):
    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def double(self, x):
            return x * 2

    tf.saved_model.save(Doubler(), str(tmp_path), signatures={"serving_default":
                                                              Doubler().double})
    loaded = tf.saved_model.load(str(tmp_path))
    out = loaded.signatures["serving_default"](x=tf.constant([1.0, 2.5]))
    assert out["output_0"].numpy().tolist() == [2.0, 5.0]
