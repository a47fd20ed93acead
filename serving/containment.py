"""Nothing outside the serving root: version trees are checked, error texts lose server paths.

:mod:`serving.source` already refuses model and version directories that resolve outside
the root. A version directory inside it can still hold symlinks to elsewhere
(``saved_model.pb``, ``variables/``, an asset), at any depth; TensorFlow would follow
them, load a model from outside the root and, for assets a graph reads on every call,
return that file's contents in predictions. :func:`check_version_tree` walks the whole
version directory (following symlinks, with a guard against cycles) and refuses the
version when any entry resolves outside the root, unless the operator opted in
(``--allow-symlinks-outside-root``). The check runs before every load; between it and
TensorFlow's reads the tree is trusted not to change (the root is written by the pusher,
atomically). Hard links cannot be told from ordinary files and are not refused.

Errors from loading and calling a model carry file paths (``.../1/assets/labels.txt;
No such file or directory``); :func:`public_message` turns paths under the root into
paths relative to it (``mobilenet_v2_test/1/assets/labels.txt``) and any other absolute
path into ``<path>``, so error bodies never show the server's file system.
"""

from __future__ import annotations

import logging
import os
import re

from tfserving.status import ServingError

log = logging.getLogger("serving")

ALLOW_FLAG = "--allow-symlinks-outside-root"

# An absolute path of at least two components, not part of a URL or a relative path.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/(?:[^\s/'\"`:;,()\[\]{}<>|]+/)+"
                            r"[^\s/'\"`:;,()\[\]{}<>|]*")


class OutsideRootError(ServingError):
    """A version has an entry that resolves outside the serving root."""

    def __init__(self, message: str):
        super().__init__("FAILED_PRECONDITION", message)


def _inside(root_real: str, real: str) -> bool:
    return real == root_real or real.startswith(root_real + os.sep)


def check_version_tree(serving_root: str, version_dir: str, *, model: str = "",
                       version: int | None = None, allow_outside: bool = False) -> None:
    """Raises :class:`OutsideRootError` if any entry of ``version_dir`` resolves outside
    ``serving_root`` (nothing is checked with ``allow_outside``)."""
    if allow_outside:
        return
    root = os.path.realpath(serving_root)
    top = os.path.realpath(version_dir)
    what = f"version {version} of model {model}" if model else "version directory"
    visited: set[str] = set()

    def refuse(entry: str, target: str) -> None:
        rel = os.path.relpath(entry, version_dir)
        log.warning("%s: %s resolves to %s, outside the serving root %s; not loading it",
                    what, entry, target, root)
        raise OutsideRootError(
            f"Refusing {what}: its entry '{rel}' resolves outside the serving root (a "
            f"symlink). Start the server with {ALLOW_FLAG} to serve it.")

    if not _inside(root, top):
        refuse(version_dir, top)
    for dirpath, dirnames, filenames in os.walk(version_dir, followlinks=True):
        real_dir = os.path.realpath(dirpath)
        if not _inside(root, real_dir):
            refuse(dirpath, real_dir)
        if real_dir in visited:  # a symlink cycle, or a directory linked twice
            dirnames[:] = []
            continue
        visited.add(real_dir)
        for name in filenames + dirnames:
            entry = os.path.join(dirpath, name)
            if os.path.islink(entry):
                target = os.path.realpath(entry)
                if not _inside(root, target):
                    refuse(entry, target)


def public_message(text: str, serving_root: str) -> str:
    """``text`` with paths under the root made relative to it, other absolute paths hidden."""
    prefixes = {os.path.realpath(serving_root), os.path.abspath(serving_root),
                serving_root.rstrip(os.sep)}
    for prefix in sorted((p for p in prefixes if p and p != os.sep), key=len, reverse=True):
        text = text.replace(prefix + os.sep, "")
    return _ABSOLUTE_PATH.sub("<path>", text)


def public_error(err: ServingError, serving_root: str) -> ServingError:
    """``err`` with :func:`public_message` applied (the same object if nothing changed)."""
    message = public_message(err.message, serving_root)
    if message == err.message:
        return err
    return ServingError(err.code, message, http_status=err.http_status)
