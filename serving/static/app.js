// The model page: reads everything from the server's own API.
//
// - openapi.json (x-tfserving): models, versions, labels, signatures; the examples of
//   each :predict operation fill the "try it" forms.
// - /v1/models/{m}: the state of every version (also versions that failed to load).
// - /v1/models/{m}/versions/{v}/report.md: the blessing report, rendered here
//   (a small Markdown subset, built with DOM nodes: no HTML from the server is trusted).
"use strict";

const EXT = "x-tfserving";
const DEFAULT_SIGNATURE = "serving_default";
const METHOD_ACTIONS = {
  "tensorflow/serving/classify": "classify",
  "tensorflow/serving/regress": "regress",
};
let uid = 0;

// el("tag", {attr: value, text: "…"}, child, …): a DOM element.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

function nextId(prefix) {
  uid += 1;
  return `${prefix}-${uid}`;
}

function modelPath(model, version) {
  const base = `/v1/models/${encodeURIComponent(model)}`;
  return version === undefined ? base : `${base}/versions/${version}`;
}

async function getJson(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  const text = await response.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = { error: text };
  }
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

function shapeText(shape) {
  return shape === null || shape === undefined ? "unknown rank" : `[${shape.join(", ")}]`;
}

const DTYPE_NAMES = { DT_FLOAT: "float32", DT_DOUBLE: "float64", DT_HALF: "float16" };

function dtypeText(dtype) {
  return DTYPE_NAMES[dtype] || dtype.replace(/^DT_/, "").toLowerCase();
}

// ------------------------------------------------------------------------- Markdown

function inline(text) {
  // `code` and **bold**; everything else is text.
  const nodes = [];
  const pattern = /`([^`]+)`|\*\*([^*]+)\*\*/g;
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    nodes.push(text.slice(last, match.index));
    nodes.push(match[1] !== undefined ? el("code", { text: match[1] })
      : el("strong", { text: match[2] }));
    last = match.index + match[0].length;
  }
  nodes.push(text.slice(last));
  return nodes.filter((n) => n !== "");
}

function tableCells(line) {
  return line.trim().replace(/^\|/, "").replace(/\|$/, "").split(/(?<!\\)\|/)
    .map((cell) => cell.trim().replace(/\\\|/g, "|"));
}

function renderMarkdown(text, headingOffset) {
  const out = document.createDocumentFragment();
  const lines = text.replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const heading = /^(#{1,6})\s+(.*)$/.exec(line);
    if (!line.trim()) {
      i += 1;
    } else if (heading) {
      const level = Math.min(6, heading[1].length + headingOffset);
      out.append(el(`h${level}`, {}, inline(heading[2])));
      i += 1;
    } else if (line.trim().startsWith("|") && /^\s*\|?\s*:?-{3,}/.test(lines[i + 1] || "")) {
      const table = el("table");
      table.append(el("thead", {}, el("tr", {}, tableCells(line).map(
        (cell) => el("th", { scope: "col" }, inline(cell))))));
      const body = el("tbody");
      i += 2;
      while (i < lines.length && lines[i].trim().startsWith("|")) {
        body.append(el("tr", {}, tableCells(lines[i]).map((cell) => el("td", {}, inline(cell)))));
        i += 1;
      }
      table.append(body);
      out.append(table);
    } else if (/^\s*[-*]\s+/.test(line)) {
      const list = el("ul");
      while (i < lines.length && /^\s*[-*]\s+/.test(lines[i])) {
        list.append(el("li", {}, inline(lines[i].replace(/^\s*[-*]\s+/, ""))));
        i += 1;
      }
      out.append(list);
    } else {
      const text = [];
      while (i < lines.length && lines[i].trim() && !/^(#{1,6}\s|\s*[-*]\s|\s*\|)/.test(lines[i])) {
        text.push(lines[i].trim());
        i += 1;
      }
      out.append(el("p", {}, inline(text.join(" "))));
    }
  }
  return out;
}

// --------------------------------------------------------------------- requests

function isB64(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value)
    && Object.keys(value).length === 1 && typeof value.b64 === "string";
}

function isNamed(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value) && !isB64(value);
}

// The request text with input `alias` set to the bytes `b64`: every {"b64": …} of that
// input is replaced (keeping the request's format); without one, a columnar [{"b64": …}].
function withBytes(text, alias, signature, b64) {
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = null;
  }
  if (!isNamed(body)) body = {};
  const single = Object.keys(signature.inputs).length === 1;
  let replaced = false;
  const swap = (value) => {
    if (isB64(value)) {
      replaced = true;
      return { b64 };
    }
    return Array.isArray(value) ? value.map(swap) : value;
  };
  if (Array.isArray(body.instances)) {
    if (body.instances.length && body.instances.every(isNamed)) {
      body.instances = body.instances.map(
        (item) => (alias in item ? { ...item, [alias]: swap(item[alias]) } : item));
    } else if (single) {
      body.instances = swap(body.instances);
    }
  } else if ("inputs" in body) {
    if (isNamed(body.inputs)) {
      if (alias in body.inputs) body.inputs[alias] = swap(body.inputs[alias]);
    } else if (single) {
      body.inputs = swap(body.inputs);
    }
  }
  if (!replaced) {
    delete body.instances;
    body.inputs = single ? [{ b64 }] : { ...(isNamed(body.inputs) ? body.inputs : {}),
      [alias]: [{ b64 }] };
  }
  return JSON.stringify(body);
}

function readBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

// JSON with short arrays and objects on one line (JSON.stringify(v, null, 2) would put
// every number of a tensor on its own line).
function formatJson(value, indent = "") {
  const flat = JSON.stringify(value);
  if (flat === undefined || flat.length <= 72 || value === null || typeof value !== "object") {
    return flat;
  }
  const inner = `${indent}  `;
  if (Array.isArray(value)) {
    return `[\n${value.map((v) => inner + formatJson(v, inner)).join(",\n")}\n${indent}]`;
  }
  const items = Object.entries(value).map(
    ([k, v]) => `${inner}${JSON.stringify(k)}: ${formatJson(v, inner)}`);
  return `{\n${items.join(",\n")}\n${indent}}`;
}

function exampleText(value) {
  const compact = JSON.stringify(value);
  return compact.length > 2000 ? compact : formatJson(value);
}

// ------------------------------------------------------------------------- forms

function signatureOf(body) {
  const name = body && body.signature_name;
  return typeof name === "string" && name ? name : DEFAULT_SIGNATURE;
}

function predictExamples(doc, path, key) {
  const operation = doc.paths[`${path}:predict`];
  const content = operation && operation.post.requestBody.content["application/json"];
  const found = [];
  for (const [name, example] of Object.entries((content && content.examples) || {})) {
    if (signatureOf(example.value) === key) found.push([name, example.value]);
  }
  return found;
}

function tryForm(doc, model, version, key, signature, action) {
  const path = modelPath(model, version);
  const url = `${path}:${action}`;
  const examples = action === "predict" ? predictExamples(doc, path, key)
    : [["template", { ...(key === DEFAULT_SIGNATURE ? {} : { signature_name: key }),
      examples: [{}] }]];
  const form = el("form", { class: "try", "data-model": model, "data-version": version,
    "data-signature": key, "data-action": action });
  const bodyId = nextId("body");
  const textarea = el("textarea", { id: bodyId, name: "body", rows: 5, spellcheck: "false",
    autocapitalize: "off", autocomplete: "off" });
  const fit = () => {
    textarea.rows = Math.min(12, Math.max(3, textarea.value.split("\n").length
      + Math.floor(textarea.value.length / 100)));
  };
  textarea.value = examples.length ? exampleText(examples[0][1]) : "";
  fit();
  form.append(el("h6", { text: `Try it: POST ${url}` }));
  if (examples.length > 1) {
    const selectId = nextId("example");
    const select = el("select", { id: selectId },
      examples.map(([name], index) => el("option", { value: index, text: name })));
    select.addEventListener("change", () => {
      textarea.value = exampleText(examples[Number(select.value)][1]);
      fit();
    });
    form.append(el("label", { for: selectId, text: "Example" }), select);
  } else if (examples.length === 1) {
    form.append(el("p", { class: "muted" }, "Example: ", el("span", { class: "mono",
      text: examples[0][0] })));
  } else {
    form.append(el("p", { class: "muted", text: "No example request for this signature: "
      + "write one (TF Serving's REST JSON)." }));
  }
  form.append(el("label", { for: bodyId, text: "Request body (JSON)" }), textarea);
  if (action === "predict") {
    for (const [alias, input] of Object.entries(signature.inputs)) {
      if (!input.bytes) continue;
      const fileId = nextId("file");
      const picker = el("input", { type: "file", id: fileId, "data-alias": alias });
      const note = el("span", { class: "muted", "aria-live": "polite" });
      picker.addEventListener("change", async () => {
        const file = picker.files[0];
        if (!file) return;
        const b64 = await readBase64(file);
        textarea.value = withBytes(textarea.value, alias, signature, b64);
        note.textContent = `${alias} = ${file.name} (${file.size} bytes, base64)`;
      });
      form.append(el("label", { for: fileId, text: `File for input ${alias} (bytes)` }),
        picker, " ", note);
    }
  }
  const button = el("button", { type: "submit", text: "Send" });
  const meta = el("p", { class: "meta" });
  const output = el("pre", { class: "response", tabindex: "0",
    "aria-label": `Response of ${key}` });
  const result = el("div", { class: "result", role: "status", "aria-live": "polite" }, meta,
    output);
  result.hidden = true;
  form.append(el("div", { class: "actions" }, button), result);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    const started = performance.now();
    let status = 0;
    let text;
    try {
      const response = await fetch(url, { method: "POST", body: textarea.value,
        headers: { "Content-Type": "application/json" } });
      status = response.status;
      text = await response.text();
      meta.textContent = `${response.status} ${response.statusText || ""} · `
        + `${(performance.now() - started).toFixed(1)} ms`;
    } catch (err) {
      text = String(err);
      meta.textContent = "Request failed";
    }
    result.className = `result ${status === 200 ? "ok" : "bad"}`;
    result.dataset.status = String(status);
    output.textContent = text;  // as sent: TF Serving's number spelling, NaN tokens
    result.hidden = false;
    button.disabled = false;
  });
  return form;
}

// ------------------------------------------------------------------------ models

function tensorTable(key, signature) {
  const rows = [];
  for (const [kind, tensors] of [["input", signature.inputs], ["output", signature.outputs]]) {
    for (const [alias, t] of Object.entries(tensors)) {
      rows.push(el("tr", {},
        el("td", { text: kind }),
        el("td", { class: "mono", text: alias + (t.bytes ? " (bytes)" : "") }),
        el("td", { class: "mono", text: dtypeText(t.dtype) }),
        el("td", { class: "mono", text: shapeText(t.shape) })));
    }
  }
  return el("table", { class: "tensors" },
    el("caption", { class: "sr-only", text: `Inputs and outputs of ${key}` }),
    el("thead", {}, el("tr", {}, ["", "alias", "dtype", "shape (-1: any size)"].map(
      (h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, rows));
}

function reportBlock(model, version, verdictSlot) {
  const body = el("div", { class: "report-body" }, el("p", { class: "muted",
    text: "Loading the report…" }));
  const details = el("details", { class: "report" },
    el("summary", {}, el("h4", { class: "inline", text: "Blessing report" })), body);
  (async () => {
    const response = await fetch(`${modelPath(model, version)}/report.md`);
    const text = await response.text();
    body.replaceChildren();
    if (!response.ok) {
      let message = text;
      try {
        message = JSON.parse(text).error;
      } catch { /* keep the text */ }
      body.append(el("p", { class: "muted", text: message }));
      verdictSlot.replaceChildren(el("span", { class: "badge warn", text: "no report" }));
      return;
    }
    body.append(renderMarkdown(text, 4));
    const firstLine = text.split("\n", 1)[0];
    const verdict = /NOT BLESSED/.test(firstLine) ? ["bad", "not blessed"]
      : /BLESSED/.test(firstLine) ? ["ok", "blessed"] : ["warn", "report"];
    for (const slot of [verdictSlot, details.querySelector("summary")]) {
      slot.append(" ", el("span", { class: `badge ${verdict[0]}`, text: verdict[1] }));
    }
  })();
  return details;
}

function versionBlock(doc, model, version, summary, labels, isDefault) {
  const headingId = nextId("version");
  const names = labels.length ? ` · labels: ${labels.join(", ")}` : "";
  const verdictSlot = el("span", { class: "verdict" });
  const details = el("details", { class: "version", "data-version": version },
    el("summary", {}, el("h3", { id: headingId, text: `Version ${version}` }),
      el("span", { class: "muted", text: `${isDefault ? " · default" : ""}${names}` }),
      verdictSlot));
  details.open = isDefault;
  details.append(reportBlock(model, version, verdictSlot));
  const signatures = Object.entries(summary.signatures);
  details.append(el("h4", { text: `Signatures (${signatures.length})` }));
  for (const [key, signature] of signatures) {
    const block = el("div", { class: "signature" },
      el("h5", {}, key, " ", el("span", { class: "muted method",
        text: signature.method_name || "(no method name)" })),
      tensorTable(key, signature));
    if (signature.predict) {
      block.append(tryForm(doc, model, version, key, signature, "predict"));
    } else {
      block.append(el("p", { class: "muted",
        text: `Not callable through the REST API: ${signature.not_callable}.` }));
    }
    const action = METHOD_ACTIONS[signature.method_name];
    if (action) block.append(tryForm(doc, model, version, key, signature, action));
    details.append(block);
  }
  details.append(el("p", {}, el("a", { href: `${modelPath(model, version)}/openapi.json`,
    text: "OpenAPI document" }), " · ", el("a", { href: `${modelPath(model, version)}/metadata`,
    text: "metadata" })));
  return details;
}

function stateBadge(state) {
  const kind = state === "AVAILABLE" ? "ok" : state === "END" ? "bad" : "warn";
  return el("span", { class: `badge ${kind}`, text: state });
}

async function fillVersions(model, entry, tbody) {
  const labelsOf = {};
  for (const [label, version] of Object.entries(entry.labels || {})) {
    (labelsOf[version] = labelsOf[version] || []).push(label);
  }
  try {
    const status = await getJson(modelPath(model));
    tbody.replaceChildren(...status.model_version_status.map((s) => el("tr",
      { "data-version": s.version },
      el("td", { text: s.version + (Number(s.version) === entry.default_version
        ? " (default)" : "") }),
      el("td", {}, stateBadge(s.state), s.status.error_message
        ? el("div", { class: "error mono", text: s.status.error_message }) : null),
      el("td", { text: (labelsOf[s.version] || []).join(", ") || "—" }))));
  } catch (err) {
    tbody.replaceChildren(el("tr", {}, el("td", { colspan: 3, class: "error",
      text: `Status unavailable: ${err.message}` })));
  }
}

function modelSection(doc, model, entry) {
  const headingId = nextId("model");
  const section = el("section", { class: "model", id: `model-${model}`,
    "aria-labelledby": headingId, "data-model": model });
  section.append(el("h2", { id: headingId, text: model }));
  const tbody = el("tbody", {}, el("tr", {}, el("td", { colspan: 3, class: "muted",
    text: "Loading…" })));
  section.append(el("table", { class: "versions" },
    el("caption", { text: "Versions" }),
    el("thead", {}, el("tr", {}, ["version", "state", "labels"].map(
      (h) => el("th", { scope: "col", text: h })))), tbody));
  fillVersions(model, entry, tbody);
  const versions = Object.keys(entry.versions).map(Number).sort((a, b) => b - a);
  if (!versions.length) {
    section.append(el("p", { class: "muted", text: "No version is being served." }));
  }
  const labelsOf = {};
  for (const [label, version] of Object.entries(entry.labels || {})) {
    (labelsOf[version] = labelsOf[version] || []).push(label);
  }
  for (const version of versions) {
    section.append(versionBlock(doc, model, version, entry.versions[String(version)],
      labelsOf[version] || [], version === entry.default_version));
  }
  return section;
}

async function main() {
  const main = document.getElementById("models");
  const toc = document.getElementById("toc");
  let doc;
  try {
    doc = await getJson("openapi.json");
  } catch (err) {
    main.replaceChildren(el("p", { class: "error", role: "alert",
      text: `Cannot read openapi.json: ${err.message}` }));
    return;
  }
  const models = (doc[EXT] && doc[EXT].models) || {};
  const names = Object.keys(models).sort();
  main.replaceChildren();
  if (!names.length) {
    main.append(el("p", { text: "No models are being served." }));
    return;
  }
  toc.replaceChildren(el("ul", {}, names.map((name) => el("li", {},
    el("a", { href: `#model-${name}`, text: name })))));
  for (const name of names) main.append(modelSection(doc, name, models[name]));
}

main();
