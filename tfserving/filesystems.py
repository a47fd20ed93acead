"""Which paths TensorFlow's filesystem layer (``tf.io.gfile``) can open, and making it able to.

TensorFlow 2.16 registers local paths, ``ram://`` and ``gs://`` by itself.
``s3://`` (and ``hdfs://``, ``az://``, ``http(s)://``, ...) come from
tensorflow-io's filesystem plugins, registered by ``import tensorflow_io``.
TF Serving itself reads model roots the same way: its ``FileSystemStoragePathSource``
lists ``base_path`` with TensorFlow's ``Env::GetChildren``, so any scheme TensorFlow
can open is a valid serving root.

``ensure_filesystem(path)`` is called wherever a component or the server is about to
touch a path it was given, so that importing tensorflow-io (which loads a native
plugin) only happens in processes that use such a path.

S3 settings are tensorflow-io's environment variables: ``S3_ENDPOINT`` (e.g.
``http://minio:9000``; unset = AWS), ``S3_USE_HTTPS``, ``S3_VERIFY_SSL``,
``AWS_REGION`` and the usual AWS credential variables or files.
"""

from __future__ import annotations

import re

# Schemes tensorflow-io 0.37 registers (its libtensorflow_io_plugins.so).
_TENSORFLOW_IO_SCHEMES = frozenset({"s3", "hdfs", "viewfs", "har", "az", "http", "https", "oss"})
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def scheme(path: str) -> str:
    """``'s3'`` for ``s3://bucket/key``; ``''`` for a local path."""
    match = _SCHEME.match(path)
    return match.group(1).lower() if match else ""


def is_remote(path: str) -> bool:
    """True for a URI (``gs://``, ``s3://``, ``ram://``, ...), False for a local path.

    ``file://`` URIs count as remote too: they need gfile, not ``os``.
    """
    return bool(scheme(path))


def ensure_filesystem(path: str) -> str:
    """Makes ``tf.io.gfile`` able to open ``path``; returns ``path`` unchanged.

    Local paths and the schemes TensorFlow registers itself need nothing. For
    ``s3://`` and tensorflow-io's other schemes, imports ``tensorflow_io``.
    Raises ValueError naming the scheme and the registered ones when no
    filesystem can serve ``path``.
    """
    wanted = scheme(path)
    if not wanted:
        return path
    import tensorflow as tf

    registered = set(tf.io.gfile.get_registered_schemes())
    if wanted in registered:
        return path
    if wanted in _TENSORFLOW_IO_SCHEMES:
        try:
            import tensorflow_io  # noqa: F401 - the import registers the filesystems
        except ImportError as e:
            raise ValueError(
                f"{path!r}: the '{wanted}://' filesystem needs the tensorflow-io package "
                f"(tensorflow-io==0.37.1 for TensorFlow 2.16, in requirements.lock); "
                f"cannot import it: {e}") from e
        registered = set(tf.io.gfile.get_registered_schemes())
        if wanted in registered:
            return path
    known = ", ".join(sorted(f"{s}://" for s in registered | _TENSORFLOW_IO_SCHEMES if s))
    raise ValueError(f"{path!r}: TensorFlow has no filesystem for '{wanted}://' "
                     f"(supported: local paths, {known})")
