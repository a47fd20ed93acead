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

import contextlib
import os
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


def join(path: str, *names: str) -> str:
    """``path/name/...`` for local paths and URIs alike (no doubled slashes)."""
    return "/".join([path.rstrip("/"), *(n.strip("/") for n in names)]) if names else path


def listdir(path: str) -> list[str]:
    """Sorted child names of directory ``path`` (no trailing ``/``); [] if it is not one.

    Through ``tf.io.gfile``, with one repair: TensorFlow's ``ram://`` filesystem
    lists by bare string prefix, so ``ram://x/a`` also "contains" ``.extra`` from a
    sibling ``ram://x/a.extra`` and ``b`` from ``ram://x/ab``; such names, which do
    not exist under ``path``, are dropped.
    """
    import tensorflow as tf

    ensure_filesystem(path)
    if not tf.io.gfile.isdir(path):
        return []
    names = sorted({name.rstrip("/") for name in tf.io.gfile.listdir(path)} - {""})
    if scheme(path) == "ram":
        names = [n for n in names if tf.io.gfile.exists(join(path, n))]
    return names


def walk(top: str):
    """``os.walk``-style ``(dirpath, dirnames, filenames)``, top-down, via :func:`listdir`."""
    import tensorflow as tf

    dirs, files = [], []
    for name in listdir(top):
        (dirs if tf.io.gfile.isdir(join(top, name)) else files).append(name)
    yield top, dirs, files
    for name in dirs:
        yield from walk(join(top, name))


def rmtree(path: str) -> None:
    """Deletes directory ``path`` and everything under it; nothing if it does not exist.

    Files first, then directories bottom-up, listed with :func:`listdir`:
    ``tf.io.gfile.rmtree`` on ``ram://`` fails on a SavedModel with both ``assets/``
    and ``assets.extra/`` (its listing mixes them up). Directories that vanish with
    their last file (object stores, ``ram://``) are fine.
    """
    import tensorflow as tf

    if not tf.io.gfile.isdir(path):
        return
    levels = list(walk(path))
    for directory, _, files in levels:
        for name in files:
            with contextlib.suppress(tf.errors.NotFoundError):
                tf.io.gfile.remove(join(directory, name))
    for directory, _, _ in reversed(levels):
        with contextlib.suppress(tf.errors.NotFoundError):
            tf.io.gfile.rmtree(directory)  # empty by now


def fsync_dir(path: str) -> None:
    """Makes a local directory's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
