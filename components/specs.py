"""What the catalog hands each component: typed specs with one JSON form each.

A component receives its spec as one JSON string execution parameter (visible
in ML Metadata, part of TFX's cache key); its executor turns it back into the
same dataclass with ``from_json``. Defaults live here and nowhere else: the
catalog leaves out what a user did not write, the executors never fill in.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from tfserving.model_config import ModelConfig, VersionPolicy

# Artifact and parameter keys of the components (ComponentSpec names).
SERVABLE = "servable"  # ExportSpec / EvaluationSpec JSON
SERVING = "serving"  # ServingSpec JSON
MODEL = "model"
BLESSING = "blessing"
MODEL_BLESSING = "model_blessing"
PUSHED_MODEL = "pushed_model"
# Files the evaluator writes into its ModelBlessing's directory.
REPORT_JSON = "report.json"
REPORT_MARKDOWN = "report.md"

_T = TypeVar("_T", bound="_Spec")


class _Spec:
    """``to_json`` / ``from_json`` for the frozen dataclasses below."""

    def to_json(self) -> str:
        """Compact, key-sorted JSON: equal specs give equal strings (a stable cache key)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls: type[_T], text: str) -> _T:
        """The spec whose :meth:`to_json` gave ``text``."""
        return _build(cls, json.loads(text))


def _build(tp: Any, value: Any) -> Any:
    """``value`` (parsed JSON) as an instance of the type annotation ``tp``."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return tp(**{f.name: _build(hints[f.name], value[f.name])
                     for f in dataclasses.fields(tp) if f.name in value})
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _build(options[0], value)
    if origin is tuple:
        args = typing.get_args(tp)
        return tuple(_build(args[0], v) for v in value) if args[-1] is Ellipsis else \
            tuple(_build(a, v) for a, v in zip(args, value, strict=True))
    if origin in (Mapping, dict, typing.Mapping):
        return dict(value)
    return value


@dataclasses.dataclass(frozen=True)
class TensorDecl(_Spec):
    """One argument of a declared input signature (catalog ``inputs``)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...] | None  # None: unknown rank


@dataclasses.dataclass(frozen=True)
class SignatureDecl(_Spec):
    """A method exported under a signature key."""

    key: str
    method: str
    inputs: tuple[TensorDecl, ...] | None = None  # None: use the method's own


@dataclasses.dataclass(frozen=True)
class ExportSpec(_Spec):
    """What ExportServable needs: how to build the object and which signatures to save."""

    name: str
    module: str  # relative to the executor's base_dir
    object: str
    args: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    signatures: tuple[SignatureDecl, ...] = ()
    assets: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # REST request bodies (the catalog's examples), written as TF Serving warmup requests.
    warmup_requests: tuple[Mapping[str, Any], ...] = ()


@dataclasses.dataclass(frozen=True)
class Expectation(_Spec):
    """What the response to one example request must satisfy."""

    response: Any = None  # a TF Serving REST response body
    tolerance: float = 0.0
    shape: tuple[int, ...] | None = None
    range: tuple[float, float] | None = None  # [low, high)
    vocabulary: tuple[str, ...] | None = None
    dtype: str | None = None


@dataclasses.dataclass(frozen=True)
class Example(_Spec):
    """A TF Serving REST request body (as sent with curl) and its expectation."""

    path: str  # relative to the catalog's base_dir
    request: Mapping[str, Any]
    expect: Expectation = Expectation()


@dataclasses.dataclass(frozen=True)
class Checks(_Spec):
    """Evaluator settings for one servable."""

    random: bool = False
    formats: tuple[str, ...] = ()
    latency_budget_ms: float | None = None
    warm_calls: int = 10
    batch_sizes: tuple[int, ...] = (1, 3)


@dataclasses.dataclass(frozen=True)
class EvaluationSpec(_Spec):
    """What ServableEvaluator needs: expected signatures, examples, check settings."""

    name: str
    signature_keys: tuple[str, ...] = ()
    examples: tuple[Example, ...] = ()
    checks: Checks = Checks()


@dataclasses.dataclass(frozen=True)
class ServingSpec(_Spec):
    """What VersionedPusher needs: how TF Serving should serve the versions, and retention."""

    version_policy: str = "latest"
    versions: tuple[int, ...] = ()
    labels: Mapping[str, int] = dataclasses.field(default_factory=dict)
    keep: int | None = None  # None keeps every version
    # The catalog's example requests (path -> REST body): the examples of each version's
    # OpenAPI document (assets.extra/openapi.json, tfserving/openapi.py).
    examples: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def model_config(self, name: str, base_path: str = "") -> ModelConfig:
        """This spec as ``name``'s models.config entry."""
        return ModelConfig(name, base_path,
                           VersionPolicy(self.version_policy, versions=self.versions),
                           self.labels)
