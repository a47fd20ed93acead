"""The peer server: MLflow's pyfunc scoring server serving the same SavedModels.

What a user would otherwise pick here: ``mlflow models serve`` (uvicorn + FastAPI, one
worker) on a ``PythonModel`` that loads the SavedModel (``bench/mlflow_model.py``).
MLflow and its TensorFlow live in their own environment, ``.venv-bench``, built from
``bench/requirements-mlflow.lock`` by ``make setup-bench``; this module only drives it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_VENV = os.path.join(ROOT, ".venv-bench")
MLFLOW = os.path.join(BENCH_VENV, "bin", "mlflow")
BENCH_PYTHON = os.path.join(BENCH_VENV, "bin", "python")
# MLflow's body for /invocations: TF Serving's "instances"/"inputs" JSON is accepted as is.
INVOCATIONS_PATH = "/invocations"
READY_PATH = "/ping"


def available() -> bool:
    """Whether the bench environment with MLflow is installed."""
    return os.access(MLFLOW, os.X_OK) and os.access(BENCH_PYTHON, os.X_OK)


def peer_env() -> dict[str, str]:
    """Environment for MLflow: its venv first on PATH (it execs ``uvicorn``), no telemetry."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update({
        "PATH": os.path.join(BENCH_VENV, "bin") + os.pathsep + env.get("PATH", ""),
        "VIRTUAL_ENV": BENCH_VENV,
        "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
        "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore",
    })
    return env


def version() -> str:
    """The installed MLflow version."""
    return subprocess.run([BENCH_PYTHON, "-c", "import mlflow; print(mlflow.__version__)"],
                          env=peer_env(), check=True, capture_output=True,
                          text=True).stdout.strip()


def prepare(saved_models: Mapping[str, str], out_root: str) -> dict[str, str]:
    """Writes one MLflow model directory per SavedModel; returns name -> directory."""
    cmd = [BENCH_PYTHON, os.path.join(ROOT, "bench", "mlflow_model.py"), "--out-root", out_root]
    for name, path in saved_models.items():
        cmd += ["--model", f"{name}={path}"]
    subprocess.run(cmd, env=peer_env(), check=True, capture_output=True, text=True)
    return {name: os.path.join(out_root, name) for name in saved_models}


def serve_command(model_dir: str, port: int) -> list[str]:
    """``mlflow models serve`` on loopback with one uvicorn worker, the local env."""
    return [MLFLOW, "models", "serve", "-m", model_dir, "--env-manager", "local",
            "-h", "127.0.0.1", "-p", str(port), "--workers", "1"]
