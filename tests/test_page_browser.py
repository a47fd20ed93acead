"""The model page (``GET /``) in a real browser: the system's headless Chromium via Playwright.

A serving root published as the pipeline publishes it (the pusher's ``publish`` with each
version's OpenAPI document and blessing report in ``assets.extra/``, ``models.config`` with
labels) over the three seed servables, served by ``python -m serving``. The test opens the
page, checks models, versions, states, labels and reports, sends every example request,
uploads images for the MobileNet, edits a request, and saves a screenshot (pytest's tmp
dir; ``docs/page.png`` for the README when missing or with ``UPDATE_SCREENSHOT=1``).

No browser is downloaded: Playwright drives Debian's ``chromium`` (``apt-get install -y
chromium``; ``.ci/run`` installs it). Without one the test skips, saying so.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil

import httpx
import pytest

from tests import serving_fixtures as sf

pytestmark = pytest.mark.slow

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_JPEG = os.path.join(PROJECT, "data", "images", "sample.jpg")
DOCS_SCREENSHOT = os.path.join(PROJECT, "docs", "page.png")
MODELS = ("fun_runif", "mobilenet_v2_test", "sum_two")
SUM_TWO_LABELS = {"stable": 1, "canary": 2}


def find_chromium() -> str | None:
    """The system Chromium: $CHROMIUM, else Debian's and other usual names on PATH."""
    candidates = [os.environ.get("CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"]
    candidates += [shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@pytest.fixture(scope="module")
def browser():
    executable = find_chromium()
    if executable is None:
        pytest.skip("no Chromium found ($CHROMIUM, /usr/bin/chromium, chromium-browser): "
                    "install Debian's with `apt-get install -y chromium` (.ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        # --no-sandbox: CI containers run as root, where Chromium's sandbox cannot start.
        browser = playwright.chromium.launch(executable_path=executable,
                                             args=["--no-sandbox"])
        yield browser
        browser.close()


def _report(model: str, source: str, path: str) -> str:
    """The evaluator's report.md for ``source``, as the pipeline's ServableEvaluator writes it."""
    from components.servable_evaluator.checks import evaluate
    from components.servable_evaluator.report import render_markdown
    from pipeline.catalog import load_catalog

    entry = {s.name: s for s in load_catalog().servables}[model]
    spec = entry.evaluation_spec()
    if model == "mobilenet_v2_test":  # the fixture stand-in labels images with sf.LABELS
        spec = dataclasses.replace(spec, examples=tuple(
            dataclasses.replace(e, expect=dataclasses.replace(e.expect, vocabulary=sf.LABELS))
            for e in spec.examples),  # ... and takes one JPEG per call: no row format
            checks=dataclasses.replace(spec.checks, formats=("columnar",)))
    with open(path, "w", encoding="utf-8") as f:
        f.write(render_markdown(evaluate(source, spec)))
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from components.versioned_pusher.extras import version_files
    from components.versioned_pusher.publish import publish
    from pipeline.catalog import load_catalog
    from tfserving.model_config import ModelConfig, VersionPolicy

    base = tmp_path_factory.mktemp("page")
    root = str(base / "serving")
    examples = {s.name: s.serving.examples for s in load_catalog().servables}
    sources = sf.model_store(*MODELS)
    pushes = [(m, sources[m], f"fingerprint-{m}") for m in MODELS]
    pushes.append(("sum_two", sources["sum_two"], "fingerprint-sum_two-2"))  # version 2
    for model, source, fingerprint in pushes:
        report = _report(model, source, str(base / f"{model}-report.md"))
        config = (ModelConfig(model, policy=VersionPolicy("all"), labels=SUM_TWO_LABELS)
                  if model == "sum_two" else ModelConfig(model))
        publish(source, root, model, fingerprint=fingerprint, config=config,
                config_base_path="", extra_files=lambda version, m=model, s=source, r=report:
                version_files(s, m, version, examples=examples[m], report_path=r))
    with sf.running_server(root, "sum_two") as srv:
        for model in MODELS:
            srv.wait_ready(model)
        httpx.get(f"{srv.url}/v1/models/sum_two/versions/2", timeout=10).raise_for_status()
        yield srv


def _result(form):
    result = form.locator(".result")
    result.wait_for(state="visible", timeout=30_000)
    form.locator(".result[data-status]").wait_for(timeout=30_000)
    return int(result.get_attribute("data-status")), result.locator(".meta").inner_text(), \
        result.locator("pre").inner_text()


def _send(form):
    form.locator(".result").evaluate("node => node.removeAttribute('data-status')")
    form.get_by_role("button", name="Send").click()
    return _result(form)


def test_page_browses_and_tries_every_model(browser, server, tmp_path):
    page = browser.new_page(viewport={"width": 1200, "height": 1500})
    requests, problems = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: m.type == "error" and problems.append(m.text))
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(server.url + "/")
    page.locator("section.model").nth(2).wait_for()

    assert page.locator("html").get_attribute("lang") == "en"
    assert page.locator("#toc a").all_inner_texts() == list(MODELS)
    assert [s.get_attribute("data-model") for s in page.locator("section.model").all()] == \
        list(MODELS)

    # Versions, states and labels (sum_two: 2 versions, both served, labelled).
    sum_two = page.locator("section.model[data-model=sum_two]")
    rows = sum_two.locator("table.versions tbody tr[data-version]")
    rows.first.wait_for()
    assert rows.count() == 2
    assert rows.nth(0).inner_text().split("\t")[:3] == ["2 (default)", "AVAILABLE", "canary"]
    assert rows.nth(1).inner_text().split("\t")[:3] == ["1", "AVAILABLE", "stable"]
    assert "labels: canary" in sum_two.locator("details.version[data-version='2'] > summary") \
        .inner_text()

    # Blessing reports: a verdict per version; the report rendered on demand.
    for model in MODELS:
        verdict = page.locator(f"section.model[data-model={model}] details.version .verdict")
        verdict.first.locator(".badge").wait_for()
        assert verdict.first.inner_text().strip() == "blessed", model
    report = sum_two.locator("details.version[data-version='2'] details.report")
    report.locator("summary").click()
    assert "Servable sum_two: BLESSED" in report.locator(".report-body h5").first.inner_text()
    checks = report.locator(".report-body table").nth(1)
    assert "expect.response" in checks.inner_text()
    assert checks.locator("tbody tr").count() >= 5

    # Every example request, sent from the default version's form.
    forms = {m: page.locator(f"section.model[data-model={m}] details.version[open] form.try")
             for m in MODELS}
    status, meta, text = _send(forms["sum_two"].first)
    assert status == 200 and json.loads(text) == {"predictions": [[3.0, 4.0, 5.0]]}
    assert re.fullmatch(r"200 OK · \d+(\.\d)? ms", meta.strip()), meta
    forms["sum_two"].first.get_by_label("Example").select_option(label="data/requests/"
                                                                       "sum_two_batch.json")
    status, _, text = _send(forms["sum_two"].first)
    assert json.loads(text) == {"predictions": [[3.0, 4.0, 5.0], [0.5, 2.0, 12.25]]}
    status, _, text = _send(forms["fun_runif"].first)
    values = json.loads(text)["outputs"]
    assert status == 200 and len(values) == 5 and all(0 <= v < 1 for v in values)
    mobilenet = forms["mobilenet_v2_test"].first
    status, _, text = _send(mobilenet)
    assert status == 200 and json.loads(text)["outputs"][0] in sf.LABELS

    # Bytes inputs: a file picked in the browser replaces the example's image.
    white = tmp_path / "white.jpg"
    white.write_bytes(sf.jpeg(255))
    mobilenet.get_by_label("File for input input_img (bytes)").set_input_files(str(white))
    page.wait_for_function("f => f.querySelector('textarea').value.length < 2000",
                           arg=mobilenet.element_handle())
    assert _send(mobilenet)[2] == '{"outputs":["white"]}'
    mobilenet.get_by_label("File for input input_img (bytes)").set_input_files(SAMPLE_JPEG)
    page.wait_for_function("f => f.querySelector('textarea').value.length > 5000",
                           arg=mobilenet.element_handle())
    status, _, text = _send(mobilenet)
    direct = httpx.post(f"{server.url}/v1/models/mobilenet_v2_test:predict", timeout=30,
                        content=open(os.path.join(PROJECT, "data", "requests",
                                                  "mobilenet_v2_test.json"), "rb").read())
    assert status == 200 and text == direct.text

    # An edited request, and a bad one: the server's answer is shown as it is.
    body = forms["sum_two"].first.get_by_label("Request body (JSON)")
    body.fill('{"inputs": [[10, 20, 30]]}')
    assert _send(forms["sum_two"].first)[2] == '{"outputs":[[12.0,22.0,32.0]]}'
    body.fill('{"instances": []}')
    status, meta, text = _send(forms["sum_two"].first)
    assert status == 400 and meta.startswith("400") and "No values in 'instances'" in text
    body.fill('{"instances": [[1.0, 2.0, 3.0]]}')
    _send(forms["sum_two"].first)

    # Offline: nothing but this server was asked for anything.
    assert requests and all(u.startswith(server.url + "/") for u in requests), requests
    # The only console message: Chromium logging the 400 of the bad request above.
    assert problems == ["Failed to load resource: the server responded with a status of 400 "
                        "(Bad Request)"], problems

    page.evaluate("window.scrollTo(0, 0)")
    artifact = tmp_path / "page.png"
    page.screenshot(path=str(artifact), full_page=True)
    assert artifact.stat().st_size > 10_000
    if not os.path.exists(DOCS_SCREENSHOT) or os.environ.get("UPDATE_SCREENSHOT") == "1":
        os.makedirs(os.path.dirname(DOCS_SCREENSHOT), exist_ok=True)
        page.screenshot(path=DOCS_SCREENSHOT, full_page=False)
    page.close()


def test_page_and_documents_are_served(server):
    with httpx.Client(base_url=server.url, timeout=30) as http:
        index = http.get("/")
        assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
        assert http.get("/static/app.js").headers["content-type"].startswith("text/javascript")
        assert http.get("/static/nope.js").status_code == 404
        assert http.get("/static/../pages.py").status_code == 404
        doc = http.get("/openapi.json").json()
        models = doc["x-tfserving"]["models"]
        assert sorted(models) == list(MODELS)
        assert models["sum_two"]["default_version"] == 2
        assert models["sum_two"]["labels"] == SUM_TWO_LABELS
        assert "/v1/models/sum_two/labels/stable:predict" in doc["paths"]
        one = http.get("/v1/models/sum_two/versions/1/openapi.json").json()
        assert set(one["x-tfserving"]["models"]["sum_two"]["versions"]) == {"1"}
        media = one["paths"]["/v1/models/sum_two/versions/1:predict"]["post"]["requestBody"]
        assert set(media["content"]["application/json"]["examples"]) == {
            "data/requests/sum_two.json", "data/requests/sum_two_batch.json"}
        assert http.get("/v1/models/sum_two/openapi.json").json()["paths"].keys() >= {
            "/v1/models/sum_two:predict", "/v1/models/sum_two/versions/2/metadata"}
        report = http.get("/v1/models/fun_runif/versions/1/report.md")
        assert report.status_code == 200 and report.text.startswith("# Servable `fun_runif`")
        assert report.headers["content-type"].startswith("text/markdown")
        for path in ("/v1/models/nope/openapi.json", "/v1/models/sum_two/versions/7/openapi.json",
                     "/v1/models/sum_two/versions/7/report.md"):
            response = http.get(path)
            assert response.status_code == 404 and "error" in response.json(), path
