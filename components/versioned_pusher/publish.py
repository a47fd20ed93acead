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
import time
import types
from collections.abc import Iterator, Mapping

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from tfserving.fingerprint import servable_fingerprint
from tfserving.layout import INT64_MAX, parse_version, valid_model_name

log = logging.getLogger(__name__)

CONFIG_FILENAME = "models.config"
LOCK_FILENAME = ".lock"
CONFIG_LOCK_FILENAME = ".models.config.lock"
TMP_PREFIX = ".tmp-"
_CONFIG_TMP_PREFIX = ".models.config.tmp-"
_SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
_POLICIES = ("latest", "all", "specific")

# Test hook only (see _test_pause_before_rename); never set it in production.
PAUSE_BEFORE_RENAME_ENV = "TFX_SERVABLES_TEST_PAUSE_BEFORE_RENAME"


@dataclasses.dataclass(frozen=True)
class ModelPolicy:
    """How TF Serving should serve one model: its version policy and version labels."""

    version_policy: str = "latest"  # latest | all | specific
    versions: tuple[int, ...] = ()  # for "specific"
    labels: Mapping[str, int] = dataclasses.field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.version_policy not in _POLICIES:
            raise ValueError(f"version_policy must be one of {_POLICIES}, not "
                             f"{self.version_policy!r}")
        versions = tuple(sorted({_check_version(v) for v in self.versions}))
        if self.version_policy == "specific" and not versions:
            raise ValueError("version_policy 'specific' needs at least one version")
        if self.version_policy != "specific" and versions:
            raise ValueError(f"versions are only allowed with 'specific', not "
                             f"{self.version_policy!r}")
        labels = {}
        for label, version in sorted(dict(self.labels).items()):
            if not isinstance(label, str) or not label:
                raise ValueError(f"version label must be a non-empty string, not {label!r}")
            labels[label] = _check_version(version)
        object.__setattr__(self, "versions", versions)
        object.__setattr__(self, "labels", types.MappingProxyType(labels))

    def pinned_versions(self) -> set[int]:
        """Versions this policy names explicitly ('specific' versions and label targets)."""
        return set(self.versions) | set(self.labels.values())


@dataclasses.dataclass(frozen=True)
class PublishResult:
    """What publish() did."""

    pushed: bool
    version: int | None  # the new version, or the existing one when unchanged
    destination: str  # <serving_root>/<name>/<version> ('' when nothing exists)
    reason: str  # "pushed" | "unchanged" | "not_blessed: <why>"
    removed_versions: tuple[int, ...] = ()  # deleted by retention

    @classmethod
    def not_blessed(cls, why: str) -> "PublishResult":
        """The result to report when the model was not blessed and nothing was published."""
        return cls(pushed=False, version=None, destination="", reason=f"not_blessed: {why}")


# ---------------------------------------------------------------------------- versions


def _check_version(version: object) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= INT64_MAX:
        raise ValueError(f"a version must be an int in [0, 2**63-1], not {version!r}")
    return version


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


def saved_model_fingerprint(model_dir: str) -> str:
    """The SavedModel's content fingerprint (see ``components.fingerprint``)."""
    return servable_fingerprint(model_dir)


def _fingerprint_or_none(model_dir: str) -> str | None:
    try:
        return saved_model_fingerprint(model_dir)
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


def _test_pause_before_rename() -> None:
    """Test hook: with $TFX_SERVABLES_TEST_PAUSE_BEFORE_RENAME=<path>, create <path> once the
    temp dir is complete, then wait (max 10 min) until the test deletes it or kills us."""
    marker = os.environ.get(PAUSE_BEFORE_RENAME_ENV)
    if not marker:
        return
    with open(marker, "w"):
        pass
    deadline = time.monotonic() + 600
    while os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.02)


def _tmp_name(kind: str, version: int) -> str:
    return f"{TMP_PREFIX}{kind}{version}-{os.getpid()}-{secrets.token_hex(4)}"


# ---------------------------------------------------------------------------- models.config


def _config_path(serving_root: str) -> str:
    return os.path.join(serving_root, CONFIG_FILENAME)


def _read_config_bytes(serving_root: str) -> bytes | None:
    path = _config_path(serving_root)
    if _is_remote(path):
        gfile = _gfile()
        if not gfile.exists(path):
            return None
        with gfile.GFile(path, "rb") as f:
            return f.read()
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def read_models_config(serving_root: str) -> model_server_config_pb2.ModelServerConfig | None:
    """The parsed `<serving_root>/models.config`, or None if there is none.

    Raises text_format.ParseError for a malformed file (it is never silently replaced).
    """
    data = _read_config_bytes(serving_root)
    if data is None:
        return None
    return text_format.Parse(data.decode("utf-8"), model_server_config_pb2.ModelServerConfig())


def protected_versions(serving_root: str, model_name: str) -> set[int]:
    """Versions of `model_name` that models.config pins ('specific' policy) or labels."""
    config = read_models_config(serving_root)
    if config is None:
        return set()
    pinned: set[int] = set()
    for entry in config.model_config_list.config:
        if entry.name != model_name:
            continue
        policy = entry.model_version_policy
        if policy.WhichOneof("policy_choice") == "specific":
            pinned.update(policy.specific.versions)
        pinned.update(entry.version_labels.values())
    return pinned


def _entry_base_path(serving_root: str, model_name: str, config_base_path: str | None) -> str:
    if config_base_path is not None:
        return f"{config_base_path.rstrip('/')}/{model_name}"
    model_root = os.path.join(serving_root, model_name)
    return model_root if _is_remote(model_root) else os.path.abspath(model_root)


def _set_entry(entry: model_server_config_pb2.ModelConfig, name: str, base_path: str,
               policy: ModelPolicy) -> None:
    entry.name = name
    entry.base_path = base_path
    entry.ClearField("model_type")  # deprecated; TF Serving rejects it next to model_platform
    entry.model_platform = "tensorflow"
    entry.ClearField("model_version_policy")
    version_policy = entry.model_version_policy
    if policy.version_policy == "latest":
        version_policy.latest.SetInParent()
    elif policy.version_policy == "all":
        version_policy.all.SetInParent()
    else:
        version_policy.specific.versions.extend(policy.versions)
    entry.ClearField("version_labels")
    entry.version_labels.update(policy.labels)


def _entries(config: model_server_config_pb2.ModelServerConfig,
             name: str) -> list[model_server_config_pb2.ModelConfig]:
    return [e for e in config.model_config_list.config if e.name == name]


def _merged_config(old: model_server_config_pb2.ModelServerConfig, serving_root: str,
                   model_name: str, policy: ModelPolicy | None,
                   config_base_path: str | None) -> model_server_config_pb2.ModelServerConfig:
    """`old` with this model's entry replaced and unlisted model dirs added, sorted by name.

    policy=None keeps an existing entry's policy, labels and (unless config_base_path is given)
    base_path; a new entry gets the default 'latest' policy.
    """
    if old.WhichOneof("config") == "custom_model_config":
        raise ValueError(f"{_config_path(serving_root)} uses custom_model_config; cannot merge")
    others = [e for e in old.model_config_list.config if e.name != model_name]
    current = _entries(old, model_name)

    entry = model_server_config_pb2.ModelConfig()
    if current:
        entry.CopyFrom(current[-1])  # keeps fields we do not manage (e.g. logging_config)
    if policy is None and current:
        if config_base_path is not None:
            entry.base_path = _entry_base_path(serving_root, model_name, config_base_path)
    else:
        _set_entry(entry, model_name,
                   _entry_base_path(serving_root, model_name, config_base_path),
                   policy or ModelPolicy())

    entries = [*others, entry]
    known = {e.name for e in entries}
    for name, is_dir in _children(serving_root):
        if (is_dir and name not in known and not name.startswith(".")
                and list_versions(os.path.join(serving_root, name))):
            added = model_server_config_pb2.ModelConfig()
            _set_entry(added, name, _entry_base_path(serving_root, name, config_base_path),
                       ModelPolicy())
            entries.append(added)

    merged = model_server_config_pb2.ModelServerConfig()
    merged.model_config_list.config.extend(sorted(entries, key=lambda e: e.name))
    return merged


def _write_config_unlocked(serving_root: str, model_name: str, policy: ModelPolicy | None,
                           config_base_path: str | None, *, only_if_entry_changes: bool) -> str:
    """Read-modify-write models.config; the caller holds the root lock (if any).

    Nothing is written when the merged config equals the existing one, nor, with
    only_if_entry_changes, when this model's entry is already exactly as wanted.
    """
    path = _config_path(serving_root)
    old = read_models_config(serving_root)
    merged = _merged_config(old or model_server_config_pb2.ModelServerConfig(), serving_root,
                            model_name, policy, config_base_path)
    if old is not None:
        if merged == old:
            return path  # nothing changed: do not make TF Serving reload
        if only_if_entry_changes and _entries(old, model_name) == _entries(merged, model_name):
            return path
    data = text_format.MessageToString(merged).encode("utf-8")
    tmp = os.path.join(serving_root, f"{_CONFIG_TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}")
    if _is_remote(path):
        # A whole new object, then a server-side copy over models.config: readers never see a
        # partial file (and some filesystems, e.g. ram://, append when reopening a file).
        gfile = _gfile()
        try:
            with gfile.GFile(tmp, "wb") as f:
                f.write(data)
            gfile.rename(tmp, path, overwrite=True)
        except BaseException:
            with contextlib.suppress(Exception):
                gfile.remove(tmp)
            raise
        return path
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(serving_root)
    return path


def _write_config(serving_root: str, model_name: str, policy: ModelPolicy | None,
                  config_base_path: str | None, *, only_if_entry_changes: bool = False) -> str:
    def write() -> str:
        return _write_config_unlocked(serving_root, model_name, policy, config_base_path,
                                      only_if_entry_changes=only_if_entry_changes)

    if _is_remote(serving_root):
        return write()
    with _flock(os.path.join(serving_root, CONFIG_LOCK_FILENAME)):
        _remove_leftovers(serving_root, _CONFIG_TMP_PREFIX)  # safe: their writers held it
        return write()


def write_models_config(serving_root: str, model_name: str, policy: ModelPolicy,
                        base_path: str | None = None) -> str:
    """Set `model_name`'s entry in `<serving_root>/models.config`; returns the config path.

    Other models' entries are kept as they are; model dirs with versions but no entry get a
    default ('latest') entry. `base_path` is the serving root as the server sees it (e.g.
    "/models" in a container): entries then use f"{base_path}/{name}", else the absolute local
    path. Atomic (temp file + fsync + os.replace) and locked on local roots.
    """
    _check_model_name(model_name)
    if _is_remote(serving_root):
        return _write_config(serving_root, model_name, policy, base_path)
    os.makedirs(serving_root, exist_ok=True)
    model_root = os.path.join(serving_root, model_name)
    # Hold the model lock too, so a concurrent push's retention sees the new pins.
    model_lock = (_flock(os.path.join(model_root, LOCK_FILENAME)) if os.path.isdir(model_root)
                  else contextlib.nullcontext())
    with model_lock:
        return _write_config(serving_root, model_name, policy, base_path)


def serving_state(serving_root: str, model_name: str) -> str:
    """Short sha256 of the model's version names and its own models.config entry.

    Meant as a cache-key parameter: it changes whenever what is published for
    this model changed, and not when another model is pushed ("" if nothing).
    """
    versions = list_versions(os.path.join(serving_root, model_name))
    try:
        config = read_models_config(serving_root)
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
    if not valid_model_name(model_name) or model_name == CONFIG_FILENAME:
        raise ValueError(f"invalid model name {model_name!r}")


def _source_fingerprint(source_dir: str) -> str | None:
    try:
        return saved_model_fingerprint(source_dir)
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
            config: ModelPolicy | None = None,
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
                _test_pause_before_rename()
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
