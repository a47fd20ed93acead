"""Runs the pipeline on this machine: TFX's BeamDagRunner or LocalDagRunner.

Both local runners stop at the first failing node, so one broken servable
would keep the others from being evaluated and pushed. ``run_pipeline`` then
runs the pipeline again without the failed servable (the nodes that already
finished are cache hits) until every good servable has gone through, and
reports the broken ones. Kubeflow and Airflow run independent branches on
their own and need none of this.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
import time
from collections.abc import Callable, Sequence

from absl import logging as absl_logging

from pipeline.catalog import Catalog
from pipeline.pipeline import PIPELINE_NAME, STEPS, create_pipeline

ORCHESTRATORS = ("beam", "local")
_STEP_LABELS = {"ExportServable": "export", "ServableEvaluator": "evaluate",
                "VersionedPusher": "push"}
_NODE = re.compile(rf"^(?P<step>{'|'.join(STEPS)})\.(?P<servable>.+)$")


@dataclasses.dataclass
class RunOutcome:
    """What a local run did: the servables it ran and those that failed, with why."""

    started_ms: int
    servables: list[str]
    failures: dict[str, str]


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
    outcome = RunOutcome(started_ms=int(time.time() * 1000), servables=names, failures={})
    remaining = list(names)
    with _ProgressLog(progress):
        while remaining:
            tfx_pipeline = create_pipeline(
                catalog, pipeline_root=pipeline_root, serving_root=serving_root,
                servables=remaining, metadata_path=metadata_path, enable_cache=enable_cache,
                beam_pipeline_args=beam_pipeline_args, config_base_path=config_base_path,
                keep=keep)
            try:
                _runner(orchestrator).run(tfx_pipeline)
                break
            except Exception as error:  # noqa: BLE001 - attributed to a servable below
                broken = _failed_servable(error, remaining)
                if broken is None:
                    raise
                outcome.failures[broken] = _error_message(error)
                remaining.remove(broken)
    return outcome


def _runner(orchestrator: str):
    if orchestrator == "local":
        from tfx.orchestration.local.local_dag_runner import LocalDagRunner

        return LocalDagRunner()
    from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner

    return BeamDagRunner()


def _failed_servable(error: BaseException, candidates: Sequence[str]) -> str | None:
    """The servable whose node raised ``error``, from the exception chain."""
    seen = error
    while seen is not None:
        name = getattr(seen, "servable", None)
        if name in candidates:
            return name
        seen = seen.__cause__ or seen.__context__
    text = str(error)
    quoted = [n for n in candidates if f"servable '{n}'" in text]
    return quoted[0] if len(quoted) == 1 else None


def _error_message(error: BaseException) -> str:
    seen = error
    while seen is not None:
        if getattr(seen, "servable", None):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return f"{type(error).__name__}: {error}"


class _ProgressLog(logging.Handler):
    """Turns the runners' "node X is running/finished" records into progress lines."""

    _STARTED = ("node %s is running.", "Component %s is running.")
    _FINISHED = ("node %s is finished.", "Component %s is finished.")
    _CACHED = "A cached execution %d is used."

    def __init__(self, emit_line: Callable[[str], None] | None):
        super().__init__(level=logging.INFO)
        self._emit_line = emit_line
        self._started: dict[str, float] = {}
        self._cached: set[str] = set()
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
        elif record.msg == self._CACHED and self._current:
            self._cached.add(self._current)
        elif record.msg in self._FINISHED and record.args:
            node = str(record.args[0])
            match = _NODE.match(node)
            if not match:
                return
            seconds = time.monotonic() - self._started.get(node, time.monotonic())
            how = "cached" if node in self._cached else f"done in {seconds:.1f}s"
            self._emit_line(f"  {match['servable']:<24} {_STEP_LABELS[match['step']]:<9} {how}")


def print_progress(line: str) -> None:
    """Default progress sink: one line per finished step on stderr."""
    print(line, file=sys.stderr, flush=True)


__all__ = ["ORCHESTRATORS", "PIPELINE_NAME", "RunOutcome", "print_progress", "run_pipeline"]
