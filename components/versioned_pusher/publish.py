"""Publish SavedModels into a TensorFlow Serving model root, one complete version at a time.

Layout (TensorFlow Serving rules)::

    <serving_root>/models.config              text-format ModelServerConfig (all models)
    <serving_root>/<model_name>/<N>/saved_model.pb, variables/, ...
    <serving_root>/<model_name>/.lock         flock(2) lock of this model (local roots only)
    <serving_root>/<model_name>/.tmp-*        a push or a deletion in progress (or crashed)

A child directory of the model root is a version when its whole name parses as an int64 (see
`parse_version`); everything else is ignored by TF Serving. TF Serving polls the model root and
loads a version as soon as its directory appears, so a version must appear complete.

Local roots: a push copies the SavedModel into a non-numeric temp dir beside the versions, fsyncs
every file and directory, then os.rename()s it to its number (atomic on one filesystem) and fsyncs
the model root. All of it happens under an exclusive flock on ``<model_root>/.lock``, so concurrent
pushers of one model get distinct versions, and temp dirs left behind by a crashed (SIGKILLed)
push are safely removed by the next push: a live push holds the lock while its temp dir exists.
flock needs a local filesystem (or NFS with working locks).

Object stores (a root containing "://", e.g. gs://, s3://): there is no atomic rename and no lock.
Files are copied with tf.io.gfile straight into ``<N>/``, ``saved_model.pb`` last (as TFX's stock
Pusher does), so TF Serving may see the version dir before it is complete and retries the load once
saved_model.pb exists. Concurrent pushers of one model can race for the same version number, a
crashed push leaves a partial version behind, and the read-modify-write of models.config is not
protected: run at most one pusher per remote serving root at a time.
"""

import contextlib
import dataclasses
import fcntl
import hashlib
import logging
import os
import secrets
import shutil
from collections.abc import Iterator

from tensorflow_serving.config import model_server_config_pb2

from tfserving import model_config
from tfserving.fingerprint import servable_fingerprint
from tfserving.layout import INT64_MAX, parse_version, valid_model_name
from tfserving.model_config import ModelConfig

log = logging.getLogger(__name__)

LOCK_FILENAME = ".lock"
CONFIG_LOCK_FILENAME = ".models.config.lock"
TMP_PREFIX = ".tmp-"
_SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")



@dataclasses.dataclass(frozen=True)
class PublishResult:
    """What publish() did."""

    pushed: bool
    version: int | None  # the new version, or the existing one when unchanged
    destination: str  # <serving_root>/<name>/<version> ('' when nothing exists)
    reason: str  # "pushed" | "unchanged" | "not_blessed: <why>"
    removed_versions: tuple[int, ...] = ()  # deleted by retention

# ---------------------------------------------------------------------------- versions


def _is_remote(path: str) -> bool:
    return "://" in path


def _gfile():  # -> the tf.io.gfile module, imported lazily
    import tensorflow as tf

    return tf.io.gfile


def _children(path: str) -> list[tuple[str, bool]]:
    """(name, is_dir) of each entry of `path`; [] when it does not exist."""
    if _is_remote(path):
        gfile = _gfile()
        if not gfile.isdir(path):
            return []
        names = {name.rstrip("/") for name in gfile.listdir(path)}
        return [(name, gfile.isdir(os.path.join(path, name))) for name in sorted(names)]
    try:
        with os.scandir(path) as entries:
            return sorted((e.name, e.is_dir()) for e in entries)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _version_dirs(model_root: str) -> dict[int, list[str]]:
    """version -> directory name(s); several names can parse to one version ('7', '007')."""
    dirs: dict[int, list[str]] = {}
    for name, is_dir in _children(model_root):
        version = parse_version(name)
        if version is not None and is_dir:
            dirs.setdefault(version, []).append(name)
    return dirs


def list_versions(model_root: str) -> list[int]:
    """Sorted versions under `model_root`, non-version entries ignored as TF Serving does."""
    return sorted(_version_dirs(model_root))


def _fingerprint_or_none(model_dir: str) -> str | None:
    try:
        return servable_fingerprint(model_dir)
    except Exception as e:  # unreadable counts as "different"
        log.warning("Cannot read the fingerprint of %s (%s); treating it as different.",
                    model_dir, e)
        return None


# ---------------------------------------------------------------------------- local file ops


@contextlib.contextmanager
def _flock(path: str) -> Iterator[None]:
    """Exclusive flock on `path` (created if missing, never deleted)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _list_tree(root: str) -> tuple[list[str], list[str]]:
    """Relative (dirs parents first, files with saved_model.pb last) under a SavedModel dir."""
    root = root.rstrip("/")
    walk = _gfile().walk(root) if _is_remote(root) else os.walk(root, followlinks=True)
    dirs: list[str] = []
    files: list[str] = []
    for dirpath, _, filenames in walk:
        rel = dirpath[len(root):].strip("/")
        if rel:
            dirs.append(rel)
        files.extend(os.path.join(rel, f.rstrip("/")) if rel else f for f in filenames)
    dirs.sort()
    files.sort(key=lambda f: (f in _SAVED_MODEL_FILES, f))
    return dirs, files


def _copy_file(src: str, dst: str) -> None:
    """Copy one file to a new local file and fsync it."""
    with contextlib.ExitStack() as stack:
        if _is_remote(src):
            fin = stack.enter_context(_gfile().GFile(src, "rb"))
        else:
            fin = stack.enter_context(open(src, "rb"))
        fout = stack.enter_context(open(dst, "xb"))
        shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
        os.fsync(fout.fileno())


def _copy_tree_local(source_dir: str, dst: str) -> None:
    """Copy the SavedModel into the new local dir `dst`; fsync files, then dirs bottom-up."""
    dirs, files = _list_tree(source_dir)
    os.mkdir(dst)
    for rel in dirs:
        os.makedirs(os.path.join(dst, rel), exist_ok=True)
    for rel in files:
        _copy_file(os.path.join(source_dir, rel), os.path.join(dst, rel))
    for rel in reversed(dirs):
        _fsync_dir(os.path.join(dst, rel))
    _fsync_dir(dst)


def _copy_tree_gfile(source_dir: str, dst: str) -> None:
    """Copy the SavedModel to `dst` with tf.io.gfile, saved_model.pb last."""
    gfile = _gfile()
    dirs, files = _list_tree(source_dir)
    gfile.makedirs(dst)
    for rel in dirs:
        gfile.makedirs(os.path.join(dst, rel))
    for rel in files:
        gfile.copy(os.path.join(source_dir, rel), os.path.join(dst, rel), overwrite=True)


def _remove_path(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _remove_leftovers(directory: str, prefix: str) -> None:
    """Remove `prefix`* entries: only call while holding the lock their writers hold."""
    for name, _ in _children(directory):
        if name.startswith(prefix):
            log.warning("Removing leftover %s from an interrupted push.",
                        os.path.join(directory, name))
            _remove_path(os.path.join(directory, name))


def _tmp_name(kind: str, version: int) -> str:
    return f"{TMP_PREFIX}{kind}{version}-{os.getpid()}-{secrets.token_hex(4)}"


# ---------------------------------------------------------------------------- models.config


def protected_versions(serving_root: str, model_name: str) -> set[int]:
    """Versions of `model_name` that models.config pins ('specific' policy) or labels."""
    config = model_config.read(serving_root)
    entries = model_config.model_configs(config) if config is not None else []
    return set().union(*(e.pinned_versions() for e in entries if e.name == model_name))


def _entry_base_path(serving_root: str, model_name: str, config_base_path: str | None) -> str:
    if config_base_path is not None:
        return f"{config_base_path.rstrip('/')}/{model_name}"
    model_root = os.path.join(serving_root, model_name)
    return model_root if _is_remote(model_root) else os.path.abspath(model_root)


def _entries(config, name: str) -> list:
    return [e for e in config.model_config_list.config if e.name == name]


def _merged_config(old, serving_root: str, model_name: str, config: ModelConfig | None,
                   config_base_path: str | None):
    """`old` with this model's entry replaced and unlisted model dirs added, sorted by name.

    config=None keeps an existing entry's policy, labels and (unless config_base_path is given)
    base_path; a new entry gets the default 'latest' policy.
    """
    if old.WhichOneof("config") == "custom_model_config":
        raise ValueError(f"{model_config.config_path(serving_root)} uses custom_model_config; "
                         "cannot merge")
    others = [e for e in old.model_config_list.config if e.name != model_name]
    current = _entries(old, model_name)

    entry = model_server_config_pb2.ModelConfig()
    if current:
        entry.CopyFrom(current[-1])  # keeps fields we do not manage (e.g. logging_config)
    base_path = _entry_base_path(serving_root, model_name, config_base_path)
    if config is None and current:
        if config_base_path is not None:
            entry.base_path = base_path
    else:
        dataclasses.replace(config or ModelConfig(model_name), name=model_name,
                            base_path=base_path).fill(entry)

    entries = [*others, entry]
    known = {e.name for e in entries}
    for name, is_dir in _children(serving_root):
        if (is_dir and name not in known and not name.startswith(".")
                and list_versions(os.path.join(serving_root, name))):
            added = model_server_config_pb2.ModelConfig()
            ModelConfig(name, _entry_base_path(serving_root, name, config_base_path)).fill(added)
            entries.append(added)

    merged = model_server_config_pb2.ModelServerConfig()
    merged.model_config_list.config.extend(sorted(entries, key=lambda e: e.name))
    return merged


def _write_config(serving_root: str, model_name: str, config: ModelConfig | None,
                  config_base_path: str | None, *, only_if_entry_changes: bool = False) -> str:
    """Read-modify-write of models.config, under the root's lock on local roots.

    Nothing is written when the merged config equals the existing one, nor, with
    only_if_entry_changes, when this model's entry is already exactly as wanted.
    """
    lock = (contextlib.nullcontext() if _is_remote(serving_root)
            else _flock(os.path.join(serving_root, CONFIG_LOCK_FILENAME)))
    with lock:
        if not _is_remote(serving_root):  # safe: their writers held this lock
            _remove_leftovers(serving_root, model_config.leftover_prefix())
        old = model_config.read(serving_root)
        merged = _merged_config(old or model_server_config_pb2.ModelServerConfig(), serving_root,
                                model_name, config, config_base_path)
        if old is not None:
            if merged == old:
                return model_config.config_path(serving_root)  # unchanged: no TF Serving reload
            if only_if_entry_changes and _entries(old, model_name) == _entries(merged, model_name):
                return model_config.config_path(serving_root)
        return model_config.write(serving_root, merged)


def serving_state(serving_root: str, model_name: str) -> str:
    """Short sha256 of the model's version names and its own models.config entry.

    Meant as a cache-key parameter: it changes whenever what is published for
    this model changed, and not when another model is pushed ("" if nothing).
    """
    versions = list_versions(os.path.join(serving_root, model_name))
    try:
        config = model_config.read(serving_root)
    except Exception:  # noqa: BLE001 - an unreadable config is a state of its own
        config = None
        entry = b"unreadable"
    else:
        entry = b"".join(c.SerializeToString(deterministic=True)
                         for c in (config.model_config_list.config if config else [])
                         if c.name == model_name)
    if not versions and not entry:
        return ""
    digest = hashlib.sha256()
    digest.update(("versions:" + ",".join(map(str, versions)) + "\n").encode())
    digest.update(b"entry:" + entry)
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------- publish


def _check_model_name(model_name: str) -> None:
    if not valid_model_name(model_name) or model_name == model_config.CONFIG_FILE:
        raise ValueError(f"invalid model name {model_name!r}")


def _source_fingerprint(source_dir: str) -> str | None:
    try:
        return servable_fingerprint(source_dir)
    except FileNotFoundError:
        log.warning("%s has no fingerprint.pb; it will be pushed without an unchanged-check.",
                    source_dir)
        return None


def _is_unchanged(model_root: str, dirs: dict[int, list[str]], fingerprint: str | None) -> bool:
    if fingerprint is None or not dirs:
        return False
    newest = dirs[max(dirs)]
    return all(_fingerprint_or_none(os.path.join(model_root, n)) == fingerprint for n in newest)


def _next_version(model_root: str) -> int:
    # Numeric *files* count too, so the rename target can never already exist.
    taken = [v for v in (parse_version(n) for n, _ in _children(model_root)) if v is not None]
    version = max(taken, default=0) + 1
    if version > INT64_MAX:
        raise ValueError(f"{model_root}: no version number left after {INT64_MAX}")
    return version


def _apply_retention(model_root: str, keep: int, protected: set[int]) -> tuple[int, ...]:
    dirs = _version_dirs(model_root)
    doomed = tuple(v for v in sorted(dirs)[:-keep] if v not in protected)
    if not doomed:
        return ()
    if _is_remote(model_root):  # no rename on object stores
        for version in doomed:
            for name in dirs[version]:
                _gfile().rmtree(os.path.join(model_root, name))
        return doomed
    trash = []
    for version in doomed:
        for name in dirs[version]:
            # Rename first: a half-deleted dir must never look like a version.
            trash.append(os.path.join(model_root, _tmp_name("delete-", version)))
            os.rename(os.path.join(model_root, name), trash[-1])
    _fsync_dir(model_root)
    for path in trash:
        shutil.rmtree(path, ignore_errors=True)
        if os.path.lexists(path):
            log.warning("Could not fully remove %s; the next push will retry.", path)
    return doomed


def publish(source_dir: str, serving_root: str, model_name: str, *,
            fingerprint: str | None = None, keep: int | None = None,
            config: ModelConfig | None = None,
            config_base_path: str | None = None) -> PublishResult:
    """Publish the SavedModel at `source_dir` as the next version of `model_name`.

    Skips the push (reason "unchanged") when the newest version has the same fingerprint
    (`fingerprint`, else read from source_dir). After a push, `keep` deletes the oldest versions
    beyond the newest `keep`, never a version pinned or labelled in models.config or in
    `config`. Then models.config is updated: this model's entry gets `config` (None keeps an
    existing entry's policy) and base path f"{config_base_path}/{name}" (else the absolute path).
    An unchanged push only rewrites models.config if this model's entry would change.

    Local roots: locked, atomic (temp dir + fsync + rename); a failed copy leaves the root as it
    was (apart from the model dir and its .lock file, created on the first push) and re-raises.
    Remote roots ("://"): gfile copy, saved_model.pb last, no lock (see the module docstring).
    """
    _check_model_name(model_name)
    if keep is not None and keep < 1:
        raise ValueError(f"keep must be >= 1, not {keep}")
    remote = _is_remote(serving_root)
    exists = _gfile().exists if _is_remote(source_dir) else os.path.isfile
    if not any(exists(os.path.join(source_dir, f)) for f in _SAVED_MODEL_FILES):
        raise ValueError(f"{source_dir} is not a SavedModel directory (no saved_model.pb)")
    if fingerprint is None:
        fingerprint = _source_fingerprint(source_dir)

    model_root = os.path.join(serving_root, model_name)
    if remote:
        _gfile().makedirs(model_root)
        lock = contextlib.nullcontext()
    else:
        os.makedirs(serving_root, exist_ok=True)
        if not os.path.isdir(model_root):
            os.makedirs(model_root, exist_ok=True)
            _fsync_dir(serving_root)
        lock = _flock(os.path.join(model_root, LOCK_FILENAME))

    with lock:
        if not remote:
            _remove_leftovers(model_root, TMP_PREFIX)  # safe: their writers held this lock
        protected = protected_versions(serving_root, model_name)  # also validates the config
        if config is not None:
            protected |= config.pinned_versions()

        dirs = _version_dirs(model_root)
        if _is_unchanged(model_root, dirs, fingerprint):
            newest = max(dirs)
            _write_config(serving_root, model_name, config, config_base_path,
                          only_if_entry_changes=True)
            return PublishResult(pushed=False, version=newest,
                                 destination=os.path.join(model_root, dirs[newest][0]),
                                 reason="unchanged")

        version = _next_version(model_root)
        destination = os.path.join(model_root, str(version))
        if remote:
            try:
                _copy_tree_gfile(source_dir, destination)
            except BaseException:
                with contextlib.suppress(Exception):
                    _gfile().rmtree(destination)
                raise
        else:
            tmp = os.path.join(model_root, _tmp_name("", version))
            try:
                _copy_tree_local(source_dir, tmp)
                os.rename(tmp, destination)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            _fsync_dir(model_root)
        log.info("Published %s as %s", source_dir, destination)

        removed = _apply_retention(model_root, keep, protected) if keep else ()
        _write_config(serving_root, model_name, config, config_base_path)
    return PublishResult(pushed=True, version=version, destination=destination,
                         reason="pushed", removed_versions=removed)
