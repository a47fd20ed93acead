"""TensorFlow Serving's contract, one owner per rule.

Shaped like TF Serving's own split of ``apis/`` and ``util/`` from
``model_servers/``: what a SavedModel directory, a ``models.config`` and a REST
or gRPC request must look like, with nothing of how this project serves them.
Both the pipeline (``components/``, ``pipeline/``) and the server
(``serving/``) build on it; it imports nothing else of the project.

- ``layout``: model-name and version-directory rules.
- ``model_config``: ``models.config`` (ModelServerConfig) read and write.
- ``json_tensor``: the REST JSON formats (``util/json_tensor.cc``).
- ``tensor_proto``: gRPC's ``TensorProto`` to arrays and back (``Tensor::FromProto``,
  ``AsProtoField``).
- ``classification``: the Classify / Regress rules of ``classifier.cc`` /
  ``regressor.cc`` (signature checks, ``Input`` to serialized examples, results).
- ``status``: error codes and their HTTP statuses.
- ``saved_model``: SavedModel and signature reading.
- ``fingerprint``: a SavedModel's content fingerprint.
- ``filesystems``: which URIs ``tf.io.gfile`` can open (``s3://`` through tensorflow-io,
  loaded on first use), and listing that is right on every store (``ram://`` included).

Every file is read and written through ``tf.io.gfile``, so any path may be
local or ``gs://``, ``s3://``, ``ram://``.
"""
