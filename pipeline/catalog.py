"""The servable catalog: a declarative YAML file that lists what to export.

Adding a servable is writing a Python module and adding one entry here; no
pipeline code changes. The catalog is validated completely when it is loaded,
before any TensorFlow work, and every error names the servable, the field, the
bad value and what would be valid.

Layout of ``servables/catalog.yaml``::

    base_dir: ..                  # relative paths below resolve against this
    servables:
      - name: sum_two             # the model directory TF Serving will see
        module: servables/adder.py
        object: Adder             # class or factory function in `module`
        args: {}                  # constructor / factory keyword arguments
        signatures:               # signature key -> method (or mapping)
          serving_default: sum_two
        assets: {}                # attribute -> file, saved as tf.saved_model.Asset
        examples: [...]           # TF Serving REST requests + expectations
        checks: {...}             # evaluator settings
        serving: {...}            # version policy, labels, retention

A signature value is either a method name or a mapping
``{method: NAME, inputs: {ARG: {dtype: DTYPE, shape: [..]}}}``; ``inputs``
is the input signature for methods that have none (the seed's
``Randomizer.fun_runif``). For a Keras model, ``method: call`` calls the
model as a whole with the declared inputs (by name for models with named
inputs).

Paths: every relative path in the catalog starts at ``base_dir`` (itself
relative to the catalog file's directory), never at the current directory.
That includes ``args``: a string argument naming an existing file or
directory under ``base_dir`` (e.g. ``data/vocab.txt``), or written
``{path: FILE}``, reaches the constructor as an absolute path; ``{asset: NAME}``
gives the constructor the path of the entry's asset ``NAME`` (e.g. a
``StringLookup`` vocabulary, needed while the object is built).

Numbers: YAML 1.1, which PyYAML implements, reads ``1e-6`` as a string; the
catalog is read with YAML 1.2's number forms (``1e-6``, ``1.0e-6``, ``.5``).

Decision: the catalog is a list (not a mapping keyed by name) because YAML
loaders silently keep the last of two equal keys; a list lets duplicate
model names be reported.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from components.specs import (
    Checks,
    EvaluationSpec,
    Example,
    Expectation,
    ExportSpec,
    ServingSpec,
    SignatureDecl,
    TensorDecl,
)
from tfserving.layout import valid_model_name

DEFAULT_CATALOG = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "servables", "catalog.yaml"
)

DTYPES = (
    "bfloat16", "bool", "complex64", "complex128", "float16", "float32", "float64",
    "half", "int8", "int16", "int32", "int64", "string", "uint8", "uint16", "uint32",
    "uint64",
)
FORMATS = ("row", "columnar")
VERSION_POLICIES = ("latest", "all", "specific")
_SAFE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_ENTRY_KEYS = ("name", "module", "object", "args", "signatures", "assets", "examples",
               "checks", "serving")
_SIGNATURE_KEYS = ("method", "inputs")
_TENSOR_KEYS = ("dtype", "shape")
_EXAMPLE_KEYS = ("request", "expect")
_EXPECT_KEYS = ("response", "tolerance", "shape", "range", "vocabulary", "dtype")
_CHECK_KEYS = ("random", "formats", "latency_budget_ms", "warm_calls", "batch_sizes")
_SERVING_KEYS = ("version_policy", "versions", "labels", "keep")
_TOP_KEYS = ("base_dir", "servables")
_ARG_MARKERS = ("path", "asset")  # {path: FILE} / {asset: NAME} in args


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, plus YAML 1.2's float forms.

    YAML 1.1 (PyYAML) needs a dot and a signed exponent for a float and
    allows no sign before a leading dot, so ``1e-6``, ``1e3`` and ``-.5`` load
    as strings; YAML 1.2's core schema reads them as numbers.
    ``add_implicit_resolver`` copies the resolver table for this subclass:
    ``yaml.safe_load`` is not changed.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9_]+(?:[eE][-+]?[0-9]+)?"  # .5  -.5  .5e-3
               r"|[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+)$"),  # 1e-6  1.0e6
    list("-+0123456789."))


class CatalogError(ValueError):
    """A catalog entry is invalid; the message names servable, field and fix."""

    def __init__(self, servable: str | None, field: str, message: str):
        self.servable = servable
        self.field = field
        where = f"servable '{servable}': " if servable else ""
        super().__init__(f"{where}field '{field}': {message}")


@dataclasses.dataclass(frozen=True)
class CatalogEntry:
    """One validated catalog entry. Paths are relative to ``base_dir``."""

    name: str
    module: str
    object: str
    args: Mapping[str, Any]
    signatures: tuple[SignatureDecl, ...]
    assets: Mapping[str, str]
    examples: tuple[Example, ...]
    checks: Checks
    serving: ServingSpec

    def export_spec(self) -> ExportSpec:
        """What ExportServable needs."""
        return ExportSpec(self.name, self.module, self.object, dict(self.args),
                          self.signatures, dict(self.assets),
                          tuple(e.request for e in self.examples))

    def evaluation_spec(self) -> EvaluationSpec:
        """What ServableEvaluator needs, example bodies inlined."""
        return EvaluationSpec(self.name, tuple(s.key for s in self.signatures), self.examples,
                              self.checks)


@dataclasses.dataclass(frozen=True)
class Catalog:
    """A loaded catalog: where its relative paths start, and its servables."""

    path: str
    base_dir: str
    servables: tuple[CatalogEntry, ...]

    def names(self) -> list[str]:
        """Model names in catalog order."""
        return [s.name for s in self.servables]

    def select(self, names: Sequence[str] | None) -> list[CatalogEntry]:
        """The servables called ``names`` (all when None), in catalog order."""
        if not names:
            return list(self.servables)
        known = self.names()
        for name in names:
            if name not in known:
                raise CatalogError(name, "name",
                                   f"not in catalog {self.path}{_suggest(name, known)} "
                                   f"(valid: {', '.join(known)})")
        return [s for s in self.servables if s.name in names]

    def source_hash(self, servable: CatalogEntry) -> str:
        """Hash of everything the export reads: entry, module sources, assets."""
        digest = hashlib.sha256()
        digest.update(servable.export_spec().to_json().encode())
        files = sorted(set(module_sources(os.path.join(self.base_dir, servable.module),
                                          self.base_dir)))
        files += sorted(os.path.join(self.base_dir, p) for p in servable.assets.values())
        files += sorted(f for p in set(arg_paths(servable.args))
                        for f in _tree_files(os.path.join(self.base_dir, p)))
        for path in files:
            digest.update(os.path.relpath(path, self.base_dir).encode())
            with open(path, "rb") as f:
                digest.update(hashlib.sha256(f.read()).digest())
        return digest.hexdigest()


def load_catalog(path: str | None = None) -> Catalog:
    """Reads and validates a catalog file; raises CatalogError on any problem."""
    path = os.path.abspath(path or DEFAULT_CATALOG)
    if not os.path.isfile(path):
        raise CatalogError(None, "catalog", f"file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            document = yaml.load(f, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as e:
            raise CatalogError(None, "catalog", f"{path} is not valid YAML: {e}") from e
    if not isinstance(document, dict):
        raise CatalogError(None, "catalog", f"{path} must be a mapping with key 'servables'")
    _check_keys(None, "", document, _TOP_KEYS)
    base_dir = os.path.normpath(
        os.path.join(os.path.dirname(path), str(document.get("base_dir", "."))))
    entries = document.get("servables")
    if not isinstance(entries, list) or not entries:
        raise CatalogError(None, "servables", "must be a non-empty list of servable entries")
    servables = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        servable = _parse_entry(entry, index, base_dir)
        if servable.name in seen:
            raise CatalogError(servable.name, "name",
                               f"duplicate model name '{servable.name}' (entry #{index + 1}); "
                               "each model needs its own directory under the serving root")
        seen.add(servable.name)
        servables.append(servable)
    return Catalog(path=path, base_dir=base_dir, servables=tuple(servables))


def arg_paths(args: Any) -> list[str]:
    """The files and directories that ``{path: ...}`` markers in ``args`` name."""
    if isinstance(args, dict):
        if set(args) == {"path"}:
            return [args["path"]]
        return [p for value in args.values() for p in arg_paths(value)]
    if isinstance(args, (list, tuple)):
        return [p for value in args for p in arg_paths(value)]
    return []


def _tree_files(path: str) -> list[str]:
    if os.path.isfile(path):
        return [path]
    return sorted(os.path.join(root, f) for root, _, files in os.walk(path) for f in files)


def module_sources(module_path: str, base_dir: str) -> list[str]:
    """The module file and the local modules it imports, transitively.

    Only files under ``base_dir`` or beside the module count: those are the
    servable's own code, the rest is the environment (pinned by the lock).
    """
    found: list[str] = []
    pending = [os.path.abspath(module_path)]
    while pending:
        path = pending.pop()
        if path in found or not os.path.isfile(path):
            continue
        found.append(path)
        with open(path, encoding="utf-8") as f:
            try:
                tree = ast.parse(f.read(), filename=path)
            except SyntaxError:
                continue  # reported with the user's traceback at export time
        for dotted in _imported_modules(tree):
            parts = dotted.split(".")
            for root in (os.path.dirname(path), base_dir):
                candidate = os.path.join(root, *parts)
                for option in (candidate + ".py", os.path.join(candidate, "__init__.py")):
                    if os.path.isfile(option):
                        pending.append(os.path.abspath(option))
    return found


def _imported_modules(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _parse_entry(entry: Any, index: int, base_dir: str) -> CatalogEntry:
    if not isinstance(entry, dict):
        raise CatalogError(None, f"servables[{index}]", "must be a mapping with at least "
                           "'name', 'module', 'object' and 'signatures'")
    raw_name = entry.get("name")
    if not isinstance(raw_name, str) or not valid_model_name(raw_name):
        raise CatalogError(raw_name if isinstance(raw_name, str) else None,
                           f"servables[{index}].name",
                           f"{raw_name!r} is not a safe model directory name; use 1-128 "
                           "characters from letters, digits, '_', '-', '.', starting with a "
                           "letter or digit")
    name = raw_name
    _check_keys(name, "", entry, _ENTRY_KEYS)
    for required in ("module", "object", "signatures"):
        if required not in entry:
            raise CatalogError(name, required, "is required")
    module = _relative_file(name, "module", entry["module"], base_dir, suffix=".py")
    obj = entry["object"]
    if not isinstance(obj, str) or not _IDENTIFIER.match(obj):
        raise CatalogError(name, "object", f"{obj!r} must be the name of a class or factory "
                           f"function defined in {module}")
    args = entry.get("args") or {}
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise CatalogError(name, "args", f"{args!r} must be a mapping of keyword arguments")
    assets = _parse_assets(name, entry.get("assets") or {}, base_dir)
    examples = _parse_examples(name, entry.get("examples") or [], base_dir)
    return CatalogEntry(
        name=name,
        module=module,
        object=obj,
        args={k: _parse_arg(name, f"args.{k}", v, base_dir, assets) for k, v in args.items()},
        signatures=_parse_signatures(name, entry["signatures"]),
        assets=assets,
        examples=examples,
        checks=_parse_checks(name, entry.get("checks") or {}),
        serving=dataclasses.replace(_parse_serving(name, entry.get("serving") or {}),
                                    examples={e.path: e.request for e in examples}),
    )


def _parse_arg(name: str, field: str, raw: Any, base_dir: str, assets: Mapping[str, str]) -> Any:
    """An argument value, with its paths made explicit: ``{path: FILE}`` or ``{asset: NAME}``.

    The exporter turns both into absolute paths under its own base_dir, so a
    constructor never sees a path that depends on the current directory.
    """
    if isinstance(raw, dict) and len(raw) == 1 and next(iter(raw)) in _ARG_MARKERS:
        kind, value = next(iter(raw.items()))
        if kind == "asset":
            if value not in assets:
                known = ", ".join(assets) or "none: add an 'assets' entry"
                raise CatalogError(name, f"{field}.asset", f"unknown asset {value!r}"
                                   f"{_suggest(str(value), list(assets))} (assets of this "
                                   f"servable: {known})")
            return {"asset": value}
        return {"path": _relative_path(name, f"{field}.path", value, base_dir)}
    if isinstance(raw, dict):
        return {k: _parse_arg(name, f"{field}.{k}", v, base_dir, assets) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_parse_arg(name, f"{field}[{i}]", v, base_dir, assets)
                for i, v in enumerate(raw)]
    if _looks_like_project_path(raw, base_dir):
        return {"path": os.path.normpath(raw)}
    return raw


def _looks_like_project_path(raw: Any, base_dir: str) -> bool:
    """A relative path (with a '/' or a '.') to something that exists under base_dir."""
    if not isinstance(raw, str) or not raw or os.path.isabs(raw) or "://" in raw:
        return False
    if "/" not in raw and "." not in raw:
        return False  # a bare word ("relu", "data") is a value, not a path
    path = os.path.normpath(raw)
    return not path.startswith("..") and os.path.exists(os.path.join(base_dir, path))


def _parse_signatures(name: str, raw: Any) -> tuple[SignatureDecl, ...]:
    if isinstance(raw, str):
        raw = {"serving_default": raw}
    if not isinstance(raw, dict) or not raw:
        raise CatalogError(name, "signatures", f"{raw!r} must map signature keys to methods, "
                           "e.g. {serving_default: sum_two}")
    signatures = []
    for key, value in raw.items():
        field = f"signatures.{key}"
        if not isinstance(key, str) or not _SAFE_KEY.match(key):
            raise CatalogError(name, field, f"{key!r} is not a valid signature key")
        if isinstance(value, str):
            value = {"method": value}
        if not isinstance(value, dict):
            raise CatalogError(name, field, f"{value!r} must be a method name or a mapping "
                               "with 'method' and optional 'inputs'")
        _check_keys(name, field, value, _SIGNATURE_KEYS)
        method = value.get("method")
        if not isinstance(method, str) or not _IDENTIFIER.match(method):
            raise CatalogError(name, f"{field}.method", f"{method!r} must be a method name")
        inputs = None
        if value.get("inputs") is not None:
            inputs = _parse_inputs(name, f"{field}.inputs", value["inputs"])
        signatures.append(SignatureDecl(key=key, method=method, inputs=inputs))
    return tuple(signatures)


def _parse_inputs(name: str, field: str, raw: Any) -> tuple[TensorDecl, ...]:
    if not isinstance(raw, dict):
        raise CatalogError(name, field, f"{raw!r} must map argument names to "
                           "{dtype: ..., shape: [...]}")
    args = []
    for arg, spec in raw.items():
        arg_field = f"{field}.{arg}"
        if not isinstance(arg, str) or not _IDENTIFIER.match(arg):
            raise CatalogError(name, arg_field, f"{arg!r} is not a valid argument name")
        if not isinstance(spec, dict):
            raise CatalogError(name, arg_field, f"{spec!r} must be {{dtype: ..., shape: [...]}}")
        _check_keys(name, arg_field, spec, _TENSOR_KEYS)
        args.append(TensorDecl(arg, parse_dtype(name, f"{arg_field}.dtype", spec.get("dtype")),
                              _parse_shape(name, f"{arg_field}.shape", spec.get("shape", None),
                                           allow_unknown=True)))
    return tuple(args)


def parse_dtype(name: str | None, field: str, raw: Any) -> str:
    """Validates a dtype name; suggests the closest one on a typo."""
    if isinstance(raw, str) and raw.startswith("tf."):
        raw = raw[3:]
    if raw not in DTYPES:
        raise CatalogError(name, field, f"unknown dtype {raw!r}"
                           f"{_suggest(str(raw), DTYPES)} (valid: {', '.join(DTYPES)})")
    return raw


def _parse_shape(name: str, field: str, raw: Any,
                 allow_unknown: bool = False) -> tuple[int | None, ...] | None:
    if raw is None and allow_unknown:
        return None
    valid = ("a list of non-negative integers or null for a free dimension, e.g. [null, 3]; "
             "[] is a scalar")
    if not isinstance(raw, list):
        raise CatalogError(name, field, f"bad shape {raw!r}: must be {valid}")
    for dim in raw:
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 0):
            raise CatalogError(name, field, f"bad shape {raw!r}: dimension {dim!r} is not "
                               f"allowed; must be {valid}")
    return tuple(raw)


def _parse_assets(name: str, raw: Any, base_dir: str) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise CatalogError(name, "assets", f"{raw!r} must map attribute names to files")
    assets = {}
    for attr, path in raw.items():
        if not isinstance(attr, str) or not _IDENTIFIER.match(attr):
            raise CatalogError(name, f"assets.{attr}", f"{attr!r} must be an attribute name")
        assets[attr] = _relative_file(name, f"assets.{attr}", path, base_dir)
    return assets


def _parse_examples(name: str, raw: Any, base_dir: str) -> tuple[Example, ...]:
    if not isinstance(raw, list):
        raise CatalogError(name, "examples", f"{raw!r} must be a list of "
                           "{request: FILE, expect: {...}}")
    examples = []
    for i, item in enumerate(raw):
        field = f"examples[{i}]"
        if isinstance(item, str):
            item = {"request": item}
        if not isinstance(item, dict):
            raise CatalogError(name, field, f"{item!r} must be {{request: FILE, expect: ...}}")
        _check_keys(name, field, item, _EXAMPLE_KEYS)
        if "request" not in item:
            raise CatalogError(name, f"{field}.request", "is required")
        path = _relative_file(name, f"{field}.request", item["request"], base_dir,
                              suffix=".json")
        request = _read_json(name, f"{field}.request", os.path.join(base_dir, path))
        if not isinstance(request, dict) or ("instances" in request) == ("inputs" in request):
            raise CatalogError(name, f"{field}.request", f"{path} must be a TF Serving REST "
                               "request with exactly one of 'instances' (row format) or "
                               "'inputs' (columnar format)")
        examples.append(Example(path=path, request=request,
                                expect=_parse_expect(name, f"{field}.expect",
                                                     item.get("expect") or {}, base_dir)))
    return tuple(examples)


def _parse_expect(name: str, field: str, raw: Any, base_dir: str) -> Expectation:
    if not isinstance(raw, dict):
        raise CatalogError(name, field, f"{raw!r} must be a mapping with any of "
                           f"{', '.join(_EXPECT_KEYS)}")
    _check_keys(name, field, raw, _EXPECT_KEYS)
    response = None
    if "response" in raw:
        path = _relative_file(name, f"{field}.response", raw["response"], base_dir,
                              suffix=".json")
        response = _read_json(name, f"{field}.response", os.path.join(base_dir, path))
    tolerance = raw.get("tolerance", 0.0)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance < 0:
        raise CatalogError(name, f"{field}.tolerance", f"{tolerance!r} must be a number >= 0")
    value_range = raw.get("range")
    if value_range is not None:
        if (not isinstance(value_range, list) or len(value_range) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                           for v in value_range) or value_range[0] >= value_range[1]):
            raise CatalogError(name, f"{field}.range", f"{value_range!r} must be [low, high] "
                               "with low < high (values must lie in [low, high))")
        value_range = (float(value_range[0]), float(value_range[1]))
    vocabulary = None
    if "vocabulary" in raw:
        path = _relative_file(name, f"{field}.vocabulary", raw["vocabulary"], base_dir)
        with open(os.path.join(base_dir, path), encoding="utf-8") as f:
            vocabulary = tuple(line for line in f.read().split("\n") if line)
    shape = raw.get("shape")
    if shape is not None:
        shape = _parse_shape(name, f"{field}.shape", shape)
        if any(d is None for d in shape):
            raise CatalogError(name, f"{field}.shape", f"{list(shape)!r}: an expected shape "
                               "must be fully known")
    dtype = None
    if raw.get("dtype") is not None:
        dtype = parse_dtype(name, f"{field}.dtype", raw["dtype"])
    return Expectation(response=response, tolerance=float(tolerance), shape=shape,
                       range=value_range, vocabulary=vocabulary, dtype=dtype)


def _parse_checks(name: str, raw: Any) -> Checks:
    if not isinstance(raw, dict):
        raise CatalogError(name, "checks", f"{raw!r} must be a mapping")
    _check_keys(name, "checks", raw, _CHECK_KEYS)
    random = raw.get("random", False)
    if not isinstance(random, bool):
        raise CatalogError(name, "checks.random", f"{random!r} must be true or false")
    formats = raw.get("formats", [])
    if not isinstance(formats, list) or any(f not in FORMATS for f in formats):
        raise CatalogError(name, "checks.formats", f"{formats!r} must be a list of "
                           f"{' / '.join(FORMATS)}")
    budget = raw.get("latency_budget_ms")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                               or budget <= 0):
        raise CatalogError(name, "checks.latency_budget_ms", f"{budget!r} must be a number > 0")
    warm_calls = raw.get("warm_calls", 10)
    if isinstance(warm_calls, bool) or not isinstance(warm_calls, int) or warm_calls < 2:
        raise CatalogError(name, "checks.warm_calls", f"{warm_calls!r} must be an integer >= 2")
    batch_sizes = raw.get("batch_sizes", [1, 3])
    if (not isinstance(batch_sizes, list) or not batch_sizes
            or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batch_sizes)):
        raise CatalogError(name, "checks.batch_sizes", f"{batch_sizes!r} must be a non-empty "
                           "list of integers >= 1")
    return Checks(random=random, formats=tuple(formats),
                  latency_budget_ms=None if budget is None else float(budget),
                  warm_calls=warm_calls, batch_sizes=tuple(batch_sizes))


def _parse_serving(name: str, raw: Any) -> ServingSpec:
    if not isinstance(raw, dict):
        raise CatalogError(name, "serving", f"{raw!r} must be a mapping")
    _check_keys(name, "serving", raw, _SERVING_KEYS)
    policy = raw.get("version_policy", "latest")
    if policy not in VERSION_POLICIES:
        raise CatalogError(name, "serving.version_policy", f"unknown policy {policy!r}"
                           f"{_suggest(str(policy), VERSION_POLICIES)} "
                           f"(valid: {', '.join(VERSION_POLICIES)})")
    versions = raw.get("versions", [])
    if not isinstance(versions, list) or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in versions):
        raise CatalogError(name, "serving.versions", f"{versions!r} must be a list of "
                           "version numbers")
    if policy == "specific" and not versions:
        raise CatalogError(name, "serving.versions", "version_policy 'specific' needs at "
                           "least one version number")
    labels = raw.get("labels", {})
    if not isinstance(labels, dict) or any(
            not isinstance(k, str) or not _SAFE_KEY.match(k) or isinstance(v, bool)
            or not isinstance(v, int) or v < 0 for k, v in labels.items()):
        raise CatalogError(name, "serving.labels", f"{labels!r} must map label names "
                           "(e.g. stable) to version numbers")
    keep = raw.get("keep")
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise CatalogError(name, "serving.keep", f"{keep!r} must be an integer >= 1 "
                           "(or absent to keep every version)")
    return ServingSpec(version_policy=policy, versions=tuple(versions), labels=dict(labels),
                   keep=keep)


def _relative_file(name: str, field: str, raw: Any, base_dir: str, suffix: str = "") -> str:
    path = _relative_path(name, field, raw, base_dir)
    if suffix and not path.endswith(suffix):
        raise CatalogError(name, field, f"{raw!r} must be a {suffix} file")
    if not os.path.isfile(os.path.join(base_dir, path)):
        raise CatalogError(name, field, f"{raw!r} is a directory, not a file (in {base_dir})")
    return path


def _relative_path(name: str, field: str, raw: Any, base_dir: str) -> str:
    """A file or directory path relative to base_dir, inside it, that exists."""
    if not isinstance(raw, str) or not raw:
        raise CatalogError(name, field, f"{raw!r} must be a file path")
    if os.path.isabs(raw):
        raise CatalogError(name, field, f"{raw!r} must be relative to the catalog's base_dir "
                           f"({base_dir}) so the project can move")
    path = os.path.normpath(raw)
    if path.startswith(".."):
        raise CatalogError(name, field, f"{raw!r} must stay inside base_dir ({base_dir})")
    if not os.path.exists(os.path.join(base_dir, path)):
        raise CatalogError(name, field, f"file not found: {raw} (looked in {base_dir}, the "
                           "catalog's base_dir; relative paths never start at the current "
                           "directory)")
    return path


def _read_json(name: str, field: str, path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise CatalogError(name, field, f"{path} is not valid JSON: {e}") from e


def _check_keys(name: str | None, field: str, raw: Mapping[str, Any],
                valid: Sequence[str]) -> None:
    for key in raw:
        if key not in valid:
            where = f"{field}.{key}" if field else str(key)
            raise CatalogError(name, where, f"unknown key {key!r}{_suggest(str(key), valid)} "
                               f"(valid: {', '.join(valid)})")


def _suggest(value: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
