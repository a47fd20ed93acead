"""TF Serving's REST JSON formats: request bodies to arrays, arrays to response bodies.

This follows ``tensorflow_serving/util/json_tensor.cc`` rule for rule, so that a
request is accepted here iff TF Serving accepts it, with the same tensors, and
a response is written with the same text:

- ``instances`` (row format): a list with one entry per batch item; a plain
  value per item when the signature has one input, an object ``{alias: value}``
  per item otherwise. Every item must have the size and shape of the first
  ("Expecting tensor size ..." / "Expecting shape ..."); the items are stacked
  on a new 0th dimension. The response is ``{"predictions": [...]}``: one value
  per item when there is one output, one ``{alias: value}`` object per item
  otherwise (``[]`` for a batch of 0).
- ``inputs`` (columnar format): a value (one input) or ``{alias: value}``
  (other keys are ignored). The response is ``{"outputs": value}`` or
  ``{"outputs": {alias: value}}``.
- Request shapes are not checked against the signature: the graph decides.
- ``{"b64": "..."}`` is binary data for a ``DT_STRING`` tensor; outputs whose
  alias ends in ``_bytes`` are written that way.
- Numbers: any JSON number feeds a float/double tensor (rounded to the
  nearest; beyond float32's range it is +/-Infinity); integer tensors take
  JSON integers in range (int32 range for int8/int16/uint8, which TensorFlow
  then narrows as C does). ``NaN``/``Infinity``/``-Infinity`` (and rapidjson's
  ``Inf``) are read and written as numbers.
- Floats are written as TF Serving's ``WriteDecimal`` writes them: ``%g`` (six
  significant digits) when that reads back to the same value (``SimpleAtof``: rounded
  directly to float32, not through a double), else ``%.9g``
  (float) / ``%.17g`` (double); ``.0`` is added to whole numbers without an
  exponent (``9e+06``, ``3e-05``, ``999999.0``, ``0.300000012``).
- The body is parsed as rapidjson does with TF Serving's flags (iterative,
  NaN/Inf, stop when done): keys other than ``signature_name``, ``instances``,
  ``inputs``, ``context`` and ``examples`` are checked for syntax and ignored
  at any depth, text after the top-level value is ignored, and parse errors
  use rapidjson's wording ("JSON Parse error: Invalid value. at offset: 0").
  Nothing here recurses on the request's nesting.
- ``:classify`` / ``:regress`` take ``examples`` (+ optional ``context``) as
  JSON objects turned into ``tf.Example`` protos (:func:`decode_examples`), and
  answer ``{"results": ...}`` (:func:`classify_json`, :func:`regress_json`).
  Which signatures classify or regress, and the checks of their outputs, are
  :mod:`tfserving.classification`'s: TF Serving runs REST and gRPC requests
  through the same code (``classifier.cc``, ``regressor.cc``).

Deliberate differences (each a request TF Serving mishandles): the body must
be UTF-8 (TF Serving copies invalid bytes into strings and echoes them in
invalid JSON), string outputs that are not UTF-8 are written with U+FFFD
instead of raw bytes, tensors of rank > 32 (numpy's limit) are refused, and a
duplicate key keeps its last value (rapidjson finds the first).

It needs numpy and orjson only (TensorFlow is imported lazily, for
``tf.Example`` protos), so it can be tested without loading a model.
Every problem with a request raises :class:`~tfserving.status.ServingError`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import orjson

from tfserving.status import MAX_ECHO, ServingError, invalid_argument

ROW = "row"
COLUMNAR = "columnar"

PREDICT_METHOD = "tensorflow/serving/predict"  # classify/regress: tfserving.classification
DEFAULT_SIGNATURE = "serving_default"

# numpy (1.x) arrays have at most 32 dimensions; deeper JSON nesting is refused.
MAX_RANK = 32

# The top-level keys TF Serving reads (json_tensor.cc); others are only syntax-checked.
REQUEST_KEYS = frozenset({"signature_name", "instances", "inputs", "context", "examples"})

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_UINT64_MAX = 2**64 - 1
_INT32 = (-(2**31), 2**31 - 1)

# DT_* name -> (TF's DataTypeString, numpy dtype, accepted JSON integer range or None).
# As AddValueToTensor: int8/int16/uint8 take any int32 (rapidjson IsInt) and TensorFlow
# narrows the int_val when it builds the tensor, as a C cast does.
_DTYPES: dict[str, tuple[str, Any, tuple[int, int] | None]] = {
    "DT_FLOAT": ("float", np.float32, None),
    "DT_DOUBLE": ("double", np.float64, None),
    "DT_INT8": ("int8", np.int8, _INT32),
    "DT_INT16": ("int16", np.int16, _INT32),
    "DT_INT32": ("int32", np.int32, _INT32),
    "DT_INT64": ("int64", np.int64, (_INT64_MIN, _INT64_MAX)),
    "DT_UINT8": ("uint8", np.uint8, _INT32),
    "DT_UINT32": ("uint32", np.uint32, (0, 2**32 - 1)),
    "DT_UINT64": ("uint64", np.uint64, (0, _UINT64_MAX)),
    "DT_BOOL": ("bool", np.bool_, None),
    "DT_STRING": ("string", object, None),
}

# numpy dtype name -> TF's DataTypeString, for outputs TF Serving cannot write to JSON.
_NUMPY_TF_NAMES = {"float16": "half", "object": "string"}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a signature: its alias, dtype and shape.

    ``dtype`` is a ``DT_*`` name; ``shape`` is ``None`` for unknown rank, and
    ``-1`` marks an unknown dimension. ``dense`` is False for sparse/composite
    tensors, which the REST API cannot feed.
    """

    name: str
    dtype: str
    shape: tuple[int, ...] | None
    dense: bool = True


@dataclass(frozen=True, eq=False)
class SignatureSpec:
    """A signature def: its key, method name and input/output specs."""

    key: str
    method_name: str
    inputs: Mapping[str, TensorSpec] = field(default_factory=dict)
    outputs: Mapping[str, TensorSpec] = field(default_factory=dict)


def type_string(dtype: str) -> str:
    """TF's DataTypeString for a ``DT_*`` name (``DT_FLOAT`` -> ``float``)."""
    info = _DTYPES.get(dtype)
    if info:
        return info[0]
    return dtype[3:].lower() if dtype.startswith("DT_") else dtype


# --------------------------------------------------------------------------- JSON


def parse_json(body: bytes) -> dict[str, Any]:
    """Parses a request body, which must be a JSON object, as TF Serving's ParseJson does.

    orjson parses ordinary bodies; anything it refuses (``NaN``/``Infinity``,
    nesting deeper than 1024, text after the document, errors) goes to
    :func:`_parse_rapidjson`, which accepts what rapidjson accepts and words
    errors as rapidjson does. In that path only :data:`REQUEST_KEYS` are kept.
    """
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        doc = _parse_fallback(body, err)
    if type(doc) is not dict:
        raise invalid_argument(f"JSON Value: {snippet(doc)} Is not object")
    return doc


def _parse_fallback(body: bytes, err: orjson.JSONDecodeError) -> Any:
    if str(err).startswith("unexpected content after document"):
        # kParseStopWhenDoneFlag: whatever follows the top-level value is ignored.
        try:
            return orjson.loads(body.decode("utf-8")[:err.pos])
        except (UnicodeDecodeError, orjson.JSONDecodeError):
            pass
    elif b"NaN" in body or b"Infinity" in body:
        # The stdlib's C parser knows NaN/Infinity/-Infinity (hooks for rapidjson's number
        # rules would make it several times slower; a number beyond double range reads
        # as +/-Infinity here, where rapidjson refuses it).
        try:
            doc = json.loads(body.decode("utf-8"))
            # Refuses lone surrogates (as rapidjson), integers beyond 64 bits (rapidjson
            # makes them doubles) and deep nesting: the rapidjson path takes those.
            orjson.dumps(doc)
            return doc
        except (ValueError, RecursionError, TypeError, orjson.JSONEncodeError):
            pass
    return _parse_rapidjson(body)


def _json_int(text: str) -> int | float:
    # rapidjson stores integers outside [-2**63, 2**64) as doubles.
    if len(text) < 22:
        value = int(text)
        if _INT64_MIN <= value <= _UINT64_MAX:
            return value
    return _json_float(text)


def _json_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError("Number too big to be stored in double.")
    return value


class _Deep:
    """A container nested too deep to build (> _MAX_BUILD_DEPTH); only its kind is kept."""

    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind


# Containers deeper than this inside a request key are validated but not built: no tensor
# (rank <= 32, plus 'instances' and object levels) or tf.Example can be that deep.
_MAX_BUILD_DEPTH = 64
# Only single-character-class repeats: sre keeps state per iteration of a repeated group,
# which on a hostile 64 MiB run costs gigabytes.
_WS = re.compile(rb"[ \t\n\r]*")
_STRING_PLAIN = re.compile(rb'[^"\\\x00-\x1f]*')
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_NAN_INF = re.compile(rb"-?(?:NaN|Inf(?:inity)?)")
_OPEN_RUN = re.compile(rb"\[[\[ \t\n\r]*")
_CLOSE_RUN = re.compile(rb"[\]}][\]} \t\n\r]*")
_CLOSERS = bytes.maketrans(b"[{", b"]}")
_LITERALS = {0x74: (b"true", True), 0x66: (b"false", False), 0x6E: (b"null", None)}
# Parser states.
_VALUE, _VALUE_OR_END, _NAME_OR_END, _NAME, _COLON, _AFTER = range(6)
_LBRACKET, _RBRACKET, _LBRACE, _RBRACE, _COMMA, _COLON_CHAR, _QUOTE, _BACKSLASH = b"[]{},:\"\\"
_ARRAY_END = "Missing a comma or ']' after an array element."
_OBJECT_END = "Missing a comma or '}' after an object member."


def _parse_error(message: str, offset: int) -> ServingError:
    return invalid_argument(f"JSON Parse error: {message} at offset: {offset}")


def _parse_rapidjson(body: bytes) -> Any:
    """Parses ``body`` as rapidjson's iterative parser with TF Serving's flags.

    A loop over tokens with an explicit stack, so any depth is fine. The
    top-level object keeps only :data:`REQUEST_KEYS`; other values, and
    containers deeper than ``_MAX_BUILD_DEPTH`` (kept as :class:`_Deep`), are
    only validated, by :func:`_skip_container`.
    """
    n = len(body)
    pos = _WS.match(body, 0).end()
    if pos == n or body[pos] in b"]},:\x00":
        # rapidjson's error for its start state, whatever the token (HandleError).
        raise _parse_error("The document is empty.", pos)
    start = pos
    if body[pos] != _LBRACE:
        if body[pos] == _LBRACKET:
            _skip_container(body, pos)
        else:
            _parse_scalar(body, pos, body[pos], False)
        shown = body[start:start + MAX_ECHO].decode("utf-8", "replace")
        raise invalid_argument(f"JSON Value: {shown} Is not object")
    built: list[list[Any]] = [[_LBRACE, {}, None, True]]  # [kind, container, name, build?]
    pos += 1
    state = _NAME_OR_END
    while True:
        pos = _WS.match(body, pos).end()
        char = body[pos] if pos < n else -1
        frame = built[-1]

        if state == _AFTER:
            if char == _COMMA:
                pos += 1
                state = _VALUE if frame[0] == _LBRACKET else _NAME
                continue
            if char not in (_RBRACKET, _RBRACE) or (char == _RBRACKET) != (frame[0] == _LBRACKET):
                raise _parse_error(_ARRAY_END if frame[0] == _LBRACKET else _OBJECT_END, pos)
            pos += 1
            built.pop()
            if not built:
                return frame[1]  # the top-level value is complete: stop (kParseStopWhenDone)
            _attach(built, frame[1])
            continue

        if state == _NAME_OR_END or state == _NAME:
            if char == _RBRACE and state == _NAME_OR_END:
                state = _AFTER
                continue
            if char != _QUOTE:
                raise _parse_error("Missing a name for object member.", pos)
            frame[2], pos = _parse_string(body, pos, True)
            if len(built) == 1:  # a member of the top-level object: built if TF reads it
                frame[3] = frame[2] in REQUEST_KEYS
            pos = _WS.match(body, pos).end()
            if pos >= n or body[pos] != _COLON_CHAR:
                raise _parse_error("Missing a colon after a name of object member.", pos)
            pos += 1
            state = _VALUE
            continue

        # _VALUE or _VALUE_OR_END
        if char == _RBRACKET and state == _VALUE_OR_END:
            state = _AFTER
            continue
        if char == _LBRACKET or char == _LBRACE:
            if not frame[3]:
                pos = _skip_container(body, pos)
                state = _AFTER
            elif len(built) >= _MAX_BUILD_DEPTH:
                _attach(built, _Deep(chr(char)))
                pos = _skip_container(body, pos)
                state = _AFTER
            else:
                built.append([char, [] if char == _LBRACKET else {}, None, True])
                pos += 1
                state = _VALUE_OR_END if char == _LBRACKET else _NAME_OR_END
            continue
        value, pos = _parse_scalar(body, pos, char, frame[3])
        if frame[3]:
            _attach(built, value)
        state = _AFTER


def _attach(built: list[list[Any]], value: Any) -> None:
    frame = built[-1]
    if frame[0] == _LBRACKET:
        frame[1].append(value)
    else:
        frame[1][frame[2]] = value


# Plain (escape-free) strings, numbers that surely fit a double, and literals: the scalars
# a skipped value is mostly made of. Anything else goes to the general functions.
_PLAIN = (rb'"[^"\\\x00-\x1f]*"|-?(?:0|[1-9][0-9]{0,17})(?:\.[0-9]+)?(?:[eE][+-]?[0-9]{1,2})?'
          rb"(?![0-9.eE])|true|false|null")
_SKIP_SCALAR = re.compile(_PLAIN)
# Up to 4097 plain scalars of an array in one step (a bounded repeat: sre keeps state for
# every repetition until the match ends).
_SKIP_SCALARS = re.compile(rb"(?:%s)(?:[ \t\n\r]*,[ \t\n\r]*(?:%s)){0,4096}" % (_PLAIN, _PLAIN))
# Up to 4096 openers (a brace with its first member's plain name and colon) in one step: a
# deep chain such as [{"a":[{"a":... costs one step per 4096 levels.
# (Names with brackets are left to the single steps, so the run's brackets are its kinds.)
_SKIP_OPENERS = re.compile(rb'(?:\[[ \t\n\r]*|\{[ \t\n\r]*"[^"\\\x00-\x1f\[\]{}]*"[ \t\n\r]*:'
                           rb"[ \t\n\r]*){1,4096}")
_NOT_OPENERS = bytes(b for b in range(256) if b not in b"[{")
# The rest of an array up to the next bracket: if it is flat, orjson checks it at once (what
# orjson reads, rapidjson reads; what it refuses is stepped through for rapidjson's verdict).
_FLAT = re.compile(rb"[^\[\]{}]*")
_MIN_FLAT = 256
_SKIP_COMMA_NAME = re.compile(rb',[ \t\n\r]*"[^"\\\x00-\x1f]*"[ \t\n\r]*:')
_WS_BYTES = frozenset(b" \t\n\r")


def _skip_container(body: bytes, pos: int) -> int:
    """Validates the array or object at ``pos`` as rapidjson does; returns the offset after it.

    Nothing is built and the stack is a bytearray of bracket kinds, so depth
    costs a byte per level. Runs of ``[``, of closing brackets and of an
    array's plain scalars are one step each, as is ``{"name":``.
    """
    n = len(body)
    stack = bytearray()
    state = _VALUE
    flat_refused = 0
    while True:
        if pos < n and body[pos] in _WS_BYTES:
            pos = _WS.match(body, pos).end()
        char = body[pos] if pos < n else -1
        if state == _AFTER:
            if not stack:
                return pos
            if char == _COMMA:
                if stack[-1] == _LBRACKET:
                    pos += 1
                    state = _VALUE
                    continue
                match = _SKIP_COMMA_NAME.match(body, pos)
                if match is not None:
                    pos = match.end()
                    state = _VALUE
                else:
                    pos += 1
                    state = _NAME
                continue
            if char == _RBRACKET or char == _RBRACE:
                pos = _close_skipped(body, pos, stack)
                continue
            raise _parse_error(_ARRAY_END if stack[-1] == _LBRACKET else _OBJECT_END, pos)
        if state == _VALUE or state == _VALUE_OR_END:
            if char == _LBRACKET:
                run = _OPEN_RUN.match(body, pos)
                stack.extend(b"[" * run.group().count(b"["))
                pos = run.end()
                state = _VALUE_OR_END
            elif char == _LBRACE:
                match = _SKIP_OPENERS.match(body, pos)
                if match is not None:
                    run = match.group()
                    stack.extend(run.translate(None, _NOT_OPENERS))
                    pos = match.end()
                    state = _VALUE_OR_END if run.rstrip(b" \t\n\r")[-1] == _LBRACKET else _VALUE
                else:
                    stack.append(_LBRACE)
                    pos += 1
                    state = _NAME_OR_END
            elif char == _RBRACKET and state == _VALUE_OR_END:
                stack.pop()
                pos += 1
                state = _AFTER
            else:
                if stack and stack[-1] == _LBRACKET and pos >= flat_refused:
                    end = _FLAT.match(body, pos).end()
                    if end - pos >= _MIN_FLAT and end < n and body[end] == _RBRACKET:
                        try:
                            orjson.loads(b"[" + body[pos:end] + b"]")
                            pos = end
                            state = _AFTER
                            continue
                        except orjson.JSONDecodeError:
                            flat_refused = end  # step through it; no second try on it
                scalars = _SKIP_SCALARS if stack and stack[-1] == _LBRACKET else _SKIP_SCALAR
                match = scalars.match(body, pos)
                pos = match.end() if match is not None else _parse_scalar(body, pos, char, False)[1]
                state = _AFTER
            continue
        # _NAME_OR_END or _NAME
        if char == _RBRACE and state == _NAME_OR_END:
            stack.pop()
            pos += 1
            state = _AFTER
            continue
        if char != _QUOTE:
            raise _parse_error("Missing a name for object member.", pos)
        pos = _WS.match(body, _parse_string(body, pos, False)[1]).end()
        if pos >= n or body[pos] != _COLON_CHAR:
            raise _parse_error("Missing a colon after a name of object member.", pos)
        pos += 1
        state = _VALUE


def _close_skipped(body: bytes, pos: int, skipped: bytearray) -> int:
    """Closes a run of brackets against the skipped stack in one step; returns the new pos."""
    run = _CLOSE_RUN.match(body, pos).group()
    closers = run.translate(None, b" \t\n\r")
    count = min(len(closers), len(skipped))
    expected = bytes(skipped[-count:][::-1]).translate(_CLOSERS)
    if closers[:count] != expected:
        bad = int(np.flatnonzero(np.frombuffer(closers[:count], np.uint8)
                                 != np.frombuffer(expected, np.uint8))[0])
        message = _ARRAY_END if expected[bad] == _RBRACKET else _OBJECT_END
        raise _parse_error(message, pos + _bracket_offset(run, bad))
    del skipped[-count:]
    if count == len(closers):
        return pos + len(run)
    # The run goes on to close the containers around the skipped value.
    return pos + _bracket_offset(run, count)


def _bracket_offset(run: bytes, index: int) -> int:
    """Offset in ``run`` (closing brackets and whitespace) of its ``index``-th bracket."""
    if len(run) == len(run.translate(None, b" \t\n\r")):
        return index
    codes = np.frombuffer(run, np.uint8)
    return int(np.flatnonzero((codes == _RBRACKET) | (codes == _RBRACE))[index])


def _parse_string(body: bytes, pos: int, build: bool) -> tuple[str | None, int]:
    """The string token at ``pos`` (rapidjson's ParseString checks); its value if ``build``."""
    n = len(body)
    index = pos + 1
    escaped = False
    while True:  # one step per escape; plain characters are skipped by a regex
        index = _STRING_PLAIN.match(body, index).end()
        if index >= n or body[index] == 0:
            raise _parse_error("Missing a closing quotation mark in string.", index)
        byte = body[index]
        if byte == _QUOTE:
            break
        if byte != _BACKSLASH:
            raise _parse_error("Invalid encoding in string.", index)  # a control character
        if index + 1 >= n or body[index + 1] < 0x20:
            raise _parse_error("Invalid escape character in string.", index + 1)
        escaped = True
        index += 2
    token = body[pos:index + 1]
    try:
        text = token.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _parse_error("Invalid encoding in string.", pos + err.start) from None
    if not escaped:
        return (text[1:-1] if build else None), index + 1
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        message = ("Incorrect hex digit after \\u escape in string." if "\\u" in err.msg
                   else "Invalid escape character in string.")
        raise _parse_error(message, pos + err.pos) from None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _parse_error("The surrogate pair in string is invalid.", pos) from None
    return (value if build else None), index + 1


def _parse_scalar(body: bytes, pos: int, char: int, build: bool) -> tuple[Any, int]:
    if char == _QUOTE:
        return _parse_string(body, pos, build)
    literal = _LITERALS.get(char)
    if literal is not None:
        text, value = literal
        if body.startswith(text, pos):
            return value, pos + len(text)
        raise _parse_error("Invalid value.", pos)
    special = _NAN_INF.match(body, pos)
    if special is not None:
        text = special.group()
        value = math.nan if b"N" in text else (-math.inf if text[0] == 0x2D else math.inf)
        return value, special.end()
    match = _NUMBER.match(body, pos)
    if match is None:
        raise _parse_error("Invalid value.", pos)
    end = match.end()
    if end < len(body):
        follow = body[end]
        if follow == 0x2E:  # '.'
            raise _parse_error("Miss fraction part in number.", end + 1)
        if follow in (0x65, 0x45):  # 'e', 'E'
            raise _parse_error("Miss exponent in number.", end + 1)
    text = match.group()
    try:
        value = _json_float(text) if match.lastindex else _json_int(text)
    except ValueError:
        raise _parse_error("Number too big to be stored in double.", pos) from None
    return value, end


def dumps(obj: Any) -> bytes:
    """Serialises a JSON-able object (numpy arrays allowed) with orjson."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError as err:
        raise ServingError("INTERNAL", f"Failed to write response JSON: {err}") from err


def json_type(value: Any) -> str:
    """rapidjson's type name of a parsed JSON value, as TF Serving reports it."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, _Deep):
        return "Array" if value.kind == "[" else "Object"
    if isinstance(value, str):
        return "String"
    return "Number"


def snippet(value: Any, budget: int = MAX_ECHO) -> str:
    """A short JSON rendering of a (possibly huge or deep) value, for errors."""
    out: list[str] = []
    _snip(value, out, [budget], 0)
    text = "".join(out)
    return text if len(text) <= budget else text[:budget] + "..."


def _snip(value: Any, out: list[str], budget: list[int], depth: int) -> None:
    if budget[0] <= 0:
        return
    if isinstance(value, _Deep) or (depth > 8 and isinstance(value, (dict, list))):
        out.append("...")
        budget[0] -= 3
        return
    if isinstance(value, dict):
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if budget[0] <= 0:
                break
            if i:
                out.append(",")
            text = _scalar_text(key)
            out.append(text + ":")
            budget[0] -= len(text) + 2
            _snip(item, out, budget, depth + 1)
        out.append("}")
    elif isinstance(value, list):
        out.append("[")
        for i, item in enumerate(value):
            if budget[0] <= 0:
                break
            if i:
                out.append(",")
            budget[0] -= 1
            _snip(item, out, budget, depth + 1)
        out.append("]")
    else:
        text = _scalar_text(value)
        out.append(text)
        budget[0] -= len(text)


def _scalar_text(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value[:MAX_ECHO])
    if isinstance(value, float):
        return json.dumps(value).replace("inf", "Inf")
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        text = str(value)
        return text if len(text) <= 40 else text[:40] + "..."
    return f"<{type(value).__name__}>"


def _name(text: str) -> str:
    """A client-supplied name (key, feature) as TF Serving prints it: plain, but shortened."""
    return text if len(text) <= MAX_ECHO else text[:MAX_ECHO] + "..."


def is_b64_object(value: Any) -> bool:
    """True for ``{"b64": "<string>"}`` (exactly one key)."""
    return type(value) is dict and len(value) == 1 and type(value.get("b64")) is str


def encode_b64(value: Any) -> Any:
    """``value`` with every ``bytes`` replaced by ``{"b64": ...}`` (and arrays as lists)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"b64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        return {key: encode_b64(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_b64(item) for item in value]
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays and scalars
        return encode_b64(value.tolist())
    return value


def decode_b64(value: Any) -> Any:
    """``value`` with every ``{"b64": ...}`` object replaced by its ``bytes``."""
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("b64"), str):
            return base64.b64decode(value["b64"])
        return {key: decode_b64(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode_b64(item) for item in value]
    return value


def _is_named_object(value: Any) -> bool:
    return type(value) is dict and not is_b64_object(value)


def b64decode(value: Any) -> bytes:
    """Decodes a ``{"b64": ...}`` object; padding may be omitted, as in absl."""
    if not is_b64_object(value):
        raise invalid_argument(
            f"JSON Value: {snippet(value)} not formatted correctly for base64 data")
    text = value["b64"]
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument("Unable to base64 decode") from None


def _encode_utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid_argument(f"JSON string {snippet(text)} is not valid UTF-8") from None


# ------------------------------------------------------------------ JSON -> arrays


class _Mismatch(Exception):
    """The fast conversion met something TF Serving refuses; the exact walk words it."""


def json_to_array(value: Any, dtype: str) -> np.ndarray:
    """Converts one JSON value (scalar or nested lists) to an array of ``dtype``.

    The shape comes from the first element at each level (TF Serving's
    GetDenseTensorShape); every other list must match it. The fast path
    converts all leaves at once; if anything is wrong, :func:`_fill_error`
    walks the value in TF Serving's order to raise the error it reports first.
    """
    shape = _dense_shape(value)
    if dtype in _DTYPES:
        try:
            return _leaves_to_array(_flatten(value, shape), dtype).reshape(shape)
        except _Mismatch:
            pass
    _fill_error(value, shape, dtype)
    # Only an unsupported dtype with no values gets here: TF Serving adds no value, so it
    # has no error to report, and feeds an empty tensor of the input's dtype.
    return _empty_array(shape, dtype)


# Dtypes AddValueToTensor converts no value to (UNIMPLEMENTED), as numpy holds them: the
# dtype of an empty request value for such an input (TensorFlow checks a feed's dtype).
_EMPTY_ONLY = {"DT_HALF": "float16", "DT_UINT16": "uint16", "DT_COMPLEX64": "complex64",
               "DT_COMPLEX128": "complex128"}


def _empty_array(shape: list[int], dtype: str) -> np.ndarray:
    if dtype == "DT_BFLOAT16":
        import ml_dtypes  # numpy's bfloat16, as TensorFlow uses it

        return np.zeros(shape, dtype=ml_dtypes.bfloat16)
    return np.zeros(shape, dtype=_EMPTY_ONLY.get(dtype, "float32"))


def _dense_shape(value: Any) -> list[int]:
    # TF Serving's GetDenseTensorShape: follow the first element of each list.
    shape: list[int] = []
    while type(value) is list or type(value) is _Deep:
        if len(shape) == MAX_RANK or type(value) is _Deep:
            raise invalid_argument(
                f"JSON lists are nested more than {MAX_RANK} levels deep; tensors of rank > "
                f"{MAX_RANK} are not supported")
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _flatten(value: Any, shape: list[int]) -> list[Any]:
    level = [value]
    for size in shape:
        below: list[Any] = []
        for item in level:
            if type(item) is not list or len(item) != size:
                raise _Mismatch
            below.extend(item)
        level = below
    if list in set(map(type, level)):
        raise _Mismatch
    return level


def _fill_error(value: Any, shape: list[int], dtype: str) -> None:
    """Raises the first error TF Serving's FillTensorProto meets (depth first, in order)."""
    rank = len(shape)
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if type(item) is not list:
            if level != rank:
                raise invalid_argument(
                    f"JSON Value: {snippet(item)} found at incorrect level: {level + 1} in the "
                    f"JSON DOM. Expected at level: {rank}")
            _convert_leaf(item, dtype)
            continue
        if level >= rank:
            raise invalid_argument(
                f"Encountered list at unexpected level: {level} expected < {rank}")
        if len(item) != shape[level]:
            raise invalid_argument(
                f"Encountered list at unexpected size: {len(item)} at level: {level} "
                f"expected size: {shape[level]}")
        stack.extend((child, level + 1) for child in reversed(item))


def _type_error(value: Any, dtype: str) -> ServingError:
    return invalid_argument(
        f"JSON Value: {snippet(value)} Type: {json_type(value)} is not of expected type: "
        f"{type_string(dtype)}")


def _convert_leaf(value: Any, dtype: str) -> Any:
    """One leaf as AddValueToTensor takes it; raises TF Serving's error if it cannot."""
    kind = type(value)
    if kind is dict:
        if dtype == "DT_STRING":
            return b64decode(value)
        raise _type_error(value, dtype)
    if dtype not in _DTYPES:
        raise ServingError("UNIMPLEMENTED", f"Conversion of JSON Value: {snippet(value)} to "
                                            f"type: {type_string(dtype)}")
    _, _, int_range = _DTYPES[dtype]
    if dtype == "DT_STRING":
        if kind is not str:
            raise _type_error(value, dtype)
        return _encode_utf8(value)
    if dtype == "DT_BOOL":
        if kind is not bool:
            raise _type_error(value, dtype)
        return value
    if int_range is not None:
        if kind is not int or not int_range[0] <= value <= int_range[1]:
            raise _type_error(value, dtype)
        return value
    if kind is not int and kind is not float:
        raise _type_error(value, dtype)
    return value


def _leaves_to_array(leaves: list[Any], dtype: str) -> np.ndarray:
    _, np_type, int_range = _DTYPES[dtype]
    if not leaves:
        return np.zeros((0,), dtype=np_type)
    types = set(map(type, leaves))

    if dtype == "DT_STRING":
        out = np.empty(len(leaves), dtype=object)
        if types == {str}:
            try:
                out[:] = [s.encode("utf-8") for s in leaves]
            except UnicodeEncodeError:
                raise _Mismatch from None
            return out
        if not types <= {str, dict}:
            raise _Mismatch
        try:
            out[:] = [_convert_leaf(leaf, dtype) for leaf in leaves]
        except ServingError:
            raise _Mismatch from None
        return out

    if dtype == "DT_BOOL":
        if types != {bool}:
            raise _Mismatch
        return np.array(leaves, dtype=np.bool_)

    if int_range is not None:
        if types != {int} or min(leaves) < int_range[0] or max(leaves) > int_range[1]:
            raise _Mismatch
        wide = np.uint64 if dtype == "DT_UINT64" else np.int64
        # int8/int16/uint8 take int32 values and narrow them as TensorFlow's int_val does.
        return np.array(leaves, dtype=wide).astype(np_type)

    # DT_FLOAT / DT_DOUBLE: any JSON number, rounded to the nearest (rapidjson GetFloat:
    # a C cast of the double, so beyond float32's range it is +/-Infinity).
    if not types <= {int, float}:
        raise _Mismatch
    values = np.array(leaves, dtype=np.float64)
    if np_type is np.float64:
        return values
    if len(leaves) <= _SMALL_FLOATS and -_FLOAT32_MAX <= min(leaves) <= max(leaves) <= \
            _FLOAT32_MAX:
        return values.astype(np_type)  # nothing overflows: no need for np.errstate's cost
    with np.errstate(over="ignore"):
        return values.astype(np_type)


# ------------------------------------------------------------------ predict requests


def signature_name(doc: Mapping[str, Any]) -> str:
    """The request's optional ``signature_name`` ("" when absent)."""
    if "signature_name" not in doc:
        return ""
    value = doc["signature_name"]
    if type(value) is not str:
        raise invalid_argument(
            f"JSON Value: {snippet(doc)} not formatted correctly. 'signature_name' key must be "
            "a string value.")
    return value


def decode_predict(doc: Mapping[str, Any], sig: SignatureSpec) -> tuple[str, dict[str, np.ndarray]]:
    """Turns a predict request into ``(format, {alias: array})`` for ``sig``.

    As TF Serving, the arrays' shapes are not checked against the signature:
    the model decides what it can take.
    """
    if not sig.inputs:
        raise invalid_argument(f"Failed to get input map for signature: {sig.key}")
    for alias, spec in sig.inputs.items():
        if not spec.dense:
            raise invalid_argument(
                f"Input '{alias}' of signature '{sig.key}' is not a dense tensor; the REST API "
                "can only feed dense tensors")
    has_instances = "instances" in doc
    has_inputs = "inputs" in doc
    if has_instances and has_inputs:
        raise invalid_argument(
            f"JSON Value: {snippet(doc)} Not formatted correctly expecting only one of 'inputs' "
            "or 'instances' keys to exist ")
    if has_instances:
        return ROW, _decode_instances(doc["instances"], sig, doc)
    if has_inputs:
        return COLUMNAR, _decode_inputs(doc["inputs"], sig)
    raise invalid_argument("Missing 'inputs' or 'instances' key")


def _decode_instances(instances: Any, sig: SignatureSpec,
                      doc: Mapping[str, Any]) -> dict[str, np.ndarray]:
    inputs = sig.inputs
    if type(instances) is not list:
        raise invalid_argument(
            f"JSON Value: {snippet(doc)} Expecting 'instances' to be an list/array")
    if not instances:
        raise invalid_argument(f"JSON Value: {snippet(doc)} No values in 'instances' array")
    if type(instances[0]) is not dict and len(inputs) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map")
    named = _is_named_object(instances[0])
    if not named and len(inputs) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map")
    # Fast path: stack each input's items into one value and convert it at once. That
    # works exactly when every item converts and has the shape of the first one; if not,
    # _instances_error goes through the items as TF Serving does, for its error.
    tensors = {}
    try:
        if named:
            if not all(_is_named_object(item) and item.keys() == inputs.keys()
                       for item in instances):
                raise _Mismatch
            for alias, spec in inputs.items():
                tensors[alias] = json_to_array([item[alias] for item in instances], spec.dtype)
        else:
            if any(_is_named_object(item) for item in instances):
                raise _Mismatch
            alias, spec = next(iter(inputs.items()))
            tensors[alias] = json_to_array(instances, spec.dtype)
    except (_Mismatch, ServingError) as err:
        _instances_error(instances, inputs)
        # No item is wrong on its own: the stacked tensor is (rank > MAX_RANK).
        raise err if isinstance(err, ServingError) else invalid_argument(str(err)) from None
    return tensors


def _instances_error(instances: list[Any], inputs: Mapping[str, TensorSpec]) -> None:
    """Raises the error TF Serving's FillTensorMapFromInstancesList reports first."""
    names = set(inputs)
    sizes: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    named = _is_named_object(instances[0])
    for index, item in enumerate(instances):
        if named:
            if not _is_named_object(item):
                raise invalid_argument(
                    f"Expecting object but got list at item {index} of input list")
            for key, value in item.items():
                problem = _instance_item_error(key, value, inputs, sizes, shapes)
                if problem is not None:
                    raise invalid_argument(
                        f"Failed to process element: {index} key: {_name(key)} of 'instances' "
                        f"list. Error: {problem}")
            if set(item) != names:
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{snippet(item)} keys must be equal to: {','.join(sorted(names))}")
        else:
            if _is_named_object(item):
                raise invalid_argument(
                    f"Expecting value/list but got object at item {index} of input list")
            problem = _instance_item_error(next(iter(inputs)), item, inputs, sizes, shapes)
            if problem is not None:
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. Error: {problem}")


def _instance_item_error(name: str, value: Any, inputs: Mapping[str, TensorSpec],
                         sizes: dict[str, int], shapes: dict[str, tuple[int, ...]]) -> str | None:
    """TF Serving's AddInstanceItem: the error (as its Status::ToString) or None."""
    if name not in inputs:
        return f"INVALID_ARGUMENT: JSON object: does not have named input: {_name(name)}"
    try:
        arr = json_to_array(value, inputs[name].dtype)
    except ServingError as err:
        return f"{err.code}: {err.message}"
    if name not in sizes:
        sizes[name], shapes[name] = arr.size, arr.shape
    elif sizes[name] != arr.size:
        return f"INVALID_ARGUMENT: Expecting tensor size: {sizes[name]} but got: {arr.size}"
    elif shapes[name] != arr.shape:
        return (f"INVALID_ARGUMENT: Expecting shape {_shape_string(shapes[name])} but got: "
                f"{_shape_string(arr.shape)}")
    return None


def _shape_string(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(map(str, shape)) + "]"


def _decode_inputs(value: Any, sig: SignatureSpec) -> dict[str, np.ndarray]:
    inputs = sig.inputs
    if not _is_named_object(value):
        if len(inputs) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map")
        alias, spec = next(iter(inputs.items()))
        return {alias: json_to_array(value, spec.dtype)}
    tensors = {}
    for alias, spec in inputs.items():
        if alias not in value:
            raise invalid_argument(f"Missing named input: {alias} in 'inputs' object.")
        tensors[alias] = json_to_array(value[alias], spec.dtype)
    return tensors


# ------------------------------------------------------------------ arrays -> JSON


def float_texts(values: np.ndarray) -> list[str]:
    """Float values as TF Serving's WriteDecimal writes them (json_tensor.cc).

    ``absl::StrCat`` (six significant digits, like ``%g``) when that reads back
    (``absl::SimpleAtof``/``SimpleAtod``: correctly rounded) to the same value,
    else ``%.9g`` (float32) / ``%.17g`` (float64); ``.0`` is added when there is
    neither a point nor an exponent; non-finite values are ``NaN``,
    ``Infinity``, ``-Infinity``.
    """
    flat = np.ascontiguousarray(values).ravel()
    single = flat.dtype == np.float32
    if flat.size <= _SMALL_FLOATS:  # numpy calls cost more than a plain loop here
        return [_float_text(v, single) for v in flat.tolist()]
    if single:
        return _float32_json(flat, rows=False)[0][1:-1].decode("ascii").split(",")
    with np.errstate(all="ignore"):
        finite = np.isfinite(flat)
        integral = finite & (np.floor(flat) == flat)
        plain = integral & (np.abs(flat) < 1e17)
    numbers = flat.tolist()
    texts = []
    for v in numbers:
        text = format(v, "g")
        texts.append(text if float(text) == v else format(v, ".17g"))
    # Whole numbers print without a point below 1e6 (%g) or 1e17 (%.17g): add ".0".
    for i in np.flatnonzero(plain).tolist():
        if "." not in texts[i] and "e" not in texts[i]:
            texts[i] += ".0"
    if not finite.all():
        for i in np.flatnonzero(~finite).tolist():
            v = numbers[i]
            texts[i] = "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")
    return texts


_SMALL_FLOATS = 32
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_FLOAT32 = struct.Struct("<f")
_FLOAT32_BITS = struct.Struct("<I")


def _float_text(v: float, single: bool) -> str:
    """One value as WriteDecimal writes it (``single``: a float32, given as a double)."""
    if v != v:
        return "NaN"
    if v in (math.inf, -math.inf):
        return "Infinity" if v > 0 else "-Infinity"
    text = format(v, "g")
    if single:
        # float(text) == v: the text is the value exactly (whole numbers, halves, ...).
        if v != 0 and float(text) != v and not _reads_back_as_float32(text, v):
            text = format(v, ".9g")
    elif float(text) != v:
        text = format(v, ".17g")
    return text if "." in text or "e" in text else text + ".0"


def _float32_interval(magnitude: float) -> tuple[float, float, bool]:
    """(low, high, ties_in) bounding the decimals that read back as the float32
    ``magnitude`` (> 0): the midpoints with its neighbours, which belong to it when its
    last mantissa bit is even (round half to even)."""
    bits = _FLOAT32_BITS.unpack(_FLOAT32.pack(magnitude))[0]
    below = _FLOAT32.unpack(_FLOAT32_BITS.pack(bits - 1))[0]
    above = 2.0**128 if bits == 0x7F7FFFFF else _FLOAT32.unpack(_FLOAT32_BITS.pack(bits + 1))[0]
    return (magnitude + below) / 2, (magnitude + above) / 2, bits % 2 == 0


def _reads_back_as_float32(text: str, v: float) -> bool:
    """Whether ``text`` reads back as the float32 ``v`` (!= 0) when rounded directly to
    float32 (absl::SimpleAtof), not through a double (which can land on a midpoint)."""
    low, high, ties_in = _float32_interval(abs(v))
    value = abs(float(text))  # correctly rounded: on a bound only if the decimal is near it
    if value in (low, high):
        exact = abs(Fraction(text))
        return Fraction(low) < exact < Fraction(high) or (
            ties_in and exact in (Fraction(low), Fraction(high)))
    return low < value < high


# ---- float32 texts, vectorised
#
# Each value's text is laid out in a column of a (_CELL, n) byte matrix whose zero bytes
# are dropped afterwards (no text has a NUL), so every value has the same layout:
#   sign | "0.000" (values in [1e-4, 1)) | d0 p0 d1 p1 ... d8 p8 d9 |
#   e sign tens units
# where dK is the K-th significant digit (shown or 0) and pK the point after it (or 0).
# The digits come from tables: q, the value rounded to 6 (or 9) significant digits as an
# integer, computed in double arithmetic; values whose rounding the arithmetic cannot
# decide with certainty (within 1e-6 of a tie) and values whose 6-digit text lands on the
# bound of the float32 interval are redone one by one with Python's exact formatting.
_SIGN, _PREFIX, _DIGITS, _EXPONENT, _CELL = 0, 1, 6, 25, 29
_POWERS = np.array([float(10**k) for k in range(23)])  # exact doubles
_SCALE_0 = 350  # _SCALE[_SCALE_0 + k]: 10**k as the nearest double (0 and inf beyond)
_SCALE = np.array([1 / 10**-k if k < 0 else float(10**k) if k < 309 else math.inf
                   for k in range(-_SCALE_0, _SCALE_0 + 1)])
_TIE_MARGIN = 1e-6  # >> the 2.3e-7 a 9-digit product in doubles can be off by
_CHUNK = 16384  # values per pass: keeps numpy's temporaries small
_ASCII = {c: ord(c) for c in "0.-+e,[]"}
_TOKENS = ((b"0.0", 0), (b"NaN", 1), (b"Infinity", 2), (b"-Infinity", 3))
_DIGIT_TABLES: tuple[np.ndarray, ...] | None = None


def _digit_tables() -> tuple[np.ndarray, ...]:
    """ASCII digits (a row per place) and trailing-zero counts of 0..99999 and 0..9999."""
    global _DIGIT_TABLES
    if _DIGIT_TABLES is None:
        numbers = np.arange(100000)
        places = 10 ** np.arange(4, -1, -1)[:, None]
        digits5 = (numbers // places % 10).astype(np.uint8) + np.uint8(_ASCII["0"])
        zeros5 = np.zeros(100000, np.int64)
        for k in range(1, 5):
            zeros5 += numbers % 10**k == 0
        zeros5[0] = 5
        _DIGIT_TABLES = (digits5, zeros5, np.ascontiguousarray(digits5[1:, :10000]),
                         np.minimum(zeros5[:10000], 4))
    return _DIGIT_TABLES


def _round_to(prod: np.ndarray, e: np.ndarray, digits: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q, exponent, undecided): ``prod`` rounded to an integer of ``digits`` digits (a
    carry to 10**digits moves the decimal exponent), and where it is too close to a tie."""
    undecided = np.abs(prod - np.floor(prod) - 0.5) < _TIE_MARGIN
    q = np.rint(prod)
    carry = q >= _POWERS[digits]
    return np.where(carry, _POWERS[digits - 1], q), e + carry, undecided


def _fill_cells(flat: np.ndarray, out: np.ndarray) -> None:
    """Writes the texts of float32 values into ``out`` (_CELL rows, a column per value,
    zeroed), laid out as described above."""
    digits5, zeros5, digits4, zeros4 = _digit_tables()
    magnitude = np.abs(flat)
    bits = magnitude.view(np.uint32)
    regular = (bits != 0) & (bits < 0x7F800000)  # finite and not zero
    a = np.where(regular, magnitude, np.float32(1))
    bits = a.view(np.uint32)
    m = a.astype(np.float64)
    # The decimal exponent: float32 log10, corrected with the 6-digit product.
    e = np.floor(np.log10(a)).astype(np.int64)
    prod = m * _SCALE[_SCALE_0 + 5 - e]
    e += (prod >= 1e6).astype(np.int64) - (prod < 1e5)
    q6, x6, undecided6 = _round_to(m * _SCALE[_SCALE_0 + 5 - e], e, 6)
    q9, x9, undecided9 = _round_to(m * _SCALE[_SCALE_0 + 8 - e], e, 9)
    # The 6-digit text's value: correctly rounded to a double when 10**|t| is exact.
    t = x6 - 5
    power = np.where(np.abs(t) <= 22, _POWERS[np.minimum(np.abs(t), 22)],
                     _SCALE[_SCALE_0 + np.abs(t)])
    d6 = np.where(t >= 0, q6 * power, q6 / power)
    # The float32 interval of decimals that read back as the value (_float32_interval).
    above = (bits + np.uint32(1)).view(np.float32).astype(np.float64)
    above[bits == 0x7F7FFFFF] = 2.0**128
    below = (bits - np.uint32(1)).view(np.float32).astype(np.float64)
    low, high = (m + below) * 0.5, (m + above) * 0.5
    ties_in = (bits & np.uint32(1)) == 0
    on_bound = (d6 == low) | (d6 == high)
    short = ((d6 > low) & (d6 < high)) | (ties_in & on_bound)
    undecided = on_bound | undecided6 | undecided9
    inexact = np.flatnonzero(np.abs(t) > 22)
    if inexact.size:  # d6 within a few ulps of the text's value: near a bound, undecided
        d = d6[inexact]
        undecided[inexact] |= np.minimum(np.abs(d - low[inexact]),
                                         np.abs(d - high[inexact])) <= 4 * np.spacing(d)
    q = np.where(short, q6 * 1000.0, q9)
    x = np.where(short, x6, x9)
    # %g: positional when -4 <= exponent < precision, else d.ddde+XX.
    positional = (x >= -4) & (x < np.where(short, 6, 9))
    whole_part = positional & (x >= 0)
    fraction_only = positional & (x < 0)
    scientific = ~positional & regular
    head = np.floor(q / 1e4)
    tail = (q - head * 1e4).astype(np.intp)
    head = head.astype(np.intp)
    chars = np.empty((9, flat.size), np.uint8)
    chars[:5] = digits5[:, head]
    chars[5:] = digits4[:, tail]
    shown = 9 - np.where(tail == 0, 4 + zeros5[head], zeros4[tail])  # without trailing zeros
    place = np.arange(9)[:, None]
    visible = (place < shown) | (whole_part & (place <= x))
    body = out[_DIGITS:_EXPONENT]  # d0 p0 d1 p1 ... d8 p8 d9
    body[0:18:2] = np.where(visible, chars, 0)
    # WriteDecimal adds ".0" to a whole number: a "0" after the point, then the point.
    rows = np.flatnonzero(whole_part & (shown <= x + 1))
    body[2 * x[rows] + 2, rows] = _ASCII["0"]
    rows = np.flatnonzero(whole_part | (scientific & (shown > 1)))
    body[2 * np.where(whole_part, x, 0)[rows] + 1, rows] = _ASCII["."]
    rows = np.flatnonzero(fraction_only)
    if rows.size:
        out[_PREFIX, rows] = _ASCII["0"]
        out[_PREFIX + 1, rows] = _ASCII["."]
        zeros = -x[rows] - 1
        for k in range(3):
            out[_PREFIX + 2 + k, rows[zeros > k]] = _ASCII["0"]
    rows = np.flatnonzero(scientific)
    if rows.size:
        exponent = x[rows]
        out[_EXPONENT, rows] = _ASCII["e"]
        out[_EXPONENT + 1, rows] = np.where(exponent < 0, _ASCII["-"], _ASCII["+"])
        out[_EXPONENT + 2, rows] = np.abs(exponent) // 10 + _ASCII["0"]
        out[_EXPONENT + 3, rows] = np.abs(exponent) % 10 + _ASCII["0"]
    out[_SIGN] = np.where(np.signbit(flat) & ~np.isnan(flat), np.uint8(_ASCII["-"]), 0)
    if not regular.all():
        kind = np.where(np.isnan(flat), 1, np.where(flat == np.inf, 2,
                                                    np.where(flat == -np.inf, 3, 0)))
        for token, code in _TOKENS:
            rows = np.flatnonzero(~regular & (kind == code))
            if rows.size:
                cell = np.zeros(_CELL, np.uint8)
                cell[1:1 + len(token)] = np.frombuffer(token, np.uint8)
                sign = out[_SIGN, rows]
                out[:, rows] = cell[:, None]
                if code == 0:  # "-0.0" keeps its sign
                    out[_SIGN, rows] = sign
    for i in np.flatnonzero(regular & undecided).tolist():
        raw = np.frombuffer(_float_text(float(flat[i]), True).encode("ascii"), np.uint8)
        out[:, i] = 0
        out[:raw.size, i] = raw


def _float32_json(arr: np.ndarray, rows: bool) -> list[bytes]:
    """JSON text of a float32 tensor (rank >= 1, not empty): the whole tensor, or each
    row along dimension 0 (as :func:`_tensor_json`).

    Chunk by chunk, each value's column gets its opening brackets above its cells and its
    closing brackets and comma below; the columns, read value by value without their zero
    bytes, are the text. The buffer is value-major (no transposition before reading it)
    and reused from chunk to chunk.
    """
    flat = np.ascontiguousarray(arr).ravel()
    dims = arr.shape[1:] if rows else arr.shape
    spans = [math.prod(dims[j:]) for j in range(len(dims))]  # values per list, by level
    size = math.prod(dims)  # values per JSON text
    depth = len(spans)
    chunk = min(_CHUNK, flat.size)
    by_value = np.empty((chunk, depth + _CELL + depth + 1), np.uint8)
    parts: list[bytes] = []
    lengths: list[np.ndarray] = []
    for start in range(0, flat.size, chunk):
        count = min(chunk, flat.size - start)
        view = by_value[:count].T  # a column per value, written row by row
        view.fill(0)
        _fill_cells(flat[start:start + count], view[depth:depth + _CELL])
        for level, span in enumerate(spans):
            view[level, -start % span::span] = _ASCII["["]
            view[depth + _CELL + level, (span - 1 - start) % span::span] = _ASCII["]"]
        view[-1] = _ASCII[","]
        view[-1, (size - 1 - start) % size::size] = 0  # none after a text's last value
        parts.append(by_value[:count].tobytes().translate(None, b"\0"))
        if rows:
            lengths.append(np.count_nonzero(view, axis=0))
    text = b"".join(parts)
    if not rows:
        return [text]
    ends = np.cumsum(np.concatenate(lengths))[size - 1::size].tolist()
    return [text[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]


def _group(items: list[str], dims: tuple[int, ...], outer: int) -> list[str]:
    """Joins leaf texts (row-major) into ``outer`` JSON arrays of shape ``dims`` each."""
    for level in range(len(dims) - 1, -1, -1):
        size = dims[level]
        count = outer * math.prod(dims[:level])
        if size == 0:
            items = ["[]"] * count
        else:
            items = ["[" + ",".join(items[j * size:(j + 1) * size]) + "]" for j in range(count)]
    return items


_WRITABLE = frozenset(np.dtype(t) for t in (np.float32, np.float64, np.int8, np.int16, np.int32,
                                            np.int64, np.uint8, np.uint32, np.uint64, np.bool_,
                                            object))


def _check_writable(name: str, arr: np.ndarray) -> None:
    """TF Serving writes float, double, (u)int8/16/32/64 but uint16, bool and strings only."""
    if arr.dtype in _WRITABLE or arr.dtype.kind in "SU" or arr.size == 0:
        return
    tf_name = _NUMPY_TF_NAMES.get(arr.dtype.name, arr.dtype.name)
    raise invalid_argument(f"Failed to write JSON value for tensor type: {tf_name}")


def _tensor_json(name: str, arr: np.ndarray, rows: bool) -> list[bytes]:
    """JSON text of a tensor (``[text]``), or of each of its rows along dimension 0."""
    kind = arr.dtype.kind
    if arr.dtype == np.float32 and arr.ndim and arr.size > _SMALL_FLOATS:
        return _float32_json(arr, rows)
    if kind == "f" or arr.size == 0:
        texts = float_texts(arr) if arr.size else []
        if rows:
            return [t.encode() for t in _group(texts, arr.shape[1:], arr.shape[0])]
        return [_group(texts, arr.shape, 1)[0].encode()]
    if arr.dtype == object or kind in "SU":
        as_b64 = name.endswith("_bytes")
        flat = arr.ravel()
        converted = np.empty(flat.size, dtype=object)
        if as_b64:
            converted[:] = [{"b64": base64.b64encode(as_bytes(b)).decode("ascii")} for b in flat]
        else:
            converted[:] = [as_bytes(b).decode("utf-8", "replace") for b in flat]
        nested = converted.reshape(arr.shape).tolist()
        return [orjson.dumps(row) for row in nested] if rows else [orjson.dumps(nested)]
    if arr.ndim == 0:  # (np.ascontiguousarray would make it 1-d)
        return [orjson.dumps(arr[()], option=orjson.OPT_SERIALIZE_NUMPY)]
    arr = np.ascontiguousarray(arr)
    if rows:
        return [orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY) for row in arr]
    return [orjson.dumps(arr, option=orjson.OPT_SERIALIZE_NUMPY)]


def as_bytes(value: Any) -> bytes:
    """A string tensor element as bytes (``str`` is UTF-8 encoded)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)


def encode_predict(outputs: Mapping[str, np.ndarray], fmt: str) -> bytes:
    """A predict response body for ``outputs`` in the request's format (MakeJsonFromTensors)."""
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    arrays = {name: np.asarray(outputs[name]) for name in names}
    keys = {name: orjson.dumps(name) for name in names}
    if fmt == ROW:
        batch = -1
        for name in names:
            arr = arrays[name]
            if arr.ndim == 0:
                raise invalid_argument(f"Tensor name: {name} has no shape information ")
            if batch >= 0 and arr.shape[0] != batch:
                raise invalid_argument(f"Tensor name: {name} has inconsistent batch size: "
                                       f"{arr.shape[0]} expecting: {batch}")
            batch = arr.shape[0]
        for name in names:
            _check_writable(name, arrays[name])
        if len(names) == 1:
            body = _tensor_json(names[0], arrays[names[0]], rows=False)[0]
        else:
            rows = {name: _tensor_json(name, arrays[name], rows=True) for name in names}
            body = b"[" + b",".join(
                b"{" + b",".join(keys[name] + b":" + rows[name][i] for name in names) + b"}"
                for i in range(batch)) + b"]"
        return b'{"predictions":' + body + b"}"
    for name in names:
        _check_writable(name, arrays[name])
    if len(names) == 1:
        body = _tensor_json(names[0], arrays[names[0]], rows=False)[0]
    else:
        body = b"{" + b",".join(
            keys[name] + b":" + _tensor_json(name, arrays[name], rows=False)[0]
            for name in names) + b"}"
    return b'{"outputs":' + body + b"}"


def predict_response(outputs: Mapping[str, np.ndarray], fmt: str) -> dict[str, Any]:
    """The body :func:`encode_predict` writes, as a client's JSON parser returns it.

    It is those bytes parsed, so floats have the values of the written text
    (float32 ``0.1`` is ``0.1``), non-finite floats are ``nan``/``inf`` and
    strings are as written (``{"b64": ...}`` objects for ``_bytes`` outputs).
    For comparing a response with an expected body without an HTTP round trip
    (the ServableEvaluator does). Errors are those of :func:`encode_predict`.
    """
    return json.loads(encode_predict(outputs, fmt))


# --------------------------------------------------------- classify and regress


def decode_examples(doc: Mapping[str, Any], method: str) -> list[bytes]:
    """Serialised ``tf.Example`` protos for a classify/regress request.

    With a ``context``, each example is serialised after the context, so the
    example's features win (proto merge), as TF Serving does.
    """
    prefix = b""
    if "context" in doc:
        prefix = _make_example(doc["context"]).SerializeToString()
    if "examples" not in doc:
        # TF Serving says "classify" for both methods (FillClassifyRegressRequestFromJson).
        raise invalid_argument(
            f"JSON Value: {snippet(doc)} When method is classify, key 'examples' is expected "
            "and was not found")
    examples = doc["examples"]
    if type(examples) is not list:
        raise invalid_argument(
            f"JSON Value: {snippet(doc)} Expecting 'examples' value to be an list/array")
    if not examples:
        raise invalid_argument(f"JSON Value: {snippet(doc)} 'examples' value is an empty array")
    return [prefix + _make_example(item).SerializeToString() for item in examples]


def _make_example(value: Any) -> Any:
    from tensorflow.core.example import example_pb2

    if type(value) is not dict:
        raise invalid_argument(f"Example must be JSON object but got JSON {json_type(value)}")
    example = example_pb2.Example()
    for name, content in value.items():
        _fill_feature(name, content, example.features.feature[name])
    return example


def _fill_feature(name: str, content: Any, feature: Any) -> None:
    """TF Serving's AddValueToFeature for each element, in its order of checks."""
    items = content if type(content) is list else [content]
    kind = None
    values: list[Any] = []
    for item in items:
        kind_of = _feature_kind(name, item)
        if kind is None:
            kind = kind_of
        elif kind != kind_of:
            raise invalid_argument(
                f"Unexpected element type in feature: {_name(name)} expecting type: {kind}")
        values.append(_feature_value(name, item, kind_of))
    if kind == "bytes":
        feature.bytes_list.value.extend(values)
    elif kind == "float":
        feature.float_list.value.extend(values)
    elif kind == "int64":
        feature.int64_list.value.extend(values)


def _feature_kind(name: str, item: Any) -> str:
    kind_of = type(item)
    if kind_of is bool:
        return "int64"
    if kind_of is str or (kind_of is dict and is_b64_object(item)):
        return "bytes"
    if kind_of is float:
        return "float"
    if kind_of is int:
        # rapidjson holds integers outside [-2**63, 2**64) as doubles.
        return "int64" if _INT64_MIN <= item <= _UINT64_MAX else "float"
    raise invalid_argument(
        f"Feature: {_name(name)} has element with unexpected JSON type: {json_type(item)}")


def _feature_value(name: str, item: Any, kind: str) -> Any:
    if kind == "bytes":
        return _encode_utf8(item) if type(item) is str else b64decode(item)
    if kind == "float":
        with np.errstate(over="ignore"):
            return float(np.float32(item))  # beyond float32's range: +/-Infinity (GetFloat)
    if item > _INT64_MAX:
        raise invalid_argument(
            f"Feature: {_name(name)} has uint64_t element. Only int64_t is supported.")
    return int(item)


def classify_json(classes: np.ndarray | None, scores: np.ndarray | None,
                  num_examples: int) -> bytes:
    """``{"results": [[[label, score], ...], ...]}``: TF Serving's
    MakeJsonFromClassificationResult over the result of ``num_examples`` examples.

    ``classes`` / ``scores`` are ``[num_examples, num_classes]`` arrays as
    :func:`tfserving.classification.classification_arrays` checked them (either may
    be None: its labels are ``""``, its scores ``0.0``, the proto's defaults).
    """
    if num_examples == 0:
        raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
    source = classes if classes is not None else scores
    num_classes = 0 if source is None else source.shape[1]
    count = num_examples * num_classes
    labels = ([orjson.dumps(as_bytes(c).decode("utf-8", "replace")) for c in classes.ravel()]
              if classes is not None else [b'""'] * count)
    score_texts = ([t.encode() for t in float_texts(scores.astype(np.float32, copy=False))]
                   if scores is not None else [b"0.0"] * count)
    rows = [b"[" + b",".join(b"[" + labels[j] + b"," + score_texts[j] + b"]"
                             for j in range(i * num_classes, (i + 1) * num_classes)) + b"]"
            for i in range(num_examples)]
    return b'{"results":[' + b",".join(rows) + b"]}"


def regress_json(values: np.ndarray) -> bytes:
    """``{"results": [value, ...]}``: TF Serving's MakeJsonFromRegressionResult over one
    value per example (as :func:`tfserving.classification.regression_values` gives)."""
    if values.size == 0:
        raise invalid_argument("Cannot convert empty RegressionResults to JSON")
    texts = float_texts(np.asarray(values, dtype=np.float32).ravel())
    return ('{"results":[' + ",".join(texts) + "]}").encode("ascii")
