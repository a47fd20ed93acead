"""Connection hygiene and descriptor exhaustion, with real sockets against real servers.

- requests that do not finish arriving (slowloris: headers or body trickling, or nothing
  at all) are closed after --header-timeout / --body-timeout; idle keep-alive connections
  after --keep-alive-timeout;
- beyond --max-connections new connections get 503 and are closed;
- when the server does run out of descriptors (RLIMIT_NOFILE set low on the server, cap
  turned off), the version watcher's failed listings keep every model loaded.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import sys
import time

import httpx
import pytest

from serving import connections
from serving.limits import Limits
from tests.serving_fixtures import REPO, add_version, free_port, running_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = tmp_path_factory.mktemp("connections") / "serving"
    for model in ("sum_two", "fun_runif"):
        add_version(str(path), model, 1, model)
    return str(path)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.settimeout(10)
    return sock


def _read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes; and how long that took."""
    started = time.monotonic()
    data = b""
    sock.settimeout(limit)
    with contextlib.suppress(ConnectionResetError):
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data, time.monotonic() - started


def _states(url: str) -> dict[str, str]:
    states = {}
    for model in ("sum_two", "fun_runif"):
        response = httpx.get(f"{url}/v1/models/{model}", timeout=10)
        states[model] = (response.json()["model_version_status"][0]["state"]
                         if response.status_code == 200 else str(response.status_code))
    return states


def test_requests_that_do_not_arrive_are_timed_out(root):
    with running_server(root, "sum_two", "--header-timeout", "1", "--body-timeout", "1.5",
                        "--keep-alive-timeout", "1") as server:
        port = server.port
        # Nothing at all.
        silent = _connect(port)
        data, took = _read_until_closed(silent, 10)
        assert data.startswith(b"HTTP/1.1 408 ") and 0.8 < took < 5, (data, took)
        # Slowloris: a header line every 0.3 s never completes the request.
        slow = _connect(port)
        slow.sendall(b"POST /v1/models/sum_two:predict HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        with contextlib.suppress(OSError):
            for i in range(40):
                time.sleep(0.3)
                slow.sendall(f"X-{i}: y\r\n".encode())
        assert time.monotonic() - started < 5
        data, _ = _read_until_closed(slow, 10)
        assert data.startswith(b"HTTP/1.1 408 ") or data == b"", data
        # A body that stops half way.
        body = _connect(port)
        body.sendall(b"POST /v1/models/sum_two:predict HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 100\r\n\r\n{\"instances\":")
        data, took = _read_until_closed(body, 10)
        assert 1.2 < took < 6, took
        # An idle keep-alive connection after a complete request.
        idle = _connect(port)
        idle.sendall(b"GET /v1/models/sum_two HTTP/1.1\r\nHost: x\r\n\r\n")
        data, took = _read_until_closed(idle, 10)
        assert data.startswith(b"HTTP/1.1 200 ") and b"AVAILABLE" in data
        assert 0.8 < took < 5, took
        metrics = httpx.get(f"{server.url}/monitoring/prometheus/metrics").text
        assert ':tfx_servables:connection_timeouts{phase="headers"} 2' in metrics
        assert ':tfx_servables:connection_timeouts{phase="body"} 1' in metrics
        # A client that keeps sending in time is never cut off.
        assert httpx.post(f"{server.url}/v1/models/sum_two:predict",
                          json={"instances": [[1, 2, 3]]}).status_code == 200


def test_connections_beyond_the_cap_get_503_and_models_stay_served(root):
    with running_server(root, "sum_two", "--max-connections", "20",
                        "--header-timeout", "30") as server:
        held = [_connect(server.port) for _ in range(20)]
        time.sleep(0.3)
        extra = _connect(server.port)
        data, took = _read_until_closed(extra, 5)
        assert data.startswith(b"HTTP/1.1 503 ") and b"Too many open connections" in data
        assert took < 2
        for sock in held:
            sock.close()
        time.sleep(0.3)
        assert _states(server.url) == {"sum_two": "AVAILABLE", "fun_runif": "AVAILABLE"}
        metrics = httpx.get(f"{server.url}/monitoring/prometheus/metrics").text
        assert ':tfx_servables:connections_refused{reason="max_connections"} 1' in metrics


def _server_with_nofile(root: str, nofile: int, *args: str, log_path: str):
    port = free_port()

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    proc = subprocess.Popen(
        [sys.executable, "-m", "serving", "--serving-dir", root, "--port", str(port),
         "--grpc-port", "0", "--poll-interval", "0.2", "--header-timeout", "60", *args],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2"),
        stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, preexec_fn=limit)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, open(log_path).read()[-3000:]
        with contextlib.suppress(httpx.HTTPError):
            if _states(url) == {"sum_two": "AVAILABLE", "fun_runif": "AVAILABLE"}:
                return proc, port, url
        time.sleep(0.2)
    proc.kill()
    raise TimeoutError(open(log_path).read()[-3000:])


def _flood(port: int, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        with contextlib.suppress(OSError):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=2))
    return socks


def test_running_out_of_descriptors_never_unloads_a_model(root, tmp_path):
    """1,100 idle connections against 256 descriptors, the cap turned off: the server
    cannot accept or list directories for a while; every model stays AVAILABLE."""
    proc, port, url = _server_with_nofile(root, 256, "--max-connections", "100000",
                                          log_path=str(tmp_path / "server.log"))
    try:
        socks = _flood(port, 1100)
        time.sleep(2)  # about ten polls of the serving root while no descriptor is free
        for sock in socks:
            sock.close()
        time.sleep(1)
        assert _states(url) == {"sum_two": "AVAILABLE", "fun_runif": "AVAILABLE"}
        metrics = httpx.get(f"{url}/monitoring/prometheus/metrics", timeout=10).text
        scan_errors = [line for line in metrics.splitlines()
                       if line.startswith(":tfx_servables:serving_root_scan_errors{")]
        assert scan_errors, open(tmp_path / "server.log").read()[-3000:]
        assert "Too many open files" in open(tmp_path / "server.log").read()
        assert httpx.post(f"{url}/v1/models/sum_two:predict",
                          json={"instances": [[1, 2, 3]]}, timeout=10).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_default_cap_keeps_descriptors_for_the_watcher(root, tmp_path):
    """With the default cap (descriptor limit minus a reserve) a flood is refused before
    descriptors run out: no listing fails at all."""
    proc, port, url = _server_with_nofile(root, 400, log_path=str(tmp_path / "server.log"))
    try:
        socks = _flood(port, 600)
        time.sleep(1.5)
        for sock in socks:
            sock.close()
        time.sleep(0.5)
        assert _states(url) == {"sum_two": "AVAILABLE", "fun_runif": "AVAILABLE"}
        metrics = httpx.get(f"{url}/monitoring/prometheus/metrics", timeout=10).text
        assert ':tfx_servables:connections_refused{reason="max_connections"}' in metrics
        assert "serving_root_scan_errors" not in metrics
        assert "Too many open files" not in open(tmp_path / "server.log").read()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_connection_cap_defaults_below_the_descriptor_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        cap = connections.connection_cap(Limits())
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard  # raised to the hard one
        assert cap <= hard - 128
        assert connections.connection_cap(Limits(max_connections=5)) == 5
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
