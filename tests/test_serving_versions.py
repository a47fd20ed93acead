"""The real server following models.config: hot reload, broken versions, policies, labels."""

from __future__ import annotations

import os
import threading
import time

import httpx
import pytest

from serving.client import ServingClient, ServingClientError
from tests import serving_fixtures as sf

pytestmark = pytest.mark.slow

# base_path is written for the production container and ignored by the local server.
CONFIG = """
model_config_list {
  config { name: "hot" base_path: "/models/hot" model_platform: "tensorflow" }
  config { name: "broken_start" base_path: "/models/broken_start" model_platform: "tensorflow" }
  config { name: "flaky" base_path: "/models/flaky" model_platform: "tensorflow" }
  config {
    name: "pinned" base_path: "/models/pinned" model_platform: "tensorflow"
    model_version_policy { specific { versions: 1 versions: 2 } }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
  }
  config {
    name: "every" base_path: "/models/every" model_platform: "tensorflow"
    model_version_policy { all {} }
  }
}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("versions") / "serving")
    sf.model_store("offset_1", "offset_2", "offset_3")
    for model, version in (("hot", 1), ("hot", 2), ("broken_start", 1), ("flaky", 1),
                           ("pinned", 1), ("pinned", 2), ("pinned", 3), ("every", 1),
                           ("every", 2), ("unlisted", 1)):
        sf.add_version(root, model, version, f"offset_{version}")
    sf.add_broken_version(root, "broken_start", 2)
    write_config(root, CONFIG)
    with sf.running_server(root, "hot") as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with ServingClient(server.url, timeout=30) as c:
        yield c


def write_config(root: str, text: str) -> None:
    staging = os.path.join(root, ".models.config.tmp")
    with open(staging, "w") as f:
        f.write(text)
    os.replace(staging, os.path.join(root, "models.config"))


def offset(client: ServingClient, model: str, **kwargs) -> float:
    """Which offset_<c> model answers (x + c at x = 0)."""
    return client.predict(model, instances=[0.0], **kwargs)["predictions"][0]


def states(client: ServingClient, model: str) -> dict[str, tuple[str, str]]:
    return {s["version"]: (s["state"], s["status"]["error_code"])
            for s in client.status(model)["model_version_status"]}


def wait_for(condition, timeout: float, server, what: str) -> float:
    start = time.monotonic()
    while not condition():
        elapsed = time.monotonic() - start
        assert elapsed < timeout, f"{what} not within {timeout}s\n{server.log_tail()}"
        time.sleep(0.02)
    return time.monotonic() - start


def test_new_version_is_served_within_2s_while_requests_keep_succeeding(server, client):
    assert offset(client, "hot") == 2.0
    results: list[tuple[float, float]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def hammer():
        with ServingClient(server.url, timeout=30) as own:
            while not stop.is_set():
                try:
                    value = offset(own, "hot")
                    results.append((time.monotonic(), value))
                except BaseException as err:  # noqa: BLE001 - every failure counts
                    errors.append(err)

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        sf.add_version(server.root, "hot", 3, "offset_3")  # temp name + rename
        pushed = time.monotonic()
        wait_for(lambda: any(t >= pushed and v == 3.0 for t, v in list(results)), 2.0, server,
                 "version 3")
        time.sleep(0.5)  # keep the load on while version 2 is unloaded
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[:3]
    assert {v for _, v in results} == {2.0, 3.0}
    first_new = min(t for t, v in results if v == 3.0)
    assert first_new - pushed < 2.0
    print(f"version 3 served {first_new - pushed:.2f}s after the push; "
          f"{len(results)} requests, no failures")
    assert all(v == 3.0 for t, v in results if t > first_new + 0.2)
    assert len(results) > 20
    assert states(client, "hot") == {"3": ("AVAILABLE", "OK"), "2": ("END", "OK")}
    assert client.metadata("hot")["model_spec"]["version"] == "3"
    with pytest.raises(ServingClientError) as err:
        client.predict("hot", instances=[0.0], version=2)
    assert err.value.status_code == 404


def test_broken_version_at_startup_does_not_take_the_model_down(client):
    status = {s["version"]: s for s in client.status("broken_start")["model_version_status"]}
    assert status["1"]["state"] == "AVAILABLE"
    broken = status["2"]
    assert broken["state"] == "END"
    assert broken["status"]["error_code"] == "DATA_LOSS"
    assert "Failed to load broken_start/2" in broken["status"]["error_message"]
    assert offset(client, "broken_start") == 1.0


def test_broken_version_pushed_while_running_then_fixed(server, client):
    assert offset(client, "flaky") == 1.0
    sf.add_broken_version(server.root, "flaky", 2)
    wait_for(lambda: states(client, "flaky").get("2") == ("END", "DATA_LOSS"), 2.0, server,
             "the broken version's error")
    assert states(client, "flaky")["1"] == ("AVAILABLE", "OK")
    assert offset(client, "flaky") == 1.0
    # Replace the broken directory with a good one: it is retried and served.
    os.rename(os.path.join(server.root, "flaky", "2"),
              os.path.join(server.root, "flaky", ".broken-2"))
    sf.add_version(server.root, "flaky", 2, "offset_2")
    wait_for(lambda: offset(client, "flaky") == 2.0, 2.0, server, "the fixed version")
    assert states(client, "flaky") == {"2": ("AVAILABLE", "OK"), "1": ("END", "OK")}


def test_specific_policy_and_labels(client):
    assert offset(client, "pinned") == 2.0
    assert offset(client, "pinned", version=1) == 1.0
    assert offset(client, "pinned", label="stable") == 1.0
    assert offset(client, "pinned", label="canary") == 2.0
    with pytest.raises(ServingClientError) as err:
        offset(client, "pinned", version=3)  # on disk, but not in the policy
    assert err.value.status_code == 404
    with pytest.raises(ServingClientError) as err:
        offset(client, "pinned", label="nope")
    assert err.value.status_code == 400
    assert states(client, "pinned") == {"2": ("AVAILABLE", "OK"), "1": ("AVAILABLE", "OK")}
    # Status ignores the label (get_model_status_impl.cc): every version, as without it.
    assert [s["version"] for s in client.status("pinned", label="stable")[
        "model_version_status"]] == ["2", "1"]
    assert client.metadata("pinned", label="stable")["model_spec"]["version"] == "1"


def test_all_policy(client):
    assert offset(client, "every", version=1) == 1.0
    assert offset(client, "every", version=2) == 2.0
    assert offset(client, "every") == 2.0


def test_models_not_in_config_are_not_served(client):
    with pytest.raises(ServingClientError) as err:
        client.status("unlisted")
    assert err.value.status_code == 404


def test_config_reload(server, client):
    write_config(server.root, CONFIG.replace(
        'model_config_list {',
        'model_config_list {\n  config { name: "unlisted" base_path: "/models/unlisted" }', 1))
    def available() -> bool:
        response = httpx.get(f"{server.url}/v1/models/unlisted")
        return response.status_code == 200 and \
            response.json()["model_version_status"][0]["state"] == "AVAILABLE"

    wait_for(available, 2.0, server, "the newly configured model")
    assert offset(client, "unlisted") == 1.0
    # An invalid edit is logged and ignored: the server keeps its current models.
    write_config(server.root, "model_config_list { config { name: '../../etc' } }")
    time.sleep(1.2)
    assert offset(client, "unlisted") == 1.0
    assert offset(client, "hot") == 3.0
    assert "ignoring models.config" in server.log_tail(20000)
