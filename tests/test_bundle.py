"""tfserving.bundle: SavedModels loaded and run as TF Serving runs them (a Session per version).

Expected values are TF Serving's own: ``predict_impl_test.cc`` (half_plus_two,
the counter's stateful signatures), ``g3doc/api_rest.md`` (half_plus_three)
and the REST guide's ``[1.0, 2.0, 5.0]`` example.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import tensorflow as tf

from tests.s3_fixtures import run_child
from tests.tfs_testdata import ASSET_CONTENTS, tfs_models
from tfserving.bundle import _lenient_callable, load_bundle, session_config
from tfserving.status import ServingError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def models():
    return tfs_models("half_plus_two", "half_plus_two_main_op", "half_plus_three",
                           "counter")


@pytest.fixture(scope="module")
def half_plus_two(models):
    with load_bundle(models["half_plus_two"]) as bundle:
        yield bundle


def _examples(**features: list[float]) -> np.ndarray:
    """Serialized tf.Examples, one per value: ``_examples(x=[1, 2])``."""
    rows = [dict(zip(features, values, strict=True))
            for values in zip(*features.values(), strict=True)]
    return np.array([tf.train.Example(features=tf.train.Features(feature={
        k: tf.train.Feature(float_list=tf.train.FloatList(value=[v])) for k, v in row.items()
    })).SerializeToString() for row in rows], dtype=object)


def _filename(bundle) -> bytes:
    """The value the init op assigned (it exists only if the main/legacy init op ran)."""
    return bundle.session.run("filename_tensor:0")


# ------------------------------------------------------------------ TF Serving's testdata


@pytest.mark.parametrize("kind", ["half_plus_two", "half_plus_two_main_op"])
def test_half_plus_two_answers_every_signature(models, kind):
    with load_bundle(models[kind]) as bundle:
        assert sorted(bundle.signature_defs) == [
            "classify_x_to_y", "regress_x2_to_y3", "regress_x_to_y", "regress_x_to_y2",
            "serving_default"]
        assert bundle.signature_defs["classify_x_to_y"].method_name == (
            "tensorflow/serving/classify")
        # The REST guide's instances [1.0, 2.0, 5.0]: shape [3] into the [-1, 1] input x.
        assert bundle.signature_defs["serving_default"].inputs["x"].tensor_shape.dim[1].size == 1
        y = bundle.run("serving_default", {"x": np.array([1.0, 2.0, 5.0], np.float32)})["y"]
        assert y.dtype == np.float32 and y.tolist() == [2.5, 3.0, 4.5]
        assert bundle.run("serving_default", {"x": np.float32([[1.0], [2.0], [5.0]])})[
            "y"].tolist() == [
            [2.5], [3.0], [4.5]]
        # predict_impl_test.cc PredictionSuccess: a scalar 2.0 gives a scalar 3.
        scalar = bundle.run("serving_default", {"x": np.float32(2.0)})["y"]
        assert scalar.shape == () and scalar == 3.0

        examples = _examples(x=[1.0, 2.0, 5.0])
        assert bundle.run("classify_x_to_y", {"inputs": examples})["scores"].tolist() == [
            [2.5], [3.0], [4.5]]
        assert bundle.run("regress_x_to_y", {"inputs": examples})["outputs"].tolist() == [
            [2.5], [3.0], [4.5]]
        assert bundle.run("regress_x_to_y2", {"inputs": examples})["outputs"].tolist() == [
            [3.5], [4.0], [5.5]]
        # predict_impl_test.cc PredictionWithNamedRegressionSignature: x2 = 2.0 -> 4.
        assert bundle.run("regress_x2_to_y3", {"inputs": np.float32(2.0)})["outputs"] == 4.0
        # Through tf.Example: x2 defaults to 0 when absent -> y3 = 3.
        assert bundle.run("regress_x_to_y", {"inputs": _examples(x=[4.0])})["outputs"] == [[4.0]]
        assert _filename(bundle) == b"foo.txt"
    with open(os.path.join(models[kind], "assets", "foo.txt")) as f:
        assert f.read() == ASSET_CONTENTS


def test_half_plus_three_runs_legacy_init_op_and_answers(models):
    with load_bundle(models["half_plus_three"]) as bundle:
        assert sorted(bundle.signature_defs) == ["serving_default", "tensorflow/serving/regress"]
        collections = bundle.meta_graph.collection_def
        assert "legacy_init_op" in collections and "saved_model_main_op" not in collections
        assert bundle.run("serving_default", {"x": np.float32([1.0, 2.0, 5.0])})["y"].tolist() == [
            3.5, 4.0, 5.5]
        # api_rest.md: regress on examples x=1, x=2 -> 3.5, 4.0.
        out = bundle.run("tensorflow/serving/regress", {"inputs": _examples(x=[1.0, 2.0])})
        assert out["outputs"].tolist() == [[3.5], [4.0]]
        assert _filename(bundle) == b"foo.txt"


def test_counter_stateful_signatures_as_predict_impl_test(models):
    with load_bundle(models["counter"]) as bundle:
        def output(key, inputs=None, **kw):
            value = bundle.run(key, inputs or {}, **kw)["output"]
            assert value.dtype == np.float32 and value.shape == ()
            return float(value)

        # The sequence: incr_counter twice, then get_counter.
        assert output("incr_counter") == 1.0
        assert output("incr_counter") == 2.0
        assert output("get_counter") == 2.0
        assert output("reset_counter") == 0.0
        # predict_impl_test.cc PredictionWithCustomizedSignatures, in its order.
        assert output("get_counter") == 0.0
        assert output("incr_counter") == 1.0
        assert output("reset_counter") == 0.0
        assert output("incr_counter", output_filter=["output"]) == 1.0
        assert output("incr_counter_by", {"delta": np.float32(3)}) == 4.0
        assert output("incr_counter_by", {"delta": np.float32(2)}) == 6.0
        with pytest.raises(ServingError, match="Expects arg.0. to be float but int64 is"):
            output("incr_counter_by", {"delta": 2})  # nothing is cast: a Python int is int64
    with load_bundle(models["counter"]) as fresh:  # state lives in the session only
        assert float(fresh.run("get_counter", {})["output"]) == 0.0


# ------------------------------------------------------------------ TF Serving's checks


@pytest.mark.parametrize("key, inputs, output_filter, code, message", [
    ("nope", {}, None, "FAILED_PRECONDITION", 'Serving signature key "nope" not found.'),
    ("serving_default", {}, None, "INVALID_ARGUMENT",
     "input size does not match signature: 0!=1 len({}) != len({x}). Sent extra: {}. "
     "Missing but required: {x}."),
    ("serving_default", {"x": [1.0], "w": [1.0], "z": [2.0]}, None, "INVALID_ARGUMENT",
     "input size does not match signature: 3!=1 len({w,x,z}) != len({x}). Sent extra: {w,z}. "
     "Missing but required: {}."),
    ("serving_default", {"z": [1.0]}, None, "INVALID_ARGUMENT",
     "Signature input alias: x(feed name: x:0) not found in request and no default value "
     "provided. Inputs expected to be in the request {z}, or default input alias set: "),
    ("serving_default", {"x": [1.0]}, ["q"], "INVALID_ARGUMENT",
     "output tensor alias not found in signature: q Outputs expected to be in the set {y}."),
    ("serving_default", {"x": [1.0]}, ["y", "y"], "INVALID_ARGUMENT",
     "duplicate output tensor alias: y"),
])
def test_request_errors_have_tf_serving_codes_and_messages(half_plus_two, key, inputs,
                                                           output_filter, code, message):
    with pytest.raises(ServingError) as info:
        half_plus_two.run(key, inputs, output_filter)
    assert (info.value.code, info.value.message) == (code, message)


def test_signature_defaults_fill_missing_inputs(tmp_path):
    """SignatureDef.defaults, as TensorFlow's GetInputValues applies them for TF Serving."""
    v1 = tf.compat.v1
    path = str(tmp_path / "defaults")
    with tf.Graph().as_default(), v1.Session() as session:  # graph mode for this block only
        x = v1.placeholder(tf.float32, [None], name="x")
        k = v1.placeholder(tf.float32, [], name="k")
        sig = v1.saved_model.predict_signature_def({"x": x, "k": k}, {"y": x * k})
        sig.defaults["k"].CopyFrom(tf.make_tensor_proto(np.float32(10.0)))
        builder = v1.saved_model.Builder(path)
        builder.add_meta_graph_and_variables(session, ["serve"],
                                             signature_def_map={"serving_default": sig})
        builder.save()
    with load_bundle(path) as bundle:
        x = np.float32([1.0, 2.0])
        assert bundle.run("serving_default", {"x": x})["y"].tolist() == [10.0, 20.0]
        assert bundle.run("serving_default", {"x": x, "k": np.float32(3)})["y"].tolist() == [
            3.0, 6.0]
        # Feeds are in the order of their sorted tensor names (k:0, x:0): x is arg 1.
        with pytest.raises(ServingError, match=r"^Expects arg\[1\] to be float but double"):
            bundle.run("serving_default", {"x": [1.0], "k": np.float32(3)})
        for inputs, message in [
            ({"q": [1.0]}, "Signature input alias: x(feed name: x:0) not found in request and "
                           "no default value provided. Inputs expected to be in the request "
                           "{q}, or default input alias set: k"),
            ({"x": [1.0], "q": 2.0}, "Inputs contains invalid name. Used request inputs: x, "
                                     "request input: q,x"),
        ]:
            with pytest.raises(ServingError) as info:
                bundle.run("serving_default", inputs)
            assert (info.value.code, info.value.message) == ("INVALID_ARGUMENT", message)


def test_op_errors_keep_tensorflow_code_and_message_only(half_plus_two):
    # A string fed to a float input: the session's dtype check (predict_util_test.cc
    # InputTensorsHaveWrongType: INVALID_ARGUMENT "to be float but string is provided").
    with pytest.raises(ServingError) as info:
        half_plus_two.run("serving_default", {"x": np.array([b"any_key"], dtype=object)})
    assert (info.value.code, info.value.message) == (
        "INVALID_ARGUMENT", "Expects arg[0] to be float but string is provided")
    # A runtime error inside the graph: a malformed tf.Example, TF Serving's message.
    with pytest.raises(ServingError) as info:
        half_plus_two.run("regress_x_to_y", {"inputs": np.array([b"not a proto"], object)})
    assert info.value.code == "INVALID_ARGUMENT"
    assert info.value.message.startswith("Could not parse example input, value: 'not a proto'")
    assert "Traceback" not in info.value.message and ".py" not in info.value.message
    assert REPO not in info.value.message
    # Non-UTF-8 bytes in TensorFlow's message: its binding raises UnicodeDecodeError instead
    # of an OpError; still a 400 with the message.
    with pytest.raises(ServingError) as info:
        half_plus_two.run("regress_x_to_y", {"inputs": np.array([b"\xffnot a proto"], object)})
    assert info.value.code == "INVALID_ARGUMENT"
    assert info.value.message.startswith("Could not parse example input, value: '\\xffnot")


def test_feeds_must_have_the_input_dtype(half_plus_two):
    """Nothing is cast: Session::Run refuses a feed of another dtype (FunctionCallFrame::
    SetArgs; predict_util_test.cc PredictionInvalidTensor: "Expects arg[0] to be float but
    bool is provided"), so a gRPC TensorProto of DT_DOUBLE for a float input is a 400."""
    for value, given in ((np.array([1.0, 2.0, 5.0]), "double"), ([1, 2, 5], "int64"),
                         (np.array([1, 2, 5], np.int8), "int8"), (np.bool_(True), "bool"),
                         (np.float16([1.0]), "half"), (np.array(["1"]), "string")):
        with pytest.raises(ServingError) as info:
            half_plus_two.run("serving_default", {"x": value})
        assert (info.value.code, info.value.message) == (
            "INVALID_ARGUMENT", f"Expects arg[0] to be float but {given} is provided")
    y = half_plus_two.run("serving_default", {"x": np.float32([1, 2, 5])})["y"]
    assert y.dtype == np.float32 and y.tolist() == [2.5, 3.0, 4.5]
    # A string input takes bytes objects or text (TensorFlow encodes it as UTF-8).
    for examples in (_examples(x=[1.0]), _examples(x=[1.0]).astype(bytes)):
        assert half_plus_two.run("regress_x_to_y", {"inputs": examples})["outputs"] == [[2.5]]


def test_output_filter_and_callable_cache(models):
    with load_bundle(models["half_plus_two"]) as bundle:
        examples = _examples(x=[1.0])
        x = np.float32([1.0])
        assert bundle.run("serving_default", {"x": x}, ["y"])["y"].tolist() == [2.5]
        for _ in range(3):
            bundle.run("serving_default", {"x": x})
            bundle.run("regress_x_to_y", {"inputs": examples})
        # One callable per (signature, fed inputs, fetched outputs): the filtered and the
        # unfiltered call of serving_default fetch the same output, so share one.
        assert len(bundle._callables) == 2  # noqa: SLF001 - the cache is the thing tested


def test_concurrent_calls_on_one_session(half_plus_two):
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for _ in range(200):
                x = rng.integers(0, 100, size=(int(rng.integers(1, 8)), 1)).astype(np.float32)
                y = half_plus_two.run("serving_default", {"x": x})["y"]
                np.testing.assert_array_equal(y, 0.5 * x + 2.0)
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]


# ------------------------------------------------------------------ loading


def test_load_errors(tmp_path, models):
    with pytest.raises(ServingError) as info:
        load_bundle(str(tmp_path / "missing"))
    assert info.value.code == "NOT_FOUND" and str(tmp_path) not in info.value.message
    with pytest.raises(ServingError) as info:
        load_bundle(models["counter"], tags=("serve", "gpu"))
    assert (info.value.code, info.value.message) == (
        "NOT_FOUND", "Could not find meta graph def matching supplied tags: { gpu serve }")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"\x00this is not a SavedModel\xff" * 10)
    with pytest.raises(ServingError) as info:
        load_bundle(str(broken))
    assert info.value.code == "DATA_LOSS" and str(tmp_path) not in info.value.message
    with pytest.raises(ValueError, match="intra_op_threads must be an integer >= 0"):
        load_bundle(models["counter"], intra_op_threads=-1)


def test_session_threads_and_closed_bundle(models):
    config = session_config(intra_op_threads=1, inter_op_threads=2)
    assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == (1, 2)
    bundle = load_bundle(models["half_plus_three"], intra_op_threads=1, inter_op_threads=1)
    assert bundle.run("serving_default", {"x": np.float32([1.0])})["y"].tolist() == [3.5]
    bundle.close()
    bundle.close()
    with pytest.raises(ServingError) as info:
        bundle.run("serving_default", {"x": np.float32([1.0])})
    assert info.value.code == "FAILED_PRECONDITION"


def test_loads_through_tensorflow_filesystems(models):
    """A ram:// copy loads: paths go through TF's filesystem layer, as in TF Serving."""
    source = models["half_plus_three"]
    target = "ram://bundle-test/half_plus_three/1"
    for dirpath, _dirs, files in os.walk(source):
        rel = os.path.relpath(dirpath, source)
        tf.io.gfile.makedirs(target if rel == "." else f"{target}/{rel}")
        for name in files:
            tf.io.gfile.copy(os.path.join(dirpath, name),
                             f"{target}/{name}" if rel == "." else f"{target}/{rel}/{name}",
                             overwrite=True)
    with load_bundle(target) as bundle:
        assert bundle.run("serving_default", {"x": np.float32([1.0, 2.0, 5.0])})["y"].tolist() == [
            3.5, 4.0, 5.5]
        assert _filename(bundle) == b"foo.txt"


@pytest.mark.slow
def test_loads_from_s3(models, s3_server, s3_bucket):
    """An s3:// copy (moto on 127.0.0.1, tensorflow-io's S3 filesystem) loads and answers."""
    source = models["half_plus_three"]
    for dirpath, _dirs, files in os.walk(source):
        for name in files:
            full = os.path.join(dirpath, name)
            s3_server.client().upload_file(
                full, s3_bucket, "half_plus_three/1/" + os.path.relpath(full, source))
    # In a child: tensorflow-io's S3 filesystem can abort at interpreter exit.
    result = run_child(f"""
import numpy as np
from tfserving.bundle import load_bundle
bundle = load_bundle("s3://{s3_bucket}/half_plus_three/1")
result = {{"y": bundle.run("serving_default", {{"x": np.float32([1.0, 2.0, 5.0])}})["y"].tolist(),
          "filename": bundle.session.run("filename_tensor:0").decode()}}
""")
    assert result == {"y": [3.5, 4.0, 5.5], "filename": "foo.txt"}


# ------------------------------------------------------------------ the project's servables


def _export_seed(name: str, export_dir: str) -> str:
    from components.export_servable.export import export_servable
    from pipeline.catalog import load_catalog

    catalog = load_catalog(os.path.join(REPO, "servables", "catalog.yaml"))
    export_servable(catalog.select([name])[0].export_spec(), catalog.base_dir, export_dir)
    return export_dir


@pytest.fixture(scope="module")
def seed_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("seed")
    return {name: _export_seed(name, str(root / name)) for name in ("sum_two", "fun_runif")}


def test_seed_servables_answer_as_tf_saved_model_load(seed_dir):
    x = np.array([[1.0, 2.0, 3.0], [-1.5, 0.0, 7.25]], np.float32)
    expected = tf.saved_model.load(seed_dir["sum_two"]).signatures["serving_default"](
        x=tf.constant(x))
    with load_bundle(seed_dir["sum_two"]) as bundle:
        got = bundle.run("serving_default", {"x": x})
    assert got.keys() == expected.keys() == {"output_0"}
    np.testing.assert_array_equal(got["output_0"], expected["output_0"].numpy())
    assert got["output_0"].tolist() == [[3.0, 4.0, 5.0], [0.5, 2.0, 9.25]]

    with load_bundle(seed_dir["fun_runif"]) as bundle:
        runif = bundle.run("serving_default", {"N": np.int32(5)})["output_0"]
        assert runif.shape == (5,) and runif.dtype == np.float32
        assert ((runif >= 0) & (runif < 1)).all()
        for value, given in ((5, "int64"), (5.0, "double")):  # Session::Run's dtype check
            with pytest.raises(ServingError) as info:
                bundle.run("serving_default", {"N": value})
            assert (info.value.code, info.value.message) == (
                "INVALID_ARGUMENT", f"Expects arg[0] to be int32 but {given} is provided")


@pytest.mark.slow
def test_seed_mobilenet_answers_as_tf_saved_model_load(tmp_path):
    path = _export_seed("mobilenet_v2_test", str(tmp_path / "mobilenet_v2_test"))
    with open(os.path.join(REPO, "data", "images", "sample.jpg"), "rb") as f:
        jpeg = f.read()
    expected = tf.saved_model.load(path).signatures["serving_default"](
        input_img=tf.constant([jpeg]))["output_0"].numpy()
    with load_bundle(path) as bundle:
        got = bundle.run("serving_default", {"input_img": np.array([jpeg], dtype=object)})
    assert got["output_0"].dtype == object and got["output_0"].shape == (1,)
    assert got["output_0"].tolist() == expected.tolist()
    assert isinstance(got["output_0"][0], bytes)


def test_evaluator_runs_signatures_through_the_bundle(models):
    """A TF1 export (legacy_init_op, reference variables' graph) is evaluated as served: the
    REST guide's requests, answered with TF Serving's numbers, bless it."""
    import base64

    from components.servable_evaluator.checks import evaluate
    from components.specs import Checks, EvaluationSpec, Example, Expectation

    serialized = base64.b64encode(_examples(x=[1.0])[0]).decode()
    examples = (
        Example("predict.json", {"instances": [1.0, 2.0, 5.0]},
                Expectation(response={"predictions": [3.5, 4.0, 5.5]})),
        Example("regress.json", {"signature_name": "tensorflow/serving/regress",
                                 "inputs": {"inputs": [{"b64": serialized}]}},
                Expectation(response={"outputs": [[3.5]]})),
    )
    report = evaluate(models["half_plus_three"], EvaluationSpec(
        "half_plus_three", ("serving_default",), examples, Checks(warm_calls=2)))
    assert report["blessed"], report["reasons"]
    assert sorted(report["signatures"]) == ["serving_default", "tensorflow/serving/regress"]


def test_server_session_threads_use_tf_serving_flags(tmp_path, monkeypatch):
    """``--tensorflow_{intra,inter}_op_parallelism`` (TF Serving's names, dashed or not) reach
    every version's session; TF Serving's default inter-op setting is 0 (TensorFlow's)."""
    import runner
    from serving import main
    from serving.http import create_app

    seen: dict = {}
    monkeypatch.setattr(main, "serve", lambda *args, **kwargs: seen.update(kwargs))
    assert runner.main(["serve", "--serving-dir", str(tmp_path),
                        "--tensorflow-intra-op-parallelism", "2",
                        "--tensorflow_inter_op_parallelism", "3"]) == 0
    assert (seen["intra_op_threads"], seen["inter_op_threads"]) == (2, 3)
    assert runner.main(["serve", "--serving-dir", str(tmp_path),
                        "--tensorflow_intra_op_parallelism", "4"]) == 0
    assert (seen["intra_op_threads"], seen["inter_op_threads"]) == (4, 0)
    with pytest.raises(SystemExit):
        runner.main(["serve", "--serving-dir", str(tmp_path),
                     "--tensorflow-inter-op-parallelism", "-1"])

    app = create_app(str(tmp_path), intra_op_threads=1, inter_op_threads=2)
    loader = app.state.registry._loader  # noqa: SLF001 - what the registry loads versions with
    assert loader.keywords == {"intra_op_threads": 1, "inter_op_threads": 2}


# ------------------------------------------------------------------ the private API guard


def test_private_callable_api_still_behaves():
    """Fails if a TensorFlow upgrade changes what tfserving.bundle._lenient_callable uses.

    It relies on ``Session._make_callable_from_options`` returning a callable that takes
    feeds positionally, returns fetches as a list in order, checks dtypes only (a ``[3]``
    feed into a ``[?, 1]`` tensor runs, as in TF Serving's C++ ``Session::Run``), raises
    ``tf.errors.OpError`` subclasses, and can be called from several threads.
    """
    assert hasattr(tf.compat.v1.Session, "_make_callable_from_options"), (
        "TensorFlow removed Session._make_callable_from_options: rewrite "
        "tfserving.bundle._lenient_callable")
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 1], name="x")
        tf.identity(x * 0.5 + 2.0, name="y")
        tf.identity(x * 0.5 + 3.0, name="y2")
    with tf.compat.v1.Session(graph=graph) as session:
        call = _lenient_callable(session, ["x:0"], ["y2:0", "y:0"])
        out = call(np.array([1.0, 2.0, 5.0], np.float32))
        assert isinstance(out, list) and len(out) == 2, f"callable returned {out!r}"
        assert out[0].tolist() == [3.5, 4.0, 5.5] and out[1].tolist() == [2.5, 3.0, 4.5], (
            "fetch order or the lenient feed shape changed")
        with pytest.raises(tf.errors.InvalidArgumentError):
            call(np.array(["a"], dtype=object))
        results: list[list[float]] = []
        threads = [threading.Thread(target=lambda: results.append(
            call(np.ones([2], np.float32))[1].tolist())) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == [[2.5, 2.5]] * 4
        # Why the private path: the public make_callable still checks static shapes in
        # Python. If this stops raising, the public API may do and the private one can go.
        public = session.make_callable(["y:0"], feed_list=["x:0"])
        with pytest.raises(ValueError, match="Cannot feed value of shape"):
            public(np.array([1.0, 2.0, 5.0], np.float32))


def test_caller_thread_callables_run_ops_on_the_calling_thread():
    """``caller_thread=True`` (RunOptions.inter_op_thread_pool = -1) runs the graph's ops on
    the thread that calls, with the same results; by default they run on the session's
    inter-op pool. A py_func op records the thread it runs on."""
    ran_on: list[int] = []

    def record(x):
        ran_on.append(threading.get_ident())
        return x

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None], name="x")
        seen = tf.compat.v1.py_func(record, [x], tf.float32, stateful=True)
        tf.identity(seen * 0.5 + 2.0, name="y")
    with tf.compat.v1.Session(graph=graph) as session:
        pooled = _lenient_callable(session, ["x:0"], ["y:0"])
        inline = _lenient_callable(session, ["x:0"], ["y:0"], caller_thread=True)
        feed = np.array([1.0, 2.0, 5.0], np.float32)
        assert pooled(feed)[0].tolist() == [2.5, 3.0, 4.5]
        assert inline(feed)[0].tolist() == [2.5, 3.0, 4.5]
        assert ran_on[0] != threading.get_ident(), "the default callable ran on the caller"
        assert ran_on[1] == threading.get_ident(), (
            "RunOptions.inter_op_thread_pool = -1 no longer runs ops on the calling thread")


def test_bundle_switches_to_caller_thread_with_same_answers(models):
    with load_bundle(models["half_plus_two"]) as bundle:
        x = np.array([[1.0], [2.0], [5.0]], np.float32)
        before = bundle.run("serving_default", {"x": x})["y"].tolist()
        bundle.run_on_caller_thread()
        assert bundle.run("serving_default", {"x": x})["y"].tolist() == before == \
            [[2.5], [3.0], [4.5]]
