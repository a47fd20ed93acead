"""Catalog validation: every error names the servable, the field and what is valid."""

from __future__ import annotations

import os
import shutil

import pytest
import yaml

from pipeline.catalog import DEFAULT_CATALOG, CatalogError, load_catalog

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _entry(**overrides):
    entry = {"name": "sum_two", "module": "servables/adder.py", "object": "Adder",
             "signatures": {"serving_default": "sum_two"}}
    entry.update(overrides)
    return entry


def _write(tmp_path, *entries, base_dir=PROJECT):
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"base_dir": str(base_dir), "servables": list(entries)}))
    return str(path)


def _error(tmp_path, *entries) -> CatalogError:
    with pytest.raises(CatalogError) as info:
        load_catalog(_write(tmp_path, *entries))
    return info.value


def test_project_catalog_lists_the_three_seed_servables():
    catalog = load_catalog(DEFAULT_CATALOG)
    assert catalog.names() == ["sum_two", "fun_runif", "mobilenet_v2_test"]
    fun_runif = catalog.select(["fun_runif"])[0]
    assert fun_runif.signatures[0].inputs[0].dtype == "int32"
    assert fun_runif.signatures[0].inputs[0].shape == ()
    mobilenet = catalog.select(["mobilenet_v2_test"])[0]
    assert mobilenet.assets == {"labels": "data/labels/ImageNetLabels.txt"}
    assert len(mobilenet.examples[0].expect.vocabulary) == 1001


def test_unknown_key_suggests_the_valid_one(tmp_path):
    error = _error(tmp_path, _entry(signatrues={"serving_default": "sum_two"}))
    assert error.servable == "sum_two"
    assert "signatrues" in str(error) and "did you mean 'signatures'" in str(error)
    assert "valid:" in str(error)


def test_missing_module_file(tmp_path):
    error = _error(tmp_path, _entry(module="servables/nope.py"))
    assert (error.servable, error.field) == ("sum_two", "module")
    assert "file not found: servables/nope.py" in str(error)


def test_typo_in_dtype_suggests_float32(tmp_path):
    error = _error(tmp_path, _entry(signatures={"serving_default": {
        "method": "sum_two", "inputs": {"x": {"dtype": "flaot32", "shape": [None, 3]}}}}))
    assert error.field == "signatures.serving_default.inputs.x.dtype"
    assert "'flaot32'" in str(error) and "did you mean 'float32'" in str(error)
    assert "servable 'sum_two'" in str(error)


@pytest.mark.parametrize("shape", ["[None, 3]", [-1, 3], [1.5], ["a"], 3])
def test_bad_shape(tmp_path, shape):
    error = _error(tmp_path, _entry(signatures={"serving_default": {
        "method": "sum_two", "inputs": {"x": {"dtype": "float32", "shape": shape}}}}))
    assert error.field == "signatures.serving_default.inputs.x.shape"
    assert "bad shape" in str(error) and "null for a free dimension" in str(error)


def test_duplicate_model_names(tmp_path):
    error = _error(tmp_path, _entry(), _entry())
    assert (error.servable, error.field) == ("sum_two", "name")
    assert "duplicate model name" in str(error)


@pytest.mark.parametrize("name", ["../evil", "a/b", ".hidden", "", "x" * 200, "sp ace", ".."])
def test_unsafe_model_name(tmp_path, name):
    error = _error(tmp_path, _entry(name=name))
    assert "name" in error.field
    assert "not a safe model directory name" in str(error)


def test_missing_required_field(tmp_path):
    entry = _entry()
    del entry["object"]
    error = _error(tmp_path, entry)
    assert (error.servable, error.field) == ("sum_two", "object")


def test_unknown_version_policy_and_format(tmp_path):
    error = _error(tmp_path, _entry(serving={"version_policy": "lastest"}))
    assert error.field == "serving.version_policy" and "did you mean 'latest'" in str(error)
    error = _error(tmp_path, _entry(checks={"formats": ["rows"]}))
    assert error.field == "checks.formats"


def test_example_must_be_a_tf_serving_request(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"instance": [[1, 2, 3]]}')
    shutil.copytree(os.path.join(PROJECT, "servables"), tmp_path / "servables")
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"servables": [_entry(examples=["bad.json"])]}))
    with pytest.raises(CatalogError) as info:
        load_catalog(str(catalog))
    assert info.value.field == "examples[0].request"
    assert "exactly one of 'instances'" in str(info.value)


def test_absolute_and_escaping_paths_are_refused(tmp_path):
    error = _error(tmp_path, _entry(module="/etc/passwd"))
    assert error.field == "module" and "must be relative" in str(error)
    error = _error(tmp_path, _entry(module="../outside.py"))
    assert "must stay inside base_dir" in str(error)


def test_source_hash_follows_the_module_and_its_local_imports(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(os.path.join(PROJECT, "servables"), project / "servables")
    shutil.copytree(os.path.join(PROJECT, "data"), project / "data")
    catalog_path = project / "servables" / "catalog.yaml"
    shutil.copy(DEFAULT_CATALOG, catalog_path)
    catalog = load_catalog(str(catalog_path))
    before = {s.name: catalog.source_hash(s) for s in catalog.servables}
    # mobilenet.py imports servables.hub_standin: editing it changes only that hash.
    with open(project / "servables" / "hub_standin.py", "a") as f:
        f.write("\n# edited\n")
    after = {s.name: catalog.source_hash(s) for s in catalog.servables}
    assert after["mobilenet_v2_test"] != before["mobilenet_v2_test"]
    assert after["sum_two"] == before["sum_two"]
    assert after["fun_runif"] == before["fun_runif"]


# --- numbers in every YAML spelling, paths from base_dir, args that are paths --------------


def _catalog_text(tmp_path, entry_yaml: str, base_dir=PROJECT) -> str:
    """A catalog written by hand (yaml.safe_dump would quote or reformat the numbers)."""
    path = tmp_path / "catalog.yaml"
    path.write_text(f"base_dir: {base_dir}\nservables:\n" + entry_yaml)
    return str(path)


@pytest.mark.parametrize("spelling, value", [
    ("1e-6", 1e-6), ("1.0e-6", 1e-6), (".5", 0.5), ("1E3", 1000.0), ("+2.5e+1", 25.0),
    ("0", 0.0), ("3", 3.0)])
def test_numbers_in_every_yaml_spelling(tmp_path, spelling, value):
    path = _catalog_text(tmp_path, f"""
  - name: sum_two
    module: servables/adder.py
    object: Adder
    signatures: {{serving_default: sum_two}}
    examples:
      - request: data/requests/sum_two.json
        expect: {{response: data/responses/sum_two.json, tolerance: {spelling}}}
      - request: data/requests/sum_two.json
        expect: {{range: [-1e3, {spelling}]}}
    checks: {{latency_budget_ms: 5e1}}
""")
    entry = load_catalog(path).servables[0]
    assert entry.examples[0].expect.tolerance == value
    assert entry.examples[1].expect.range == (-1000.0, value)
    assert entry.checks.latency_budget_ms == 50.0


def test_a_quoted_number_is_still_refused_with_the_field(tmp_path):
    path = _catalog_text(tmp_path, """
  - name: sum_two
    module: servables/adder.py
    object: Adder
    signatures: {serving_default: sum_two}
    examples:
      - request: data/requests/sum_two.json
        expect: {tolerance: "small"}
""")
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert info.value.field == "examples[0].expect.tolerance"


def test_relative_paths_start_at_base_dir_never_the_current_directory(
        tmp_path, monkeypatch):
    project = tmp_path / "project"
    shutil.copytree(os.path.join(PROJECT, "servables"), project / "servables")
    shutil.copytree(os.path.join(PROJECT, "data"), project / "data")
    (project / "data" / "vocab").mkdir()
    (project / "data" / "vocab" / "countries.txt").write_text("fr\nde\n")
    catalog = project / "servables" / "catalog.yaml"
    catalog.write_text("base_dir: ..\nservables:\n" + """
  - name: sum_two
    module: servables/adder.py
    object: Adder
    args:
      vocabulary: data/vocab/countries.txt   # a path: made explicit
      folder: {path: data/vocab}             # explicit, a directory
      files: [data/vocab/countries.txt, not/a/file.txt]
      activation: relu                       # a bare word stays a value
      handle: standin:mobilenet_v2_035_224
      rate: 1e-3
      labels: {asset: labels}
    assets: {labels: data/labels/ImageNetLabels.txt}
    signatures: {serving_default: sum_two}
    examples: [data/requests/sum_two.json]
""")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # nothing is found relative to here
    loaded = load_catalog(os.path.relpath(catalog))
    assert loaded.base_dir == str(project)
    entry = loaded.servables[0]
    assert entry.args == {
        "vocabulary": {"path": "data/vocab/countries.txt"},
        "folder": {"path": "data/vocab"},
        "files": [{"path": "data/vocab/countries.txt"}, "not/a/file.txt"],
        "activation": "relu", "handle": "standin:mobilenet_v2_035_224", "rate": 1e-3,
        "labels": {"asset": "labels"}}
    assert entry.examples[0].request == {"instances": [[1.0, 2.0, 3.0]]}

    # The files an argument names are part of what the export reads.
    before = loaded.source_hash(entry)
    (project / "data" / "vocab" / "countries.txt").write_text("fr\nde\nit\n")
    assert loaded.source_hash(entry) != before


@pytest.mark.parametrize("args, field, words", [
    ({"vocabulary": {"path": "data/vocab/missing.txt"}}, "args.vocabulary.path",
     ["file not found", "never start at the current directory"]),
    ({"vocabulary": {"path": "/etc/passwd"}}, "args.vocabulary.path", ["must be relative"]),
    ({"vocabulary": {"path": "../outside.txt"}}, "args.vocabulary.path",
     ["must stay inside base_dir"]),
    ({"vocabulary": {"asset": "label"}}, "args.vocabulary.asset",
     ["unknown asset 'label'", "did you mean 'labels'", "assets of this servable: labels"]),
    ({"nested": {"inner": [{"asset": "nope"}]}}, "args.nested.inner[0].asset",
     ["unknown asset 'nope'"]),
])
def test_bad_path_and_asset_arguments_name_the_field(tmp_path, args, field, words):
    error = _error(tmp_path, _entry(args=args,
                                    assets={"labels": "data/labels/ImageNetLabels.txt"}))
    assert error.field == field
    for word in words:
        assert word in str(error)


def test_asset_argument_needs_an_asset_entry(tmp_path):
    error = _error(tmp_path, _entry(args={"vocabulary": {"asset": "countries"}}))
    assert error.field == "args.vocabulary.asset"
    assert "none: add an 'assets' entry" in str(error)
