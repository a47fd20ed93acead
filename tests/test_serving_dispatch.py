"""Where predictions run (event loop or thread pool), TensorFlow's threads, uvicorn's speedups."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import anyio
import numpy as np
import pytest

from serving import models, server
from serving.__main__ import main as serving_main
from tests import serving_fixtures as sf
from tfserving import json_tensor
from tfserving.status import not_found


@pytest.fixture(scope="module")
def store():
    return sf.model_store("sum_two", "busy", "fun_runif", "mobilenet_v2_test", "half_plus_two",
                          "bytes_echo", "counter")


def load(store, kind: str, **kwargs) -> models.Servable:
    return models.Servable(kind, 1, store[kind], **kwargs)


# ------------------------------------------------------------------ the decision at load time


def test_cheap_model_runs_inline(store):
    for kind in ("sum_two", "bytes_echo"):  # bytes_echo: string and integer inputs
        servable = load(store, kind)
        assert servable.inline, servable.dispatch
        assert servable.dispatch.startswith("event loop (serving_default ")
        assert "per warm-up call <= 1 ms" in servable.dispatch


@pytest.mark.parametrize("kind,reason", [
    # a loop: a warm-up with n = 0 says nothing about n = 600,000
    ("busy", "has a loop: its cost depends on input values"),
    # tf.random.uniform(shape=(N,)): the size of the work is an input value
    ("fun_runif", "its output size depends on the value of input 'N'"),
    # a zero input is not a JPEG: the warm-up call fails
    ("mobilenet_v2_test", "cannot be judged from a warm-up call"),
    # one signature (classify_x_to_y) fails on an empty tf.Example: the whole version
    ("half_plus_two", "signature 'classify_x_to_y' cannot be judged"),
    # a warm-up must not change the model's state
    ("counter", "writes state (AssignAddVariableOp): not warmed up"),
])
def test_models_that_cannot_be_judged_run_on_the_pool(store, kind, reason):
    servable = load(store, kind)
    assert not servable.inline
    assert servable.dispatch.startswith("thread pool (") and reason in servable.dispatch


def test_slow_calls_run_on_the_pool(store, monkeypatch):
    monkeypatch.setattr(models, "INLINE_MAX_CALL_SECONDS", 0.0)
    servable = load(store, "sum_two")
    assert not servable.inline
    assert "per warm-up call > 0 ms" in servable.dispatch


def test_warm_up_can_be_skipped(store):
    servable = load(store, "sum_two", warm_up=False)
    assert not servable.inline and "not warmed up" in servable.dispatch


def test_a_failing_decision_does_not_fail_the_load(store, monkeypatch):
    def broken(function):
        raise RuntimeError("cannot read the graph")

    monkeypatch.setattr(models, "function_op_types", broken)
    servable = load(store, "sum_two")
    assert not servable.inline
    assert servable.dispatch == "thread pool (no decision: cannot read the graph)"
    assert servable.run("serving_default", {"x": np.ones((1, 3), np.float32)})[
        "output_0"].tolist() == [[3.0, 3.0, 3.0]]


def test_warm_up_does_not_write_state(store):
    servable = load(store, "counter")
    outputs = servable.run("serving_default", {"x": np.zeros(1, np.float32)})
    assert outputs["output_0"].tolist() == [1.0]  # the first call the variable has seen


def test_warmup_inputs():
    spec = json_tensor.SignatureSpec("s", "tensorflow/serving/predict", {
        "x": json_tensor.TensorSpec("x", "DT_FLOAT", (-1, 3)),
        "n": json_tensor.TensorSpec("n", "DT_INT64", ()),
        "s": json_tensor.TensorSpec("s", "DT_STRING", None),
        "b": json_tensor.TensorSpec("b", "DT_BOOL", (2,)),
    }, {})
    arrays = models.warmup_inputs(spec)
    assert arrays["x"].shape == (1, 3) and arrays["x"].dtype == np.float32
    assert not arrays["x"].any()
    assert arrays["n"].shape == () and arrays["n"].dtype == np.int64
    assert arrays["s"].shape == () and arrays["s"].item() == b""
    assert arrays["b"].tolist() == [False, False]
    for bad in (json_tensor.TensorSpec("sp", "DT_FLOAT", (-1,), dense=False),
                json_tensor.TensorSpec("r", "DT_RESOURCE", ()),
                json_tensor.TensorSpec("big", "DT_FLOAT", (10_000, 10_000))):
        with pytest.raises(ValueError):
            models.warmup_inputs(json_tensor.SignatureSpec("s", "", {bad.name: bad}, {}))


# ------------------------------------------------------------------ dispatch per request


class _OneModel:
    """A registry with one servable."""

    def __init__(self, servable):
        self.servable = servable

    def resolve(self, name, version=None, label=None):
        if name != self.servable.name:
            raise not_found(f"Servable not found for request: Latest({name})")
        return self.servable


def _predict_threads(servable, body: bytes, model: str = "sum_two") -> tuple[bytes, list]:
    """Answers one predict request; returns the body and the threads that called TF."""
    threads = []
    run = servable.run

    def recording_run(key, tensors):
        threads.append(threading.get_ident())
        return run(key, tensors)

    servable.run = recording_run
    api = server.RestApi(_OneModel(servable), max_body_bytes=1 << 24, workers=2)
    parsed = server.parse_path("POST", f"/v1/models/{model}:predict")

    async def call():
        api.limiter = anyio.CapacityLimiter(2)
        return await api._dispatch(parsed, body, {"model": "", "version": ""})

    try:
        response = anyio.run(call)
    finally:
        servable.run = run
    return response.body, threads


def test_inline_version_is_called_on_the_event_loop(store):
    servable = load(store, "sum_two")
    body, threads = _predict_threads(servable, b'{"instances": [[1, 2, 3]]}')
    assert json.loads(body) == {"predictions": [[3.0, 4.0, 5.0]]}
    assert threads == [threading.get_ident()]  # anyio.run runs the loop in this thread


def test_large_bodies_and_pool_versions_go_to_the_pool(store):
    servable = load(store, "sum_two")
    rows = server.INLINE_MAX_BODY_BYTES // 10
    big = json.dumps({"instances": [[1.0, 2.0, 3.0]] * rows}).encode()
    assert len(big) > server.INLINE_MAX_BODY_BYTES
    body, threads = _predict_threads(servable, big)
    assert json.loads(body)["predictions"] == [[3.0, 4.0, 5.0]] * rows
    assert threads and threads[0] != threading.get_ident()

    pooled = load(store, "sum_two", warm_up=False)
    body, threads = _predict_threads(pooled, b'{"instances": [[1, 2, 3]]}')
    assert json.loads(body) == {"predictions": [[3.0, 4.0, 5.0]]}
    assert threads and threads[0] != threading.get_ident()


def test_errors_keep_their_order(store):
    """A malformed body to an unknown model is still a 400, as in TF Serving."""
    from tfserving.status import ServingError

    servable = load(store, "sum_two")
    with pytest.raises(ServingError) as err:
        _predict_threads(servable, b"not json", model="nope")
    assert err.value.http_status == 400
    with pytest.raises(ServingError) as err:
        _predict_threads(servable, b'{"instances": [[1, 2, 3]]}', model="nope")
    assert err.value.http_status == 404


# ------------------------------------------------------------------ serve(), python -m serving


def test_default_intra_op_threads(monkeypatch):
    for cpus, expected in ((1, 1), (2, 1), (4, 0), (64, 0)):
        monkeypatch.setattr(server, "available_cpus", lambda cpus=cpus: cpus)
        assert server.default_intra_op_threads() == expected


@pytest.mark.slow
def test_intra_op_threads_are_set_before_tensorflow_runs():
    code = ("from serving.server import set_intra_op_threads as s\n"
            "import tensorflow as tf\n"
            "print(s(1))\n"
            "tf.constant(1.0) + 1.0\n"
            "print(s(3))\n"
            "print(tf.config.threading.get_intra_op_parallelism_threads())\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=sf.REPO, capture_output=True,
                         text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=sf.REPO, TF_CPP_MIN_LOG_LEVEL="3"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1", "1"]
    assert "cannot set TensorFlow's intra-op threads to 3" in out.stderr


def test_serve_asks_uvicorn_for_httptools_and_uvloop(tmp_path, monkeypatch):
    import uvicorn

    calls = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.update(kwargs))
    monkeypatch.setattr(server, "set_intra_op_threads",
                        lambda n: calls.setdefault("intra_op_threads", []).append(n) or n)
    monkeypatch.setattr(server, "available_cpus", lambda: 2)
    server.serve(str(tmp_path), port=0)
    assert calls["loop"] == "uvloop" and calls["http"] == "httptools"
    server.serve(str(tmp_path), port=0, intra_op_threads=4)
    assert calls["intra_op_threads"] == [1, 4]

    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    server.serve(str(tmp_path), port=0)
    assert calls["loop"] == "auto" and calls["http"] == "auto"


def test_command_line_intra_op_threads(tmp_path, monkeypatch, capsys):
    seen = {}
    monkeypatch.setattr(server, "serve", lambda *args, **kwargs: seen.update(kwargs))
    assert serving_main(["--serving-dir", str(tmp_path), "--intra-op-threads", "2"]) == 0
    assert seen["intra_op_threads"] == 2
    assert serving_main(["--serving-dir", str(tmp_path)]) == 0
    assert seen["intra_op_threads"] is None  # serve() picks the default
    with pytest.raises(SystemExit):
        serving_main(["--serving-dir", str(tmp_path), "--intra-op-threads", "-1"])
    assert "--intra-op-threads must be >= 0" in capsys.readouterr().err
