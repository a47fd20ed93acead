"""Server-side batching (serving/batching.py): TF Serving's queue rules and parameter file.

The scheduler tests run a numpy function as the "model", recording every merged call; the
seed-servable test exports the three seed servables and checks batched answers against
single calls.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from serving.batching import (
    BatchingParameters,
    BatchingSession,
    SharedBatchScheduler,
    batchable_signature,
    parse_batching_parameters,
    read_batching_parameters,
)
from tfserving.status import ServingError


class Recorder:
    """A model ``y = 2x + 1`` (and ``n`` rows of ``x``) that records each call's batch size."""

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None):
        self.sizes: list[int] = []
        self.delay = delay
        self.gate = gate
        self.lock = threading.Lock()

    def __call__(self, key, arrays):
        x = arrays["x"]
        with self.lock:
            self.sizes.append(x.shape[0])
        if self.gate is not None:
            self.gate.wait(10)
        if self.delay:
            time.sleep(self.delay)
        if np.any(x < 0):
            raise ValueError("negative input")
        return {"y": x * 2 + 1, "n": np.full(x.shape[0], x.shape[0])}


@pytest.fixture
def scheduler():
    s = SharedBatchScheduler(2)
    yield s
    s.stop()


def _concurrently(fn, args_list):
    results = [None] * len(args_list)
    errors = [None] * len(args_list)
    start = threading.Barrier(len(args_list))

    def work(i, args):
        start.wait()
        try:
            results[i] = fn(*args)
        except Exception as err:  # noqa: BLE001 - collected for the assertions
            errors[i] = err

    threads = [threading.Thread(target=work, args=(i, a)) for i, a in enumerate(args_list)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results, errors


# ------------------------------------------------------------------------ parameters


def test_parameter_file_in_tf_serving_text_format(tmp_path):
    path = tmp_path / "batching.config"
    path.write_text("""
        # as in TF Serving's docs
        max_batch_size { value: 128 }
        batch_timeout_micros { value: 2000 }
        max_enqueued_batches { value: 100 }
        num_batch_threads { value: 3 }
        thread_pool_name { value: "model_server_batch_threads" }
        allowed_batch_sizes: 32
        allowed_batch_sizes: [64, 128]
        pad_variable_length_inputs: true
        enable_large_batch_splitting { value: false }
    """)
    p = read_batching_parameters(str(path))
    assert (p.max_batch_size, p.batch_timeout_micros, p.max_enqueued_batches,
            p.num_batch_threads) == (128, 2000, 100, 3)
    assert p.allowed_batch_sizes == (32, 64, 128) and p.pad_variable_length_inputs
    assert p.thread_pool_name == "model_server_batch_threads"
    assert [p.padded_size(n) for n in (1, 32, 33, 128)] == [32, 32, 64, 128]


def test_unset_fields_take_tf_serving_defaults():
    p = parse_batching_parameters("")
    assert (p.max_batch_size, p.batch_timeout_micros, p.max_enqueued_batches) == (1000, 0, 10)
    assert p.num_batch_threads == len(os.sched_getaffinity(0))
    assert p.allowed_batch_sizes == () and not p.pad_variable_length_inputs


@pytest.mark.parametrize("text, message", [
    ("max_batch_size: 4", "max_batch_size"),                          # a wrapper, not a scalar
    ("max_batch_sise { value: 4 }", "valid fields: max_batch_size"),
    ("max_batch_size { value: 8 } allowed_batch_sizes: [2, 4]",
     "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 4"),
    ("max_batch_size { value: 4 } allowed_batch_sizes: [4, 2, 4]", "monotonically increasing"),
    ("num_batch_threads { value: 0 }", "num_batch_threads must be positive; was 0"),
    ("batch_timeout_micros { value: -1 }", "batch_timeout_micros must be non-negative"),
    ("enable_large_batch_splitting { value: true }", "'enable_large_batch_splitting'"),
])
def test_bad_parameter_files_are_refused_with_the_field(text, message):
    with pytest.raises(ValueError, match="batching parameters") as info:
        parse_batching_parameters(text)
    assert message in str(info.value)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(ValueError, match="nope.config"):
        read_batching_parameters(str(tmp_path / "nope.config"))


# ------------------------------------------------------------------------ scheduling


def test_concurrent_requests_are_merged_and_split_back(scheduler):
    model = Recorder(delay=0.01)
    session = BatchingSession(model, scheduler, BatchingParameters(max_batch_size=8))
    inputs = [np.arange(3 * (i % 3 + 1), dtype=np.float32).reshape(-1, 3) + i
              for i in range(24)]
    results, errors = _concurrently(lambda x: session.run("k", {"x": x}),
                                    [(x,) for x in inputs])
    assert errors == [None] * 24
    for x, result in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(result["y"], x * 2 + 1)  # merged == unmerged
        assert result["y"].shape == x.shape
    assert sum(model.sizes) == sum(x.shape[0] for x in inputs)
    assert max(model.sizes) > 3, model.sizes          # something really was merged
    assert max(model.sizes) <= 8, model.sizes         # never above max_batch_size


def test_a_batch_never_exceeds_max_batch_size_even_padded(scheduler):
    model = Recorder(delay=0.005)
    params = BatchingParameters(max_batch_size=6, allowed_batch_sizes=(2, 4, 6),
                                max_enqueued_batches=100, num_batch_threads=2)
    session = BatchingSession(model, scheduler, params)
    inputs = [np.full((i % 4 + 1, 1), i, np.float32) for i in range(40)]
    results, errors = _concurrently(lambda x: session.run("k", {"x": x}),
                                    [(x,) for x in inputs])
    assert errors == [None] * 40
    assert set(model.sizes) <= {2, 4, 6}, model.sizes  # padded to an allowed size
    for x, result in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(result["y"], x * 2 + 1)  # padding rows dropped


def test_the_timeout_bounds_a_lone_requests_wait(scheduler):
    model = Recorder()
    session = BatchingSession(model, scheduler,
                              BatchingParameters(max_batch_size=64, batch_timeout_micros=100_000))
    started = time.monotonic()
    result = session.run("k", {"x": np.ones((1, 3), np.float32)})
    waited = time.monotonic() - started
    np.testing.assert_array_equal(result["y"], np.full((1, 3), 3.0))
    assert 0.09 <= waited < 0.4, waited  # waits for company up to the timeout, not longer
    # With the default timeout (0) a lone request is run as soon as a thread is free.
    fast = BatchingSession(model, scheduler, BatchingParameters(max_batch_size=64))
    started = time.monotonic()
    fast.run("k", {"x": np.ones((1, 3), np.float32)})
    assert time.monotonic() - started < 0.05


def test_full_queue_is_unavailable_not_unbounded(scheduler):
    gate = threading.Event()
    model = Recorder(gate=gate)
    params = BatchingParameters(max_batch_size=2, max_enqueued_batches=1)
    session = BatchingSession(model, scheduler, params)
    x = np.ones((2, 1), np.float32)
    first = session.schedule("k", {"x": x})      # taken by a batch thread, blocked on the gate
    deadline = time.monotonic() + 5
    while not model.sizes and time.monotonic() < deadline:
        time.sleep(0.001)
    second = session.schedule("k", {"x": x})     # fills the one enqueued (open) batch
    with pytest.raises(ServingError) as info:
        session.schedule("k", {"x": x})
    assert info.value.code == "UNAVAILABLE" and info.value.http_status == 503
    assert "batch scheduling queue" in info.value.message
    gate.set()
    assert first.result(5)["y"].shape == (2, 1) and second.result(5)["y"].shape == (2, 1)
    session.run("k", {"x": x})  # room again


def test_request_larger_than_max_batch_size_is_invalid(scheduler):
    session = BatchingSession(Recorder(), scheduler, BatchingParameters(max_batch_size=4))
    with pytest.raises(ServingError) as info:
        session.run("k", {"x": np.ones((5, 1), np.float32)})
    assert info.value.code == "INVALID_ARGUMENT" and info.value.http_status == 400
    assert "Task size 5 is larger than maximum batch size 4" in info.value.message


def test_unmergeable_requests_run_alone(scheduler):
    model = Recorder(delay=0.01)
    session = BatchingSession(model, scheduler, BatchingParameters(max_batch_size=64))
    # Scalars and mismatched dimension-0 sizes are not batched: they run on the caller.
    assert session.schedule("k", {"x": np.float32(1)}) is None
    assert session.schedule("k", {"x": np.ones(2), "z": np.ones(3)}) is None
    assert session.schedule("k", {"x": np.ones((0, 3))}) is None
    # Different non-batch dimensions (padding off) never share a batch.
    inputs = [np.ones((1, 2 + i % 2), np.float32) * i for i in range(12)]
    results, errors = _concurrently(lambda x: session.run("k", {"x": x}),
                                    [(x,) for x in inputs])
    assert errors == [None] * 12
    for x, result in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(result["y"], x * 2 + 1)
    # A signature declared without a batch dimension is never batched.
    fixed = BatchingSession(model, scheduler, batchable=lambda key: key != "scalar")
    assert fixed.schedule("scalar", {"x": np.ones((1, 3))}) is None
    assert fixed.schedule("other", {"x": np.ones((1, 3))}) is not None


def test_pad_variable_length_inputs(scheduler):
    gate = threading.Event()
    model = Recorder(gate=gate)
    session = BatchingSession(model, scheduler, BatchingParameters(
        max_batch_size=8, pad_variable_length_inputs=True, num_batch_threads=2))
    blocker = session.schedule("k", {"x": np.ones((1, 1), np.float32)})
    second = BatchingSession(model, scheduler, session.params)
    other = second.schedule("k", {"x": np.ones((1, 1), np.float32)})
    deadline = time.monotonic() + 5
    while len(model.sizes) < 2 and time.monotonic() < deadline:  # both threads busy
        time.sleep(0.001)
    a = session.schedule("k", {"x": np.array([[5.0, 6.0]], np.float32)})
    b = session.schedule("k", {"x": np.array([[7.0, 8.0, 9.0]], np.float32)})
    gate.set()
    for f in (blocker, other):
        f.result(5)
    # One batch: [1, 2] padded to [1, 3] with its first element, outputs not un-padded.
    np.testing.assert_array_equal(a.result(5)["y"], [[11.0, 13.0, 11.0]])
    np.testing.assert_array_equal(b.result(5)["y"], [[15.0, 17.0, 19.0]])
    assert model.sizes[-1] == 2


def _both_batch_threads_held(scheduler):
    """(gate, model, session, blockers): two requests hold both batch threads until
    ``gate`` is set, so that what ``session`` schedules next queues as one batch."""
    gate = threading.Event()
    model = Recorder(gate=gate)
    session = BatchingSession(model, scheduler, BatchingParameters(
        max_batch_size=8, num_batch_threads=2))
    blockers = [BatchingSession(model, scheduler).schedule("k", {"x": np.ones((1, 1))})
                for _ in range(2)]
    deadline = time.monotonic() + 5
    while len(model.sizes) < 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    return gate, model, session, blockers


def test_a_failing_request_does_not_fail_its_batch(scheduler):
    gate, model, session, blockers = _both_batch_threads_held(scheduler)
    good = session.schedule("k", {"x": np.array([[1.0]])})
    bad = session.schedule("k", {"x": np.array([[-1.0]])})
    gate.set()
    np.testing.assert_array_equal(good.result(5)["y"], [[3.0]])
    with pytest.raises(ValueError, match="negative input"):
        bad.result(5)
    assert [f.result(5)["y"].shape for f in blockers] == [(1, 1), (1, 1)]
    assert "k" not in session._unbatchable  # a bad request says nothing about the model


def test_a_request_whose_client_left_does_not_fail_its_batch(scheduler):
    """A request cancelled while queued (its gRPC client's deadline passed, the awaiting
    task was cancelled and with it the Future) is dropped; its batch-mates get answers."""
    gate, model, session, blockers = _both_batch_threads_held(scheduler)
    gone = session.schedule("k", {"x": np.array([[1.0]])})
    stays = session.schedule("k", {"x": np.array([[2.0]])})
    assert gone.cancel()  # what asyncio.wrap_future's cancellation does to it
    gate.set()
    np.testing.assert_array_equal(stays.result(5)["y"], [[5.0]])
    assert [f.result(5)["y"].shape for f in blockers] == [(1, 1), (1, 1)]
    assert model.sizes[:3] == [1, 1, 1]  # its batch ran without it
    after = session.schedule("k", {"x": np.array([[3.0]])})  # the batch threads still work
    np.testing.assert_array_equal(after.result(5)["y"], [[7.0]])


# ------------------------------------------------------------------------ seed servables


@pytest.fixture(scope="module")
def seed_signatures(tmp_path_factory):
    """The three seed servables exported as the pipeline exports them, loaded back."""
    import tensorflow as tf

    from components.export_servable.export import export_servable
    from pipeline.catalog import load_catalog

    catalog = load_catalog(None)
    out = tmp_path_factory.mktemp("seeds")
    signatures = {}
    for servable in catalog.servables:
        path = str(out / servable.name)
        export_servable(servable.export_spec(), catalog.base_dir, path)
        loaded = tf.saved_model.load(path)
        signatures[servable.name] = (loaded, loaded.signatures["serving_default"])
    return signatures


def _runner(signature):
    import tensorflow as tf

    specs = signature.structured_input_signature[1]

    def run(key, arrays):
        feeds = {a: tf.constant(v, dtype=specs[a].dtype) for a, v in arrays.items()}
        return {k: v.numpy() for k, v in signature(**feeds).items()}

    return run


def _declared(signature):
    inputs = {a: s for a, s in signature.structured_input_signature[1].items()}
    outputs = signature.structured_outputs

    class Spec:
        def __init__(self, tensor_spec):
            rank = tensor_spec.shape.rank
            self.shape = None if rank is None else [d if d is not None else -1
                                                    for d in tensor_spec.shape.as_list()]

    return ({a: Spec(s) for a, s in inputs.items()},
            {a: Spec(s) for a, s in outputs.items()})


@pytest.mark.slow
def test_batched_answers_equal_single_calls_for_every_seed_servable(seed_signatures):
    from tests.serving_fixtures import jpeg

    scheduler = SharedBatchScheduler(2)
    try:
        requests = {
            "sum_two": [{"x": np.array([[i, i + 1, i + 2]] * (i % 3 + 1), np.float32)}
                        for i in range(16)],
            "fun_runif": [{"N": np.array(i % 4 + 1, np.int32)} for i in range(16)],
            "mobilenet_v2_test": [{"input_img": np.array([jpeg(16 * i, 64)], dtype=object)}
                                  for i in range(8)],
        }
        for name, (_, signature) in seed_signatures.items():
            run = _runner(signature)
            calls = []

            def counted(key, arrays, run=run, calls=calls):
                calls.append({a: v.shape for a, v in arrays.items()})
                return run(key, arrays)

            inputs, outputs = _declared(signature)
            session = BatchingSession(counted, scheduler, BatchingParameters(
                max_batch_size=16, batch_timeout_micros=20_000, num_batch_threads=2),
                batchable=lambda key, i=inputs, o=outputs: batchable_signature(i, o))
            batched, errors = _concurrently(session.run,
                                            [("serving_default", r) for r in requests[name]])
            assert errors == [None] * len(requests[name]), (name, errors)
            for request, answer in zip(requests[name], batched, strict=True):
                single = run("serving_default", request)
                assert answer.keys() == single.keys()
                for key in single:
                    assert answer[key].shape == single[key].shape, name
                    if name != "fun_runif":  # random numbers: shape and range only
                        np.testing.assert_array_equal(answer[key], single[key])
                    else:
                        assert ((answer[key] >= 0) & (answer[key] < 1)).all()
            if name == "sum_two":
                assert len(calls) < len(requests[name]), "sum_two was never merged"
            elif name == "fun_runif":
                assert len(calls) == len(requests[name])  # N is a scalar: alone
            else:
                # The seed MobileNet classifies every JPEG it is given (output [-1]): its
                # requests are merged, and each gets the label a call of its own gives.
                assert batchable_signature(inputs, outputs)
                assert len(calls) < len(requests[name]), "mobilenet_v2_test was never merged"
                assert max(c["input_img"][0] for c in calls) > 1
                assert "serving_default" not in session._unbatchable
    finally:
        scheduler.stop()


@pytest.mark.slow
def test_a_signature_that_takes_one_input_per_call_stops_being_batched():
    """Batched anyway (as TF Serving would), a signature that reshapes its input to a
    scalar (the serving fixtures' one-JPEG stand-in, the blog's original ``call``) fails
    merged: every request is answered alone, then it is no longer batched."""
    import tensorflow as tf

    from tests.serving_fixtures import jpeg, model_store

    signature = tf.saved_model.load(
        model_store("mobilenet_v2_test")["mobilenet_v2_test"]).signatures["serving_default"]
    run = _runner(signature)
    requests = [{"input_img": np.array([jpeg(16 * i, 64)], dtype=object)} for i in range(8)]
    scheduler = SharedBatchScheduler(2)
    try:
        session = BatchingSession(run, scheduler, BatchingParameters(
            max_batch_size=16, batch_timeout_micros=50_000, num_batch_threads=2))
        batched, errors = _concurrently(lambda a: session.run("serving_default", a),
                                        [(r,) for r in requests])
        assert errors == [None] * len(batched)
        for request, answer in zip(requests, batched, strict=True):
            np.testing.assert_array_equal(answer["output_0"],
                                          run("serving_default", request)["output_0"])
        assert "serving_default" in session._unbatchable
    finally:
        scheduler.stop()


# ------------------------------------------------------------------------ the server


@pytest.mark.slow
def test_server_with_batching_answers_concurrent_requests(tmp_path):
    import concurrent.futures

    import httpx

    from tests.serving_fixtures import add_version, running_server

    root = str(tmp_path / "root")
    add_version(root, "sum_two", 1, "sum_two")
    add_version(root, "fun_runif", 1, "fun_runif")
    params = tmp_path / "batching.config"
    params.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 5000 }\n"
                      "num_batch_threads { value: 2 }\nmax_enqueued_batches { value: 100 }\n")
    with running_server(root, "sum_two", "--enable-batching", "--batching-parameters-file",
                        str(params)) as server:
        assert "batching: on" in server.log_tail()

        def predict(i):
            body = {"instances": [[i, i + 1.0, i + 2.0]] * (i % 3 + 1)}
            return i, httpx.post(f"{server.url}/v1/models/sum_two:predict", json=body,
                                 timeout=30)

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            for i, response in pool.map(predict, range(48)):
                assert response.status_code == 200, response.text
                assert response.json() == {"predictions": [[i + 2, i + 3.0, i + 4.0]] *
                                           (i % 3 + 1)}
        # A scalar input is not batchable: it runs alone, as without batching.
        runif = httpx.post(f"{server.url}/v1/models/fun_runif:predict",
                           json={"inputs": {"N": 4}}, timeout=30)
        assert runif.status_code == 200 and len(runif.json()["outputs"]) == 4
        # Too large for max_batch_size: TF Serving's INVALID_ARGUMENT, a 400.
        big = httpx.post(f"{server.url}/v1/models/sum_two:predict",
                         json={"instances": [[1, 2, 3]] * 9}, timeout=30)
        assert big.status_code == 400
        assert "Task size 9 is larger than maximum batch size 8" in big.json()["error"]


@pytest.mark.parametrize("args, message", [
    (["--batching-parameters-file", "{params}"], "without --enable-batching"),
    (["--enable-batching", "--batching-parameters-file", "{params}"],
     "valid fields: max_batch_size"),
])
def test_server_refuses_bad_batching_flags(tmp_path, args, message):
    import subprocess
    import sys

    from tests.serving_fixtures import REPO

    params = tmp_path / "batching.config"
    params.write_text("max_batch_sise { value: 8 }\n")
    proc = subprocess.run(
        [sys.executable, "-m", "serving", "--serving-dir", str(tmp_path),
         *[a.format(params=params) for a in args]],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
