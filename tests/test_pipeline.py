"""The whole pipeline through runner.py: real runners, real SQLite MLMD, temp dirs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

import runner
from components.versioned_pusher.publish import list_versions

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = "sum_two,fun_runif"

pytestmark = pytest.mark.slow


def _run(project, output_dir, *flags) -> int:
    return runner.main(["run", "--catalog", str(project / "servables" / "catalog.yaml"),
                        "--output-dir", str(output_dir), *flags])


def _snapshot(root) -> dict[str, bytes]:
    files = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


def _models_config(serving_root) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    with open(os.path.join(serving_root, "models.config")) as f:
        text_format.Parse(f.read(), config)
    return config


def test_readme_run_command_publishes_three_models_then_nothing_new(tmp_path):
    """`python runner.py` from the project, as a user types it (a subprocess)."""
    command = [sys.executable, os.path.join(PROJECT, "runner.py"),
               "--output-dir", str(tmp_path / "outputs")]
    first = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    serving = tmp_path / "outputs" / "serving"
    for name in ("sum_two", "fun_runif", "mobilenet_v2_test"):
        assert (serving / name / "1" / "saved_model.pb").is_file()
    config = _models_config(serving)
    assert sorted(c.name for c in config.model_config_list.config) == [
        "fun_runif", "mobilenet_v2_test", "sum_two"]
    assert {c.base_path for c in config.model_config_list.config} == {
        "/models/fun_runif", "/models/mobilenet_v2_test", "/models/sum_two"}
    assert "version 1" in first.stdout and "docker run" in first.stdout
    assert "mobilenet_v2_test        export" in first.stderr  # progress, one line per step
    assert "oneDNN" not in first.stderr and "cuda" not in first.stderr.lower()  # quiet
    assert (tmp_path / "outputs" / "metadata.sqlite").is_file()

    before = _snapshot(serving)
    second = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    assert _snapshot(serving) == before
    table = second.stdout.split("Next steps")[0]
    for name in ("sum_two", "fun_runif", "mobilenet_v2_test"):
        row = next(line for line in table.splitlines() if line.startswith(name))
        assert " cached " in row and "unchanged (v1)" in row, row
        assert "ran" not in row.split()


def test_changed_servable_gets_version_2_alone(project, tmp_path, capsys):
    assert _run(project, tmp_path, "--servables", SMALL) == 0
    randomizer = project / "servables" / "randomizer.py"
    randomizer.write_text(randomizer.read_text().replace(
        "tf.random.uniform(shape=(N,))", "tf.random.uniform(shape=(N,), maxval=0.5)"))
    capsys.readouterr()
    assert _run(project, tmp_path, "--servables", SMALL) == 0
    out = capsys.readouterr().out
    serving = tmp_path / "serving"
    assert list_versions(str(serving / "fun_runif")) == [1, 2]
    assert list_versions(str(serving / "sum_two")) == [1]
    assert "version 2" in next(line for line in out.splitlines() if line.startswith("fun_runif"))
    assert "unchanged (v1)" in next(line for line in out.splitlines()
                                    if line.startswith("sum_two"))

    assert runner.main(["status", "--catalog", str(project / "servables" / "catalog.yaml"),
                        "--output-dir", str(tmp_path)]) == 0
    status = capsys.readouterr().out
    fun_runif = next(line for line in status.splitlines() if line.startswith("fun_runif"))
    assert " 1,2 " in fun_runif and " yes " in fun_runif
    assert "none" in next(line for line in status.splitlines()
                          if line.startswith("mobilenet_v2_test"))


def _add_entry(project, entry: dict) -> None:
    catalog_path = project / "servables" / "catalog.yaml"
    catalog = yaml.safe_load(catalog_path.read_text())
    catalog["servables"].append(entry)
    catalog_path.write_text(yaml.safe_dump(catalog, sort_keys=False))


def test_broken_servable_does_not_stop_the_others(project, tmp_path, capsys):
    (project / "servables" / "exploding.py").write_text(
        "import tensorflow as tf\n\n\nclass Exploding(tf.Module):\n"
        "    def __init__(self):\n        super().__init__()\n"
        "        raise ValueError('this servable is broken on purpose')\n")
    _add_entry(project, {"name": "exploding", "module": "servables/exploding.py",
                         "object": "Exploding", "signatures": {"serving_default": "f"}})
    code = _run(project, tmp_path, "--servables", f"exploding,{SMALL}")
    captured = capsys.readouterr()
    assert code == 1
    assert "error: exploding failed" in captured.err
    assert "this servable is broken on purpose" in captured.err
    assert "exploding.py" in captured.err  # the user's traceback
    serving = tmp_path / "serving"
    assert list_versions(str(serving / "sum_two")) == [1]
    assert list_versions(str(serving / "fun_runif")) == [1]
    assert not (serving / "exploding").exists()
    assert "FAILED" in next(line for line in captured.out.splitlines()
                            if line.startswith("exploding"))


def test_rejected_model_is_never_pushed_and_says_why(project, tmp_path, capsys):
    wrong = project / "data" / "responses" / "wrong.json"
    wrong.write_text('{"predictions": [[3.0, 4.0, 6.0]]}')
    _add_entry(project, {"name": "sum_two_wrong", "module": "servables/adder.py",
                         "object": "Adder", "signatures": {"serving_default": "sum_two"},
                         "examples": [{"request": "data/requests/sum_two.json",
                                       "expect": {"response": "data/responses/wrong.json"}}]})
    assert _run(project, tmp_path, "--servables", "sum_two") == 0
    serving = tmp_path / "serving"
    before = _snapshot(serving)
    capsys.readouterr()
    assert _run(project, tmp_path, "--servables", "sum_two_wrong") == 0
    out = capsys.readouterr().out
    assert _snapshot(serving) == before  # byte-identical: nothing written, config untouched
    row = next(line for line in out.splitlines() if line.startswith("sum_two_wrong"))
    assert "NO:" in row and "not pushed" in row
    reports = list((tmp_path / "pipeline" / "ServableEvaluator.sum_two_wrong").rglob(
        "report.md"))
    assert reports and "expect.response" in reports[0].read_text()
    assert list((tmp_path / "pipeline" / "ServableEvaluator.sum_two_wrong").rglob(
        "NOT_BLESSED"))


@pytest.mark.parametrize("orchestrator", ["beam", "local"])
def test_subset_with_each_orchestrator(project, tmp_path, orchestrator, capsys):
    code = _run(project, tmp_path, "--servables", "sum_two", "--orchestrator", orchestrator,
                "--beam-arg=--direct_num_workers=1")
    out = capsys.readouterr().out
    assert code == 0
    published = set(os.listdir(tmp_path / "serving")) - {".models.config.lock"}
    assert published == {"sum_two", "models.config"}
    assert list_versions(str(tmp_path / "serving" / "sum_two")) == [1]
    assert "fun_runif" not in out


def test_unknown_servable_and_bad_catalog_exit_2(project, tmp_path, capsys):
    assert _run_exit(project, tmp_path, "--servables", "sum_tow") == 2
    assert "did you mean 'sum_two'" in capsys.readouterr().err
    catalog = project / "servables" / "catalog.yaml"
    catalog.write_text(catalog.read_text().replace("dtype: int32", "dtype: flaot32"))
    assert _run_exit(project, tmp_path) == 2
    err = capsys.readouterr().err
    assert "servable 'fun_runif'" in err and "did you mean 'float32'" in err
    assert not (tmp_path / "serving").exists()


def _run_exit(project, output_dir, *flags) -> int:
    with pytest.raises(SystemExit) as info:
        _run(project, output_dir, *flags)
    return info.value.code


def test_no_cache_reexports_but_pushes_nothing_new(project, tmp_path, capsys):
    assert _run(project, tmp_path, "--servables", "sum_two") == 0
    capsys.readouterr()
    assert _run(project, tmp_path, "--servables", "sum_two", "--no-cache") == 0
    row = next(line for line in capsys.readouterr().out.splitlines()
               if line.startswith("sum_two"))
    assert " ran " in row and "unchanged (v1)" in row
    assert list_versions(str(tmp_path / "serving" / "sum_two")) == [1]


def test_keep_flag_retains_newest_versions_and_pinned_ones(project, tmp_path):
    catalog_path = project / "servables" / "catalog.yaml"
    catalog = yaml.safe_load(catalog_path.read_text())
    fun_runif = next(e for e in catalog["servables"] if e["name"] == "fun_runif")
    fun_runif["serving"] = {"version_policy": "specific", "versions": [1],
                            "labels": {"stable": 1}}
    catalog_path.write_text(yaml.safe_dump(catalog, sort_keys=False))
    randomizer = project / "servables" / "randomizer.py"
    source = randomizer.read_text()
    for maxval in ("1.0", "0.5", "0.25"):
        randomizer.write_text(source.replace("tf.random.uniform(shape=(N,))",
                                             f"tf.random.uniform(shape=(N,), maxval={maxval})"))
        assert _run(project, tmp_path, "--servables", "fun_runif", "--keep", "1") == 0
    # Version 2 fell out of retention; version 1 is pinned by models.config.
    assert list_versions(str(tmp_path / "serving" / "fun_runif")) == [1, 3]
    entry = _models_config(tmp_path / "serving").model_config_list.config[0]
    assert entry.name == "fun_runif"
    assert list(entry.model_version_policy.specific.versions) == [1]
    assert dict(entry.version_labels) == {"stable": 1}
