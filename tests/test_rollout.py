"""Rollouts never fail a request: availability-preserving unloads, retention with a grace
period, failed listings that keep the state, error bodies without server paths.

TF Serving's AvailabilityPreservingPolicy (core/availability_preserving_policy.cc): a
version that is no longer aspired is unloaded only once an aspired version is ready, or
when nothing is aspired; a failed poll of the file system changes nothing.
"""

from __future__ import annotations

import base64
import os
import shutil
import threading
import time

import httpx
import pytest

from components.versioned_pusher.publish import list_versions, publish
from serving import events
from serving.containment import public_message
from serving.registry import ModelRegistry
from tests.serving_fixtures import add_version, jpeg, model_store, running_server
from tfserving.status import ServingError

# ------------------------------------------------------------------ registry (fake loader)


class Loader:
    """A loader whose loads of saved_model.pb "block" wait for ``release``."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def __call__(self, name: str, version: int, path: str):
        with open(os.path.join(path, "saved_model.pb"), "rb") as f:
            content = f.read()
        if content == b"block":
            assert self.release.wait(10)
        if content == b"broken":
            raise ServingError("DATA_LOSS", f"cannot parse {path}/saved_model.pb")
        return type("Fake", (), {"name": name, "version": version})()


def _version(root, model: str, version: int, content: bytes = b"ok") -> str:
    path = os.path.join(root, model, str(version))
    os.makedirs(path)
    with open(os.path.join(path, "saved_model.pb"), "wb") as f:
        f.write(content)
    return path


@pytest.fixture
def registry(tmp_path):
    loader = Loader()
    reg = ModelRegistry(str(tmp_path), loader=loader)
    reg.loader = loader
    yield reg
    loader.release.set()
    reg.stop()


def test_deleted_version_serves_until_its_successor_is_available(tmp_path, registry):
    v1 = _version(tmp_path, "m", 1)
    registry.start()
    # A push with keep=1 as it used to be: version 1 gone as version 2 appears.
    shutil.rmtree(v1)
    _version(tmp_path, "m", 2, b"block")
    registry.poll()
    for _ in range(5):
        assert registry.resolve("m").version == 1  # loaded in memory: still answers
        registry.poll()
    registry.loader.release.set()
    assert registry.wait_idle(5)
    assert registry.resolve("m").version == 2
    states = {s["version"]: s["state"] for s in registry.status("m")["model_version_status"]}
    assert states == {"2": "AVAILABLE", "1": "END"}


def test_failed_successor_leaves_the_deleted_version_serving(tmp_path, registry):
    v1 = _version(tmp_path, "m", 1)
    registry.start()
    shutil.rmtree(v1)
    _version(tmp_path, "m", 2, b"broken")
    registry.poll()
    assert registry.wait_idle(5)
    assert registry.resolve("m").version == 1
    status = registry.status("m", 2)["model_version_status"][0]
    assert (status["state"], status["status"]["error_code"]) == ("END", "DATA_LOSS")
    # The status carries no server path (the loader's message had one).
    assert str(tmp_path) not in status["status"]["error_message"]
    assert "m/2/saved_model.pb" in status["status"]["error_message"]


def test_no_versions_left_unloads(tmp_path, registry):
    v1 = _version(tmp_path, "m", 1)
    registry.start()
    shutil.rmtree(v1)  # nothing aspired any more: TF Serving unloads too
    registry.poll()
    with pytest.raises(ServingError, match="Servable not found"):
        registry.resolve("m")


def test_failed_listing_keeps_the_served_versions(tmp_path, registry):
    _version(tmp_path, "a", 1)
    _version(tmp_path, "b", 1)
    (tmp_path / "models.config").write_text(
        "model_config_list { config { name: 'a' } config { name: 'b' } }")
    registry.start()
    before = events.value("serving_root_scan_errors", model_name="b")
    # The model directory cannot be listed (here: it is gone, as on an unmounted disk;
    # EMFILE is tested with real descriptors in test_connections.py).
    os.rename(tmp_path / "b", tmp_path / ".b-away")
    registry.poll()
    registry.poll()
    assert registry.resolve("b").version == 1
    assert events.value("serving_root_scan_errors", model_name="b") == before + 2
    os.rename(tmp_path / ".b-away", tmp_path / "b")
    _version(tmp_path, "b", 2)
    registry.poll()
    assert registry.wait_idle(5)
    assert registry.resolve("b").version == 2


def test_public_messages_have_no_server_paths(tmp_path):
    root = str(tmp_path / "serving")
    text = (f"{root}/m/1/assets/labels.txt; No such file or directory; also "
            f"{os.path.realpath(root)}/m/2/variables and /etc/secret/key.pem, "
            "POST /v1/models/m:predict, http://example.com/a/b, a/b/c, shape [2,3]/[3]")
    assert public_message(text, root) == (
        "m/1/assets/labels.txt; No such file or directory; also m/2/variables and <path>, "
        "POST <path>:predict, http://example.com/a/b, a/b/c, shape [2,3]/[3]")


# ------------------------------------------------------------------ pusher retention


def _sources(count: int) -> list[str]:
    store = model_store(*(f"offset_{i}" for i in range(1, count + 1)))
    return [store[f"offset_{i}"] for i in range(1, count + 1)]


def test_retention_keeps_the_version_a_push_replaces(tmp_path):
    root = str(tmp_path / "serving")
    one, two, three = _sources(3)
    assert publish(one, root, "m", keep=1, retention_grace=0).removed_versions == ()
    assert publish(two, root, "m", keep=1, retention_grace=0).removed_versions == ()
    assert list_versions(os.path.join(root, "m")) == [1, 2]  # 1 may still be serving
    assert publish(three, root, "m", keep=1, retention_grace=0).removed_versions == (1,)
    assert list_versions(os.path.join(root, "m")) == [2, 3]


def test_retention_grace_keeps_recently_replaced_versions(tmp_path):
    root = str(tmp_path / "serving")
    sources = _sources(4)
    for source in sources[:3]:
        assert publish(source, root, "m", keep=1).removed_versions == ()
    assert list_versions(os.path.join(root, "m")) == [1, 2, 3]
    # Version 2 (which replaced 1) was published 11 minutes ago, version 3 just now.
    old = time.time() - 660
    os.utime(os.path.join(root, "m", "2", "saved_model.pb"), (old, old))
    assert publish(sources[3], root, "m", keep=1).removed_versions == (1,)
    assert list_versions(os.path.join(root, "m")) == [2, 3, 4]


# ------------------------------------------------------------------ a live rollout


@pytest.mark.slow
def test_rollout_with_keep_1_fails_no_request(tmp_path):
    """Clients call a model whose graph reads its labels file on every call while the
    pusher publishes version 2 with keep=1: every request succeeds."""
    root = str(tmp_path / "serving")
    os.makedirs(root)
    store = model_store("mobilenet_v2_test")
    publish(store["mobilenet_v2_test"], root, "mobilenet_v2_test", keep=1)
    image = {"inputs": [{"b64": base64.b64encode(jpeg(250)).decode()}]}
    second = tmp_path / "second"
    shutil.copytree(store["mobilenet_v2_test"], second)
    (second / "assets" / "labels.txt").write_text("black\ndim\nbright\nWHITE")
    with running_server(root, "mobilenet_v2_test", "--poll-interval", "0.1") as server:
        failures: list[str] = []
        answers: set[str] = set()
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                while not stop.is_set():
                    response = http.post("/v1/models/mobilenet_v2_test:predict", json=image)
                    if response.status_code != 200:
                        failures.append(response.text)
                    else:
                        answers.add(response.json()["outputs"][0])

        threads = [threading.Thread(target=client) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        result = publish(str(second), root, "mobilenet_v2_test", keep=1)
        assert (result.version, result.removed_versions) == (2, ())
        deadline = time.monotonic() + 30
        while "WHITE" not in answers and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join()
        assert failures == [], failures[:3]
        assert answers == {"white", "WHITE"}
        assert list_versions(os.path.join(root, "mobilenet_v2_test")) == [1, 2]

        # An error from the graph names the file relative to the root, never the root.
        os.remove(os.path.join(root, "mobilenet_v2_test", "2", "assets", "labels.txt"))
        response = httpx.post(f"{server.url}/v1/models/mobilenet_v2_test:predict", json=image)
        assert response.status_code == 404, response.text
        error = response.json()["error"]
        assert "mobilenet_v2_test/2/assets/labels.txt" in error, error
        assert str(tmp_path) not in error and os.path.realpath(root) not in error


@pytest.mark.slow
def test_version_directory_deleted_under_a_served_model_keeps_serving(tmp_path):
    """A version directory deleted by hand while its successor loads: no 404 in between."""
    root = str(tmp_path / "serving")
    add_version(root, "sum_two", 1, "sum_two")
    with running_server(root, "sum_two", "--poll-interval", "0.05") as server:
        failures = []
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                while not stop.is_set():
                    response = http.post("/v1/models/sum_two:predict",
                                         json={"instances": [[1, 2, 3]]})
                    if response.status_code != 200:
                        failures.append(response.text)

        thread = threading.Thread(target=client)
        thread.start()
        time.sleep(0.3)
        # The successor appears first and its old version is deleted while it loads. (With
        # no version on disk at all, nothing is aspired and, as in TF Serving, the model
        # stops serving: deleting first would race the next scan.)
        add_version(root, "sum_two", 2, "sum_two")
        shutil.rmtree(os.path.join(root, "sum_two", "1"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = httpx.get(f"{server.url}/v1/models/sum_two").json()
            if status["model_version_status"][0] == {
                    "version": "2", "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""}}:
                break
            time.sleep(0.05)
        time.sleep(0.3)
        stop.set()
        thread.join()
        assert failures == [], failures[:3]
