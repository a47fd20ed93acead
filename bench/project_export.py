"""Second baseline row: the project's export code without orchestration.

For every servable of the catalog: export it (the same ``export_servable`` the
ExportServable component calls: catalog, user-module import, ``clear_session``,
fingerprints), load the SavedModel and call its signature once with the catalog's first
example request, then publish it as ``<root>/<name>/1`` with an atomic rename (written in
a hidden temp dir beside the version, fsynced, renamed). No TFX, no Beam, no ML Metadata,
no caching. The floor itself is ``bench/plain_export.py`` (no project code at all); the
difference between the two is the export path's own overhead.

    python bench/project_export.py --serving-dir /tmp/root [--catalog C] [--servables a,b]

Prints one JSON line: per-step seconds and the import time.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import Any

_STARTED = time.perf_counter()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tfserving.filesystems import fsync_dir  # noqa: E402 - needs the repo on sys.path


def _decode_b64(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_decode_b64(v) for v in value]
    if isinstance(value, dict):
        return {k: _decode_b64(v) for k, v in value.items()}
    return value


def request_inputs(request: Mapping[str, Any], signature: Any) -> dict[str, Any]:
    """Keyword tensors for ``signature`` from a TF Serving REST body (row or columnar)."""
    import tensorflow as tf

    specs = signature.structured_input_signature[1]
    if "instances" in request:
        rows = _decode_b64(request["instances"])
        if rows and isinstance(rows[0], dict):
            columns = {name: [row[name] for row in rows] for name in specs}
        else:
            (name,) = specs
            columns = {name: rows}
    else:
        inputs = _decode_b64(request["inputs"])
        if isinstance(inputs, dict):
            columns = inputs
        else:
            (name,) = specs
            columns = {name: inputs}
    return {name: tf.constant(columns[name], dtype=spec.dtype) for name, spec in specs.items()}


def _fsync_tree(root: str) -> None:
    for dirpath, _, files in os.walk(root, topdown=False):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(dirpath)


def export_all(catalog_path: str | None, serving_root: str,
               servables: list[str] | None = None) -> dict[str, Any]:
    """Exports, checks once and publishes every selected servable; returns timings."""
    import tensorflow as tf

    from components.export_servable.export import export_servable
    from pipeline.catalog import load_catalog

    imported = time.perf_counter()
    catalog = load_catalog(catalog_path)
    steps: dict[str, dict[str, float]] = {}
    for servable in catalog.select(servables):
        times: dict[str, float] = {}
        model_root = os.path.join(serving_root, servable.name)
        os.makedirs(model_root, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".tmp-", dir=model_root)
        try:
            t = time.perf_counter()
            export_servable(servable.export_spec(), catalog.base_dir, staging)
            times["export"] = time.perf_counter() - t

            t = time.perf_counter()
            signature = tf.saved_model.load(staging).signatures[servable.signatures[0].key]
            outputs = signature(**request_inputs(servable.examples[0].request, signature))
            for value in outputs.values():
                value.numpy()
            times["load_and_call"] = time.perf_counter() - t

            t = time.perf_counter()
            _fsync_tree(staging)
            os.rename(staging, os.path.join(model_root, "1"))
            fsync_dir(model_root)
            times["publish"] = time.perf_counter() - t
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        steps[servable.name] = times
    return {"import_s": imported - _STARTED, "total_s": time.perf_counter() - _STARTED,
            "steps": steps}


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serving-dir", required=True, help="a fresh serving root")
    parser.add_argument("--catalog", default=None, help="servable catalog YAML")
    parser.add_argument("--servables", default=None, help="comma-separated subset")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    names = [n for n in (args.servables or "").split(",") if n] or None
    result = export_all(args.catalog, os.path.abspath(args.serving_dir), names)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
