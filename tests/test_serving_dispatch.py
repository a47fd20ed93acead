"""Where predictions run (event loop or thread pool), TensorFlow's threads, uvicorn's speedups."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import anyio
import pytest

from serving import dispatch, http, main
from serving.__main__ import main as serving_main
from serving.servable import Servable
from tests import serving_fixtures as sf
from tfserving import json_tensor
from tfserving.status import not_found


@pytest.fixture(scope="module")
def store():
    return sf.model_store("sum_two", "busy", "fun_runif", "mobilenet_v2_test", "half_plus_two",
                          "bytes_echo", "counter")


def load(store, kind: str, *, inline: bool = False) -> Servable:
    servable = Servable(kind, 1, store[kind])
    servable.inline = inline  # as a cheap warmup would have decided
    return servable


# ------------------------------------------------------------------ the decision at load time

FLOAT_IN = json_tensor.SignatureSpec("serving_default", json_tensor.PREDICT_METHOD, {
    "x": json_tensor.TensorSpec("x", "DT_FLOAT", (-1, 3))}, {})
INT_IN = json_tensor.SignatureSpec("serving_default", json_tensor.PREDICT_METHOD, {
    "N": json_tensor.TensorSpec("N", "DT_INT32", ())}, {})


def test_cheap_measured_version_runs_inline():
    inline, why = dispatch.choose({"serving_default": FLOAT_IN}, {"AddV2", "Placeholder"},
                                  {"serving_default": 2e-4})
    assert inline, why
    assert why == "event loop (serving_default 0.20 ms per warmup call <= 1 ms)"


@pytest.mark.parametrize("signatures,ops,seconds,reason", [
    # nothing measured: no user graph is run on made-up inputs
    ({"serving_default": FLOAT_IN}, {"AddV2"}, {}, "no warmup requests to measure"),
    ({"serving_default": FLOAT_IN}, {"AddV2"}, {"serving_default": 5e-3}, "> 1 ms"),
    # a loop: a cheap warmup says nothing about n = 600,000
    ({"serving_default": FLOAT_IN}, {"While"}, {"serving_default": 1e-4}, "has a loop (While)"),
    ({"serving_default": FLOAT_IN}, {"AssignAddVariableOp"}, {"serving_default": 1e-4},
     "writes state (AssignAddVariableOp)"),
    # tf.random.uniform(shape=(N,)): the size of the work is an input value
    ({"serving_default": INT_IN}, {"RandomUniform"}, {"serving_default": 1e-4},
     "takes integer input 'N', which may be a size"),
])
def test_unmeasured_or_unbounded_versions_run_on_the_pool(signatures, ops, seconds, reason):
    inline, why = dispatch.choose(signatures, ops, seconds)
    assert not inline
    assert why.startswith("thread pool (") and reason in why, why


def test_op_types_are_those_a_signature_can_run(store):
    """Loops and state writes are found inside called functions; save/restore ops are not
    counted (every TF2 SavedModel has them, no signature runs them)."""
    from tfserving.saved_model import read_meta_graph

    def risky(kind: str) -> list[str]:
        meta_graph = read_meta_graph(store[kind])
        ops = dispatch.signature_op_types(meta_graph, list(meta_graph.signature_def))
        return sorted(o for o in ops if o in dispatch._LOOP_OPS or dispatch._WRITE_OP.search(o))

    assert risky("sum_two") == [] and risky("fun_runif") == []
    assert risky("busy") == ["StatelessWhile"]
    assert risky("counter") == ["AssignAddVariableOp"]
    library = read_meta_graph(store["sum_two"]).graph_def.library.function
    assert "MergeV2Checkpoints" in {n.op for f in library for n in f.node_def}


def test_loaded_versions_report_their_dispatch(store):
    servable = load(store, "sum_two")
    assert not servable.inline
    assert servable.dispatch.startswith("thread pool (")


# ------------------------------------------------------------------ dispatch per request


class _OneModel:
    """A registry with one servable, served from the root that holds its model."""

    def __init__(self, servable):
        self.servable = servable
        self.root = os.path.dirname(os.path.dirname(servable.path))

    def resolve(self, name, version=None, label=None):
        if name != self.servable.name:
            raise not_found(f"Servable not found for request: Latest({name})")
        return self.servable


def _predict_threads(servable, body: bytes, model: str = "sum_two") -> tuple[bytes, list]:
    """Answers one predict request; returns the body and the threads that called TF."""
    threads = []
    run = servable.run

    def recording_run(key, tensors, output_filter=None):
        threads.append(threading.get_ident())
        return run(key, tensors, output_filter)

    servable.run = recording_run
    api = http.RestApi(_OneModel(servable), max_body_bytes=1 << 24, workers=2)
    parsed = http.parse_path("POST", f"/v1/models/{model}:predict")

    async def call():
        api.limiter = anyio.CapacityLimiter(2)
        return await api._dispatch(parsed, body, {"model": "", "version": ""})

    try:
        response = anyio.run(call)
    finally:
        servable.run = run
    return response.body, threads


def test_inline_version_is_called_on_the_event_loop(store):
    servable = load(store, "sum_two", inline=True)
    body, threads = _predict_threads(servable, b'{"instances": [[1, 2, 3]]}')
    assert json.loads(body) == {"predictions": [[3.0, 4.0, 5.0]]}
    assert threads == [threading.get_ident()]  # anyio.run runs the loop in this thread


def test_large_bodies_and_pool_versions_go_to_the_pool(store):
    servable = load(store, "sum_two", inline=True)
    rows = http.INLINE_MAX_BODY_BYTES // 10
    big = json.dumps({"instances": [[1.0, 2.0, 3.0]] * rows}).encode()
    assert len(big) > http.INLINE_MAX_BODY_BYTES
    body, threads = _predict_threads(servable, big)
    assert json.loads(body)["predictions"] == [[3.0, 4.0, 5.0]] * rows
    assert threads and threads[0] != threading.get_ident()

    pooled = load(store, "sum_two")
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
        monkeypatch.setattr(main, "available_cpus", lambda cpus=cpus: cpus)
        assert main.default_intra_op_threads() == expected


@pytest.mark.slow
def test_intra_op_threads_are_set_before_tensorflow_runs():
    code = ("from serving.main import set_intra_op_threads as s\n"
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
    monkeypatch.setattr(main, "set_intra_op_threads",
                        lambda n: calls.setdefault("intra_op_threads", []).append(n) or n)
    monkeypatch.setattr(main, "available_cpus", lambda: 2)
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    main.serve(str(tmp_path), port=0)
    # httptools, with the connection guards of serving/connections.py
    assert calls["loop"] == "uvloop" and issubclass(calls["http"], HttpToolsProtocol)
    main.serve(str(tmp_path), port=0, intra_op_threads=4)
    assert calls["intra_op_threads"] == [1, 4]

    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    main.serve(str(tmp_path), port=0)
    assert calls["loop"] == "auto" and calls["http"] == "auto"


def test_command_line_intra_op_threads(tmp_path, monkeypatch, capsys):
    seen = {}
    monkeypatch.setattr(main, "serve", lambda *args, **kwargs: seen.update(kwargs))
    assert serving_main(["--serving-dir", str(tmp_path), "--intra-op-threads", "2"]) == 0
    assert seen["intra_op_threads"] == 2
    assert serving_main(["--serving-dir", str(tmp_path)]) == 0
    assert seen["intra_op_threads"] is None  # serve() picks the default
    with pytest.raises(SystemExit):
        serving_main(["--serving-dir", str(tmp_path), "--intra-op-threads", "-1"])
    assert "--intra-op-threads must be >= 0" in capsys.readouterr().err
