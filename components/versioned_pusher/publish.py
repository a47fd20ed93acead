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

Other filesystems (a root containing "://": gs://, s3://, ram://, ...), through tf.io.gfile:
there is no atomic rename of a directory and no lock. A push uploads the SavedModel into a hidden
staging dir ``<model_root>/.tmp-<N>-...`` (ignored by TF Serving: not a version name), then moves
it file by file into ``<N>/`` (a server-side copy on object stores), ``saved_model.pb`` last:
TF Serving loads a version once its saved_model.pb exists, and by then every other file is
there. A failed or killed upload leaves at most the hidden staging dir; only a push killed during
the moves can leave a ``<N>/`` without saved_model.pb, which the pusher then ignores (it is
never "the newest version", never counts for retention) and logs. Concurrent pushers of one
model on one remote root can race for a version number: run one pusher per model at a time
(one pipeline run at a time), as the pipeline does.

Retention (``keep``) never deletes a version that may still be serving: the versions the
model's policy served before a push survive that push, and an older version is deleted only
once the version that replaced it has been published for ``retention_grace`` seconds
(default :data:`tfserving.defaults.RETENTION_GRACE_SECONDS`). TF Serving, like the local
server, serves the old version until the new one is AVAILABLE, and a graph that reads its
assets on every call needs the old directory until then.

Failures: :class:`PublishError` names the servable and the reason in one line (for the
pipeline's run summary). A read-only serving root is fine when nothing needs writing (an
unchanged re-run): the locks are then taken on read-only descriptors, or skipped where the
lock file cannot be created (no writer can exist on a read-only file system).

models.config: ``publish`` updates the model's entry by default. In the pipeline the pushers
leave it alone and one fan-in step writes every entry with :func:`write_models_config` after
all pushers (components/serving_config), so parallel branches cannot lose each other's entries.
"""

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

from tensorflow_serving.config import model_server_config_pb2

from tfserving import defaults, model_config
from tfserving.filesystems import (
    ensure_filesystem,
    fsync_dir,
    is_remote,
    join,
    listdir,
    rmtree,
)
from tfserving.filesystems import walk as gfile_walk
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


class PublishError(RuntimeError):
    """A push failed: ``servable`` names the model, the message says why in one line.

    The pipeline's local runner reads ``servable`` to report the failure as that servable's
    and to go on with the others.
    """

    def __init__(self, servable: str, message: str):
        self.servable = servable
        super().__init__(f"servable '{servable}': {message}")

    @classmethod
    def wrap(cls, servable: str, serving_root: str, error: BaseException) -> "PublishError":
        """The error for ``error`` raised while publishing ``servable`` into ``serving_root``."""
        if isinstance(error, PublishError):
            return error
        if isinstance(error, OSError) and error.errno is not None:
            name = errno.errorcode.get(error.errno, str(error.errno))
            where = f" ({os.path.basename(str(error.filename))})" if error.filename else ""
            reason = f"{error.strerror} [{name}]{where}"
        else:
            reason = " ".join(str(error).split()) or type(error).__name__
        # The reason first: run summaries shorten long lines.
        return cls(servable, f"push failed: {reason}; nothing was published to "
                             f"{os.path.join(serving_root, servable)}")

# ---------------------------------------------------------------------------- versions


def _is_remote(path: str) -> bool:
    return is_remote(path)


def _gfile():  # -> the tf.io.gfile module, imported lazily
    import tensorflow as tf

    return tf.io.gfile


def _children(path: str) -> list[tuple[str, bool]]:
    """(name, is_dir) of each entry of `path`; [] when it does not exist."""
    if _is_remote(path):
        return [(name, _gfile().isdir(join(path, name))) for name in listdir(path)]
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


def _has_saved_model(model_dir: str) -> bool:
    exists = _gfile().exists if _is_remote(model_dir) else os.path.isfile
    return any(exists(os.path.join(model_dir, f)) for f in _SAVED_MODEL_FILES)


def _complete_version_dirs(model_root: str) -> dict[int, list[str]]:
    """`_version_dirs`, without remote versions that have no saved_model.pb (yet).

    On a remote root such a directory is a push in its final moves or one killed there
    (see the module docstring): it is neither the newest version nor one to keep.
    Local versions appear whole (atomic rename) and are all counted.
    """
    dirs = _version_dirs(model_root)
    if not _is_remote(model_root):
        return dirs
    complete = {}
    for version, names in dirs.items():
        names = [n for n in names if _has_saved_model(os.path.join(model_root, n))]
        if names:
            complete[version] = names
        else:
            log.warning("%s has no saved_model.pb: an unfinished or interrupted push; ignored. "
                        "Delete it if no push is running.", os.path.join(model_root, str(version)))
    return complete


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
    """Exclusive flock on `path` (created if missing, never deleted).

    An existing lock file is opened read-only (flock needs no write access), so a read-only
    root can be checked. Where it is missing and cannot be created (read-only file system,
    no permission) no lock is taken: nobody can write there, and a push that tries fails
    on its first write.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            if err.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            log.info("No lock %s (%s): nothing can be written there.", path, err.strerror)
            yield
            return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _list_tree(root: str) -> tuple[list[str], list[str]]:
    """Relative (dirs parents first, files with saved_model.pb last) under a SavedModel dir."""
    root = root.rstrip("/")
    walk = gfile_walk(root) if _is_remote(root) else os.walk(root, followlinks=True)
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
        fsync_dir(os.path.join(dst, rel))
    fsync_dir(dst)


def _publish_remote(source_dir: str, model_root: str, version: int,
                    extras: Mapping[str, bytes] | None = None) -> str:
    """Upload to a hidden staging dir, then move file by file into `<N>/`, saved_model.pb last.

    `extras` (path inside the version -> bytes) are staged with the SavedModel's files.
    Returns the version directory. On any error, removes what it wrote and re-raises.
    """
    gfile = _gfile()
    dirs, files = _list_tree(source_dir)
    extras = dict(extras or {})
    dirs = sorted({*dirs, *(d for rel in extras for d in _parents(rel))})
    files = sorted({*files, *extras}, key=lambda f: (f in _SAVED_MODEL_FILES, f))
    staging = join(model_root, _tmp_name("", version))
    destination = join(model_root, str(version))
    try:
        for rel in ["", *dirs]:
            gfile.makedirs(join(staging, rel))
        for rel in files:
            if rel in extras:
                with gfile.GFile(join(staging, rel), "wb") as f:
                    f.write(extras[rel])
            else:
                gfile.copy(join(source_dir, rel), join(staging, rel), overwrite=True)
        for rel in ["", *dirs]:
            gfile.makedirs(join(destination, rel))
        for rel in files:  # sorted with saved_model.pb last by _list_tree
            gfile.rename(join(staging, rel), join(destination, rel), overwrite=False)
    except BaseException:
        for path in (destination, staging):
            with contextlib.suppress(Exception):
                rmtree(path)
        raise
    rmtree(staging)  # only empty directories are left in it
    return destination


def _parents(rel: str) -> list[str]:
    """'a/b/c' -> ['a', 'a/b']."""
    parts = rel.split("/")[:-1]
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _write_extra_files_local(dst: str, files: Mapping[str, bytes]) -> None:
    """Writes (or replaces) files under the new local dir `dst`, fsynced."""
    for rel, data in files.items():
        path = os.path.join(dst, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(os.path.dirname(path))
    if files:
        fsync_dir(dst)


def _write_extra_files_gfile(dst: str, files: Mapping[str, bytes]) -> None:
    gfile = _gfile()
    for rel, data in files.items():
        path = join(dst, rel)
        gfile.makedirs(os.path.dirname(path))
        with gfile.GFile(path, "wb") as f:
            f.write(data)


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
            try:
                _remove_path(os.path.join(directory, name))
            except OSError as err:  # e.g. a read-only root: hidden, TF Serving ignores it
                log.warning("Cannot remove %s: %s", os.path.join(directory, name), err)


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


def _merged_config(old, serving_root: str, updates: Sequence[tuple[str, ModelConfig | None]],
                   config_base_path: str | None):
    """`old` with the entries of `updates` replaced and unlisted model dirs added, by name.

    A None config keeps an existing entry's policy, labels and (unless config_base_path is
    given) base_path; a new entry gets the default 'latest' policy.
    """
    if old.WhichOneof("config") == "custom_model_config":
        raise ValueError(f"{model_config.config_path(serving_root)} uses custom_model_config; "
                         "cannot merge")
    updated = {name for name, _ in updates}
    entries = [e for e in old.model_config_list.config if e.name not in updated]
    for model_name, config in updates:
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
        entries.append(entry)

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


def _write_config(serving_root: str, updates: Sequence[tuple[str, ModelConfig | None]],
                  config_base_path: str | None, *, only_if_entry_changes: bool = False) -> str:
    """Read-modify-write of models.config, under the root's lock on local roots.

    Nothing is written when the merged config equals the existing one, nor, with
    only_if_entry_changes, when the updated entries are already exactly as wanted.
    """
    lock = (contextlib.nullcontext() if _is_remote(serving_root)
            else _flock(os.path.join(serving_root, CONFIG_LOCK_FILENAME)))
    with lock:
        if not _is_remote(serving_root):  # safe: their writers held this lock
            _remove_leftovers(serving_root, model_config.leftover_prefix())
        old = model_config.read(serving_root)
        merged = _merged_config(old or model_server_config_pb2.ModelServerConfig(), serving_root,
                                updates, config_base_path)
        if old is not None:
            if merged == old:
                return model_config.config_path(serving_root)  # unchanged: no TF Serving reload
            if only_if_entry_changes and all(_entries(old, name) == _entries(merged, name)
                                             for name, _ in updates):
                return model_config.config_path(serving_root)
        return model_config.write(serving_root, merged)


def write_models_config(serving_root: str, configs: Sequence[ModelConfig], *,
                        config_base_path: str | None = None) -> str:
    """Writes the entries of `configs` into `<serving_root>/models.config` in one go.

    The pipeline's one models.config writer (after every pusher). A model gets its entry
    only once it has a version; other models' entries are kept as they are, and model dirs
    with versions but no entry get a default ('latest') one. `config_base_path` as in
    :func:`publish`. Nothing is written when the file would not change. Locked on local
    roots (two runs on one disk); on remote roots it relies on being the only writer.
    """
    ensure_filesystem(serving_root)
    for config in configs:
        _check_model_name(config.name)
    if not _is_remote(serving_root):
        os.makedirs(serving_root, exist_ok=True)
    updates = [(c.name, c) for c in configs
               if _complete_version_dirs(os.path.join(serving_root, c.name))]
    return _write_config(serving_root, updates, config_base_path)


def serving_state(serving_root: str, model_name: str) -> str:
    """Short sha256 of the model's version names and its own models.config entry.

    Meant as a cache-key parameter: it changes whenever what is published for
    this model changed, and not when another model is pushed ("" if nothing).
    """
    ensure_filesystem(serving_root)
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


def _served_before(serving_root: str, model_name: str, config: ModelConfig | None,
                   versions: set[int]) -> set[int]:
    """Versions the model's policy serves now (before the push): they survive the push.

    'latest N' (the default): the N newest; 'specific': its versions; 'all': the newest
    only (with 'all', `keep` is what chooses the versions to serve).
    """
    if config is None:
        try:
            entries = model_config.model_configs(model_config.read(serving_root) or
                                                 model_server_config_pb2.ModelServerConfig())
        except Exception:  # noqa: BLE001 - validated (and reported) by protected_versions
            entries = []
        config = next((e for e in entries if e.name == model_name), ModelConfig(model_name))
    if not versions:
        return set()
    if config.policy.kind == "all":
        return {max(versions)}
    return config.policy.select(versions)


def _published_at(version_dir: str) -> float | None:
    """When a version was published: its saved_model.pb's mtime (written last), or None."""
    for name in _SAVED_MODEL_FILES:
        path = os.path.join(version_dir, name)
        try:
            if _is_remote(version_dir):
                return _gfile().stat(path).mtime_nsec / 1e9
            return os.stat(path).st_mtime
        except Exception:  # noqa: BLE001 - missing or unreadable: try the next name
            continue
    return None


def _apply_retention(model_root: str, keep: int, protected: set[int],
                     grace_seconds: float = 0.0) -> tuple[int, ...]:
    """Deletes versions beyond the newest `keep`, except `protected` ones and those whose
    successor was published less than `grace_seconds` ago (TF Serving may still serve them).

    A version that cannot be deleted is logged and left for the next push: the push itself
    has succeeded.
    """
    dirs = _complete_version_dirs(model_root)
    ordered = sorted(dirs)
    doomed = []
    now = time.time()
    for index, version in enumerate(ordered[:-keep]):
        if version in protected:
            continue
        if grace_seconds > 0:
            successor = ordered[index + 1]
            published = _published_at(os.path.join(model_root, dirs[successor][0]))
            if published is None or now - published < grace_seconds:
                log.info("Keeping version %d of %s: version %d replaced it less than %gs ago "
                         "(it may still be serving).", version, model_root, successor,
                         grace_seconds)
                continue
        doomed.append(version)
    if not doomed:
        return ()
    removed = []
    if _is_remote(model_root):  # no rename on object stores
        for version in doomed:
            try:
                for name in dirs[version]:
                    rmtree(os.path.join(model_root, name))
                removed.append(version)
            except Exception as err:  # noqa: BLE001 - the push succeeded; retried next time
                log.warning("Could not remove version %d of %s: %s", version, model_root, err)
        return tuple(removed)
    trash = []
    for version in doomed:
        try:
            for name in dirs[version]:
                # Rename first: a half-deleted dir must never look like a version.
                trash.append(os.path.join(model_root, _tmp_name("delete-", version)))
                os.rename(os.path.join(model_root, name), trash[-1])
            removed.append(version)
        except OSError as err:
            log.warning("Could not remove version %d of %s: %s; the next push will retry.",
                        version, model_root, err)
    if trash:
        fsync_dir(model_root)
    for path in trash:
        shutil.rmtree(path, ignore_errors=True)
        if os.path.lexists(path):
            log.warning("Could not fully remove %s; the next push will retry.", path)
    return tuple(removed)


def publish(source_dir: str, serving_root: str, model_name: str, *,
            fingerprint: str | None = None, keep: int | None = None,
            config: ModelConfig | None = None,
            config_base_path: str | None = None, write_config: bool = True,
            extra_files: Callable[[int], Mapping[str, bytes]] | None = None,
            retention_grace: float | None = None) -> PublishResult:
    """Publish the SavedModel at `source_dir` as the next version of `model_name`.

    Skips the push (reason "unchanged") when the newest version has the same fingerprint
    (`fingerprint`, else read from source_dir). After a push, `keep` deletes the oldest versions
    beyond the newest `keep`, never a version pinned or labelled in models.config or in
    `config`, never one the model's policy served before this push, and never one replaced
    less than `retention_grace` seconds ago (default: RETENTION_GRACE_SECONDS; see the module
    docstring). Then models.config is updated: this model's entry gets `config` (None keeps an
    existing entry's policy) and base path f"{config_base_path}/{name}" (else the absolute path).
    An unchanged push only rewrites models.config if this model's entry would change.
    `write_config=False` leaves models.config to :func:`write_models_config` (the pipeline's
    fan-in writer); versions it pins or labels are protected either way.
    `extra_files(version)` gives files to add to the new version (path inside it -> bytes,
    e.g. assets.extra/openapi.json): in place before the version appears (remote roots:
    staged with the SavedModel, moved before saved_model.pb).

    Local roots: locked, atomic (temp dir + fsync + rename); a failed copy leaves the root as it
    was (apart from the model dir and its .lock file, created on the first push) and re-raises.
    Remote roots ("://"): staged upload, then moves with saved_model.pb last, no lock (see the
    module docstring).
    """
    _check_model_name(model_name)
    ensure_filesystem(source_dir)
    ensure_filesystem(serving_root)
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
            fsync_dir(serving_root)
        lock = _flock(os.path.join(model_root, LOCK_FILENAME))

    with lock:
        if not remote:
            _remove_leftovers(model_root, TMP_PREFIX)  # safe: their writers held this lock
        protected = protected_versions(serving_root, model_name)  # also validates the config
        if config is not None:
            protected |= config.pinned_versions()

        dirs = _complete_version_dirs(model_root)
        protected |= _served_before(serving_root, model_name, config, set(dirs))
        if _is_unchanged(model_root, dirs, fingerprint):
            newest = max(dirs)
            if write_config:
                _write_config(serving_root, [(model_name, config)], config_base_path,
                              only_if_entry_changes=True)
            return PublishResult(pushed=False, version=newest,
                                 destination=os.path.join(model_root, dirs[newest][0]),
                                 reason="unchanged")

        version = _next_version(model_root)
        destination = os.path.join(model_root, str(version))
        extras = dict(extra_files(version)) if extra_files else {}
        if remote:
            destination = _publish_remote(source_dir, model_root, version, extras)
        else:
            tmp = os.path.join(model_root, _tmp_name("", version))
            try:
                _copy_tree_local(source_dir, tmp)
                _write_extra_files_local(tmp, extras)
                os.rename(tmp, destination)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            fsync_dir(model_root)
        log.info("Published %s as %s", source_dir, destination)

        grace = defaults.RETENTION_GRACE_SECONDS if retention_grace is None else retention_grace
        removed = _apply_retention(model_root, keep, protected, grace) if keep else ()
        if write_config:
            _write_config(serving_root, [(model_name, config)], config_base_path)
    return PublishResult(pushed=True, version=version, destination=destination,
                         reason="pushed", removed_versions=removed)
