"""The serving root on disk: which models and versions exist (TF Serving's storage path source).

Layout, as TF Serving expects it::

    <serving_root>/
      models.config            # optional ModelServerConfig text proto
      <model>/<version>/saved_model.pb, variables/, assets/

- A version is a child directory whose name parses as a version
  (:func:`tfserving.layout.parse_version`). Other entries (``.tmp-3``,
  ``README``) are ignored, so a publisher can stage a version under a
  temporary name and rename it into place.
- With ``models.config``, its ``model_config_list`` says which models are
  served, with their version policy and labels. Without it, every directory
  whose name is a valid model name is a model served with latest 1.
- Decision: a model's directory is always ``<serving_root>/<name>``. The
  config's ``base_path`` is written for the production container (for
  example ``/models/sum_two``) and is ignored here, so nothing outside the
  serving root is ever read. Every directory is resolved (symlinks included)
  and must stay inside the root.
- Names from requests are only ever used as keys of the in-memory registry,
  never to build a path.
"""

from __future__ import annotations

import errno
import hashlib
import os

from tfserving import filesystems, model_config
from tfserving.layout import parse_version, valid_model_name
from tfserving.model_config import ConfigError, ModelConfig

_MAX_STAMP_FILES = 10_000


# -- roots on other filesystems (gs://, s3://, ram://), through tf.io.gfile ----------------
# TF Serving lists a model's base path with TensorFlow's FileSystem API, whatever the
# scheme (file_system_storage_path_source.cc), so a bucket is a valid serving root. Buckets
# have no symlinks: the realpath containment rules below are for local roots. Names are
# checked the same way everywhere (valid_model_name, parse_version).


def resolve_root(serving_root: str) -> str:
    """The root as the registry keeps it: a local path resolved (symlinks included), a
    URI as given, its filesystem loaded (tensorflow-io for ``s3://``)."""
    if filesystems.is_remote(serving_root):
        return filesystems.ensure_filesystem(serving_root).rstrip("/")
    return os.path.realpath(serving_root)


def is_directory(path: str) -> bool:
    """``os.path.isdir`` for local paths, ``tf.io.gfile.isdir`` for URIs."""
    if not filesystems.is_remote(path):
        return os.path.isdir(path)
    import tensorflow as tf

    filesystems.ensure_filesystem(path)
    return tf.io.gfile.isdir(path)


def config_stamp(serving_root: str) -> tuple:
    """A value that changes whenever ``models.config`` changes.

    Local roots: its mtime, size and inode. URIs: a digest of its bytes (object stores
    keep modification times in whole seconds). Raises FileNotFoundError when there is
    none, another OSError when it cannot be read.
    """
    path = model_config.config_path(serving_root)
    if not filesystems.is_remote(serving_root):
        st = os.stat(path)
        return (st.st_mtime_ns, st.st_size, st.st_ino)
    import tensorflow as tf

    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            data = f.read(model_config.MAX_CONFIG_BYTES + 1)
    except tf.errors.NotFoundError:
        raise FileNotFoundError(errno.ENOENT, "no models.config", path) from None
    except tf.errors.OpError as err:
        raise OSError(errno.EIO, f"cannot read {model_config.CONFIG_FILE}: {err.message}") \
            from None
    return ("sha256", hashlib.sha256(data).hexdigest())


def _remote_listing(directory: str, what: str) -> list[tuple[str, bool]]:
    """(name, is_dir) of a URI directory's entries; [] when it does not exist."""
    import tensorflow as tf

    try:
        return [(name, tf.io.gfile.isdir(filesystems.join(directory, name)))
                for name in filesystems.listdir(directory)]
    except tf.errors.OpError as err:  # not "no versions": the caller keeps what it has
        raise OSError(errno.EIO, f"cannot list {what}: {err.message}") from None


def _remote_read_config(root: str) -> list[ModelConfig] | None:
    proto = model_config.read(root)
    return model_config.model_configs(proto) if proto is not None else None


def _remote_models(root: str) -> list[ModelConfig]:
    return [ModelConfig(name) for name, is_dir in _remote_listing(root, "the serving root")
            if is_dir and valid_model_name(name)]


def _remote_versions(root: str, model: str) -> dict[int, str]:
    if not valid_model_name(model):
        return {}
    model_dir = filesystems.join(root, model)
    versions: dict[int, str] = {}
    for name, is_dir in _remote_listing(model_dir, f"model directory {model}"):
        version = parse_version(name)
        if is_dir and version is not None and version not in versions:
            versions[version] = filesystems.join(model_dir, name)
    return versions


def _remote_files_stamp(path: str) -> tuple:
    import tensorflow as tf

    items: list[tuple] = []
    try:
        for directory, _dirs, files in filesystems.walk(path):
            for name in files:
                full = filesystems.join(directory, name)
                st = tf.io.gfile.stat(full)
                items.append((full[len(path):].lstrip("/"), st.length, st.mtime_nsec))
                if len(items) > _MAX_STAMP_FILES:
                    return tuple(sorted(items))
    except tf.errors.OpError:
        return ()
    return tuple(sorted(items))


class ScanError(OSError):
    """A listing of the serving root failed (``EMFILE``, ``EIO``, a missing directory, ...).

    Not the same as "no versions": the caller keeps what it has, as TF Serving's
    file-system source does when a poll fails (``file_system_storage_path_source.cc``).
    """


def _scan_error(what: str, err: OSError) -> ScanError:
    return ScanError(err.errno, f"cannot list {what}: {err.strerror or err}")


def _inside(root_real: str, path: str) -> bool:
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real + os.sep)


def read_config(serving_root: str) -> list[ModelConfig] | None:
    """The models ``models.config`` lists, or None when the root has none.

    Raises ConfigError when it is invalid or is not a regular file inside the root.
    """
    if filesystems.is_remote(serving_root):
        return _remote_read_config(serving_root)
    root = os.path.realpath(serving_root)
    path = model_config.config_path(root)
    if not os.path.lexists(path):
        return None
    if not _inside(root, path) or not os.path.isfile(path):
        raise ConfigError(f"{model_config.CONFIG_FILE} must be a regular file inside the "
                          "serving root")
    proto = model_config.read(root)
    return model_config.model_configs(proto) if proto is not None else None


def discover_models(serving_root: str) -> list[ModelConfig]:
    """Without ``models.config``: every valid model directory, served with latest 1.

    Raises :class:`ScanError` when the root cannot be listed.
    """
    if filesystems.is_remote(serving_root):
        return _remote_models(serving_root)
    root = os.path.realpath(serving_root)
    configs = []
    try:
        for entry in sorted(os.scandir(root), key=lambda e: e.name):
            if valid_model_name(entry.name) and entry.is_dir() and _inside(root, entry.path):
                configs.append(ModelConfig(entry.name))
    except OSError as err:
        raise _scan_error("the serving root", err) from None
    return configs


def scan_versions(serving_root: str, model: str) -> dict[int, str]:
    """``{version: directory}`` of a model's version directories inside the root.

    Raises :class:`ScanError` when the model directory cannot be listed (missing
    included, as TF Serving: "Could not find base path"); ``{}`` means it has no versions.
    """
    if filesystems.is_remote(serving_root):
        return _remote_versions(serving_root, model)
    root = os.path.realpath(serving_root)
    model_dir = os.path.join(root, model)
    if not valid_model_name(model) or not _inside(root, model_dir):
        return {}
    versions: dict[int, str] = {}
    try:
        for entry in sorted(os.scandir(model_dir), key=lambda e: e.name):
            version = parse_version(entry.name)
            if version is None or version in versions:
                continue
            if entry.is_dir() and _inside(root, entry.path):
                versions[version] = entry.path
    except OSError as err:
        raise _scan_error(f"model directory {model}", err) from None
    return versions


def files_stamp(path: str) -> tuple:
    """Sizes and mtimes of a version directory's files: changes when it is rewritten."""
    if filesystems.is_remote(path):
        return _remote_files_stamp(path)
    items: list[tuple] = []
    try:
        items.append(("", os.stat(path).st_mtime_ns))
    except OSError:
        return ()
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(dirpath, name)
            try:
                st = os.stat(full)
            except OSError:
                continue
            items.append((os.path.relpath(full, path), st.st_size, st.st_mtime_ns))
            if len(items) > _MAX_STAMP_FILES:
                return tuple(sorted(items))
    return tuple(sorted(items))
