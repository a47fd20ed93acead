"""The end of a run, without running a pipeline: table, verdict lines, next steps, --help.

The pipeline-level counterparts (real runs, real exit codes) are in test_pipeline.py.
"""

from __future__ import annotations

import os

import pytest

import runner
from pipeline.catalog import DEFAULT_CATALOG, load_catalog
from pipeline.report import TABLE_WIDTH, RunReport, Verdict, next_steps

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _published(name: str, version: str = "1") -> Verdict:
    return Verdict(name, "published", exported="ran", blessed="yes",
                   pushed=f"version {version}", version=version)


def _rejected(name: str) -> Verdict:
    reason = ("serving_default/data/requests/sum_two.json: expect.response: "
              "$.predictions[0][0]: got 3.5, expected 3.0 (tolerance 1e-06)")
    return Verdict(name, "not blessed", exported="cached",
                   blessed="no: expect.response, determinism, latency, " + "x" * 200,
                   pushed="not pushed", reason=reason + " (+2 more in the report)",
                   report=f"/tmp/out/pipeline/ServableEvaluator.{name}/blessing/7/report.md")


def _failed(name: str) -> Verdict:
    return Verdict(name, "failed", exported="FAILED",
                   reason="failed while constructing the object: ValueError: broken",
                   details='User traceback (most recent call last):\n  File "x.py", line 3\n'
                           "ValueError: broken",
                   report=f"/tmp/out/pipeline/ExportServable.{name}/failure/3/report.md")


def test_table_fits_100_columns_and_shortens_reasons():
    report = RunReport([_published("sum_two"), _rejected("a_rather_long_servable_name_here"),
                        _failed("exploding")], "/tmp/out/serving")
    table = report.table()
    assert max(len(line) for line in table.splitlines()) <= TABLE_WIDTH
    rejected = next(line for line in table.splitlines() if line.startswith("a_rather"))
    assert "no: expect.response" in rejected and rejected.endswith("…  not pushed")
    assert "FAILED" in next(line for line in table.splitlines() if line.startswith("exploding"))
    assert table.splitlines()[-1] == "serving root: /tmp/out/serving"


def test_unchanged_has_one_wording():
    unchanged = Verdict("sum_two", "unchanged", exported="cached", blessed="yes",
                        pushed="unchanged (v3)", version="3")
    table = RunReport([unchanged], "/tmp/s").table()
    assert "unchanged (v3)" in table and "cached)" not in table


def test_exit_code_is_1_when_any_servable_is_not_blessed_or_failed():
    good = [_published("sum_two"), Verdict("b", "unchanged", pushed="unchanged (v1)")]
    assert RunReport(good, "/s").exit_code == 0
    assert RunReport([*good, _rejected("c")], "/s").exit_code == 1
    assert RunReport([*good, _failed("d")], "/s").exit_code == 1
    assert RunReport(good, "/s").errors() == ""


def test_each_bad_servable_is_named_with_one_line_reason_and_report_path():
    errors = RunReport([_published("sum_two"), _rejected("wrong"), _failed("exploding")],
                       "/s").errors()
    lines = errors.splitlines()
    assert lines[0].startswith("error: wrong not blessed: serving_default/")
    assert lines[0].endswith("(+2 more in the report)")
    assert lines[1] == "  report: /tmp/out/pipeline/ServableEvaluator.wrong/blessing/7/report.md"
    assert lines[2] == ("error: exploding failed while constructing the object: "
                        "ValueError: broken")
    assert '    File "x.py", line 3' in lines  # the user's frames, indented under it
    assert lines[-1].endswith("ExportServable.exploding/failure/3/report.md")
    assert "error: sum_two" not in errors


def test_next_steps_serve_and_call_only_what_was_published_with_its_own_example(tmp_path):
    catalog = load_catalog(DEFAULT_CATALOG)
    steps = RunReport([_published("fun_runif"), _rejected("sum_two"),
                       Verdict("mobilenet_v2_test", "unchanged", pushed="unchanged (v1)")],
                      str(tmp_path / "serving"), catalog).next_steps()
    assert f"serve --serving-dir {tmp_path / 'serving'}" in steps
    assert "fun_runif.json http://127.0.0.1:8501/v1/models/fun_runif:predict" in steps
    assert "mobilenet_v2_test.json http://127.0.0.1:8501/v1/models/mobilenet_v2_test:predict" \
        in steps
    assert "sum_two" not in steps
    assert f"-v {tmp_path / 'serving'}:/models" in steps


def test_nothing_published_suggests_nothing(tmp_path):
    report = RunReport([_rejected("sum_two"), _failed("fun_runif")], str(tmp_path),
                       load_catalog(DEFAULT_CATALOG))
    assert report.next_steps() == ""
    assert next_steps(str(tmp_path / "missing")) == ""


def test_servable_without_examples_gets_a_status_call(tmp_path):
    steps = next_steps(str(tmp_path), ["sum_two"], None)
    assert "curl http://127.0.0.1:8501/v1/models/sum_two\n" in steps + "\n"


@pytest.mark.parametrize("argv", [["run", "--help"], ["--help"]])
def test_help_documents_the_exit_codes(argv, capsys):
    with pytest.raises(SystemExit) as info:
        runner.main(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "Exit status of run" in out
    assert "0  every selected servable is blessed and published, or unchanged" in out
    assert "1  a servable was not blessed or failed" in out
    assert "report.md" in out
    assert "2  usage or catalog error" in out


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        runner.main(["run", "--keep", "0"])
    assert info.value.code == 2
    assert "must be an integer >= 1" in capsys.readouterr().err


def test_a_failed_step_of_no_servable_fails_the_run():
    report = RunReport([_published("sum_two")], "/s",
                       run_errors=[("ServingConfig", "OSError: read-only file system",
                                    "/o/pipeline/ServingConfig/failure/9/report.md")])
    assert report.exit_code == 1
    assert report.errors().splitlines() == [
        "error: ServingConfig failed: OSError: read-only file system",
        "  report: /o/pipeline/ServingConfig/failure/9/report.md"]
