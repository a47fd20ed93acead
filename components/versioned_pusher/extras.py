"""Files the pusher adds to a published version: its OpenAPI document and blessing report.

Both go to ``assets.extra/``, which TF Serving ignores (it reads only its warmup
requests there), so a version stays exactly what TF Serving would serve:

- ``assets.extra/openapi.json``: the version's OpenAPI 3.1 document
  (:func:`tfserving.openapi.version_document`) with the catalog's example requests.
  Only the pusher can write it: the paths name the version number, which is chosen
  at push time.
- ``assets.extra/report.md``: the ServableEvaluator's report that blessed the version,
  so the server (and anyone reading the serving root) can show why it was published.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tfserving import openapi
from tfserving.saved_model import read_meta_graph, signature_specs


def version_files(model_dir: str, name: str, version: int, *,
                  examples: Mapping[str, Any] | None = None,
                  report_path: str | None = None) -> dict[str, bytes]:
    """``{path in the version dir: bytes}`` for version ``version`` of the SavedModel."""
    doc = openapi.version_document(name, version, signature_specs(read_meta_graph(model_dir)),
                                   examples=examples)
    files = {openapi.DOCUMENT_FILE: json.dumps(doc, indent=1, sort_keys=False).encode("utf-8")}
    if report_path:
        import tensorflow as tf

        if tf.io.gfile.exists(report_path):
            with tf.io.gfile.GFile(report_path, "rb") as f:
                files[openapi.REPORT_FILE] = f.read()
    return files

