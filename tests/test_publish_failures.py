"""Write failures are one servable's failure: a full disk (tmpfs), a file size limit
(RLIMIT_FSIZE) and a read-only root, for real.

publish() leaves nothing partial behind and raises; the pusher's executor turns that into a
one-line PublishError naming the servable, and a run goes on with the other servables and
exits 1. An unchanged re-run on a read-only root succeeds. tmpfs mounts need root (else
those tests are skipped, saying so).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import sys
import textwrap
import uuid

import pytest

from components.versioned_pusher.publish import (
    PublishError,
    list_versions,
    publish,
    write_models_config,
)
from tests.serving_fixtures import model_store
from tfserving.model_config import ModelConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def tmpfs(path, size: str):
    """A tmpfs of `size` mounted at `path` (skips the test where mounting is not allowed)."""
    os.makedirs(path, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")
    try:
        yield str(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: str, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", path], check=True)


def _big_model(tmp_path, megabytes: int) -> str:
    """offset_1 plus an asset of `megabytes` MB: larger than the tmpfs it goes to."""
    path = tmp_path / f"big-{uuid.uuid4().hex[:6]}"
    shutil.copytree(model_store("offset_1")["offset_1"], path)
    os.makedirs(path / "assets", exist_ok=True)
    (path / "assets" / "big.bin").write_bytes(os.urandom(megabytes << 20))
    return str(path)


def _entries(root: str) -> list[str]:
    found = []
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            found.append(os.path.relpath(os.path.join(directory, name), root))
    return sorted(found)


def test_publish_error_names_the_servable_in_one_line():
    error = PublishError.wrap("mobilenet_v2_test", "/srv/serving", OSError(
        errno.ENOSPC, "No space left on device", "/srv/serving/m/.tmp-2/variables/x.data"))
    assert str(error) == ("servable 'mobilenet_v2_test': push failed: No space left on device "
                          "[ENOSPC] (x.data); nothing was published to "
                          "/srv/serving/mobilenet_v2_test")
    assert error.servable == "mobilenet_v2_test"
    other = PublishError.wrap("m", "/srv", ValueError("models.config is invalid:\n line 3"))
    assert str(other) == ("servable 'm': push failed: models.config is invalid: line 3; "
                          "nothing was published to /srv/m")
    assert PublishError.wrap("m", "/srv", error) is error


def test_full_disk_leaves_nothing_and_frees_the_space(tmp_path):
    small = model_store("offset_2")["offset_2"]
    with tmpfs(tmp_path / "disk", "1m") as root:
        assert publish(small, root, "m").version == 1
        before = _entries(root)
        with pytest.raises(OSError) as err:
            publish(_big_model(tmp_path, 2), root, "m", keep=1)
        assert err.value.errno == errno.ENOSPC
        assert _entries(root) == before  # no version 2, no staging directory
        # The space went back: the next (small) push works.
        assert publish(model_store("offset_3")["offset_3"], root, "m").version == 2


def test_file_size_limit_fails_the_push_cleanly(tmp_path):
    """RLIMIT_FSIZE in a child: writing past it fails with EFBIG (Python ignores SIGXFSZ)."""
    root = str(tmp_path / "serving")
    publish(model_store("offset_2")["offset_2"], root, "m")
    big = _big_model(tmp_path, 3)
    before = _entries(root)
    code = textwrap.dedent(f"""
        import errno, resource, sys
        sys.path.insert(0, {REPO!r})
        from components.versioned_pusher.publish import publish
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
        try:
            publish({big!r}, {root!r}, "m")
        except OSError as err:
            print(errno.errorcode[err.errno])
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.stdout.strip() == "EFBIG", result.stderr[-2000:]
    assert _entries(root) == before


def test_read_only_root_unchanged_push_succeeds_and_a_change_fails(tmp_path):
    source = model_store("offset_2")["offset_2"]
    with tmpfs(tmp_path / "disk", "4m") as root:
        publish(source, root, "m")
        publish(source, root, "n")
        write_models_config(root, [ModelConfig("m"), ModelConfig("n")])
        os.remove(os.path.join(root, "n", ".lock"))  # as a root written by another tool
        remount(root, "ro")
        before = _entries(root)
        for model in ("m", "n"):
            result = publish(source, root, model, keep=1)
            assert (result.pushed, result.reason, result.version) == (False, "unchanged", 1)
        write_models_config(root, [ModelConfig("m"), ModelConfig("n")])  # nothing to change
        with pytest.raises(OSError) as err:
            publish(model_store("offset_3")["offset_3"], root, "m")
        assert err.value.errno == errno.EROFS
        assert _entries(root) == before
        remount(root, "rw")
        assert list_versions(os.path.join(root, "m")) == [1]


# ------------------------------------------------------------------ a whole run


def _run(output_dir, serving_dir) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "runner.py"), "--output-dir", str(output_dir),
         "--serving-dir", str(serving_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_run_with_a_full_then_read_only_serving_root(tmp_path):
    """mobilenet_v2_test (several MB) does not fit a 2 MB serving root: it alone fails, the
    others are published; with room it is published; read-only, a re-run changes nothing
    and succeeds."""
    outputs = tmp_path / "outputs"
    with tmpfs(tmp_path / "serving", "2m") as serving:
        first = _run(outputs, serving)
        assert first.returncode == 1, first.stderr[-3000:]
        errors = [line for line in first.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, first.stderr[-3000:]
        assert errors[0].startswith("error: mobilenet_v2_test failed: ")
        assert "push failed: No space left on device [ENOSPC]; nothing was published" in \
            errors[0], errors[0]
        assert list_versions(os.path.join(serving, "sum_two")) == [1]
        assert list_versions(os.path.join(serving, "fun_runif")) == [1]
        assert list_versions(os.path.join(serving, "mobilenet_v2_test")) == []
        assert not [e for e in _entries(serving) if ".tmp-" in e], _entries(serving)

        remount(serving, "size=64m")
        second = _run(outputs, serving)
        assert second.returncode == 0, second.stderr[-3000:]
        assert list_versions(os.path.join(serving, "mobilenet_v2_test")) == [1]

        remount(serving, "ro")
        before = _entries(serving)
        third = _run(outputs, serving)
        assert third.returncode == 0, third.stderr[-3000:]
        assert _entries(serving) == before
        remount(serving, "rw")
