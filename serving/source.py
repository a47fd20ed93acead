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

import os

from tfserving import model_config
from tfserving.layout import parse_version, valid_model_name
from tfserving.model_config import ConfigError, ModelConfig

_MAX_STAMP_FILES = 10_000


def _inside(root_real: str, path: str) -> bool:
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real + os.sep)


def read_config(serving_root: str) -> list[ModelConfig] | None:
    """The models ``models.config`` lists, or None when the root has none.

    Raises ConfigError when it is invalid or is not a regular file inside the root.
    """
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
    """Without ``models.config``: every valid model directory, served with latest 1."""
    root = os.path.realpath(serving_root)
    configs = []
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return []
    for entry in entries:
        if valid_model_name(entry.name) and entry.is_dir() and _inside(root, entry.path):
            configs.append(ModelConfig(entry.name))
    return configs


def list_versions(serving_root: str, model: str) -> dict[int, str]:
    """``{version: directory}`` of a model's version directories inside the root."""
    root = os.path.realpath(serving_root)
    model_dir = os.path.join(root, model)
    if not valid_model_name(model) or not _inside(root, model_dir):
        return {}
    versions: dict[int, str] = {}
    try:
        entries = list(os.scandir(model_dir))
    except OSError:
        return {}
    for entry in sorted(entries, key=lambda e: e.name):
        version = parse_version(entry.name)
        if version is None or version in versions:
            continue
        if entry.is_dir() and _inside(root, entry.path):
            versions[version] = entry.path
    return versions


def files_stamp(path: str) -> tuple:
    """Sizes and mtimes of a version directory's files: changes when it is rewritten."""
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
