"""Nothing outside the serving root: symlinks at any depth of a version are refused.

Fast tests run the registry's check with a fake loader (the check runs before any
loader); the slow one shows a real server refusing a version whose asset is a symlink to
an outside file, and serving it with --allow-symlinks-outside-root.
"""

from __future__ import annotations

import base64
import os
import shutil

import httpx
import pytest

from serving.containment import OutsideRootError, check_version_tree
from serving.registry import ModelRegistry
from tests.serving_fixtures import add_version, jpeg, running_server
from tfserving.status import ServingError


def _fake_loader(name: str, version: int, path: str):
    return type("Fake", (), {"name": name, "version": version})()


def _tree(path) -> str:
    os.makedirs(path / "variables")
    os.makedirs(path / "assets" / "nested")
    (path / "saved_model.pb").write_bytes(b"pb")
    (path / "variables" / "variables.index").write_bytes(b"index")
    (path / "assets" / "nested" / "labels.txt").write_text("a\nb\n")
    return str(path)


@pytest.fixture
def layout(tmp_path):
    root = tmp_path / "serving"
    outside = tmp_path / "elsewhere"
    _tree(outside)
    (outside / "secret.txt").write_text("not for clients")
    return root, outside


@pytest.mark.parametrize("entry, target", [
    ("saved_model.pb", "saved_model.pb"),
    ("variables", "variables"),
    ("assets/nested/labels.txt", "secret.txt"),
    ("assets/nested", "assets/nested"),
])
def test_symlink_to_outside_at_any_depth_is_refused(layout, entry, target):
    root, outside = layout
    version = root / "m" / "1"
    _tree(version)
    link = version / entry
    shutil.rmtree(link) if link.is_dir() else link.unlink()
    link.symlink_to(outside / target)
    with pytest.raises(OutsideRootError) as err:
        check_version_tree(str(root), str(version), model="m", version=1)
    message = err.value.message
    assert message == (f"Refusing version 1 of model m: its entry '{entry}' resolves outside "
                       "the serving root (a symlink). Start the server with "
                       "--allow-symlinks-outside-root to serve it.")
    assert err.value.code == "FAILED_PRECONDITION"
    check_version_tree(str(root), str(version), allow_outside=True)


def test_symlinks_inside_the_root_and_cycles_are_fine(layout):
    root, _ = layout
    version = root / "m" / "1"
    _tree(version)
    _tree(root / "shared")
    (version / "assets" / "shared").symlink_to(root / "shared" / "assets")
    (version / "assets" / "loop").symlink_to(version / "assets")  # a cycle
    (version / "assets" / "dangling").symlink_to(version / "gone")
    check_version_tree(str(root), str(version), model="m", version=1)


def test_registry_reports_the_refusal_in_the_status_and_keeps_serving(layout):
    root, outside = layout
    _tree(root / "m" / "1")
    registry = ModelRegistry(str(root), loader=_fake_loader)
    try:
        registry.start()
        version = root / "m" / "2"
        _tree(version)
        (version / "saved_model.pb").unlink()
        (version / "saved_model.pb").symlink_to(outside / "saved_model.pb")
        registry.poll()
        assert registry.wait_idle(5)
        assert registry.resolve("m").version == 1
        status = registry.status("m", 2)["model_version_status"][0]
        assert status["state"] == "END"
        assert status["status"]["error_code"] == "FAILED_PRECONDITION"
        assert "'saved_model.pb' resolves outside the serving root" in \
            status["status"]["error_message"]
        assert str(outside) not in status["status"]["error_message"]
        with pytest.raises(ServingError, match=r"Specific\(m, 2\)"):
            registry.resolve("m", 2)
    finally:
        registry.stop()

    allowing = ModelRegistry(str(root), loader=_fake_loader, allow_outside_root=True)
    try:
        allowing.start()
        assert allowing.resolve("m").version == 2
    finally:
        allowing.stop()


@pytest.mark.slow
def test_server_refuses_an_asset_symlinked_outside_unless_allowed(tmp_path):
    root = tmp_path / "serving"
    version = add_version(str(root), "mobilenet_v2_test", 1, "mobilenet_v2_test")
    labels = os.path.join(version, "assets", "labels.txt")
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cr3t\ns3cr3t\ns3cr3t\ns3cr3t")
    os.remove(labels)
    os.symlink(secret, labels)
    add_version(str(root), "sum_two", 1, "sum_two")
    image = {"inputs": [{"b64": base64.b64encode(jpeg(250)).decode()}]}
    with running_server(str(root), "sum_two") as server:
        status = httpx.get(f"{server.url}/v1/models/mobilenet_v2_test").json()
        entry = status["model_version_status"][0]
        assert entry["state"] == "END"
        assert entry["status"]["error_code"] == "FAILED_PRECONDITION"
        assert "'assets/labels.txt' resolves outside the serving root" in \
            entry["status"]["error_message"]
        response = httpx.post(f"{server.url}/v1/models/mobilenet_v2_test:predict", json=image)
        assert response.status_code == 404 and "s3cr3t" not in response.text
    with running_server(str(root), "mobilenet_v2_test",
                        "--allow-symlinks-outside-root") as server:
        response = httpx.post(f"{server.url}/v1/models/mobilenet_v2_test:predict", json=image)
        assert response.json() == {"outputs": ["s3cr3t"]}
