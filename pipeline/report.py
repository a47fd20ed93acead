"""What the command line prints: the end-of-run table, verdicts, next steps, and status.

The run's verdict comes from ML Metadata: the executions of this invocation's
own pipeline runs (``RunOutcome.run_ids``), the evaluator's blessing and
report, the pusher's result. A servable is good when it is blessed and its
version is in the serving root (published now, or unchanged); anything else
makes the run exit 1 (see ``runner.py --help``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
import time

from components import specs
from components.versioned_pusher.publish import list_versions
from pipeline import metadata_store
from pipeline.catalog import Catalog
from pipeline.local import RunOutcome
from pipeline.pipeline import PIPELINE_NAME
from tfserving import defaults
from tfserving.fingerprint import servable_fingerprint

TABLE_WIDTH = 100  # the summary table never gets wider than this
PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_REASON_CHARS = 160  # a verdict's one-line reason; the report has the full text


@dataclasses.dataclass
class Verdict:
    """One servable's outcome in a run."""

    servable: str
    status: str  # published | unchanged | not blessed | failed
    exported: str = "-"  # ran | cached | FAILED | -
    blessed: str = "-"  # table cell: yes | no: <checks> | FAILED | -
    pushed: str = "-"  # table cell: version N | unchanged (vN) | not pushed | FAILED | -
    version: str = ""
    reason: str = ""  # one line, for a servable that is not good
    report: str = ""  # report.md explaining it (evaluator's, or the failure's)
    details: str = ""  # error block: message and the user's frames (failures only)

    @property
    def good(self) -> bool:
        """Blessed and in the serving root."""
        return self.status in ("published", "unchanged")


@dataclasses.dataclass
class RunReport:
    """Everything the command line says at the end of a run."""

    verdicts: list[Verdict]
    serving_root: str
    catalog: Catalog | None = None
    # Steps of no single servable that failed (writing models.config): (step, reason, report)
    run_errors: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 if every servable is blessed and published (or unchanged), else 1."""
        return 0 if all(v.good for v in self.verdicts) and not self.run_errors else 1

    def table(self) -> str:
        """The summary table, at most TABLE_WIDTH columns wide."""
        return _summary_table(self.verdicts, self.serving_root)

    def errors(self) -> str:
        """One block per servable that is not good: name, one-line reason, report path."""
        blocks = []
        for v in self.verdicts:
            if v.good:
                continue
            # "error: x failed while constructing ...", "error: x not blessed: ..."
            joiner = " " if v.reason.startswith("failed ") else f" {v.status}: "
            lines = [f"error: {v.servable}{joiner}{v.reason}"]
            if v.details:
                lines += ["  " + line for line in v.details.splitlines()]
            if v.report:
                lines.append(f"  report: {_relative(v.report)}")
            blocks.append("\n".join(lines))
        for step, reason, report in self.run_errors:
            blocks.append(f"error: {step} failed: {reason}"
                          + (f"\n  report: {_relative(report)}" if report else ""))
        return "\n".join(blocks)

    def next_steps(self) -> str:
        """Serve and call what this run published; '' when it published nothing."""
        return next_steps(self.serving_root, [v.servable for v in self.verdicts if v.good],
                          self.catalog)


def summarize(outcome: RunOutcome, metadata_path: str, serving_root: str,
              catalog: Catalog | None = None) -> RunReport:
    """The verdict of every servable of ``outcome``, from its own runs' executions."""
    store = metadata_store.open_store(metadata_path)
    results = metadata_store.run_step_results(
        store, PIPELINE_NAME, outcome.servables, outcome.run_ids) if store else {}
    verdicts = [_verdict(name, results.get(name, {}), outcome) for name in outcome.servables]
    run_errors = [(f.step, _one_line(f.message, ""), f.report) for f in outcome.run_failures]
    return RunReport(verdicts, serving_root, catalog, run_errors)


def run_summary(outcome: RunOutcome, metadata_path: str, serving_root: str,
                catalog: Catalog | None = None) -> str:
    """The table and the next steps, as printed on stdout."""
    run = summarize(outcome, metadata_path, serving_root, catalog)
    steps = run.next_steps()
    return f"\n{run.table()}" + (f"\n\n{steps}" if steps else "")


def _verdict(name: str, steps: dict[str, metadata_store.StepResult],
             outcome: RunOutcome) -> Verdict:
    not_run = metadata_store.StepResult("not run")
    export = steps.get("ExportServable", not_run)
    evaluate = steps.get("ServableEvaluator", not_run)
    push = steps.get("VersionedPusher", not_run)
    verdict = Verdict(name, status="failed", exported=_state_cell(export))
    failure = outcome.failures.get(name)
    if failure is not None:
        if failure.step == "ServableEvaluator":
            verdict.blessed = "FAILED"
        elif failure.step == "VersionedPusher":
            verdict.blessed, verdict.pushed = _blessed_cell(evaluate), "FAILED"
        else:
            verdict.exported = "FAILED"
        verdict.reason = _one_line(failure.message, name)
        verdict.details = _details(failure.message)
        verdict.report = failure.report
        return verdict
    verdict.blessed = _blessed_cell(evaluate)
    if evaluate.state in ("ran", "cached") and evaluate.output.get("blessed") != 1:
        verdict.status = "not blessed"
        verdict.pushed = "not pushed"
        verdict.reason, verdict.report = _rejection(evaluate)
        return verdict
    if push.state not in ("ran", "cached"):
        step = next((s for s, r in (("export", export), ("evaluate", evaluate),
                                    ("push", push)) if r.state not in ("ran", "cached")))
        verdict.reason = f"its {step} step did not complete in this run"
        return verdict
    verdict.version = str(push.output.get("pushed_version", ""))
    if push.output.get("pushed") == 1:
        verdict.status, verdict.pushed = "published", f"version {verdict.version}"
    elif push.output.get("reason") == "unchanged":
        verdict.status, verdict.pushed = "unchanged", f"unchanged (v{verdict.version})"
    else:
        verdict.pushed = "not pushed"
        verdict.reason = f"not pushed: {push.output.get('reason') or 'no reason recorded'}"
    return verdict


def _state_cell(result: metadata_store.StepResult) -> str:
    return {"ran": "ran", "cached": "cached", "failed": "FAILED"}.get(result.state, "-")


def _blessed_cell(evaluate: metadata_store.StepResult) -> str:
    if evaluate.state == "failed":
        return "FAILED"
    if evaluate.state not in ("ran", "cached"):
        return "-"
    if evaluate.output.get("blessed") == 1:
        return "yes"
    failed = _failed_checks(evaluate)
    return "no: " + (", ".join(failed) if failed else "see report")


def _evaluator_report(evaluate: metadata_store.StepResult) -> dict:
    try:
        from tfx.utils import io_utils

        return json.loads(io_utils.read_string_file(
            os.path.join(evaluate.output_uri, specs.REPORT_JSON)))
    except Exception:  # noqa: BLE001 - the MLMD properties are the fallback
        return {}


def _failed_checks(evaluate: metadata_store.StepResult) -> list[str]:
    names: list[str] = []
    for check in _evaluator_report(evaluate).get("checks", []):
        if not check.get("passed") and check.get("name") not in names:
            names.append(check.get("name"))
    return names


def _rejection(evaluate: metadata_store.StepResult) -> tuple[str, str]:
    """(one-line reason, report.md path) of a model the evaluator did not bless."""
    reasons = _evaluator_report(evaluate).get("reasons") or [
        evaluate.output.get("reasons") or "no reason recorded"]
    more = f" (+{len(reasons) - 1} more in the report)" if len(reasons) > 1 else ""
    report = (os.path.join(evaluate.output_uri, specs.REPORT_MARKDOWN) if evaluate.output_uri
              else "")
    return _shorten(reasons[0], _REASON_CHARS) + more, report


def _one_line(message: str, name: str) -> str:
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    return _shorten(first.removeprefix(f"servable '{name}': "), _REASON_CHARS)


def _details(message: str) -> str:
    """The message after its first line: the user's frames (or the rest of the error)."""
    rest = message.strip().splitlines()[1:]
    return "\n".join(rest)


def _shorten(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _summary_table(verdicts: list[Verdict], serving_root: str) -> str:
    header = ("servable", "exported", "blessed", "pushed")
    rows = [(v.servable, v.exported, v.blessed, v.pushed) for v in verdicts]
    # Every column but `blessed` is short; the rejection reasons are shortened to
    # what is left of TABLE_WIDTH (full text: the error lines and report.md).
    fixed = sum(max(len(r[i]) for r in [header, *rows]) for i in (0, 1, 3)) + 3 * 2
    room = max(TABLE_WIDTH - fixed, len("no: see report"))
    rows = [(r[0], r[1], _shorten(r[2], room), r[3]) for r in rows]
    root = _relative(serving_root)
    return _table([header, *rows]) + f"\n\nserving root: {root}"


def next_steps(serving_root: str, servables: list[str] | None = None,
               catalog: Catalog | None = None) -> str:
    """How to serve ``servables`` (in the serving root) and call each with its own example.

    '' when there is nothing to serve.
    """
    if servables is None:
        servables = sorted(n for n in _listdir(serving_root) if list_versions(
            os.path.join(serving_root, n)))
    if not servables:
        return ""
    python = shlex.quote(_relative(sys.executable))
    runner = shlex.quote(_relative(os.path.join(PROJECT, "runner.py")))
    root = shlex.quote(_relative(serving_root))
    url = f"http://{defaults.HOST}:{defaults.REST_PORT}/v1/models"
    lines = ["Next steps:",
             f"  serve locally:  {python} {runner} serve --serving-dir {root}"]
    for i, name in enumerate(servables):
        label = "  call it:       " if i == 0 else " " * 17
        request = _example_request(catalog, name)
        if request:
            lines.append(f"{label} curl -d @{shlex.quote(_relative(request))} "
                         f"{url}/{name}:predict")
        else:
            lines.append(f"{label} curl {url}/{name}")
    if "://" not in serving_root:
        mount = shlex.quote(os.path.abspath(serving_root))
        lines.append(f"  production:     docker run -p 8501:8501 -v {mount}:/models "
                     "tensorflow/serving --model_config_file=/models/models.config")
    return "\n".join(lines)


def _example_request(catalog: Catalog | None, name: str) -> str:
    if catalog is None:
        return ""
    entry = next((s for s in catalog.servables if s.name == name), None)
    if entry is None or not entry.examples:
        return ""
    return os.path.join(catalog.base_dir, entry.examples[0].path)


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def status(servables: list[str], serving_root: str, metadata_path: str) -> str:
    """Per servable: published versions, the newest one's fingerprint and provenance."""
    store = metadata_store.open_store(metadata_path)
    rows = [("servable", "versions", "newest fingerprint", "blessed", "pushed at", "run")]
    for name in servables:
        model_root = os.path.join(serving_root, name)
        versions = list_versions(model_root)
        if not versions:
            rows.append((name, "none", "-", "-", "-", "-"))
            continue
        newest = os.path.join(model_root, str(versions[-1]))
        try:
            fingerprint = servable_fingerprint(newest)
        except Exception as e:  # noqa: BLE001 - a broken directory is reported, not fatal
            fingerprint = f"unreadable ({type(e).__name__})"
        blessed, pushed_at, run = "?", "?", "?"
        if store is not None:
            pushes = [p for p in metadata_store.push_history(store, PIPELINE_NAME, name)
                      if os.path.normpath(p.output.get("pushed_destination", ""))
                      == os.path.normpath(newest)]
            if pushes:
                push = max(pushes, key=lambda p: p.execution_id)
                blessing = metadata_store.blessing_of_push(store, push.execution_id)
                blessed = "yes" if blessing.get("blessed") == 1 else "no"
                pushed_at = time.strftime("%Y-%m-%d %H:%M:%S",
                                          time.localtime(push.finished_ms / 1000))
                run = push.run_id
            else:
                blessed = pushed_at = run = "not in this metadata store"
        rows.append((name, ",".join(map(str, versions)), _short(fingerprint), blessed,
                     pushed_at, run))
    return _table(rows) + f"\n\nserving root: {serving_root}"


def _short(fingerprint: str) -> str:
    return fingerprint if len(fingerprint) <= 24 else fingerprint[:21] + "..."


def _relative(path: str) -> str:
    if not path or "://" in path:
        return path
    relative = os.path.relpath(path)
    return relative if not relative.startswith("..") else path


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
