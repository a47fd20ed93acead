"""Servables a new user writes from the README export, reload and pass the evaluator.

``tests/user_servables/catalog.yaml``: Keras functional (two named inputs and
outputs, a StringLookup built from an asset), Sequential and subclassed models
with declared inputs, a tf.Module with a tf.Variable and two signatures, and a
tokenizer whose vocabulary path is a constructor argument. Exported from
another working directory: nothing may depend on where runner.py is started.
"""

from __future__ import annotations

import os

import pytest
import tensorflow as tf

from components.export_servable.export import export_servable
from components.servable_evaluator.checks import evaluate
from pipeline.catalog import load_catalog

CATALOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "user_servables",
                       "catalog.yaml")
NAMES = ["country_score", "row_sum", "scaler", "counter", "tokenizer"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every entry exported once (from a directory that is not the project)."""
    root = tmp_path_factory.mktemp("user_servables")
    elsewhere = root / "cwd"
    elsewhere.mkdir()
    before = os.getcwd()
    os.chdir(elsewhere)
    try:
        catalog = load_catalog(os.path.relpath(CATALOG))
        exports = {}
        for entry in catalog.servables:
            out = str(root / entry.name)
            exports[entry.name] = (entry, out,
                                   export_servable(entry.export_spec(), catalog.base_dir, out))
    finally:
        os.chdir(before)
    return exports


def test_catalog_lists_the_user_servables():
    assert load_catalog(CATALOG).names() == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_user_servable_is_blessed(exported, name):
    # The evaluator runs the SavedModel as TF Serving does (a Session restoring the
    # variables by name): Keras 3 models saved without their captured tf.Variables
    # tracked fail here with "Could not find variable" (see export.save_root).
    entry, out, _ = exported[name]
    report = evaluate(out, entry.evaluation_spec())
    assert report["blessed"], report["reasons"]


def test_keras_functional_model_keeps_its_input_and_output_names(exported):
    _, out, description = exported["country_score"]
    signature = description["signatures"]["serving_default"]
    assert signature["inputs"] == {"age": {"dtype": "float32", "shape": [None, 1]},
                                   "country": {"dtype": "string", "shape": [None, 1]}}
    assert sorted(signature["outputs"]) == ["country_index", "score"]
    # The StringLookup's vocabulary travels inside the SavedModel, once.
    assert os.listdir(os.path.join(out, "assets")) == ["countries.txt"]
    result = tf.saved_model.load(out).signatures["serving_default"](
        age=tf.constant([[1.0]]), country=tf.constant([["germany"]]))
    assert result["country_index"].numpy().tolist() == [2]


@pytest.mark.parametrize("name, inputs", [
    ("row_sum", {"x": {"dtype": "float32", "shape": [None, 3]}}),
    ("scaler", {"x": {"dtype": "float32", "shape": [None, 1]}}),
])
def test_sequential_and_subclassed_models_take_the_declared_inputs(exported, name, inputs):
    assert exported[name][2]["signatures"]["serving_default"]["inputs"] == inputs


def test_module_with_a_variable_has_both_signatures(exported):
    _, out, description = exported["counter"]
    assert sorted(description["signatures"]) == ["serving_default", "shift"]
    assert description["signatures"]["shift"]["inputs"] == {
        "delta": {"dtype": "float32", "shape": []},
        "x": {"dtype": "float32", "shape": [None]}}
    loaded = tf.saved_model.load(out)
    assert loaded.weight.numpy() == 3.0  # the tf.Variable is saved and restored


def test_tokenizer_vocabulary_is_an_asset_of_the_savedmodel(exported):
    _, out, _ = exported["tokenizer"]
    assert os.listdir(os.path.join(out, "assets")) == ["words.txt"]
