"""The MLflow peer's model: a pyfunc ``PythonModel`` that loads one of our SavedModels.

This is what a user would write to serve the same SavedModel with MLflow: load it
in ``load_context``, call its serving signature in ``predict``. It runs only in the
bench environment (``.venv-bench``, ``make setup-bench``), never in ``.venv``:

    .venv-bench/bin/python bench/mlflow_model.py --model NAME=SAVED_MODEL --out-root DIR

writes the MLflow model directory ``DIR/NAME`` that ``mlflow models serve -m DIR/NAME``
serves.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from typing import Any

import mlflow.pyfunc


def _decode_b64(value: Any) -> Any:
    """TF Serving's ``{"b64": ...}`` binary convention (MLflow leaves it to the model)."""
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, (list, tuple)):
        return [_decode_b64(v) for v in value]
    if hasattr(value, "dtype") and value.dtype == object:
        return [_decode_b64(v) for v in value.tolist()]
    return value


class SavedModelPyfunc(mlflow.pyfunc.PythonModel):
    """Calls the SavedModel's ``serving_default`` signature on the parsed request."""

    def load_context(self, context: Any) -> None:
        """Loads the SavedModel once per worker."""
        import tensorflow as tf

        loaded = tf.saved_model.load(context.artifacts["saved_model"])
        self._loaded = loaded  # keeps the signature's resources alive
        self._signature = loaded.signatures["serving_default"]
        self._specs = self._signature.structured_input_signature[1]

    def predict(self, context, model_input, params=None):  # noqa: ANN001 - see below
        """Tensors in, numpy out (strings decoded), as MLflow serializes them.

        No type hints on purpose: MLflow 3 derives an input schema from them.
        """
        import numpy as np
        import tensorflow as tf

        if hasattr(model_input, "to_dict") and not isinstance(model_input, dict):
            model_input = model_input.to_dict(orient="list")  # a pandas DataFrame
        if isinstance(model_input, dict):
            columns = model_input
        else:
            (name,) = self._specs
            columns = {name: model_input}
        tensors = {name: tf.constant(_decode_b64(columns[name]), dtype=spec.dtype)
                   for name, spec in self._specs.items()}
        outputs = {k: v.numpy() for k, v in self._signature(**tensors).items()}
        for key, value in outputs.items():
            if value.dtype == object:
                outputs[key] = np.vectorize(lambda b: b.decode("utf-8", "replace"),
                                            otypes=[object])(value)
        return next(iter(outputs.values())) if len(outputs) == 1 else outputs


def save(saved_model: str, out: str) -> str:
    """Writes the MLflow model directory for ``saved_model`` to ``out``."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import mlflow_model  # the class pickled by reference to this module, shipped in code/

    mlflow.pyfunc.save_model(
        out, python_model=mlflow_model.SavedModelPyfunc(),
        artifacts={"saved_model": saved_model}, code_paths=[os.path.abspath(__file__)],
        # Explicit, so that MLflow does not spend seconds inferring them.
        pip_requirements=["mlflow", "tensorflow==2.16.2"])
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: one MLflow model directory per ``--model NAME=SAVED_MODEL_DIR``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, metavar="NAME=DIR",
                        help="a SavedModel to wrap; written to OUT_ROOT/NAME (repeatable)")
    parser.add_argument("--out-root", required=True, help="where the MLflow models go")
    args = parser.parse_args(argv)
    for item in args.model:
        name, _, saved_model = item.partition("=")
        print(save(os.path.abspath(saved_model), os.path.join(args.out_root, name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
