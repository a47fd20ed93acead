"""Unit tests of version discovery, models.config, policies and the registry (fake loader)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from serving import source
from serving.http import parse_path
from serving.registry import ModelRegistry
from tfserving import model_config
from tfserving.layout import valid_model_name
from tfserving.model_config import ConfigError, VersionPolicy
from tfserving.status import ServingError, tf_error_message


def parse_models_config(text: str) -> list[model_config.ModelConfig]:
    return model_config.model_configs(model_config.parse(text))


class FakeServable:
    def __init__(self, name: str, version: int, path: str):
        with open(os.path.join(path, "saved_model.pb"), "rb") as f:
            content = f.read()
        if content.startswith(b"broken"):
            raise ServingError("DATA_LOSS", "garbage")
        if content.startswith(b"slow"):
            time.sleep(0.5)
        self.name, self.version = name, version


def make_version(root, model: str, version, content: bytes = b"ok") -> str:
    path = os.path.join(root, model, str(version))
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "saved_model.pb"), "wb") as f:
        f.write(content)
    return path


@pytest.fixture
def registry(tmp_path):
    created = []

    def make(**kwargs) -> ModelRegistry:
        reg = ModelRegistry(str(tmp_path), loader=FakeServable, **kwargs)
        created.append(reg)
        return reg

    yield make
    for reg in created:
        reg.stop()


def test_versions_are_whole_int64_directory_names(tmp_path):
    # TF Serving parses names with safe_strto64, which skips surrounding spaces: " 4" is 4.
    for name in ("1", "20", "007", " 4", "9223372036854775807"):
        make_version(tmp_path, "m", name)
    for name in ("9223372036854775808", "-1", "1a", ".tmp-3", "+5", "3.0"):
        make_version(tmp_path, "m", name)
    (tmp_path / "m" / "42").write_text("a file, not a directory")
    assert sorted(source.scan_versions(str(tmp_path), "m")) == [1, 4, 7, 20, 2**63 - 1]


def test_model_names_and_symlinks_stay_inside_the_root(tmp_path):
    outside = tmp_path / "outside"
    make_version(outside, "secret", 1)
    root = tmp_path / "root"
    make_version(root, "good", 1)
    make_version(root, ".hidden", 1)
    os.symlink(outside / "secret", root / "escape")
    os.symlink(outside / "secret" / "1", root / "good" / "2")
    assert [c.name for c in source.discover_models(str(root))] == ["good"]
    assert list(source.scan_versions(str(root), "good")) == [1]
    assert source.scan_versions(str(root), "escape") == {}
    assert source.scan_versions(str(root), "..") == {}
    for bad in ("..", ".", "", "/etc", "a/b", "-x", "x" * 129):
        assert not valid_model_name(bad)


def test_version_policies():
    available = [1, 2, 5, 9]
    assert VersionPolicy().select(available) == {9}
    assert VersionPolicy("latest", num_versions=2).select(available) == {5, 9}
    assert VersionPolicy("all").select(available) == {1, 2, 5, 9}
    assert VersionPolicy("specific", versions=(2, 3)).select(available) == {2}
    assert VersionPolicy().select([]) == set()


CONFIG = """
model_config_list {
  config { name: "a" base_path: "/models/a" model_platform: "tensorflow" }
  config {
    name: "b" base_path: "/somewhere/else"
    model_version_policy { specific { versions: 1 versions: 3 } }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 3 }
  }
  config { name: "c" base_path: "/models/c" model_version_policy { all {} } }
  config { name: "d" base_path: "/models/d" model_version_policy { latest { num_versions: 2 } } }
}
"""


def test_parse_models_config():
    configs = {c.name: c for c in parse_models_config(CONFIG)}
    assert configs["a"].policy == VersionPolicy()
    assert configs["b"].policy == VersionPolicy("specific", versions=(1, 3))
    assert configs["b"].labels == {"stable": 1, "canary": 3}
    assert configs["c"].policy.kind == "all"
    assert configs["d"].policy.num_versions == 2


@pytest.mark.parametrize("text,fragment", [
    ("model_config_list { config { name: '../x' } }", "invalid model name"),
    ("model_config_list { config { name: '/abs' } }", "invalid model name"),
    ("model_config_list { config { name: 'a' } config { name: 'a' } }", "listed twice"),
    ("model_config_list { config { name: 'a' model_platform: 'onnx' } }", "model_platform"),
    ("this is not a proto", "not a valid ModelServerConfig"),
])
def test_invalid_models_config(text, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_models_config(text)


def test_registry_serves_latest_and_reports_status(tmp_path, registry):
    make_version(tmp_path, "m", 1)
    make_version(tmp_path, "m", 2)
    reg = registry()
    reg.start()
    assert reg.resolve("m").version == 2
    assert reg.resolve("m", 2).version == 2
    with pytest.raises(ServingError, match=r"Specific\(m, 1\)") as err:
        reg.resolve("m", 1)
    assert err.value.http_status == 404
    with pytest.raises(ServingError, match=r"Latest\(nope\)"):
        reg.resolve("nope")
    with pytest.raises(ServingError, match="Unrecognized servable version label: x") as err:
        reg.resolve("m", label="x")
    assert err.value.http_status == 400
    assert reg.status("m") == {"model_version_status": [
        {"version": "2", "state": "AVAILABLE",
         "status": {"error_code": "OK", "error_message": ""}}]}
    with pytest.raises(ServingError, match="Could not find version 1 of model m"):
        reg.status("m", 1)
    with pytest.raises(ServingError, match="Could not find any versions of model nope"):
        reg.status("nope")


def test_new_version_replaces_old_one_and_in_flight_reference_survives(tmp_path, registry):
    make_version(tmp_path, "m", 1)
    reg = registry(poll_interval=0.05)
    reg.start()
    in_flight = reg.resolve("m")
    make_version(tmp_path, "m", 2)
    deadline = time.monotonic() + 2
    while reg.resolve("m").version != 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert in_flight.version == 1  # still usable by the request that holds it
    states = {s["version"]: s["state"] for s in reg.status("m")["model_version_status"]}
    assert states == {"2": "AVAILABLE", "1": "END"}


def test_old_version_serves_while_new_one_loads(tmp_path, registry):
    make_version(tmp_path, "m", 1)
    reg = registry()
    reg.start()
    make_version(tmp_path, "m", 2, b"slow")
    reg.poll()
    assert reg.status("m", 2)["model_version_status"][0]["state"] == "LOADING"
    assert reg.resolve("m").version == 1
    assert reg.wait_idle(5)
    assert reg.resolve("m").version == 2


def test_broken_version_is_reported_and_retried_when_fixed(tmp_path, registry):
    make_version(tmp_path, "m", 1)
    make_version(tmp_path, "m", 2, b"broken")
    reg = registry()
    reg.start()
    assert reg.resolve("m").version == 1
    status = reg.status("m", 2)["model_version_status"][0]
    assert status["state"] == "END"
    assert status["status"]["error_code"] == "DATA_LOSS"
    assert "Failed to load m/2: garbage" in status["status"]["error_message"]
    reg.poll()  # unchanged files: no retry
    assert reg.status("m", 2)["model_version_status"][0]["state"] == "END"
    time.sleep(0.01)
    make_version(tmp_path, "m", 2, b"ok, fixed")
    reg.poll()
    reg.wait_idle(5)
    assert reg.resolve("m").version == 2


def test_labels_and_policies_from_models_config(tmp_path, registry):
    for version in (1, 2, 3):
        make_version(tmp_path, "b", version)
    make_version(tmp_path, "unlisted", 1)
    (tmp_path / "models.config").write_text(CONFIG)
    reg = registry()
    reg.start()
    assert reg.resolve("b").version == 3
    assert reg.resolve("b", label="stable").version == 1
    assert reg.resolve("b", label="canary").version == 3
    with pytest.raises(ServingError, match=r"Specific\(b, 2\)"):
        reg.resolve("b", 2)
    # Status has no label (get_model_status_impl.cc): the model's versions, newest first.
    assert [s["version"] for s in reg.status("b")["model_version_status"]] == ["3", "1"]
    with pytest.raises(ServingError, match="Latest"):
        reg.resolve("unlisted")
    assert reg.model_names() == ["a", "b", "c", "d"]


def test_config_reload_and_invalid_edit(tmp_path, registry):
    make_version(tmp_path, "a", 1)
    make_version(tmp_path, "e", 1)
    config = tmp_path / "models.config"
    config.write_text("model_config_list { config { name: 'a' base_path: '/models/a' } }")
    reg = registry()
    reg.start()
    assert reg.model_names() == ["a"]
    config.write_text("model_config_list { config { name: 'a' } config { name: 'e' } }")
    reg.poll()
    reg.wait_idle(5)
    assert reg.resolve("e").version == 1
    config.write_text("garbage {")
    reg.poll()  # logged and ignored: the previous config stays
    assert reg.model_names() == ["a", "e"]
    config.unlink()
    reg.poll()
    assert reg.model_names() == ["a", "e"]


def test_invalid_config_at_startup_fails(tmp_path, registry):
    (tmp_path / "models.config").write_text("model_config_list { config { name: '..' } }")
    with pytest.raises(ConfigError):
        registry().start()


def test_missing_root_fails(tmp_path):
    with pytest.raises(FileNotFoundError):
        ModelRegistry(str(tmp_path / "nope"), loader=FakeServable).start()


def test_removed_model_disappears(tmp_path, registry):
    make_version(tmp_path, "m", 1)
    reg = registry()
    reg.start()
    os.rename(tmp_path / "m", tmp_path / ".m-deleted")
    reg.poll()
    with pytest.raises(ServingError):
        reg.resolve("m")


def test_concurrent_resolve_during_swaps(tmp_path, registry):
    make_version(tmp_path, "m", 1)
    reg = registry(poll_interval=0.01)
    reg.start()
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                reg.resolve("m")
            except BaseException as err:  # noqa: BLE001
                errors.append(err)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for version in range(2, 8):
        make_version(tmp_path, "m", version)
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    reg.wait_idle(5)


@pytest.mark.parametrize("method,path,expected", [
    ("GET", "/v1/models/m", ("m", None, None, "status")),
    ("GET", "/v1/models/m/versions/3", ("m", 3, None, "status")),
    ("GET", "/v1/models/m/labels/stable/metadata", ("m", None, "stable", "metadata")),
    ("GET", "/V1/MODELS/m/METADATA", ("m", None, None, "status")),
    ("POST", "/v1/models/m:predict", ("m", None, None, "predict")),
    ("POST", "/v1/models/a%20b/versions/2:classify", ("a b", 2, None, "classify")),
    ("POST", "/v1/models/..%2Fetc:regress", ("../etc", None, None, "regress")),
])
def test_parse_path(method, path, expected):
    parsed = parse_path(method, path)
    assert (parsed.model, parsed.version, parsed.label, parsed.action) == expected


@pytest.mark.parametrize("method,path,fragment", [
    ("GET", "/v1/models", "Missing model name"),
    ("GET", "/v1/models/m:predict", "Malformed request"),
    ("POST", "/v1/models/m", "Malformed request"),
    ("POST", "/v1/models/m:PREDICT", "Malformed request"),
    ("GET", "/v1/models/../etc/passwd", "Malformed request"),
    ("GET", "/v1/models//etc/passwd", "Malformed request"),
    ("POST", "/v1/models/m/versions/x:predict", "Malformed request"),
    ("POST", "/v1/models/m/versions/1/labels/a:predict", "Malformed request"),
    ("POST", "/v1/models/m/versions/99999999999999999999:predict", "Failed to convert version"),
    ("DELETE", "/v1/models/m", "Malformed request"),
])
def test_parse_path_errors(method, path, fragment):
    with pytest.raises(ServingError, match=fragment) as err:
        parse_path(method, path)
    assert err.value.http_status == 400


def test_tf_error_messages_lose_the_python_stack_trace():
    message = (
        "Graph execution error:\n\nDetected at node ParseExample/ParseExampleV2 defined at "
        "(most recent call last):\n  File \"/srv/app.py\", line 1, in <module>\n    main()\n\n"
        "Name: <unknown>, Feature: x (data type: float) is required but could not be found.\n"
        "\t [[{{node ParseExample/ParseExampleV2}}]] [Op:__inference_pruned_123]")
    cleaned = tf_error_message(message)
    assert cleaned.startswith("Name: <unknown>, Feature: x (data type: float) is required")
    assert "/srv/app.py" not in cleaned
    unavailable = ("Graph execution error:\n\nDetected at node Reshape defined at (most recent "
                   "call last):\n<stack traces unavailable>\nInput to reshape is a tensor")
    assert tf_error_message(unavailable) == "Input to reshape is a tensor"
    assert tf_error_message("plain message ") == "plain message"
