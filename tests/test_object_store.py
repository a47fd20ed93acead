"""Object stores end to end (issue 13): the pipeline, the pusher and the server on a bucket.

Two kinds of tests:

- Fast unit tests on TensorFlow's in-memory filesystem (``ram://``), in this
  process: export, evaluation and publication through ``tf.io.gfile`` only.
- Tests against a real S3 API server on loopback (moto, ``tests/s3_server.py``),
  which TensorFlow reaches through tensorflow-io's S3 filesystem and the tests
  inspect with boto3. The project's code runs in child processes (``runner.py``,
  or snippets run by ``run_child``): a process that used tensorflow-io's S3
  filesystem can abort at interpreter exit after everything succeeded
  (tensorflow/io#2039), so children are judged by their exit code only where the
  program ends with ``os._exit`` (``runner.py``), else by an explicit result marker.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import httpx
import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from tests.s3_fixtures import run_child
from tests.serving_fixtures import free_port

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVABLES = ("sum_two", "fun_runif", "mobilenet_v2_test")
_ram_roots = itertools.count(1)


def _parse_config(data: bytes) -> model_server_config_pb2.ModelServerConfig:
    return text_format.Parse(data.decode(), model_server_config_pb2.ModelServerConfig())


def _servable(name: str, catalog_path: str | None = None):
    from pipeline.catalog import load_catalog

    return load_catalog(catalog_path).select([name])[0]


# ============================================================================ ram://


@pytest.fixture
def ram_root():
    """A fresh ``ram://`` prefix, removed afterwards."""
    import tensorflow as tf

    # Fixed-width names: TensorFlow's ram:// lists by bare string prefix, so a root
    # named ...-1 would also "contain" the entries of ...-10.
    root = f"ram://tfx-servables-test-{os.getpid()}-{next(_ram_roots):06d}"
    yield root
    with contextlib.suppress(tf.errors.NotFoundError):  # ram:// directories are implicit
        tf.io.gfile.rmtree(root)


@pytest.fixture(scope="module")
def sum_two_local(tmp_path_factory) -> str:
    """sum_two exported to a local directory (the reference for the ram:// exports)."""
    from components.export_servable.export import export_servable

    path = str(tmp_path_factory.mktemp("local") / "sum_two")
    export_servable(_servable("sum_two").export_spec(), PROJECT, path)
    return path


@pytest.fixture(scope="module")
def adder_exports(tmp_path_factory) -> dict[int, str]:
    """Local exports of sum_two adding 2, 3 and 4: three different models."""
    import shutil

    from components.export_servable.export import export_servable

    project = tmp_path_factory.mktemp("adders")
    shutil.copytree(os.path.join(PROJECT, "servables"), project / "servables",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(os.path.join(PROJECT, "data"), project / "data")
    adder = project / "servables" / "adder.py"
    source = adder.read_text()
    spec = _servable("sum_two", str(project / "servables" / "catalog.yaml")).export_spec()
    exports = {}
    for increment in (2, 3, 4):
        adder.write_text(source.replace("x + 2", f"x + {increment}"))
        exports[increment] = str(project / "exports" / str(increment))
        export_servable(spec, str(project), exports[increment])
    return exports


def _tree_sizes(root: str) -> dict[str, int]:
    import tensorflow as tf

    from tfserving.filesystems import walk

    sizes = {}
    for directory, _, files in walk(root):
        for name in files:
            path = f"{directory.rstrip('/')}/{name}"
            sizes[path[len(root):].lstrip("/")] = tf.io.gfile.stat(path).length
    return sizes


def test_export_to_ram_describes_what_it_wrote(ram_root, sum_two_local):
    from components.export_servable.export import describe_saved_model, export_servable

    export_dir = f"{ram_root}/pipeline/model/Format-Serving"
    description = export_servable(_servable("sum_two").export_spec(), PROJECT, export_dir)
    sizes = _tree_sizes(export_dir)
    assert "saved_model.pb" in sizes
    assert description["size_bytes"] == sum(sizes.values()) > 0
    local = describe_saved_model(sum_two_local)
    # Where a model is stored changes nothing of what it is.
    assert description["fingerprint"] == local["fingerprint"]
    assert description["signatures"] == local["signatures"]
    assert description["signatures"]["serving_default"]["inputs"] == {
        "x": {"dtype": "float32", "shape": [None, 3]}}


def test_evaluator_blesses_a_model_on_ram(ram_root):
    from components.export_servable.export import export_servable
    from components.servable_evaluator.checks import evaluate

    servable = _servable("sum_two")
    export_dir = f"{ram_root}/export"
    export_servable(servable.export_spec(), PROJECT, export_dir)
    report = evaluate(export_dir, servable.evaluation_spec())
    assert report["blessed"], report["reasons"]


def test_publish_on_ram_versions_unchanged_and_retention_with_pins(ram_root, project):
    import tensorflow as tf

    from components.export_servable.export import export_servable
    from components.versioned_pusher.publish import list_versions, publish

    serving = f"{ram_root}/serving"
    adder = project / "servables" / "adder.py"
    source = adder.read_text()
    spec = _servable("sum_two", str(project / "servables" / "catalog.yaml")).export_spec()

    exports = itertools.count()

    def export(increment: int) -> str:
        adder.write_text(source.replace("x + 2", f"x + {increment}"))
        # A new directory each time: ram:// appends to a file written twice.
        path = f"{ram_root}/exports/{next(exports):03d}"
        export_servable(spec, str(project), path)
        return path

    first = publish(export(2), serving, "sum_two")
    assert (first.pushed, first.version) == (True, 1)
    assert first.destination == f"{serving}/sum_two/1"
    assert tf.io.gfile.exists(f"{serving}/sum_two/1/saved_model.pb")
    assert tf.saved_model.load(f"{serving}/sum_two/1").signatures["serving_default"](
        x=tf.constant([[1.0, 2.0, 3.0]]))["output_0"].numpy().tolist() == [[3.0, 4.0, 5.0]]
    # No temp or staging leftovers that TF Serving would see as versions.
    assert tf.io.gfile.listdir(f"{serving}/sum_two") in (["1"], ["1/"])

    again = publish(export(2), serving, "sum_two")
    assert (again.pushed, again.version, again.reason) == (False, 1, "unchanged")
    assert list_versions(f"{serving}/sum_two") == [1]

    # Pin version 1 with a label in models.config; keep only the newest version.
    tf.io.gfile.remove(f"{serving}/models.config")  # (rewriting a ram:// file appends)
    with tf.io.gfile.GFile(f"{serving}/models.config", "w") as f:
        f.write('model_config_list { config { name: "sum_two" base_path: "/models/sum_two" '
                'model_platform: "tensorflow" version_labels { key: "stable" value: 1 } } }')
    assert publish(export(3), serving, "sum_two", keep=1).version == 2
    third = publish(export(4), serving, "sum_two", keep=1)
    assert third.version == 3 and third.removed_versions == ()  # 2 was serving: kept
    fourth = publish(export(5), serving, "sum_two", keep=1, retention_grace=0)
    assert fourth.version == 4 and fourth.removed_versions == (2,)
    assert list_versions(f"{serving}/sum_two") == [1, 3, 4]
    assert not tf.io.gfile.exists(f"{serving}/sum_two/2")


def test_failed_publish_on_ram_leaves_no_version(ram_root, sum_two_local, tmp_path):
    import shutil

    import tensorflow as tf

    from components.versioned_pusher.publish import list_versions, publish

    # A real failure partway through the copy: a file that cannot be read.
    broken = tmp_path / "broken"
    shutil.copytree(sum_two_local, broken)
    os.symlink(tmp_path / "missing", broken / "variables" / "a-dangling-link")
    serving = f"{ram_root}/serving"
    with pytest.raises(Exception):  # noqa: B017 - whichever error the filesystem raises
        publish(str(broken), serving, "sum_two")
    assert list_versions(f"{serving}/sum_two") == []
    assert not tf.io.gfile.exists(f"{serving}/sum_two/1/saved_model.pb")


# ============================================================================ S3 server


def test_tensorflow_reaches_the_s3_test_server(s3_server, s3_bucket):
    """The issue's check: save, list, load, call and rename on the bucket."""
    result = run_child(textwrap.dedent(f"""
        import tensorflow as tf
        from tfserving.filesystems import ensure_filesystem

        root = ensure_filesystem("s3://{s3_bucket}/m")

        class Adder(tf.Module):
            @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
            def add(self, x):
                return {{"y": x + 2}}

        adder = Adder()
        tf.saved_model.save(adder, root + "/1", signatures={{"serving_default": adder.add}})
        listing = sorted(name.rstrip("/") for name in tf.io.gfile.listdir(root + "/1"))
        loaded = tf.saved_model.load(root + "/1")
        y = loaded.signatures["serving_default"](x=tf.constant([1.0, 2.0]))["y"]
        tf.io.gfile.rename(root + "/1/fingerprint.pb", root + "/1/moved.pb")
        result = {{"listing": listing, "y": y.numpy().tolist()}}
    """))
    assert result == {"listing": ["fingerprint.pb", "saved_model.pb", "variables"],
                      "y": [3.0, 4.0]}
    keys = s3_server.keys(s3_bucket)
    assert "m/1/moved.pb" in keys and "m/1/fingerprint.pb" not in keys
    assert "m/1/saved_model.pb" in keys


def test_ensure_filesystem_names_unknown_schemes():
    from tfserving.filesystems import ensure_filesystem

    assert ensure_filesystem("/local/path") == "/local/path"
    assert ensure_filesystem("ram://x/y") == "ram://x/y"
    with pytest.raises(ValueError, match=r"'nope://'.*supported: local paths, .*s3://"):
        ensure_filesystem("nope://bucket/key")


def _runner(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """``runner.py`` as a user runs it. It ends with os._exit: its exit code is reliable."""
    return subprocess.run([sys.executable, os.path.join(PROJECT, "runner.py"), *args],
                          cwd=PROJECT, capture_output=True, text=True, timeout=timeout)


class _S3Run:
    def __init__(self, server, bucket: str, local: str):
        self.server, self.bucket, self.local = server, bucket, local
        self.output_dir = f"s3://{bucket}/run"
        self.serving_root = f"s3://{bucket}/serving"
        self.metadata = os.path.join(local, "metadata.sqlite")

    def flags(self) -> list[str]:
        return ["--output-dir", self.output_dir, "--serving-dir", self.serving_root,
                "--metadata", self.metadata]

    def serving_objects(self) -> dict[str, bytes]:
        return {k: self.server.read(self.bucket, k)
                for k in self.server.keys(self.bucket, "serving/")}


@pytest.fixture(scope="module")
def s3_run(s3_server, tmp_path_factory):
    """The three seed servables published by ``runner.py run`` into a bucket."""
    bucket = f"run-{os.getpid()}"
    s3_server.create_bucket(bucket)
    run = _S3Run(s3_server, bucket, str(tmp_path_factory.mktemp("s3-run")))
    run.first = _runner("run", *run.flags())
    return run


@pytest.mark.slow
def test_run_publishes_every_servable_into_the_bucket(s3_run):
    first = s3_run.first
    assert first.returncode == 0, first.stderr[-6000:]
    keys = s3_run.server.keys(s3_run.bucket)
    for name in SERVABLES:
        assert f"serving/{name}/1/saved_model.pb" in keys, keys
        assert "version 1" in next(line for line in first.stdout.splitlines()
                                   if line.startswith(name))
    # Only versions and models.config are visible under the serving root.
    top = {k.split("/")[1] for k in keys if k.startswith("serving/")}
    assert top == {*SERVABLES, "models.config"}, top
    assert not [k for k in keys if "/.tmp" in k]
    config = _parse_config(s3_run.server.read(s3_run.bucket, "serving/models.config"))
    assert sorted(c.name for c in config.model_config_list.config) == sorted(SERVABLES)
    # The pipeline root is in the bucket; ML Metadata stays in local SQLite.
    assert any(k.startswith("run/pipeline/ExportServable.sum_two/") for k in keys)
    assert os.path.isfile(s3_run.metadata)

    status = _runner("status", *s3_run.flags())
    assert status.returncode == 0, status.stderr[-3000:]
    assert all(name in status.stdout for name in SERVABLES)


@pytest.mark.slow
def test_unchanged_rerun_publishes_nothing(s3_run):
    before = s3_run.serving_objects()
    second = _runner("run", *s3_run.flags())
    assert second.returncode == 0, second.stderr[-6000:]
    assert s3_run.serving_objects() == before
    for name in SERVABLES:
        row = next(line for line in second.stdout.splitlines() if line.startswith(name))
        assert "unchanged (v1)" in row, row


def _predict(url: str, name: str, body: bytes, version: int | None = None) -> httpx.Response:
    path = f"/v1/models/{name}" + (f"/versions/{version}" if version else "") + ":predict"
    return httpx.post(url + path, content=body, timeout=60)


def _wait(condition, timeout: float, what: str, log) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}:\n{log()}")


@pytest.mark.slow
def test_serve_answers_from_the_bucket_and_picks_up_a_new_version(s3_run, tmp_path):
    assert s3_run.first.returncode == 0, s3_run.first.stderr[-3000:]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, os.path.join(PROJECT, "runner.py"), "serve",
             "--serving-dir", s3_run.serving_root, "--port", str(port), "--grpc-port", "0"],
            cwd=PROJECT, stdout=log, stderr=subprocess.STDOUT)
    tail = lambda: log_path.read_text(errors="replace")[-4000:]  # noqa: E731
    try:
        def ready() -> bool:
            assert server.poll() is None, tail()
            return all(httpx.get(f"{url}/v1/models/{m}", timeout=2).status_code == 200
                       for m in SERVABLES)

        _wait(ready, 180, "the three models on S3", tail)
        requests = {m: (PROJECT + f"/data/requests/{m}.json") for m in SERVABLES}
        bodies = {m: open(p, "rb").read() for m, p in requests.items()}
        answer = _predict(url, "sum_two", bodies["sum_two"])
        assert answer.status_code == 200, answer.text
        assert answer.json() == json.load(open(f"{PROJECT}/data/responses/sum_two.json"))
        runif = _predict(url, "fun_runif", bodies["fun_runif"])
        assert runif.status_code == 200, runif.text
        assert len(runif.json()["outputs"]) == 5
        label = _predict(url, "mobilenet_v2_test", bodies["mobilenet_v2_test"])
        assert label.status_code == 200, label.text
        labels = open(f"{PROJECT}/data/labels/ImageNetLabels.txt").read().splitlines()
        assert label.json()["outputs"][0] in labels

        # Another writer publishes version 2 (saved_model.pb last, as the pusher does).
        client = s3_run.server.client()
        sources = s3_run.server.keys(s3_run.bucket, "serving/sum_two/1/")
        for key in sorted(sources, key=lambda k: k.endswith("/saved_model.pb")):
            client.copy_object(Bucket=s3_run.bucket, Key=key.replace("/1/", "/2/", 1),
                               CopySource={"Bucket": s3_run.bucket, "Key": key})

        def version_2_available() -> bool:
            status = httpx.get(f"{url}/v1/models/sum_two/versions/2", timeout=2)
            return (status.status_code == 200 and status.json()["model_version_status"][0]
                    ["state"] == "AVAILABLE")

        _wait(version_2_available, 60, "version 2 of sum_two", tail)
        second = _predict(url, "sum_two", bodies["sum_two"], version=2)
        assert second.status_code == 200 and second.json() == answer.json(), second.text
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


_PUBLISH_PRELUDE = """
import json, os
from components.versioned_pusher.publish import list_versions, publish
from tfserving.filesystems import ensure_filesystem
"""


@pytest.mark.slow
def test_retention_and_pins_on_the_bucket(s3_server, s3_bucket, adder_exports):
    """keep=1 removes old versions from the bucket, never a labelled (pinned) one."""
    serving = f"s3://{s3_bucket}/serving"
    s3_server.client().put_object(
        Bucket=s3_bucket, Key="serving/models.config",
        Body=b'model_config_list { config { name: "sum_two" base_path: "/models/sum_two" '
             b'model_platform: "tensorflow" version_labels { key: "stable" value: 1 } } }')
    sources = [adder_exports[i] for i in (2, 3, 4, 2, 2)]
    result = run_child(_PUBLISH_PRELUDE + textwrap.dedent(f"""
        serving = ensure_filesystem({serving!r})
        outcomes = []
        for source in {sources!r}:
            r = publish(source, serving, "sum_two", keep=1, retention_grace=0)
            outcomes.append([r.version, r.reason, list(r.removed_versions)])
        result = {{"outcomes": outcomes, "versions": list_versions(serving + "/sum_two")}}
    """))
    # Each push keeps the version that was serving before it (3 keeps 2, 4 keeps 3).
    assert result["outcomes"] == [[1, "pushed", []], [2, "pushed", []], [3, "pushed", []],
                                  [4, "pushed", [2]], [4, "unchanged", []]]
    assert result["versions"] == [1, 3, 4]
    keys = s3_server.keys(s3_bucket, "serving/sum_two/")
    assert {k.split("/")[2] for k in keys} == {"1", "3", "4"}, keys
    assert "serving/sum_two/4/saved_model.pb" in keys


@pytest.mark.slow
def test_failed_upload_leaves_no_version_in_the_bucket(s3_server, s3_bucket, sum_two_local,
                                                       tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(sum_two_local, broken)
    os.symlink(tmp_path / "missing", broken / "variables" / "a-dangling-link")
    serving = f"s3://{s3_bucket}/serving"
    result = run_child(_PUBLISH_PRELUDE + textwrap.dedent(f"""
        serving = ensure_filesystem({serving!r})
        try:
            publish({str(broken)!r}, serving, "sum_two")
            result = {{"raised": None}}
        except Exception as e:
            result = {{"raised": type(e).__name__, "versions": list_versions(serving + "/sum_two")}}
    """))
    assert result["raised"], result
    assert result["versions"] == []
    keys = s3_server.keys(s3_bucket, "serving/")
    assert not [k for k in keys if k.startswith("serving/sum_two/1/")], keys


@pytest.mark.slow
def test_killed_upload_leaves_no_incomplete_loadable_version(s3_server, s3_bucket, tmp_path):
    """SIGKILL in the middle of an upload: whatever is left, no version dir holds a
    saved_model.pb without the rest of its files (TF Serving loads a version once its
    saved_model.pb exists)."""
    import tensorflow as tf

    big = tmp_path / "big"

    class Big(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(tf.zeros([12, 1024, 1024]))  # ~50 MB of variables

        @tf.function(input_signature=[tf.TensorSpec([], tf.float32)])
        def f(self, x):
            return x + tf.reduce_sum(self.w[0, 0, :1])

    model = Big()
    tf.saved_model.save(model, str(big), signatures={"serving_default": model.f})
    files = sorted(os.path.relpath(os.path.join(d, f), big)
                   for d, _, names in os.walk(big) for f in names)
    serving = f"s3://{s3_bucket}/serving"
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {PROJECT!r})
        from components.versioned_pusher.publish import publish
        from tfserving.filesystems import ensure_filesystem
        print("start", flush=True)
        publish({str(big)!r}, ensure_filesystem({serving!r}), "big")
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, env={**os.environ,
                                                              "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:
            if s3_server.keys(s3_bucket, "serving/big/"):
                break
            time.sleep(0.01)
        child.kill()
    finally:
        child.wait()
    keys = s3_server.keys(s3_bucket, "serving/big/")
    assert keys, "the upload had not started before the kill"
    versions = {k.split("/")[2] for k in keys if k.split("/")[2].isdigit()}
    for version in versions:
        present = {k[len(f"serving/big/{version}/"):] for k in keys
                   if k.startswith(f"serving/big/{version}/")}
        if "saved_model.pb" in present:
            assert present >= set(files), (version, sorted(present))
