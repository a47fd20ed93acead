"""The README's flow end to end: run the pipeline, `runner.py serve`, curl the models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest

import runner
from serving.client import ServingClient, ServingClientError
from tests.serving_fixtures import free_port

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """The three seed servables published by a real pipeline run."""
    output_dir = tmp_path_factory.mktemp("outputs")
    assert runner.main(["run", "--output-dir", str(output_dir)]) == 0
    return output_dir


@pytest.fixture(scope="module")
def server(published):
    port = free_port()
    log = open(published / "serve.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, os.path.join(PROJECT, "runner.py"), "serve",
         "--output-dir", str(published), "--port", str(port), "--grpc-port", str(free_port())],
        cwd=PROJECT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            assert process.poll() is None, (published / "serve.log").read_text()
            try:
                ready = [httpx.get(f"{url}/v1/models/{m}", timeout=2).status_code
                         for m in ("sum_two", "fun_runif", "mobilenet_v2_test")]
                if ready == [200, 200, 200]:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _request(name: str) -> bytes:
    with open(os.path.join(PROJECT, "data", "requests", f"{name}.json"), "rb") as f:
        return f.read()


def test_readme_curl_requests_answer(server):
    sum_two = httpx.post(f"{server}/v1/models/sum_two:predict", content=_request("sum_two"))
    assert sum_two.status_code == 200 and sum_two.json() == {"predictions": [[3.0, 4.0, 5.0]]}
    runif = httpx.post(f"{server}/v1/models/fun_runif:predict", content=_request("fun_runif"))
    values = runif.json()["outputs"]
    assert len(values) == 5 and all(0 <= v < 1 for v in values)
    image = httpx.post(f"{server}/v1/models/mobilenet_v2_test:predict",
                       content=_request("mobilenet_v2_test"))
    with open(os.path.join(PROJECT, "data", "labels", "ImageNetLabels.txt")) as f:
        labels = set(f.read().split("\n"))
    assert image.status_code == 200 and image.json()["outputs"][0] in labels


def test_every_supported_format_and_the_unsupported_one(server):
    client = ServingClient(server)
    assert client.predict("sum_two", inputs={"x": [[1, 2, 3]]}) == {
        "outputs": [[3.0, 4.0, 5.0]]}
    assert client.predict("sum_two", instances=[{"x": [0, 0, 0]}]) == {
        "predictions": [[2.0, 2.0, 2.0]]}
    # N is a scalar: row format feeds it as [1], and (as in TF Serving) the graph rejects it.
    with pytest.raises(ServingClientError) as info:
        client.predict("fun_runif", instances=[5])
    assert info.value.status_code == 400 and "shape" in str(info.value)
    with open(os.path.join(PROJECT, "data", "images", "sample.jpg"), "rb") as f:
        jpeg = f.read()
    # bytes are base64-encoded by the client, in both formats (one image per call).
    assert len(client.predict("mobilenet_v2_test", inputs=[jpeg])["outputs"]) == 1
    assert len(client.predict("mobilenet_v2_test", instances=[jpeg])["predictions"]) == 1
    two = httpx.post(f"{server}/v1/models/mobilenet_v2_test:predict",
                     json={"instances": [{"b64": "AA=="}, {"b64": "AA=="}]})
    assert two.status_code == 400 and "error" in two.json()


def test_status_and_metadata_of_published_models(server):
    client = ServingClient(server)
    assert client.status("fun_runif") == {"model_version_status": [{
        "version": "1", "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""}}]}
    signature = client.metadata("sum_two")["metadata"]["signature_def"]["signature_def"][
        "serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    assert signature["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in signature["inputs"]["x"]["tensor_shape"]["dim"]] == ["-1", "3"]
    metrics = httpx.get(f"{server}/monitoring/prometheus/metrics").text
    assert 'model_name="sum_two"' in metrics
    assert json.loads(httpx.get(f"{server}/v1/models/nope").text)["error"]


def test_published_versions_carry_warmup_requests(published, server):
    """Every pushed version has TF Serving's warmup file, and the server replayed it."""
    from tfserving import warmup

    for name in ("sum_two", "fun_runif", "mobilenet_v2_test"):
        logs = warmup.read(str(published / "serving" / name / "1"))
        assert logs and all(log.WhichOneof("log_type") == "predict_log" for log in logs)
    log = (published / "serve.log").read_text()
    # Which side of the 1 ms line a call falls on depends on the machine's load; that the
    # decision came from the warmup replay does not.
    assert "model sum_two: loaded version 1; calls run on the " in log
    assert "per warmup call" in log
