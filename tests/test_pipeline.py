"""The whole pipeline through runner.py: real runners, real SQLite MLMD, temp dirs."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

import runner
from components.versioned_pusher.publish import list_versions
from pipeline import local, report
from pipeline.catalog import load_catalog

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
    """`python runner.py` from the project, as a user types it (a subprocess).

    With a home of its own: Beam's DirectRunner would try to download its Prism runner
    into ``~/.apache_beam`` (pipeline/local.py pins the in-process runner instead).
    """
    from servables.hub_standin import cache_dir

    command = [sys.executable, os.path.join(PROJECT, "runner.py"),
               "--output-dir", str(tmp_path / "outputs")]
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "TFHUB_CACHE_DIR": cache_dir()}
    first = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=600,
                           env=env)
    assert first.returncode == 0, first.stderr
    assert not (home / ".apache_beam").exists()  # no runner download attempted
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
    second = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=600,
                            env=env)
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
    exploding = _add_exploding(project)
    code = _run(project, tmp_path, "--servables", f"{exploding},{SMALL}")
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
    assert _run(project, tmp_path, "--servables", "sum_two_wrong") == 1  # CI sees it
    captured = capsys.readouterr()
    assert _snapshot(serving) == before  # byte-identical: nothing written, config untouched
    row = next(line for line in captured.out.splitlines() if line.startswith("sum_two_wrong"))
    assert "no: expect.response" in row and "not pushed" in row
    reports = list((tmp_path / "pipeline" / "ServableEvaluator.sum_two_wrong").rglob(
        "report.md"))
    assert reports and "expect.response" in reports[0].read_text()
    error = captured.err.splitlines()
    first = error.index(next(line for line in error if line.startswith("error: ")))
    assert error[first].startswith("error: sum_two_wrong not blessed: serving_default/")
    assert error[first + 1] == f"  report: {reports[0]}"
    # sum_two is in the serving root, but this run published nothing: nothing to suggest.
    assert "Next steps" not in captured.out and "curl" not in captured.out
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
    # Version 1 is pinned by models.config; version 2 was replaced by version 3 less than
    # the retention grace (RETENTION_GRACE_SECONDS) ago, so a later push deletes it.
    assert list_versions(str(tmp_path / "serving" / "fun_runif")) == [1, 2, 3]
    entry = _models_config(tmp_path / "serving").model_config_list.config[0]
    assert entry.name == "fun_runif"
    assert list(entry.model_version_policy.specific.versions) == [1]
    assert dict(entry.version_labels) == {"stable": 1}


# --- the run's verdict, with the broken servables of tests/broken_servables -----------------


def _add_broken(project, module: str) -> str:
    """A catalog entry for tests/broken_servables/<module>.py, as a user would write it."""
    broken = importlib.import_module(f"tests.broken_servables.{module}")
    shutil.copy(os.path.join(PROJECT, "tests", "broken_servables", f"{module}.py"),
                project / "servables" / f"broken_{module}.py")
    (project / "data" / "requests" / f"{module}.json").write_text(
        json.dumps(broken.EXAMPLE["request"]))
    expect = dict(broken.EXAMPLE["expect"])
    if "response" in expect:
        (project / "data" / "responses" / f"{module}.json").write_text(
            json.dumps(expect["response"]))
        expect["response"] = f"data/responses/{module}.json"
    _add_entry(project, {"name": module, "module": f"servables/broken_{module}.py",
                         "object": "make", "signatures": {"serving_default": broken.METHOD},
                         "examples": [{"request": f"data/requests/{module}.json",
                                       "expect": expect}]})
    return module


def _add_exploding(project) -> str:
    (project / "servables" / "exploding.py").write_text(
        "import tensorflow as tf\n\n\nclass Exploding(tf.Module):\n"
        "    def __init__(self):\n        super().__init__()\n"
        "        raise ValueError('this servable is broken on purpose')\n")
    _add_entry(project, {"name": "exploding", "module": "servables/exploding.py",
                         "object": "Exploding", "signatures": {"serving_default": "f"}})
    return "exploding"


def _row(table: str, name: str) -> str:
    return next(line for line in table.splitlines() if line.startswith(f"{name} "))


def test_not_blessed_and_failed_servables_exit_1_while_the_others_are_published(
        project, tmp_path):
    """From another directory, in a subprocess (what CI sees), then again with --verbose."""
    broken = [_add_broken(project, "wrong_value"), _add_broken(project, "raises"),
              _add_exploding(project)]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    command = [sys.executable, os.path.join(PROJECT, "runner.py"),
               "--catalog", str(project / "servables" / "catalog.yaml"),
               "--output-dir", str(tmp_path / "out"), "--servables",
               ",".join(["sum_two", *broken])]
    first = subprocess.run(command, cwd=elsewhere, capture_output=True, text=True, timeout=900)
    assert first.returncode == 1, first.stderr
    table = first.stdout.split("Next steps")[0]
    assert max(len(line) for line in table.splitlines()) <= 100
    # A brand-new output dir: sum_two ran in this invocation (its retry after the
    # failure found it cached; that is still this run's work).
    assert " ran " in _row(table, "sum_two") and "version 1" in _row(table, "sum_two")
    assert "no: expect.response" in _row(table, "wrong_value")
    assert "no: " in _row(table, "raises") and "not pushed" in _row(table, "raises")
    assert "FAILED" in _row(table, "exploding")

    err = first.stderr
    for name, kind in [("wrong_value", "not blessed: "), ("raises", "not blessed: "),
                       ("exploding", "failed while constructing the object: ValueError: "
                                     "this servable is broken on purpose")]:
        lines = err.splitlines()
        start = lines.index(next(line for line in lines
                                 if line.startswith(f"error: {name} ")))
        assert lines[start].startswith(f"error: {name} {kind}"), lines[start]
        report_line = next(line for line in lines[start + 1:] if line.startswith("  report: "))
        with open(report_line.removeprefix("  report: ")) as f:
            text = f.read()
        if name == "exploding":  # the failure's report keeps the full traceback
            assert "this servable is broken on purpose" in text
            assert "## Full traceback" in text and "beam_dag_runner.py" in text
        else:
            assert "NOT BLESSED" in text
    assert 'exploding.py", line 7, in __init__' in err  # the user's own frame
    # Quiet: no framework traceback, no Beam or TFX error records.
    assert "ERROR:apache_beam" not in err and "Traceback (most recent call last)" not in err
    assert "Execution " not in err and "site-packages" not in err
    # Next steps: the one published servable, called with its own example request.
    steps = first.stdout.split("Next steps")[1]
    assert f"@{project / 'data' / 'requests' / 'sum_two.json'} " in steps
    assert "/v1/models/sum_two:predict" in steps
    assert "wrong_value" not in steps and "raises" not in steps and "exploding" not in steps
    serving = tmp_path / "out" / "serving"
    assert {e for e in os.listdir(serving)
            if (serving / e).is_dir() and not e.startswith(".")} == {"sum_two"}

    again = subprocess.run([*command, "--verbose"], cwd=elsewhere, capture_output=True,
                           text=True, timeout=900)
    assert again.returncode == 1  # still not blessed: the cached verdict counts
    assert "unchanged (v1)" in _row(again.stdout, "sum_two")
    assert " cached " in _row(again.stdout, "wrong_value")
    assert "Traceback (most recent call last)" in again.stderr  # --verbose keeps everything


def test_each_run_reports_its_own_work_from_its_own_executions(project, tmp_path):
    """Read back after a later run on the same output dir, a run still reports itself."""
    catalog_path = str(project / "servables" / "catalog.yaml")
    paths = {"pipeline_root": str(tmp_path / "pipeline"),
             "serving_root": str(tmp_path / "serving"),
             "metadata_path": str(tmp_path / "metadata.sqlite")}
    first = local.run_pipeline(load_catalog(catalog_path), servables=["fun_runif"], **paths)
    randomizer = project / "servables" / "randomizer.py"
    randomizer.write_text(randomizer.read_text().replace(
        "tf.random.uniform(shape=(N,))", "tf.random.uniform(shape=(N,), maxval=0.5)"))
    second = local.run_pipeline(load_catalog(catalog_path), servables=["fun_runif"], **paths)
    assert first.run_ids and second.run_ids and not set(first.run_ids) & set(second.run_ids)
    args = (paths["metadata_path"], paths["serving_root"])
    [one] = report.summarize(first, *args).verdicts
    [two] = report.summarize(second, *args).verdicts
    assert (one.status, one.pushed, one.exported) == ("published", "version 1", "ran")
    assert (two.status, two.pushed, two.exported) == ("published", "version 2", "ran")
