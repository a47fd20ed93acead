"""ExportServable: the seed servables through the real component, errors, caching."""

from __future__ import annotations

import dataclasses
import json
import os
import textwrap

import pytest
import tensorflow as tf
import yaml
from tfx.orchestration import metadata, pipeline
from tfx.orchestration.local.local_dag_runner import LocalDagRunner

from components.export_servable.component import ExportServable
from components.export_servable.export import ServableExportError, export_servable
from components.specs import ExportSpec
from pipeline.catalog import load_catalog
from pipeline.metadata_store import open_store, step_results
from pipeline.pipeline import node_id

LABELS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "data", "labels", "ImageNetLabels.txt")


def _export_pipeline(catalog, root) -> pipeline.Pipeline:
    components = [
        ExportServable(servable=s.export_spec().to_json(),
                       base_dir=catalog.base_dir, source_hash=catalog.source_hash(s))
        .with_id(node_id("ExportServable", s.name))
        for s in catalog.servables]
    return pipeline.Pipeline(
        pipeline_name="export-test", pipeline_root=str(root / "pipeline"),
        components=components, enable_cache=True,
        metadata_connection_config=metadata.sqlite_metadata_connection_config(
            str(root / "metadata.sqlite")))


def _run_exports(catalog, root) -> dict[str, object]:
    LocalDagRunner().run(_export_pipeline(catalog, root))
    store = open_store(str(root / "metadata.sqlite"))
    results = step_results(store, "export-test", catalog.names())
    return {name: steps["ExportServable"] for name, steps in results.items()}


@pytest.mark.slow
def test_seed_servables_export_reload_and_answer(project, tmp_path):
    catalog = load_catalog(str(project / "servables" / "catalog.yaml"))
    results = _run_exports(catalog, tmp_path)
    assert {r.state for r in results.values()} == {"ran"}

    def load(name):
        uri = results[name].output_uri
        return tf.saved_model.load(os.path.join(uri, "Format-Serving")).signatures[
            "serving_default"]

    sum_two = load("sum_two")(x=tf.constant([[1.0, 2.0, 3.0]]))["output_0"]
    assert sum_two.numpy().tolist() == [[3.0, 4.0, 5.0]]
    runif = load("fun_runif")(N=tf.constant(5))["output_0"].numpy()
    assert runif.shape == (5,) and ((runif >= 0) & (runif < 1)).all()
    with open(project / "data" / "images" / "sample.jpg", "rb") as f:
        label = load("mobilenet_v2_test")(input_img=tf.constant([f.read()]))["output_0"]
    with open(LABELS) as f:
        labels = f.read().split("\n")[:1001]
    assert label.shape == (1,) and label.numpy()[0].decode() in labels
    # The labels file travels inside the SavedModel as an asset.
    assets = os.path.join(results["mobilenet_v2_test"].output_uri, "Format-Serving", "assets")
    assert os.listdir(assets) == ["ImageNetLabels.txt"]

    props = results["sum_two"].output
    assert props["servable_name"] == "sum_two"
    assert '"x":{"dtype":"float32","shape":[null,3]}' in props["signatures"]
    assert len(props["fingerprint"]) == 32 and props["size_bytes"] > 0
    assert props["tf_fingerprint"].count("/") == 3
    assert props["source_hash"] == catalog.source_hash(catalog.select(["sum_two"])[0])


@pytest.mark.slow
def test_cache_reexports_exactly_the_edited_servable(project, tmp_path):
    catalog_path = str(project / "servables" / "catalog.yaml")
    first = _run_exports(load_catalog(catalog_path), tmp_path)
    assert {r.state for r in first.values()} == {"ran"}
    second = _run_exports(load_catalog(catalog_path), tmp_path)
    assert {r.state for r in second.values()} == {"cached"}
    with open(project / "servables" / "adder.py", "a") as f:
        f.write("\n# a harmless edit still means a new export\n")
    third = _run_exports(load_catalog(catalog_path), tmp_path)
    assert third["sum_two"].state == "ran"
    assert third["fun_runif"].state == third["mobilenet_v2_test"].state == "cached"
    # Editing an asset the servable carries re-exports it too.
    with open(project / "data" / "labels" / "ImageNetLabels.txt", "a") as f:
        f.write("extra\n")
    fourth = _run_exports(load_catalog(catalog_path), tmp_path)
    assert fourth["mobilenet_v2_test"].state == "ran"
    assert fourth["sum_two"].state == fourth["fun_runif"].state == "cached"


def _spec(module: str, obj: str, signatures, name="broken") -> ExportSpec:
    return ExportSpec.from_json(json.dumps({
        "name": name, "module": module, "object": obj, "args": {},
        "signatures": signatures, "assets": {}}))


def _write_module(project, source: str, name="broken_mod.py") -> str:
    (project / "servables" / name).write_text(textwrap.dedent(source))
    return f"servables/{name}"


def test_randomizer_without_catalog_signature_is_refused(project, tmp_path):
    spec = _spec("servables/randomizer.py", "Randomizer",
                 [{"key": "serving_default", "method": "fun_runif"}], name="fun_runif")
    with pytest.raises(ServableExportError) as info:
        export_servable(spec, str(project), str(tmp_path / "out"))
    message = str(info.value)
    assert "servable 'fun_runif'" in message
    assert "field 'signatures.serving_default.inputs' is needed" in message
    assert "no serving signature" in message
    assert "N: {dtype: float32, shape: [null]}" in message  # shows the field to add
    assert not (tmp_path / "out").exists()  # never an unservable model


@pytest.mark.parametrize("source, obj, stage, user_line", [
    ("import not_a_real_module\n", "X", "importing servables/broken_mod.py",
     "import not_a_real_module"),
    ("class Y: pass\n", "X", None, None),
    ("""
     import tensorflow as tf
     class X(tf.Module):
         def __init__(self):
             super().__init__()
             raise RuntimeError("constructor exploded")
     """, "X", "constructing the object", 'raise RuntimeError("constructor exploded")'),
    ("""
     import tensorflow as tf
     class X(tf.Module):
         @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
         def f(self, x):
             return x + undefined_name
     """, "X", "tracing signature 'serving_default'", "return x + undefined_name"),
])
def test_user_errors_name_the_servable_and_show_the_user_traceback(
        project, tmp_path, source, obj, stage, user_line):
    module = _write_module(project, source)
    spec = _spec(module, obj, [{"key": "serving_default", "method": "f"}])
    with pytest.raises(ServableExportError) as info:
        export_servable(spec, str(project), str(tmp_path / "out"))
    message = str(info.value)
    assert message.startswith("servable 'broken':")
    if stage is None:
        assert "field 'object': 'X' is not a class or function" in message
        assert "found: Y" in message
    else:
        assert f"failed while {stage}" in message
        assert user_line in message and "broken_mod.py" in message
        # A tracing error carries the user's line in TF's own "in user code:" text;
        # autograph's generated file is no frame of the user's.
        assert "User traceback" in message or "in user code:" in message
        assert "__autograph_generated_file" not in message
        assert "components/export_servable" not in message  # not our internals


def test_keras_functional_model_uses_its_inputs_as_signature(project, tmp_path):
    module = _write_module(project, """
        import tensorflow as tf
        def build():
            inputs = tf.keras.Input(shape=(4,), name="features")
            return tf.keras.Model(inputs, tf.keras.layers.Dense(2)(inputs))
        """)
    spec = _spec(module, "build", [{"key": "serving_default", "method": "__call__"}],
                 name="keras_dense")
    description = export_servable(spec, str(project), str(tmp_path / "out"))
    signature = description["signatures"]["serving_default"]
    assert signature["inputs"] == {"features": {"dtype": "float32", "shape": [None, 4]}}
    loaded = tf.saved_model.load(str(tmp_path / "out"))
    out = loaded.signatures["serving_default"](features=tf.ones([3, 4]))
    assert list(out.values())[0].shape == (3, 2)


def test_multiple_signatures_per_model(project, tmp_path):
    module = _write_module(project, """
        import tensorflow as tf
        class Calc(tf.Module):
            @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
            def double(self, x):
                return {"doubled": x * 2}
            @tf.function
            def negate(self, x):
                return -x
        """)
    spec = _spec(module, "Calc", [
        {"key": "serving_default", "method": "double"},
        {"key": "negate", "method": "negate",
         "inputs": [{"name": "x", "dtype": "int64", "shape": [None]}]}], name="calc")
    description = export_servable(spec, str(project), str(tmp_path / "out"))
    assert sorted(description["signatures"]) == ["negate", "serving_default"]
    assert description["signatures"]["negate"]["inputs"]["x"]["dtype"] == "int64"
    assert description["signatures"]["serving_default"]["outputs"] == {
        "doubled": {"dtype": "float32", "shape": [None]}}


def test_broken_catalog_yaml_is_reported(tmp_path):
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"servables": "not a list"}))
    with pytest.raises(ValueError, match="field 'servables'"):
        load_catalog(str(path))


def test_fingerprint_sees_constants_and_assets_that_tf_fingerprint_misses(project, tmp_path):
    """x + 2 and x + 3 share TF's singleprint; ours must tell them apart."""
    descriptions = []
    for constant in ("2.0", "3.0", "2.0"):
        module = _write_module(project, f"""
            import tensorflow as tf
            class Add(tf.Module):
                @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
                def f(self, x):
                    return x + {constant}
            """)
        spec = _spec(module, "Add", [{"key": "serving_default", "method": "f"}], name="add")
        descriptions.append(export_servable(spec, str(project),
                                            str(tmp_path / f"out{len(descriptions)}")))
    first, changed, again = descriptions
    assert first["tf_fingerprint"] == changed["tf_fingerprint"]  # TF's own key misses it
    assert first["fingerprint"] != changed["fingerprint"]
    assert first["fingerprint"] == again["fingerprint"]  # stable when nothing changed

    labels = project / "labels.txt"
    fingerprints = []
    for text in ("a\nb\n", "a\nc\n"):
        labels.write_text(text)
        module = _write_module(project, """
            import tensorflow as tf
            class WithAsset(tf.Module):
                @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
                def f(self, x):
                    return tf.io.read_file(self.labels)
            """)
        spec = _spec(module, "WithAsset", [{"key": "serving_default", "method": "f"}],
                     name="asset")
        spec = dataclasses.replace(spec, assets={"labels": "labels.txt"})
        fingerprints.append(export_servable(spec, str(project),
                                            str(tmp_path / f"asset{len(fingerprints)}"))[
            "fingerprint"])
    assert fingerprints[0] != fingerprints[1]


# --- declared inputs that cannot be traced name the field and both specs -------------------


@pytest.mark.parametrize("source, method, inputs, words", [
    # The function has its own input_signature; the catalog declares another shape.
    ("""
     import tensorflow as tf
     class M(tf.Module):
         @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
         def f(self, x):
             return x + 1.0
     """, "f", [{"name": "x", "dtype": "float32", "shape": [None, 1]}],
     ["(x: float32 [None, 1])", "its input_signature is (x: float32 [None])"]),
    # No input_signature; the declared argument names are not the function's.
    ("""
     import tensorflow as tf
     class M(tf.Module):
         @tf.function
         def f(self, x, y):
             return x + y
     """, "f", [{"name": "a", "dtype": "float32", "shape": [None]}],
     ["(a: float32 [None])", "it takes (x, y)"]),
    # A shape the function's own code cannot use.
    ("""
     import tensorflow as tf
     class M(tf.Module):
         @tf.function
         def f(self, x):
             return tf.matmul(x, tf.ones([3, 2]))
     """, "f", [{"name": "x", "dtype": "float32", "shape": [None, 4]}],
     ["(x: float32 [None, 4])", "it takes (x)", "broken_mod.py"]),
    # A functional Keras model: a declared dtype that is not the model's.
    ("""
     import tensorflow as tf
     def M():
         x = tf.keras.Input(shape=(3,), name="x")
         return tf.keras.Model(x, tf.keras.layers.Dense(1)(x))
     """, "call", [{"name": "x", "dtype": "int64", "shape": [None, 3]}],
     ["do not fit the Keras model's inputs (x: float32 [None, 3])",
      "x is int64, the model's x is float32"]),
    # A functional Keras model with named inputs: a name it does not have.
    ("""
     import tensorflow as tf
     def M():
         a = tf.keras.Input(shape=(1,), name="a")
         b = tf.keras.Input(shape=(1,), name="b")
         return tf.keras.Model({"a": a, "b": b}, tf.keras.layers.Concatenate()([a, b]))
     """, "call", [{"name": "a", "dtype": "float32", "shape": [None, 1]},
                   {"name": "c", "dtype": "float32", "shape": [None, 1]}],
     ["missing b", "unknown c"]),
])
def test_untraceable_declared_inputs_name_the_field_and_both_specs(
        project, tmp_path, source, method, inputs, words):
    module = _write_module(project, source)
    spec = _spec(module, "M", [{"key": "serving_default", "method": method, "inputs": inputs}])
    with pytest.raises(ServableExportError) as info:
        export_servable(spec, str(project), str(tmp_path / "out"))
    message = str(info.value)
    assert "field 'signatures.serving_default.inputs'" in message, message
    for word in words:
        assert word in message, message
    assert "User traceback (most recent call last):\nTraceback" not in message
    assert not message.rstrip().endswith("User traceback (most recent call last):")
    assert not (tmp_path / "out").exists()


def test_path_and_asset_arguments_reach_the_constructor_as_absolute_paths(
        project, tmp_path, monkeypatch):
    (project / "data" / "words.txt").write_text("a\nb\n")
    module = _write_module(project, """
        import os
        import tensorflow as tf
        class Reader(tf.Module):
            def __init__(self, vocabulary, files, labels):
                super().__init__()
                assert all(os.path.isabs(p) for p in [vocabulary, *files, labels])
                self.table = tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
                    labels, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
                    tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER), default_value=-1)
                self.sizes = [len(open(p).read()) for p in [vocabulary, *files]]
            @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
            def f(self, x):
                return self.table.lookup(x)
        """)
    spec = dataclasses.replace(
        _spec(module, "Reader", [{"key": "serving_default", "method": "f"}]),
        args={"vocabulary": {"path": "data/words.txt"}, "files": [{"path": "data/words.txt"}],
              "labels": {"asset": "labels"}},
        assets={"labels": "data/words.txt"})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    export_servable(spec, str(project), str(tmp_path / "out"))
    out = tf.saved_model.load(str(tmp_path / "out")).signatures["serving_default"](
        tf.constant(["b", "z"]))
    assert list(out.values())[0].numpy().tolist() == [1, -1]
