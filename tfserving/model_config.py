"""``models.config``: TF Serving's ModelServerConfig, one reader and one writer.

The file is the text proto TF Serving reads with ``--model_config_file``
(``tensorflow_serving/config/model_server_config.proto``). Each entry names a
model, its ``base_path``, a ``model_version_policy`` (``latest {num_versions}``
(default 1), ``all {}`` or ``specific {versions}``) and ``version_labels``.
The pusher writes it, the server reads it, both through this module and
``tf.io.gfile`` (so the root may be local or a bucket).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import types
from collections.abc import Iterable, Mapping

from tfserving.filesystems import fsync_dir
from tfserving.layout import INT64_MAX, MODEL_NAME, valid_model_name

CONFIG_FILE = "models.config"
POLICIES = ("latest", "all", "specific")
# A models.config larger than this is refused: it would be a mistake, not a config.
MAX_CONFIG_BYTES = 4 * 1024 * 1024
_TMP_PREFIX = ".models.config.tmp-"


class ConfigError(ValueError):
    """``models.config`` is unreadable or invalid."""


def check_version(version: object) -> int:
    """``version`` as an int64 version number; ValueError otherwise."""
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= INT64_MAX:
        raise ValueError(f"a version must be an int in [0, 2**63-1], not {version!r}")
    return version


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    """TF Serving's ServableVersionPolicy: ``latest`` (n), ``all`` or ``specific``."""

    kind: str = "latest"
    num_versions: int = 1  # for "latest"
    versions: tuple[int, ...] = ()  # for "specific"

    def __post_init__(self) -> None:
        if self.kind not in POLICIES:
            raise ValueError(f"version_policy must be one of {POLICIES}, not {self.kind!r}")
        versions = tuple(sorted({check_version(v) for v in self.versions}))
        if self.kind == "specific" and not versions:
            raise ValueError("version_policy 'specific' needs at least one version")
        if self.kind != "specific" and versions:
            raise ValueError(f"versions are only allowed with 'specific', not {self.kind!r}")
        object.__setattr__(self, "versions", versions)

    def select(self, available: Iterable[int]) -> set[int]:
        """The versions to serve out of those ``available``."""
        ordered = sorted(available)
        if self.kind == "all":
            return set(ordered)
        if self.kind == "specific":
            return set(ordered) & set(self.versions)
        return set(ordered[-max(1, self.num_versions):]) if ordered else set()


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """One model entry of ``models.config``."""

    name: str
    base_path: str = ""
    policy: VersionPolicy = VersionPolicy()
    labels: Mapping[str, int] = dataclasses.field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        labels = {}
        for label, version in sorted(dict(self.labels).items()):
            if not isinstance(label, str) or not label:
                raise ValueError(f"version label must be a non-empty string, not {label!r}")
            labels[label] = check_version(version)
        object.__setattr__(self, "labels", types.MappingProxyType(labels))

    def pinned_versions(self) -> set[int]:
        """Versions named explicitly ('specific' versions and label targets)."""
        return set(self.policy.versions) | set(self.labels.values())

    def fill(self, entry) -> None:
        """Sets this model's fields on a ``ModelConfig`` proto ``entry``.

        Fields this project does not manage (e.g. ``logging_config``) are kept.
        """
        entry.name = self.name
        entry.base_path = self.base_path
        entry.ClearField("model_type")  # deprecated; TF Serving rejects it next to model_platform
        entry.model_platform = "tensorflow"
        entry.ClearField("model_version_policy")
        policy = entry.model_version_policy
        if self.policy.kind == "latest":
            policy.latest.SetInParent()
            if self.policy.num_versions != 1:
                policy.latest.num_versions = self.policy.num_versions
        elif self.policy.kind == "all":
            policy.all.SetInParent()
        else:
            policy.specific.versions.extend(self.policy.versions)
        entry.ClearField("version_labels")
        entry.version_labels.update(self.labels)


def parse(text: str):
    """A ``ModelServerConfig`` proto from its text form; ConfigError if it is not one."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    proto = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as err:
        raise ConfigError(f"{CONFIG_FILE} is not a valid ModelServerConfig: {err}") from None
    return proto


def model_configs(proto) -> list[ModelConfig]:
    """The validated entries of a ``ModelServerConfig`` proto."""
    if proto.WhichOneof("config") == "custom_model_config":
        raise ConfigError(f"{CONFIG_FILE}: custom_model_config is not supported")
    configs: list[ModelConfig] = []
    seen: set[str] = set()
    for entry in proto.model_config_list.config:
        name = entry.name
        if not valid_model_name(name):
            raise ConfigError(f"{CONFIG_FILE}: invalid model name {name!r} (must match "
                              f"{MODEL_NAME.pattern})")
        if name in seen:
            raise ConfigError(f"{CONFIG_FILE}: model {name!r} is listed twice")
        seen.add(name)
        if entry.model_platform not in ("", "tensorflow"):
            raise ConfigError(f"{CONFIG_FILE}: model {name!r}: unsupported model_platform "
                              f"{entry.model_platform!r} (only 'tensorflow')")
        choice = entry.model_version_policy
        which = choice.WhichOneof("policy_choice")
        try:
            if which == "all":
                policy = VersionPolicy("all")
            elif which == "specific":
                policy = VersionPolicy("specific", versions=tuple(choice.specific.versions))
            else:
                policy = VersionPolicy("latest", num_versions=choice.latest.num_versions or 1)
            configs.append(ModelConfig(name, entry.base_path, policy,
                                       dict(entry.version_labels)))
        except ValueError as err:
            raise ConfigError(f"{CONFIG_FILE}: model {name!r}: {err}") from None
    return configs


def config_path(serving_root: str) -> str:
    """Where ``models.config`` lives in a serving root."""
    return os.path.join(serving_root, CONFIG_FILE)


def read(serving_root: str, *, max_bytes: int = MAX_CONFIG_BYTES):
    """The root's ``models.config`` as a proto, or None when there is none.

    Raises ConfigError when it is too large, not UTF-8 or not a ModelServerConfig.
    """
    import tensorflow as tf

    path = config_path(serving_root)
    if not tf.io.gfile.exists(path):
        return None
    if tf.io.gfile.isdir(path):
        raise ConfigError(f"{CONFIG_FILE} must be a file, not a directory")
    with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ConfigError(f"{CONFIG_FILE} is larger than {max_bytes} bytes")
    try:
        return parse(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{CONFIG_FILE} is not UTF-8 text") from None


def write(serving_root: str, proto) -> str:
    """Replaces ``models.config`` with ``proto``, atomically; returns its path.

    Local roots: temp file, fsync, ``os.replace``, fsync of the directory. Other
    filesystems: a whole new object renamed over the old one, so readers never
    see a partial file (and ``ram://``, which appends on reopen, is safe too).
    The caller serialises writers (the pusher holds a lock on local roots).
    """
    from google.protobuf import text_format

    data = text_format.MessageToString(proto).encode("utf-8")
    path = config_path(serving_root)
    tmp = os.path.join(serving_root, f"{_TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}")
    if "://" in serving_root:
        import tensorflow as tf

        try:
            with tf.io.gfile.GFile(tmp, "wb") as f:
                f.write(data)
            tf.io.gfile.rename(tmp, path, overwrite=True)
        except BaseException:
            with contextlib.suppress(Exception):
                tf.io.gfile.remove(tmp)
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
    fsync_dir(serving_root)
    return path


def leftover_prefix() -> str:
    """Name prefix of temp files a crashed :func:`write` can leave behind."""
    return _TMP_PREFIX
