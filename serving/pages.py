"""The browsing page, OpenAPI documents and blessing reports: paths TF Serving does not use.

- ``GET /``: the page (``serving/static/index.html``): every model, its versions with
  state and labels, each version's blessing report and signatures, and a "try it" form
  per signature. ``GET /static/{file}``: its script and style sheet (shipped in the
  project: the page works offline).
- ``GET /openapi.json``: one OpenAPI 3.1 document for every version being served, with
  the paths TF Serving routes to each model's default version and labels.
- ``GET /v1/models/{m}/openapi.json``: the same for one model;
  ``GET /v1/models/{m}/versions/{v}/openapi.json``: one version's document.
- ``GET /v1/models/{m}/versions/{v}/report.md``: the evaluator's report that the
  pipeline's pusher copied into the version's ``assets.extra/`` (which TF Serving ignores).

Documents are generated from the loaded signatures (``tfserving/openapi.py``), with the
example requests of the version's ``assets.extra/openapi.json`` when the pipeline wrote
one, so they always describe what is loaded. A version's document is built once.
"""

from __future__ import annotations

import json
import logging
import os
import re
import weakref
from typing import Any

import orjson
from starlette.responses import Response

from tfserving import openapi
from tfserving.status import ServingError, echo, not_found

log = logging.getLogger("serving")

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
_STATIC_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
_MAX_REPORT_BYTES = 1 << 20
_MODEL_DOC = re.compile(r"/v1/models/([^/:]+)(?:/versions/([0-9]+))?/(openapi\.json|report\.md)",
                        re.IGNORECASE)
_OPENAPI_JSON = "openapi.json"
_REPORT_MD = "report.md"
_documents: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def respond(registry: Any, method: str, path: str) -> Response | None:
    """The answer to a page, document or report request; None for every other request."""
    if method != "GET":
        return None
    if path == "/":
        return _static("index.html")
    if path.startswith("/static/"):
        return _static(path[len("/static/"):])
    try:
        if path == "/" + _OPENAPI_JSON:
            return _json(all_models_document(registry))
        match = _MODEL_DOC.fullmatch(path)
        if match is None:
            return None
        model, version, what = match.group(1), match.group(2), match.group(3).lower()
        if what == _REPORT_MD:
            if version is None:
                return None
            return _report(registry, model, int(version))
        if version is None:
            return _json(model_document(registry, model))
        return _json(version_document(registry, _servable(registry, model, int(version))))
    except ServingError as err:
        return Response(orjson.dumps({"error": err.message}), status_code=err.http_status,
                        media_type="application/json")


def _json(doc: dict[str, Any]) -> Response:
    return Response(orjson.dumps(doc), media_type="application/json")


def _static(name: str) -> Response:
    media_type = _STATIC_TYPES.get(name)
    if media_type is None:
        return Response(orjson.dumps({"error": f"Not found: /static/{echo(name)}"}),
                        status_code=404, media_type="application/json")
    with open(os.path.join(STATIC_DIR, name), "rb") as f:
        return Response(f.read(), media_type=media_type, headers={"Cache-Control": "no-cache"})


def _servable(registry: Any, model: str, version: int) -> Any:
    servable = registry.served_versions(model).get(version)
    if servable is None:
        raise not_found(f"Servable not found for request: Specific({echo(model)}, {version})")
    return servable


def _extra_file(registry: Any, servable: Any, name: str) -> str | None:
    """``<version dir>/<name>``, if it is a file inside the serving root."""
    path = getattr(servable, "path", None)
    if not path:
        return None
    target = os.path.realpath(os.path.join(path, name))
    if not target.startswith(os.path.join(registry.root, "")) or not os.path.isfile(target):
        return None  # the server never reads outside its root (a symlink may point out)
    return target


def version_document(registry: Any, servable: Any) -> dict[str, Any]:
    """The OpenAPI document of one loaded version (built on first use)."""
    doc = _documents.get(servable)
    if doc is None:
        examples: dict[str, Any] = {}
        stored = _extra_file(registry, servable, openapi.DOCUMENT_FILE)
        if stored:
            try:
                with open(stored, "rb") as f:
                    examples = openapi.document_examples(json.loads(f.read()))
            except (OSError, ValueError, AttributeError) as err:
                log.warning("model %s version %s: ignoring %s: %s", servable.name,
                            servable.version, stored, err)
        doc = openapi.version_document(servable.name, servable.version, servable.signatures,
                                       examples=examples)
        _documents[servable] = doc
    return doc


def _merged(registry: Any, models: list[str]) -> dict[str, Any]:
    docs, defaults, labels = [], {}, {}
    for model in models:
        served = registry.served_versions(model)
        docs.extend(version_document(registry, served[v]) for v in sorted(served))
        if served:
            defaults[model] = max(served)  # where TF Serving routes unversioned requests
        labels[model] = {k: v for k, v in registry.labels(model).items() if v in served}
    merged = openapi.merge_documents(docs, default_versions=defaults, labels=labels)
    for model in models:  # listed even with no version being served (e.g. a failed load)
        merged[openapi.EXTENSION]["models"].setdefault(model, {"versions": {}})
    return merged


def all_models_document(registry: Any) -> dict[str, Any]:
    """One document for every model being served."""
    return _merged(registry, registry.model_names())


def model_document(registry: Any, model: str) -> dict[str, Any]:
    """One document for every served version of ``model``."""
    if not registry.has_model(model):
        raise not_found(f"Could not find any versions of model {echo(model)}")
    return _merged(registry, [model])


def _report(registry: Any, model: str, version: int) -> Response:
    report = _extra_file(registry, _servable(registry, model, version), openapi.REPORT_FILE)
    try:
        if report is None:
            raise OSError(openapi.REPORT_FILE)
        with open(report, "rb") as f:
            text = f.read(_MAX_REPORT_BYTES + 1)
    except OSError:
        raise not_found(f"Version {version} of model {echo(model)} has no "
                        f"{openapi.REPORT_FILE} (it was not published by the pipeline)") from None
    return Response(text[:_MAX_REPORT_BYTES], media_type="text/markdown; charset=utf-8")
