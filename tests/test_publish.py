"""publish.py: versions appear complete, crashes leave no versions, retention, models.config."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from components.versioned_pusher import publish as pub
from components.versioned_pusher.publish import (
    PublishResult,
    list_versions,
    parse_version,
    protected_versions,
    publish,
    serving_state,
)
from tfserving import model_config
from tfserving.fingerprint import servable_fingerprint
from tfserving.model_config import ModelConfig, VersionPolicy

CHILD = Path(__file__).with_name("publish_child.py")


def cfg(kind: str = "latest", versions: tuple[int, ...] = (), labels=None) -> ModelConfig:
    """A model entry to publish with (publish() fills in the name and base path)."""
    return ModelConfig("", policy=VersionPolicy(kind, versions=versions), labels=labels or {})


class _AddConstant(tf.Module):
    def __init__(self, constant: float) -> None:
        super().__init__()
        self.constant = tf.constant(constant)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def add(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": x + self.constant}


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Four tiny SavedModels that differ only in a constant (y = x + 1, ..., x + 4)."""
    root = tmp_path_factory.mktemp("saved_models")
    paths = []
    for constant in (1.0, 2.0, 3.0, 4.0):
        module = _AddConstant(constant)
        path = str(root / f"add_{int(constant)}")
        tf.saved_model.save(module, path, signatures={"serving_default": module.add})
        paths.append(path)
    return paths


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "serving"


def snapshot(path: Path) -> dict[str, bytes | None]:
    """Every path under `path` with its bytes (None for directories)."""
    tree: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(path):
        rel = os.path.relpath(dirpath, path)
        for name in dirnames:
            tree[os.path.join(rel, name)] = None
        for name in filenames:
            tree[os.path.join(rel, name)] = Path(dirpath, name).read_bytes()
    return tree


def tmp_entries(model_root: Path) -> list[str]:
    return sorted(p.name for p in model_root.iterdir() if p.name.startswith(pub.TMP_PREFIX))


def entries_by_name(root: Path) -> dict[str, model_server_config_pb2.ModelConfig]:
    config = text_format.Parse((root / "models.config").read_text(),
                               model_server_config_pb2.ModelServerConfig())
    names = [e.name for e in config.model_config_list.config]
    assert names == sorted(names) and len(set(names)) == len(names)
    return {e.name: e for e in config.model_config_list.config}


def policy_of(entry: model_server_config_pb2.ModelConfig) -> str:
    return entry.model_version_policy.WhichOneof("policy_choice")


# ---------------------------------------------------------------------------- versions


def test_pushes_new_versions_and_skips_unchanged_model(models: list[str], root: Path) -> None:
    first = publish(models[0], str(root), "adder")
    assert first == PublishResult(pushed=True, version=1, reason="pushed",
                                  destination=os.path.join(root, "adder", "1"))
    assert snapshot(root / "adder" / "1") == snapshot(Path(models[0]))

    second = publish(models[1], str(root), "adder")
    assert (second.pushed, second.version, second.reason) == (True, 2, "pushed")
    assert list_versions(str(root / "adder")) == [1, 2]
    assert servable_fingerprint(second.destination) == servable_fingerprint(models[1])
    loaded = tf.saved_model.load(second.destination)
    assert loaded.signatures["serving_default"](x=tf.constant([1.0]))["y"].numpy() == [3.0]

    before = snapshot(root)
    again = publish(models[1], str(root), "adder")
    assert again == PublishResult(pushed=False, version=2, reason="unchanged",
                                  destination=os.path.join(root, "adder", "2"))
    # A caller-supplied fingerprint is trusted instead of reading source_dir's.
    trusted = publish(models[0], str(root), "adder",
                      fingerprint=servable_fingerprint(models[1]))
    assert trusted.reason == "unchanged"
    assert snapshot(root) == before


def test_list_versions_ignores_what_tf_serving_ignores(tmp_path: Path) -> None:
    for name in ["1", "007", "10", "12 ", "9223372036854775807", ".tmp-3", "3.partial", "abc",
                 "-1", "+3", "0x5", "1e3", "99999999999999999999", "\u0663"]:
        (tmp_path / name).mkdir()
    (tmp_path / "5").write_text("a file, not a version")
    (tmp_path / ".lock").touch()
    assert list_versions(str(tmp_path)) == [1, 7, 10, 12, 2**63 - 1]
    assert list_versions(str(tmp_path / "missing")) == []
    assert [parse_version(n) for n in ("007", "-1", "+3", " 4\t", "4 4")] == [7, None, None, 4,
                                                                              None]


def test_next_version_skips_numeric_files(models: list[str], root: Path) -> None:
    publish(models[0], str(root), "adder")
    (root / "adder" / "2").write_text("stray file")  # TF Serving ignores it; rename can't replace
    assert publish(models[1], str(root), "adder").version == 3


# ---------------------------------------------------------------------------- failures


def test_failure_half_way_through_copy_leaves_root_unchanged(
        models: list[str], root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    publish(models[0], str(root), "adder")
    before = snapshot(root)
    real_copy = pub._copy_file
    copied: list[str] = []

    def copy_then_fail(src: str, dst: str) -> None:
        if copied:
            raise OSError("injected: disk full")
        real_copy(src, dst)
        copied.append(dst)

    monkeypatch.setattr(pub, "_copy_file", copy_then_fail)
    with pytest.raises(OSError, match="injected"):
        publish(models[1], str(root), "adder", keep=1)
    assert len(copied) == 1
    assert snapshot(root) == before


def test_unreadable_source_file_leaves_root_unchanged(models: list[str], root: Path,
                                                      tmp_path: Path) -> None:
    publish(models[0], str(root), "adder")
    broken = tmp_path / "broken_model"
    shutil.copytree(models[1], broken)
    # Sorted after the real variables files, so several files are copied before it fails.
    (broken / "variables" / "zz_missing").symlink_to(tmp_path / "does-not-exist")
    before = snapshot(root)
    with pytest.raises(FileNotFoundError):
        publish(str(broken), str(root), "adder")
    assert snapshot(root) == before


def test_rejects_bad_arguments(models: list[str], root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a SavedModel"):
        publish(str(tmp_path), str(root), "adder")
    with pytest.raises(ValueError, match="keep"):
        publish(models[0], str(root), "adder", keep=0)
    for name in ("", ".hidden", "a/b", "models.config"):
        with pytest.raises(ValueError, match="model name"):
            publish(models[0], str(root), name)
    with pytest.raises(ValueError):
        VersionPolicy("newest")
    with pytest.raises(ValueError):
        VersionPolicy("specific")
    with pytest.raises(ValueError):
        VersionPolicy("latest", versions=(1,))
    with pytest.raises(ValueError):
        ModelConfig("adder", labels={"stable": -1})
    assert not root.exists()


# ---------------------------------------------------------------------------- processes


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen]]:
    """Starts publish_child.py processes; kills any still running at teardown."""
    procs: list[subprocess.Popen] = []

    def start(source: str, root: Path, name: str, pause_marker: Path | None = None
              ) -> subprocess.Popen:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        fingerprint = servable_fingerprint(source)
        procs.append(subprocess.Popen(
            [sys.executable, str(CHILD), source, str(root), name, fingerprint,
             *([str(pause_marker)] if pause_marker is not None else [])],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        return procs[-1]

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def result_of(proc: subprocess.Popen) -> dict:
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    return json.loads(stdout.splitlines()[-1])


def blocked_on_flock(pid: int, lock_file: Path) -> bool:
    """Whether `pid` waits for a flock on `lock_file` (per /proc/locks, '->' marks waiters)."""
    inode = str(lock_file.stat().st_ino)
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if (len(fields) > 6 and fields[1] == "->" and fields[2] == "FLOCK"
                and fields[5] == str(pid) and fields[6].rsplit(":", 1)[-1] == inode):
            return True
    return False


@pytest.mark.slow
def test_push_killed_before_rename_leaves_no_version(
        models: list[str], root: Path, tmp_path: Path, spawn: Callable) -> None:
    publish(models[0], str(root), "adder")
    marker = tmp_path / "paused"
    child = spawn(models[1], root, "adder", pause_marker=marker)
    wait_for(lambda: marker.exists() or child.poll() is not None, "the child to pause")
    assert child.poll() is None, child.communicate()[1]
    leftovers = tmp_entries(root / "adder")
    assert len(leftovers) == 1 and leftovers[0].startswith(f".tmp-2-{child.pid}-")
    assert (root / "adder" / leftovers[0] / "saved_model.pb").is_file()  # copy was complete

    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL
    assert list_versions(str(root / "adder")) == [1]
    assert tmp_entries(root / "adder") == leftovers

    result = publish(models[1], str(root), "adder")
    assert (result.pushed, result.version) == (True, 2)
    assert tmp_entries(root / "adder") == []
    assert servable_fingerprint(result.destination) == servable_fingerprint(models[1])


@pytest.mark.slow
def test_concurrent_pushers_get_distinct_complete_versions(
        models: list[str], root: Path, tmp_path: Path, spawn: Callable) -> None:
    marker = tmp_path / "paused"
    first = spawn(models[0], root, "adder", pause_marker=marker)
    wait_for(lambda: marker.exists() or first.poll() is not None, "the first pusher to pause")
    assert first.poll() is None, first.communicate()[1]
    (first_tmp,) = tmp_entries(root / "adder")

    # The second pusher of the same model must wait for the lock, not grab version 1 or
    # sweep the first pusher's temp dir away as a crash leftover.
    second = spawn(models[1], root, "adder")
    lock_file = root / "adder" / pub.LOCK_FILENAME
    wait_for(lambda: blocked_on_flock(second.pid, lock_file) or second.poll() is not None,
             "the second pusher to block on the model lock")
    # Another model is not held up by that lock.
    other = result_of(spawn(models[2], root, "other"))
    assert (other["pushed"], other["version"]) == (True, 1)
    assert second.poll() is None
    assert tmp_entries(root / "adder") == [first_tmp]
    assert list_versions(str(root / "adder")) == []

    marker.unlink()  # let the first pusher rename and finish
    results = [result_of(first), result_of(second)]
    assert [(r["pushed"], r["version"]) for r in results] == [(True, 1), (True, 2)]
    assert list_versions(str(root / "adder")) == [1, 2]
    for version, model in ((1, models[0]), (2, models[1])):
        version_dir = root / "adder" / str(version)
        assert (version_dir / "saved_model.pb").is_file()
        assert snapshot(version_dir) == snapshot(Path(model))
    assert tmp_entries(root / "adder") == []
    assert sorted(entries_by_name(root)) == ["adder", "other"]


# ---------------------------------------------------------------------------- models.config


def test_models_config_lists_every_model_with_policies_and_labels(
        models: list[str], root: Path) -> None:
    assert model_config.read(str(root)) is None
    root.mkdir()
    # A hand-written entry for a model published elsewhere is kept exactly as it is.
    (root / "models.config").write_text(
        'model_config_list { config { name: "external" base_path: "/elsewhere/external" '
        'model_platform: "tensorflow" logging_config { sampling_config '
        '{ sampling_rate: 0.5 } } } }\n')
    external = entries_by_name(root)["external"]
    shutil.copytree(models[3], root / "manual" / "1")  # a model dir without an entry

    publish(models[0], str(root), "sum_two")
    publish(models[1], str(root), "pinned",
            config=cfg("specific", versions=(1,), labels={"stable": 1}))
    publish(models[2], str(root), "every", config=cfg("all", labels={"canary": 1}))

    entries = entries_by_name(root)
    assert list(entries) == ["every", "external", "manual", "pinned", "sum_two"]
    assert entries["external"] == external
    for name in ("every", "manual", "pinned", "sum_two"):
        assert entries[name].base_path == str((root / name).resolve())
        assert entries[name].model_platform == "tensorflow"
    assert [policy_of(entries[n]) for n in ("every", "manual", "pinned", "sum_two")] == [
        "all", "latest", "specific", "latest"]
    assert list(entries["pinned"].model_version_policy.specific.versions) == [1]
    assert dict(entries["pinned"].version_labels) == {"stable": 1}
    assert dict(entries["every"].version_labels) == {"canary": 1}
    assert list(model_config.read(str(root)).model_config_list.config) == list(entries.values())
    assert protected_versions(str(root), "pinned") == {1}
    assert protected_versions(str(root), "sum_two") == set()

    # config=None keeps an existing entry's policy and labels.
    assert publish(models[3], str(root), "pinned").version == 2
    assert entries_by_name(root)["pinned"] == entries["pinned"]

    # An unchanged push still applies a changed entry (here the container base path) ...
    result = publish(models[0], str(root), "sum_two", config_base_path="/models")
    assert result.reason == "unchanged"
    after = entries_by_name(root)
    assert after["sum_two"].base_path == "/models/sum_two"
    assert policy_of(after["sum_two"]) == "latest"
    assert after["every"] == entries["every"]
    # ... and writes nothing when the entry is already as wanted.
    before = snapshot(root)
    publish(models[0], str(root), "sum_two", config_base_path="/models/")
    assert snapshot(root) == before
    assert not [p for p in os.listdir(root) if p.startswith(".models.config.tmp-")]


def test_models_config_with_container_base_path(models: list[str], root: Path) -> None:
    shutil.copytree(models[3], root / "manual" / "7")
    publish(models[0], str(root), "sum_two", config_base_path="/models/")
    entries = entries_by_name(root)
    assert {n: e.base_path for n, e in entries.items()} == {
        "manual": "/models/manual", "sum_two": "/models/sum_two"}

    publish(models[0], str(root), "sum_two", config_base_path="/models",
            config=cfg("specific", versions=(1, 2), labels={"stable": 1}))
    entry = entries_by_name(root)["sum_two"]
    assert entry.base_path == "/models/sum_two"
    assert list(entry.model_version_policy.specific.versions) == [1, 2]
    assert dict(entry.version_labels) == {"stable": 1}
    assert protected_versions(str(root), "sum_two") == {1, 2}


def test_models_config_writers_take_the_root_lock(models: list[str], root: Path) -> None:
    publish(models[0], str(root), "first")
    before = (root / "models.config").read_bytes()
    # flock locks belong to open files, so a thread of this process contends like a process.
    with pub._flock(str(root / pub.CONFIG_LOCK_FILENAME)):
        writer = threading.Thread(target=publish, args=(models[1], str(root), "second"))
        writer.start()
        writer.join(timeout=1.0)
        assert writer.is_alive()  # waiting for the root lock ...
        assert (root / "models.config").read_bytes() == before
    writer.join(timeout=30)
    assert not writer.is_alive()
    assert sorted(entries_by_name(root)) == ["first", "second"]  # ... and lost no entry


def test_serving_state_tracks_versions_and_config(models: list[str], root: Path) -> None:
    assert serving_state(str(root), "adder") == ""
    publish(models[0], str(root), "adder")
    state = serving_state(str(root), "adder")
    assert len(state) == 16 and state != ""
    publish(models[0], str(root), "adder")
    assert serving_state(str(root), "adder") == state  # unchanged push, unchanged state
    publish(models[1], str(root), "adder")
    pushed = serving_state(str(root), "adder")
    assert pushed != state
    publish(models[0], str(root), "other")  # another model's push is not this one's
    assert serving_state(str(root), "adder") == pushed
    publish(models[1], str(root), "adder", config=cfg(labels={"stable": 2}))
    assert serving_state(str(root), "adder") != pushed


# ---------------------------------------------------------------------------- retention


def test_retention_keeps_the_newest_versions(models: list[str], root: Path) -> None:
    removed = [publish(m, str(root), "adder", keep=2, retention_grace=0).removed_versions
               for m in models]
    assert removed == [(), (), (1,), (2,)]
    assert list_versions(str(root / "adder")) == [3, 4]
    assert sorted(os.listdir(root / "adder")) == [".lock", "3", "4"]
    assert snapshot(root / "adder" / "4") == snapshot(Path(models[3]))


def test_retention_never_removes_pinned_versions(models: list[str], root: Path) -> None:
    publish(models[0], str(root), "labelled", config=cfg("all", labels={"stable": 1}))
    removed = [publish(m, str(root), "labelled", keep=1, retention_grace=0).removed_versions
               for m in models[1:]]
    # The newest version before each push survives that push ('all' serves it).
    assert removed == [(), (), (2,)]
    assert list_versions(str(root / "labelled")) == [1, 3, 4]

    publish(models[0], str(root), "specific")
    publish(models[1], str(root), "specific", config=cfg("specific", versions=(1,)))
    assert publish(models[2], str(root), "specific", keep=1,
                   retention_grace=0).removed_versions == (2,)
    assert list_versions(str(root / "specific")) == [1, 3]
    # Versions pinned by the `config` being published are protected as well.
    result = publish(models[3], str(root), "specific", keep=1, retention_grace=0,
                     config=cfg("latest", labels={"canary": 3}))
    assert (result.version, result.removed_versions) == (4, ())
    assert list_versions(str(root / "specific")) == [1, 3, 4]
    assert tmp_entries(root / "specific") == []


# ---------------------------------------------------------------------------- remote


def test_remote_root_uses_gfile(models: list[str], tmp_path: Path) -> None:
    """The object-store path, run for real on TF's in-memory ram:// filesystem."""
    root = f"ram://{tmp_path.name}/serving"
    assert publish(models[0], root, "adder").destination == f"{root}/adder/1"
    assert publish(models[0], root, "adder").reason == "unchanged"
    result = publish(models[1], root, "adder", keep=1, config_base_path="gs://bucket/serving")
    assert (result.version, result.removed_versions) == (2, ())  # version 1 was serving
    result = publish(models[2], root, "adder", keep=1, retention_grace=0)
    assert (result.version, result.removed_versions) == (3, (1,))
    assert list_versions(f"{root}/adder") == [2, 3]
    assert servable_fingerprint(result.destination) == servable_fingerprint(models[2])
    config = model_config.read(root)
    assert [e.base_path for e in config.model_config_list.config] == ["gs://bucket/serving/adder"]
