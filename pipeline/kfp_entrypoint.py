"""The Kubeflow tasks' container entrypoint: TFX's, then a clean process exit.

``KubeflowV2DagRunner`` would run every task as
``python -m tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor ARGS``.
The compiled job runs ``python -m pipeline.kfp_entrypoint ARGS`` instead: this
module runs exactly that TFX module, in this process, with the same arguments,
then flushes its output and ends the process with ``os._exit(<TFX's exit code>)``.

Why: a process that used tensorflow-io's S3 filesystem aborts while the
interpreter shuts down ("pure virtual method called", exit code 134; the AWS
SDK's static destructors, tensorflow/io#2039, not fixed in tensorflow-io
0.37.1, the release for TensorFlow 2.16), after the executor's outputs and the
executor output file are written. Kubeflow's launcher judges a task by its exit
code, so every task of a job whose pipeline root is ``s3://`` would fail.
Skipping the interpreter's teardown leaves the exit code to the task's own
outcome: 0 when TFX's entrypoint returns, its ``SystemExit`` code, or 1 (with
the traceback printed) when it raises.
"""

from __future__ import annotations

import logging
import os
import runpy
import sys
import traceback

TFX_ENTRYPOINT = "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"


def run() -> int:
    """Runs TFX's entrypoint as ``__main__`` with this process's arguments; its exit code."""
    try:
        runpy.run_module(TFX_ENTRYPOINT, run_name="__main__", alter_sys=True)
    except SystemExit as done:  # absl's app.run ends with sys.exit()
        code = done.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 - reported as the task's failure
        traceback.print_exc()
        return 1
    return 0


def _exit(code: int) -> None:
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    _exit(run())
