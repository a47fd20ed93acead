"""What the command line prints: the end-of-run table, next steps, and status."""

from __future__ import annotations

import os
import shlex
import time

from components.versioned_pusher.publish import list_versions
from pipeline import metadata_store
from pipeline.local import RunOutcome
from pipeline.pipeline import PIPELINE_NAME
from tfserving.fingerprint import servable_fingerprint


def run_summary(outcome: RunOutcome, metadata_path: str, serving_root: str) -> str:
    """A table of the run (exported, blessed, pushed, path) and the next steps."""
    store = metadata_store.open_store(metadata_path)
    results = metadata_store.step_results(store, PIPELINE_NAME, outcome.servables,
                                          since_ms=outcome.started_ms) if store else {}
    rows = [("servable", "exported", "blessed", "pushed", "path")]
    for name in outcome.servables:
        steps = results.get(name, {})
        export = steps.get("ExportServable", metadata_store.StepResult("not run"))
        evaluate = steps.get("ServableEvaluator", metadata_store.StepResult("not run"))
        push = steps.get("VersionedPusher", metadata_store.StepResult("not run"))
        if name in outcome.failures or export.state == "failed":
            rows.append((name, "FAILED", "-", "not pushed", "see error below"))
            continue
        rows.append((name, export.state, _blessed(evaluate), _pushed(push),
                     _relative(push.output.get("pushed_destination", ""))))
    table = _table(rows)
    return f"\n{table}\n\n{next_steps(serving_root)}"


def _blessed(evaluate: metadata_store.StepResult) -> str:
    if evaluate.state in ("not run", "failed"):
        return evaluate.state
    blessed = evaluate.output.get("blessed")
    if blessed == 1:
        return "yes"
    return f"NO: {evaluate.output.get('reasons', '?')}"


def _pushed(push: metadata_store.StepResult) -> str:
    if push.state in ("not run", "failed"):
        return push.state
    cached = " (cached)" if push.state == "cached" else ""
    version = push.output.get("pushed_version", "")
    if push.output.get("pushed") == 1:
        return f"version {version}{cached}"
    reason = push.output.get("reason", "")
    if reason == "unchanged":
        return f"unchanged (v{version}){cached}"
    return f"not pushed{cached}"


def next_steps(serving_root: str) -> str:
    """The local serve command, a curl call and the tensorflow/serving recipe."""
    root = shlex.quote(_relative(serving_root))
    mount = shlex.quote(os.path.abspath(serving_root))
    return "\n".join([
        "Next steps:",
        f"  serve locally:  python runner.py serve --serving-dir {root}",
        "  call it:        curl -d @data/requests/sum_two.json "
        "http://127.0.0.1:8501/v1/models/sum_two:predict",
        f"  production:     docker run -p 8501:8501 -v {mount}:/models tensorflow/serving "
        "--model_config_file=/models/models.config",
    ])


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
