"""Runs the pipeline on this machine: TFX's BeamDagRunner or LocalDagRunner.

Both local runners stop at the first failing node, so one broken servable
would keep the others from being evaluated and pushed. ``run_pipeline`` then
runs the pipeline again without the failed servable (the nodes that already
finished are cache hits) until every good servable has gone through, and
reports the broken ones. Kubeflow and Airflow run independent branches on
their own and need none of this.

Every attempt is a TFX pipeline run with a run id chosen here (TFX's runners
take the current time, which two runs started together can share). The
outcome lists those ids: what this invocation did is read back from ML
Metadata by them (``metadata_store.run_step_results``), never by time, so a
retry's cache hits and another run on the same output directory are not
reported as this run's work.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence

from absl import logging as absl_logging

from components.export_servable.export import user_traceback
from pipeline import metadata_store
from pipeline.catalog import Catalog
from pipeline.pipeline import PIPELINE_NAME, SERVING_CONFIG, STEPS, create_pipeline, node_id

ORCHESTRATORS = ("beam", "local")
STEP_LABELS = {"ExportServable": "export", "ServableEvaluator": "evaluate",
               "VersionedPusher": "push", SERVING_CONFIG: "writing models.config"}
FAILURE_REPORT = "report.md"
_NODE = re.compile(rf"^(?P<step>{'|'.join(STEPS)})\.(?P<servable>.+)$")


@dataclasses.dataclass
class Failure:
    """A servable whose step raised: where, why, and the report written for it."""

    servable: str
    step: str  # ExportServable | ServableEvaluator | VersionedPusher, "" if unknown
    message: str  # the error and the user's own frames
    full_traceback: str  # everything, framework frames included (kept in the report)
    execution_id: int | None = None
    report: str = ""  # path of the failure's report.md


@dataclasses.dataclass
class RunOutcome:
    """What a local run did: its pipeline run ids, the servables, and those that failed."""

    started_ms: int
    servables: list[str]
    failures: dict[str, Failure]
    run_ids: list[str] = dataclasses.field(default_factory=list)  # one per attempt
    pipeline_root: str = ""
    # Failures of nodes that belong to no servable (ServingConfig: models.config).
    run_failures: list[Failure] = dataclasses.field(default_factory=list)


def run_pipeline(
    catalog: Catalog,
    *,
    pipeline_root: str,
    serving_root: str,
    metadata_path: str,
    servables: Sequence[str] | None = None,
    orchestrator: str = "beam",
    enable_cache: bool = True,
    beam_pipeline_args: Sequence[str] = (),
    config_base_path: str = "",
    keep: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> RunOutcome:
    """Runs every selected servable's branch; collects failures instead of stopping."""
    if orchestrator not in ORCHESTRATORS:
        raise ValueError(f"unknown orchestrator {orchestrator!r} (valid: "
                         f"{', '.join(ORCHESTRATORS)})")
    from tfserving.filesystems import ensure_filesystem

    for root in (pipeline_root, serving_root):  # e.g. s3://: TFX writes there from here
        ensure_filesystem(root)
    names = [s.name for s in catalog.select(servables)]
    outcome = RunOutcome(started_ms=int(time.time() * 1000), servables=names, failures={},
                         pipeline_root=pipeline_root)
    invocation = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    remaining = list(names)
    with _ProgressLog(progress):
        while remaining:
            run_id = f"{invocation}.{len(outcome.run_ids) + 1}"
            outcome.run_ids.append(run_id)
            tfx_pipeline = create_pipeline(
                catalog, pipeline_root=pipeline_root, serving_root=serving_root,
                servables=remaining, metadata_path=metadata_path, enable_cache=enable_cache,
                beam_pipeline_args=beam_pipeline_args, config_base_path=config_base_path,
                keep=keep)
            try:
                _runner(orchestrator, run_id).run(tfx_pipeline)
                break
            except Exception as error:  # noqa: BLE001 - attributed to a servable below
                failures = _attribute(error, remaining, metadata_path, run_id)
                if not failures:
                    raise
                shared = [f for f in failures if not f.servable]
                if shared:  # every servable's branch is done; retrying would fail again
                    for failure in shared:
                        failure.report = _write_failure_report(failure, pipeline_root, run_id)
                    outcome.run_failures += shared
                    break
                for failure in failures:
                    failure.report = _write_failure_report(failure, pipeline_root, run_id)
                    outcome.failures[failure.servable] = failure
                    remaining.remove(failure.servable)
    return outcome


def _runner(orchestrator: str, run_id: str):
    """TFX's runner for ``orchestrator``, running the pipeline under ``run_id``."""
    from tfx.dsl.compiler import constants
    from tfx.orchestration.portable import runtime_parameter_utils

    if orchestrator == "local":
        from tfx.orchestration.local.local_dag_runner import LocalDagRunner as base
    else:
        from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner as base

    class _RunIdRunner(base):  # type: ignore[misc, valid-type]
        # Both runners set the run-id parameter only if it is still open.
        def run_with_ir(self, pipeline, run_options=None, **kwargs):
            runtime_parameter_utils.substitute_runtime_parameter(
                pipeline, {constants.PIPELINE_RUN_ID_PARAMETER_NAME: run_id})
            with _in_process_beam() if orchestrator == "beam" else contextlib.nullcontext():
                return super().run_with_ir(pipeline, run_options=run_options, **kwargs)

    return _RunIdRunner()


# Beam's DirectRunner first tries its Prism runner, which downloads a Go binary from
# GitHub (apache_beam/runners/portability/prism_runner.py) and runs the nodes in it;
# without network it falls back to this in-process FnApiRunner. A local run must not
# depend on the network, nor run differently with it: the orchestration's runner is
# pinned. TFX's BeamDagRunner builds ``beam.Pipeline()`` without options, so Beam's
# default runner is the only place to say it.
IN_PROCESS_BEAM_RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"


@contextlib.contextmanager
def _in_process_beam() -> Iterator[None]:
    """Beam's default runner is the in-process FnApiRunner while the block runs."""
    from apache_beam.options.pipeline_options import StandardOptions

    default = StandardOptions.DEFAULT_RUNNER
    StandardOptions.DEFAULT_RUNNER = IN_PROCESS_BEAM_RUNNER
    try:
        yield
    finally:
        StandardOptions.DEFAULT_RUNNER = default


def _attribute(error: BaseException, candidates: Sequence[str], metadata_path: str,
               run_id: str) -> list[Failure]:
    """The servables whose nodes failed in run ``run_id``, with the error's message.

    ML Metadata knows which node's execution failed, whatever was raised; the
    exception chain is the fallback (and the source of the message).
    """
    full = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    message = _error_message(error)
    failed: list[tuple[str, str, int | None]] = []
    store = metadata_store.open_store(metadata_path)
    if store is not None:
        for node, execution_id in metadata_store.failed_nodes(store, run_id).items():
            if node == f"{PIPELINE_NAME}.{SERVING_CONFIG}":
                failed.append(("", SERVING_CONFIG, execution_id))
            for step in STEPS:
                for name in candidates:
                    if node == f"{PIPELINE_NAME}.{node_id(step, name)}":
                        failed.append((name, step, execution_id))
    if not failed:
        name = _servable_in_chain(error, candidates)
        if name is not None:
            failed.append((name, "", None))
    return [Failure(servable=name, step=step,
                    message=_for_servable(message, name, step) if name else message,
                    full_traceback=full, execution_id=execution_id)
            for name, step, execution_id in failed]


def _servable_in_chain(error: BaseException, candidates: Sequence[str]) -> str | None:
    """The servable whose node raised ``error``, from the exception chain."""
    for seen in _chain(error):
        name = getattr(seen, "servable", None)
        if name in candidates:
            return name
    text = str(error)
    quoted = [n for n in candidates if f"servable '{n}'" in text]
    return quoted[0] if len(quoted) == 1 else None


def _chain(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    seen: BaseException | None = error
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return chain


def _error_message(error: BaseException) -> str:
    """The error as the user needs it: our message if we made one, else the root cause
    and the user's own frames; never the framework's traceback."""
    chain = _chain(error)
    for seen in chain:
        if getattr(seen, "servable", None):
            return _strip_beam_suffix(str(seen))
    root = chain[-1]
    frames = user_traceback(root)
    return _strip_beam_suffix(f"{type(root).__name__}: {root}") + (
        f"\n{frames}" if frames else "")


def _strip_beam_suffix(text: str) -> str:
    # Beam appends " [while running 'Run[<node>]']" to a re-raised message.
    return re.sub(r" \[while running '[^']*'\]", "", text)


def _for_servable(message: str, name: str, step: str) -> str:
    if f"servable '{name}'" in message:
        return message
    where = f" in {STEP_LABELS[step]}" if step else ""
    return f"servable '{name}' failed{where}: {message}"


def _write_failure_report(failure: Failure, pipeline_root: str, run_id: str) -> str:
    """``<pipeline_root>/<node>/failure/<execution>/report.md``: the error in full.

    The terminal shows the message and the user's frames; the report keeps the
    framework's traceback too, for a bug report or a CI artifact.
    """
    from tfx.utils import io_utils

    node = (node_id(failure.step, failure.servable) if failure.step and failure.servable
            else failure.step or failure.servable)
    path = "/".join([pipeline_root.rstrip("/"), node, "failure",
                     str(failure.execution_id or run_id), FAILURE_REPORT])
    step = STEP_LABELS.get(failure.step, "an unknown step")
    title = f"Servable `{failure.servable}`" if failure.servable else f"Step `{node}`"
    text = "\n".join([
        f"# {title}: FAILED", "",
        f"Failed in {step} (TFX node `{node}`, execution {failure.execution_id}, "
        f"pipeline run `{run_id}`).", "",
        "```text", failure.message, "```", "",
        "## Full traceback", "", "```text", failure.full_traceback.rstrip(), "```", ""])
    try:
        io_utils.write_string_file(path, text)
    except Exception:  # noqa: BLE001 - the report is extra; never hide the failure itself
        return ""
    return path


class _ProgressLog(logging.Handler):
    """Turns the runners' "node X is running/finished" records into progress lines.

    A node that finished in an earlier attempt of this invocation is a cache hit
    in the next one: it is reported once, as it first ran.
    """

    _STARTED = ("node %s is running.", "Component %s is running.")
    _FINISHED = ("node %s is finished.", "Component %s is finished.")
    _CACHED = "A cached execution %d is used."
    _FAILED = "Execution %d failed."

    def __init__(self, emit_line: Callable[[str], None] | None):
        super().__init__(level=logging.INFO)
        self._emit_line = emit_line
        self._started: dict[str, float] = {}
        self._cached: set[str] = set()
        self._reported: set[str] = set()
        self._current: str | None = None

    def __enter__(self) -> _ProgressLog:
        if self._emit_line:
            # TFX logs through absl's logger; listen there at INFO without
            # changing what the root logger prints. The level is set through
            # absl's verbosity flag: TensorFlow saves and restores that flag.
            self._logger = logging.getLogger("absl")
            self._saved_verbosity = absl_logging.get_verbosity()
            self._logger.addHandler(self)
            absl_logging.set_verbosity(absl_logging.INFO)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._emit_line:
            self._logger.removeHandler(self)
            absl_logging.set_verbosity(self._saved_verbosity)

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg in self._STARTED and record.args:
            self._current = str(record.args[0])
            self._started[self._current] = time.monotonic()
            self._cached.discard(self._current)
        elif record.msg == self._CACHED and self._current:
            self._cached.add(self._current)
        elif record.msg == self._FAILED and self._current:
            self._line(self._current, "FAILED")
        elif record.msg in self._FINISHED and record.args:
            node = str(record.args[0])
            if node in self._cached and node in self._reported:
                return  # finished in an earlier attempt; this is the retry's cache hit
            seconds = time.monotonic() - self._started.get(node, time.monotonic())
            self._line(node, "cached" if node in self._cached else f"done in {seconds:.1f}s")

    def _line(self, node: str, how: str) -> None:
        if node == SERVING_CONFIG:
            self._reported.add(node)
            self._emit_line(f"  {'models.config':<24} {'write':<9} {how}")
            return
        match = _NODE.match(node)
        if match:
            self._reported.add(node)
            self._emit_line(f"  {match['servable']:<24} {STEP_LABELS[match['step']]:<9} {how}")


def print_progress(line: str) -> None:
    """Default progress sink: one line per finished step on stderr."""
    print(line, file=sys.stderr, flush=True)


__all__ = ["ORCHESTRATORS", "PIPELINE_NAME", "Failure", "RunOutcome", "print_progress",
           "run_pipeline"]
