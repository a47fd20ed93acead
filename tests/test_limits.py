"""Bounded work per request (serving/limits.py, serving/image_headers.py).

Unit tests of each bound, then real servers: oversized responses, JPEG decompression
bombs and allocation failures under a real address-space limit (RLIMIT_AS set on the
server process with prlimit) answer 429 and the server keeps serving; memory goes back to
the OS after a large request. No test lets a process allocate more than about 1.5 GB.
"""

from __future__ import annotations

import argparse
import base64
import os
import resource
import struct
import subprocess
import sys
import textwrap
import time
import zlib

import httpx
import numpy as np
import pytest

from serving import events
from serving.image_headers import image_info
from serving.limits import (
    HeavyGate,
    Limits,
    MemoryReleaser,
    add_arguments,
    as_resource_exhausted,
    ensure_headroom,
    from_args,
    response_size,
)
from tests.serving_fixtures import add_version, jpeg, running_server
from tfserving.status import ServingError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------ image headers


def _jpeg_declaring(width: int, height: int, progressive: bool = False) -> bytes:
    """A real small JPEG whose frame header is rewritten to declare width x height."""
    data = bytearray(jpeg(128, 16))
    pos = 2
    while True:
        marker, length = data[pos + 1], struct.unpack_from(">H", data, pos + 2)[0]
        if marker in (0xC0, 0xC1, 0xC2):
            if progressive:
                data[pos + 1] = 0xC2
            struct.pack_into(">HH", data, pos + 5, height, width)
            return bytes(data)
        pos += 2 + length


def _png(width: int, height: int, depth: int = 8, color: int = 2) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def _gif(width: int, height: int, frames: int) -> bytes:
    out = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00" * 6
    for _ in range(frames):
        out += b"\x21\xf9\x04\x00\x00\x00\x00\x00"  # graphic control extension
        out += b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return out + b"\x3b"


def test_image_headers_give_the_decoded_size_of_each_format():
    info = image_info(_jpeg_declaring(20000, 20000))
    assert (info.format, info.width, info.height) == ("JPEG", 20000, 20000)
    assert info.decoded_bytes == 20000 * 20000 * 3
    assert info.describe() == "JPEG image of 20000x20000 pixels"
    # Progressive JPEGs keep every coefficient (2 bytes per sample) until the last scan.
    assert image_info(_jpeg_declaring(100, 100, progressive=True)).decoded_bytes == \
        100 * 100 * 3 + 100 * 100 * 3 * 2
    real = jpeg(10, 32)
    assert image_info(real).decoded_bytes == 32 * 32 * 3
    assert image_info(_png(1000, 500)).decoded_bytes == 1000 * 500 * 4
    assert image_info(_png(10, 10, depth=16)).decoded_bytes == 10 * 10 * 8
    gif = image_info(_gif(100, 50, frames=7))
    assert (gif.format, gif.frames) == ("GIF", 7)
    assert gif.decoded_bytes == 7 * 100 * 50 * 3 + 7 * 100 * 50
    bmp = b"BM" + b"\x00" * 8 + struct.pack("<II", 54, 40) + struct.pack("<ii", 300, -200)
    assert image_info(bmp + b"\x00" * 28).decoded_bytes == 300 * 200 * 4


def test_text_and_truncated_headers_are_not_images():
    for data in (b"", b"hello world", b"BMW 320i, red, 2019", b"GIF87", b"\xff\xd8\xff",
                 _png(10, 10)[:20], b"\x89PNG\r\n\x1a\n" + b"\x00" * 4 + b"XXXX" + b"\x00" * 9):
        assert image_info(data) is None, data


# ------------------------------------------------------------------ request limits


def test_body_with_too_many_json_values_is_refused_before_parsing():
    limits = Limits(max_request_values=1000)
    limits.check_body(b'{"instances": [' + b"1," * 400 + b"1]}")
    with pytest.raises(ServingError) as err:
        limits.check_body(b'{"instances": [' + b"[]," * 2000 + b"[]]}")
    assert err.value.code == "RESOURCE_EXHAUSTED" and err.value.http_status == 429
    assert "--max-request-values" in err.value.message


def test_decoded_inputs_count_images_at_their_pixel_size():
    limits = Limits(max_decoded_bytes=64 * 1024 * 1024)
    strings = np.array([jpeg(100, 64), b"text"], dtype=object)
    limits.check_inputs({"img": strings, "x": np.zeros((1000, 3), np.float32)})
    bomb = np.array([_jpeg_declaring(20000, 20000)], dtype=object)
    with pytest.raises(ServingError) as err:
        limits.check_inputs({"input_img": bomb})
    assert err.value.http_status == 429
    assert err.value.message.startswith(
        "Input 'input_img' element 0 is a JPEG image of 20000x20000 pixels: decoding it takes "
        "1.1 GiB")
    assert "--max-decoded-bytes" in err.value.message
    # Many images, each under the limit, add up.
    many = np.array([_jpeg_declaring(3000, 3000)] * 3, dtype=object)
    with pytest.raises(ServingError, match="Decoded inputs"):
        limits.check_inputs({"input_img": many})
    with pytest.raises(ServingError, match="Decoded inputs"):
        limits.check_inputs({"x": np.zeros(20 * 1024 * 1024, np.float32)})


def test_response_size_is_an_upper_bound_of_the_encoded_json():
    from tfserving import json_tensor

    rng = np.random.default_rng(0)
    cases = [
        {"y": rng.standard_normal((50, 7)).astype(np.float32) * 1e-30},
        {"y": rng.standard_normal(300)},
        {"n": np.array([-(2**63)] * 10, np.int64), "b": np.array([False] * 10)},
        {"text": np.array([b"\x00\x01" * 20, "\u00e9".encode()] * 5, dtype=object),
         "out_bytes": np.array([os.urandom(33)] * 10, dtype=object)},
    ]
    for outputs in cases:
        for fmt in (json_tensor.ROW, json_tensor.COLUMNAR):
            if fmt == json_tensor.ROW and len({len(v) for v in outputs.values()}) > 1:
                continue
            encoded = json_tensor.encode_predict(outputs, fmt)
            elements, bound, _ = response_size(outputs, fmt == json_tensor.ROW)
            assert elements == sum(v.size for v in outputs.values())
            assert len(encoded) <= bound, (outputs.keys(), fmt, len(encoded), bound)


def test_oversize_responses_are_refused_before_encoding():
    outputs = {"output_0": np.zeros(5000, np.float32)}
    assert Limits().response_error(outputs) is None
    error = Limits(max_response_elements=4999).response_error(outputs)
    assert (error.code, error.http_status) == ("RESOURCE_EXHAUSTED", 429)
    assert "5000 tensor elements" in error.message and "--max-response-elements" in error.message
    error = Limits(max_response_bytes=50_000).response_error(outputs)
    assert "--max-response-bytes" in error.message


def test_allocation_failures_become_resource_exhausted():
    assert as_resource_exhausted(ValueError("x")) is None
    error = as_resource_exhausted(MemoryError())
    assert (error.code, error.http_status) == ("RESOURCE_EXHAUSTED", 429)
    try:
        try:
            raise MemoryError
        except MemoryError as inner:
            raise SystemError("returned a result with an exception set") from inner
    except SystemError as err:
        assert as_resource_exhausted(err).code == "RESOURCE_EXHAUSTED"


def _child(code: str, as_limit_mb: int | None = None, timeout: float = 120) -> \
        subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter, under RLIMIT_AS of ``as_limit_mb`` MiB."""
    prelude = textwrap.dedent(f"""
        import resource, sys
        sys.path.insert(0, {REPO!r})
        limit = {as_limit_mb!r}
        if limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit << 20, resource.RLIM_INFINITY))
    """)
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=timeout)


def test_headroom_probe_reports_what_orjson_would_crash_on():
    """Under an address-space limit orjson.dumps dies with SIGSEGV when its buffer cannot
    grow; the probe meets the same limit first, as an error."""
    crash = _child("""
        import numpy as np, orjson
        a = np.arange(20_000_000, dtype=np.int64)
        orjson.dumps(a, option=orjson.OPT_SERIALIZE_NUMPY)
    """, as_limit_mb=700)
    assert crash.returncode == -11, (crash.returncode, crash.stderr[-500:])  # SIGSEGV
    probed = _child("""
        import numpy as np
        from serving.limits import Limits
        a = np.arange(20_000_000, dtype=np.int64)
        error = Limits(max_response_elements=10**9, max_response_bytes=10**10).response_error(
            {"y": a})
        print(error.code, error.http_status, error.message)
    """, as_limit_mb=700)
    assert probed.returncode == 0, probed.stderr[-2000:]
    assert probed.stdout.startswith("RESOURCE_EXHAUSTED 429 Out of memory: encoding the "
                                    "response needs up to"), probed.stdout
    with pytest.raises(ServingError, match="parsing the request"):
        ensure_headroom(1 << 60, "parsing the request")


def test_limit_flags_parse_and_validate():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    limits = from_args(parser, parser.parse_args(
        ["--max-response-elements", "10", "--header-timeout", "2.5", "--max-connections", "7"]))
    assert (limits.max_response_elements, limits.header_timeout, limits.max_connections) == \
        (10, 2.5, 7)
    assert from_args(parser, parser.parse_args([])) == Limits()
    with pytest.raises(SystemExit):
        from_args(parser, parser.parse_args(["--max-decoded-bytes", "0"]))


@pytest.mark.anyio
async def test_heavy_gate_runs_at_most_its_slots_at_once():
    import anyio

    gate = HeavyGate(2)
    running, peak = 0, 0

    async def heavy() -> None:
        nonlocal running, peak
        async with gate.hold(True):
            running += 1
            peak = max(peak, running)
            await anyio.sleep(0.02)
            running -= 1

    async with anyio.create_task_group() as group:
        for _ in range(6):
            group.start_soon(heavy)
    assert peak == 2
    async with gate.hold(False):  # light requests never wait
        pass


def test_memory_releaser_trims_and_counts():
    releaser = MemoryReleaser(interval=0.0, delay=0.0)
    if not releaser.available:
        pytest.skip("no malloc_trim in this C library")
    before = events.value("memory_trims")
    releaser.request()
    deadline = time.monotonic() + 5
    while events.value("memory_trims") == before:
        assert time.monotonic() < deadline
        time.sleep(0.01)


# ------------------------------------------------------------------ real servers


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = tmp_path_factory.mktemp("limits") / "serving"
    for model in ("sum_two", "fun_runif", "mobilenet_v2_test"):
        add_version(str(path), model, 1, model)
    return str(path)


def _vm_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


@pytest.mark.slow
def test_oversize_response_and_decompression_bomb_get_429_and_the_server_lives(root):
    with running_server(root, "mobilenet_v2_test", "--max-response-elements", "1000000",
                        "--tensorflow-memory-limit", str(1 << 30)) as server:
        client = httpx.Client(base_url=server.url, timeout=120)
        # 2,000,000 floats (8 MB in TensorFlow) would be ~25 MB of JSON: refused.
        response = client.post("/v1/models/fun_runif:predict", json={"inputs": {"N": 2_000_000}})
        assert response.status_code == 429, response.text
        assert "--max-response-elements" in response.json()["error"]
        # A 20000x20000 JPEG of a few hundred bytes, three at once: refused, not decoded.
        bomb = base64.b64encode(_jpeg_declaring(20000, 20000)).decode()
        for _ in range(3):
            response = client.post("/v1/models/mobilenet_v2_test:predict",
                                   json={"inputs": [{"b64": bomb}]})
            assert response.status_code == 429, response.text
            assert "20000x20000" in response.json()["error"]
        # An allocation TensorFlow cannot make (over --tensorflow-memory-limit, 1 GiB)
        # fails inside the call: 429 too (TensorFlow retries for 10 s before it gives up).
        response = client.post("/v1/models/fun_runif:predict",
                               json={"inputs": {"N": 400_000_000}})
        assert response.status_code == 429, response.text
        assert "OOM when allocating" in response.json()["error"]
        assert client.post("/v1/models/sum_two:predict",
                           json={"instances": [[1, 2, 3]]}).json() == {
            "predictions": [[3.0, 4.0, 5.0]]}
        image = base64.b64encode(jpeg(250)).decode()
        assert client.post("/v1/models/mobilenet_v2_test:predict",
                           json={"inputs": [{"b64": image}]}).json() == {"outputs": ["white"]}
        metrics = client.get("/monitoring/prometheus/metrics").text
        assert 'model_name="mobilenet_v2_test",version="1",API="predict",entrypoint="REST",' \
               'status="RESOURCE_EXHAUSTED"} 3' in metrics
    assert server.proc.returncode in (0, -15), server.log_tail()


@pytest.mark.slow
def test_allocation_failures_under_an_address_space_limit_are_429(root):
    """RLIMIT_AS a little above the idle server's size: requests that need more get 429."""
    with running_server(root, "fun_runif") as server:
        client = httpx.Client(base_url=server.url, timeout=120)
        client.post("/v1/models/fun_runif:predict", json={"inputs": {"N": 10}})
        vm = _vm_kib(server.proc.pid, "VmSize") * 1024
        resource.prlimit(server.proc.pid, resource.RLIMIT_AS, (vm + (150 << 20),) * 2)
        # 3,000,000 floats: 12 MB from TensorFlow, ~35 MB of JSON, ~200 MB of float texts.
        for body in ({"inputs": {"N": 3_000_000}},
                     {"instances": [[0.5, 1.5, 2.5]] * 400_000}):
            model = "fun_runif" if "inputs" in body else "sum_two"
            response = client.post(f"/v1/models/{model}:predict", json=body)
            assert response.status_code == 429, (response.status_code, response.text[:300])
            assert response.json()["error"].startswith("Out of memory"), response.text[:300]
        assert client.post("/v1/models/sum_two:predict",
                           json={"instances": [[1, 2, 3]]}).status_code == 200
        assert server.proc.poll() is None, server.log_tail()


@pytest.mark.slow
def test_memory_goes_back_to_the_os_after_a_large_request(root):
    with running_server(root, "fun_runif") as server:
        client = httpx.Client(base_url=server.url, timeout=120)
        client.post("/v1/models/fun_runif:predict", json={"inputs": {"N": 1000}})
        idle = _vm_kib(server.proc.pid, "VmRSS")
        response = client.post("/v1/models/fun_runif:predict", json={"inputs": {"N": 3_000_000}})
        assert response.status_code == 200 and len(response.content) > 30_000_000
        del response
        time.sleep(2)  # the trim runs shortly after the response is sent
        after = _vm_kib(server.proc.pid, "VmRSS")
        # Without the trim glibc kept ~170 MB here; with it ~25 MB (README figures).
        assert after - idle < 100 * 1024, (idle, after)
        metrics = client.get("/monitoring/prometheus/metrics").text
        assert ":tfx_servables:memory_trims" in metrics
